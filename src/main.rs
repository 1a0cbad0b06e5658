//! The `sonde` command line: parses arguments and hands each command to its module in
//! `cmd/`. Errors become a message and an exit code here, nowhere else.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sonde::config::ConfigError;
use sonde::owned_dir::OwnedDirError;

/// Probes LLM APIs: which provider of a model is up, fast, really streaming, within rate
/// limits and within budget.
#[derive(Debug, Parser)]
#[command(name = "sonde", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The zero-config demo: simulated providers, the daemon, and the status page on
    /// 127.0.0.1:8080.
    Demo(cmd::demo::Args),
    /// Run every selected probe once against every selected target and print the results.
    Probe(cmd::probe::Args),
    /// Validate a config file and list the targets it defines.
    Check(cmd::check::Args),
    /// The daemon: probe every target on schedule, within rate limits and budgets, into
    /// the store.
    Run(cmd::run::Args),
    /// Print raw results from the store as CSV or JSON lines.
    Export(cmd::export::Args),
    /// Render the status site, or a gateway export, from the store.
    Publish(cmd::publish::Args),
    /// Serve the status page, feed.json and /metrics from the store.
    Serve(cmd::serve::Args),
    /// Manage the store: `sonde store migrate` copies one store into another, `sonde store
    /// retire` takes a location out of the fleet.
    #[command(subcommand)]
    Store(cmd::store::Command),
    /// Bring a running gateway's deployments to the feed's weights (the daemon does it after
    /// each publish with `[[sync]]`).
    #[command(subcommand)]
    Sync(cmd::sync::Command),
    /// Serve the built-in provider simulator.
    Simulate(cmd::simulate::Args),
    /// Load targets closed- or open-loop and write report.md, results.csv and
    /// summary.json; with --baseline, fail on a regression.
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe(args) => cmd::probe::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Store(command) => cmd::store::run(command),
        Command::Sync(command) => cmd::sync::run(command),
        Command::Bench(args) => cmd::bench::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`sonde export | head`): nothing left to say, and no panic.
        Err(err)
            if err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", sonde::sanitize::with_causes(err.as_ref()));
            // A bad config, or an output sonde must not touch: the user's to fix, like a
            // usage error.
            if err.downcast_ref::<ConfigError>().is_some()
                || err.downcast_ref::<OwnedDirError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Makes glibc's allocator keep one arena for every thread. By default each thread that
/// allocates while another holds the lock gets an arena of its own (up to 8 per core), and
/// the free pages of an arena are seldom returned: the daemon and the server build each
/// publish on a blocking thread and render on every core, so after a few publishes a
/// third of their memory was free pages held in arenas (`benches/scripts/serve_rss.sh`:
/// peak 169 MB with the default, 138 MB with one arena, the same CPU). Per-thread caches
/// (tcache) still serve small allocations without the lock.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; it is called before any
    // thread but this one exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
