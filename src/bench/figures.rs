//! A bench's figures: [`Tally`] folds records as they arrive, [`TargetSummary`] is what one
//! target × probe measured, [`Summary`] is `summary.json` (`report.md` is written from them
//! by `super::report`).
//!
//! Latencies are counted from each request's **intended** send time: a record's TTFT and E2E
//! plus its `queue_lag_ms` (intended → started) and `connect_ms` (a new connection's setup).
//! In the open loop this is what makes a slow server visible even when the client falls
//! behind; in the closed loop the intended time is when a worker became free, so it adds only
//! connection setup. Distributions are HdrHistograms at 3 significant digits (0.1 %), the
//! rollups' own type, serialized in `summary.json` as base64 V2-deflate blobs that any
//! HdrHistogram implementation decodes; the baseline gate reads them back.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Load, Plan};
use crate::aggregate::rollup::{self, Count, Histograms, Rollup};
use crate::aggregate::sparse::{Sparse, SparseRollup};
use crate::aggregate::{Latency, Percentiles};
use crate::config::Slo;
use crate::result::{Outcome, ResultRecord};
use crate::units::round3;

/// The `schema` of every `summary.json` this version writes.
pub const SCHEMA: &str = "sonde.bench.v1";

/// The runs of one target × probe so far.
#[derive(Debug, Default)]
pub struct Tally {
    rollup: Rollup,
    output_tokens: u64,
    streamed: u64,
    /// Target, probe, provider, model and group, from the first run.
    names: Option<[String; 5]>,
}

impl Tally {
    /// Counts one run (its CSV row already written), its latencies moved to count from the
    /// intended send time.
    pub fn add(&mut self, mut record: ResultRecord) {
        let lag = from_intended(&record);
        record.ttft_ms = record.ttft_ms.map(|ms| ms + lag);
        record.e2e_ms = record.e2e_ms.map(|ms| ms + lag);
        self.rollup.add(&record, 0);
        if record.outcome == Outcome::Ok {
            self.output_tokens += u64::from(record.output_tokens.unwrap_or(0));
            self.streamed += u64::from(record.streamed);
        }
        if self.names.is_none() {
            let ResultRecord {
                target,
                probe,
                provider,
                model,
                group,
                ..
            } = record;
            self.names = Some([target, probe, provider, model, group]);
        }
    }

    /// Runs counted.
    pub fn requests(&self) -> u64 {
        self.rollup.scalars.attempts()
    }

    /// Runs that ended `ok`.
    pub fn ok(&self) -> u64 {
        self.rollup.scalars.count(Outcome::Ok)
    }

    /// The figures, for runs that took `elapsed` from the first intended send to the last
    /// answer, under `plan`; with the target's `slo`, its goodput.
    pub fn summarize(
        self,
        plan: &Plan,
        elapsed: Duration,
        slo: Option<&Slo>,
    ) -> Option<TargetSummary> {
        let [target, probe, provider, model, group] = self.names?;
        let scalars = &self.rollup.scalars;
        let requests = scalars.attempts();
        let ok = scalars.count(Outcome::Ok);
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let latency = Latency::of(&SparseRollup::of(&self.rollup));
        let closed = matches!(plan.load, Load::Closed { .. });
        let omission = closed
            .then(|| Omission::of(&self.rollup.histograms))
            .flatten();
        let outcomes: BTreeMap<String, u64> = scalars
            .outcomes
            .iter()
            .map(|(outcome, count)| (outcome.to_string(), *count))
            .collect();
        let mut summary = TargetSummary {
            target,
            probe,
            provider,
            model,
            group,
            requests,
            ok,
            errors: requests - ok,
            error_rate: (requests - ok) as f64 / requests.max(1) as f64,
            outcomes,
            elapsed_s: round3(seconds),
            throughput_rps: round3(requests as f64 / seconds),
            ok_rps: round3(ok as f64 / seconds),
            output_tokens_per_s: round3(self.output_tokens as f64 / seconds),
            streamed_share: (ok > 0).then(|| self.streamed as f64 / ok as f64),
            cost_usd: scalars.cost_usd,
            latency,
            coordinated_omission: omission,
            goodput: slo.and_then(|slo| slo.ttft_p95_ms).map(|bound| {
                Goodput::of(&self.rollup.histograms.ttft_us, bound, requests, seconds)
            }),
            verdict: String::new(),
            histograms: Blobs::of(&self.rollup.histograms),
        };
        summary.verdict = verdict(&summary);
        Some(summary)
    }
}

