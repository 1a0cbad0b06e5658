//! The simulator's Anthropic wire format: `POST /v1/messages`, and `GET /v1/models` when the
//! request carries `anthropic-version`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::SimState;
use super::answer::Ask;
use super::openai::content_text;
use super::reply::{Reply, Wire, respond, sse_event};
use super::scenario::ErrorKind;

/// Anthropic's encoding.
pub(super) struct AnthropicWire;

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    system: Value,
    #[serde(default)]
    messages: Vec<MessageEntry>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    tools: Vec<ToolEntry>,
}

#[derive(Debug, Deserialize)]
struct MessageEntry {
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
struct ToolEntry {
    name: String,
}

impl MessagesRequest {
    fn ask(self) -> Ask {
        let mut prompt = String::new();
        content_text(&self.system, &mut prompt);
        for message in &self.messages {
            content_text(&message.content, &mut prompt);
        }
        // No JSON switch in this API: a model asked for JSON in words answers JSON (bare
        // when its `json_mode` is on, fenced in Markdown when off, as chat models tend to).
        let json_mode = prompt.contains("JSON");
        Ask {
            model: self.model,
            prompt,
            stream: self.stream,
            include_usage: true,
            max_tokens: self.max_tokens,
            tools: self.tools.into_iter().map(|tool| tool.name).collect(),
            json_mode,
        }
    }
}

impl AnthropicWire {
    fn delta(&self, reply: &Reply, index: usize, text: &str) -> String {
        let delta = if index < reply.plan.reasoning.len() {
            json!({"type": "thinking_delta", "thinking": text})
        } else if reply.plan.tool_name.is_some() {
            json!({"type": "input_json_delta", "partial_json": text})
        } else {
            json!({"type": "text_delta", "text": text})
        };
        let block = self.block_of(reply, index);
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": block, "delta": delta}).to_string(),
        )
    }

    /// The content block a token belongs to: thinking first, then text or tool use.
    fn block_of(&self, reply: &Reply, index: usize) -> usize {
        let reasoning = reply.plan.reasoning.len();
        usize::from(reasoning > 0 && index >= reasoning)
    }

    fn block_start(&self, reply: &Reply, block: usize, thinking: bool) -> String {
        let content_block = if thinking {
            json!({"type": "thinking", "thinking": ""})
        } else if let Some(name) = &reply.plan.tool_name {
            json!({"type": "tool_use", "id": "toolu_sim", "name": name, "input": {}})
        } else {
            json!({"type": "text", "text": ""})
        };
        sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": block, "content_block": content_block})
                .to_string(),
        )
    }

    fn block_stop(&self, block: usize) -> String {
        sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": block}).to_string(),
        )
    }

    fn stop_reason(&self, reply: &Reply) -> &'static str {
        match (reply.plan.finish_reason, &reply.plan.tool_name) {
            ("length", _) => "max_tokens",
            (_, Some(_)) => "tool_use",
            _ => "end_turn",
        }
    }
}

impl Wire for AnthropicWire {
    fn open(&self, reply: &Reply) -> Vec<String> {
        let start = json!({"type": "message_start", "message": {
            "id": format!("msg_{}", reply.id), "type": "message", "role": "assistant", "content": [],
            "model": reply.model, "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
        }});
        vec![
            sse_event("message_start", &start.to_string()),
            sse_event("ping", r#"{"type": "ping"}"#),
        ]
    }

    fn token(&self, reply: &Reply, index: usize) -> Vec<String> {
        let reasoning = reply.plan.reasoning.len();
        let text = if index < reasoning {
            &reply.plan.reasoning[index]
        } else {
            &reply.plan.answer[index - reasoning]
        };
        let mut frames = Vec::new();
        if index == 0 && reasoning > 0 {
            frames.push(self.block_start(reply, 0, true));
        }
        if index == reasoning {
            if reasoning > 0 {
                frames.push(self.block_stop(0));
            }
            frames.push(self.block_start(reply, self.block_of(reply, index), false));
        }
        frames.push(self.delta(reply, index, text));
        frames
    }

    fn all_at_once(&self, reply: &Reply) -> Vec<String> {
        let block = usize::from(!reply.plan.reasoning.is_empty());
        let mut frames = Vec::new();
        if block == 1 {
            frames.push(self.block_start(reply, 0, true));
            frames.push(self.delta(reply, 0, &reply.plan.reasoning_text()));
            frames.push(self.block_stop(0));
        }
        frames.push(self.block_start(reply, block, false));
        frames.push(self.delta(reply, reply.plan.reasoning.len(), &reply.plan.answer_text()));
        frames
    }

    fn filler(&self, _reply: &Reply, text: &str) -> String {
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}).to_string(),
        )
    }

    fn stream_error(&self, _reply: &Reply) -> String {
        sse_event(
            "error",
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        )
    }

    fn close(&self, reply: &Reply) -> Vec<String> {
        let mut frames = Vec::new();
        if !reply.plan.due.is_empty() {
            frames.push(self.block_stop(self.block_of(reply, reply.plan.len() - 1)));
        }
        let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason(reply), "stop_sequence": null}});
        if reply.include_usage {
            delta["usage"] = json!({"output_tokens": reply.completion_tokens()});
        }
        frames.push(sse_event("message_delta", &delta.to_string()));
        frames.push(sse_event("message_stop", r#"{"type": "message_stop"}"#));
        frames
    }

    fn body(&self, reply: &Reply) -> Value {
        let mut content = Vec::new();
        if !reply.plan.reasoning.is_empty() {
            content.push(json!({"type": "thinking", "thinking": reply.plan.reasoning_text(), "signature": "sim"}));
        }
        match &reply.plan.tool_name {
            Some(name) => {
                let input: Value =
                    serde_json::from_str(&reply.plan.answer_text()).unwrap_or(json!({}));
                content.push(
                    json!({"type": "tool_use", "id": "toolu_sim", "name": name, "input": input}),
                );
            }
            None => content.push(json!({"type": "text", "text": reply.plan.answer_text()})),
        }
        json!({
            "id": format!("msg_{}", reply.id), "type": "message", "role": "assistant", "model": reply.model,
            "content": content, "stop_reason": self.stop_reason(reply), "stop_sequence": null,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens()},
        })
    }

    fn error(&self, kind: ErrorKind, message: &str) -> (StatusCode, Value) {
        let (status, kind_name) = match kind {
            ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            ErrorKind::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
            ErrorKind::Unavailable => (
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "overloaded_error",
            ),
            ErrorKind::Auth => (StatusCode::UNAUTHORIZED, "authentication_error"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found_error"),
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        };
        (
            status,
            json!({"type": "error", "error": {"type": kind_name, "message": message}}),
        )
    }

    fn key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
    }

    fn rate_limit_names(&self) -> (&'static str, &'static str) {
        (
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
        )
    }
}

/// `POST /v1/messages`.
pub(super) async fn messages(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<MessagesRequest>(&body) {
        Ok(request) => {
            respond(
                &state,
                &AnthropicWire,
                &headers,
                &uri.to_string(),
                request.ask(),
            )
            .await
        }
        Err(err) => {
            let (status, body) = AnthropicWire.error(
                ErrorKind::BadRequest,
                &format!("invalid request body: {err}"),
            );
            (status, Json(body)).into_response()
        }
    }
}

/// The Anthropic model list body.
pub(super) fn model_list(models: &[&String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"}))
        .collect();
    json!({"data": data, "has_more": false, "first_id": models.first(), "last_id": models.last()})
}
