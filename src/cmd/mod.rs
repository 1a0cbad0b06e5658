//! One module per command. Each has its `Args` and a `run` that returns the exit code; they
//! are thin over the library and the only place `anyhow` is used.

pub mod check;
pub mod probe;
pub mod simulate;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
