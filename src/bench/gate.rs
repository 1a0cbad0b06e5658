//! The baseline gate: compares a bench's [`Summary`] with an earlier one and says which
//! metrics regressed beyond a threshold *and* beyond noise.
//!
//! The test. Each gated figure is a quantile of a distribution, so its noise follows from the
//! sample size: by the order-statistic (binomial) argument, the true q-quantile of n samples
//! lies, with 99 % confidence, between the samples of rank `nq ∓ 2.576·√(nq(1−q))`. That
//! interval needs no assumption about the distribution's shape (latency is anything but
//! normal) and is read straight from the stored HdrHistograms. ITL records one sample per
//! token gap, and a run's gaps move together (one connection, one batch, one moment of the
//! machine's load), so its interval counts the runs as the draws, not the gaps: with the gaps
//! taken as independent, 200 runs' 8,000 gaps gave an interval a few percent wide that an
//! unchanged rerun on a busy machine fell outside of. A metric **regressed** when the
//! point change is worse than `max_regression` and the two 99 % intervals do not overlap;
//! worse than the threshold with overlapping intervals is reported as *within noise*. The
//! error rate is gated by a one-sided two-proportion z-test at α = 0.01, and only when it
//! rose by more than one percentage point.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::figures::{Summary, SummaryError, TargetSummary, number};

use crate::aggregate::min_samples;
use crate::aggregate::rollup::{Count, Histograms, TPS_SCALE};
use crate::aggregate::stats::two_proportion_z;

/// z for a two-sided 99 % interval.
const Z_INTERVAL: f64 = 2.576;
/// z for a one-sided test at α = 0.01.
const Z_ONE_SIDED: f64 = 2.326;
/// The smallest rise of the error rate that can fail the gate.
const ERROR_RATE_FLOOR: f64 = 0.01;

/// What happened to one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worse than the threshold, outside noise: fails the gate.
    Regressed,
    /// Worse than the threshold, but the intervals overlap.
    WithinNoise,
    /// Within the threshold.
    Unchanged,
    /// Better than the threshold, outside noise.
    Improved,
    /// Too few samples on one side to compare.
    NotComparable,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Regressed => "❌ regressed",
            Verdict::WithinNoise => "≈ within noise",
            Verdict::Unchanged => "unchanged",
            Verdict::Improved => "✅ improved",
            Verdict::NotComparable => "n/a (too few samples)",
        }
    }
}

/// One metric of one target, before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `target · probe`.
    pub key: String,
    /// Metric name (`TTFT p99`, `error rate`, …).
    pub metric: &'static str,
    /// The baseline's figure.
    pub baseline: Option<f64>,
    /// This run's figure.
    pub current: Option<f64>,
    /// current ÷ baseline − 1 (for the error rate: the difference in points).
    pub change: Option<f64>,
    /// The evidence, in words: intervals or the z statistic.
    pub evidence: String,
    /// The outcome.
    pub verdict: Verdict,
}

/// A whole comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The threshold, as a fraction (0.1 for 10 %).
    pub max_regression: f64,
    /// Every metric of every target both runs measured.
    pub changes: Vec<Change>,
    /// Targets of the baseline this run did not measure.
    pub missing: Vec<String>,
    /// Targets this run measured that the baseline lacks.
    pub added: Vec<String>,
}

/// A gated quantile of one of a summary's histograms.
struct QuantileMetric {
    /// The row's name.
    name: &'static str,
    /// Which histogram.
    pick: fn(&Histograms) -> &Histogram<Count>,
    /// The quantile.
    q: f64,
    /// The histogram's unit per figure unit.
    per_unit: f64,
    /// Whether a lower figure is better.
    lower_is_better: bool,
    /// Whether a run records many samples (ITL: one per token gap). Those samples are not
    /// independent, since a run's gaps share its connection, its batch and the machine's load
    /// while it streamed; the interval counts runs as the independent draws, not samples.
    many_per_run: bool,
}

const fn metric(
    name: &'static str,
    pick: fn(&Histograms) -> &Histogram<Count>,
    q: f64,
) -> QuantileMetric {
    QuantileMetric {
        name,
        pick,
        q,
        per_unit: 1000.0,
        lower_is_better: true,
        many_per_run: false,
    }
}

const METRICS: [QuantileMetric; 9] = [
    metric("TTFT p50", |h| &h.ttft_us, 0.5),
    metric("TTFT p90", |h| &h.ttft_us, 0.9),
    metric("TTFT p99", |h| &h.ttft_us, 0.99),
    metric("E2E p50", |h| &h.e2e_us, 0.5),
    metric("E2E p90", |h| &h.e2e_us, 0.9),
    metric("E2E p99", |h| &h.e2e_us, 0.99),
    QuantileMetric {
        many_per_run: true,
        ..metric("ITL p50", |h| &h.itl_us, 0.5)
    },
    QuantileMetric {
        many_per_run: true,
        ..metric("ITL p99", |h| &h.itl_us, 0.99)
    },
    QuantileMetric {
        per_unit: TPS_SCALE,
        lower_is_better: false,
        ..metric("tokens/s p50", |h| &h.tps, 0.5)
    },
];

