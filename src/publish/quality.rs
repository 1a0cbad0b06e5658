//! The quality canary as published: each target's standing against its group's reference
//! (`aggregate::quality::judge_group` over the `[quality] window`), its rates with 95 %
//! Wilson intervals, the worst item kinds, and the factor its weight takes.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::aggregate::quality::{self, Member, Quality, Rate, Standing};
use crate::aggregate::{TargetStats, Window};
use crate::config::Config;
use crate::quality::{Family, Kind};

/// A rate as published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeedRate {
    /// Answers that count for it.
    pub right: u64,
    /// Answers it is a share of.
    pub answers: u64,
    /// right ÷ answers.
    pub rate: Option<f64>,
    /// The 95 % Wilson interval's lower bound.
    pub low: Option<f64>,
    /// Its upper bound.
    pub high: Option<f64>,
}

impl From<Rate> for FeedRate {
    fn from(rate: Rate) -> FeedRate {
        let interval = rate.interval();
        let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
        FeedRate {
            right: rate.hits,
            answers: rate.total,
            rate: rate.value().map(round),
            low: interval.map(|(low, _)| round(low)),
            high: interval.map(|(_, high)| round(high)),
        }
    }
}

/// One family against the reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedComparison {
    /// `exact` or `tools`.
    pub family: &'static str,
    /// The reference target.
    pub reference: String,
    /// The reference's right answers.
    pub reference_rate: FeedRate,
    /// Fisher's one-sided p-value that this target is worse (doubled when the reference was
    /// chosen from the data).
    pub p_value: f64,
    /// Significantly below, with Holm's correction across the group.
    pub below: bool,
    /// At most `margin` below the reference, with 95 % confidence.
    pub within_margin: bool,
    /// About how many more runs of the family's probe would settle it.
    pub runs_needed: Option<u64>,
}

/// An item kind's right answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedKind {
    /// The kind (`arithmetic`, `tool_call`, …).
    pub kind: &'static str,
    /// Its right answers.
    pub rate: FeedRate,
}

/// A target's quality in the feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedQuality {
    /// `reference`, `ok`, `below`, `insufficient` or `unmeasured`.
    pub standing: Standing,
    /// The window judged.
    pub window: String,
    /// Exact items answered right.
    pub exact: FeedRate,
    /// Tool items handled right.
    pub tools: FeedRate,
    /// Calls made of the calls due.
    pub trigger_recall: FeedRate,
    /// Calls due of the calls made.
    pub trigger_precision: FeedRate,
    /// Harmonic mean of trigger recall and precision.
    pub trigger_f1: Option<f64>,
    /// Calls due with arguments valid under the tool's schema, of those made.
    pub schema_accuracy: FeedRate,
    /// Per family it answered, against the group's reference.
    pub comparisons: Vec<FeedComparison>,
    /// Its item kinds, worst share of right answers first.
    pub kinds: Vec<FeedKind>,
    /// What its routing score is multiplied by (below: its rate relative to the reference,
    /// raised to `[publish.weights] quality`; otherwise 1).
    pub factor: f64,
    /// In words, for the page and the feed's notes.
    pub summary: String,
}

