//! Drift: a target's quality against its own past, per canary family, as its answers are
//! recorded — the change a host makes one night (a new quantization, a broken template) that
//! a comparison over a week would see only slowly.
//!
//! A Bernoulli CUSUM on wrong answers (Page, 1954): the baseline p₀ is the target's own
//! share of wrong answers, learnt as an exponentially weighted mean over about the last
//! [`BASELINE_RUNS`] answers, taken at its one-sided 95 % Wilson upper bound (at least 1 %)
//! so that a past known from few answers does not look better than it may be; each answer adds its log-likelihood ratio of
//! p₁ = p₀ + `drift_shift` against p₀ to a sum floored at 0; the sum passing
//! `drift_threshold` opens a `quality` incident. The baseline is frozen while the drift is
//! open. It closes when the mirror CUSUM — p₀ against p₁ — passes the same threshold (the
//! answers are back to the past rate, with the same weight of evidence that opened it), or,
//! after `drift_accept`, by accepting the rate since it opened as the new baseline. Nothing
//! is judged before [`WARMUP_RUNS`] answers have taught the baseline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats;
use crate::config::QualityConfig;
use crate::quality::{Family, Judgement};
use crate::result::ResultRecord;
use crate::units::duration_ms;

/// Answers the baseline averages over (the weight of a new answer is 1 / this, once learnt).
pub const BASELINE_RUNS: u64 = 500;
/// Answers before the detector may fire.
pub const WARMUP_RUNS: u64 = 50;
/// The least baseline: a host never seen wrong is assumed wrong 1 % of the time, so one
/// wrong answer is evidence, not proof.
const FLOOR: f64 = 0.01;

/// One family's detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    /// The past share of wrong answers.
    pub baseline: f64,
    /// Answers the baseline learnt from.
    pub learnt: u64,
    /// The CUSUM sum.
    pub sum: f64,
    /// Answers and wrong ones since the sum last stood at 0.
    pub streak: (u64, u64),
    /// The drift, while it is open.
    pub open: Option<Open>,
}

/// An open drift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Open {
    /// Unix ms it began.
    pub since_ms: i64,
    /// The baseline p₀ it is measured against.
    pub baseline: f64,
    /// The rate p₁ it was detected at.
    pub drifted: f64,
    /// Answers since, and wrong ones.
    pub answers: (u64, u64),
    /// The mirror CUSUM: evidence that the answers are back to p₀.
    pub back: f64,
}

/// A drift opening or closing.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftChange {
    /// The family.
    pub family: Family,
    /// Opened (else closed).
    pub opened: bool,
    /// In words.
    pub cause: String,
}

/// A target's detectors, one per family it answered (persisted with its state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// By family.
    pub families: BTreeMap<Family, Cusum>,
}

fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

impl Drift {
    /// Takes one run into account; returns the drift it opened or closed.
    pub fn observe(
        &mut self,
        record: &ResultRecord,
        at_ms: i64,
        config: &QualityConfig,
    ) -> Option<DriftChange> {
        let (kind, judgement) = (record.quality_item?, record.quality?);
        let family = kind.family();
        let wrong = judgement != Judgement::Correct;
        let x = f64::from(u8::from(wrong));
        let c = self.families.entry(family).or_default();
        let name = match family {
            Family::Exact => "exact answers",
            Family::Tools => "tool calls",
        };
        if let Some(open) = &mut c.open {
            open.answers = (open.answers.0 + 1, open.answers.1 + u64::from(wrong));
            open.back = (open.back + step(wrong, open.drifted, open.baseline)).max(0.0);
            let lately = open.answers.1 as f64 / open.answers.0 as f64;
            let back = open.back > config.drift_threshold;
            let accepted = at_ms - open.since_ms >= duration_ms(config.drift_accept);
            if !(back || accepted) {
                return None;
            }
            let cause = if back {
                format!(
                    "{name} back to their past rate of wrong answers ({})",
                    percent(open.baseline)
                )
            } else {
                c.baseline = lately;
                format!(
                    "{name} wrong {} of the time for {}: accepted as the new baseline",
                    percent(lately),
                    humantime::format_duration(config.drift_accept)
                )
            };
            c.open = None;
            c.sum = 0.0;
            c.streak = (0, 0);
            return Some(DriftChange {
                family,
                opened: false,
                cause,
            });
        }
        let mut change = None;
        if c.learnt >= WARMUP_RUNS {
            // The past's 95 % upper bound: a baseline learnt from few answers is not taken
            // for better than it may be.
            let learnt = c.learnt.min(BASELINE_RUNS);
            let wrong_past = (c.baseline * learnt as f64).round() as u64;
            let upper = stats::wilson(wrong_past, learnt, 0.1).map_or(c.baseline, |(_, up)| up);
            let p0 = upper.clamp(FLOOR, 0.9);
            let p1 = (p0 + config.drift_shift).min(0.99);
            c.sum = (c.sum + step(wrong, p0, p1)).max(0.0);
            c.streak = if c.sum > 0.0 {
                (c.streak.0 + 1, c.streak.1 + u64::from(wrong))
            } else {
                (0, 0)
            };
            if c.sum > config.drift_threshold {
                change = Some(DriftChange {
                    family,
                    opened: true,
                    cause: format!(
                        "{name} wrong in {} of the last {} answers, against {} in its own past",
                        c.streak.1,
                        c.streak.0,
                        percent(p0)
                    ),
                });
                c.open = Some(Open {
                    since_ms: at_ms,
                    baseline: p0,
                    drifted: p1,
                    answers: (0, 0),
                    back: 0.0,
                });
                return change;
            }
        }
        c.learnt += 1;
        c.baseline += (x - c.baseline) / c.learnt.min(BASELINE_RUNS) as f64;
        change
    }

