//! `sonde sync litellm`: brings a running LiteLLM proxy's deployments for sonde's targets to
//! the feed's weights once (the daemon does it after every publish with `[[sync]]`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sonde::config::{Config, DEFAULT_MIN_CHANGE, OnDown, SyncConfig, SyncKind};
use sonde::publish::gateway;
use sonde::sync::plan::Change;
use sonde::sync::{Applied, Report, Syncer, describe};

/// `sonde sync …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A LiteLLM proxy with its models in its database (`STORE_MODEL_IN_DB=True`): creates
    /// the routable targets' deployments, moves weights, sets down targets to 0 (or removes
    /// them); never touches a deployment sonde did not create.
    Litellm(Args),
}

/// Arguments of `sonde sync litellm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (its targets and store).
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
    /// The proxy's base URL.
    #[arg(long)]
    url: reqwest::Url,
    /// The environment variable holding the proxy's master (admin) key.
    #[arg(long = "key-env", value_name = "VAR")]
    key_env: String,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// What a target that is not routable becomes.
    #[arg(long, value_enum, default_value = "zero")]
    on_down: OnDown,
    /// Weight changes smaller than this are not pushed (to or from 0 always are).
    #[arg(long, default_value_t = DEFAULT_MIN_CHANGE)]
    min_change: f64,
}

/// Exit code when every change was made but a group was held at its last weights.
const HELD: u8 = 3;

/// Runs a `sonde sync` command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    let Command::Litellm(args) = command;
    anyhow::ensure!(
        (0.0..1.0).contains(&args.min_change),
        "--min-change must be at least 0 and below 1"
    );
    let config = Config::load(&args.config)?;
    let feed = super::feed_now(&config)?;
    let deployments = gateway::deployments(&config, &feed);
    let mut syncer = Syncer::new(SyncConfig {
        name: "litellm".into(),
        kind: SyncKind::Litellm,
        url: args.url.clone(),
        key_env: args.key_env,
        on_down: args.on_down,
        min_change: args.min_change,
    });
    let report = super::runtime()?
        .block_on(syncer.sync(&deployments, args.dry_run))
        .with_context(|| format!("syncing the LiteLLM proxy at {}", args.url))?;
    print(&report, args.dry_run);
    Ok(if report.failed() > 0 {
        ExitCode::FAILURE
    } else if !report.plan.held.is_empty() {
        ExitCode::from(HELD)
    } else {
        ExitCode::SUCCESS
    })
}

/// One line per change (with the proxy's answer), hold and conflict, then the counts.
fn print(report: &Report, dry_run: bool) {
    let line = |change: &Change, outcome: &str| {
        let (action, weight, from) = describe(change);
        let weights = match (change, from) {
            (Change::Delete { .. }, _) => String::new(),
            (_, Some(from)) => format!(" weight {from} -> {weight}"),
            (_, None) => format!(" weight {weight}"),
        };
        println!("{action} {}{weights}{outcome}", change.id());
    };
    if dry_run {
        for change in &report.plan.changes {
            line(change, " (dry run)");
        }
    }
    for Applied { change, answer } in &report.applied {
        let outcome = match answer {
            Ok(answer) => format!(": {} {}", answer.status, answer.text),
            Err(why) => format!(": {why}"),
        };
        line(change, &outcome);
    }
    for held in &report.plan.held {
        println!(
            "held {}: every deployment would be at weight 0 ({} not routable); kept at their last \
             weights",
            held.group,
            held.targets.join(", ")
        );
    }
    for id in &report.plan.conflicts {
        println!("conflict {id}: a deployment sonde did not create has this id; left alone");
    }
    let planned = if dry_run {
        report.plan.changes.len()
    } else {
        report.applied.len()
    };
    println!(
        "{} {planned} changes, {} failed, {} unchanged, {} groups held, {} conflicts",
        if dry_run { "would make" } else { "made" },
        report.failed(),
        report.plan.unchanged,
        report.plan.held.len(),
        report.plan.conflicts.len()
    );
}
