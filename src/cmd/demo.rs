//! `sonde demo`: the zero-config main job. The simulator plays nine providers that behave
//! differently (`examples/demo/`), the daemon probes them on short schedules into a fresh
//! store, and the status page is served on 127.0.0.1:8080.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sonde::config::{Config, StoreBackend};
use sonde::daemon;
use sonde::owned_dir::{self, Protected, SITE_MARKER};
use sonde::simulator::{Scenario, Simulator};
use tokio_util::sync::CancellationToken;

/// The demo's simulated providers.
const SCENARIO: &str = include_str!("../../examples/demo/scenario.toml");
/// The demo's config; `SIMULATOR` stands for the simulator's address.
const CONFIG: &str = include_str!("../../examples/demo/sonde.toml");

/// Arguments of `sonde demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the status page is served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The demo's store (default: a fresh file in the system's temporary folder).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Also write the site to this folder on every publish (a new or empty folder, or one
    /// sonde wrote before).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// Runs until Ctrl-C, SIGTERM or `--duration`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("warn,sonde::cmd=info");
    super::runtime()?.block_on(async move {
        let scenario = Scenario::parse(Path::new("examples/demo/scenario.toml"), SCENARIO)?;
        let simulator = Simulator::new(scenario, rand::random())
            .spawn("127.0.0.1:0".parse()?)
            .await
            .context("starting the simulator")?;
        let text = CONFIG.replace("SIMULATOR", &format!("http://{}", simulator.addr()));
        let mut config = Config::parse(Path::new("examples/demo/sonde.toml"), &text)?;
        let store = args.store.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("sonde-demo-{}.db", std::process::id()))
        });
        config.store.backend = StoreBackend::Sqlite {
            path: store.clone(),
        };
        config.server.listen = Some(args.listen);
        config.publish.every = Duration::from_secs(5);
        config.publish.out = match args.out {
            Some(out) => {
                let out = Protected::new(&config.file, Some(&store)).check(&out)?;
                owned_dir::check_owned(&out, SITE_MARKER)?;
                Some(out)
            }
            None => None,
        };
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        let limit = args.duration;
        tokio::spawn(async move {
            match limit {
                Some(limit) => tokio::select! {
                    () = super::shutdown_signal() => {}
                    () = tokio::time::sleep(limit) => {}
                },
                None => super::shutdown_signal().await,
            }
            trigger.cancel();
        });
        println!(
            "sonde demo: 8 simulated providers at http://{}",
            simulator.addr()
        );
        println!(
            "  status page: http://{}/  (feed: /feed.json, metrics: /metrics)",
            args.listen
        );
        println!("  store: {}; Ctrl-C to stop", store.display());
        println!("  the first figures appear within a minute");
        daemon::run(config, shutdown, Duration::from_secs(5))
            .await
            .context("the demo daemon")?;
        Ok(ExitCode::SUCCESS)
    })
}
