//! Scenario files: how each simulated model behaves.
//!
//! ```toml
//! [default]                  # any model not listed below; without it, unknown models get 404
//! ttft_ms = 120
//!
//! [models."sim-flaky"]
//! ttft_ms = { mean = 300, stddev = 50 }
//! token_ms = { min = 10, max = 30 }
//! error_rate = 0.2
//! error = "rate_limited"
//! retry_after_s = 2
//! ```
//!
//! Every field has a default (no delay, 16 tokens, no errors, no fault), so a scenario says
//! only what differs. Delays are milliseconds drawn per request (TTFT) and per token.

use std::collections::BTreeMap;
use std::path::Path;

use rand::RngExt;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, LogNormal, Normal};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::config::error::{ConfigError, Source, read};

/// The scenario `sonde simulate` uses when given none (also `examples/scenario.toml`).
pub const BUILTIN: &str = include_str!("../../examples/scenario.toml");

/// A delay in milliseconds: a fixed number or a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Dist {
    /// Always this.
    Fixed(f64),
    /// Normal, clamped at zero.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
    },
    /// Uniform between two bounds.
    Uniform {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Log-normal with the given median and shape: long-tailed, like real latency.
    LogNormal {
        /// Median.
        median: f64,
        /// Shape (σ of the underlying normal); 0.5 gives p99 ≈ 3.2 × median.
        sigma: f64,
    },
}

impl Default for Dist {
    fn default() -> Self {
        Dist::Fixed(0.0)
    }
}

impl Dist {
    /// Draws one delay in milliseconds (never negative).
    pub fn sample(&self, rng: &mut SmallRng) -> f64 {
        let value = match *self {
            Dist::Fixed(ms) => ms,
            Dist::Normal { mean, stddev } => Normal::new(mean, stddev.abs())
                .map(|normal| normal.sample(rng))
                .unwrap_or(mean),
            Dist::Uniform { min, max } if max > min => rng.random_range(min..max),
            Dist::Uniform { min, .. } => min,
            Dist::LogNormal { median, sigma } => {
                LogNormal::new(median.max(f64::MIN_POSITIVE).ln(), sigma.abs())
                    .map(|dist| dist.sample(rng))
                    .unwrap_or(median)
            }
        };
        if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        }
    }

    fn check(&self) -> Result<(), &'static str> {
        let ok = match *self {
            Dist::Fixed(ms) => ms >= 0.0,
            Dist::Normal { mean, stddev } => mean >= 0.0 && stddev >= 0.0,
            Dist::Uniform { min, max } => min >= 0.0 && max >= min,
            Dist::LogNormal { median, sigma } => median > 0.0 && sigma >= 0.0,
        };
        if ok {
            Ok(())
        } else {
            Err("a delay is a number of ms ≥ 0, {mean, stddev}, {min, max} or {median, sigma}")
        }
    }
}

/// Which error an `error_rate` draw answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 429 with `Retry-After`.
    #[default]
    RateLimited,
    /// 500.
    ServerError,
    /// 503, "overloaded".
    Unavailable,
    /// 401, echoing the key it was given as real providers do.
    Auth,
    /// 404, unknown model.
    NotFound,
    /// 400.
    BadRequest,
}

/// A misbehaviour applied to a request (with probability `fault_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Accept `stream: true` but send the whole answer in one event at the end.
    FakeStream,
    /// Go silent for `stall_ms` after `fault_after_tokens` tokens.
    Stall,
    /// End the stream after `fault_after_tokens` tokens (all, when 0) without `[DONE]`.
    Truncate,
    /// Send unparseable JSON after `fault_after_tokens` tokens.
    Malformed,
    /// Send `oversized_bytes` of content.
    Oversized,
    /// Never send response headers.
    Hang,
    /// Send an error object inside the stream after `fault_after_tokens` tokens.
    MidStreamError,
}

