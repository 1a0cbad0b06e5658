//! Every window of every target, read from the store: raw results for `5m` and `1h` (folded
//! per minute and five minutes, `publish::minutes`), hourly
//! rollups for `24h`, daily rollups for `7d` and `30d` (through the `WindowCache`, which
//! keeps their closed buckets summed between publishes). Each location's window is counted
//! in its target's global figures when the location counts (the distributions of every
//! counted location read as one sum, which is exact: the merged percentiles are those of the union
//! of the runs), and kept as the location's own figures for the feed's window; then each
//! target's global state by quorum (`aggregate::quorum`). Distributions are sparse (only
//! non-zero counters), so a month of windows of every target fits in memory.

use std::collections::{BTreeMap, HashMap};

use super::minutes::Minutes;
use super::window_cache::{Key, WindowCache};
use super::{joined, on_every_core};
use crate::aggregate::health::{State, TargetHealth};
use crate::aggregate::quorum::{self, Heard, LocationStatus};
use crate::aggregate::sum::RollupSum;
use crate::aggregate::{LocationStats, TargetStats, Window, WindowStats};
use crate::config::Config;
use crate::store::{Store, StoreError, TargetAt};

/// A target's windows before they are summed: each window and key, with its rollups when
/// they are the hour's runs (`5m`, `1h`) and `None` when the cache holds them.
type Entries = Vec<(Window, Key, Option<RollupSum>)>;

/// Per probe: the rollups it sums.
type PerProbe = BTreeMap<String, RollupSum>;

/// Adds `rollup`'s parts to `probe`'s in `probes`.
fn add_into(probes: &mut PerProbe, probe: String, rollup: RollupSum) {
    probes.entry(probe).or_default().append(&rollup);
}

/// Every location that ever wrote to `store`, stale or fresh at `now_ms`, or retired. A
/// location is judged silent on the store's clock where it keeps one for the fleet
/// (PostgreSQL), else by `now_ms` against its heartbeat's time.
pub fn locations(store: &Store, now_ms: i64) -> Result<Vec<LocationStatus>, StoreError> {
    let heard: Vec<Heard> = store
        .heartbeats()?
        .into_iter()
        .map(|beat| Heard {
            retired: beat.retired(),
            silent_ms: beat.silent_ms.unwrap_or(now_ms - beat.seen_ms),
            location: beat.location,
            seen_ms: beat.seen_ms,
            shortest_ms: beat.shortest_ms,
        })
        .collect();
    Ok(quorum::statuses(&heard))
}

/// Every window of every target in the store (and of each of `config`'s targets, with no
/// runs yet), at `now_ms`, globally; and per location, its state and the feed's window.
/// The hour's runs are read on a handle of their own
/// ([`Backend::fork`](crate::store::Backend::fork)) while the rollup windows are, as a
/// kept history reads them: most of either read is waiting for the store.
pub fn summarize(
    store: &Store,
    config: &Config,
    now_ms: i64,
) -> Result<Vec<TargetStats>, StoreError> {
    let for_runs = store.fork()?;
    let mut cache = WindowCache::new();
    let (hour, rest) = std::thread::scope(|scope| {
        let hour = scope.spawn(move || {
            let mut hour = Minutes::default();
            for_runs.each_result_since(Window::H1.start(now_ms), None, &mut |r, _| {
                hour.add(&r);
            })?;
            hour.settle(now_ms);
            Ok::<_, StoreError>(hour)
        });
        let rest = (|| {
            let fleet = locations(store, now_ms)?;
            cache.refresh(store, now_ms)?;
            Ok::<_, StoreError>((fleet, store.health()?))
        })();
        (joined(hour), rest)
    });
    let (hour, (fleet, health)) = (hour?, rest?);
    Ok(summarize_from(
        config, now_ms, &fleet, &health, &cache, &hour,
    ))
}

/// [`summarize`] from what was read: the fleet's locations, the targets' states, the
/// rollup windows refreshed in `cache` (kept between a server's publishes, which then
/// decode only the rollups that changed since the last one) and the hour's runs in `hour`.
/// The targets are summed on every core, each core a run of them in order: summing is
/// most of a publish's work once its reads are done, and one target's figures depend on
/// nothing but its own windows.
pub(super) fn summarize_from(
    config: &Config,
    now_ms: i64,
    fleet: &[LocationStatus],
    health: &HashMap<TargetAt, TargetHealth>,
    cache: &WindowCache,
    hour: &Minutes,
) -> Vec<TargetStats> {
    let feed_window = Window::from_name(&config.publish.window).unwrap_or(Window::H1);
    // Each target's windows: the hour's and five minutes' from its minutes, the others
    // from the cache when the target's turn comes (the cache merges its locations' closed
    // sums then, when they changed).
    let mut by_target: HashMap<String, Entries> = HashMap::new();
    for (key, (hour, minutes)) in hour.windows(now_ms) {
        let entries = by_target.entry(key.target.clone()).or_default();
        if let Some(minutes) = minutes {
            entries.push((Window::M5, key.clone(), Some(minutes)));
        }
        entries.push((Window::H1, key.clone(), Some(hour)));
    }
    for (window, key) in cache.keys() {
        by_target
            .entry(key.target.clone())
            .or_default()
            .push((window, key.clone(), None));
    }
    // A retired location is in no target's list, though its windows hold its runs until
    // they age out (it counts in no global figure: `Summing::counts`).
    let retired = |location: &str| {
        fleet
            .iter()
            .any(|status| status.retired && status.location == location)
    };
    let mut seen_by: HashMap<String, Vec<String>> = HashMap::new();
    for at in health.keys().filter(|at| !retired(&at.location)) {
        seen_by
            .entry(at.target.clone())
            .or_default()
            .push(at.location.clone());
    }
    for (target, entries) in &by_target {
        for (_, key, _) in entries
            .iter()
            .filter(|(w, key, _)| *w == feed_window && !retired(&key.location))
        {
            seen_by
                .entry(target.clone())
                .or_default()
                .push(key.location.clone());
        }
    }
    let mut names: Vec<String> = config.targets.iter().map(|t| t.id.clone()).collect();
    let mut extra: Vec<&String> = seen_by.keys().filter(|t| !names.contains(t)).collect();
    extra.sort_unstable();
    names.extend(extra.into_iter().cloned());
    let targets: Vec<Target> = names
        .into_iter()
        .map(|name| Target {
            entries: by_target.remove(&name).unwrap_or_default(),
            seen_from: seen_by.remove(&name).unwrap_or_default(),
            name,
        })
        .collect();
    let summing = Summing {
        config,
        feed_window,
        fleet,
        health,
        cache,
        // Each latency objective's bound, µs: looked up once per target, not by a scan.
        bounds: config
            .targets
            .iter()
            .filter_map(|t| {
                let ms = t.model.slo.as_ref()?.ttft_p95_ms?;
                Some((t.id.as_str(), (ms * 1000.0).round() as u64))
            })
            .collect(),
    };
    on_every_core(targets, |target| summing.target(target))
}

