//! `feed.json`: the routing feed gateways read, and the weight formula behind it.
//!
//! Within each route group, every target that is not down gets
//!
//! ```text
//! score = availability^a × (fastest TTFT p50 / TTFT p50)^l × ((cheapest + 0.1) / (price + 0.1))^p
//!         × (1 − rate-limited share)^r
//! weight = score / Σ scores of the group
//! ```
//!
//! with the exponents of `[publish.weights]` (default a = 4, l = 1, p = 0.5, r = 1). A target
//! missing a figure (no runs yet, no price) takes a neutral 0.5 for that factor (1 for a
//! missing price); a down target gets weight 0; when every score of a group is 0 the
//! targets that are not down share equally. The feed states the formula and its parameters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aggregate::health::State;
use crate::aggregate::{Percentiles, TargetStats, Window};
use crate::capability::Capabilities;
use crate::config::{Config, Target, WeightParams};

/// USD per million tokens added to every price before prices are compared.
pub const PRICE_FLOOR: f64 = 0.1;

/// The feed's format version; a change that breaks readers bumps it.
pub const FEED_VERSION: u32 = 1;

/// The whole feed.
#[derive(Debug, Clone, Serialize)]
pub struct Feed {
    /// Format version.
    pub version: u32,
    /// RFC 3339 UTC.
    pub generated_at: String,
    /// The window the figures cover.
    pub window: String,
    /// How weights are computed.
    pub weight_formula: WeightFormula,
    /// Every target, grouped by route group then ranked.
    pub targets: Vec<FeedTarget>,
}

/// The formula, stated.
#[derive(Debug, Clone, Serialize)]
pub struct WeightFormula {
    /// In words.
    pub expression: String,
    /// The exponents.
    pub parameters: WeightParams,
}

/// Prices, USD per million tokens.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Price {
    /// Input.
    pub input_per_mtok: Option<f64>,
    /// Output.
    pub output_per_mtok: Option<f64>,
}

/// One target in the feed.
#[derive(Debug, Clone, Serialize)]
pub struct FeedTarget {
    /// `provider/model`.
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// Model id.
    pub model: String,
    /// Route group.
    pub group: String,
    /// healthy / degraded / down / unknown.
    pub state: State,
    /// ok ÷ (ok + provider faults) in the window.
    pub availability: Option<f64>,
    /// Provider faults ÷ runs in the window.
    pub error_rate: Option<f64>,
    /// Rate-limited runs ÷ runs in the window.
    pub rate_limited_rate: Option<f64>,
    /// TTFT percentiles, ms.
    pub ttft_ms: Percentiles,
    /// E2E percentiles, ms (over every probe; compare within one probe on the pages).
    pub e2e_ms: Percentiles,
    /// Output speed percentiles, tokens/s.
    pub tokens_per_s: Percentiles,
    /// Capability flags.
    pub capabilities: Capabilities,
    /// Prices.
    pub price: Price,
    /// Runs in the window.
    pub samples: u64,
    /// RFC 3339 of the latest ok run (any window).
    pub last_ok: Option<String>,
    /// The latest failure (any window): time and text.
    pub last_error: Option<LastError>,
    /// Share of its group's traffic; 0 when down.
    pub weight: f64,
    /// 1 = the highest weight in its group.
    pub rank: u32,
}

/// A failure, for the feed.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// RFC 3339.
    pub at: String,
    /// `outcome: message`.
    pub message: String,
}

/// RFC 3339 (ms, UTC) of unix ms.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The price the weight compares: 3 input tokens to 1 output token, as chat traffic is.
fn blended_price(target: &Target) -> Option<f64> {
    match (target.model.input_price, target.model.output_price) {
        (None, None) => None,
        (input, output) => Some((3.0 * input.unwrap_or(0.0) + output.unwrap_or(0.0)) / 4.0),
    }
}

