//! `sonde simulate`: serve the built-in provider simulator until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sonde::simulator::{Scenario, Simulator};

/// Arguments of `sonde simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Scenario file (TOML); the built-in scenario (examples/scenario.toml) when absent.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Seed of the per-request randomness; a fixed seed replays the same errors and delays.
    #[arg(long)]
    seed: Option<u64>,
    /// Server threads (0: one per core). One thread keeps every injected delay and frame
    /// time on the core that serves the connection: the exactest timing, and the most
    /// requests per second of CPU when a client shares the machine.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::builtin(),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let models = scenario
        .models
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let default = if scenario.default.is_some() {
        "any other model: [default]"
    } else {
        "other models: 404"
    };
    let runtime = match args.threads {
        0 => super::runtime()?,
        threads => super::runtime_with(threads)?,
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "sonde simulator: http://{addr}/v1 (kind openai or anthropic), \
             http://{addr}/v1beta (kind gemini), seed {seed}"
        );
        println!("  models: {models}; {default}");
        let server = Simulator::new(scenario, seed).serve(listener);
        tokio::select! {
            served = server => served.context("the simulator stopped")?,
            _ = super::shutdown_signal() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}
