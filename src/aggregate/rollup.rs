//! A rollup: everything the windows need about the runs of one target × probe in one time
//! bucket (an hour or a day), mergeable with any other rollup.
//!
//! Latency distributions are HdrHistograms at 3 significant digits (0.1 % relative error),
//! auto-resizing from 1 µs, so a bucket of fast runs stays small; they are stored as V2
//! compressed (deflate) blobs, the format every HdrHistogram implementation reads. A dense
//! histogram of values up to a minute holds about 17 k 32-bit counters (70 KiB): the
//! dense [`Rollup`] serves one-off tallies (`sonde bench`'s report); the writer and the
//! windows keep rollups sparse (`aggregate::sparse`), as the values they saw. What a run
//! adds to either is [`each_value`].

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::fidelity::Fidelity;
use super::health::{Verdict, verdict};
use super::quality::Quality;
use super::sparse::NotContained;
use crate::capability::{Capabilities, Capability};
use crate::result::{Outcome, ResultRecord};

/// A histogram counter. 32 bits halve the memory of the writer's rollup cache and the work
/// of merging windows; a bucket would need 4 billion runs of one value to overflow.
pub type Count = u32;

/// Tokens per second are recorded in hundredths, so 0.01 tok/s is the resolution.
pub const TPS_SCALE: f64 = 100.0;

/// The length of a rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Span {
    /// One hour (UTC).
    Hour,
    /// One day (UTC).
    Day,
}

impl Span {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Span::Hour => "hour",
            Span::Day => "day",
        }
    }

    /// Its length in ms.
    pub fn ms(self) -> i64 {
        match self {
            Span::Hour => 3_600_000,
            Span::Day => 86_400_000,
        }
    }

    /// The start of the bucket holding unix ms `at`.
    pub fn bucket_of(self, at: i64) -> i64 {
        at - at.rem_euclid(self.ms())
    }
}

/// A rollup blob that does not decode.
#[derive(Debug, Error)]
#[error("a stored histogram does not decode: {0}")]
pub struct DecodeError(String);

/// The four distributions a rollup keeps.
#[derive(Debug, Clone)]
pub struct Histograms {
    /// TTFT in µs (streamed runs that reached content).
    pub ttft_us: Histogram<Count>,
    /// E2E in µs.
    pub e2e_us: Histogram<Count>,
    /// Every gap between content arrivals, in µs.
    pub itl_us: Histogram<Count>,
    /// Output speed in hundredths of a token per second.
    pub tps: Histogram<Count>,
}

impl Default for Histograms {
    fn default() -> Self {
        let new = || Histogram::new(3).expect("3 significant digits is a valid histogram");
        Histograms {
            ttft_us: new(),
            e2e_us: new(),
            itl_us: new(),
            tps: new(),
        }
    }
}

/// Counts, spend and distributions of the runs in one bucket.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    /// Counts, spend, capabilities, last ok and last error.
    pub scalars: Scalars,
    /// Latency and speed distributions of successful runs.
    pub histograms: Histograms,
}

/// The fields of [`Scalars`] a merge takes whole from one bucket — the latest or newest
/// holding one — rather than adding up: last ok, last error, the latest named answer, the
/// latest substitution and each capability flag.
pub const TAKEN: usize = 4 + Capability::ALL.len();

/// Takes each of `theirs`' counts out of `mine`, dropping the keys that reach zero (a sum
/// never holds a zero count: merges only add what runs counted).
pub(crate) fn subtract_each<K: Ord + Copy>(
    mine: &mut BTreeMap<K, u64>,
    theirs: &BTreeMap<K, u64>,
) -> Result<(), NotContained> {
    for (key, count) in theirs {
        let held = mine.get_mut(key).ok_or(NotContained)?;
        *held = held.checked_sub(*count).ok_or(NotContained)?;
        if *held == 0 {
            mine.remove(key);
        }
    }
    Ok(())
}

/// The rollup's scalar part, stored as JSON next to the histogram blobs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scalars {
    /// Runs per outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Provider faults.
    #[serde(default)]
    pub failures: u64,
    /// USD spent.
    pub cost_usd: f64,
    /// Tokens spent.
    pub tokens: u64,
    /// Capability evidence.
    pub capabilities: Capabilities,
    /// Latest ok.
    pub last_ok_ms: Option<i64>,
    /// Latest failure.
    pub last_error: Option<(i64, String)>,
    /// TTFT median of the bucket, ms: read by charts without decoding the histograms.
    #[serde(default)]
    pub ttft_p50_ms: Option<f64>,
    /// TTFT 95th percentile of the bucket, ms.
    #[serde(default)]
    pub ttft_p95_ms: Option<f64>,
    /// Substitution and streaming evidence.
    #[serde(default)]
    pub fidelity: Fidelity,
    /// The quality canary's judgements.
    #[serde(default, skip_serializing_if = "Quality::is_empty")]
    pub quality: Quality,
}