/// Goodput: the requests that were `ok` with a TTFT (from the intended send) within the
/// target's SLO bound, of all requests — what a user with that objective got.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    /// The SLO's `ttft_p95_ms`.
    pub ttft_bound_ms: f64,
    /// Requests ok and within it.
    pub good: u64,
    /// good ÷ requests.
    pub share: f64,
    /// good per second over the run.
    pub per_second: f64,
}

impl Goodput {
    fn of(ttft_us: &Histogram<Count>, bound_ms: f64, requests: u64, seconds: f64) -> Goodput {
        let good = ttft_us.count_between(0, (bound_ms * 1000.0).round() as u64);
        Goodput {
            ttft_bound_ms: bound_ms,
            good,
            share: round3(good as f64 / requests.max(1) as f64),
            per_second: round3(good as f64 / seconds),
        }
    }
}

/// Time from the intended send to the request's `t0`, ms: queue lag plus connection setup.
pub fn from_intended(record: &ResultRecord) -> f64 {
    record.queue_lag_ms + record.connect_ms.unwrap_or(0.0)
}

/// How much a closed loop's tail understates latency: the TTFT distribution corrected, as
/// HdrHistogram does, for the requests a stalled worker did not send. Every TTFT longer than
/// the expected interval between a worker's requests (the median E2E) stands for the requests
/// that would have been sent meanwhile, each waiting one interval less.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Omission {
    /// The expected interval between a worker's requests, ms.
    pub expected_interval_ms: f64,
    /// TTFT as an open loop at this throughput would have seen it.
    pub corrected_ttft_ms: Percentiles,
}

impl Omission {
    fn of(histograms: &Histograms) -> Option<Omission> {
        if histograms.e2e_us.is_empty() {
            return None;
        }
        let interval = histograms.e2e_us.value_at_quantile(0.5).max(1);
        let corrected = histograms.ttft_us.clone_correct(interval);
        Some(Omission {
            expected_interval_ms: interval as f64 / 1000.0,
            corrected_ttft_ms: Percentiles::of(&Sparse::of(&corrected), 1000.0),
        })
    }
}

/// The four distributions of a target, as base64 V2-deflate HdrHistogram blobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Blobs {
    /// TTFT from the intended send, µs.
    pub ttft_us: String,
    /// E2E from the intended send, µs.
    pub e2e_us: String,
    /// Gaps between content arrivals, µs.
    pub itl_us: String,
    /// Output speed, hundredths of a token per second.
    pub tokens_per_s_x100: String,
}

impl Blobs {
    fn of(h: &Histograms) -> Blobs {
        let blob = |histogram: &Histogram<Count>| STANDARD.encode(rollup::encode(histogram));
        Blobs {
            ttft_us: blob(&h.ttft_us),
            e2e_us: blob(&h.e2e_us),
            itl_us: blob(&h.itl_us),
            tokens_per_s_x100: blob(&h.tps),
        }
    }

    /// The histograms back.
    pub fn decode(&self) -> Result<Histograms, SummaryError> {
        let one = |text: &str| -> Result<Histogram<Count>, SummaryError> {
            let bytes = STANDARD
                .decode(text)
                .map_err(|err| SummaryError::Histogram(err.to_string()))?;
            rollup::decode(&bytes).map_err(|err| SummaryError::Histogram(err.to_string()))
        };
        Ok(Histograms {
            ttft_us: one(&self.ttft_us)?,
            e2e_us: one(&self.e2e_us)?,
            itl_us: one(&self.itl_us)?,
            tps: one(&self.tokens_per_s_x100)?,
        })
    }
}

