//! The simulator's OpenAI-compatible endpoint: `POST /v1/chat/completions` and
//! `GET /v1/models`, in OpenAI's wire format, with each frame sent at its planned time.
//!
//! Frames are written by a task that sleeps until each absolute due time (arrival + offset),
//! so delays do not accumulate drift; tokio's timer makes each frame due within about 1 ms.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SimState;
use super::answer::Plan;
use super::scenario::{Behaviour, ErrorKind, Fault};

/// Content bytes per frame of an oversized answer.
const OVERSIZED_FRAME: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl ChatRequest {
    /// The prompt's text: string contents and the text parts of array contents.
    fn prompt(&self) -> String {
        let mut prompt = String::new();
        for message in &self.messages {
            match &message.content {
                Value::String(text) => prompt.push_str(text),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .for_each(|text| prompt.push_str(text)),
                _ => {}
            }
            prompt.push('\n');
        }
        prompt
    }
}

/// Everything needed to write one answer.
struct Reply {
    id: String,
    model: String,
    created: u64,
    behaviour: Behaviour,
    fault: Fault,
    plan: Plan,
    include_usage: bool,
    prompt_tokens: u32,
}

impl Reply {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "sonde-simulator",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.plan.len(),
            "total_tokens": self.prompt_tokens as usize + self.plan.len(),
            "completion_tokens_details": {"reasoning_tokens": self.plan.reasoning.len()},
        })
    }

    fn usage_chunk(&self) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage(),
        })
        .to_string()
    }

    fn completion(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.plan.answer_text()});
        if !self.plan.reasoning.is_empty() {
            message["reasoning_content"] = Value::from(self.plan.reasoning_text());
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.plan.finish_reason}],
            "usage": self.usage(),
        })
    }

    /// The token at `index` of the plan as a delta.
    fn token_delta(&self, index: usize) -> Value {
        let reasoning = self.plan.reasoning.len();
        if index < reasoning {
            json!({"reasoning_content": self.plan.reasoning[index]})
        } else {
            json!({"content": self.plan.answer[index - reasoning]})
        }
    }

    /// Where a mid-stream fault strikes: before token `n`, or after the last for truncation
    /// at 0.
    fn fault_at(&self) -> usize {
        let after = self.behaviour.fault_after_tokens as usize;
        if self.fault == Fault::Truncate && after == 0 {
            self.plan.len()
        } else {
            after.min(self.plan.len())
        }
    }
}

/// Writes SSE frames into the response body; `false` once the client has gone.
struct Frames {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    newline: &'static str,
}

impl Frames {
    async fn raw(&self, text: String) -> bool {
        self.tx.send(Ok(Bytes::from(text))).await.is_ok()
    }

    async fn data(&self, payload: &str) -> bool {
        let nl = self.newline;
        self.raw(format!("data: {payload}{nl}{nl}")).await
    }

    async fn comment(&self, text: &str) -> bool {
        let nl = self.newline;
        self.raw(format!(": {text}{nl}{nl}")).await
    }

    /// Ends the body abruptly: the client sees the connection break.
    async fn abort(&self) {
        let _ = self
            .tx
            .send(Err(std::io::Error::other("simulated connection drop")))
            .await;
    }
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                format!("We could not parse the JSON body of your request: {err}"),
            );
        }
    };
    let seq = state.log_request(&request.model);
    let Some(behaviour) = state.scenario.behaviour(&request.model).cloned() else {
        return error_kind(ErrorKind::NotFound, &request.model, &headers, 0);
    };
    if let Some(expected) = &behaviour.api_key {
        let presented = bearer(&headers);
        if presented != Some(expected.as_str()) {
            return error_kind(ErrorKind::Auth, &request.model, &headers, 0);
        }
    }
    let mut rng = state.rng(seq);
    if draw(&mut rng, behaviour.error_rate) {
        return error_kind(
            behaviour.error,
            &request.model,
            &headers,
            behaviour.retry_after_s,
        );
    }
    let fault = if behaviour.fault != Fault::None && draw(&mut rng, behaviour.fault_rate) {
        behaviour.fault
    } else {
        Fault::None
    };
    if fault == Fault::Hang {
        tokio::time::sleep(Duration::from_millis(behaviour.stall_ms)).await;
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            None,
            "The simulated hang ended.".into(),
        );
    }
    let prompt = request.prompt();
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    let plan = Plan::new(&behaviour, &prompt, max_tokens, &mut rng);
    let streaming = request.stream && !behaviour.ignore_stream;
    let include_usage = streaming
        && behaviour.include_usage
        && request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
    let reply = Reply {
        id: format!("chatcmpl-sim-{seq}"),
        model: behaviour
            .served_model
            .clone()
            .unwrap_or_else(|| request.model.clone()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        prompt_tokens: u32::try_from(prompt.chars().count().div_ceil(4)).unwrap_or(u32::MAX),
        behaviour,
        fault,
        plan,
        include_usage,
    };
    if streaming {
        stream_response(reply, arrived)
    } else {
        whole_response(reply, arrived).await
    }
}

