//! Quality: the canary's judgements over a bucket or a window (mergeable by addition), the
//! rates they give with Wilson intervals, and each target's standing against its group's
//! reference.
//!
//! The comparison, per family (exact answers, tool calls): the reference is the group's
//! target marked `reference = true`, else the one with the highest Wilson lower bound (the
//! best that is not just lucky). Every other target is tested against it with Fisher's exact
//! one-sided test; when the reference was chosen from the data, its p-value is doubled (the
//! direction of the test was picked after looking). Holm's correction across every test of
//! the group holds the chance of any wrong `below` flag in a group at `[quality] alpha`.
//! Not flagged is not the same as fine: a target is `ok` only when, with 95 % confidence
//! (Agresti–Caffo interval of the difference), it is at most `margin` below the reference in
//! every family; else `insufficient`, with the runs it would take to tell.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rollup::subtract_each;
use super::sparse::NotContained;
use super::stats;
use crate::config::QualityConfig;
use crate::quality::{Family, Judgement, Kind};
use crate::result::ResultRecord;

/// Confidence of the intervals shown and of an `ok` verdict.
const CONFIDENCE_ALPHA: f64 = 0.05;
/// The power the "runs needed" estimates aim at.
const POWER: f64 = 0.8;

/// The canary's judgements of some runs, by item kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Answers per judgement, per item kind.
    pub kinds: BTreeMap<Kind, BTreeMap<Judgement, u64>>,
}

impl Quality {
    /// Counts one run, when it was judged.
    pub fn add(&mut self, record: &ResultRecord) {
        if let (Some(kind), Some(judgement)) = (record.quality_item, record.quality) {
            *self
                .kinds
                .entry(kind)
                .or_default()
                .entry(judgement)
                .or_default() += 1;
        }
    }

    /// Adds another bucket's judgements.
    pub fn merge(&mut self, other: &Quality) {
        for (kind, judgements) in &other.kinds {
            let mine = self.kinds.entry(*kind).or_default();
            for (judgement, count) in judgements {
                *mine.entry(*judgement).or_default() += count;
            }
        }
    }

    /// Takes `bucket`'s judgements out (a bucket this merged), dropping the kinds left with
    /// none, as a merge of the other buckets alone would give.
    pub fn subtract(&mut self, bucket: &Quality) -> Result<(), NotContained> {
        for (kind, judgements) in &bucket.kinds {
            let mine = self.kinds.get_mut(kind).ok_or(NotContained)?;
            subtract_each(mine, judgements)?;
            if mine.is_empty() {
                self.kinds.remove(kind);
            }
        }
        Ok(())
    }

    /// No judged answer.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    fn count(&self, kind: Kind, judgement: Option<Judgement>) -> u64 {
        self.kinds
            .get(&kind)
            .map_or(0, |judgements| match judgement {
                Some(judgement) => judgements.get(&judgement).copied().unwrap_or(0),
                None => judgements.values().sum(),
            })
    }

    /// Right answers of one kind.
    pub fn kind_rate(&self, kind: Kind) -> Rate {
        Rate {
            hits: self.count(kind, Some(Judgement::Correct)),
            total: self.count(kind, None),
        }
    }

    /// Right answers of one family.
    pub fn family_rate(&self, family: Family) -> Rate {
        Kind::ALL
            .into_iter()
            .filter(|kind| kind.family() == family)
            .map(|kind| self.kind_rate(kind))
            .fold(Rate::default(), |sum, rate| Rate {
                hits: sum.hits + rate.hits,
                total: sum.total + rate.total,
            })
    }

    /// Every rate the canary gives.
    pub fn rates(&self) -> Rates {
        let due = self.count(Kind::ToolCall, None);
        let missed = self.count(Kind::ToolCall, Some(Judgement::NoCall));
        let called = due - missed;
        let unexpected = self.count(Kind::NoToolCall, Some(Judgement::UnexpectedCall));
        let valid = self.count(Kind::ToolCall, Some(Judgement::Correct))
            + self.count(Kind::ToolCall, Some(Judgement::WrongCall));
        let f1_denominator = 2 * called + unexpected + missed;
        Rates {
            exact: self.family_rate(Family::Exact),
            tools: self.family_rate(Family::Tools),
            trigger_recall: Rate {
                hits: called,
                total: due,
            },
            trigger_precision: Rate {
                hits: called,
                total: called + unexpected,
            },
            trigger_f1: (f1_denominator > 0).then(|| 2.0 * called as f64 / f1_denominator as f64),
            schema: Rate {
                hits: valid,
                total: called,
            },
        }
    }
}