/// Compares `current` with `baseline`, target by target (matched on target and probe).
pub fn compare(
    baseline: &Summary,
    current: &Summary,
    max_regression: f64,
) -> Result<Comparison, SummaryError> {
    let mut comparison = Comparison {
        max_regression,
        changes: Vec::new(),
        missing: Vec::new(),
        added: Vec::new(),
    };
    for before in &baseline.targets {
        match current.targets.iter().find(|now| now.key() == before.key()) {
            Some(now) => compare_target(before, now, max_regression, &mut comparison.changes)?,
            None => comparison.missing.push(before.key()),
        }
    }
    for now in &current.targets {
        if !baseline
            .targets
            .iter()
            .any(|before| before.key() == now.key())
        {
            comparison.added.push(now.key());
        }
    }
    Ok(comparison)
}

fn compare_target(
    before: &TargetSummary,
    now: &TargetSummary,
    max_regression: f64,
    changes: &mut Vec<Change>,
) -> Result<(), SummaryError> {
    let (old, new) = (before.histograms.decode()?, now.histograms.decode()?);
    for metric in &METRICS {
        let draws = |summary: &TargetSummary| metric.many_per_run.then_some(summary.ok);
        let a = Interval::of(
            (metric.pick)(&old),
            metric.q,
            metric.per_unit,
            draws(before),
        );
        let b = Interval::of((metric.pick)(&new), metric.q, metric.per_unit, draws(now));
        let mut change = Change {
            key: now.key(),
            metric: metric.name,
            baseline: a.map(|i| i.point),
            current: b.map(|i| i.point),
            change: None,
            evidence: String::new(),
            verdict: Verdict::NotComparable,
        };
        if let (Some(a), Some(b)) = (a, b) {
            let ratio = if a.point > 0.0 {
                b.point / a.point - 1.0
            } else {
                0.0
            };
            // Express both as "how much worse", so one rule serves both directions.
            let (worse, apart_worse, apart_better) = if metric.lower_is_better {
                (ratio, b.low > a.high, b.high < a.low)
            } else {
                (-ratio, b.high < a.low, b.low > a.high)
            };
            change.change = Some(ratio);
            change.evidence = format!(
                "[{}, {}] → [{}, {}]",
                number(a.low),
                number(a.high),
                number(b.low),
                number(b.high)
            );
            change.verdict = if worse > max_regression && apart_worse {
                Verdict::Regressed
            } else if worse > max_regression {
                Verdict::WithinNoise
            } else if worse < -max_regression && apart_better {
                Verdict::Improved
            } else {
                Verdict::Unchanged
            };
        }
        changes.push(change);
    }
    changes.push(error_rate(before, now));
    Ok(())
}

fn error_rate(before: &TargetSummary, now: &TargetSummary) -> Change {
    let (p1, p2) = (before.error_rate, now.error_rate);
    let z = two_proportion_z(before.errors, before.requests, now.errors, now.requests);
    let verdict = if p2 - p1 > ERROR_RATE_FLOOR && z > Z_ONE_SIDED {
        Verdict::Regressed
    } else if p2 - p1 > ERROR_RATE_FLOOR {
        Verdict::WithinNoise
    } else if p1 - p2 > ERROR_RATE_FLOOR && -z > Z_ONE_SIDED {
        Verdict::Improved
    } else {
        Verdict::Unchanged
    };
    Change {
        key: now.key(),
        metric: "error rate",
        baseline: Some(p1),
        current: Some(p2),
        change: Some(p2 - p1),
        evidence: format!("z = {z:.2}"),
        verdict,
    }
}

/// A quantile with its distribution-free 99 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Interval {
    point: f64,
    low: f64,
    high: f64,
}

impl Interval {
    /// `draws` is the number of independent draws behind the samples when it is fewer than
    /// the samples (the runs behind ITL's gaps): the interval then widens as if only that many
    /// had been drawn. `None` when the histogram holds fewer than 1 / (1 − q) samples, as on
    /// every report.
    fn of(
        histogram: &Histogram<Count>,
        q: f64,
        per_unit: f64,
        draws: Option<u64>,
    ) -> Option<Interval> {
        let n = histogram.len();
        if n == 0 || n < min_samples(q) {
            return None;
        }
        let nf = n as f64;
        let draws = draws.map_or(nf, |d| (d.max(1) as f64).min(nf));
        let centre = nf * q;
        // The binomial rank spread z·√(nq(1−q)), as a share of the draws, scaled to ranks.
        let half = Z_INTERVAL * (q * (1.0 - q) / draws).sqrt() * nf;
        let rank = |r: f64| (r.clamp(1.0, nf)) as u64;
        let at = |r: u64| value_at_rank(histogram, r) as f64 / per_unit;
        Some(Interval {
            point: at(rank(centre.ceil())),
            low: at(rank((centre - half).floor())),
            high: at(rank((centre + half).ceil() + 1.0)),
        })
    }
}

