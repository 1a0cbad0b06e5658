//! `feed.json`: the routing feed gateways read, and the weight formula behind it.
//!
//! Within each route group, a target is *routable* unless it is down, refused a capability
//! the group requires (`[groups."name"] require = [...]`), or answered with another model
//! while `[publish.weights] substitution` is 0. Every routable target gets
//!
//! ```text
//! score = availability^a × (fastest TTFT p50 / TTFT p50)^l × ((cheapest + 0.1) / (price + 0.1))^p
//!         × (1 − rate-limited share)^r × max(streamed share, 0.1)^s × (substitution if it substituted)
//!         × (quality rate ÷ reference's rate)^q   (only when the quality canary flags it below)
//! weight = score / Σ scores of the group's routable targets
//! ```
//!
//! with the parameters of `[publish.weights]` (default a = 4, l = 1, p = 0.5, r = 1, s = 1,
//! substitution = 0, q = 4; see `publish::quality`). A target missing a figure (no runs yet, no price) takes a neutral 0.5
//! for that factor (1 for a missing price, and 1 for streaming when no answer says). A target
//! that is not routable gets weight 0; when every routable score of a group is 0 they share
//! equally; a group with no routable target has all weights 0 and says so. Each target's
//! `notes` say what lowered or zeroed its weight, and the feed states the formula.
//!
//! A fleet (probers in several locations): a target is down only when a quorum of the
//! counted locations sees it down; one that is down in fewer is `partial`, still routable,
//! its score multiplied by the share of the locations seeing it that do not see it down.
//! `locations` lists the fleet (stale ones too), and each target's `locations` its state,
//! figures and weight as each location alone sees them, for a gateway in that region.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::aggregate::fidelity::Fidelity;
use crate::aggregate::health::State;
use crate::aggregate::quality::Standing;
use crate::aggregate::quorum::LocationStatus;
use crate::aggregate::slo::{self, SloStatus};
use crate::aggregate::{Percentiles, TargetStats, Window, WindowStats};
use crate::capability::Capabilities;
use crate::capability::Capability;
use crate::config::{Config, Target, WeightParams};
use crate::units::{rfc3339, round3};

use super::quality::{self, FeedQuality};

/// USD per million tokens added to every price before prices are compared.
pub const PRICE_FLOOR: f64 = 0.1;

/// The least a streamed share counts for, so a fake streamer is penalised, not erased.
pub const STREAMED_FLOOR: f64 = 0.1;

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
    /// Per route group: what it requires and how many of its targets are routable.
    pub groups: BTreeMap<String, FeedGroup>,
    /// The locations probing, by name.
    pub locations: Vec<FeedFleetLocation>,
    /// Every target, grouped by route group then ranked.
    pub targets: Vec<FeedTarget>,
}

/// One location of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct FeedFleetLocation {
    /// Its name (`[prober] location`).
    pub location: String,
    /// Silent for three of its shortest schedules: shown, not counted.
    pub stale: bool,
    /// Counted in the quorum and the global figures.
    pub counted: bool,
    /// RFC 3339 of its last heartbeat.
    pub last_seen: String,
    /// The same in unix ms, for `/metrics`.
    #[serde(skip)]
    pub last_seen_ms: i64,
}

/// One target as one location sees it.
#[derive(Debug, Clone, Serialize)]
pub struct FeedLocation {
    /// The location.
    pub location: String,
    /// Its state there.
    pub state: State,
    /// The location is stale.
    pub stale: bool,
    /// Availability there, in the feed's window.
    pub availability: Option<f64>,
    /// TTFT p50 there, ms.
    pub ttft_p50_ms: Option<f64>,
    /// Runs there, in the window.
    pub samples: u64,
    /// Its share of its group's traffic by this location's figures alone.
    pub weight: f64,
}

