//! `sonde publish`: the site, or a gateway export, from the store.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use sonde::config::Config;
use sonde::owned_dir::{self, Protected, SITE_MARKER};
use sonde::publish::{self, Snapshot, gateway, results_csv};
use sonde::store::Store;

/// What to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The static site: index.html, a page per target, feed.json, results.csv.
    Site,
    /// A LiteLLM proxy config (`model_list` with per-deployment weights), YAML.
    Litellm,
    /// What an OpenRouter request for each route group carries (`model`, `provider` with
    /// `order` and `ignore`), JSON.
    Openrouter,
    /// A Portkey gateway config (`strategy.mode = "loadbalance"`, weighted `targets`) per
    /// route group, JSON.
    Portkey,
    /// Envoy AI Gateway `AIGatewayRoute`s (weighted `backendRefs`, priority 1 for down
    /// targets), YAML.
    Envoy,
}

/// Arguments of `sonde publish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
    /// Where to write: the site's folder (default: `[publish] out`, else `site`), or the
    /// export's file (default: standard output). A folder must be new, empty or one sonde
    /// wrote before; a file must be new or one sonde wrote before.
    #[arg(long)]
    out: Option<PathBuf>,
    /// What to write.
    #[arg(long, value_enum, default_value = "site")]
    format: Format,
    /// With `--format openrouter`: `provider.only` = the routed providers and no fallbacks,
    /// so OpenRouter sends nowhere sonde has not measured.
    #[arg(long)]
    openrouter_only: bool,
    /// With `--format envoy`: the Gateway the routes attach to.
    #[arg(long, default_value = "envoy-ai-gateway")]
    envoy_gateway: String,
}

/// Writes the site or the export; exit 0, or 2 when the output is not sonde's to replace.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    let config = Config::load(&args.config)?;
    let protected = Protected::new(&config.file, config.store.file());
    let feed = || super::feed_now(&config);
    let text = match args.format {
        Format::Site => return site(args.out, &config, &protected),
        Format::Litellm => gateway::litellm(&config, &feed()?),
        Format::Openrouter => gateway::openrouter_text(&config, &feed()?, args.openrouter_only)?,
        Format::Portkey => gateway::portkey_text(&config, &feed()?)?,
        Format::Envoy => gateway::envoy(&config, &feed()?, &args.envoy_gateway),
    };
    match args.out {
        Some(path) => {
            let path = protected.check(&path)?;
            owned_dir::write_file(&path, text.as_bytes(), gateway::written_by_sonde)?;
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders the site into `out` (default: `[publish] out`, else `site`).
fn site(out: Option<PathBuf>, config: &Config, protected: &Protected) -> anyhow::Result<ExitCode> {
    let out = match out {
        Some(out) => protected.check(&out)?,
        None => match &config.publish.out {
            Some(out) => out.clone(),
            None => protected.check(&PathBuf::from("site"))?,
        },
    };
    owned_dir::check_owned(&out, SITE_MARKER)?;
    let store = Store::open_read_only(&config.store)?;
    let now = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    let snapshot = Snapshot::load_one_shot(config, &store, now)?;
    let feed = snapshot.feed(config);
    let csv = results_csv::render(&store, now)?;
    let mut index_len = 0;
    let written =
        publish::write_site_from(&out, config, &snapshot, &feed, &csv, &mut |path, file| {
            if path == "index.html" {
                index_len = file.into_bytes(&path)?.len();
            }
            Ok(())
        })?;
    println!(
        "published {} files ({} KiB, index.html {} KiB) to {} in {:.0} ms",
        written.files,
        written.bytes / 1024,
        index_len / 1024,
        out.display(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(ExitCode::SUCCESS)
}