/// Draws `true` with probability `rate`.
fn draw(rng: &mut rand::rngs::SmallRng, rate: f64) -> bool {
    use rand::RngExt;
    rate > 0.0 && rng.random::<f64>() < rate
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

/// A body fed by a channel, written by `task`.
fn channel_body() -> (Frames, Body) {
    let (tx, rx) = mpsc::channel(16);
    let body = Body::from_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (Frames { tx, newline: "\n" }, body)
}

fn stream_response(reply: Reply, arrived: Instant) -> Response {
    let (mut frames, body) = channel_body();
    if reply.behaviour.crlf {
        frames.newline = "\r\n";
    }
    tokio::spawn(write_stream(frames, reply, arrived));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn write_stream(frames: Frames, reply: Reply, arrived: Instant) {
    let role = reply.chunk(json!({"role": "assistant", "content": ""}), None);
    if !frames.data(&role).await {
        return;
    }
    if let Some(every) = reply.behaviour.keep_alive_ms.filter(|every| *every > 0) {
        let every = Duration::from_millis(every);
        let first = reply.plan.due.first().copied().unwrap_or_default();
        let mut next = every;
        while next < first {
            tokio::time::sleep_until(arrived + next).await;
            if !frames.comment("keep-alive").await {
                return;
            }
            next += every;
        }
    }
    let completed = match reply.fault {
        Fault::FakeStream => write_all_at_once(&frames, &reply, arrived).await,
        Fault::Oversized => write_oversized(&frames, &reply).await,
        _ => write_tokens(&frames, &reply, arrived).await,
    };
    if !completed {
        return;
    }
    let finish = reply.chunk(json!({}), Some(reply.plan.finish_reason));
    if !frames.data(&finish).await {
        return;
    }
    if reply.include_usage && !frames.data(&reply.usage_chunk()).await {
        return;
    }
    frames.data("[DONE]").await;
}

/// Sends the tokens at their due times, applying a mid-stream fault. `false` when the
/// stream must end here (client gone, or the fault ends it).
async fn write_tokens(frames: &Frames, reply: &Reply, arrived: Instant) -> bool {
    let fault_at = reply.fault_at();
    let mut shift = Duration::ZERO;
    for index in 0..=reply.plan.len() {
        if index == fault_at {
            match reply.fault {
                Fault::Stall => {
                    shift += Duration::from_millis(reply.behaviour.stall_ms);
                    tokio::time::sleep_until(
                        arrived
                            + reply
                                .plan
                                .due
                                .get(index)
                                .copied()
                                .unwrap_or(reply.plan.end())
                            + shift,
                    )
                    .await;
                }
                Fault::Truncate => return false,
                Fault::Malformed => {
                    frames
                        .raw(format!(
                            "data: {{\"choices\": [{{\"delta\": {{\"content\": \"bro{nl}{nl}",
                            nl = frames.newline
                        ))
                        .await;
                    return false;
                }
                Fault::MidStreamError => {
                    let error = json!({
                        "id": reply.id,
                        "object": "chat.completion.chunk",
                        "model": reply.model,
                        "error": {"code": 502, "message": "Upstream provider disconnected mid-stream"},
                        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                    });
                    frames.data(&error.to_string()).await;
                    return false;
                }
                _ => {}
            }
        }
        let Some(due) = reply.plan.due.get(index) else {
            break;
        };
        tokio::time::sleep_until(arrived + *due + shift).await;
        if !frames
            .data(&reply.chunk(reply.token_delta(index), None))
            .await
        {
            return false;
        }
    }
    true
}

/// Fake streaming: the whole answer in one event when the last token is due.
async fn write_all_at_once(frames: &Frames, reply: &Reply, arrived: Instant) -> bool {
    tokio::time::sleep_until(arrived + reply.plan.end()).await;
    let mut delta = json!({"content": reply.plan.answer_text()});
    if !reply.plan.reasoning.is_empty() {
        delta["reasoning_content"] = Value::from(reply.plan.reasoning_text());
    }
    frames.data(&reply.chunk(delta, None)).await
}

/// Content events of 64 KiB until `oversized_bytes` have gone out.
async fn write_oversized(frames: &Frames, reply: &Reply) -> bool {
    let filler = "x".repeat(OVERSIZED_FRAME);
    let mut sent = 0u64;
    while sent < reply.behaviour.oversized_bytes {
        if !frames
            .data(&reply.chunk(json!({"content": filler}), None))
            .await
        {
            return false;
        }
        sent += OVERSIZED_FRAME as u64;
    }
    true
}

/// A non-streamed answer: headers and body when the last token is due.
async fn whole_response(reply: Reply, arrived: Instant) -> Response {
    tokio::time::sleep_until(arrived + reply.plan.end()).await;
    let json_headers = [(header::CONTENT_TYPE, "application/json")];
    match reply.fault {
        Fault::Malformed => (json_headers, "{\"choices\": [{\"message\": ").into_response(),
        Fault::MidStreamError => Json(json!({
            "error": {"code": 502, "message": "Upstream provider returned an error", "type": "server_error"}
        }))
        .into_response(),
        Fault::Stall | Fault::Truncate | Fault::Oversized => {
            let (frames, body) = channel_body();
            tokio::spawn(write_broken_body(frames, reply));
            (json_headers, body).into_response()
        }
        _ => Json(reply.completion()).into_response(),
    }
}

/// A JSON body that stalls, breaks off, or never ends.
async fn write_broken_body(frames: Frames, reply: Reply) {
    let text = reply.completion().to_string();
    let half = text.len() / 2;
    match reply.fault {
        Fault::Oversized => {
            let head = format!(
                "{{\"id\":\"{}\",\"choices\":[{{\"message\":{{\"content\":\"",
                reply.id
            );
            if !frames.raw(head).await {
                return;
            }
            let filler = "x".repeat(OVERSIZED_FRAME);
            let mut sent = 0u64;
            while sent < reply.behaviour.oversized_bytes {
                if !frames.raw(filler.clone()).await {
                    return;
                }
                sent += OVERSIZED_FRAME as u64;
            }
            frames.raw("\"}}]}".to_owned()).await;
        }
        Fault::Stall => {
            if frames.raw(text[..half].to_owned()).await {
                tokio::time::sleep(Duration::from_millis(reply.behaviour.stall_ms)).await;
                frames.raw(text[half..].to_owned()).await;
            }
        }
        _ => {
            if frames.raw(text[..half].to_owned()).await {
                frames.abort().await;
            }
        }
    }
}

/// An error answer in OpenAI's shape.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

/// The error of an `error_rate` draw, as the real API words it.
fn error_kind(kind: ErrorKind, model: &str, headers: &HeaderMap, retry_after_s: u32) -> Response {
    let mut response = match kind {
        ErrorKind::RateLimited => error(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            format!(
                "Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1."
            ),
        ),
        ErrorKind::ServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!".into(),
        ),
        ErrorKind::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("overloaded"),
            "The engine is currently overloaded, please try again later.".into(),
        ),
        ErrorKind::Auth => error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            format!(
                "Incorrect API key provided: {}. You can find your API key in your account settings.",
                bearer(headers).unwrap_or("(none)")
            ),
        ),
        ErrorKind::NotFound => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model `{model}` does not exist or you do not have access to it."),
        ),
        ErrorKind::BadRequest => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "Invalid request: simulated bad request.".into(),
        ),
    };
    if matches!(kind, ErrorKind::RateLimited | ErrorKind::Unavailable) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    }
    response
}

/// `GET /v1/models`: the scenario's named models.
pub(super) async fn models(State(state): State<Arc<SimState>>) -> Response {
    let data: Vec<Value> = state
        .scenario
        .models
        .keys()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "sonde-simulator"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
