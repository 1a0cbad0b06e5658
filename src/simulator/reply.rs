//! How the simulator answers, whatever the wire format: errors and faults drawn from the
//! scenario, the token plan, and frames written at their due times. Each format supplies a
//! [`Wire`] that encodes frames and bodies; this module decides what is sent and when.
//!
//! Frames are written by a task that sleeps until each absolute due time (arrival + offset),
//! so delays do not accumulate drift; [`crate::timer`] wakes each as soon as the machine
//! wakes a sleeping thread (`examples/wake_latency.rs` measures how soon).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use rand::RngExt;
use rand::rngs::SmallRng;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SimState;
use super::answer::{Ask, Plan};
use super::scenario::{Behaviour, ErrorKind, Fault};
use crate::timer::Timer;

/// Content bytes per frame of an oversized answer.
const OVERSIZED_FRAME: usize = 64 * 1024;

/// Everything needed to write one answer.
pub(super) struct Reply {
    /// Response id.
    pub id: String,
    /// The model id reported.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's behaviour.
    pub behaviour: Behaviour,
    /// The fault drawn for this request.
    pub fault: Fault,
    /// Tokens and their due times.
    pub plan: Plan,
    /// Whether usage goes into the stream.
    pub include_usage: bool,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
}

impl Reply {
    /// Output tokens of the plan.
    pub fn completion_tokens(&self) -> usize {
        self.plan.len()
    }
}

/// One wire format's encoding of frames, bodies and errors.
pub(super) trait Wire: Send + Sync {
    /// Frames sent as soon as the stream opens.
    fn open(&self, reply: &Reply) -> Vec<String>;
    /// Frames carrying token `index` of the plan.
    fn token(&self, reply: &Reply, index: usize) -> Vec<String>;
    /// The whole answer in one event (fake streaming).
    fn all_at_once(&self, reply: &Reply) -> Vec<String>;
    /// A content frame of `text` (oversized answers).
    fn filler(&self, reply: &Reply, text: &str) -> String;
    /// An error reported inside the stream.
    fn stream_error(&self, reply: &Reply) -> String;
    /// Frames after the last token: finish, usage, terminal event.
    fn close(&self, reply: &Reply) -> Vec<String>;
    /// The whole answer as one JSON body.
    fn body(&self, reply: &Reply) -> Value;
    /// Status and body of an error of `kind`, worded `message`.
    fn error(&self, kind: ErrorKind, message: &str) -> (StatusCode, Value);
    /// The key a request presents, in this format's header.
    fn key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str>;
    /// Header names for the rate-limit window: (limit, remaining).
    fn rate_limit_names(&self) -> (&'static str, &'static str);
}

