//! Every window of every target, read from the store: raw results for `5m` and `1h`, hourly
//! rollups for `24h`, daily rollups for `7d` and `30d`, merged per target, location and probe
//! into `aggregate`'s figures, with each location's stored state; then each target's global
//! figures (the HdrHistograms of every counted location merged, which is exact: the merged
//! percentiles are those of the union of the runs) and its global state by quorum
//! (`aggregate::quorum`).

use std::collections::{BTreeMap, HashMap};

use crate::aggregate::health::State;
use crate::aggregate::quorum::{self, LocationStatus};
use crate::aggregate::rollup::{Rollup, Span};
use crate::aggregate::{LocationStats, TargetStats, Window, WindowStats};
use crate::config::Config;
use crate::store::{Store, StoreError, TargetAt};

/// Per probe: the merged rollup.
type PerProbe = BTreeMap<String, Rollup>;
/// Per window, per target, per location, per probe.
type Merged = HashMap<Window, HashMap<String, BTreeMap<String, PerProbe>>>;

fn slot<'a>(
    merged: &'a mut Merged,
    window: Window,
    target: &str,
    location: &str,
    probe: &str,
) -> &'a mut Rollup {
    merged
        .entry(window)
        .or_default()
        .entry(target.to_owned())
        .or_default()
        .entry(location.to_owned())
        .or_default()
        .entry(probe.to_owned())
        .or_default()
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
/// runs yet), at `now_ms`, globally and per location.
pub fn summarize(
    store: &Store,
    config: &Config,
    now_ms: i64,
) -> Result<Vec<TargetStats>, StoreError> {
    let mut merged: Merged = HashMap::new();
    for (record, at) in store.results_since(Window::H1.start(now_ms), None)? {
        for window in [Window::M5, Window::H1] {
            if at >= window.start(now_ms) {
                let (target, location) = (&record.target, &record.location);
                slot(&mut merged, window, target, location, &record.probe).add(&record, at);
            }
        }
    }
    for row in store.rollups_since(Span::Hour, Window::H24.start(now_ms))? {
        slot(
            &mut merged,
            Window::H24,
            &row.target,
            &row.location,
            &row.probe,
        )
        .merge(&row.rollup);
    }
    for row in store.rollups_since(Span::Day, Window::D30.start(now_ms))? {
        for window in [Window::D7, Window::D30] {
            if row.bucket >= window.start(now_ms) {
                slot(&mut merged, window, &row.target, &row.location, &row.probe)
                    .merge(&row.rollup);
            }
        }
    }
    let fleet = locations(store, now_ms)?;
    let counted = |location: &str| {
        fleet
            .iter()
            .find(|status| status.location == location)
            .is_none_or(|status| status.counted)
    };
    let health = store.health()?;
    let mut names: Vec<String> = config.targets.iter().map(|t| t.id.clone()).collect();
    for per_target in merged.values() {
        for target in per_target.keys() {
            if !names.contains(target) {
                names.push(target.clone());
            }
        }
    }
    let empty = BTreeMap::new();
    let mut out = Vec::with_capacity(names.len());
    for target in names {
        let mut seen_from: Vec<String> = health
            .keys()
            .filter(|at| at.target == target)
            .map(|at| at.location.clone())
            .collect();
        for per_target in merged.values() {
            seen_from.extend(
                per_target
                    .get(&target)
                    .into_iter()
                    .flat_map(|l| l.keys().cloned()),
            );
        }
        seen_from.sort_unstable();
        seen_from.dedup();
        let per_location = |window: Window| {
            merged
                .get(&window)
                .and_then(|targets| targets.get(&target))
                .unwrap_or(&empty)
        };
        let windows: Vec<WindowStats> = Window::ALL
            .iter()
            .map(|&window| {
                let mut all = PerProbe::new();
                for (location, probes) in per_location(window) {
                    if counted(location) {
                        for (probe, rollup) in probes {
                            all.entry(probe.clone()).or_default().merge(rollup);
                        }
                    }
                }
                WindowStats::of(window, &all)
            })
            .collect();
        let locations: Vec<LocationStats> = seen_from
            .iter()
            .map(|location| {
                let (state, state_since_ms) = health
                    .get(&TargetAt::new(&target, location))
                    .map_or((State::Unknown, 0), |h| (h.state, h.since_ms));
                let status = fleet.iter().find(|s| s.location == *location);
                // One location's figures are the global ones: no second fold.
                let windows = if seen_from.len() == 1 {
                    windows.clone()
                } else {
                    Window::ALL
                        .iter()
                        .map(|&window| {
                            let probes = per_location(window).get(location);
                            WindowStats::of(window, probes.unwrap_or(&PerProbe::new()))
                        })
                        .collect()
                };
                LocationStats {
                    location: location.clone(),
                    state,
                    state_since_ms,
                    stale: status.is_some_and(|s| s.stale),
                    counted: status.is_none_or(|s| s.counted),
                    windows,
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
