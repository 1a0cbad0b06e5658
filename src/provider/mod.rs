//! Provider adapters: HTTP requests and wire formats, nothing else.
//!
//! An adapter builds the request for one run and decodes what comes back — SSE events, a
//! whole JSON body, an error body — into the typed [`Event`]s that the measurement code
//! consumes. It never touches clocks or sockets: the runner does I/O and timing. Adding a
//! wire format is one new file here and one arm in [`adapter`].

pub mod anthropic;
pub mod gemini;
pub mod headers;
pub mod openai;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{RequestBuilder, Url};
use sse_stream::Sse;
use thiserror::Error;

use crate::config::{MaxTokensField, ProviderKind};
use crate::measurement::Event;
use crate::probe::{Message, Role, Tool};
use crate::redact::Secret;
use crate::result::Outcome;
pub use headers::{GatewayRoute, RateLimits};

/// Everything an adapter needs to build one run's request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The provider's base URL (ends in `/`).
    pub base_url: &'a Url,
    /// The model id to ask for.
    pub model: &'a str,
    /// The rendered conversation, nonce included.
    pub messages: &'a [Message],
    /// Token limit, reasoning budget included.
    pub max_tokens: u32,
    /// Which field carries the limit.
    pub max_tokens_field: MaxTokensField,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Whether to ask for a stream.
    pub stream: bool,
    /// Extra top-level body fields from the config.
    pub extra_body: &'a serde_json::Map<String, serde_json::Value>,
    /// The API key, if the provider has one.
    pub key: Option<&'a Secret>,
    /// The functions offered (none: no tools in the request).
    pub tools: &'a [Tool],
    /// The model must call the first of `tools` (the `tools` probe); otherwise it chooses.
    pub force_tool: bool,
    /// Ask for JSON output.
    pub json_mode: bool,
}

impl Call<'_> {
    /// The system messages joined, for formats that take the system prompt apart.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .messages
            .iter()
            .filter(|message| message.role == Role::System)
            .map(|message| message.content.as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// The non-system messages.
    pub fn turns(&self) -> impl Iterator<Item = &Message> {
        self.messages
            .iter()
            .filter(|message| message.role != Role::System)
    }
}

/// A response that is not what its format promises.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Characters of a body quoted in an error when the provider gave no message.
pub const EXCERPT_CHARS: usize = 200;

/// An error response, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its class.
    pub outcome: Outcome,
    /// The provider's own words, or the start of the body when it gave none.
    pub message: String,
}

impl Failure {
    /// An error body the format does not explain: classified by status, quoted.
    pub fn unexplained(status: u16, body: &[u8]) -> Failure {
        Failure {
            outcome: classify_status(status, &[]),
            message: body_excerpt(body, EXCERPT_CHARS),
        }
    }
}

/// One wire format.
pub trait Adapter: Send + Sync {
    /// Builds the HTTP request. Fails only when the key cannot be sent as a header.
    fn request(
        &self,
        http: &reqwest::Client,
        call: &Call<'_>,
    ) -> Result<RequestBuilder, DecodeError>;