/// What the uptime bar, the daily table, the TTFT chart and the heatmap read of a rollup
/// (`publish::points`): a few of its [`Scalars`], small enough that a month of a fleet's
/// hourly rows can be kept packed, one row per location and bucket (the PostgreSQL
/// store's `points`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PointScalars {
    /// Runs of every outcome.
    pub attempts: u64,
    /// `ok` runs.
    pub ok: u64,
    /// Provider faults.
    pub failures: u64,
    /// TTFT median of the bucket, ms.
    pub ttft_p50_ms: Option<f64>,
    /// TTFT 95th percentile of the bucket, ms.
    pub ttft_p95_ms: Option<f64>,
    /// The quality canary's judgements.
    pub quality: Quality,
}

impl Scalars {
    /// Counts one run, finished at unix ms `at_ms`.
    pub fn add(&mut self, record: &ResultRecord, at_ms: i64) {
        *self.outcomes.entry(record.outcome).or_default() += 1;
        if verdict(record) == Verdict::Failure {
            self.failures += 1;
        }
        self.cost_usd += record.cost_usd.unwrap_or(0.0);
        self.tokens += u64::from(record.input_tokens.unwrap_or(0))
            + u64::from(record.output_tokens.unwrap_or(0));
        self.capabilities.update(Capabilities::of(record));
        self.fidelity.add(record, at_ms);
        self.quality.add(record);
        if record.outcome == Outcome::Ok {
            self.last_ok_ms = self.last_ok_ms.max(Some(at_ms));
        } else if record.outcome != Outcome::SkippedBudget
            && self.last_error.as_ref().is_none_or(|(ms, _)| *ms <= at_ms)
        {
            let text = record
                .error
                .clone()
                .unwrap_or_else(|| record.outcome.to_string());
            self.last_error = Some((at_ms, format!("{}: {text}", record.outcome)));
        }
    }

    /// Adds another bucket's counts (its percentile fields do not merge and are left).
    pub fn merge(&mut self, other: &Scalars) {
        for (outcome, count) in &other.outcomes {
            *self.outcomes.entry(*outcome).or_default() += count;
        }
        self.failures += other.failures;
        self.cost_usd += other.cost_usd;
        self.tokens += other.tokens;
        self.capabilities.update(other.capabilities);
        self.fidelity.merge(&other.fidelity);
        self.quality.merge(&other.quality);
        self.last_ok_ms = self.last_ok_ms.max(other.last_ok_ms);
        if let Some((ms, _)) = &other.last_error
            && self.last_error.as_ref().is_none_or(|(mine, _)| mine <= ms)
        {
            self.last_error = other.last_error.clone();
        }
    }

    /// Takes the counts of `bucket` (a bucket this sum merged) out: runs per outcome,
    /// failures, tokens, the answers counted for substitution and streaming, the quality
    /// judgements. The spend (a float sum, exact only in its order) and the fields taken
    /// whole from one bucket ([`Scalars::holds`]) do not subtract; a window re-adds the one
    /// and tells from the other whether the bucket leaving took them along.
    pub fn subtract_counts(&mut self, bucket: &Scalars) -> Result<(), NotContained> {
        subtract_each(&mut self.outcomes, &bucket.outcomes)?;
        self.failures = self
            .failures
            .checked_sub(bucket.failures)
            .ok_or(NotContained)?;
        self.tokens = self.tokens.checked_sub(bucket.tokens).ok_or(NotContained)?;
        self.fidelity.subtract_counts(&bucket.fidelity)?;
        self.quality.subtract(&bucket.quality)
    }

    /// For each field a merge takes whole from one bucket instead of adding up (see
    /// [`TAKEN`]), whether this sum holds `bucket`'s value of it.
    pub fn holds(&self, bucket: &Scalars) -> [bool; TAKEN] {
        fn same<T: PartialEq>(mine: &Option<T>, theirs: &Option<T>) -> bool {
            theirs.is_some() && mine == theirs
        }
        let flag = |i: usize| {
            let capability = Capability::ALL[i];
            same(
                &self.capabilities.get(capability),
                &bucket.capabilities.get(capability),
            )
        };
        [
            same(&self.last_ok_ms, &bucket.last_ok_ms),
            same(&self.last_error, &bucket.last_error),
            same(&self.fidelity.latest, &bucket.fidelity.latest),
            same(
                &self.fidelity.last_substitute,
                &bucket.fidelity.last_substitute,
            ),
            flag(0),
            flag(1),
            flag(2),
            flag(3),
        ]
    }

