//! Service-level objectives: how a target's window measures up to its `slo`, and how much
//! of its error budget is left.
//!
//! Availability: the share of ok runs among ok runs and provider faults (rate limits and
//! other neutral outcomes do not count), against `availability`; its budget is the faults
//! the objective allows, `(1 − objective) × counted runs`. Latency: the share of successful
//! streamed runs whose TTFT is within `ttft_p95_ms`, against 95 % (the p95 is within the
//! bound exactly when that share is at least 95 %); its budget is 5 % of those runs.

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
}