/// The value of the sample of rank `rank` (1-based, ascending).
fn value_at_rank(histogram: &Histogram<Count>, rank: u64) -> u64 {
    let mut seen = 0u64;
    for value in histogram.iter_recorded() {
        seen += u64::from(value.count_at_value());
        if seen >= rank {
            return histogram.highest_equivalent(value.value_iterated_to());
        }
    }
    histogram.max()
}

impl Comparison {
    /// True when any metric regressed: the gate fails.
    pub fn regressed(&self) -> bool {
        self.changes.iter().any(|c| c.verdict == Verdict::Regressed)
    }

    /// The table of changes, for the terminal and `report.md`.
    pub fn markdown(&self, baseline_name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Compared with `{baseline_name}` (gate: {:.0} % worse and outside noise)\n",
            self.max_regression * 100.0
        );
        let _ = writeln!(
            out,
            "| target · probe | metric | baseline | current | change | 99 % intervals / test | verdict |"
        );
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | --- | --- |");
        for c in &self.changes {
            let rate = c.metric == "error rate";
            let figure = |v: Option<f64>| match v {
                Some(v) if rate => format!("{:.2} %", v * 100.0),
                Some(v) => number(v),
                None => "–".to_owned(),
            };
            let change = match c.change {
                Some(d) if rate => format!("{:+.2} pt", d * 100.0),
                Some(r) => format!("{:+.1} %", r * 100.0),
                None => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                c.key,
                c.metric,
                figure(c.baseline),
                figure(c.current),
                change,
                c.evidence,
                c.verdict.label()
            );
        }
        out.push('\n');
        for key in &self.missing {
            let _ = writeln!(out, "- `{key}`: in the baseline, not measured in this run.");
        }
        for key in &self.added {
            let _ = writeln!(out, "- `{key}`: new in this run, no baseline.");
        }
        let regressions = self
            .changes
            .iter()
            .filter(|c| c.verdict == Verdict::Regressed)
            .count();
        let _ = writeln!(
            out,
            "\n**{}**",
            if regressions == 0 {
                "Gate passed: no metric regressed beyond the threshold and outside noise."
                    .to_owned()
            } else {
                format!("Gate failed: {regressions} metric(s) regressed.")
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: impl IntoIterator<Item = u64>) -> Histogram<Count> {
        let mut h = Histograms::default().ttft_us;
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn the_interval_holds_the_quantile_and_narrows_with_samples() {
        let small = histogram((1..=100).map(|v| v * 1000));
        let large = histogram((1..=10_000).map(|v| v * 10));
        let a = Interval::of(&small, 0.5, 1000.0, None).unwrap();
        let b = Interval::of(&large, 0.5, 1000.0, None).unwrap();
        assert!((a.point - 50.0).abs() < 0.1 && (b.point - 50.0).abs() < 0.1);
        assert!(a.low < 50.0 && a.high > 50.0);
        assert!(b.high - b.low < (a.high - a.low) / 5.0, "{a:?} {b:?}");
        assert!(Interval::of(&small, 0.99, 1000.0, None).is_some());
        assert!(Interval::of(&histogram(1..=99), 0.99, 1.0, None).is_none());
    }

    #[test]
    fn samples_of_few_runs_give_the_interval_of_the_runs() {
        let gaps = histogram((1..=10_000).map(|v| v * 10));
        let independent = Interval::of(&gaps, 0.99, 1000.0, None).unwrap();
        let of_runs = Interval::of(&gaps, 0.99, 1000.0, Some(100)).unwrap();
        let as_many = Interval::of(&gaps, 0.99, 1000.0, Some(10_000)).unwrap();
        assert_eq!(as_many, independent);
        assert_eq!(of_runs.point, independent.point);
        // 10,000 draws: ranks 9,900 ∓ 26; 100 draws: ∓ 2.576·√(0.0099/100) of 10,000 = ∓ 256.
        assert!((independent.low - 98.74).abs() < 0.1, "{independent:?}");
        assert!((of_runs.low - 96.43).abs() < 0.1, "{of_runs:?}");
        let largest = value_at_rank(&gaps, 10_000) as f64 / 1000.0;
        assert_eq!(
            of_runs.high, largest,
            "the top rank is clamped to the largest"
        );
    }

    #[test]
    fn value_at_rank_counts_from_one() {
        let h = histogram([10, 20, 20, 30]);
        assert_eq!(value_at_rank(&h, 1), 10);
        assert_eq!(value_at_rank(&h, 3), 20);
        assert_eq!(value_at_rank(&h, 4), 30);
    }
}
