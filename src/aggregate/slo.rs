//! Service-level objectives: how a target's window measures up to its `slo`, and how much
//! of its error budget is left.
//!
//! Availability: the share of ok runs among ok runs and provider faults (rate limits and
//! other neutral outcomes do not count), against `availability`; its budget is the faults
//! the objective allows, `(1 − objective) × counted runs`. Latency: the share of successful
//! streamed runs whose TTFT is within `ttft_p95_ms`, against 95 % (the p95 is within the
//! bound exactly when that share is at least 95 %); its budget is 5 % of those runs.
//!
//! Burn rates ([`Burn`]), for alerts, follow the multi-window rule of Google's SRE workbook
//! (chapter "Alerting on SLOs"): the rate at which the budget is spent, as a multiple of the
//! rate that would spend it exactly over the window. A **fast burn** is 14.4× over both the
//! last hour and the last 5 minutes (2 % of a 30-day budget in an hour); a **slow burn** 6×
//! over both the last 6 hours and the last 30 minutes (5 % in 6 hours). The long window
//! makes it significant, the short one makes it stop as soon as the burning does. Runs are
//! kept by the minute for 6 hours, so the windows are exact to the minute.

use serde::Serialize;

use super::WindowStats;
use crate::config::{LATENCY_BUDGET, Slo};

/// One objective over the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Objective {
    /// The share required.
    pub objective: f64,
    /// Good runs.
    pub good: u64,
    /// Runs counted.
    pub total: u64,
    /// good ÷ total; `None` without runs.
    pub attained: Option<f64>,
    /// Whether the attained share reaches the objective; `None` without runs.
    pub met: Option<bool>,
    /// The share of the error budget not yet spent (below 0 when overspent); `None` without
    /// runs.
    pub budget_left: Option<f64>,
}

impl Objective {
    fn of(objective: f64, good: u64, total: u64) -> Objective {
        let attained = (total > 0).then(|| good as f64 / total as f64);
        let allowed = (1.0 - objective) * total as f64;
        Objective {
            objective,
            good,
            total,
            attained,
            met: attained.map(|a| a >= objective),
            budget_left: (total > 0 && allowed > 0.0)
                .then(|| 1.0 - (total - good) as f64 / allowed),
        }
    }
}

/// A target's SLO over its window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloStatus {
    /// The window (`24h`, `7d`, `30d`).
    pub window: String,
    /// The availability objective, if it has one.
    pub availability: Option<Objective>,
    /// The latency objective (TTFT within `ttft_p95_ms`), if it has one.
    pub ttft: Option<Objective>,
    /// The bound of the latency objective, ms.
    pub ttft_p95_ms: Option<f64>,
}

impl SloStatus {
    /// Every objective met (or not yet measured).
    pub fn met(&self) -> bool {
        [self.availability, self.ttft]
            .iter()
            .flatten()
            .all(|o| o.met != Some(false))
    }
}

/// `slo` against `stats` (the stats of the SLO's window).
pub fn status(slo: &Slo, stats: &WindowStats) -> SloStatus {
    SloStatus {
        window: slo.window.clone(),
        availability: slo
            .availability
            .map(|objective| Objective::of(objective, stats.ok, stats.ok + stats.failures)),
        ttft: slo
            .ttft_p95_ms
            .and(stats.ttft_within)
            .map(|(within, all)| Objective::of(1.0 - LATENCY_BUDGET, within, all)),
        ttft_p95_ms: slo.ttft_p95_ms,
    }
}

/// Burn-rate alert thresholds: (long window, short window, factor).
pub const FAST_BURN: (i64, i64, f64) = (3_600_000, 300_000, 14.4);
/// The slow burn's.
pub const SLOW_BURN: (i64, i64, f64) = (6 * 3_600_000, 1_800_000, 6.0);

/// One minute's runs, for burn rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Minute {
    /// Unix minute.
    at: i64,
    /// Ok runs and provider faults (availability).
    ok: u32,
    failed: u32,
    /// Successful streamed runs within and above the TTFT bound (latency).
    within: u32,
    over: u32,
}

/// The last 6 hours of a target's runs by the minute: what burn rates are read from. Kept
/// in memory only, rebuilt from the stored results when the writer starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Burn {
    minutes: std::collections::VecDeque<Minute>,
}

