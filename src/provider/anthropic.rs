//! Anthropic Messages (`POST {base_url}messages`, `x-api-key`, `anthropic-version`).
//!
//! Stream events and what they become: `message_start` (model, input tokens),
//! `content_block_start` (a `tool_use` block names its tool), `content_block_delta`
//! (`text_delta` is answer, `thinking_delta` reasoning, `input_json_delta` tool arguments;
//! `signature_delta` and citations carry no content), `content_block_stop`, `message_delta`
//! (`stop_reason`, cumulative `usage.output_tokens`), `message_stop` (terminal), `ping`
//! (nothing), `error` (e.g. `overloaded_error`, classified).
//!
//! The stable API has no JSON-mode switch: for a `json_mode` probe the instruction in the
//! prompt is all that is sent, so the `json` flag says whether the model keeps to JSON when
//! told.

use std::borrow::Cow;

use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sse_stream::Sse;

use super::{
    Adapter, Call, DecodeError, EXCERPT_CHARS, Failure, body_excerpt, body_text, classify_error,
    classify_status, data_ids, event_data, join, post_json, with_key,
};
use crate::measurement::{ContentKind, Event, Usage};
use crate::redact::Secret;

/// The Anthropic Messages adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anthropic;

/// The API version sonde speaks.
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart {
        #[serde(borrow)]
        message: MessageStart<'a>,
    },
    ContentBlockStart {
        #[serde(borrow)]
        content_block: Block<'a>,
    },
    ContentBlockDelta {
        #[serde(borrow)]
        delta: Delta<'a>,
    },
    MessageDelta {
        #[serde(borrow, default)]
        delta: Option<MessageDeltaBody<'a>>,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        #[serde(borrow)]
        error: WireError<'a>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageStart<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        #[serde(borrow, default)]
        text: Cow<'a, str>,
    },
    Thinking {
        #[serde(borrow, default)]
        thinking: Cow<'a, str>,
    },
    ToolUse {
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(default)]
        input: Option<Value>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    #[serde(rename = "thinking_delta")]
    Thinking {
        #[serde(borrow)]
        thinking: Cow<'a, str>,
    },
    #[serde(rename = "input_json_delta")]
    InputJson {
        #[serde(borrow)]
        partial_json: Cow<'a, str>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody<'a> {
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct WireError<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// A whole (non-streamed) answer, or an error body.
#[derive(Debug, Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Vec<Block<'a>>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    error: Option<WireError<'a>>,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        Usage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            reasoning_tokens: None,
        }
    }
}

impl WireError<'_> {
    fn event(&self, status: Option<u16>) -> Event<'static> {
        let words = [
            self.kind.as_deref().unwrap_or(""),
            self.message.as_deref().unwrap_or(""),
        ];
        let outcome = match status {
            Some(status) => classify_status(status, &words),
            None => classify_error(None, &words),
        };
        Event::Error {
            outcome,
            message: self.describe(),
        }
    }

    fn describe(&self) -> String {
        match (&self.kind, &self.message) {
            (Some(kind), Some(message)) => format!("{kind}: {message}"),
            (None, Some(message)) => message.to_string(),
            (Some(kind), None) => kind.to_string(),
            (None, None) => "error without a message".to_owned(),
        }
    }
}

fn emit_block(block: &Block<'_>, emit: &mut dyn FnMut(Event<'_>)) {
    match block {
        Block::Text { text } => emit(Event::Content {
            kind: ContentKind::Answer,
            text,
        }),
        Block::Thinking { thinking } => emit(Event::Content {
            kind: ContentKind::Reasoning,
            text: thinking,
        }),
        Block::ToolUse { name, input } => {
            emit(Event::ToolName(name));
            if let Some(input) = input.as_ref().filter(|input| !is_empty_object(input)) {
                emit(Event::Content {
                    kind: ContentKind::ToolCall,
                    text: &input.to_string(),
                });
            }
        }
        Block::Other => {}
    }
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(Map::is_empty)
}

