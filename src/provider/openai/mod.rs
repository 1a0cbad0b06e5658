//! The OpenAI-compatible Chat Completions format (`POST {base_url}chat/completions`), spoken
//! by OpenAI, OpenRouter, vLLM, LiteLLM, DeepSeek, Qwen, Mistral and most gateways.
//!
//! What real endpoints send and how it is read:
//! - a role-only first delta and empty deltas carry no content and emit none;
//! - `delta.reasoning_content` (DeepSeek, vLLM) and `delta.reasoning` (OpenRouter) are
//!   reasoning content; `delta.tool_calls[].function` name and arguments are tool-call content;
//! - the usage tail (`choices: []` with `usage`, asked for by `stream_options.include_usage`)
//!   gives token counts;
//! - an `error` object inside the stream (OpenRouter does this after a 200) is an error event;
//! - a chunk's `provider` (OpenRouter) names the upstream that served the request;
//! - `data: [DONE]` is the terminal event;
//! - comments (`: OPENROUTER PROCESSING`) and CRLF line ends are the SSE parser's business.

mod lazy;

use std::borrow::Cow;

use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{Map, Value};
use sse_stream::Sse;

use super::{
    Adapter, Call, DecodeError, EXCERPT_CHARS, Failure, body_excerpt, body_text, classify_error,
    classify_status, data_ids, event_data, join, post_json, with_key,
};
use crate::config::MaxTokensField;
use crate::measurement::{ContentKind, Event, Usage};
use crate::redact::Secret;

/// The OpenAI-compatible adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi;

/// A stream chunk or a whole completion, as far as measurement reads it.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Boxed, as `Choice::message`: rare, and inline they made every chunk's value several
    /// hundred bytes that serde moves at each level (`cargo bench --bench measurement`: 6–8 %
    /// of the per-event time).
    #[serde(borrow, default)]
    error: Option<Box<WireError<'a>>>,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    message: Option<Box<Delta<'a>>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Debug, Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Debug, Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u32>,
}

/// `{"error": {...}}` as OpenAI sends it, or a bare string as some servers do.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireError<'a> {
    Object {
        #[serde(borrow, default)]
        message: Option<Cow<'a, str>>,
        #[serde(borrow, default, rename = "type")]
        kind: Option<Cow<'a, str>>,
        #[serde(default)]
        code: Option<Value>,
    },
    Text(#[serde(borrow)] Cow<'a, str>),
}

/// Body of an error response: OpenAI's shape, or the `detail`/`message` of other servers.
#[derive(Debug, Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow, default)]
    error: Option<WireError<'a>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    detail: Option<Value>,
}

impl WireError<'_> {
    /// The HTTP-like code, when the provider gives a number (OpenRouter does).
    fn numeric_code(&self) -> Option<u16> {
        match self {
            WireError::Object {
                code: Some(code), ..
            } => code
                .as_u64()
                .and_then(|code| u16::try_from(code).ok())
                .or_else(|| code.as_str().and_then(|code| code.parse().ok())),
            _ => None,
        }
    }

    /// The words that say what kind of error it is.
    fn words(&self) -> Vec<&str> {
        match self {
            WireError::Object { kind, code, .. } => kind
                .as_deref()
                .into_iter()
                .chain(code.as_ref().and_then(Value::as_str))
                .collect(),
            WireError::Text(_) => Vec::new(),
        }
    }

    fn message(&self) -> String {
        match self {
            WireError::Object {
                message: Some(message),
                ..
            } => message.to_string(),
            WireError::Object { kind, code, .. } => {
                let code = code.as_ref().map(Value::to_string);
                format!(
                    "error {}",
                    kind.as_deref()
                        .or(code.as_deref())
                        .unwrap_or("without a message")
                )
            }
            WireError::Text(text) => text.to_string(),
        }
    }
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            reasoning_tokens: usage
                .completion_tokens_details
                .and_then(|details| details.reasoning_tokens),
        }
    }
}

/// Emits the events of one parsed chunk or completion object.
fn emit_chunk(chunk: Chunk<'_>, emit: &mut dyn FnMut(Event<'_>)) {
    if let Some(model) = &chunk.model {
        emit(Event::Model(model));
    }
    if let Some(provider) = &chunk.provider {
        emit(Event::Upstream(provider));
    }
    for choice in chunk.choices.iter().flatten() {
        if let Some(delta) = choice.delta.as_ref().or(choice.message.as_deref()) {
            emit_delta(delta, emit);
        }
        if let Some(reason) = &choice.finish_reason {
            emit(Event::Finish(reason));
        }
    }
    if let Some(usage) = chunk.usage {
        emit(Event::Usage(usage.into()));
    }
    if let Some(error) = chunk.error {
        emit(Event::Error {
            outcome: classify_error(error.numeric_code(), &error.words()),
            message: error.message(),
        });
    }
}

