//! One module per command. Each has its `Args` and a `run` that returns the exit code; they
//! are thin over the library and the only place `anyhow` is used.

pub mod bench;
pub mod check;
pub mod demo;
pub mod export;
pub mod probe;
pub mod publish;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod store;
pub mod sync;

use std::io::IsTerminal;

use anyhow::bail;
use sonde::config::{Config, Target};
use sonde::probe::Probe;
use sonde::publish::Snapshot;
use sonde::publish::feed::Feed;
use sonde::store::Store;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    init_logging_as(default, LogFormat::Text);
}

/// Logs to stderr in `format` at `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging_as(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal: a file, a pipe or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The feed of the config's store now, as a one-shot command reads it
/// ([`Snapshot::load_one_shot`]: from the store's checkpoint when it has one).
pub fn feed_now(config: &Config) -> anyhow::Result<Feed> {
    let store = Store::open_read_only(&config.store)?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(Snapshot::load_one_shot(config, &store, now)?.feed(config))
}

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A runtime of `threads` worker threads for a command that measures or is measured: one
/// thread (0 or 1) is a current-thread runtime, where a wake-up never crosses to another
/// core and no idle worker is woken to look for work.
pub fn runtime_with(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    Ok(builder.enable_all().build()?)
}

/// Ctrl-C, or SIGTERM where there is one.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The config file and the targets of it a command works on.
#[derive(Debug, clap::Args)]
pub struct Targets {
    /// The config file.
    #[arg(long, short, default_value = "sonde.toml")]
    pub config: std::path::PathBuf,
    /// Only these targets: a target id (`provider/model`), a provider name or a route group.
    /// Repeatable.
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
}

/// The (target, probe) pairs the filters select; a filter that matches nothing is an error.
pub fn select(
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