/// How one simulated model behaves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Delay from request to first token.
    #[serde(deserialize_with = "delay")]
    pub ttft_ms: Dist,
    /// Delay between tokens.
    #[serde(deserialize_with = "delay")]
    pub token_ms: Dist,
    /// Answer length when the prompt does not fix one.
    pub output_tokens: u32,
    /// Reasoning tokens streamed before the answer.
    pub reasoning_tokens: u32,
    /// A fixed answer, instead of the one the prompt asks for.
    pub reply: Option<String>,
    /// Probability of answering with `error` instead.
    #[serde(deserialize_with = "probability")]
    pub error_rate: f64,
    /// The error answered.
    pub error: ErrorKind,
    /// `Retry-After` sent with 429 and 503.
    pub retry_after_s: u32,
    /// The misbehaviour.
    pub fault: Fault,
    /// Probability of the fault on a request.
    #[serde(deserialize_with = "probability")]
    pub fault_rate: f64,
    /// When not 0, the fault strikes every this many requests to the simulator (the 50th,
    /// 100th, … with 50) instead of by `fault_rate`: a deterministic tail for benchmarks.
    pub fault_every: u64,
    /// Where a mid-stream fault strikes.
    pub fault_after_tokens: u32,
    /// How long a stall or hang lasts.
    pub stall_ms: u64,
    /// Size of an oversized answer.
    pub oversized_bytes: u64,
    /// The model id reported, when it should differ from the one asked for.
    pub served_model: Option<String>,
    /// Send `: keep-alive` comments this often while the first token is pending.
    pub keep_alive_ms: Option<u64>,
    /// End SSE lines with CRLF.
    pub crlf: bool,
    /// Answer `stream: true` with one JSON body.
    pub ignore_stream: bool,
    /// Honour `stream_options.include_usage`.
    pub include_usage: bool,
    /// The key requests must carry (each format's key header); none checked when absent.
    pub api_key: Option<String>,
    /// Whether the model can call tools; without, a request with tools gets a 400.
    pub tools: bool,
    /// Whether the model honours JSON mode; without, JSON comes wrapped in a code fence.
    pub json_mode: bool,
    /// The upstream a gateway reports (OpenRouter's `provider` field, OpenAI format).
    pub upstream: Option<String>,
    /// Requests per minute the model advertises in rate-limit headers (remaining = this minus
    /// the requests of the last 60 s).
    pub rate_limit_requests: Option<u64>,
    /// Delays are multiplied by this during the busy part of each peak period.
    pub peak_factor: f64,
    /// The peak cycle, seconds (of the wall clock, so every simulator agrees).
    pub peak_period_s: u64,
    /// The busy part at the start of each cycle, seconds.
    pub peak_busy_s: u64,
    /// Share of quality items with one exact answer (`quality` probe) answered right; the
    /// rest get a plausible wrong answer (a number off by one, a list out of order).
    #[serde(deserialize_with = "probability")]
    pub accuracy: f64,
    /// Share of tool-call quality items (`quality-tools`) answered with `tool_error_kind`.
    #[serde(deserialize_with = "probability")]
    pub tool_error_rate: f64,
    /// How a tool-call item is answered wrong.
    pub tool_error_kind: ToolErrorKind,
}

/// The mistakes a simulated model makes on tool-call quality items. `unexpected_call`
/// strikes the items that must not call a tool; every other kind the items that must.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolErrorKind {
    /// Arguments missing a required field.
    #[default]
    SchemaMismatch,
    /// Arguments cut short: not JSON.
    InvalidJson,
    /// A call to a tool that was not offered.
    UnknownName,
    /// An answer in text instead of the call.
    NoCall,
    /// A call when no tool applies.
    UnexpectedCall,
    /// The right tool, valid arguments, another value than asked.
    WrongCall,
}

impl Behaviour {
    /// The delay factor at wall-clock time `now`: `peak_factor` in the busy part of the
    /// cycle, 1 otherwise.
    pub fn peak_factor_at(&self, now: std::time::SystemTime) -> f64 {
        if self.peak_period_s == 0 || self.peak_factor <= 0.0 {
            return 1.0;
        }
        let seconds = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if seconds % self.peak_period_s < self.peak_busy_s {
            self.peak_factor
        } else {
            1.0
        }
    }
}

