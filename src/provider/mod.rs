//! Provider adapters: HTTP requests and wire formats, nothing else.
//!
//! An adapter builds the request for one run and decodes what comes back — SSE events, a
//! whole JSON body, an error body — into the typed [`Event`]s that the measurement code
//! consumes. It never touches clocks or sockets: the runner does I/O and timing. Adding a
//! wire format is one new file here and one arm in [`adapter`].

pub mod openai;

use reqwest::{RequestBuilder, Url};
use sse_stream::Sse;
use thiserror::Error;

use crate::config::{MaxTokensField, ProviderKind};
use crate::measurement::Event;
use crate::probe::Message;
use crate::redact::Secret;
use crate::result::Outcome;

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
}

/// A response that is not what its format promises.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// An error response, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its class.
    pub outcome: Outcome,
    /// The provider's own words, or the start of the body when it gave none.
    pub message: String,
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
}

/// The adapter for a provider kind.
pub fn adapter(kind: ProviderKind) -> &'static dyn Adapter {
    match kind {
        ProviderKind::OpenAi => &openai::OpenAi,
    }
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
        "authentication",
        "permission",
        "unauthorized",
    ]) {
        Outcome::Auth
    } else if has(&["invalid_request", "bad_request", "context_length"]) {
        Outcome::ClientError
    } else {
        Outcome::ServerError
    }
}

/// The status class, sharpened by the body: a 400 that says the model does not exist is
/// `not_found`, as real providers disagree on which status that gets.
pub fn classify_status(status: u16, words: &[&str]) -> Outcome {
    let by_status = Outcome::from_status(status);
    if by_status == Outcome::ClientError && classify_error(None, words) == Outcome::NotFound {
        Outcome::NotFound
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
    fn excerpts_are_bounded() {
        assert_eq!(body_excerpt(b"  ", 10), "(empty body)");
        assert_eq!(body_excerpt(b"abcdefghijkl", 5), "abcde…");
    }
}