/// `hits` of `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// The answers that count for it.
    pub hits: u64,
    /// The answers it is a share of.
    pub total: u64,
}

impl Rate {
    /// hits ÷ total; `None` without answers.
    pub fn value(self) -> Option<f64> {
        (self.total > 0).then(|| self.hits as f64 / self.total as f64)
    }

    /// Its 95 % Wilson interval.
    pub fn interval(self) -> Option<(f64, f64)> {
        stats::wilson(self.hits, self.total, CONFIDENCE_ALPHA)
    }
}

/// Every rate of the canary over some runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Exact items answered right.
    pub exact: Rate,
    /// Tool items handled right (the right call, or rightly none).
    pub tools: Rate,
    /// Calls made of the calls due (trigger recall).
    pub trigger_recall: Rate,
    /// Calls due of the calls made (trigger precision).
    pub trigger_precision: Rate,
    /// The harmonic mean of trigger recall and precision (K2 Vendor Verifier's trigger F1).
    pub trigger_f1: Option<f64>,
    /// Calls due whose arguments were a JSON object valid under the tool's schema, of the
    /// calls due that were made (schema accuracy).
    pub schema: Rate,
}

/// A target's quality standing in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// The group's reference in every family it answered.
    Reference,
    /// With 95 % confidence at most `margin` below the reference in every family.
    Ok,
    /// Significantly below the reference in some family (Holm across the group).
    Below,
    /// Neither: more runs are needed to tell.
    Insufficient,
    /// No judged answer in the window.
    Unmeasured,
}

impl Standing {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Reference => "reference",
            Standing::Ok => "ok",
            Standing::Below => "below",
            Standing::Insufficient => "insufficient",
            Standing::Unmeasured => "unmeasured",
        }
    }
}

/// One family's comparison of a target with its group's reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The family.
    pub family: Family,
    /// The target's right answers.
    pub rate: Rate,
    /// The reference target.
    pub reference: String,
    /// The reference's right answers.
    pub reference_rate: Rate,
    /// Fisher's one-sided p-value (doubled when the reference was chosen from the data).
    pub p_value: f64,
    /// Rejected by Holm's correction across the group: significantly below.
    pub below: bool,
    /// Within `margin` of the reference with 95 % confidence.
    pub within_margin: bool,
    /// About how many more runs of the family's probe would settle it (80 % power), when
    /// it is neither below nor within the margin.
    pub runs_needed: Option<u64>,
}

/// What the canary says of one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Its standing.
    pub standing: Standing,
    /// Per family it answered, against the reference (none where it is the reference).
    pub comparisons: Vec<Comparison>,
    /// The lowest ratio of its rate to the reference's among the families it is below in
    /// (1 when it is below in none): what the weight's quality factor raises to its exponent.
    pub relative: f64,
}

/// A target of a group, for [`judge_group`].
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Target id.
    pub target: &'a str,
    /// Its judgements in the window.
    pub quality: &'a Quality,
    /// Marked `reference = true` in the config.
    pub reference: bool,
}

