//! `sonde serve`: the status page, feed and metrics from an existing store, without probing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sonde::config::Config;
use sonde::server::{self, Site};
use tokio_util::sync::CancellationToken;

/// Arguments of `sonde serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, default_value = "sonde.toml")]
    config: PathBuf,
    /// Where to listen (default: the config's `[server] listen`, else 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    let config = Config::load(&args.config)?;
    let addr = args
        .listen
        .or(config.server.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    super::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!("sonde: serving http://{}/", listener.local_addr()?);
        let site = Site::new(Arc::new(config));
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            trigger.cancel();
        });
        let refresher = tokio::spawn(server::publish_loop(Arc::clone(&site), shutdown.clone()));
        server::serve(listener, site, shutdown).await?;
        let _ = refresher.await;
        Ok(ExitCode::SUCCESS)
    })
}