/// Builds the feed from `stats` (one per target of `config`, from `aggregate::summarize`).
pub fn build(config: &Config, stats: &[TargetStats], generated_ms: i64) -> Feed {
    let window = Window::from_name(&config.publish.window).unwrap_or(Window::H1);
    let params = config.publish.weights;
    let mut rows: Vec<(FeedTarget, f64)> = Vec::new();
    for target in &config.targets {
        let Some(stat) = stats.iter().find(|s| s.target == target.id) else {
            continue;
        };
        let in_window = stat.window(window);
        let longest = stat.window(Window::D30);
        let attempts = in_window.map_or(0, |w| w.attempts);
        let share = |count: u64| (attempts > 0).then(|| count as f64 / attempts as f64);
        let latency = in_window.map(|w| &w.latency);
        let e2e = in_window
            .and_then(|w| w.by_probe.values().max_by_key(|l| l.e2e_ms.count))
            .map(|l| l.e2e_ms.clone())
            .unwrap_or_default();
        let feed_target = FeedTarget {
            id: target.id.clone(),
            provider: target.provider.name.clone(),
            model: target.model.id.clone(),
            group: target.model.group.clone(),
            state: stat.state,
            availability: in_window.and_then(|w| w.availability),
            error_rate: share(in_window.map_or(0, |w| w.failures)),
            rate_limited_rate: share(in_window.map_or(0, |w| w.rate_limited)),
            ttft_ms: latency.map(|l| l.ttft_ms.clone()).unwrap_or_default(),
            e2e_ms: e2e,
            tokens_per_s: latency.map(|l| l.tokens_per_s.clone()).unwrap_or_default(),
            capabilities: longest.map(|w| w.capabilities).unwrap_or_default(),
            price: Price {
                input_per_mtok: target.model.input_price,
                output_per_mtok: target.model.output_price,
            },
            samples: attempts,
            last_ok: longest.and_then(|w| w.last_ok_ms).map(rfc3339),
            last_error: longest
                .and_then(|w| w.last_error.as_ref())
                .map(|(at, message)| LastError {
                    at: rfc3339(*at),
                    message: message.clone(),
                }),
            weight: 0.0,
            rank: 0,
        };
        rows.push((feed_target, blended_price(target).unwrap_or(f64::NAN)));
    }
    assign_weights(&mut rows, &params);
    rows.sort_by(|(a, _), (b, _)| a.group.cmp(&b.group).then(a.rank.cmp(&b.rank)));
    Feed {
        version: FEED_VERSION,
        generated_at: rfc3339(generated_ms),
        window: window.as_str().to_owned(),
        weight_formula: WeightFormula {
            expression: "weight = score / sum(scores in group); score = availability^availability \
                         × (fastest ttft_p50 in group / ttft_p50)^latency × ((cheapest price in \
                         group + 0.1) / (price + 0.1))^price × (1 − rate_limited_rate)^rate_limit; price = \
                         (3 × input + output) / 4; a missing figure counts 0.5 (a missing price \
                         1); down targets get 0; all-zero groups share equally"
                .to_owned(),
            parameters: params,
        },
        targets: rows.into_iter().map(|(target, _)| target).collect(),
    }
}