/// One route group.
#[derive(Debug, Clone, Serialize)]
pub struct FeedGroup {
    /// Capabilities every routable target must not have refused (`[groups]` in the config).
    pub require: Vec<&'static str>,
    /// Targets with a weight above 0; 0 means the group has nowhere to send traffic.
    pub routable: u32,
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
    /// Share of its group's traffic; 0 when not routable.
    pub weight: f64,
    /// 1 = the highest weight in its group.
    pub rank: u32,
    /// The model the latest answer came from, as the provider said.
    pub served_model: Option<String>,
    /// The upstream a gateway said served the latest answer (OpenRouter's provider, a
    /// LiteLLM deployment).
    pub upstream: Option<String>,
    /// Some answer in the window came from another model than the one asked for.
    pub model_substituted: bool,
    /// Answers from another model ÷ answers that named their model, in the window.
    pub substituted_rate: Option<f64>,
    /// Stream answers that really streamed ÷ stream answers, in the window (else the latest
    /// verdict: 1 or 0); `None` when no stream probe says.
    pub streamed_rate: Option<f64>,
    /// May receive traffic: not down, no required capability refused, no excluded
    /// substitution.
    pub routable: bool,
    /// What lowered or zeroed the weight, in words.
    pub notes: Vec<String>,
    /// The same target from each location that sees it, by name.
    pub locations: Vec<FeedLocation>,
    /// The quality canary's verdict (over `[quality] window`, every location together).
    pub quality: FeedQuality,
    /// Its service-level objective over the objective's window, when it has one.
    pub slo: Option<SloStatus>,
}

/// A failure, for the feed.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// RFC 3339.
    pub at: String,
    /// `outcome: message`.
    pub message: String,
}

/// The price the weight compares: 3 input tokens to 1 output token, as chat traffic is.
pub fn blended_price(target: &Target) -> Option<f64> {
    match (target.model.input_price, target.model.output_price) {
        (None, None) => None,
        (input, output) => Some((3.0 * input.unwrap_or(0.0) + output.unwrap_or(0.0)) / 4.0),
    }
}

/// What a row is built from: a target's state and windows, globally or from one location.
struct View<'a> {
    state: State,
    in_window: Option<&'a WindowStats>,
    longest: Option<&'a WindowStats>,
    /// For a partial target: the counted locations that see it down, of those that see it.
    partial: Option<(usize, usize)>,
}

/// Rows for every target of `config` that `view` sees, with weights and ranks assigned.
fn weighed<'a>(
    config: &Config,
    view: impl Fn(&'a TargetStats) -> Option<View<'a>>,
    stats: &'a [TargetStats],
    qualities: &HashMap<String, FeedQuality>,
) -> Vec<Row> {
    let params = config.publish.weights;
    let by_id: HashMap<&str, &'a TargetStats> =
        stats.iter().map(|s| (s.target.as_str(), s)).collect();
    let mut rows: Vec<Row> = Vec::new();
    for target in &config.targets {
        let Some(view) = by_id.get(target.id.as_str()).and_then(|s| view(s)) else {
            continue;
        };
        let require = config
            .groups
            .get(&target.model.group)
            .map_or(&[][..], |g| &g.require[..]);
        let Some(quality) = qualities.get(&target.id) else {
            continue;
        };
        rows.push(Row::new(target, &view, require, &params, quality));
    }
    assign_weights(&mut rows, &params);
    rows
}

