//! The result record: one run of one probe against one target, as measured.
//!
//! Kept apart from the I/O that produces it (the runner) and from the code that presents it
//! (the printer), so that every later stage — store, aggregation, publish — reads the same
//! record. The field names are stable: gateways and scripts read them from JSON and CSV.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::quality::{Judgement, Kind};
use crate::units::Timestamp;

/// What happened to a run: `ok`, or exactly one class of failure.
///
/// The classes are the ones of docs/design.md. `cut_off`: the answer was ended by the token
/// limit before it passed validation. That is the probe's sizing (a reasoning model spent
/// `max_tokens` on thinking), not a provider fault, so it is kept apart from
/// `content_mismatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The answer arrived whole and passed the probe's validation.
    Ok,
    /// The run's deadline passed before the answer was complete.
    Timeout,
    /// The TCP connection could not be made, or broke before the response headers.
    Connect,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed.
    Tls,
    /// HTTP 429, or a rate-limit error inside the stream.
    RateLimited,
    /// HTTP 401/403, or no API key to send.
    Auth,
    /// HTTP 404, or the provider does not know the model.
    NotFound,
    /// Any other 4xx.
    ClientError,
    /// 5xx, or a server-side error inside the stream.
    ServerError,
    /// No byte for longer than the stall timeout after the response began.
    Stalled,
    /// The body was not parseable SSE or JSON.
    Malformed,
    /// The stream ended without its terminal event.
    Truncated,
    /// The answer failed the probe's validation.
    ContentMismatch,
    /// The token limit ended the answer before it passed validation.
    CutOff,
    /// The body grew past the provider's `max_body_bytes`.
    TooLarge,
    /// Not sent: the provider's budget would have been exceeded.
    SkippedBudget,
}

impl Outcome {
    /// Every outcome, in the order reports list them.
    pub const ALL: [Outcome; 17] = [
        Outcome::Ok,
        Outcome::Timeout,
        Outcome::Connect,
        Outcome::Dns,
        Outcome::Tls,
        Outcome::RateLimited,
        Outcome::Auth,
        Outcome::NotFound,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::Stalled,
        Outcome::Malformed,
        Outcome::Truncated,
        Outcome::ContentMismatch,
        Outcome::CutOff,
        Outcome::TooLarge,
        Outcome::SkippedBudget,
    ];

