//! Every window of every target, read from the store: raw results for `5m` and `1h`, hourly
//! rollups for `24h`, daily rollups for `7d` and `30d`, merged per target and probe into
//! `aggregate`'s figures, with each target's stored state.

use std::collections::{BTreeMap, HashMap};

use crate::aggregate::health::State;
use crate::aggregate::rollup::{Rollup, Span};
use crate::aggregate::{TargetStats, Window, WindowStats};
use crate::store::{RollupRow, Store, StoreError};

/// Per window, per target, per probe: the merged rollup.
type Merged = HashMap<Window, HashMap<String, BTreeMap<String, Rollup>>>;

fn slot<'a>(merged: &'a mut Merged, window: Window, target: &str, probe: &str) -> &'a mut Rollup {
    merged
        .entry(window)
        .or_default()
        .entry(target.to_owned())
        .or_default()
        .entry(probe.to_owned())
        .or_default()
}

fn merge_into(merged: &mut Merged, window: Window, target: &str, probe: &str, rollup: &Rollup) {
    slot(merged, window, target, probe).merge(rollup);
}

/// Every window of every target in the store (and of each of `targets`, with no runs yet),
/// at `now_ms`.
pub fn summarize(
    store: &Store,
    targets: &[String],
    now_ms: i64,
) -> Result<Vec<TargetStats>, StoreError> {
    let mut merged: Merged = HashMap::new();
    for (record, at) in store.results_since(Window::H1.start(now_ms), None)? {
        for window in [Window::M5, Window::H1] {
            if at >= window.start(now_ms) {
                slot(&mut merged, window, &record.target, &record.probe).add(&record, at);
            }
        }
    }
    let hourly: Vec<RollupRow> = store.rollups_since(Span::Hour, Window::H24.start(now_ms))?;
    for row in &hourly {
        merge_into(
            &mut merged,
            Window::H24,
            &row.target,
            &row.probe,
            &row.rollup,
        );
    }
    for row in store.rollups_since(Span::Day, Window::D30.start(now_ms))? {
        for window in [Window::D7, Window::D30] {
            if row.bucket >= window.start(now_ms) {
                merge_into(&mut merged, window, &row.target, &row.probe, &row.rollup);
            }
        }
    }
    let health = store.health()?;
    let mut names: Vec<String> = targets.to_vec();
    for per_target in merged.values() {
        for target in per_target.keys() {
            if !names.contains(target) {
                names.push(target.clone());
            }
        }
    }
    let empty = BTreeMap::new();
    Ok(names
        .into_iter()
        .map(|target| {
            let windows = Window::ALL
                .iter()
                .map(|&window| {
                    let per_probe = merged
                        .get(&window)
                        .and_then(|targets| targets.get(&target))
                        .unwrap_or(&empty);
                    WindowStats::of(window, per_probe)
                })
                .collect();
            let (state, state_since_ms) = health
                .get(&target)
                .map_or((State::Unknown, 0), |h| (h.state, h.since_ms));
            TargetStats {
                target,
                state,
                state_since_ms,
                windows,
            }
        })
        .collect())
}