/// Builds the feed from `stats` (one per target of `config`, from `publish::windows::summarize`)
/// and the fleet's `locations` (`publish::windows::locations`).
pub fn build(
    config: &Config,
    stats: &[TargetStats],
    locations: &[LocationStatus],
    generated_ms: i64,
) -> Feed {
    let window = Window::from_name(&config.publish.window).unwrap_or(Window::H1);
    let params = config.publish.weights;
    let qualities = quality::verdicts(config, stats);
    let mut rows = weighed(
        config,
        |stat| {
            let counted = stat.locations.iter().filter(|l| l.counted).count();
            Some(View {
                state: stat.state,
                in_window: stat.window(window),
                longest: stat.window(Window::D30),
                partial: (stat.state == State::Partial).then(|| (stat.down_in().len(), counted)),
            })
        },
        stats,
        &qualities,
    );
    // Each location's own ranking, for gateways that route by region.
    let mut by_location: BTreeMap<(String, &str), f64> = BTreeMap::new();
    for status in locations {
        let here = weighed(
            config,
            |stat| {
                let seen = stat
                    .locations
                    .iter()
                    .find(|l| l.location == status.location)?;
                // Capabilities and the latest served model are the target's, from anywhere.
                Some(View {
                    state: seen.state,
                    in_window: Some(&seen.window),
                    longest: stat.window(Window::D30),
                    partial: None,
                })
            },
            stats,
            &qualities,
        );
        for row in here {
            by_location.insert((row.entry.id, status.location.as_str()), row.entry.weight);
        }
    }
    let by_id: HashMap<&str, &TargetStats> = stats.iter().map(|s| (s.target.as_str(), s)).collect();
    let slos: HashMap<&str, &crate::config::Slo> = config
        .targets
        .iter()
        .filter_map(|t| Some((t.id.as_str(), t.model.slo.as_ref()?)))
        .collect();
    for row in &mut rows {
        let Some(stat) = by_id.get(row.entry.id.as_str()) else {
            continue;
        };
        row.entry.slo = slos.get(row.entry.id.as_str()).and_then(|slo| {
            let window = stat.window(Window::from_name(&slo.window)?)?;
            Some(slo::status(slo, window))
        });
        row.entry.locations = stat
            .locations
            .iter()
            .map(|seen| {
                let in_window = &seen.window;
                FeedLocation {
                    location: seen.location.clone(),
                    state: seen.state,
                    stale: seen.stale,
                    availability: in_window.availability,
                    ttft_p50_ms: in_window.latency.ttft_ms.p50,
                    samples: in_window.attempts,
                    weight: by_location
                        .get(&(row.entry.id.clone(), seen.location.as_str()))
                        .copied()
                        .unwrap_or(0.0),
                }
            })
            .collect();
    }
    rows.sort_by(|a, b| {
        a.entry
            .group
            .cmp(&b.entry.group)
            .then(a.entry.rank.cmp(&b.entry.rank))
    });
    let mut groups: BTreeMap<String, FeedGroup> = BTreeMap::new();
    for row in &rows {
        let group = groups
            .entry(row.entry.group.clone())
            .or_insert_with(|| FeedGroup {
                require: config
                    .groups
                    .get(&row.entry.group)
                    .map(|g| g.require.iter().map(|c| c.as_str()).collect())
                    .unwrap_or_default(),
                routable: 0,
            });
        group.routable += u32::from(row.entry.weight > 0.0);
    }
    Feed {
        version: FEED_VERSION,
        generated_at: rfc3339(generated_ms),
        window: window.as_str().to_owned(),
        weight_formula: WeightFormula {
            expression: "weight = score / sum(scores of the group's routable targets); score = \
                         availability^availability × (fastest ttft_p50 in group / \
                         ttft_p50)^latency × ((cheapest price in group + 0.1) / (price + \
                         0.1))^price × (1 − rate_limited_rate)^rate_limit × max(streamed_rate, \
                         0.1)^streaming × (substitution if model_substituted) × (quality rate / \
                         reference's rate)^quality if the quality canary flags it below; price = (3 × \
                         input + output) / 4; a missing figure counts 0.5 (a missing price or \
                         streamed_rate 1); not routable (down, a required capability refused, \
                         or substituting with substitution = 0) gets 0; all-zero groups share \
                         equally"
                .to_owned(),
            parameters: params,
        },
        groups,
        locations: locations
            .iter()
            .map(|status| FeedFleetLocation {
                location: status.location.clone(),
                stale: status.stale,
                counted: status.counted,
                last_seen: rfc3339(status.seen_ms),
                last_seen_ms: status.seen_ms,
            })
            .collect(),
        targets: rows.into_iter().map(|row| row.entry).collect(),
    }
}

/// A target while weights are assigned.
#[derive(Debug)]
struct Row {
    entry: FeedTarget,
    /// Blended price, or NaN without one.
    price: f64,
    /// Product of the factors that are not relative to the group (streaming, substitution).
    factor: f64,
}