fn delay<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Dist, D::Error> {
    let dist = Dist::deserialize(deserializer)?;
    dist.check().map_err(D::Error::custom)?;
    Ok(dist)
}

fn probability<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let rate = f64::deserialize(deserializer)?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(D::Error::custom("a rate is a probability between 0 and 1"))
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            ttft_ms: Dist::default(),
            token_ms: Dist::default(),
            output_tokens: 16,
            reasoning_tokens: 0,
            reply: None,
            error_rate: 0.0,
            error: ErrorKind::default(),
            retry_after_s: 1,
            fault: Fault::None,
            fault_rate: 1.0,
            fault_every: 0,
            fault_after_tokens: 0,
            stall_ms: 3_600_000,
            oversized_bytes: 8 * 1024 * 1024,
            served_model: None,
            keep_alive_ms: None,
            crlf: false,
            ignore_stream: false,
            include_usage: true,
            api_key: None,
            tools: true,
            json_mode: true,
            upstream: None,
            rate_limit_requests: None,
            peak_factor: 1.0,
            peak_period_s: 0,
            peak_busy_s: 0,
            accuracy: 1.0,
            tool_error_rate: 0.0,
            tool_error_kind: ToolErrorKind::default(),
        }
    }
}

/// A whole scenario: per-model behaviour and the default for the rest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Behaviour of models not listed; `None` answers them 404.
    #[serde(default)]
    pub default: Option<Behaviour>,
    /// Behaviour by model name.
    #[serde(default)]
    pub models: BTreeMap<String, Behaviour>,
}

impl Scenario {
    /// The built-in scenario.
    pub fn builtin() -> Scenario {
        Scenario::parse(Path::new("examples/scenario.toml"), BUILTIN)
            .unwrap_or_else(|err| panic!("built-in scenario is invalid: {err}"))
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let text = read(path)?;
        Scenario::parse(path, &text)
    }

    /// Parses scenario text as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Scenario, ConfigError> {
        Source { file, text }.parse()
    }

    /// The behaviour of `model`, if the scenario serves it.
    pub fn behaviour(&self, model: &str) -> Option<&Behaviour> {
        self.models.get(model).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn distributions_parse_and_stay_non_negative() {
        let text = r#"
[models.a]
ttft_ms = 200
token_ms = { mean = 20, stddev = 50 }
[models.b]
ttft_ms = { min = 10, max = 20 }
token_ms = { median = 5, sigma = 0.5 }
"#;
        let scenario = Scenario::parse(Path::new("s.toml"), text).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let a = scenario.behaviour("a").unwrap();
        assert_eq!(a.ttft_ms.sample(&mut rng), 200.0);
        assert!((0..1000).all(|_| a.token_ms.sample(&mut rng) >= 0.0));
        let b = scenario.behaviour("b").unwrap();
        assert!((0..1000).all(|_| (10.0..20.0).contains(&b.ttft_ms.sample(&mut rng))));
        assert!(scenario.behaviour("c").is_none());
    }

    #[test]
    fn bad_fields_name_line_and_key() {
        let err =
            Scenario::parse(Path::new("s.toml"), "[models.a]\nerror_rate = 2.0\n").unwrap_err();
        assert_eq!(err.key(), Some("models.a.error_rate"));
        assert_eq!(err.line(), Some(2));
        let err =
            Scenario::parse(Path::new("s.toml"), "[models.a]\nfault = \"explode\"\n").unwrap_err();
        assert_eq!(err.key(), Some("models.a.fault"));
        assert_eq!(err.line(), Some(2));
    }

    #[test]
    fn builtin_scenario_parses() {
        let scenario = Scenario::builtin();
        assert!(scenario.default.is_some());
        assert!(scenario.models.len() >= 5);
    }
}