    /// The stable snake_case name used in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Connect => "connect",
            Outcome::Dns => "dns",
            Outcome::Tls => "tls",
            Outcome::RateLimited => "rate_limited",
            Outcome::Auth => "auth",
            Outcome::NotFound => "not_found",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::Stalled => "stalled",
            Outcome::Malformed => "malformed",
            Outcome::Truncated => "truncated",
            Outcome::ContentMismatch => "content_mismatch",
            Outcome::CutOff => "cut_off",
            Outcome::TooLarge => "too_large",
            Outcome::SkippedBudget => "skipped_budget",
        }
    }

    /// The class an HTTP error status falls in.
    pub fn from_status(status: u16) -> Outcome {
        match status {
            429 => Outcome::RateLimited,
            401 | 403 => Outcome::Auth,
            404 => Outcome::NotFound,
            400..=499 => Outcome::ClientError,
            _ => Outcome::ServerError,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run's measured record.
///
/// Times are milliseconds from `t0` (just before the request was written) with microsecond
/// resolution; `None` (null in JSON, empty in CSV) means the run never reached that point or
/// the figure is undefined (TTFT of a non-streamed answer). The field order is the column
/// order of the CSV: the first fields are the stable ones gateways and scripts read, the
/// ones added since follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Wall-clock time the run was scheduled for: unix ms inside, RFC 3339 UTC in JSON, CSV
    /// and the store.
    pub ts: Timestamp,
    /// `provider/model`.
    pub target: String,
    /// Provider name from the config.
    pub provider: String,
    /// Model id as configured (what was asked for).
    pub model: String,
    /// Route group: the logical model several providers serve.
    pub group: String,
    /// Probe name.
    pub probe: String,
    /// The run's single outcome.
    pub outcome: Outcome,
    /// HTTP status of the response, when one arrived.
    pub http_status: Option<u16>,
    /// Scheduled time → `t0`: how late the run started.
    pub queue_lag_ms: f64,
    /// `t0` → response headers.
    pub ttfb_ms: Option<f64>,
    /// `t0` → first generated content of any kind (answer, reasoning, tool call).
    pub ttft_ms: Option<f64>,
    /// `t0` → first visible answer content.
    pub ttfat_ms: Option<f64>,
    /// `t0` → last content event.
    pub e2e_ms: Option<f64>,
    /// Median gap between content arrivals.
    pub itl_p50_ms: Option<f64>,
    /// Longest gap between content arrivals: the worst stall that did not end the run.
    pub itl_max_ms: Option<f64>,
    /// Prompt tokens (reported, or estimated when `tokens_estimated`).
    pub input_tokens: Option<u32>,
    /// Completion tokens including reasoning (reported, or estimated).
    pub output_tokens: Option<u32>,
    /// Reasoning tokens, when the provider reports them.
    pub reasoning_tokens: Option<u32>,
    /// True when the token counts are sonde's estimate, not the provider's report.
    pub tokens_estimated: bool,
    /// Decode speed: (output_tokens − 1) / (E2E − TTFT).
    pub tokens_per_s: Option<f64>,
    /// Number of content events received.
    pub chunks: u32,
    /// True only when content arrived in ≥ 2 events at least 1 ms apart.
    pub streamed: bool,
    /// Model id the provider says answered, when it says one.
    pub served_model: Option<String>,
    /// Tokens × the model's configured prices, in USD.
    pub cost_usd: Option<f64>,
    /// The provider's `Retry-After`, in seconds.
    pub retry_after_s: Option<f64>,
    /// What went wrong, in words (never containing a credential).
    pub error: Option<String>,
    /// `t0` → connection set up (DNS, TCP, TLS), when this run opened a new connection.
    pub connect_ms: Option<f64>,
    /// `t0` → the stream's terminal event (`[DONE]`) or its end.
    pub close_ms: Option<f64>,
    /// The provider's finish reason (`stop`, `length`, …).
    pub finish_reason: Option<String>,
    /// Requests left in the provider's rate-limit window, when it says.
    pub ratelimit_remaining_requests: Option<u64>,
    /// Tokens left in the provider's rate-limit window, when it says.
    pub ratelimit_remaining_tokens: Option<u64>,
    /// True when the provider answered with another model than the one asked for (a dated
    /// version or namespace of the same id is not a substitution).
    pub model_substituted: bool,
    /// The upstream a gateway says served the request: OpenRouter's `provider`, or the
    /// LiteLLM deployment's model (`x-litellm-model-name`, e.g. `openai/llama-3.3-70b`).
    pub upstream: Option<String>,
    /// What this run showed about streaming (null: nothing; see `capability::observe`).
    pub cap_streaming: Option<bool>,
    /// What this run showed about usage arriving in a stream.
    pub cap_usage_in_stream: Option<bool>,
    /// What this run showed about function calling.
    pub cap_tools: Option<bool>,
    /// What this run showed about JSON mode.
    pub cap_json: Option<bool>,
    /// The run's unique id: the nonce in its prompt, so a run can be found in a provider's
    /// logs; the store's key against duplicates.
    pub run_id: String,
    /// True when a gateway named the answer by its route alias (LiteLLM answers as its model
    /// group, `x-litellm-model-group`): `served_model` then says nothing about the upstream,
    /// and a substitution behind the gateway cannot be seen.
    pub gateway_alias: bool,
    /// Where the prober that ran it is (`[prober] location`); stamped when the run is handed
    /// to the store. Empty in records written before locations existed.
    #[serde(default)]
    pub location: String,
    /// The kind of quality item the run asked (`arithmetic`, `tool_call`, …; quality probes
    /// only).
    #[serde(default)]
    pub quality_item: Option<Kind>,
    /// How the answer to the item was judged (`correct`, `wrong_answer`, `schema_mismatch`,
    /// …); null unless a whole answer arrived. A wrong answer is still an `ok` run.
    #[serde(default)]
    pub quality: Option<Judgement>,
    /// What was wrong with the answer, in words.
    #[serde(default)]
    pub quality_detail: Option<String>,
    /// Every gap between content arrivals in µs, for the target's ITL histogram. Not part of
    /// the printed record: a run carries a few dozen of them, and only aggregation needs them.
    #[serde(skip)]
    pub itl_gaps_us: Vec<u32>,
}

impl ResultRecord {
    /// What went wrong, for a table cell: the run's error, else a quality item's wrong
    /// answer (`wrong_answer: expected "1250", answered "1205"`).
    pub fn problem(&self) -> Option<String> {
        if let Some(error) = &self.error {
            return Some(error.clone());
        }
        let judgement = self.quality.filter(|j| *j != Judgement::Correct)?;
        Some(match &self.quality_detail {
            Some(detail) => format!("{}: {detail}", judgement.as_str()),
            None => judgement.as_str().to_owned(),
        })
    }
}

/// A record with every optional field empty, for unit tests.
#[cfg(test)]
pub fn sample(outcome: Outcome) -> ResultRecord {
    let json = serde_json::json!({
        "ts": "2026-01-01T00:00:00Z", "target": "p/m", "provider": "p", "model": "m",
        "group": "m", "probe": "ping", "outcome": outcome, "http_status": null,
        "queue_lag_ms": 0.0, "ttfb_ms": null, "ttft_ms": null, "ttfat_ms": null,
        "e2e_ms": null, "itl_p50_ms": null, "itl_max_ms": null, "input_tokens": null,
        "output_tokens": null, "reasoning_tokens": null, "tokens_estimated": false,
        "tokens_per_s": null, "chunks": 0, "streamed": false, "served_model": null,
        "cost_usd": null, "retry_after_s": null, "error": "boom", "connect_ms": null,
        "close_ms": null, "finish_reason": null, "ratelimit_remaining_requests": null,
        "ratelimit_remaining_tokens": null, "model_substituted": false, "upstream": null,
        "cap_streaming": null, "cap_usage_in_stream": null, "cap_tools": null,
        "cap_json": null, "run_id": "x", "gateway_alias": false, "location": "here"
    });
    serde_json::from_value(json).unwrap()
}
