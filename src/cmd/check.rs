//! `sonde check`: validate a config and list its targets.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use sonde::config::Config;

/// Arguments of `sonde check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
}

/// Validates the config; prints one line per target and per gateway sync. Exit 2 when
/// invalid.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} providers, {} targets",
        config.file.display(),
        config.providers.len(),
        config.targets.len()
    )?;
    for target in &config.targets {
        let key = match &target.provider.api_key_env {
            None => "no key".to_owned(),
            Some(var) => variable(var),
        };
        writeln!(
            out,
            "  {}  kind={}  group={}  probes={}  url={}  key={}",
            target.id,
            target.provider.kind.as_str(),
            target.model.group,
            target.probes.join(","),
            target.provider.base_url,
            key
        )?;
    }
    for sync in &config.sync {
        writeln!(
            out,
            "  sync {}  kind=litellm  url={}  key={}  on_down={}  min_change={}",
            sync.name,
            sync.url,
            variable(&sync.key_env),
            sync.on_down.as_str(),
            sync.min_change
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A variable's name and whether it is set, never its value.
fn variable(var: &str) -> String {
    if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
        format!("{var} (set)")
    } else {
        format!("{var} (NOT SET)")
    }
}