impl Burn {
    /// Counts one run at unix ms `at_ms` for `slo`.
    pub fn add(&mut self, record: &crate::result::ResultRecord, at_ms: i64, slo: &Slo) {
        use super::health::{Verdict, verdict};
        let minute = at_ms.div_euclid(60_000);
        let index = match self.minutes.iter().rposition(|m| m.at == minute) {
            Some(index) => index,
            None => {
                let at = self.minutes.partition_point(|m| m.at < minute);
                self.minutes.insert(
                    at,
                    Minute {
                        at: minute,
                        ..Minute::default()
                    },
                );
                at
            }
        };
        let slot = &mut self.minutes[index];
        match verdict(record) {
            Verdict::Success => slot.ok += 1,
            Verdict::Failure => slot.failed += 1,
            Verdict::Neutral => {}
        }
        if let (Some(bound), Some(ttft)) = (slo.ttft_p95_ms, record.ttft_ms)
            && record.outcome == crate::result::Outcome::Ok
        {
            if ttft <= bound {
                slot.within += 1;
            } else {
                slot.over += 1;
            }
        }
        let oldest = minute - SLOW_BURN.0 / 60_000;
        while self.minutes.front().is_some_and(|m| m.at <= oldest) {
            self.minutes.pop_front();
        }
    }

    /// The highest burn rate of `slo`'s objectives over the `window_ms` before `now_ms`.
    fn rate(&self, slo: &Slo, now_ms: i64, window_ms: i64) -> f64 {
        let from = (now_ms - window_ms).div_euclid(60_000);
        let mut sum = Minute::default();
        for m in self.minutes.iter().filter(|m| m.at > from) {
            sum.ok += m.ok;
            sum.failed += m.failed;
            sum.within += m.within;
            sum.over += m.over;
        }
        let burn = |bad: u32, all: u32, allowed: f64| {
            if all == 0 || allowed <= 0.0 {
                0.0
            } else {
                f64::from(bad) / f64::from(all) / allowed
            }
        };
        let availability = slo
            .availability
            .map_or(0.0, |a| burn(sum.failed, sum.ok + sum.failed, 1.0 - a));
        let latency = slo.ttft_p95_ms.map_or(0.0, |_| {
            burn(sum.over, sum.within + sum.over, LATENCY_BUDGET)
        });
        availability.max(latency)
    }

    /// Whether `slo` burns at `rule` (long window, short window, factor) at `now_ms`: the
    /// burn rate at least the factor over both windows.
    /// Only once runs cover the whole long window: a target probed for ten minutes has no
    /// hour to judge.
    pub fn burning(&self, slo: &Slo, now_ms: i64, rule: (i64, i64, f64)) -> bool {
        let (long, short, factor) = rule;
        let covered = self
            .minutes
            .front()
            .is_some_and(|m| m.at * 60_000 <= now_ms - long + 60_000);
        covered && self.rate(slo, now_ms, long) >= factor && self.rate(slo, now_ms, short) >= factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_what_the_objective_allows() {
        // 99 %: 1,000 counted runs allow 10 faults; 4 spent leave 60 %.
        let o = Objective::of(0.99, 996, 1000);
        assert_eq!(o.met, Some(true));
        assert!((o.budget_left.unwrap() - 0.6).abs() < 1e-9);
        let over = Objective::of(0.99, 980, 1000);
        assert_eq!(over.met, Some(false));
        assert!(
            (over.budget_left.unwrap() + 1.0).abs() < 1e-9,
            "twice the budget spent"
        );
        assert_eq!(Objective::of(0.99, 0, 0).attained, None);
    }

    /// Runs a minute apart for `minutes`, failing where `fails(minute)`; whether each rule
    /// burns at the end.
    fn burns(minutes: i64, fails: impl Fn(i64) -> bool) -> (bool, bool) {
        use crate::result::{Outcome, sample};
        let slo = Slo {
            availability: Some(0.99),
            ttft_p95_ms: None,
            window: "30d".into(),
        };
        let mut burn = Burn::default();
        for m in 0..minutes {
            let outcome = if fails(m) {
                Outcome::ServerError
            } else {
                Outcome::Ok
            };
            burn.add(&sample(outcome), m * 60_000, &slo);
        }
        let now = (minutes - 1) * 60_000 + 1;
        (
            burn.burning(&slo, now, FAST_BURN),
            burn.burning(&slo, now, SLOW_BURN),
        )
    }

    #[test]
    fn a_fast_burn_and_a_slow_one_fire_their_own_rule() {
        // Six quiet hours, then twenty minutes failing one run in two: 10 of the last 60
        // (16.7 % = 16.7×) and half of the last 5; over 6 hours only 2.8×.
        assert_eq!(burns(380, |m| m >= 360 && m % 2 == 0), (true, false));
        // One run in twelve failing for six hours: 8.3× over 6 hours and over 30 minutes,
        // but never 14.4× over an hour.
        assert_eq!(burns(360, |m| m % 12 == 0), (false, true));
        // A burst that ended: the short windows are quiet again.
        assert_eq!(burns(420, |m| (360..380).contains(&m)), (false, false));
    }
}
