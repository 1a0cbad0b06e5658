//! `sonde export`: raw results out of the store, as `sonde probe` prints them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sonde::config::{Config, StoreConfig};
use sonde::printer::{self, Format};
use sonde::store::Store;

/// Arguments of `sonde export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (for its `[store]`).
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
    /// A SQLite store file, instead of the config's store.
    #[arg(long)]
    store: Option<PathBuf>,
    /// How far back (`24h`, `7d`, `30m`).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Only this target.
    #[arg(long = "target", short = 't')]
    target: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
}

/// Prints the results; exit 0.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    let store_config = match args.store {
        Some(path) => StoreConfig::sqlite(path),
        None => Config::load(&args.config)?.store,
    };
    let store = Store::open_read_only(&store_config)?;
    let since = chrono::Utc::now().timestamp_millis()
        - i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX);
    let records: Vec<_> = store
        .results_since(since, args.target.as_deref())?
        .into_iter()
        .map(|(record, _)| record)
        .collect();
    let mut out = std::io::stdout().lock();
    printer::write(&mut out, args.format, &records)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
