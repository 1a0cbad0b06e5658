//! What a response's headers say beyond its status: when to retry, whether the body is JSON,
//! how much of the provider's rate limit is left, and where a gateway in front of the
//! provider routed the request. Every format sends them alike, so they live here, not in an
//! adapter.

use std::time::SystemTime;

use reqwest::header::{CONTENT_TYPE, HeaderMap};

/// Where a gateway in front of the provider says it sent the request: the LiteLLM proxy's
/// `x-litellm-model-group` (the route alias it answered as) and `x-litellm-model-name` (the
/// deployment's model, e.g. `openai/llama-3.3-70b`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayRoute {
    /// The alias the gateway routed by and names every answer with.
    pub alias: Option<String>,
    /// The model of the deployment that served.
    pub model: Option<String>,
}

impl GatewayRoute {
    /// Reads LiteLLM's headers; empty for any other server.
    pub fn from_headers(headers: &HeaderMap) -> GatewayRoute {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        GatewayRoute {
            alias: text("x-litellm-model-group"),
            model: text("x-litellm-model-name"),
        }
    }
}

/// What a provider said about its rate limits, from whichever family of headers it sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
}

impl RateLimits {
    /// Reads OpenAI-style (`x-ratelimit-remaining-requests`, also forwarded by gateways such
    /// as LiteLLM and OpenRouter) and Anthropic-style (`anthropic-ratelimit-requests-remaining`)
    /// headers.
    pub fn from_headers(headers: &HeaderMap) -> RateLimits {
        let number = |names: &[&str]| {
            names.iter().find_map(|name| {
                headers
                    .get(*name)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    // SQLite stores integers as i64: a larger count (a hostile or broken
                    // header) would make the run unwritable, so it is capped there.
                    .map(|value| value.min(i64::MAX as u64))
            })
        };
        RateLimits {
            remaining_requests: number(&[
                "x-ratelimit-remaining-requests",
                "anthropic-ratelimit-requests-remaining",
                "llm_provider-x-ratelimit-remaining-requests",
            ]),
            remaining_tokens: number(&[
                "x-ratelimit-remaining-tokens",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-output-tokens-remaining",
                "llm_provider-x-ratelimit-remaining-tokens",
            ]),
        }
    }
}

/// The provider's wait hint: `retry-after-ms` (OpenAI, Azure) or `retry-after` in seconds or
/// as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<f64> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let seconds = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|value| value.is_finite() && *value >= 0.0)
    };
    // LiteLLM forwards the upstream's headers only with an `llm_provider-` prefix.
    if let Some(ms) = header("retry-after-ms")
        .or_else(|| header("llm_provider-retry-after-ms"))
        .and_then(seconds)
    {
        return Some(ms / 1000.0);
    }
    let value = header("retry-after").or_else(|| header("llm_provider-retry-after"))?;
    seconds(value).or_else(|| {
        httpdate::parse_http_date(value).ok().map(|when| {
            when.duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs_f64()
                .round()
        })
    })
}

/// Whether the response says its body is JSON (a stream request answered whole).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("json"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(2.0));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(1.5));
        let mut headers = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let secs = retry_after(&headers).unwrap();
        assert!((28.0..=31.0).contains(&secs), "{secs}");
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        let mut headers = HeaderMap::new();
        headers.insert("llm_provider-retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(2.0), "LiteLLM's forwarded form");
    }

    #[test]
    fn rate_limit_headers_of_both_families() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("59"),
        );
        headers.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("149000"),
        );
        assert_eq!(
            RateLimits::from_headers(&headers),
            RateLimits {
                remaining_requests: Some(59),
                remaining_tokens: Some(149000)
            }
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("3"),
        );
        assert_eq!(
            RateLimits::from_headers(&headers).remaining_requests,
            Some(3)
        );
        assert_eq!(
            RateLimits::from_headers(&HeaderMap::new()),
            RateLimits::default()
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("18446744073709551615"),
        );
        assert_eq!(
            RateLimits::from_headers(&headers).remaining_tokens,
            Some(i64::MAX as u64),
            "capped where the store can hold it"
        );
    }
}
