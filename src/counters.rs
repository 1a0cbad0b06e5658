//! Process-lifetime run counters for `/metrics`: how many runs this daemon recorded, per
//! target, provider, group, probe, outcome and location, and when each target last ran. They only grow
//! (until the process restarts, which Prometheus reads as a counter reset), unlike the
//! windows' figures, which drop as runs leave the window.
//!
//! The store's writer counts a run once its transaction committed, the same moment it logs
//! it as `recorded`, so a counted run is a stored run. The gateway syncs count what they did
//! here too.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::result::{Outcome, ResultRecord};

/// The labels of one counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunKey {
    /// Target id.
    pub target: String,
    /// Provider name.
    pub provider: String,
    /// Route group.
    pub group: String,
    /// Probe name.
    pub probe: String,
    /// Outcome.
    pub outcome: Outcome,
    /// The location that ran it (this prober's).
    pub location: String,
}

/// The counters of one process, shared by the daemon and the writer that count and the
/// server that shows.
#[derive(Debug, Default)]
pub struct RunCounters {
    state: Mutex<Counts>,
    /// What befell runs besides being recorded.
    pub daemon: DaemonCounts,
    /// What each `[[sync]]` gateway's syncs did, by its name.
    syncs: Mutex<BTreeMap<String, SyncCounts>>,
}

/// What one gateway's syncs did since the process started (the held groups: at the last).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncCounts {
    /// Syncs that read the gateway and went through their changes.
    pub syncs: u64,
    /// Syncs that could not read the gateway (unreachable, refused, malformed).
    pub failures: u64,
    /// Changes the gateway made, by action (`create`, `update`, `delete`).
    pub changes: BTreeMap<&'static str, u64>,
    /// Changes the gateway refused or that could not be made.
    pub refused: u64,
    /// Groups held at their last weights by the last sync.
    pub held: u64,
    /// Unix ms of the last sync in which every change was made; 0 before one.
    pub last_success_ms: i64,
}

/// What a server's publishes did since it started, for `/metrics`: a Prometheus rule can
/// tell a site that stopped being published (`time() - …timestamp_seconds`) or publishes
/// that fail.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishCounts {
    /// Unix ms when the last successful publish ended; 0 before one.
    pub last_success_ms: i64,
    /// Publishes that failed.
    pub failures: u64,
}

/// What the daemon counts besides recorded runs: ticks it skipped, pauses, runs it abandoned
/// or lost, and waits on the writer. Lost and abandoned runs have no record, so these are
/// the only trace of them in `/metrics`.
#[derive(Debug, Default)]
pub struct DaemonCounts {
    /// Runs sent and handed to the writer.
    pub runs: AtomicU64,
    /// Ticks skipped because the previous run of the same job was still going.
    pub skipped_overlap: AtomicU64,
    /// Runs not sent because of a budget (recorded as `skipped_budget`).
    pub skipped_budget: AtomicU64,
    /// Pauses imposed by 429s.
    pub rate_limit_pauses: AtomicU64,
    /// Runs abandoned at shutdown (still waiting for admission, or past the grace period).
    pub abandoned: AtomicU64,
    /// Sends that found the writer's queue full and waited for room.
    pub writer_waits: AtomicU64,
    /// Runs not recorded: the writer had stopped, or the store was unreachable for longer
    /// than `[store] buffer` runs.
    pub lost: AtomicU64,
}

#[derive(Debug, Default)]
struct Counts {
    runs: BTreeMap<RunKey, u64>,
    /// Unix ms of each target's latest recorded run.
    last_run_ms: BTreeMap<String, i64>,
}

impl RunCounters {
    /// Counts one recorded run.
    pub fn count(&self, record: &ResultRecord) {
        let mut counts = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let key = RunKey {
            target: record.target.clone(),
            provider: record.provider.clone(),
            group: record.group.clone(),
            probe: record.probe.clone(),
            outcome: record.outcome,
            location: record.location.clone(),
        };
        *counts.runs.entry(key).or_default() += 1;
        let last = counts.last_run_ms.entry(record.target.clone()).or_default();
        *last = (*last).max(record.ts.ms());
    }

    /// Updates the counts of the gateway `name` with `note`.
    pub fn note_sync(&self, name: &str, note: impl FnOnce(&mut SyncCounts)) {
        let mut syncs = self
            .syncs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        note(syncs.entry(name.to_owned()).or_default());
    }

    /// A copy of every gateway's sync counts.
    pub fn syncs(&self) -> BTreeMap<String, SyncCounts> {
        self.syncs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// A copy of the counters and of each target's latest run (unix ms).
    pub fn snapshot(&self) -> (BTreeMap<RunKey, u64>, BTreeMap<String, i64>) {
        let counts = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        (counts.runs.clone(), counts.last_run_ms.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::sample;

    #[test]
    fn counts_only_grow_and_the_latest_run_wins() {
        let counters = RunCounters::default();
        let mut early = sample(Outcome::Ok);
        early.ts = crate::units::Timestamp::from_ms(2_000);
        let mut late = sample(Outcome::Ok);
        late.ts = crate::units::Timestamp::from_ms(1_000);
        let mut failed = sample(Outcome::Timeout);
        failed.ts = crate::units::Timestamp::from_ms(500);
        counters.count(&early);
        counters.count(&late);
        counters.count(&failed);
        let (runs, last) = counters.snapshot();
        let ok = runs
            .iter()
            .find(|(k, _)| k.outcome == Outcome::Ok)
            .map(|(_, n)| *n);
        assert_eq!(ok, Some(2));
        assert_eq!(runs.values().sum::<u64>(), 3);
        assert_eq!(last["p/m"], 2_000);
    }
}