    /// What the charts read of these scalars.
    pub fn point(&self) -> PointScalars {
        PointScalars {
            attempts: self.attempts(),
            ok: self.count(Outcome::Ok),
            failures: self.failures,
            ttft_p50_ms: self.ttft_p50_ms,
            ttft_p95_ms: self.ttft_p95_ms,
            quality: self.quality.clone(),
        }
    }

    /// Runs counted, of every outcome.
    pub fn attempts(&self) -> u64 {
        self.outcomes.values().sum()
    }

    /// Runs of `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    /// ok ÷ (ok + provider faults); `None` when no run counted.
    pub fn availability(&self) -> Option<f64> {
        let ok = self.count(Outcome::Ok);
        let counted = ok + self.failures;
        (counted > 0).then(|| ok as f64 / counted as f64)
    }
}

impl Rollup {
    /// Adds one run, finished at unix ms `at_ms`.
    pub fn add(&mut self, record: &ResultRecord, at_ms: i64) {
        self.scalars.add(record, at_ms);
        let h = &mut self.histograms;
        each_value(record, |distribution, value| {
            let histogram = match distribution {
                Distribution::Ttft => &mut h.ttft_us,
                Distribution::E2e => &mut h.e2e_us,
                Distribution::Itl => &mut h.itl_us,
                Distribution::Tps => &mut h.tps,
            };
            if histogram.record(value).is_err() {
                histogram.saturating_record(value);
            }
        });
    }
}

/// One of a rollup's four distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// TTFT, µs.
    Ttft,
    /// E2E, µs.
    E2e,
    /// Gaps between content arrivals, µs.
    Itl,
    /// Output speed, hundredths of a token per second.
    Tps,
}

/// Hands `each` every value a run adds to the distributions (an ok run only), in their
/// units and at least 1: the one definition of what a run records, for the dense rollups
/// the writer keeps and the sparse windows the publisher sums.
pub fn each_value(record: &ResultRecord, mut each: impl FnMut(Distribution, u64)) {
    if record.outcome != Outcome::Ok {
        return;
    }
    let mut put = |distribution, value: u64| each(distribution, value.max(1));
    if let Some(ms) = record.ttft_ms {
        put(Distribution::Ttft, (ms * 1000.0).round() as u64);
    }
    if let Some(ms) = record.e2e_ms {
        put(Distribution::E2e, (ms * 1000.0).round() as u64);
    }
    for &gap in &record.itl_gaps_us {
        put(Distribution::Itl, u64::from(gap));
    }
    if let Some(tps) = record.tokens_per_s {
        put(Distribution::Tps, (tps * TPS_SCALE).round() as u64);
    }
}

/// A histogram as a V2 deflate blob.
pub fn encode(histogram: &Histogram<Count>) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing into a Vec cannot fail for an in-range histogram.
    let _ = V2DeflateSerializer::new().serialize(histogram, &mut out);
    out
}

/// A histogram from a V2 (deflate or plain) blob; empty bytes are an empty histogram.
pub fn decode(bytes: &[u8]) -> Result<Histogram<Count>, DecodeError> {
    if bytes.is_empty() {
        return Ok(Histograms::default().ttft_us);
    }
    let mut histogram: Histogram<Count> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|err| DecodeError(format!("{err:?}")))?;
    histogram.auto(true);
    Ok(histogram)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_merge_like_the_runs_together() {
        let mut a = Histograms::default().ttft_us;
        let mut b = Histograms::default().ttft_us;
        let mut both = Histograms::default().ttft_us;
        for v in 1..=1000u64 {
            let value = v * 997;
            if v % 2 == 0 { &mut a } else { &mut b }
                .record(value)
                .unwrap();
            both.record(value).unwrap();
        }
        let mut merged = decode(&encode(&a)).unwrap();
        merged.add(decode(&encode(&b)).unwrap()).unwrap();
        for q in [0.5, 0.9, 0.95, 0.99] {
            assert_eq!(merged.value_at_quantile(q), both.value_at_quantile(q));
        }
        assert_eq!(merged.len(), 1000);
        assert!(decode(b"not a histogram").is_err());
    }

    #[test]
    fn a_run_lands_in_every_histogram_at_its_value() {
        let mut record = crate::result::sample(Outcome::Ok);
        record.ttft_ms = Some(812.5);
        record.e2e_ms = Some(2400.0);
        record.tokens_per_s = Some(68.06);
        record.itl_gaps_us = vec![15_000, 90_000];
        let mut rollup = Rollup::default();
        rollup.add(&record, 0);
        let h = &rollup.histograms;
        let near = |value: u64, want: u64| value.abs_diff(want) <= want / 1000;
        assert!(near(h.ttft_us.max(), 812_500), "{}", h.ttft_us.max());
        assert!(near(h.e2e_us.max(), 2_400_000));
        assert!(near(h.itl_us.max(), 90_000));
        assert!(near(h.tps.max(), 6806), "{}", h.tps.max());
    }
}