impl Row {
    fn new(
        target: &Target,
        view: &View<'_>,
        require: &[Capability],
        params: &WeightParams,
        quality: &FeedQuality,
    ) -> Row {
        let View {
            state,
            in_window,
            longest,
            partial,
        } = *view;
        let attempts = in_window.map_or(0, |w| w.attempts);
        let share = |count: u64| (attempts > 0).then(|| count as f64 / attempts as f64);
        let latency = in_window.map(|w| &w.latency);
        let e2e = in_window
            .and_then(WindowStats::busiest_probe)
            .map(|l| l.e2e_ms.clone())
            .unwrap_or_default();
        let capabilities = longest.map(|w| w.capabilities).unwrap_or_default();
        let no_runs = Fidelity::default();
        let fidelity = in_window.map_or(&no_runs, |w| &w.fidelity);
        let latest = longest.and_then(|w| w.fidelity.latest.as_ref());
        let streamed_rate = fidelity
            .streamed_rate()
            .or_else(|| capabilities.streaming.map(|s| if s { 1.0 } else { 0.0 }));
        let model_substituted = fidelity.substituted > 0;
        let mut notes = Vec::new();
        let mut routable = true;
        if state == State::Down {
            routable = false;
            notes.push("down: not routed".to_owned());
        }
        for &capability in require {
            if capabilities.get(capability) == Some(false) {
                routable = false;
                notes.push(format!(
                    "refused {}, which its group requires: not routed",
                    capability.as_str()
                ));
            }
        }
        let mut factor = 1.0;
        if let Some((down, seen)) = partial {
            let share = 1.0 - down as f64 / seen.max(1) as f64;
            factor *= share;
            notes.push(format!(
                "down in {down} of the {seen} locations that probe it (fewer than the quorum): \
                 score × {}",
                round3(share)
            ));
        }
        if model_substituted {
            let served = fidelity
                .last_substitute
                .as_ref()
                .map_or("another model", |(_, model)| model.as_str());
            let how_often = format!(
                "answered as {served} in {} of {} answers",
                fidelity.substituted, fidelity.named
            );
            if params.substitution > 0.0 {
                factor *= params.substitution;
                notes.push(format!("{how_often}: score × {}", params.substitution));
            } else {
                routable = false;
                notes.push(format!("{how_often}: not routed"));
            }
        }
        if let Some(rate) = streamed_rate.filter(|rate| *rate < 1.0) {
            let penalty = rate.max(STREAMED_FLOOR).powf(params.streaming);
            factor *= penalty;
            let evidence = if fidelity.streamed + fidelity.not_streamed > 0 {
                format!(
                    "streamed {} of {} stream answers",
                    fidelity.streamed,
                    fidelity.streamed + fidelity.not_streamed
                )
            } else {
                "its latest stream answer did not stream".to_owned()
            };
            notes.push(format!("{evidence}: score × {}", round3(penalty)));
        }
        if quality.standing == Standing::Below && quality.factor < 1.0 {
            factor *= quality.factor;
            notes.push(format!("{}: score × {}", quality.summary, quality.factor));
        }
        let entry = FeedTarget {
            id: target.id.clone(),
            provider: target.provider.name.clone(),
            model: target.model.id.clone(),
            group: target.model.group.clone(),
            state,
            availability: in_window.and_then(|w| w.availability),
            error_rate: share(in_window.map_or(0, |w| w.failures)),
            rate_limited_rate: share(in_window.map_or(0, |w| w.rate_limited)),
            ttft_ms: latency.map(|l| l.ttft_ms.clone()).unwrap_or_default(),
            e2e_ms: e2e,
            tokens_per_s: latency.map(|l| l.tokens_per_s.clone()).unwrap_or_default(),
            capabilities,
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
            served_model: latest.and_then(|l| l.served_model.clone()),
            upstream: latest.and_then(|l| l.upstream.clone()),
            model_substituted,
            substituted_rate: fidelity.substituted_rate(),
            streamed_rate,
            routable,
            notes,
            locations: Vec::new(),
            quality: quality.clone(),
            slo: None,
        };
        Row {
            entry,
            price: blended_price(target).unwrap_or(f64::NAN),
            factor,
        }
    }
}