/// One target's windows before they are summed, and the locations it was seen from.
struct Target {
    /// Its id.
    name: String,
    /// Its windows.
    entries: Entries,
    /// Every location with a state or a feed window for it, unsorted.
    seen_from: Vec<String>,
}

/// What every target's summing shares.
struct Summing<'a> {
    /// The configuration.
    config: &'a Config,
    /// The feed's window, also each location's own.
    feed_window: Window,
    /// The fleet's locations.
    fleet: &'a [LocationStatus],
    /// Each target's state per location.
    health: &'a HashMap<TargetAt, TargetHealth>,
    /// The rollup windows.
    cache: &'a WindowCache,
    /// Each target's TTFT objective's bound, µs.
    bounds: HashMap<&'a str, u64>,
}

impl Summing<'_> {
    /// Whether `location`'s windows count in a target's global figures; a location without
    /// a heartbeat (rows written before locations) counts.
    fn counts(&self, location: &str) -> bool {
        self.fleet
            .iter()
            .find(|status| status.location == location)
            .is_none_or(|status| status.counted)
    }

    /// `target`'s windows summed globally and per location, and its state by quorum.
    fn target(&self, target: Target) -> TargetStats {
        let Target {
            name: target,
            mut entries,
            mut seen_from,
        } = target;
        let (cache, feed_window) = (self.cache, self.feed_window);
        let empty = PerProbe::new();
        // Merged in one order whatever the maps' order, so the same history gives the same bytes.
        let rank = |w: Window| Window::ALL.iter().position(|&x| x == w);
        entries.sort_by(|a, b| (rank(a.0), &a.1).cmp(&(rank(b.0), &b.1)));
        let mut global: HashMap<Window, PerProbe> = HashMap::new();
        let mut local: HashMap<String, PerProbe> = HashMap::new();
        // The cache's windows of the counted locations, per window and probe: the cache
        // merges them (and keeps their closed sums merged between publishes).
        let mut kept: HashMap<(Window, String), Vec<Key>> = HashMap::new();
        for (window, key, rollup) in entries {
            if window == feed_window {
                let rollup = match &rollup {
                    Some(rollup) => rollup.clone(),
                    None => cache.whole(window, &key),
                };
                let probes = local.entry(key.location.clone()).or_default();
                add_into(probes, key.probe.clone(), rollup);
            }
            if !self.counts(&key.location) {
                continue;
            }
            match rollup {
                Some(rollup) => add_into(global.entry(window).or_default(), key.probe, rollup),
                None => kept
                    .entry((window, key.probe.clone()))
                    .or_default()
                    .push(key),
            }
        }
        for ((window, probe), keys) in kept {
            let keys: Vec<&Key> = keys.iter().collect();
            let rollup = cache.merged(window, &keys);
            add_into(global.entry(window).or_default(), probe, rollup);
        }
        let bound_us = self.bounds.get(target.as_str()).copied();
        let windows: Vec<WindowStats> = Window::ALL
            .iter()
            .map(|&window| WindowStats::of(window, global.get(&window).unwrap_or(&empty), bound_us))
            .collect();
        seen_from.sort_unstable();
        seen_from.dedup();
        let alone = seen_from.len() == 1;
        let locations: Vec<LocationStats> = seen_from
            .into_iter()
            .map(|location| {
                let at = TargetAt::new(&target, &location);
                let (state, state_since_ms) = self
                    .health
                    .get(&at)
                    .map_or((State::Unknown, 0), |h| (h.state, h.since_ms));
                let status = self.fleet.iter().find(|s| s.location == location);
                let counted = status.is_none_or(|s| s.counted);
                // One counted location's figures are the global ones: no second fold.
                let window = match windows.iter().find(|w| w.window == feed_window) {
                    Some(global) if alone && counted => global.clone(),
                    _ => WindowStats::of(
                        feed_window,
                        &local.remove(&location).unwrap_or_default(),
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
        let quorum = self.config.prober.quorum_of(counted_states.len());
        let (state, state_since_ms) = quorum::global_state(&counted_states, quorum);
        TargetStats {
            target,
            state,
            state_since_ms,
            windows,
            locations,
        }
    }
}
