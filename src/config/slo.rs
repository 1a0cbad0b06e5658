//! `slo = { availability = 0.99, ttft_p95_ms = 2000, window = "30d" }` on a model or a route
//! group: the objectives a target is held to, its error budget, and what burn-rate alerts
//! measure against (`aggregate::slo`).

use serde::Deserialize;
use toml::Spanned;

use super::error::{Errors, Source};

/// Windows an objective may be kept over.
const WINDOWS: [&str; 3] = ["24h", "7d", "30d"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlo {
    #[serde(default)]
    availability: Option<f64>,
    #[serde(default)]
    ttft_p95_ms: Option<f64>,
    #[serde(default)]
    window: Option<String>,
}

/// A service-level objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The least availability (ok ÷ ok + provider faults), below 1.
    pub availability: Option<f64>,
    /// The TTFT that 95 % of successful streamed runs must stay within, ms.
    pub ttft_p95_ms: Option<f64>,
    /// The window it is kept over (`24h`, `7d`, `30d`).
    pub window: String,
}

/// The share of runs the latency objective allows above its bound.
pub const LATENCY_BUDGET: f64 = 0.05;

/// Validates one `slo` table at `key`; `None` (with the errors pushed) when it is invalid.
pub(super) fn slo(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    raw: Spanned<RawSlo>,
) -> Option<Slo> {
    let span = raw.span();
    let raw = raw.into_inner();
    let before = errors.len();
    let mut problem = |message: &str| {
        errors.push(source.error(Some(span.clone()), key, message));
    };
    if raw.availability.is_none() && raw.ttft_p95_ms.is_none() {
        problem("an slo needs `availability` or `ttft_p95_ms` (or both)");
    }
    if raw.availability.is_some_and(|a| !(a > 0.0 && a < 1.0)) {
        problem("`availability` is a share above 0 and below 1 (0.99 for 99 %)");
    }
    if raw
        .ttft_p95_ms
        .is_some_and(|ms| !(ms.is_finite() && ms > 0.0))
    {
        problem("`ttft_p95_ms` is a number of milliseconds above 0");
    }
    let window = raw.window.unwrap_or_else(|| "30d".to_owned());
    if !WINDOWS.contains(&window.as_str()) {
        problem("`window` is one of 24h, 7d, 30d");
    }
    (errors.len() == before).then_some(Slo {
        availability: raw.availability,
        ttft_p95_ms: raw.ttft_p95_ms,
        window,
    })
}
