//! `sonde store migrate`: copies a store into another, e.g. the SQLite file a single daemon
//! grew into the PostgreSQL database a fleet shares. `sonde store retire`: takes a location
//! out of the fleet's lists and figures.

use std::path::PathBuf;
use std::process::ExitCode;

use sonde::config::{Config, ProberConfig, StoreBackend, StoreConfig, is_location};
use sonde::store::migrate::{self, Counts};
use sonde::store::{Retired, Store, StoreError};
use sonde::units::now_ms;

/// `sonde store …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Copy every row of one store into another, losing nothing; re-runnable (rows already
    /// copied are not copied twice). The daemon writing the destination must be stopped.
    Migrate(MigrateArgs),
    /// Retire a location whose prober was taken out of service: the page, feed and
    /// /metrics stop listing it and it counts in no figure; its open incidents are closed
    /// and its targets' states forgotten. What it measured stays until retention prunes
    /// it. Its prober must be stopped; one started again brings the location back.
    Retire(RetireArgs),
}

/// Arguments of `sonde store retire`.
#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    /// The location to retire, as its prober's `[prober] location` named it.
    location: String,
    /// The config file (for its `[store]`).
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
}

/// Arguments of `sonde store migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The SQLite store to copy from (it is only read).
    #[arg(long)]
    from: PathBuf,
    /// The environment variable holding the destination's postgres:// URL (the URL itself
    /// never goes on the command line, where `ps` would show it).
    #[arg(long = "to-env", value_name = "VAR")]
    to_env: String,
    /// PEM certificates to trust for the destination's TLS, besides the system's.
    #[arg(long = "ca-file")]
    ca_file: Option<PathBuf>,
    /// The location that rows written before stores had locations belong to (by default
    /// this host's name, as `[prober] location`'s default)
    #[arg(long)]
    location: Option<String>,
}

/// Runs a `sonde store` command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    match command {
        Command::Migrate(args) => migrate(args),
        Command::Retire(args) => retire(args),
    }
}

fn retire(args: RetireArgs) -> anyhow::Result<ExitCode> {
    let RetireArgs { location, config } = args;
    let config = Config::load(&config)?;
    // Opened as the location's writer: its lock is held while its prober runs.
    let mut store = match Store::open(&config.store, &location) {
        Err(StoreError::Locked { store }) => anyhow::bail!(
            "{location}'s prober is running (it holds {store}'s lock for {location}): stop it \
             first"
        ),
        opened => opened?,
    };
    let Some(retired) = store.retire(now_ms())? else {
        let known: Vec<String> = store
            .heartbeats()?
            .into_iter()
            .map(|beat| beat.location)
            .collect();
        let known = if known.is_empty() {
            "none yet".to_owned()
        } else {
            known.join(", ")
        };
        anyhow::bail!(
            "{} has no location {location:?} (its locations: {known})",
            store.describe()
        );
    };
    let Retired {
        incidents_closed,
        states_forgotten,
    } = retired;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    println!(
        "retired {location}: {incidents_closed} open incident{} closed, {states_forgotten} \
         target state{} forgotten; its runs stay until retention prunes them",
        plural(incidents_closed),
        plural(states_forgotten)
    );
    Ok(ExitCode::SUCCESS)
}

fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let location = args
        .location
        .unwrap_or_else(|| ProberConfig::default().location);
    if !is_location(&location) {
        anyhow::bail!(
            "--location {location:?}: a location is letters, digits, `.`, `_` or `-` (e.g. eu-west)"
        );
    }
    let from = Store::open_read_only(&StoreConfig::sqlite(args.from))?;
    let mut to = Store::open(
        &StoreConfig {
            backend: StoreBackend::Postgres {
                url_env: args.to_env,
                ca_file: args.ca_file,
            },
            ..StoreConfig::default()
        },
        &location,
    )?;
    eprintln!("copying {} into {}", from.describe(), to.describe());
    let progress = indicatif::ProgressBar::new(from.result_count()?);
    progress.set_style(
        indicatif::ProgressStyle::with_template("results {pos}/{len} {wide_bar} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let counts = migrate::copy(&from, &mut to, &location, |copied| {
        progress.set_position(copied)
    })?;
    progress.finish_and_clear();
    let Counts {
        results,
        rollups,
        spend,
        states,
        incidents,
        locations,
    } = counts;
    println!("table         rows copied");
    for (table, rows) in [
        ("results", results),
        ("rollups", rollups),
        ("spend", spend),
        ("target_state", states),
        ("incidents", incidents),
        ("locations", locations),
    ] {
        println!("{table:<13} {rows:>11}");
    }
    println!("{} now holds {} results", to.describe(), to.result_count()?);
    Ok(ExitCode::SUCCESS)
}
