//! The simulator's Gemini wire format: `POST /v1beta/models/{model}:streamGenerateContent`
//! (always SSE, as with `alt=sse`) and `:generateContent`, `GET /v1beta/models`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::SimState;
use super::answer::Ask;
use super::reply::{Reply, Wire, respond, sse};
use super::scenario::ErrorKind;

/// Gemini's encoding.
pub(super) struct GeminiWire;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    #[serde(default)]
    contents: Vec<ContentEntry>,
    #[serde(default)]
    system_instruction: Option<ContentEntry>,
    #[serde(default)]
    generation_config: Option<GenerationConfig>,
    #[serde(default)]
    tools: Vec<ToolEntry>,
}

#[derive(Debug, Deserialize)]
struct ContentEntry {
    #[serde(default)]
    parts: Vec<PartEntry>,
}

#[derive(Debug, Deserialize)]
struct PartEntry {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    response_mime_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolEntry {
    #[serde(default)]
    function_declarations: Vec<Declaration>,
}

#[derive(Debug, Deserialize)]
struct Declaration {
    name: String,
}

impl GenerateRequest {
    fn ask(self, model: String, stream: bool) -> Ask {
        let mut prompt = String::new();
        for entry in self.system_instruction.iter().chain(&self.contents) {
            for part in &entry.parts {
                prompt.push_str(part.text.as_deref().unwrap_or_default());
                prompt.push('\n');
            }
        }
        let config = self.generation_config;
        Ask {
            model,
            prompt,
            stream,
            include_usage: true,
            max_tokens: config.as_ref().and_then(|c| c.max_output_tokens),
            tools: self
                .tools
                .into_iter()
                .flat_map(|tool| tool.function_declarations)
                .map(|declaration| declaration.name)
                .collect(),
            json_mode: config
                .and_then(|c| c.response_mime_type)
                .is_some_and(|mime| mime == "application/json"),
        }
    }
}

impl GeminiWire {
    fn chunk(&self, reply: &Reply, parts: Value, finish: Option<&str>, usage: bool) -> Value {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(finish) = finish {
            candidate["finishReason"] = Value::from(finish);
        }
        let mut chunk =
            json!({"candidates": [candidate], "modelVersion": reply.model, "responseId": reply.id});
        if usage {
            chunk["usageMetadata"] = json!({
                "promptTokenCount": reply.prompt_tokens,
                "candidatesTokenCount": reply.plan.answer.len(),
                "thoughtsTokenCount": reply.plan.reasoning.len(),
                "totalTokenCount": reply.prompt_tokens as usize + reply.completion_tokens(),
            });
        }
        chunk
    }

    /// The parts of the whole answer: thoughts, then text or the function call.
    fn answer_parts(&self, reply: &Reply) -> Vec<Value> {
        let mut parts = Vec::new();
        if !reply.plan.reasoning.is_empty() {
            parts.push(json!({"text": reply.plan.reasoning_text(), "thought": true}));
        }
        match &reply.plan.tool_name {
            Some(name) => {
                let args: Value =
                    serde_json::from_str(&reply.plan.answer_text()).unwrap_or(json!({}));
                parts.push(json!({"functionCall": {"name": name, "args": args}}));
            }
            None => parts.push(json!({"text": reply.plan.answer_text()})),
        }
        parts
    }

    fn finish_reason(&self, reply: &Reply) -> &'static str {
        if reply.plan.finish_reason == "length" {
            "MAX_TOKENS"
        } else {
            "STOP"
        }
    }
}

impl Wire for GeminiWire {
    fn open(&self, _reply: &Reply) -> Vec<String> {
        Vec::new()
    }

    fn token(&self, reply: &Reply, index: usize) -> Vec<String> {
        let reasoning = reply.plan.reasoning.len();
        let part = if index < reasoning {
            json!({"text": reply.plan.reasoning[index], "thought": true})
        } else if let Some(name) = &reply.plan.tool_name {
            // Gemini sends a function call whole, when it is complete.
            if index + 1 < reply.plan.len() {
                return Vec::new();
            }
            let args: Value = serde_json::from_str(&reply.plan.answer_text()).unwrap_or(json!({}));
            json!({"functionCall": {"name": name, "args": args}})
        } else {
            json!({"text": reply.plan.answer[index - reasoning]})
        };
        vec![sse(&self
            .chunk(reply, json!([part]), None, false)
            .to_string())]
    }

    fn all_at_once(&self, reply: &Reply) -> Vec<String> {
        vec![sse(&self
            .chunk(reply, Value::Array(self.answer_parts(reply)), None, false)
            .to_string())]
    }

    fn filler(&self, reply: &Reply, text: &str) -> String {
        sse(&self
            .chunk(reply, json!([{"text": text}]), None, false)
            .to_string())
    }

    fn stream_error(&self, _reply: &Reply) -> String {
        sse(
            r#"{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"#,
        )
    }

    fn close(&self, reply: &Reply) -> Vec<String> {
        let last = self.chunk(
            reply,
            json!([{"text": ""}]),
            Some(self.finish_reason(reply)),
            reply.include_usage,
        );
        vec![sse(&last.to_string())]
    }

    fn body(&self, reply: &Reply) -> Value {
        self.chunk(
            reply,
            Value::Array(self.answer_parts(reply)),
            Some(self.finish_reason(reply)),
            true,
        )
    }

    fn error(&self, kind: ErrorKind, message: &str) -> (StatusCode, Value) {
        let (status, name, message) = match kind {
            ErrorKind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
            ),
            ErrorKind::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message),
            ErrorKind::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            ),
            ErrorKind::Auth => (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
            ),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", message),
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message),
        };
        (
            status,
            json!({"error": {"code": status.as_u16(), "message": message, "status": name}}),
        )
    }

    fn key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get("x-goog-api-key")
            .and_then(|value| value.to_str().ok())
    }

    fn rate_limit_names(&self) -> (&'static str, &'static str) {
        (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
        )
    }
}

/// `POST /v1beta/models/{model}:{method}`.
pub(super) async fn generate(
    State(state): State<Arc<SimState>>,
    Path(target): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (model, method) = target.split_once(':').unwrap_or((&target, ""));
    let stream = match method {
        "streamGenerateContent" => true,
        "generateContent" => false,
        other => {
            let (status, body) =
                GeminiWire.error(ErrorKind::NotFound, &format!("unknown method {other:?}"));
            return (status, Json(body)).into_response();
        }
    };
    match serde_json::from_slice::<GenerateRequest>(&body) {
        Ok(request) => {
            let ask = request.ask(model.to_owned(), stream);
            respond(&state, &GeminiWire, &headers, &uri.to_string(), ask).await
        }
        Err(err) => {
            let (status, body) = GeminiWire.error(
                ErrorKind::BadRequest,
                &format!("Invalid JSON payload received. {err}"),
            );
            (status, Json(body)).into_response()
        }
    }
}

/// The Gemini model list body.
pub(super) fn model_list(models: &[&String]) -> Value {
    let entries: Vec<Value> = models
        .iter()
        .map(|id| json!({"name": format!("models/{id}"), "displayName": id, "supportedGenerationMethods": ["generateContent"]}))
        .collect();
    json!({"models": entries})
}