/// Sets `weight` and `rank` of every row, group by group.
fn assign_weights(rows: &mut [Row], params: &WeightParams) {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        groups.entry(row.entry.group.clone()).or_default().push(i);
    }
    for members in groups.values() {
        let routable: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| rows[i].entry.routable)
            .collect();
        let fastest = routable
            .iter()
            .filter_map(|&i| rows[i].entry.ttft_ms.p50)
            .fold(f64::INFINITY, f64::min);
        let cheapest = routable
            .iter()
            .map(|&i| rows[i].price)
            .filter(|p| p.is_finite())
            .fold(f64::INFINITY, f64::min);
        let scores: Vec<f64> = routable
            .iter()
            .map(|&i| {
                let Row {
                    entry,
                    price,
                    factor,
                } = &rows[i];
                let availability = entry.availability.unwrap_or(0.5);
                let speed = entry
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
                let not_limited = 1.0 - entry.rate_limited_rate.unwrap_or(0.0);
                let score = availability.powf(params.availability)
                    * speed.powf(params.latency)
                    * cheapness.powf(params.price)
                    * not_limited.powf(params.rate_limit)
                    * factor;
                if score.is_finite() {
                    score.max(0.0)
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = scores.iter().sum();
        for (k, &i) in routable.iter().enumerate() {
            rows[i].entry.weight = if total > 0.0 {
                scores[k] / total
            } else {
                1.0 / routable.len() as f64
            };
        }
        let mut ranked = members.clone();
        ranked.sort_by(|&a, &b| {
            rows[b]
                .entry
                .weight
                .total_cmp(&rows[a].entry.weight)
                .then(rows[a].entry.id.cmp(&rows[b].entry.id))
        });
        for (rank, i) in ranked.into_iter().enumerate() {
            rows[i].entry.rank = rank as u32 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, group: &str, state: State, availability: f64, ttft: f64, price: f64) -> Row {
        Row {
            entry: FeedTarget {
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
                served_model: None,
                upstream: None,
                model_substituted: false,
                substituted_rate: None,
                streamed_rate: None,
                routable: state != State::Down,
                notes: Vec::new(),
                locations: Vec::new(),
                quality: super::quality::unmeasured(),
                slo: None,
            },
            price,
            factor: 1.0,
        }
    }

    fn weight(rows: &[Row], id: &str) -> f64 {
        rows.iter().find(|r| r.entry.id == id).unwrap().entry.weight
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
        assert!((weight(&rows, "a") + weight(&rows, "b") - 1.0).abs() < 1e-12);
        assert_eq!(weight(&rows, "c"), 0.0);
        assert_eq!(weight(&rows, "d"), 1.0);
        // a: 1 × 1 × 1; b: 0.9^4 × 0.5 = 0.328…
        let b = 0.9f64.powi(4) * 0.5;
        assert!((weight(&rows, "a") - 1.0 / (1.0 + b)).abs() < 1e-12);
        let rank = |id: &str| rows.iter().find(|r| r.entry.id == id).unwrap().entry.rank;
        assert_eq!((rank("a"), rank("b"), rank("c")), (1, 2, 3));
    }

    #[test]
    fn an_all_zero_group_shares_equally_and_an_unroutable_one_gets_nothing() {
        let mut rows = vec![
            row("a", "g", State::Degraded, 0.0, 100.0, 1.0),
            row("b", "g", State::Degraded, 0.0, 100.0, 1.0),
        ];
        assign_weights(&mut rows, &WeightParams::default());
        assert_eq!((rows[0].entry.weight, rows[1].entry.weight), (0.5, 0.5));
        let mut rows = vec![row("a", "g", State::Healthy, 1.0, 100.0, 1.0)];
        rows[0].entry.routable = false;
        assign_weights(&mut rows, &WeightParams::default());
        assert_eq!(rows[0].entry.weight, 0.0);
    }

    #[test]
    fn factors_scale_the_score() {
        let mut rows = vec![
            row("fake", "g", State::Healthy, 1.0, 100.0, 1.0),
            row("real", "g", State::Healthy, 1.0, 100.0, 1.0),
        ];
        rows[0].factor = 0.1;
        assign_weights(&mut rows, &WeightParams::default());
        assert!((weight(&rows, "fake") - 0.1 / 1.1).abs() < 1e-12);
        assert_eq!(rows[1].entry.rank, 1);
    }
}
