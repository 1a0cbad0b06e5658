//! Google Gemini (`{base_url}models/{model}:streamGenerateContent?alt=sse` and
//! `:generateContent`), the key in the `x-goog-api-key` header — never in the URL, where it
//! would end up in proxy logs and error texts.
//!
//! Each SSE event is a whole `GenerateContentResponse`: `candidates[].content.parts[]` carry
//! `text` (reasoning when `thought: true`) or a `functionCall`; `finishReason` marks the last
//! one, which also carries `usageMetadata`. There is no separate terminal event: the chunk
//! with a `finishReason` is it, and a stream that ends without one is truncated. Output
//! tokens are `candidatesTokenCount + thoughtsTokenCount`.

use std::borrow::Cow;

use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sse_stream::Sse;

use super::{
    Adapter, Call, DecodeError, EXCERPT_CHARS, Failure, body_excerpt, body_text, classify_error,
    classify_status, event_data, join, parse_models_body, post_json, with_key,
};
use crate::measurement::{ContentKind, Event, Usage};
use crate::probe::Role;
use crate::redact::Secret;

/// The Gemini adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gemini;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    #[serde(borrow, default)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(borrow, default)]
    model_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(borrow, default)]
    error: Option<WireError<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: bool,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Debug, Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: Option<u32>,
    #[serde(default)]
    candidates_token_count: Option<u32>,
    #[serde(default)]
    thoughts_token_count: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(borrow, default)]
    block_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct WireError<'a> {
    #[serde(default)]
    code: Option<u16>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

/// An error body: an object, or (from the streaming endpoint without `alt=sse`) an array of
/// one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ErrorBody<'a> {
    Many(#[serde(borrow)] Vec<Response<'a>>),
    One(#[serde(borrow)] Response<'a>),
}

impl WireError<'_> {
    fn outcome(&self, status: Option<u16>) -> crate::result::Outcome {
        let words = [
            self.status.as_deref().unwrap_or(""),
            self.message.as_deref().unwrap_or(""),
        ];
        match status.or(self.code) {
            Some(status) => classify_status(status, &words),
            None => classify_error(None, &words),
        }
    }

    fn describe(&self) -> String {
        match (&self.status, &self.message) {
            (Some(status), Some(message)) => format!("{status}: {message}"),
            (None, Some(message)) => message.to_string(),
            (Some(status), None) => status.to_string(),
            (None, None) => "error without a message".to_owned(),
        }
    }
}

impl From<UsageMetadata> for Usage {
    fn from(usage: UsageMetadata) -> Usage {
        let output = match (usage.candidates_token_count, usage.thoughts_token_count) {
            (None, None) => None,
            (candidates, thoughts) => Some(candidates.unwrap_or(0) + thoughts.unwrap_or(0)),
        };
        Usage {
            input_tokens: usage.prompt_token_count,
            output_tokens: output,
            reasoning_tokens: usage.thoughts_token_count,
        }
    }
}

/// Emits one response's events; `Done` when it carries a finish reason (or `always_done`).
fn emit_response(response: Response<'_>, always_done: bool, emit: &mut dyn FnMut(Event<'_>)) {
    if let Some(error) = &response.error {
        emit(Event::Error {
            outcome: error.outcome(None),
            message: error.describe(),
        });
        return;
    }
    if let Some(reason) = response
        .prompt_feedback
        .as_ref()
        .and_then(|f| f.block_reason.as_deref())
    {
        emit(Event::Error {
            outcome: crate::result::Outcome::ClientError,
            message: format!("the prompt was blocked: {reason}"),
        });
        return;
    }
    if let Some(model) = &response.model_version {
        emit(Event::Model(model));
    }
    let mut finished = false;
    for candidate in response.candidates.iter().flatten() {
        for part in candidate.content.iter().flat_map(|content| &content.parts) {
            if let Some(text) = &part.text {
                let kind = if part.thought {
                    ContentKind::Reasoning
                } else {
                    ContentKind::Answer
                };
                emit(Event::Content { kind, text });
            }
            if let Some(call) = &part.function_call {
                emit(Event::ToolName(&call.name));
                let arguments = call
                    .args
                    .as_ref()
                    .map_or_else(|| "{}".to_owned(), Value::to_string);
                emit(Event::Content {
                    kind: ContentKind::ToolCall,
                    text: &arguments,
                });
            }
        }
        if let Some(reason) = &candidate.finish_reason {
            emit(Event::Finish(reason));
            finished = true;
        }
    }
    if let Some(usage) = response.usage_metadata {
        emit(Event::Usage(usage.into()));
    }
    if finished || always_done {
        emit(Event::Done);
    }
}