fn emit_delta(delta: &Delta<'_>, emit: &mut dyn FnMut(Event<'_>)) {
    for reasoning in [&delta.reasoning_content, &delta.reasoning]
        .into_iter()
        .flatten()
    {
        emit(Event::Content {
            kind: ContentKind::Reasoning,
            text: reasoning,
        });
    }
    for call in delta.tool_calls.iter().flatten() {
        let Some(function) = &call.function else {
            continue;
        };
        if let Some(name) = &function.name {
            emit(Event::ToolName(name));
        }
        if let Some(arguments) = &function.arguments {
            emit(Event::Content {
                kind: ContentKind::ToolCall,
                text: arguments,
            });
        }
    }
    if let Some(content) = &delta.content {
        emit(Event::Content {
            kind: ContentKind::Answer,
            text: content,
        });
    }
}

fn parse_chunk<'a>(text: &'a str, what: &str) -> Result<Chunk<'a>, DecodeError> {
    serde_json::from_str(text).map_err(|err| {
        DecodeError(format!(
            "{what} is not valid JSON ({err}): {}",
            body_excerpt(text.as_bytes(), EXCERPT_CHARS)
        ))
    })
}

impl Adapter for OpenAi {
    fn request(
        &self,
        http: &reqwest::Client,
        call: &Call<'_>,
    ) -> Result<RequestBuilder, DecodeError> {
        let url = endpoint(call.base_url);
        let mut body = Map::new();
        body.insert("model".into(), Value::from(call.model));
        let messages = call
            .messages
            .iter()
            .map(|message| {
                serde_json::json!({"role": message.role.as_str(), "content": message.content})
            })
            .collect();
        body.insert("messages".into(), Value::Array(messages));
        let limit_field = match call.max_tokens_field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        };
        body.insert(limit_field.into(), Value::from(call.max_tokens));
        if let Some(temperature) = call.temperature {
            body.insert("temperature".into(), Value::from(temperature));
        }
        body.insert("stream".into(), Value::from(call.stream));
        if call.stream {
            body.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
        if !call.tools.is_empty() {
            let tools = call.tools.iter().map(|tool| {
                serde_json::json!({"type": "function", "function": {
                    "name": tool.name, "description": tool.description, "parameters": tool.parameters,
                }})
            });
            body.insert("tools".into(), tools.collect());
        }
        if let Some(tool) = call.tools.first().filter(|_| call.force_tool) {
            body.insert(
                "tool_choice".into(),
                serde_json::json!({"type": "function", "function": {"name": tool.name}}),
            );
        }
        if call.json_mode {
            body.insert(
                "response_format".into(),
                serde_json::json!({"type": "json_object"}),
            );
        }
        authorize(post_json(http, url, call, body), call.key)
    }

    fn decode_event(
        &self,
        event: &Sse,
        emit: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        let Some(data) = event_data(event) else {
            return Ok(());
        };
        if data == "[DONE]" {
            emit(Event::Done);
            return Ok(());
        }
        // Most events are plain deltas, read lazily; the rest in full.
        let chunk = match lazy::read(data) {
            Some(chunk) => chunk,
            None => parse_chunk(data, "SSE event")?,
        };
        emit_chunk(chunk, emit);
        Ok(())
    }

