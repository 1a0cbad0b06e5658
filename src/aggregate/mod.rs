//! Aggregation: rollups, target states, and the windows the status page, feed and reports
//! read. Pure folding and merging: nothing here reads the store or the network (the store's
//! writer folds runs with these types; `publish::windows` reads rollups into them).
//!
//! Windows: `5m` and `1h` are computed from raw results; `24h` from the hourly rollups of the
//! current hour and the 23 before it; `7d` and `30d` from the daily rollups of the current
//! day and the 6 / 29 before it. Whole buckets keep every window a merge of at most 30
//! histograms per target and probe, which is what makes all windows of all targets fast.

pub mod alerting;
pub mod drift;
pub mod fidelity;
pub mod health;
pub mod quality;
pub mod quorum;
pub mod rollup;
pub mod slo;
pub mod sparse;
pub mod stats;
pub mod sum;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capability::Capabilities;
use crate::result::Outcome;
use crate::units::round3;
use fidelity::Fidelity;
use health::State;
use quality::Quality;
use rollup::{Span, TPS_SCALE};
use sparse::{Sparse, SparseRollup};
use sum::{RollupSum, SparseSum};

/// A minute, in ms: the `5m` window begins at a minute's start.
pub const MINUTE_MS: i64 = 60_000;

/// Five minutes, in ms: the `1h` window begins at a multiple of them.
pub const FIVE_MINUTES_MS: i64 = 5 * MINUTE_MS;

/// The minute holding unix ms `at_ms` (its start).
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The windows every figure is published for. Each begins at a bucket's start: the
/// current minute, five minutes, hour or day and the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Window {
    /// The current minute and the 4 before it (raw results).
    #[serde(rename = "5m")]
    M5,
    /// The current five minutes and the 11 before them (raw results).
    #[serde(rename = "1h")]
    H1,
    /// The current hour and the 23 before it.
    #[serde(rename = "24h")]
    H24,
    /// The current day and the 6 before it.
    #[serde(rename = "7d")]
    D7,
    /// The current day and the 29 before it.
    #[serde(rename = "30d")]
    D30,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 5] = [Window::M5, Window::H1, Window::H24, Window::D7, Window::D30];

    /// Its name (`5m`, `1h`, `24h`, `7d`, `30d`).
    pub fn as_str(self) -> &'static str {
        match self {
            Window::M5 => "5m",
            Window::H1 => "1h",
            Window::H24 => "24h",
            Window::D7 => "7d",
            Window::D30 => "30d",
        }
    }

    /// Parses [`Window::as_str`]'s names.
    pub fn from_name(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == name)
    }

    /// Where its runs begin, for `now_ms`.
    pub fn start(self, now_ms: i64) -> i64 {
        match self {
            Window::M5 => minute_of(now_ms) - 4 * MINUTE_MS,
            Window::H1 => now_ms - now_ms.rem_euclid(FIVE_MINUTES_MS) - 11 * FIVE_MINUTES_MS,
            Window::H24 => Span::Hour.bucket_of(now_ms) - 23 * Span::Hour.ms(),
            Window::D7 => Span::Day.bucket_of(now_ms) - 6 * Span::Day.ms(),
            Window::D30 => Span::Day.bucket_of(now_ms) - 29 * Span::Day.ms(),
        }
    }
}

/// Percentiles of one distribution, each shown only when the sample count supports it:
/// a pq needs at least 1 / (1 − q) samples (p99 needs 100), else it is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `histogram`, each value divided by `per_unit`. The same figures as
    /// the dense histogram's `value_at_quantile` and `max` give (the highest equivalent value
    /// where the cumulative count first reaches ⌈q·n⌉), in one pass over its counters.
    pub fn of(histogram: &Sparse, per_unit: f64) -> Percentiles {
        Percentiles::of_counters(histogram.len(), histogram.iter(), per_unit)
    }

    /// The percentiles of the sum of histograms (see [`Percentiles::of`]), in one pass over
    /// their counters together.
    pub fn of_sum(histograms: &SparseSum<'_>, per_unit: f64) -> Percentiles {
        Percentiles::of_counters(histograms.len(), histograms.iter(), per_unit)
    }

    /// The percentiles of `count` samples in `counters` ((highest equivalent value, count),
    /// ascending).
    fn of_counters(
        count: u64,
        counters: impl Iterator<Item = (u64, u64)>,
        per_unit: f64,
    ) -> Percentiles {
        const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];
        let ranks = QUANTILES.map(|q| sparse::rank_of(q, count));
        let mut found: [Option<u64>; 4] = [None; 4];
        let mut next_rank = 0;
        let mut cumulative = 0u64;
        let mut max = None;
        for (at, here) in counters {
            max = Some(at);
            cumulative += here;
            while next_rank < ranks.len() && cumulative >= ranks[next_rank] {
                found[next_rank] = Some(at);
                next_rank += 1;
            }
        }
        let shown = |i: usize| {
            found[i]
                .filter(|_| count >= min_samples(QUANTILES[i]))
                .map(|v| round3(v as f64 / per_unit))
        };
        Percentiles {
            count,
            p50: shown(0),
            p90: shown(1),
            p95: shown(2),
            p99: shown(3),
            max: max.map(|max| round3(max as f64 / per_unit)),
        }
    }
}