fn parse<'a, T: Deserialize<'a>>(text: &'a str, what: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|err| {
        DecodeError(format!(
            "{what} is not valid JSON ({err}): {}",
            body_excerpt(text.as_bytes(), 200)
        ))
    })
}

fn with_google_key(
    request: RequestBuilder,
    key: Option<&Secret>,
) -> Result<RequestBuilder, DecodeError> {
    with_key(request, "x-goog-api-key", "", key)
}

/// The model id without the `models/` prefix users sometimes copy from the API.
fn bare_model(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// Every byte but the unreserved ones (RFC 3986: letters, digits, `-._~`).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The model id as one URL path segment: a `/`, `?`, `#` or `:` in an id stays inside the
/// segment (`../../admin`, `x?key=…` cannot reach another path or a query).
fn model_segment(model: &str) -> String {
    percent_encoding::utf8_percent_encode(bare_model(model), SEGMENT).to_string()
}

impl Adapter for Gemini {
    fn request(
        &self,
        http: &reqwest::Client,
        call: &Call<'_>,
    ) -> Result<RequestBuilder, DecodeError> {
        let contents: Vec<Value> = call
            .turns()
            .map(|message| {
                let role = if message.role == Role::Assistant {
                    "model"
                } else {
                    "user"
                };
                json!({"role": role, "parts": [{"text": message.content}]})
            })
            .collect();
        let mut generation = Map::new();
        generation.insert("maxOutputTokens".into(), Value::from(call.max_tokens));
        if let Some(temperature) = call.temperature {
            generation.insert("temperature".into(), Value::from(temperature));
        }
        if call.json_mode {
            generation.insert("responseMimeType".into(), Value::from("application/json"));
        }
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        if let Some(system) = call.system_text() {
            body.insert(
                "systemInstruction".into(),
                json!({"parts": [{"text": system}]}),
            );
        }
        body.insert("generationConfig".into(), Value::Object(generation));
        if !call.tools.is_empty() {
            // `parametersJsonSchema` takes JSON Schema as it is (`additionalProperties`,
            // `pattern`, …); `parameters` takes only Gemini's OpenAPI subset.
            let declarations: Vec<Value> = call
                .tools
                .iter()
                .map(|tool| {
                    json!({"name": tool.name, "description": tool.description,
                        "parametersJsonSchema": tool.parameters})
                })
                .collect();
            body.insert(
                "tools".into(),
                json!([{ "functionDeclarations": declarations }]),
            );
        }
        if let Some(tool) = call.tools.first().filter(|_| call.force_tool) {
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [tool.name]}}),
            );
        }
        let model = model_segment(call.model);
        let path = if call.stream {
            format!("models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("models/{model}:generateContent")
        };
        with_google_key(
            post_json(http, join(call.base_url, &path), call, body),
            call.key,
        )
    }

    fn decode_event(
        &self,
        event: &Sse,
        emit: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        let Some(data) = event_data(event) else {
            return Ok(());
        };
        emit_response(parse(data, "SSE event")?, false, emit);
        Ok(())
    }

    fn decode_body(&self, body: &[u8], emit: &mut dyn FnMut(Event<'_>)) -> Result<(), DecodeError> {
        let response: Response<'_> = parse(body_text(body)?, "body")?;
        if response.candidates.is_none()
            && response.error.is_none()
            && response.prompt_feedback.is_none()
        {
            return Err(DecodeError(format!(
                "body has neither `candidates` nor `error`: {}",
                body_excerpt(body, EXCERPT_CHARS)
            )));
        }
        emit_response(response, true, emit);
        Ok(())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> Failure {
        let parsed = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::from_str::<ErrorBody<'_>>(text).ok());
        let error = match parsed {
            Some(ErrorBody::One(response)) => response.error,
            Some(ErrorBody::Many(responses)) => responses.into_iter().find_map(|r| r.error),
            None => None,
        };
        match error {
            Some(error) => Failure {
                outcome: error.outcome(Some(status)),
                message: error.describe(),
            },
            None => Failure::unexplained(status, body),
        }
    }

    fn models_request(
        &self,
        http: &reqwest::Client,
        base_url: &Url,
        key: Option<&Secret>,
    ) -> Result<RequestBuilder, DecodeError> {
        with_google_key(http.get(join(base_url, "models?pageSize=1000")), key)
    }

    fn decode_models(&self, body: &[u8]) -> Result<Vec<String>, DecodeError> {
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            models: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            name: String,
        }
        let list: List = parse_models_body(body)?;
        Ok(list
            .models
            .into_iter()
            .map(|entry| bare_model(&entry.name).to_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Outcome;

    fn decode(data: &str) -> Vec<String> {
        let event = Sse::default().data(data);
        let mut out = Vec::new();
        Gemini
            .decode_event(&event, &mut |event| out.push(format!("{event:?}")))
            .unwrap();
        out
    }

    #[test]
    fn stream_chunks() {
        assert_eq!(
            decode(
                r#"{"candidates":[{"content":{"parts":[{"text":"Let me see","thought":true}],"role":"model"},"index":0}],"modelVersion":"gemini-2.5-flash"}"#
            ),
            vec![
                r#"Model("gemini-2.5-flash")"#,
                r#"Content { kind: Reasoning, text: "Let me see" }"#
            ]
        );
        assert_eq!(
            decode(
                r#"{"candidates":[{"content":{"parts":[{"text":"pong"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1,"thoughtsTokenCount":12,"totalTokenCount":22}}"#
            ),
            vec![
                r#"Content { kind: Answer, text: "pong" }"#,
                r#"Finish("STOP")"#,
                "Usage(Usage { input_tokens: Some(9), output_tokens: Some(13), reasoning_tokens: Some(12) })",
                "Done"
            ]
        );
        assert_eq!(
            decode(
                r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]},"finishReason":"STOP"}]}"#
            ),
            vec![
                r#"ToolName("get_weather")"#,
                r#"Content { kind: ToolCall, text: "{\"city\":\"Paris\"}" }"#,
                r#"Finish("STOP")"#,
                "Done"
            ]
        );
    }

    #[test]
    fn errors_in_stream_and_blocked_prompts() {
        assert_eq!(
            decode(
                r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#
            ),
            vec![
                r#"Error { outcome: ServerError, message: "UNAVAILABLE: The model is overloaded." }"#
            ]
        );
        assert_eq!(
            decode(r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#),
            vec![r#"Error { outcome: ClientError, message: "the prompt was blocked: SAFETY" }"#]
        );
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#;
        let failure = Gemini.decode_error(429, body);
        assert_eq!(failure.outcome, Outcome::RateLimited);
        assert!(failure.message.starts_with("RESOURCE_EXHAUSTED"));
        let body = br#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}]"#;
        assert_eq!(Gemini.decode_error(400, body).outcome, Outcome::Auth);
        let body = br#"{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta","status":"NOT_FOUND"}}"#;
        assert_eq!(Gemini.decode_error(404, body).outcome, Outcome::NotFound);
    }

    #[test]
    fn model_list_drops_the_prefix() {
        let ids = Gemini
            .decode_models(br#"{"models":[{"name":"models/gemini-2.5-flash","displayName":"Gemini 2.5 Flash"}],"nextPageToken":"x"}"#)
            .unwrap();
        assert_eq!(ids, ["gemini-2.5-flash"]);
    }
}
