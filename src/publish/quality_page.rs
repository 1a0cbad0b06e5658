//! The quality canary on the pages: the index's quality cell, and the target page's section
//! (rates with their intervals against the reference, the worst item kinds, the daily trend).

use super::Snapshot;
use super::quality::{FeedQuality, FeedRate};
use super::text::day;
use crate::aggregate::quality::Standing;
use crate::quality::Family;

/// Days the trend table covers.
const TREND_DAYS: usize = 30;

/// The index's quality cell of a target.
#[derive(Clone)]
pub(super) struct Cell {
    /// `ok`, `below`, `reference`, `insufficient` or `–`.
    pub word: &'static str,
    /// The state colour class.
    pub class: &'static str,
    /// The rates in short: `exact 97.5 % · tools 100 %`.
    pub rates: String,
    /// Flagged below its reference.
    pub below: bool,
}

fn share(rate: &FeedRate) -> String {
    rate.rate
        .map_or("–".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

fn interval(rate: &FeedRate) -> String {
    match (rate.low, rate.high) {
        (Some(low), Some(high)) => format!("{:.1}–{:.1} %", low * 100.0, high * 100.0),
        _ => "–".to_owned(),
    }
}

/// The quality cell of the index row.
pub(super) fn cell(quality: &FeedQuality) -> Cell {
    let (word, class) = match quality.standing {
        Standing::Reference => ("reference", "ok"),
        Standing::Ok => ("ok", "ok"),
        Standing::Below => ("below", "down"),
        Standing::Insufficient => ("too few runs", "unknown"),
        Standing::Unmeasured => ("–", "unknown"),
    };
    let rates: Vec<String> = [("exact", &quality.exact), ("tools", &quality.tools)]
        .into_iter()
        .filter(|(_, rate)| rate.answers > 0)
        .map(|(name, rate)| format!("{name} {}", share(rate)))
        .collect();
    Cell {
        word,
        class,
        rates: rates.join(" · "),
        below: quality.standing == Standing::Below,
    }
}

/// One line of the section's table.
pub(super) struct Line {
    pub measure: &'static str,
    pub right: u64,
    pub answers: u64,
    pub rate: String,
    pub interval: String,
    /// The reference's rate, and the test's p-value and verdict, for a compared family.
    pub reference: String,
    pub p_value: String,
    pub verdict: String,
}

/// The target page's quality section.
pub(super) struct Section {
    pub window: String,
    pub summary: String,
    pub lines: Vec<Line>,
    pub trigger_f1: String,
    /// Kind, right, answers, rate, interval: worst first.
    pub kinds: Vec<(&'static str, u64, u64, String, String)>,
    /// Day, exact right of answers, tools right of answers: newest first.
    pub trend: Vec<(String, String, String)>,
    /// The factor its weight took.
    pub factor: String,
}

/// The section, or `None` when the target has no quality answer.
pub(super) fn section(quality: &FeedQuality, snapshot: &Snapshot, target: &str) -> Option<Section> {
    let trend = trend(snapshot, target);
    if quality.standing == Standing::Unmeasured && trend.is_empty() {
        return None;
    }
    let line = |measure, rate: &FeedRate, family: Option<Family>| {
        let compared = family.and_then(|family| {
            quality
                .comparisons
                .iter()
                .find(|c| c.family == family.as_str())
        });
        Line {
            measure,
            right: rate.right,
            answers: rate.answers,
            rate: share(rate),
            interval: interval(rate),
            reference: compared.map_or(String::new(), |c| {
                format!("{} ({})", share(&c.reference_rate), c.reference)
            }),
            p_value: compared.map_or(String::new(), |c| format!("{:.2e}", c.p_value)),
            verdict: compared.map_or(String::new(), |c| {
                if c.below {
                    "below".to_owned()
                } else if c.within_margin {
                    "within margin".to_owned()
                } else {
                    c.runs_needed
                        .map_or("undecided".to_owned(), |n| format!("~{n} more runs"))
                }
            }),
        }
    };
    Some(Section {
        window: quality.window.clone(),
        summary: quality.summary.clone(),
        lines: vec![
            line("exact answers right", &quality.exact, Some(Family::Exact)),
            line("tool items right", &quality.tools, Some(Family::Tools)),
            line(
                "calls made when due (trigger recall)",
                &quality.trigger_recall,
                None,
            ),
            line(
                "calls that were due (trigger precision)",
                &quality.trigger_precision,
                None,
            ),
            line(
                "valid arguments (schema accuracy)",
                &quality.schema_accuracy,
                None,
            ),
        ],
        trigger_f1: quality
            .trigger_f1
            .map_or("–".to_owned(), |f1| format!("{f1:.3}")),
        kinds: quality
            .kinds
            .iter()
            .map(|k| {
                (
                    k.kind,
                    k.rate.right,
                    k.rate.answers,
                    share(&k.rate),
                    interval(&k.rate),
                )
            })
            .collect(),
        trend,
        factor: format!("{}", quality.factor),
    })
}

/// The daily right shares of the last [`TREND_DAYS`] days with answers, newest first.
fn trend(snapshot: &Snapshot, target: &str) -> Vec<(String, String, String)> {
    let Some(days) = snapshot.daily.get(target) else {
        return Vec::new();
    };
    days.iter()
        .rev()
        .filter(|(_, scalars)| !scalars.quality.is_empty())
        .take(TREND_DAYS)
        .map(|(at, scalars)| {
            let of = |family| {
                let rate = scalars.quality.family_rate(family);
                match rate.value() {
                    Some(v) => format!("{:.1} % of {}", v * 100.0, rate.total),
                    None => "–".to_owned(),
                }
            };
            (day(at), of(Family::Exact), of(Family::Tools))
        })
        .collect()
}