/// An SSE frame with only data.
pub(super) fn sse(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// An SSE frame with an event name.
pub(super) fn sse_event(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// Answers one request: the whole decision of what to send, shared by every format.
pub(super) async fn respond(
    state: &SimState,
    wire: &'static dyn Wire,
    headers: &HeaderMap,
    uri: &str,
    ask: Ask,
) -> Response {
    let arrived = Instant::now();
    let seq = state.log_request(&ask.model, uri);
    let Some(behaviour) = state.scenario.behaviour(&ask.model).cloned() else {
        return error(wire, ErrorKind::NotFound, &ask.model, headers, 0);
    };
    if let Some(expected) = &behaviour.api_key
        && wire.key(headers) != Some(expected.as_str())
    {
        return error(wire, ErrorKind::Auth, &ask.model, headers, 0);
    }
    let mut rng = state.rng(seq);
    if draw(&mut rng, behaviour.error_rate) {
        return error(
            wire,
            behaviour.error,
            &ask.model,
            headers,
            behaviour.retry_after_s,
        );
    }
    if !ask.tools.is_empty() && !behaviour.tools {
        let (status, body) = wire.error(
            ErrorKind::BadRequest,
            "This model does not support tools: \"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set.",
        );
        return (status, Json(body)).into_response();
    }
    let strikes = match behaviour.fault_every {
        0 => draw(&mut rng, behaviour.fault_rate),
        every => (seq + 1).is_multiple_of(every),
    };
    let fault = if behaviour.fault != Fault::None && strikes {
        behaviour.fault
    } else {
        Fault::None
    };
    if fault == Fault::Hang {
        tokio::time::sleep(Duration::from_millis(behaviour.stall_ms)).await;
        let (_, body) = wire.error(ErrorKind::ServerError, "The simulated hang ended.");
        return (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response();
    }
    let mut plan = Plan::new(&behaviour, &ask, &mut rng);
    plan.stretch(behaviour.peak_factor_at(SystemTime::now()));
    let streaming = ask.stream && !behaviour.ignore_stream;
    let rate_limit = behaviour.rate_limit_requests.map(|limit| {
        let used = state.requests_within(&ask.model, Duration::from_secs(60)) as u64;
        (limit, limit.saturating_sub(used))
    });
    let reply = Reply {
        id: format!("sim-{seq}"),
        model: behaviour
            .served_model
            .clone()
            .unwrap_or_else(|| ask.model.clone()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        prompt_tokens: u32::try_from(ask.prompt.chars().count().div_ceil(4)).unwrap_or(u32::MAX),
        include_usage: streaming && behaviour.include_usage && ask.include_usage,
        behaviour,
        fault,
        plan,
    };
    let mut response = if streaming {
        stream_response(wire, reply, arrived)
    } else {
        whole_response(wire, reply, arrived).await
    };
    if let Some((limit, remaining)) = rate_limit {
        let (limit_name, remaining_name) = wire.rate_limit_names();
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static(limit_name),
            HeaderValue::from(limit),
        );
        headers.insert(
            HeaderName::from_static(remaining_name),
            HeaderValue::from(remaining),
        );
    }
    response
}

/// Draws `true` with probability `rate`.
fn draw(rng: &mut SmallRng, rate: f64) -> bool {
    rate > 0.0 && rng.random::<f64>() < rate
}

/// The error of `kind`, worded as real APIs word it; 429 and 503 carry `Retry-After`.
fn error(
    wire: &dyn Wire,
    kind: ErrorKind,
    model: &str,
    headers: &HeaderMap,
    retry_after_s: u32,
) -> Response {
    let message = match kind {
        ErrorKind::RateLimited => {
            format!(
                "Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1."
            )
        }
        ErrorKind::ServerError => {
            "The server had an error while processing your request. Sorry about that!".into()
        }
        ErrorKind::Unavailable => {
            "The engine is currently overloaded, please try again later.".into()
        }
        ErrorKind::Auth => format!(
            "Incorrect API key provided: {}. You can find your API key in your account settings.",
            wire.key(headers).unwrap_or("(none)")
        ),
        ErrorKind::NotFound => {
            format!("The model `{model}` does not exist or you do not have access to it.")
        }
        ErrorKind::BadRequest => "Invalid request: simulated bad request.".into(),
    };
    let (status, body) = wire.error(kind, &message);
    let mut response = (status, Json(body)).into_response();
    if matches!(kind, ErrorKind::RateLimited | ErrorKind::Unavailable) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    }
    response
}

/// Writes frames into the response body; `false` once the client has gone.
struct Frames {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    crlf: bool,
}

impl Frames {
    async fn send(&self, text: String) -> bool {
        let text = if self.crlf {
            text.replace('\n', "\r\n")
        } else {
            text
        };
        self.tx.send(Ok(Bytes::from(text))).await.is_ok()
    }

    /// Sends frames as one chunk: what a server writes at once, the client reads at once.
    async fn send_all(&self, frames: Vec<String>) -> bool {
        frames.is_empty() || self.send(frames.concat()).await
    }

    /// Ends the body abruptly: the client sees the connection break.
    async fn abort(&self) {
        let _ = self
            .tx
            .send(Err(std::io::Error::other("simulated connection drop")))
            .await;
    }
}

/// A body fed by a channel.
fn channel_body(crlf: bool) -> (Frames, Body) {
    let (tx, rx) = mpsc::channel(16);
    let body = Body::from_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (Frames { tx, crlf }, body)
}

fn stream_response(wire: &'static dyn Wire, reply: Reply, arrived: Instant) -> Response {
    let (frames, body) = channel_body(reply.behaviour.crlf);
    tokio::spawn(write_stream(wire, frames, reply, arrived));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn write_stream(wire: &'static dyn Wire, frames: Frames, reply: Reply, arrived: Instant) {
    let mut timer = Timer::default();
    if !frames.send_all(wire.open(&reply)).await {
        return;
    }
    if let Some(every) = reply.behaviour.keep_alive_ms.filter(|every| *every > 0) {
        let every = Duration::from_millis(every);
        let first = reply.plan.due.first().copied().unwrap_or_default();
        let mut next = every;
        while next < first {
            timer.until((arrived + next).into_std()).await;
            if !frames.send(": keep-alive\n\n".to_owned()).await {
                return;
            }
            next += every;
        }
    }
    let completed = match reply.fault {
        Fault::FakeStream => {
            timer.until((arrived + reply.plan.end()).into_std()).await;
            frames.send_all(wire.all_at_once(&reply)).await
        }
        Fault::Oversized => write_oversized(wire, &frames, &reply).await,
        _ => write_tokens(wire, &frames, &reply, arrived, &mut timer).await,
    };
    if completed {
        frames.send_all(wire.close(&reply)).await;
    }
}

/// Where a mid-stream fault strikes: before token `n`, or after the last for truncation
/// at 0.
fn fault_at(reply: &Reply) -> usize {
    let after = reply.behaviour.fault_after_tokens as usize;
    if reply.fault == Fault::Truncate && after == 0 {
        reply.plan.len()
    } else {
        after.min(reply.plan.len())
    }
}

/// Sends the tokens at their due times, applying a mid-stream fault. `false` when the
/// stream must end here (client gone, or the fault ends it). Tokens already due when the
/// writer gets to them (zero delays, or a writer behind schedule) go out in one write, as a
/// real server flushes what it has; tokens due later are rendered before the wait, so that
/// at their time the writer only writes: rendering 64 frames after waking would add ~0.1 ms
/// to every injected delay.
async fn write_tokens(
    wire: &dyn Wire,
    frames: &Frames,
    reply: &Reply,
    arrived: Instant,
    timer: &mut Timer,
) -> bool {
    let faulty = reply.fault != Fault::None;
    let fault_at = fault_at(reply);
    let mut shift = Duration::ZERO;
    let mut batch: Vec<String> = Vec::new();
    let mut index = 0;
    loop {
        if faulty && index == fault_at {
            if !frames.send_all(std::mem::take(&mut batch)).await {
                return false;
            }
            match reply.fault {
                Fault::Stall => {
                    shift += Duration::from_millis(reply.behaviour.stall_ms);
                    let due = reply
                        .plan
                        .due
                        .get(index)
                        .copied()
                        .unwrap_or(reply.plan.end());
                    timer.until((arrived + due + shift).into_std()).await;
                }
                Fault::Truncate => return false,
                Fault::Malformed => {
                    frames
                        .send("data: {\"choices\": [{\"delta\": {\"content\": \"bro\n\n".to_owned())
                        .await;
                    return false;
                }
                Fault::MidStreamError => {
                    frames.send(wire.stream_error(reply)).await;
                    return false;
                }
                _ => {}
            }
        }
        let Some(&offset) = reply.plan.due.get(index) else {
            break;
        };
        // The tokens due at this same instant, short of the fault.
        let mut end = index + 1;
        while reply.plan.due.get(end) == Some(&offset) && !(faulty && end == fault_at) {
            end += 1;
        }
        let group = (index..end).flat_map(|token| wire.token(reply, token));
        let due = (arrived + offset + shift).into_std();
        if due > std::time::Instant::now() {
            if !frames.send_all(std::mem::take(&mut batch)).await {
                return false;
            }
            batch.extend(group);
            timer.until(due).await;
        } else {
            batch.extend(group);
        }
        index = end;
    }
    frames.send_all(batch).await
}

/// Content events of 64 KiB until `oversized_bytes` have gone out.
async fn write_oversized(wire: &dyn Wire, frames: &Frames, reply: &Reply) -> bool {
    let filler = "x".repeat(OVERSIZED_FRAME);
    let mut sent = 0u64;
    while sent < reply.behaviour.oversized_bytes {
        if !frames.send(wire.filler(reply, &filler)).await {
            return false;
        }
        sent += OVERSIZED_FRAME as u64;
    }
    true
}

/// A non-streamed answer: headers and body when the last token is due.
async fn whole_response(wire: &'static dyn Wire, reply: Reply, arrived: Instant) -> Response {
    Timer::default()
        .until((arrived + reply.plan.end()).into_std())
        .await;
    let json = [(header::CONTENT_TYPE, "application/json")];
    match reply.fault {
        Fault::Malformed => (json, "{\"choices\": [{\"message\": ").into_response(),
        Fault::MidStreamError => {
            let (_, body) = wire.error(
                ErrorKind::ServerError,
                "Upstream provider returned an error",
            );
            Json(body).into_response()
        }
        Fault::Stall | Fault::Truncate | Fault::Oversized => {
            let (frames, body) = channel_body(false);
            tokio::spawn(write_broken_body(wire, frames, reply));
            (json, body).into_response()
        }
        _ => Json(wire.body(&reply)).into_response(),
    }
}

/// A JSON body that stalls, breaks off, or never ends.
async fn write_broken_body(wire: &dyn Wire, frames: Frames, reply: Reply) {
    let text = wire.body(&reply).to_string();
    let half = text.len() / 2;
    match reply.fault {
        Fault::Oversized => {
            if !frames
                .send(format!("{{\"id\":\"{}\",\"padding\":\"", reply.id))
                .await
            {
                return;
            }
            let filler = "x".repeat(OVERSIZED_FRAME);
            let mut sent = 0u64;
            while sent < reply.behaviour.oversized_bytes {
                if !frames.send(filler.clone()).await {
                    return;
                }
                sent += OVERSIZED_FRAME as u64;
            }
            frames.send("\"}".to_owned()).await;
        }
        Fault::Stall => {
            if frames.send(text[..half].to_owned()).await {
                tokio::time::sleep(Duration::from_millis(reply.behaviour.stall_ms)).await;
                frames.send(text[half..].to_owned()).await;
            }
        }
        _ => {
            if frames.send(text[..half].to_owned()).await {
                frames.abort().await;
            }
        }
    }
}
