//! `sonde probe`: one round of every selected probe against every selected target, now.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use sonde::config::Config;
use sonde::printer::{self, Format};
use sonde::result::Outcome;
use sonde::runner::{self, Runner};

/// Arguments of `sonde probe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    select: super::Targets,
    /// Only these probes (of those configured for each target). Repeatable.
    #[arg(long = "probe", short = 'p')]
    probes: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// Exit 0 when every run is `ok`, 1 otherwise, 2 for a bad config.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    let config = Config::load(&args.select.config)?;
    let jobs = super::select(&config, &args.select.targets, &args.probes)?;
    let runner = Arc::new(Runner::new(&config)?);
    let records = super::runtime()?.block_on(runner::run_round(runner, jobs, args.concurrency));
    let mut out = std::io::stdout().lock();
    printer::write(&mut out, args.format, &records)?;
    out.flush()?;
    let all_ok = records.iter().all(|record| record.outcome == Outcome::Ok);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