/// What one target × probe measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// `provider/model`.
    pub target: String,
    /// Probe name.
    pub probe: String,
    /// Provider name.
    pub provider: String,
    /// Model id asked for.
    pub model: String,
    /// Route group.
    pub group: String,
    /// Runs.
    pub requests: u64,
    /// `ok` runs.
    pub ok: u64,
    /// Runs of any other outcome.
    pub errors: u64,
    /// errors ÷ requests.
    pub error_rate: f64,
    /// Runs per outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// First intended send → last answer, s.
    pub elapsed_s: f64,
    /// Runs per second over `elapsed_s`.
    pub throughput_rps: f64,
    /// `ok` runs per second.
    pub ok_rps: f64,
    /// Output tokens of `ok` runs per second, over the whole run.
    pub output_tokens_per_s: f64,
    /// Share of `ok` runs that really streamed.
    pub streamed_share: Option<f64>,
    /// USD spent, by the configured prices.
    pub cost_usd: f64,
    /// TTFT, E2E, ITL and speed of `ok` runs (TTFT and E2E from the intended send).
    pub latency: Latency,
    /// Closed loop only: the tail corrected for coordinated omission.
    pub coordinated_omission: Option<Omission>,
    /// With an SLO latency bound on the target: the requests that met it.
    #[serde(default)]
    pub goodput: Option<Goodput>,
    /// One line: how the target did.
    pub verdict: String,
    /// The distributions, for comparisons.
    pub histograms: Blobs,
}

impl TargetSummary {
    /// The key a baseline is matched on.
    pub fn key(&self) -> String {
        format!("{} · {}", self.target, self.probe)
    }
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SCHEMA`].
    pub schema: String,
    /// The sonde version that measured.
    pub sonde_version: String,
    /// When the bench ended, RFC 3339 UTC.
    pub generated: String,
    /// The load, in words ([`Plan::describe`]).
    pub load: String,
    /// True for a closed loop.
    pub closed_loop: bool,
    /// One entry per target × probe.
    pub targets: Vec<TargetSummary>,
}

/// A summary file that cannot be used.
#[derive(Debug, Error)]
pub enum SummaryError {
    /// Not readable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a summary.
    #[error("{path} is not a sonde bench summary.json: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A histogram blob does not decode.
    #[error("a histogram in the summary does not decode: {0}")]
    Histogram(String),
}

impl Summary {
    /// Reads a `summary.json` written by this or an earlier sonde.
    pub fn load(path: &std::path::Path) -> Result<Summary, SummaryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SummaryError::Read {
            path: shown.clone(),
            source,
        })?;
        let summary: Summary = serde_json::from_str(&text).map_err(|err| SummaryError::Parse {
            path: shown.clone(),
            reason: err.to_string(),
        })?;
        if summary.schema != SCHEMA {
            return Err(SummaryError::Parse {
                path: shown,
                reason: format!("schema {:?}, expected {SCHEMA:?}", summary.schema),
            });
        }
        Ok(summary)
    }
}

/// The verdict line: errors first, then whether it streamed, then the headline figures.
fn verdict(s: &TargetSummary) -> String {
    let mark = if s.ok == 0 || s.error_rate > 0.05 {
        "❌ failing"
    } else if s.errors > 0 || s.streamed_share.is_some_and(|share| share < 0.99) {
        "⚠️ degraded"
    } else {
        "✅ healthy"
    };
    let mut parts = vec![format!("{}/{} ok", s.ok, s.requests)];
    if s.errors > 0 {
        parts.push(format!(
            "{:.1} % errors ({})",
            s.error_rate * 100.0,
            top_errors(s)
        ));
    }
    if let Some(share) = s.streamed_share.filter(|share| *share < 0.99) {
        parts.push(format!(
            "only {:.0} % of answers really streamed",
            share * 100.0
        ));
    }
    parts.push(format!("{:.1} req/s", s.throughput_rps));
    if let Some(p99) = s.latency.ttft_ms.p99.or(s.latency.ttft_ms.max) {
        let label = if s.latency.ttft_ms.p99.is_some() {
            "p99"
        } else {
            "max"
        };
        parts.push(format!("TTFT {label} {}", ms(p99)));
    }
    format!("{mark}: {}", parts.join(" · "))
}

/// A figure for a table: whole above 100, two decimals below.
pub(super) fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Milliseconds as the reports write them.
pub(super) fn ms(value: f64) -> String {
    format!("{} ms", number(value))
}

/// The failures of a target × probe, most frequent first: `server_error 3, timeout 1`.
pub(super) fn top_errors(s: &TargetSummary) -> String {
    let mut errors: Vec<(&String, &u64)> = s
        .outcomes
        .iter()
        .filter(|(name, _)| *name != "ok")
        .collect();
    errors.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    errors
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}