/// Sets `weight` and `rank` of every row (row, blended price or NaN), group by group.
fn assign_weights(rows: &mut [(FeedTarget, f64)], params: &WeightParams) {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (target, _)) in rows.iter().enumerate() {
        groups.entry(target.group.clone()).or_default().push(i);
    }
    for members in groups.values() {
        let up: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| rows[i].0.state != State::Down)
            .collect();
        let fastest = up
            .iter()
            .filter_map(|&i| rows[i].0.ttft_ms.p50)
            .fold(f64::INFINITY, f64::min);
        let cheapest = up
            .iter()
            .map(|&i| rows[i].1)
            .filter(|p| p.is_finite())
            .fold(f64::INFINITY, f64::min);
        let scores: Vec<f64> = up
            .iter()
            .map(|&i| {
                let (target, price) = &rows[i];
                let availability = target.availability.unwrap_or(0.5);
                let speed = target
                    .ttft_ms
                    .p50
                    .filter(|p| *p > 0.0)
                    .map_or(0.5, |p| fastest / p);
                // A small floor keeps a free endpoint from taking every share.
                let cheapness = if price.is_finite() {
                    (cheapest + PRICE_FLOOR) / (price + PRICE_FLOOR)
                } else {
                    1.0
                };
                let not_limited = 1.0 - target.rate_limited_rate.unwrap_or(0.0);
                let score = availability.powf(params.availability)
                    * speed.powf(params.latency)
                    * cheapness.powf(params.price)
                    * not_limited.powf(params.rate_limit);
                if score.is_finite() {
                    score.max(0.0)
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = scores.iter().sum();
        for (k, &i) in up.iter().enumerate() {
            rows[i].0.weight = if total > 0.0 {
                scores[k] / total
            } else {
                1.0 / up.len() as f64
            };
        }
        let mut ranked = members.clone();
        ranked.sort_by(|&a, &b| {
            rows[b]
                .0
                .weight
                .total_cmp(&rows[a].0.weight)
                .then(rows[a].0.id.cmp(&rows[b].0.id))
        });
        for (rank, i) in ranked.into_iter().enumerate() {
            rows[i].0.rank = rank as u32 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        id: &str,
        group: &str,
        state: State,
        availability: f64,
        ttft: f64,
        price: f64,
    ) -> (FeedTarget, f64) {
        (
            FeedTarget {
                id: id.into(),
                provider: "p".into(),
                model: id.into(),
                group: group.into(),
                state,
                availability: Some(availability),
                error_rate: Some(1.0 - availability),
                rate_limited_rate: Some(0.0),
                ttft_ms: Percentiles {
                    count: 10,
                    p50: Some(ttft),
                    ..Percentiles::default()
                },
                e2e_ms: Percentiles::default(),
                tokens_per_s: Percentiles::default(),
                capabilities: Capabilities::default(),
                price: Price {
                    input_per_mtok: Some(price),
                    output_per_mtok: Some(price),
                },
                samples: 10,
                last_ok: None,
                last_error: None,
                weight: 0.0,
                rank: 0,
            },
            price,
        )
    }

    #[test]
    fn weights_sum_to_one_per_group_and_down_gets_zero() {
        let mut rows = vec![
            row("a", "g1", State::Healthy, 1.0, 100.0, 1.0),
            row("b", "g1", State::Degraded, 0.9, 200.0, 1.0),
            row("c", "g1", State::Down, 0.0, 100.0, 1.0),
            row("d", "g2", State::Unknown, 1.0, 100.0, 1.0),
        ];
        assign_weights(&mut rows, &WeightParams::default());
        let weight = |id: &str| rows.iter().find(|(t, _)| t.id == id).unwrap().0.weight;
        assert!((weight("a") + weight("b") - 1.0).abs() < 1e-12);
        assert_eq!(weight("c"), 0.0);
        assert_eq!(weight("d"), 1.0);
        // a: 1 × 1 × 1; b: 0.9^4 × 0.5 = 0.328…
        let b = 0.9f64.powi(4) * 0.5;
        assert!((weight("a") - 1.0 / (1.0 + b)).abs() < 1e-12);
        let rank = |id: &str| rows.iter().find(|(t, _)| t.id == id).unwrap().0.rank;
        assert_eq!((rank("a"), rank("b"), rank("c")), (1, 2, 3));
    }

    #[test]
    fn an_all_zero_group_shares_equally() {
        let mut rows = vec![
            row("a", "g", State::Degraded, 0.0, 100.0, 1.0),
            row("b", "g", State::Degraded, 0.0, 100.0, 1.0),
        ];
        assign_weights(&mut rows, &WeightParams::default());
        assert_eq!((rows[0].0.weight, rows[1].0.weight), (0.5, 0.5));
    }
}
