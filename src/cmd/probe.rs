//! `sonde probe`: one round of every selected probe against every selected target, now.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use sonde::config::{Config, Target};
use sonde::printer::{self, Format};
use sonde::probe::Probe;
use sonde::result::Outcome;
use sonde::runner::{self, Runner};

/// Arguments of `sonde probe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
    /// Only these targets: a target id (`provider/model`), a provider name or a route group.
    /// Repeatable.
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
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
    let config = Config::load(&args.config)?;
    let jobs = select(&config, &args.targets, &args.probes)?;
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

/// The (target, probe) pairs the filters select; a filter that matches nothing is an error.
fn select(
    config: &Config,
    targets: &[String],
    probes: &[String],
) -> anyhow::Result<Vec<(Target, Probe)>> {
    for filter in targets {
        if !config.targets.iter().any(|target| matches(target, filter)) {
            let known: Vec<_> = config.targets.iter().map(|t| t.id.as_str()).collect();
            bail!(
                "no target matches --target {filter:?} (targets: {})",
                known.join(", ")
            );
        }
    }
    for name in probes {
        if config.probes.get(name).is_none() {
            let known: Vec<_> = config.probes.names().collect();
            bail!("no probe named {name:?} (probes: {})", known.join(", "));
        }
    }
    let mut jobs = Vec::new();
    for target in &config.targets {
        if !targets.is_empty() && !targets.iter().any(|filter| matches(target, filter)) {
            continue;
        }
        for name in &target.probes {
            if !probes.is_empty() && !probes.contains(name) {
                continue;
            }
            if let Some(probe) = config.probes.get(name) {
                jobs.push((target.clone(), probe.clone()));
            }
        }
    }
    if jobs.is_empty() {
        bail!("the filters select no run: no selected target has a selected probe");
    }
    Ok(jobs)
}

fn matches(target: &Target, filter: &str) -> bool {
    target.id == filter || target.provider.name == filter || target.model.group == filter
}
