//! The built-in provider simulator: an HTTP server that speaks the three wire formats
//! (OpenAI, Anthropic, Gemini — by path, on one port) and behaves, per model name, as a
//! [`Scenario`] says — delays, errors, and the ways real endpoints misbehave. Users test
//! gateway configs against it; sonde's tests use it as the server that injects known delays.
//!
//! `reply.rs` decides what is sent and when; `openai.rs`, `anthropic.rs` and `gemini.rs`
//! parse their requests and encode their frames.
//!
//! Randomness is seeded per request (`seed` + request number), so a scenario with error or
//! fault rates replays the same sequence for the same order of requests.

mod answer;
mod anthropic;
mod gemini;
mod openai;
mod quality;
mod reply;
pub mod scenario;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Router, response::Response};
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
    /// The request's path and query, as received.
    pub uri: String,
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
    fn log_request(&self, model: &str, uri: &str) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(LoggedRequest {
            at: Instant::now(),
            model: model.to_owned(),
            uri: uri.to_owned(),
        });
        seq
    }

    /// Requests for `model` within the last `window`, this one included.
    fn requests_within(&self, model: &str, window: std::time::Duration) -> usize {
        let since = Instant::now().checked_sub(window);
        let log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        log.iter()
            .rev()
            .take_while(|request| since.is_none_or(|since| request.at >= since))
            .filter(|request| request.model == model)
            .count()
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

    /// The HTTP routes of the three formats (OpenAI and Anthropic also without `/v1`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(openai::chat_completions))
            .route("/chat/completions", post(openai::chat_completions))
            .route("/v1/messages", post(anthropic::messages))
            .route("/messages", post(anthropic::messages))
            .route("/v1beta/models/{target}", post(gemini::generate))
            .route("/v1/models", get(models))
            .route("/models", get(models))
            .route("/v1beta/models", get(gemini_models))
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

/// `GET /v1/models`: Anthropic's shape when the request carries `anthropic-version`, else
/// OpenAI's.
async fn models(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let names: Vec<&String> = state.scenario.models.keys().collect();
    let body = if headers.contains_key("anthropic-version") {
        anthropic::model_list(&names)
    } else {
        openai::model_list(&names)
    };
    Json(body).into_response()
}

/// `GET /v1beta/models`.
async fn gemini_models(State(state): State<Arc<SimState>>) -> Response {
    let names: Vec<&String> = state.scenario.models.keys().collect();
    Json(gemini::model_list(&names)).into_response()
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

    /// The OpenAI-style base URL (`http://ADDR/v1`), also Anthropic's.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Gemini-style base URL (`http://ADDR/v1beta`).
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
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
