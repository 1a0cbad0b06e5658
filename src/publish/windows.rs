//! Every window of every target, read from the store: raw results for `5m` and `1h`, hourly
//! rollups for `24h`, daily rollups for `7d` and `30d`. Each run or rollup is folded, as it
//! is read, into its target's global figures when its location counts (the HdrHistograms of
//! every counted location merged, which is exact: the merged percentiles are those of the
//! union of the runs), and into its location's own figures for the feed's window; then each
//! target's global state by quorum (`aggregate::quorum`). Rollups stream from the store one
//! at a time: a decoded rollup holds four histograms of tens of KB.

use std::collections::{BTreeMap, HashMap};

use crate::aggregate::health::State;
use crate::aggregate::quorum::{self, LocationStatus};
use crate::aggregate::rollup::{Rollup, Span};
use crate::aggregate::{LocationStats, TargetStats, Window, WindowStats};
use crate::config::Config;
use crate::result::ResultRecord;
use crate::store::{RollupRow, Store, StoreError, TargetAt};

/// Per probe: the merged rollup.
type PerProbe = BTreeMap<String, Rollup>;

/// What is folded while the store is read.
struct Folding<'a> {
    /// Per window, per target: every counted location's runs.
    global: HashMap<Window, HashMap<String, PerProbe>>,
    /// Per target and location: the feed's window.
    local: HashMap<TargetAt, PerProbe>,
    feed_window: Window,
    fleet: &'a [LocationStatus],
}

impl Folding<'_> {
    /// Whether `location` counts in the global figures (a location without a heartbeat —
    /// rows written before locations — does).
    fn counts(&self, location: &str) -> bool {
        self.fleet
            .iter()
            .find(|status| status.location == location)
            .is_none_or(|status| status.counted)
    }

    /// The slots a run or rollup of `window` seen from `location` goes into.
    fn slots(
        &mut self,
        window: Window,
        target: &str,
        location: &str,
        probe: &str,
    ) -> Vec<&mut Rollup> {
        let mut slots = Vec::with_capacity(2);
        let local = window == self.feed_window;
        if self.counts(location) {
            let global = self
                .global
                .entry(window)
                .or_default()
                .entry(target.to_owned())
                .or_default()
                .entry(probe.to_owned())
                .or_default();
            slots.push(global);
        }
        if local {
            let here = self
                .local
                .entry(TargetAt::new(target, location))
                .or_default()
                .entry(probe.to_owned())
                .or_default();
            slots.push(here);
        }
        slots
    }

    fn add(&mut self, window: Window, record: &ResultRecord, at: i64) {
        for slot in self.slots(window, &record.target, &record.location, &record.probe) {
            slot.add(record, at);
        }
    }

    fn merge(&mut self, window: Window, row: &RollupRow) {
        for slot in self.slots(window, &row.target, &row.location, &row.probe) {
            slot.merge(&row.rollup);
        }
    }
}

/// Every location that ever wrote to `store`, stale or fresh at `now_ms`.
pub fn locations(store: &Store, now_ms: i64) -> Result<Vec<LocationStatus>, StoreError> {
    let beats: Vec<(String, i64, i64)> = store
        .heartbeats()?
        .into_iter()
        .map(|beat| (beat.location, beat.seen_ms, beat.shortest_ms))
        .collect();
    Ok(quorum::statuses(&beats, now_ms))
}

/// Every window of every target in the store (and of each of `config`'s targets, with no
/// runs yet), at `now_ms`, globally; and per location, its state and the feed's window.
pub fn summarize(
    store: &Store,
    config: &Config,
    now_ms: i64,
) -> Result<Vec<TargetStats>, StoreError> {
    let fleet = locations(store, now_ms)?;
    let mut folding = Folding {
        global: HashMap::new(),
        local: HashMap::new(),
        feed_window: Window::from_name(&config.publish.window).unwrap_or(Window::H1),
        fleet: &fleet,
    };
    for (record, at) in store.results_since(Window::H1.start(now_ms), None)? {
        for window in [Window::M5, Window::H1] {
            if at >= window.start(now_ms) {
                folding.add(window, &record, at);
            }
        }
    }
    store.each_rollup_since(Span::Hour, Window::H24.start(now_ms), &mut |row| {
        folding.merge(Window::H24, &row);
    })?;
    store.each_rollup_since(Span::Day, Window::D30.start(now_ms), &mut |row| {
        for window in [Window::D7, Window::D30] {
            if row.bucket >= window.start(now_ms) {
                folding.merge(window, &row);
            }
        }
    })?;
    let Folding {
        global,
        mut local,
        feed_window,
        ..
    } = folding;
    let health = store.health()?;
    let mut seen_by: HashMap<String, Vec<String>> = HashMap::new();
    for at in health.keys().chain(local.keys()) {
        seen_by
            .entry(at.target.clone())
            .or_default()
            .push(at.location.clone());
    }
    let mut names: Vec<String> = config.targets.iter().map(|t| t.id.clone()).collect();
    let mut extra: Vec<&String> = seen_by.keys().filter(|t| !names.contains(t)).collect();
    extra.sort_unstable();
    names.extend(extra.into_iter().cloned());
    let empty = PerProbe::new();
    let mut out = Vec::with_capacity(names.len());
    // Each latency objective's bound, µs: looked up once per target, not by a scan.
    let bounds: HashMap<&str, u64> = config
        .targets
        .iter()
        .filter_map(|t| {
            let ms = t.model.slo.as_ref()?.ttft_p95_ms?;
            Some((t.id.as_str(), (ms * 1000.0).round() as u64))
        })
        .collect();
    for target in names {
        let bound_us = bounds.get(target.as_str()).copied();
        let windows: Vec<WindowStats> = Window::ALL
            .iter()
            .map(|&window| {
                let probes = global.get(&window).and_then(|t| t.get(&target));
                WindowStats::of(window, probes.unwrap_or(&empty), bound_us)
            })
            .collect();
        let mut seen_from = seen_by.remove(&target).unwrap_or_default();
        seen_from.sort_unstable();
        seen_from.dedup();
        let alone = seen_from.len() == 1;
        let locations: Vec<LocationStats> = seen_from
            .into_iter()
            .map(|location| {
                let at = TargetAt::new(&target, &location);
                let (state, state_since_ms) = health
                    .get(&at)
                    .map_or((State::Unknown, 0), |h| (h.state, h.since_ms));
                let status = fleet.iter().find(|s| s.location == location);
                let counted = status.is_none_or(|s| s.counted);
                // One counted location's figures are the global ones: no second fold.
                let window = match windows.iter().find(|w| w.window == feed_window) {
                    Some(global) if alone && counted => global.clone(),
                    _ => WindowStats::of(
                        feed_window,
                        &local.remove(&at).unwrap_or_default(),
                        bound_us,
                    ),
                };
                LocationStats {
                    location,
                    state,
                    state_since_ms,
                    stale: status.is_some_and(|s| s.stale),
                    counted,
                    window,
                }
            })
            .collect();
        let counted_states: Vec<(State, i64)> = locations
            .iter()
            .filter(|l| l.counted)
            .map(|l| (l.state, l.state_since_ms))
            .collect();
        let quorum = config.prober.quorum_of(counted_states.len());
        let (state, state_since_ms) = quorum::global_state(&counted_states, quorum);
        out.push(TargetStats {
            target,
            state,
            state_since_ms,
            windows,
            locations,
        });
    }
    Ok(out)
}
