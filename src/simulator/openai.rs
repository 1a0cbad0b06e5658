//! The simulator's OpenAI wire format: `POST /v1/chat/completions`, `GET /v1/models`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::SimState;
use super::answer::Ask;
use super::reply::{Reply, Wire, respond, sse};
use super::scenario::ErrorKind;

/// OpenAI's encoding.
pub(super) struct OpenAiWire;

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
    #[serde(default)]
    tools: Vec<ToolEntry>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
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

#[derive(Debug, Deserialize)]
struct ToolEntry {
    function: FunctionEntry,
}

#[derive(Debug, Deserialize)]
struct FunctionEntry {
    name: String,
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

/// The text of message contents: strings and the text parts of arrays.
pub(super) fn content_text(content: &Value, prompt: &mut String) {
    match content {
        Value::String(text) => prompt.push_str(text),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .for_each(|text| prompt.push_str(text)),
        _ => {}
    }
    prompt.push('\n');
}

impl ChatRequest {
    fn ask(self) -> Ask {
        let mut prompt = String::new();
        for message in &self.messages {
            content_text(&message.content, &mut prompt);
        }
        Ask {
            model: self.model,
            prompt,
            stream: self.stream,
            include_usage: self
                .stream_options
                .is_some_and(|options| options.include_usage),
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            tools: self
                .tools
                .into_iter()
                .map(|tool| tool.function.name)
                .collect(),
            json_mode: self
                .response_format
                .is_some_and(|format| format.kind.starts_with("json")),
        }
    }
}

/// One `chat.completion.chunk`, serialized straight from borrowed parts in OpenAI's field
/// order: the simulator writes one per token, so it builds no JSON tree for it.
#[derive(Serialize)]
struct Chunk<'a, D: Serialize> {
    id: ChatId<'a>,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [Choice<'a, D>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    /// `Some(())` writes `"usage": null`, as OpenAI does on every chunk of a stream that asked
    /// for usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<()>,
}

#[derive(Serialize)]
struct Choice<'a, D: Serialize> {
    index: u32,
    delta: &'a D,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

/// `chatcmpl-<reply id>`, written without building the string.
struct ChatId<'a>(&'a str);

impl Serialize for ChatId<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("chatcmpl-{}", self.0))
    }
}

/// A delta of answer text.
#[derive(Serialize)]
struct Content<'a> {
    content: &'a str,
}

/// A delta of reasoning text.
#[derive(Serialize)]
struct Reasoning<'a> {
    reasoning_content: &'a str,
}

impl OpenAiWire {
    fn chunk<D: Serialize>(&self, reply: &Reply, delta: &D, finish_reason: Option<&str>) -> String {
        let chunk = Chunk {
            id: ChatId(&reply.id),
            object: "chat.completion.chunk",
            created: reply.created,
            model: &reply.model,
            system_fingerprint: "sonde-simulator",
            choices: [Choice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            provider: reply.behaviour.upstream.as_deref(),
            usage: reply.include_usage.then_some(()),
        };
        let mut frame = Vec::with_capacity(256);
        frame.extend_from_slice(b"data: ");
        // Serializing borrowed strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut frame, &chunk);
        frame.extend_from_slice(b"\n\n");
        String::from_utf8(frame).unwrap_or_default()
    }

    fn usage(&self, reply: &Reply) -> Value {
        json!({
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens(),
            "total_tokens": reply.prompt_tokens as usize + reply.completion_tokens(),
            "completion_tokens_details": {"reasoning_tokens": reply.plan.reasoning.len()},
        })
    }

    fn answer_delta(&self, reply: &Reply, text: &str, first: bool) -> Value {
        match &reply.plan.tool_name {
            Some(name) => {
                let mut function = json!({"arguments": text});
                if first {
                    function["name"] = Value::from(name.as_str());
                }
                json!({"tool_calls": [{"index": 0, "id": "call_sim", "type": "function", "function": function}]})
            }
            None => json!({"content": text}),
        }
    }
}

impl Wire for OpenAiWire {
    fn open(&self, reply: &Reply) -> Vec<String> {
        vec![self.chunk(reply, &json!({"role": "assistant", "content": ""}), None)]
    }