    /// Decodes one SSE event, passing each typed event to `emit`.
    fn decode_event(&self, event: &Sse, emit: &mut dyn FnMut(Event<'_>))
    -> Result<(), DecodeError>;

    /// Decodes a whole JSON answer (a non-streamed request, or a provider that ignored
    /// `stream: true`), ending with [`Event::Done`].
    fn decode_body(&self, body: &[u8], emit: &mut dyn FnMut(Event<'_>)) -> Result<(), DecodeError>;

    /// Classifies an error response from its status and (capped) body.
    fn decode_error(&self, status: u16, body: &[u8]) -> Failure;

    /// Builds the request for the provider's model list.
    fn models_request(
        &self,
        http: &reqwest::Client,
        base_url: &Url,
        key: Option<&Secret>,
    ) -> Result<RequestBuilder, DecodeError>;

    /// The model ids of a model-list body, without any `models/` prefix.
    fn decode_models(&self, body: &[u8]) -> Result<Vec<String>, DecodeError>;
}

/// The adapter for a provider kind.
pub fn adapter(kind: ProviderKind) -> &'static dyn Adapter {
    match kind {
        ProviderKind::OpenAi => &openai::OpenAi,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
    }
}

/// A key as a header value that `Debug` and logs will not show.
pub fn sensitive_header(value: &str) -> Result<HeaderValue, DecodeError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        DecodeError("the API key has characters an HTTP header cannot carry".into())
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Merges the config's `extra_body` into a request body: objects merge key by key (so
/// `generationConfig.thinkingConfig` adds to sonde's `generationConfig`), anything else
/// replaces.
pub fn merge_json(
    into: &mut serde_json::Map<String, serde_json::Value>,
    from: &serde_json::Map<String, serde_json::Value>,
) {
    for (key, value) in from {
        match (into.get_mut(key), value) {
            (Some(serde_json::Value::Object(existing)), serde_json::Value::Object(extra)) => {
                merge_json(existing, extra);
            }
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The data of an SSE event, trimmed; `None` for an event without any (a comment, a
/// keep-alive), which every format ignores.
pub fn event_data(event: &Sse) -> Option<&str> {
    event
        .data
        .as_deref()
        .map(str::trim)
        .filter(|data| !data.is_empty())
}

/// A whole answer's body as text, for `decode_body`.
pub fn body_text(body: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(body).map_err(|err| DecodeError(format!("body is not UTF-8: {err}")))
}

/// The JSON POST every format sends: the config's `extra_body` merged over `body`, a JSON
/// content type, and an event stream or JSON accepted as the call streams or not. The adapter
/// adds its key header.
pub fn post_json(
    http: &reqwest::Client,
    url: Url,
    call: &Call<'_>,
    mut body: serde_json::Map<String, serde_json::Value>,
) -> RequestBuilder {
    merge_json(&mut body, call.extra_body);
    let accept = if call.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    http.post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, accept)
        .body(serde_json::Value::Object(body).to_string())
}

/// `base_url` joined with a relative `path` (the base ends in `/`).
pub fn join(base_url: &Url, path: &str) -> Url {
    base_url.join(path).unwrap_or_else(|_| base_url.clone())
}

/// Adds `key`, after `prefix` (`"Bearer "`), as the sensitive header `name`, when there is one.
pub fn with_key(
    request: RequestBuilder,
    name: &'static str,
    prefix: &str,
    key: Option<&Secret>,
) -> Result<RequestBuilder, DecodeError> {
    match key {
        Some(key) => Ok(request.header(
            name,
            sensitive_header(&format!("{prefix}{}", key.expose()))?,
        )),
        None => Ok(request),
    }
}

/// The ids of a `{"data": [{"id": …}, …]}` model list (OpenAI's and Anthropic's shape).
pub fn data_ids(body: &[u8]) -> Result<Vec<String>, DecodeError> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
    }
    let list: List = parse_models_body(body)?;
    Ok(list.data.into_iter().map(|entry| entry.id).collect())
}

/// Parses a JSON body for `decode_models`, naming what it expected on failure.
pub fn parse_models_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|err| {
        DecodeError(format!(
            "model list is not the expected JSON ({err}): {}",
            body_excerpt(body, EXCERPT_CHARS)
        ))
    })
}

/// Classifies a provider's error by its numeric code or its type words, for formats that
/// report errors inside a 200 response. Unknown errors count as the server's.
pub fn classify_error(code: Option<u16>, words: &[&str]) -> Outcome {
    if let Some(code) = code.filter(|code| (400..600).contains(code)) {
        return Outcome::from_status(code);
    }
    let words = words.join(" ").to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|needle| words.contains(needle));
    if has(&[
        "rate_limit",
        "rate limit",
        "too_many_requests",
        "resource_exhausted",
    ]) {
        Outcome::RateLimited
    } else if has(&["model_not_found", "not_found", "does not exist"]) {
        Outcome::NotFound
    } else if has(&[
        "invalid_api_key",
        "api key not valid",
        "api_key_invalid",
        "authentication",
        "permission",
        "unauthenticated",
        "unauthorized",
        // LiteLLM without a database cannot look up any key but its master key, and says
        // so with a 400: the request was refused on its credentials.
        "no_db_connection",
    ]) {
        Outcome::Auth
    } else if has(&["invalid_request", "bad_request", "context_length"]) {
        Outcome::ClientError
    } else {
        Outcome::ServerError
    }
}

/// The status class, sharpened by the body: a 400 that says the model does not exist is
/// `not_found`, and Gemini's 400 "API key not valid" is `auth`, as real providers disagree
/// on which status those get.
pub fn classify_status(status: u16, words: &[&str]) -> Outcome {
    let by_status = Outcome::from_status(status);
    let by_words = classify_error(None, words);
    if by_status == Outcome::ClientError
        && matches!(
            by_words,
            Outcome::NotFound | Outcome::Auth | Outcome::RateLimited
        )
    {
        by_words
    } else {
        by_status
    }
}

/// The first `max` characters of a body that had no parseable message, for the error text.
pub fn body_excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut excerpt: String = text.chars().take(max).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_words_and_codes_classify() {
        assert_eq!(
            classify_status(400, &["no_db_connection", "No connected db."]),
            Outcome::Auth,
            "LiteLLM refusing a key it cannot look up"
        );
        assert_eq!(classify_error(Some(429), &[]), Outcome::RateLimited);
        assert_eq!(classify_error(Some(502), &[]), Outcome::ServerError);
        assert_eq!(
            classify_error(None, &["rate_limit_exceeded"]),
            Outcome::RateLimited
        );
        assert_eq!(
            classify_error(None, &["overloaded_error"]),
            Outcome::ServerError
        );
        assert_eq!(
            classify_status(400, &["invalid_request_error", "model_not_found"]),
            Outcome::NotFound
        );
        assert_eq!(
            classify_status(400, &["invalid_request_error"]),
            Outcome::ClientError
        );
        assert_eq!(
            classify_status(503, &["model_not_found"]),
            Outcome::ServerError
        );
    }

    #[test]
    fn extra_body_merges_objects_and_replaces_the_rest() {
        let mut body =
            serde_json::json!({"generationConfig": {"maxOutputTokens": 16}, "stream": true});
        let extra = serde_json::json!({"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}, "stream": false});
        merge_json(body.as_object_mut().unwrap(), extra.as_object().unwrap());
        assert_eq!(
            body,
            serde_json::json!({"generationConfig": {"maxOutputTokens": 16, "thinkingConfig": {"thinkingBudget": 0}}, "stream": false})
        );
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(body_excerpt(b"  ", 10), "(empty body)");
        assert_eq!(body_excerpt(b"abcdefghijkl", 5), "abcde…");
    }
}