    /// The families whose drift is open.
    pub fn open(&self) -> impl Iterator<Item = Family> + '_ {
        self.families
            .iter()
            .filter(|(_, c)| c.open.is_some())
            .map(|(family, _)| *family)
    }
}

/// One answer's log-likelihood ratio of a wrong-answer rate `to` against `from`.
fn step(wrong: bool, from: f64, to: f64) -> f64 {
    if wrong {
        (to / from).ln()
    } else {
        ((1.0 - to) / (1.0 - from)).ln()
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::quality::Kind;
    use crate::result::{Outcome, sample};

    fn answer(right: bool) -> ResultRecord {
        let mut record = sample(Outcome::Ok);
        record.quality_item = Some(Kind::Arithmetic);
        record.quality = Some(if right {
            Judgement::Correct
        } else {
            Judgement::WrongAnswer
        });
        record
    }

    /// Feeds answers right with probability `p` each, one a minute from `start`; returns the
    /// changes with the index of the answer that caused them.
    fn feed(
        drift: &mut Drift,
        rng: &mut SmallRng,
        p: f64,
        n: usize,
        start: usize,
    ) -> Vec<(usize, DriftChange)> {
        let config = QualityConfig::default();
        (start..start + n)
            .filter_map(|i| {
                let record = answer(rng.random_bool(p));
                drift
                    .observe(&record, i as i64 * 60_000, &config)
                    .map(|change| (i, change))
            })
            .collect()
    }

    #[test]
    fn a_drop_opens_a_drift_soon_and_a_steady_host_stays_quiet() {
        let mut quiet = 0;
        let mut delays = Vec::new();
        for seed in 0..50 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut drift = Drift::default();
            // A week of a host right 97 % of the time, one answer every ~10 minutes.
            let steady = feed(&mut drift, &mut rng, 0.97, 1_000, 0);
            quiet += usize::from(steady.is_empty());
            if !steady.is_empty() {
                continue;
            }
            // Then it drops to 80 %.
            let changes = feed(&mut drift, &mut rng, 0.80, 200, 1_000);
            let (at, change) = changes.first().cloned().expect("the drop is caught");
            assert!(change.opened, "{change:?}");
            delays.push(at - 1_000);
            assert_eq!(
                drift.open().collect::<Vec<_>>(),
                [Family::Exact],
                "{changes:?}"
            );
        }
        // Measured: 50 of 50 quiet, the drop caught after a median of 32 answers (6 to 150).
        assert!(
            quiet >= 48,
            "{quiet} of 50 steady weeks without a false alarm"
        );
        delays.sort_unstable();
        let median = delays[delays.len() / 2];
        eprintln!(
            "{quiet} of 50 steady weeks quiet; a drop caught after a median of {median} \
             answers (from {} to {})",
            delays[0],
            delays[delays.len() - 1]
        );
        assert!(
            median <= 60,
            "median {median} answers to catch 3 % → 20 % wrong"
        );
    }

    #[test]
    fn a_drift_closes_when_quality_returns_or_is_accepted() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut drift = Drift::default();
        feed(&mut drift, &mut rng, 1.0, 100, 0);
        let opened = feed(&mut drift, &mut rng, 0.5, 30, 100);
        assert!(opened.iter().any(|(_, c)| c.opened));
        let closed = feed(&mut drift, &mut rng, 1.0, 70, 130);
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert!(!closed[0].1.opened && closed[0].1.cause.contains("back to"));
        // A lasting drop is accepted after `drift_accept` (a week: 10,080 answers a minute
        // apart), and the new rate becomes the baseline.
        let opened = feed(&mut drift, &mut rng, 0.6, 100, 200);
        assert!(opened.iter().any(|(_, c)| c.opened));
        let accepted = feed(&mut drift, &mut rng, 0.6, 10_100, 300);
        assert!(
            accepted
                .iter()
                .any(|(_, c)| c.cause.contains("new baseline")),
            "{accepted:?}"
        );
        assert!(drift.families[&Family::Exact].baseline > 0.25);
    }
}