    fn token(&self, reply: &Reply, index: usize) -> Vec<String> {
        let reasoning = reply.plan.reasoning.len();
        let frame = if index < reasoning {
            let text = &reply.plan.reasoning[index];
            self.chunk(
                reply,
                &Reasoning {
                    reasoning_content: text,
                },
                None,
            )
        } else if reply.plan.tool_name.is_none() {
            let text = &reply.plan.answer[index - reasoning];
            self.chunk(reply, &Content { content: text }, None)
        } else {
            let delta = self.answer_delta(
                reply,
                &reply.plan.answer[index - reasoning],
                index == reasoning,
            );
            self.chunk(reply, &delta, None)
        };
        vec![frame]
    }

    fn all_at_once(&self, reply: &Reply) -> Vec<String> {
        let mut delta = self.answer_delta(reply, &reply.plan.answer_text(), true);
        if !reply.plan.reasoning.is_empty() {
            delta["reasoning_content"] = Value::from(reply.plan.reasoning_text());
        }
        vec![self.chunk(reply, &delta, None)]
    }

    fn filler(&self, reply: &Reply, text: &str) -> String {
        self.chunk(reply, &Content { content: text }, None)
    }

    fn stream_error(&self, reply: &Reply) -> String {
        sse(&json!({
            "id": format!("chatcmpl-{}", reply.id),
            "object": "chat.completion.chunk",
            "model": reply.model,
            "error": {"code": 502, "message": "Upstream provider disconnected mid-stream"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        })
        .to_string())
    }

    fn close(&self, reply: &Reply) -> Vec<String> {
        let finish = if reply.plan.tool_name.is_some() && reply.plan.finish_reason == "stop" {
            "tool_calls"
        } else {
            reply.plan.finish_reason
        };
        let mut frames = vec![self.chunk(reply, &json!({}), Some(finish))];
        if reply.include_usage {
            frames.push(sse(&json!({
                "id": format!("chatcmpl-{}", reply.id),
                "object": "chat.completion.chunk",
                "created": reply.created,
                "model": reply.model,
                "choices": [],
                "usage": self.usage(reply),
            })
            .to_string()));
        }
        frames.push(sse("[DONE]"));
        frames
    }

    fn body(&self, reply: &Reply) -> Value {
        let mut message = json!({"role": "assistant", "content": reply.plan.answer_text()});
        if let Some(name) = &reply.plan.tool_name {
            message = json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_sim", "type": "function",
                "function": {"name": name, "arguments": reply.plan.answer_text()},
            }]});
        }
        if !reply.plan.reasoning.is_empty() {
            message["reasoning_content"] = Value::from(reply.plan.reasoning_text());
        }
        let mut body = json!({
            "id": format!("chatcmpl-{}", reply.id),
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": reply.plan.finish_reason}],
            "usage": self.usage(reply),
        });
        if let Some(upstream) = &reply.behaviour.upstream {
            body["provider"] = Value::from(upstream.as_str());
        }
        body
    }

    fn error(&self, kind: ErrorKind, message: &str) -> (StatusCode, Value) {
        let (status, kind_name, code) = match kind {
            ErrorKind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
            ),
            ErrorKind::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
            ErrorKind::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("overloaded"),
            ),
            ErrorKind::Auth => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            ErrorKind::NotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
        };
        (
            status,
            json!({"error": {"message": message, "type": kind_name, "param": null, "code": code}}),
        )
    }

    fn key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
    }

    fn rate_limit_names(&self) -> (&'static str, &'static str) {
        (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
        )
    }
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<ChatRequest>(&body) {
        Ok(request) => {
            respond(
                &state,
                &OpenAiWire,
                &headers,
                &uri.to_string(),
                request.ask(),
            )
            .await
        }
        Err(err) => {
            let (status, body) = OpenAiWire.error(
                ErrorKind::BadRequest,
                &format!("We could not parse the JSON body of your request: {err}"),
            );
            (status, Json(body)).into_response()
        }
    }
}

/// The OpenAI model list body.
pub(super) fn model_list(models: &[&String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "sonde-simulator"}))
        .collect();
    json!({"object": "list", "data": data})
}