    fn decode_body(&self, body: &[u8], emit: &mut dyn FnMut(Event<'_>)) -> Result<(), DecodeError> {
        let chunk = parse_chunk(body_text(body)?, "body")?;
        if chunk.choices.is_none() && chunk.error.is_none() {
            return Err(DecodeError(format!(
                "body has neither `choices` nor `error`: {}",
                body_excerpt(body, EXCERPT_CHARS)
            )));
        }
        emit_chunk(chunk, emit);
        emit(Event::Done);
        Ok(())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> Failure {
        match serde_json::from_slice::<ErrorBody<'_>>(body) {
            Ok(ErrorBody {
                error: Some(error), ..
            }) => Failure {
                outcome: classify_status(status, &error.words()),
                message: error.message(),
            },
            Ok(ErrorBody {
                message: Some(message),
                ..
            }) => Failure {
                outcome: classify_status(status, &[&message]),
                message: message.into_owned(),
            },
            Ok(ErrorBody {
                detail: Some(detail),
                ..
            }) => {
                let message = detail
                    .as_str()
                    .map_or_else(|| detail.to_string(), str::to_owned);
                Failure {
                    outcome: classify_status(status, &[&message]),
                    message,
                }
            }
            _ => Failure::unexplained(status, body),
        }
    }

    fn models_request(
        &self,
        http: &reqwest::Client,
        base_url: &Url,
        key: Option<&Secret>,
    ) -> Result<RequestBuilder, DecodeError> {
        authorize(http.get(join(base_url, "models")), key)
    }

    fn decode_models(&self, body: &[u8]) -> Result<Vec<String>, DecodeError> {
        data_ids(body)
    }
}

/// Adds `Authorization: Bearer <key>`, marked sensitive.
fn authorize(request: RequestBuilder, key: Option<&Secret>) -> Result<RequestBuilder, DecodeError> {
    with_key(request, "authorization", "Bearer ", key)
}

/// `{base_url}chat/completions`.
pub fn endpoint(base_url: &Url) -> Url {
    join(base_url, "chat/completions")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Outcome;

    fn decode(data: &str) -> Vec<String> {
        let event = Sse::default().data(data);
        let mut out = Vec::new();
        OpenAi
            .decode_event(&event, &mut |event| out.push(format!("{event:?}")))
            .unwrap();
        out
    }

    #[test]
    fn role_only_and_empty_deltas_carry_no_content() {
        let role = decode(
            r#"{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        );
        assert_eq!(
            role,
            vec![r#"Model("m")"#, r#"Content { kind: Answer, text: "" }"#]
        );
        assert_eq!(
            decode(r#"{"choices":[{"index":0,"delta":{}}]}"#),
            Vec::<String>::new()
        );
    }

    #[test]
    fn reasoning_and_tool_calls_are_content() {
        let out = decode(
            r#"{"choices":[{"delta":{"reasoning_content":"think","tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#,
        );
        assert_eq!(
            out,
            vec![
                r#"Content { kind: Reasoning, text: "think" }"#,
                r#"Content { kind: ToolCall, text: "{\"a\"" }"#
            ]
        );
        let named = decode(
            r#"{"provider":"DeepInfra","choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        );
        assert_eq!(
            named,
            vec![
                r#"Upstream("DeepInfra")"#,
                r#"ToolName("get_weather")"#,
                r#"Content { kind: ToolCall, text: "" }"#
            ]
        );
    }

    #[test]
    fn usage_tail_and_done() {
        let out = decode(
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":40,"completion_tokens_details":{"reasoning_tokens":4}}}"#,
        );
        assert_eq!(
            out,
            vec![
                "Usage(Usage { input_tokens: Some(12), output_tokens: Some(40), reasoning_tokens: Some(4) })"
            ]
        );
        assert_eq!(decode(" [DONE] "), vec!["Done"]);
    }

    #[test]
    fn error_in_stream_is_classified() {
        let out = decode(r#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#);
        assert_eq!(
            out,
            vec![r#"Error { outcome: RateLimited, message: "Rate limit exceeded" }"#]
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let event = Sse::default().data("{\"choices\": [");
        let err = OpenAi.decode_event(&event, &mut |_| {}).unwrap_err();
        assert!(err.0.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn error_bodies() {
        let failure = OpenAi.decode_error(
            404,
            br#"{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
        );
        assert_eq!(failure.outcome, Outcome::NotFound);
        assert_eq!(failure.message, "The model `x` does not exist");
        let failure = OpenAi.decode_error(503, b"upstream connect error");
        assert_eq!(failure.outcome, Outcome::ServerError);
        assert_eq!(failure.message, "upstream connect error");
        let failure = OpenAi.decode_error(422, br#"{"detail":"bad"}"#);
        assert_eq!(failure.outcome, Outcome::ClientError);
        assert_eq!(failure.message, "bad");
    }

    #[test]
    fn whole_body_answers() {
        let mut out = Vec::new();
        OpenAi
            .decode_body(
                br#"{"model":"m","choices":[{"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
                &mut |event| out.push(format!("{event:?}")),
            )
            .unwrap();
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(out[1], r#"Content { kind: Answer, text: "pong" }"#);
        assert_eq!(out[4], "Done");
        assert!(OpenAi.decode_body(b"{}", &mut |_| {}).is_err());
    }
}