/// The samples a q-quantile needs before it is shown: 1 / (1 − q) (100 for a p99).
pub fn min_samples(q: f64) -> u64 {
    ((1.0 / (1.0 - q)).round() as u64).max(1)
}

/// Latency and speed percentiles of some runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// TTFT, ms.
    pub ttft_ms: Percentiles,
    /// E2E, ms.
    pub e2e_ms: Percentiles,
    /// Gaps between content arrivals, ms.
    pub itl_ms: Percentiles,
    /// Output speed, tokens/s.
    pub tokens_per_s: Percentiles,
}

impl Latency {
    /// The percentiles of a rollup's four distributions.
    pub fn of(rollup: &SparseRollup) -> Latency {
        Latency::of_distributions(rollup.distributions().map(|d| SparseSum::new([d])))
    }

    /// The percentiles of a sum of rollups' four distributions.
    pub fn of_sum(rollups: &RollupSum) -> Latency {
        Latency::of_distributions(rollups.distributions())
    }

    /// The percentiles of TTFT, E2E, ITL and tokens/s, in that order.
    fn of_distributions([ttft, e2e, itl, tps]: [SparseSum<'_>; 4]) -> Latency {
        Latency {
            ttft_ms: Percentiles::of_sum(&ttft, 1000.0),
            e2e_ms: Percentiles::of_sum(&e2e, 1000.0),
            itl_ms: Percentiles::of_sum(&itl, 1000.0),
            tokens_per_s: Percentiles::of_sum(&tps, TPS_SCALE),
        }
    }
}

/// One target over one window.
#[derive(Debug, Clone)]
pub struct WindowStats {
    /// The window.
    pub window: Window,
    /// Runs of every outcome.
    pub attempts: u64,
    /// `ok` runs.
    pub ok: u64,
    /// Provider faults.
    pub failures: u64,
    /// ok ÷ (ok + faults); `None` without runs that count.
    pub availability: Option<f64>,
    /// `rate_limited` runs (shown apart from availability).
    pub rate_limited: u64,
    /// Runs per outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// TTFT, ITL and speed over every probe; E2E only when the window has one probe (E2E
    /// is only comparable per probe: see [`WindowStats::busiest_probe`]).
    pub latency: Latency,
    /// The same per probe.
    probes: Probes,
    /// Latest capability evidence in the window.
    pub capabilities: Capabilities,
    /// Substitution and streaming evidence in the window.
    pub fidelity: Fidelity,
    /// The quality canary's judgements in the window.
    pub quality: Quality,
    /// Successful streamed runs with a TTFT within the target's SLO bound, and all of them
    /// (when it has a latency objective).
    pub ttft_within: Option<(u64, u64)>,
    /// USD spent.
    pub cost_usd: f64,
    /// Tokens spent.
    pub tokens: u64,
    /// Unix ms of the latest ok run.
    pub last_ok_ms: Option<i64>,
    /// Unix ms and text of the latest failure.
    pub last_error: Option<(i64, String)>,
}

/// A window's figures per probe. Most targets have one probe, whose figures are the
/// window's own: kept once (a publisher holds every target's windows twice while it
/// publishes).
#[derive(Debug, Clone)]
enum Probes {
    /// No probe ran in the window.
    None,
    /// One probe, by name: its figures are [`WindowStats::latency`].
    One(Box<str>),
    /// Several, by name (a list of exactly its probes, not a map: a map's node holds room
    /// for eleven).
    Several(Vec<(String, Latency)>),
}

impl WindowStats {
    /// The figures of `probe`'s runs, when it ran.
    pub fn probe(&self, probe: &str) -> Option<&Latency> {
        match &self.probes {
            Probes::None => None,
            Probes::One(name) => (**name == *probe).then_some(&self.latency),
            Probes::Several(probes) => probes
                .iter()
                .find_map(|(name, latency)| (name == probe).then_some(latency)),
        }
    }