fn parse<'a, T: Deserialize<'a>>(text: &'a str, what: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|err| {
        DecodeError(format!(
            "{what} is not valid JSON ({err}): {}",
            body_excerpt(text.as_bytes(), 200)
        ))
    })
}

fn with_headers(
    request: RequestBuilder,
    key: Option<&Secret>,
) -> Result<RequestBuilder, DecodeError> {
    with_key(
        request.header("anthropic-version", API_VERSION),
        "x-api-key",
        "",
        key,
    )
}

impl Adapter for Anthropic {
    fn request(
        &self,
        http: &reqwest::Client,
        call: &Call<'_>,
    ) -> Result<RequestBuilder, DecodeError> {
        let messages: Vec<Value> = call
            .turns()
            .map(|message| json!({"role": message.role.as_str(), "content": message.content}))
            .collect();
        let mut body = Map::new();
        body.insert("model".into(), Value::from(call.model));
        body.insert("max_tokens".into(), Value::from(call.max_tokens));
        body.insert("messages".into(), Value::Array(messages));
        if let Some(system) = call.system_text() {
            body.insert("system".into(), Value::from(system));
        }
        if let Some(temperature) = call.temperature {
            body.insert("temperature".into(), Value::from(temperature));
        }
        body.insert("stream".into(), Value::from(call.stream));
        if !call.tools.is_empty() {
            let tools = call.tools.iter().map(|tool| {
                json!({"name": tool.name, "description": tool.description, "input_schema": tool.parameters})
            });
            body.insert("tools".into(), tools.collect());
        }
        if let Some(tool) = call.tools.first().filter(|_| call.force_tool) {
            body.insert(
                "tool_choice".into(),
                json!({"type": "tool", "name": tool.name}),
            );
        }
        with_headers(
            post_json(http, join(call.base_url, "messages"), call, body),
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
        match parse::<StreamEvent<'_>>(data, "SSE event")? {
            StreamEvent::MessageStart { message } => {
                if let Some(model) = &message.model {
                    emit(Event::Model(model));
                }
                if let Some(usage) = message.usage {
                    emit(Event::Usage(usage.into()));
                }
            }
            StreamEvent::ContentBlockStart { content_block } => emit_block(&content_block, emit),
            StreamEvent::ContentBlockDelta { delta } => match &delta {
                Delta::Text { text } => emit(Event::Content {
                    kind: ContentKind::Answer,
                    text,
                }),
                Delta::Thinking { thinking } => emit(Event::Content {
                    kind: ContentKind::Reasoning,
                    text: thinking,
                }),
                Delta::InputJson { partial_json } => emit(Event::Content {
                    kind: ContentKind::ToolCall,
                    text: partial_json,
                }),
                Delta::Other => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    emit(Event::Finish(reason));
                }
                if let Some(usage) = usage {
                    emit(Event::Usage(usage.into()));
                }
            }
            StreamEvent::MessageStop => emit(Event::Done),
            StreamEvent::Error { error } => emit(error.event(None)),
            StreamEvent::Other => {}
        }
        Ok(())
    }

    fn decode_body(&self, body: &[u8], emit: &mut dyn FnMut(Event<'_>)) -> Result<(), DecodeError> {
        let message: Message<'_> = parse(body_text(body)?, "body")?;
        if let Some(error) = &message.error {
            emit(error.event(None));
            return Ok(());
        }
        let Some(content) = &message.content else {
            return Err(DecodeError(format!(
                "body has neither `content` nor `error`: {}",
                body_excerpt(body, EXCERPT_CHARS)
            )));
        };
        if let Some(model) = &message.model {
            emit(Event::Model(model));
        }
        for block in content {
            emit_block(block, emit);
        }
        if let Some(reason) = &message.stop_reason {
            emit(Event::Finish(reason));
        }
        if let Some(usage) = message.usage {
            emit(Event::Usage(usage.into()));
        }
        emit(Event::Done);
        Ok(())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> Failure {
        let parsed = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::from_str::<Message<'_>>(text).ok());
        match parsed.and_then(|message| message.error.map(|error| error.event(Some(status)))) {
            Some(Event::Error { outcome, message }) => Failure { outcome, message },
            _ => Failure::unexplained(status, body),
        }
    }

    fn models_request(
        &self,
        http: &reqwest::Client,
        base_url: &Url,
        key: Option<&Secret>,
    ) -> Result<RequestBuilder, DecodeError> {
        with_headers(http.get(join(base_url, "models?limit=1000")), key)
    }

    fn decode_models(&self, body: &[u8]) -> Result<Vec<String>, DecodeError> {
        data_ids(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Outcome;

    fn decode(data: &str) -> Vec<String> {
        let event = Sse::default().data(data);
        let mut out = Vec::new();
        Anthropic
            .decode_event(&event, &mut |event| out.push(format!("{event:?}")))
            .unwrap();
        out
    }

    #[test]
    fn stream_events() {
        assert_eq!(
            decode(
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","usage":{"input_tokens":25,"output_tokens":1}}}"#
            ),
            vec![
                r#"Model("claude-sonnet-4-5")"#,
                "Usage(Usage { input_tokens: Some(25), output_tokens: Some(1), reasoning_tokens: None })"
            ]
        );
        assert_eq!(
            decode(
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
            ),
            vec![r#"Content { kind: Answer, text: "" }"#]
        );
        assert_eq!(
            decode(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#
            ),
            vec![r#"Content { kind: Reasoning, text: "hm" }"#]
        );
        assert_eq!(
            decode(
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#
            ),
            vec![r#"ToolName("get_weather")"#]
        );
        assert_eq!(
            decode(
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#
            ),
            vec![r#"Content { kind: ToolCall, text: "{\"city\":" }"#]
        );
        assert_eq!(
            decode(
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#
            ),
            vec![
                r#"Finish("end_turn")"#,
                "Usage(Usage { input_tokens: None, output_tokens: Some(15), reasoning_tokens: None })"
            ]
        );
        assert_eq!(decode(r#"{"type":"message_stop"}"#), vec!["Done"]);
        assert!(decode(r#"{"type":"ping"}"#).is_empty());
        assert!(decode(r#"{"type":"content_block_stop","index":0}"#).is_empty());
        assert!(decode(r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"x"}}"#).is_empty());
    }

    #[test]
    fn overloaded_inside_the_stream_is_a_server_error() {
        assert_eq!(
            decode(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            vec![r#"Error { outcome: ServerError, message: "overloaded_error: Overloaded" }"#]
        );
        assert_eq!(
            decode(r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#)[0],
            r#"Error { outcome: RateLimited, message: "rate_limit_error: slow" }"#
        );
    }

    #[test]
    fn error_bodies() {
        let body =
            br#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}"#;
        assert_eq!(Anthropic.decode_error(404, body).outcome, Outcome::NotFound);
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let failure = Anthropic.decode_error(529, body);
        assert_eq!(failure.outcome, Outcome::ServerError);
        assert_eq!(failure.message, "overloaded_error: Overloaded");
        let body = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(Anthropic.decode_error(401, body).outcome, Outcome::Auth);
    }

    #[test]
    fn whole_message() {
        let mut out = Vec::new();
        Anthropic
            .decode_body(
                br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"pong"},{"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":5}}"#,
                &mut |event| out.push(format!("{event:?}")),
            )
            .unwrap();
        assert_eq!(out[1], r#"Content { kind: Reasoning, text: "t" }"#);
        assert_eq!(out[2], r#"Content { kind: Answer, text: "pong" }"#);
        assert_eq!(out[3], r#"ToolName("get_weather")"#);
        assert_eq!(
            out[4],
            r#"Content { kind: ToolCall, text: "{\"city\":\"Paris\"}" }"#
        );
        assert_eq!(out.last().unwrap(), "Done");
    }

    #[test]
    fn model_list() {
        let ids = Anthropic
            .decode_models(br#"{"data":[{"type":"model","id":"claude-sonnet-4-5","display_name":"Claude"}],"has_more":false}"#)
            .unwrap();
        assert_eq!(ids, ["claude-sonnet-4-5"]);
    }
}