/// Every target's quality, by target id.
pub fn verdicts(config: &Config, stats: &[TargetStats]) -> HashMap<String, FeedQuality> {
    let window = Window::from_name(&config.quality.window).unwrap_or(Window::D7);
    let empty = Quality::default();
    let by_id: HashMap<&str, &Quality> = stats
        .iter()
        .map(|s| {
            let quality = s.window(window).map_or(&empty, |w| &w.quality);
            (s.target.as_str(), quality)
        })
        .collect();
    let mut groups: BTreeMap<&str, Vec<Member<'_>>> = BTreeMap::new();
    for target in &config.targets {
        groups
            .entry(target.model.group.as_str())
            .or_default()
            .push(Member {
                target: &target.id,
                quality: by_id.get(target.id.as_str()).copied().unwrap_or(&empty),
                reference: target.model.reference,
            });
    }
    let mut published = HashMap::new();
    for members in groups.values() {
        for (member, verdict) in members
            .iter()
            .zip(quality::judge_group(members, &config.quality))
        {
            let rates = member.quality.rates();
            let factor = verdict
                .relative
                .powf(config.publish.weights.quality)
                .clamp(0.0, 1.0);
            let mut kinds: Vec<(Kind, Rate)> = Kind::ALL
                .into_iter()
                .map(|kind| (kind, member.quality.kind_rate(kind)))
                .filter(|(_, rate)| rate.total > 0)
                .collect();
            kinds.sort_by(|a, b| {
                let share = |r: &Rate| r.value().unwrap_or(1.0);
                share(&a.1).total_cmp(&share(&b.1))
            });
            let summary = summary(&verdict, &config.quality.window);
            published.insert(
                member.target.to_owned(),
                FeedQuality {
                    standing: verdict.standing,
                    window: window.as_str().to_owned(),
                    exact: rates.exact.into(),
                    tools: rates.tools.into(),
                    trigger_recall: rates.trigger_recall.into(),
                    trigger_precision: rates.trigger_precision.into(),
                    trigger_f1: rates.trigger_f1.map(|f| (f * 10_000.0).round() / 10_000.0),
                    schema_accuracy: rates.schema.into(),
                    comparisons: verdict
                        .comparisons
                        .iter()
                        .map(|c| FeedComparison {
                            family: c.family.as_str(),
                            reference: c.reference.clone(),
                            reference_rate: c.reference_rate.into(),
                            p_value: c.p_value,
                            below: c.below,
                            within_margin: c.within_margin,
                            runs_needed: c.runs_needed,
                        })
                        .collect(),
                    kinds: kinds
                        .into_iter()
                        .map(|(kind, rate)| FeedKind {
                            kind: kind.as_str(),
                            rate: rate.into(),
                        })
                        .collect(),
                    factor: (factor * 1000.0).round() / 1000.0,
                    summary,
                },
            );
        }
    }
    published
}

/// A target's quality before any answer, for unit tests.
#[cfg(test)]
pub fn unmeasured() -> FeedQuality {
    let none = FeedRate::from(Rate::default());
    FeedQuality {
        standing: Standing::Unmeasured,
        window: "7d".to_owned(),
        exact: none,
        tools: none,
        trigger_recall: none,
        trigger_precision: none,
        trigger_f1: None,
        schema_accuracy: none,
        comparisons: Vec::new(),
        kinds: Vec::new(),
        factor: 1.0,
        summary: String::new(),
    }
}

fn family_words(family: Family) -> &'static str {
    match family {
        Family::Exact => "exact answers",
        Family::Tools => "tool calls",
    }
}

fn percent(rate: Rate) -> String {
    rate.value()
        .map_or("–".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

/// The verdict in one sentence.
fn summary(verdict: &quality::Verdict, window: &str) -> String {
    match verdict.standing {
        Standing::Unmeasured => format!("no quality canary answer in {window}"),
        Standing::Reference => "the group's quality reference".to_owned(),
        Standing::Below => {
            let worst: Vec<String> = verdict
                .comparisons
                .iter()
                .filter(|c| c.below)
                .map(|c| {
                    format!(
                        "{} right {} of {} against {} for {} (p = {:.2e})",
                        family_words(c.family),
                        percent(c.rate),
                        c.rate.total,
                        percent(c.reference_rate),
                        c.reference,
                        c.p_value
                    )
                })
                .collect();
            format!("quality below its reference: {}", worst.join("; "))
        }
        Standing::Ok => format!(
            "quality within the margin of its reference ({})",
            verdict
                .comparisons
                .iter()
                .map(|c| format!("{} {}", family_words(c.family), percent(c.rate)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Standing::Insufficient => {
            let needed: Vec<String> = verdict
                .comparisons
                .iter()
                .filter_map(|c| {
                    let probe = match c.family {
                        Family::Exact => "quality",
                        Family::Tools => "quality-tools",
                    };
                    c.runs_needed
                        .map(|n| format!("about {n} more {probe} runs"))
                })
                .collect();
            format!(
                "too few answers to tell its quality from its reference's: {}",
                needed.join(", ")
            )
        }
    }
}
