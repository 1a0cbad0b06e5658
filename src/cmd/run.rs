//! `sonde run`: the probing daemon, until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sonde::config::Config;
use sonde::daemon;
use tokio_util::sync::CancellationToken;

use super::LogFormat;

/// Arguments of `sonde run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// How long runs in flight may take to finish once stopping.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

/// Probes on schedule until stopped; exit 0 after a clean stop.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging_as("info", args.log_format);
    let config = Config::load(&args.config)?;
    super::runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            tracing::info!("stop requested");
            trigger.cancel();
        });
        daemon::run(config, shutdown, args.grace).await?;
        Ok(ExitCode::SUCCESS)
    })
}
