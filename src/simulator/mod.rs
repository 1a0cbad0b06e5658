//! The built-in provider simulator: an HTTP server that speaks the providers' wire formats
//! and behaves, per model name, as a [`Scenario`] says — delays, errors, and the ways real
//! endpoints misbehave. Users test gateway configs against it; sonde's tests use it as the
//! server that injects known delays.
//!
//! Randomness is seeded per request (`seed` + request number), so a scenario with error or
//! fault rates replays the same sequence for the same order of requests.

mod answer;
mod openai;
pub mod scenario;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use scenario::Scenario;

/// The request log keeps this many entries, dropping the oldest.
const LOG_CAPACITY: usize = 100_000;

/// One request the simulator received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// When it arrived.
    pub at: Instant,
    /// The model it asked for.
    pub model: String,
}

/// Shared by every request handler.
#[derive(Debug)]
struct SimState {
    scenario: Scenario,
    seed: u64,
    next: AtomicU64,
    log: Mutex<VecDeque<LoggedRequest>>,
}

impl SimState {
    /// Logs a request and returns its sequence number.
    fn log_request(&self, model: &str) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(LoggedRequest {
            at: Instant::now(),
            model: model.to_owned(),
        });
        seq
    }

    /// The random source of request `seq`.
    fn rng(&self, seq: u64) -> SmallRng {
        SmallRng::seed_from_u64(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// A simulator, ready to serve.
#[derive(Debug, Clone)]
pub struct Simulator {
    state: Arc<SimState>,
}

impl Simulator {
    /// A simulator playing `scenario`, its randomness seeded with `seed`.
    pub fn new(scenario: Scenario, seed: u64) -> Simulator {
        Simulator {
            state: Arc::new(SimState {
                scenario,
                seed,
                next: AtomicU64::new(0),
                log: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The HTTP routes: OpenAI's paths with and without the `/v1` prefix.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(openai::chat_completions))
            .route("/chat/completions", post(openai::chat_completions))
            .route("/v1/models", get(openai::models))
            .route("/models", get(openai::models))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(Arc::clone(&self.state))
    }

    /// Serves on `listener` until the task is dropped. Nagle is off so each frame leaves
    /// when it is written.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let router = self.router();
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        axum::serve(listener, router).await
    }

    /// Binds `addr` (port 0 for any free port) and serves in a background task.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::clone(&self.state);
        let task = tokio::spawn(async move {
            if let Err(err) = self.serve(listener).await {
                tracing::error!(%err, "simulator stopped");
            }
        });
        Ok(RunningSimulator { addr, state, task })
    }
}

/// A simulator serving in the background; stops when dropped.
#[derive(Debug)]
pub struct RunningSimulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    task: JoinHandle<()>,
}

impl RunningSimulator {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL (`http://ADDR/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The requests received so far (the latest 100 000).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let log = self
            .state
            .log
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        log.iter().cloned().collect()
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