    /// The figures of the probe with the most E2E samples (E2E is only comparable within a
    /// probe).
    pub fn busiest_probe(&self) -> Option<&Latency> {
        match &self.probes {
            Probes::None => None,
            Probes::One(_) => Some(&self.latency),
            Probes::Several(probes) => probes
                .iter()
                .map(|(_, latency)| latency)
                .max_by_key(|latency| latency.e2e_ms.count),
        }
    }

    /// The figures of `window` from its merged rollups, one per probe; with `ttft_bound_us`
    /// (a latency objective), how many TTFTs were within it.
    pub fn of(
        window: Window,
        per_probe: &BTreeMap<String, RollupSum>,
        ttft_bound_us: Option<u64>,
    ) -> WindowStats {
        let mut named = per_probe.iter();
        // One probe (the usual case) is its own total: neither copied nor computed twice.
        let (all, latency, probes): (Cow<'_, RollupSum>, Latency, Probes) =
            match (named.next(), named.next()) {
                (Some((name, only)), None) => (
                    Cow::Borrowed(only),
                    Latency::of_sum(only),
                    Probes::One(name.as_str().into()),
                ),
                (first, _) => {
                    let mut all = RollupSum::default();
                    for rollup in per_probe.values() {
                        all.append(rollup);
                    }
                    let mut latency = Latency::of_sum(&all);
                    latency.e2e_ms = Percentiles::default();
                    let probes = match first {
                        None => Probes::None,
                        Some(_) => Probes::Several(
                            per_probe
                                .iter()
                                .map(|(probe, rollup)| (probe.clone(), Latency::of_sum(rollup)))
                                .collect(),
                        ),
                    };
                    (Cow::Owned(all), latency, probes)
                }
            };
        let scalars = all.scalars();
        let ttft_us = all.ttft_us();
        WindowStats {
            window,
            attempts: scalars.attempts(),
            ok: scalars.count(Outcome::Ok),
            failures: scalars.failures,
            availability: scalars.availability(),
            rate_limited: scalars.count(Outcome::RateLimited),
            latency,
            probes,
            capabilities: scalars.capabilities,
            ttft_within: ttft_bound_us.map(|bound| (ttft_us.count_up_to(bound), ttft_us.len())),
            cost_usd: scalars.cost_usd,
            tokens: scalars.tokens,
            last_ok_ms: scalars.last_ok_ms,
            outcomes: scalars.outcomes,
            fidelity: scalars.fidelity,
            quality: scalars.quality,
            last_error: scalars.last_error,
        }
    }
}

/// One target: its global state and windows (every counted location merged), and the same
/// seen from each location.
#[derive(Debug, Clone)]
pub struct TargetStats {
    /// Target id.
    pub target: String,
    /// Current state, by quorum of the counted locations.
    pub state: State,
    /// Unix ms the state began (0 when never set).
    pub state_since_ms: i64,
    /// One entry per [`Window::ALL`]: the runs of every counted location together.
    pub windows: Vec<WindowStats>,
    /// Each location that has seen it, by name.
    pub locations: Vec<LocationStats>,
}

/// One target seen from one location.
#[derive(Debug, Clone)]
pub struct LocationStats {
    /// The location.
    pub location: String,
    /// Its state there.
    pub state: State,
    /// Unix ms the state began there.
    pub state_since_ms: i64,
    /// The location has gone silent.
    pub stale: bool,
    /// It counts in the quorum and the global figures (fresh, or every location is stale).
    pub counted: bool,
    /// The feed's window (`[publish] window`), this location's runs only: what the page's
    /// and the feed's per-location figures and weights read. (The other windows are kept
    /// only globally: a fleet of 10 locations would otherwise fold every window 11 times.)
    pub window: WindowStats,
}

impl TargetStats {
    /// The stats of `window`.
    pub fn window(&self, window: Window) -> Option<&WindowStats> {
        self.windows.iter().find(|w| w.window == window)
    }

    /// The counted locations that see it down, by name.
    pub fn down_in(&self) -> Vec<&str> {
        self.locations
            .iter()
            .filter(|l| l.counted && l.state == State::Down)
            .map(|l| l.location.as_str())
            .collect()
    }
}