/// The verdict on every member of one group, in order.
pub fn judge_group(members: &[Member<'_>], config: &QualityConfig) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = members
        .iter()
        .map(|_| Verdict {
            standing: Standing::Unmeasured,
            comparisons: Vec::new(),
            relative: 1.0,
        })
        .collect();
    let mut answered = vec![false; members.len()];
    let mut is_reference = vec![true; members.len()];
    let mut tests: Vec<(usize, usize)> = Vec::new();
    for family in Family::ALL {
        let rates: Vec<Rate> = members
            .iter()
            .map(|m| m.quality.family_rate(family))
            .collect();
        let answering: Vec<usize> = (0..members.len()).filter(|&i| rates[i].total > 0).collect();
        let marked = answering.iter().copied().find(|&i| members[i].reference);
        let Some(reference) = marked.or_else(|| best(&answering, &rates)) else {
            continue;
        };
        let chosen_by_data = marked.is_none();
        answered[reference] = true;
        for &i in answering.iter().filter(|&&i| i != reference) {
            answered[i] = true;
            is_reference[i] = false;
            let (r, c) = (rates[reference], rates[i]);
            let p = stats::fisher_less(r.hits, r.total, c.hits, c.total);
            let p_value = if chosen_by_data {
                (2.0 * p).min(1.0)
            } else {
                p
            };
            verdicts[i].comparisons.push(Comparison {
                family,
                rate: c,
                reference: members[reference].target.to_owned(),
                reference_rate: r,
                p_value,
                below: false,
                within_margin: within_margin(r, c, config.margin),
                runs_needed: None,
            });
            tests.push((i, verdicts[i].comparisons.len() - 1));
        }
    }
    let p_values: Vec<f64> = tests
        .iter()
        .map(|&(i, j)| verdicts[i].comparisons[j].p_value)
        .collect();
    let level = config.alpha / tests.len().max(1) as f64;
    for (&(i, j), rejected) in tests.iter().zip(stats::holm(&p_values, config.alpha)) {
        let comparison = &mut verdicts[i].comparisons[j];
        comparison.below = rejected;
        if !rejected && !comparison.within_margin {
            comparison.runs_needed = Some(runs_needed(comparison, config.margin, level));
        }
    }
    for (i, verdict) in verdicts.iter_mut().enumerate() {
        verdict.standing = if !answered[i] {
            Standing::Unmeasured
        } else if is_reference[i] {
            Standing::Reference
        } else if verdict.comparisons.iter().any(|c| c.below) {
            Standing::Below
        } else if verdict.comparisons.iter().all(|c| c.within_margin) {
            Standing::Ok
        } else {
            Standing::Insufficient
        };
        verdict.relative = verdict
            .comparisons
            .iter()
            .filter(|c| c.below)
            .filter_map(|c| Some(c.rate.value()? / c.reference_rate.value()?))
            .fold(1.0, f64::min)
            .clamp(0.0, 1.0);
    }
    verdicts
}

/// The member with the highest Wilson lower bound (more answers break a tie).
fn best(answering: &[usize], rates: &[Rate]) -> Option<usize> {
    answering.iter().copied().max_by(|&a, &b| {
        let low = |i: usize| rates[i].interval().map_or(0.0, |(low, _)| low);
        low(a)
            .total_cmp(&low(b))
            .then(rates[a].total.cmp(&rates[b].total))
            .then(b.cmp(&a))
    })
}

/// Agresti–Caffo: one success and one failure added to each arm.
fn adjusted(rate: Rate) -> (f64, f64) {
    let n = rate.total as f64 + 2.0;
    ((rate.hits as f64 + 1.0) / n, n)
}

/// The 95 % upper bound of reference − candidate is below `margin`.
fn within_margin(reference: Rate, candidate: Rate, margin: f64) -> bool {
    let ((pr, nr), (pc, nc)) = (adjusted(reference), adjusted(candidate));
    let se = (pr * (1.0 - pr) / nr + pc * (1.0 - pc) / nc).sqrt();
    pr - pc + stats::z_upper(CONFIDENCE_ALPHA) * se < margin
}

/// More runs of the candidate (the reference growing alike) until the margin bound settles
/// it, or, when it already looks worse than the margin, until the test would flag it.
fn runs_needed(comparison: &Comparison, margin: f64, level: f64) -> u64 {
    let ((pr, _), (pc, _)) = (
        adjusted(comparison.reference_rate),
        adjusted(comparison.rate),
    );
    let room = margin - (pr - pc);
    let total = if room > 0.0 {
        let z = stats::z_upper(CONFIDENCE_ALPHA);
        (z * z * (pr * (1.0 - pr) + pc * (1.0 - pc)) / (room * room)).ceil() as u64
    } else {
        stats::runs_to_detect(pr, pc, level / 2.0, POWER).unwrap_or(0)
    };
    total.saturating_sub(comparison.rate.total).max(1)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    /// `right` of `total` exact answers and `tools_right` of `tools` tool-call answers.
    fn quality(right: u64, total: u64, tools_right: u64, tools: u64) -> Quality {
        let mut q = Quality::default();
        let mut put = |kind, judgement, count| {
            if count > 0 {
                q.kinds.entry(kind).or_default().insert(judgement, count);
            }
        };
        put(Kind::Arithmetic, Judgement::Correct, right);
        put(Kind::Arithmetic, Judgement::WrongAnswer, total - right);
        put(Kind::ToolCall, Judgement::Correct, tools_right);
        put(
            Kind::ToolCall,
            Judgement::SchemaMismatch,
            tools - tools_right,
        );
        q
    }

    fn standings(qualities: &[Quality], reference: Option<usize>) -> Vec<Standing> {
        let members: Vec<Member<'_>> = qualities
            .iter()
            .enumerate()
            .map(|(i, quality)| Member {
                target: ["a", "b", "c", "d"][i],
                quality,
                reference: reference == Some(i),
            })
            .collect();
        judge_group(&members, &QualityConfig::default())
            .into_iter()
            .map(|v| v.standing)
            .collect()
    }

    #[test]
    fn rates_follow_the_vendor_verifier_definitions() {
        let mut q = quality(9, 10, 6, 8);
        q.kinds
            .entry(Kind::ToolCall)
            .or_default()
            .insert(Judgement::NoCall, 2);
        q.kinds
            .entry(Kind::NoToolCall)
            .or_default()
            .extend([(Judgement::Correct, 3), (Judgement::UnexpectedCall, 1)]);
        let rates = q.rates();
        assert_eq!(rates.exact, Rate { hits: 9, total: 10 });
        assert_eq!(rates.tools, Rate { hits: 9, total: 14 });
        // 8 calls made of 10 due, 1 call when none was due.
        assert_eq!(rates.trigger_recall, Rate { hits: 8, total: 10 });
        assert_eq!(rates.trigger_precision, Rate { hits: 8, total: 9 });
        assert_eq!(rates.trigger_f1, Some(16.0 / 19.0));
        assert_eq!(rates.schema, Rate { hits: 6, total: 8 });
        let mut merged = q.clone();
        merged.merge(&q);
        assert_eq!(
            merged.rates().exact,
            Rate {
                hits: 18,
                total: 20
            }
        );
    }

    #[test]
    fn a_clearly_worse_host_is_below_and_an_equal_one_is_ok_or_insufficient() {
        use Standing::*;
        let faithful = quality(200, 200, 150, 150);
        let degraded = quality(160, 200, 135, 150);
        assert_eq!(
            standings(&[faithful.clone(), degraded], None),
            [Reference, Below]
        );
        let equal = quality(199, 200, 150, 150);
        assert_eq!(standings(&[faithful.clone(), equal], None), [Reference, Ok]);
        let few = quality(9, 10, 0, 0);
        assert_eq!(
            standings(&[faithful.clone(), few], None),
            [Reference, Insufficient]
        );
        assert_eq!(
            standings(&[faithful, Quality::default()], Some(0)),
            [Reference, Unmeasured]
        );
    }

    #[test]
    fn the_marked_reference_is_compared_with_even_when_it_is_worse() {
        let verdicts = judge_group(
            &[
                Member {
                    target: "ref",
                    quality: &quality(90, 100, 0, 0),
                    reference: true,
                },
                Member {
                    target: "other",
                    quality: &quality(100, 100, 0, 0),
                    reference: false,
                },
            ],
            &QualityConfig::default(),
        );
        assert_eq!(verdicts[0].standing, Standing::Reference);
        assert_eq!(verdicts[1].standing, Standing::Ok);
        assert_eq!(verdicts[1].comparisons[0].reference, "ref");
    }

    /// Draws `n` exact answers right at `p`.
    fn draw(rng: &mut SmallRng, p: f64, n: u64) -> Quality {
        let right = (0..n).filter(|_| rng.random_bool(p)).count() as u64;
        quality(right, n, 0, 0)
    }

    #[test]
    fn two_equally_faithful_hosts_are_almost_never_flagged() {
        // 200 seeds of two hosts both right 90 % of the time, 200 answers each: the
        // family-wise rate of a wrong flag must stay within α = 1 %.
        let flagged = (0..200u64)
            .filter(|&seed| {
                let mut rng = SmallRng::seed_from_u64(seed);
                let a = draw(&mut rng, 0.9, 200);
                let b = draw(&mut rng, 0.9, 200);
                standings(&[a, b], None).contains(&Standing::Below)
            })
            .count();
        eprintln!("two equal hosts (90 %, 200 answers each): {flagged} of 200 seeds flagged");
        assert!(flagged <= 2, "{flagged} of 200 flagged");
    }

    #[test]
    fn the_power_calculation_predicts_detection() {
        // Faithful (100 %) against degraded (80 %), reference chosen from the data: the test
        // runs at α/2 = 0.005; 80 % power takes n runs per host by Fleiss's formula.
        let n = stats::runs_to_detect(1.0, 0.8, 0.005, 0.8).unwrap();
        assert_eq!(n, 52);
        let detected = (0..200u64)
            .filter(|&seed| {
                let mut rng = SmallRng::seed_from_u64(seed);
                let a = draw(&mut rng, 1.0, n);
                let b = draw(&mut rng, 0.8, n);
                standings(&[a, b], None)[1] == Standing::Below
            })
            .count();
        eprintln!("100 % against 80 % at n = {n}: detected in {detected} of 200 seeds");
        assert!(detected >= 160, "detected in {detected} of 200 at n = {n}");
    }
}
