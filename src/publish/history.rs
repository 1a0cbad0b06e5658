//! What a publisher keeps of the store between publishes, so that a periodic publish reads
//! what changed rather than a month of history: the rollup windows (`WindowCache`), the
//! points of the bar, charts and heatmap (`publish::points`), the last hour's runs folded
//! per minute (`publish::minutes`) and each target's last runs.
//!
//! Each publish reads the runs written since the last read, whatever their finishing time
//! ([`Seen`]: the store's own record of what a read saw, so a run written late — after a
//! store outage, or by a fleet location catching up — is read like any other). A new run
//! joins its target's last runs and, when it finished within the hour, its minute; one that
//! came too late to be summed in the order a cold read sums it
//! (`Minutes::takes_in_order`) makes the hour's runs be read whole again. The `5m` and `1h`
//! windows are folded from the kept runs, the others come from the `WindowCache`, and the
//! bar's and heatmap's points from `Points`, each reading the rollups written since its last
//! read: windows, the feed, the pages and the runs listed never lag. A new `History` reads
//! everything, which is what `sonde publish` does.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::incidents::KeptIncidents;
use super::latest::LatestRun;
use super::minutes::Minutes;
use super::points::{DayPoint, HourPoint, Points, Series};
use super::window_cache::WindowCache;
use super::windows::{locations, summarize_from};
use super::{BAR_DAYS, HEATMAP_DAYS, LAST_RUNS, Snapshot, joined};
use crate::aggregate::Window;
use crate::aggregate::health::TargetHealth;
use crate::aggregate::quorum::LocationStatus;
use crate::aggregate::rollup::Span;
use crate::config::Config;
use crate::interned::Names;
use crate::result::ResultRecord;
use crate::store::{Incident, Seen, Store, StoreError, TargetAt};

/// What a publisher keeps between publishes; saved as its checkpoint
/// (`publish::checkpoint`), each of the parts [`History::parts`] names apart.
#[derive(Debug)]
pub struct History {
    /// The time of the last snapshot, unix ms; `None` before the first.
    at_ms: Option<i64>,
    /// The rollup windows.
    windows: WindowCache,
    /// The heatmap's and TTFT chart's hours.
    hours: Points<HourPoint>,
    /// The uptime bar's and daily table's days.
    days: Points<DayPoint>,
    /// The runs: the last hour's per minute, and each target's last.
    runs: Runs,
    /// The incidents of the bar's days, kept from one read to the next.
    incidents: KeptIncidents,
    /// The sonde version whose checkpoint this was restored from, when another than this
    /// one (`checkpoint::OtherVersion::Bridge`): published from, never saved.
    other_version: Option<String>,
}

/// A history's parts as a checkpoint keeps them ([`History::parts`]).
pub(super) type Parts<'a> = (
    &'a WindowCache,
    &'a Points<HourPoint>,
    &'a Points<DayPoint>,
    &'a Runs,
    &'a KeptIncidents,
);

/// A history's parts as a checkpoint restores them ([`History::from_parts`]): `None` for
/// a part left (saved in another layout, or damaged).
pub(super) type Restored = (
    Option<WindowCache>,
    Option<Points<HourPoint>>,
    Option<Points<DayPoint>>,
    Option<Runs>,
    Option<KeptIncidents>,
);

/// What a snapshot reads beside what a [`History`] keeps: the fleet's locations, the
/// targets' states, the bar's days, the heatmap's hours and the incidents.
struct Read {
    fleet: Vec<LocationStatus>,
    health: HashMap<TargetAt, TargetHealth>,
    daily: HashMap<String, Series<DayPoint>>,
    hourly: HashMap<String, Series<HourPoint>>,
    incidents: Arc<Vec<Incident>>,
}

/// The runs a publisher keeps between publishes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Runs {
    /// The last hour's runs folded per key and minute (the `5m` and `1h` windows').
    minutes: Minutes,
    /// What the last read of runs saw; `None`: the next reads the hour's runs whole.
    seen: Option<Seen>,
    /// Per target its last [`LAST_RUNS`] runs, newest first.
    latest: Arc<HashMap<String, Arc<Vec<LatestRun>>>>,
    /// The targets whose last runs were read from the store, sorted: every other target in
    /// `latest` holds only the runs written since (a fleet location's target that is not
    /// in this config), so one that joins the config has its older runs read then.
    read_for: Vec<String>,
    /// The names those runs share (made again when a checkpoint is restored).
    #[serde(skip)]
    names: Names,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    /// An empty history: the first publish reads everything.
    pub fn new() -> History {
        History {
            at_ms: None,
            windows: WindowCache::new(),
            hours: Points::new(Span::Hour),
            days: Points::new(Span::Day),
            runs: Runs::default(),
            incidents: KeptIncidents::default(),
            other_version: None,
        }
    }

    /// A history of everything the store holds at `now_ms`, read whole: what replaces one
    /// restored from another version's checkpoint.
    pub fn read_whole(config: &Config, store: &Store, now_ms: i64) -> Result<History, StoreError> {
        let mut history = History::new();
        history.read(config, store, now_ms)?;
        Ok(history)
    }

    /// What a checkpoint keeps of it, in parts it encodes and decodes apart (on every core
    /// at once): the rollup windows, the hours' points, the days' points, the runs and the
    /// incidents.
    pub(super) fn parts(&self) -> Parts<'_> {
        (
            &self.windows,
            &self.hours,
            &self.days,
            &self.runs,
            &self.incidents,
        )
    }

    /// The history a checkpoint kept: its last snapshot at `at_ms`, and the
    /// [`History::parts`] it saved; a part left (`None`: another layout, or damaged) is new,
    /// and read whole at the next snapshot.
    pub(super) fn from_parts(
        at_ms: i64,
        (windows, hours, days, runs, incidents): Restored,
    ) -> History {
        let new = History::new();
        History {
            at_ms: Some(at_ms),
            windows: windows.unwrap_or(new.windows),
            hours: hours.unwrap_or(new.hours),
            days: days.unwrap_or(new.days),
            runs: runs.unwrap_or(new.runs),
            incidents: incidents.unwrap_or(new.incidents),
            other_version: None,
        }
    }

    /// The sonde version whose checkpoint this was restored from, when another than this
    /// one: a server publishes from it while it reads the store whole
    /// ([`History::read_whole`]), and never saves it.
    pub fn other_version(&self) -> Option<&str> {
        self.other_version.as_deref()
    }

    /// Marks this history as restored from `sonde`'s checkpoint.
    pub(super) fn set_other_version(&mut self, sonde: String) {
        self.other_version = Some(sonde);
    }

    /// The time of the last snapshot read, unix ms; `None` before the first (a new history,
    /// which reads everything).
    pub fn at_ms(&self) -> Option<i64> {
        self.at_ms
    }

    /// Forgets the runs (the next snapshot reads the hour's whole): a checkpoint restored
    /// long after it was taken would otherwise read every run written since at once.
    pub(super) fn forget_runs(&mut self) {
        self.runs = Runs::default();
    }

    /// Shares the names of the last runs again, as they were before a checkpoint was saved
    /// (decoding gives each its own copy).
    pub(super) fn share_names(&mut self) {
        let Runs { latest, names, .. } = &mut self.runs;
        for runs in Arc::make_mut(latest).values_mut() {
            for run in Arc::make_mut(runs) {
                run.probe = names.get(&run.probe);
                run.location = names.get(&run.location);
                run.served_model = run.served_model.as_deref().map(|model| names.get(model));
            }
        }
        self.incidents.share_names(names);
    }

    /// Counters kept in the rollup windows' sums.
    pub fn counters(&self) -> usize {
        self.windows.counters()
    }

    /// How many buckets leaving the rollup windows the last snapshot subtracted from those
    /// read ahead in the publishes before it (at an hour's or a day's turn), rather than
    /// reading them then.
    pub fn taken_ahead(&self) -> usize {
        self.windows.taken_ahead()
    }

    /// The bytes those counters take.
    pub fn counter_bytes(&self) -> usize {
        self.windows.bytes()
    }

    /// The snapshot at `now_ms`, reading only what changed since the last call. The store
    /// is read in three at once, each on a handle of its own
    /// ([`Backend::fork`](crate::store::Backend::fork)), since most of a periodic publish
    /// is waiting for the store: the runs written since, the rollup windows, and the rest
    /// (locations, states, the bar's days, the heatmap's hours and the incidents). Then the
    /// windows are summed.
    pub(super) fn snapshot(
        &mut self,
        config: &Config,
        store: &Store,
        now_ms: i64,
    ) -> Result<Snapshot, StoreError> {
        let read = self.read(config, store, now_ms)?;
        let stats = summarize_from(
            config,
            now_ms,
            &read.fleet,
            &read.health,
            &self.windows,
            &self.runs.minutes,
        );
        Ok(Snapshot {
            now_ms,
            by_target: stats
                .iter()
                .enumerate()
                .map(|(i, s)| (s.target.clone(), i))
                .collect(),
            stats,
            locations: read.fleet.into_iter().filter(|s| !s.retired).collect(),
            daily: read.daily,
            hourly: read.hourly,
            incidents: read.incidents,
            latest: Arc::clone(&self.runs.latest),
        })
    }

    /// Reads what changed since the last read, at `now_ms`: [`History::snapshot`]'s reads.
    fn read(&mut self, config: &Config, store: &Store, now_ms: i64) -> Result<Read, StoreError> {
        let (for_runs, for_windows) = (store.fork()?, store.fork()?);
        let History {
            at_ms,
            windows,
            hours,
            days,
            runs,
            incidents: kept_incidents,
            other_version: _,
        } = self;
        let (advancing, refreshing) = (&mut *runs, &mut *windows);
        let (ran, refreshed, rest) = std::thread::scope(|scope| {
            let ran = scope.spawn(move || advancing.advance(config, &for_runs, now_ms));
            let refreshed = scope.spawn(move || refreshing.refresh(&for_windows, now_ms));
            let rest = (|| {
                let fleet = locations(store, now_ms)?;
                let health = store.health()?;
                let daily = days.read(
                    store,
                    Span::Day.bucket_of(now_ms) - (BAR_DAYS - 1) * Span::Day.ms(),
                    now_ms,
                )?;
                let hourly = hours.read(
                    store,
                    Span::Hour.bucket_of(now_ms) - HEATMAP_DAYS * Span::Day.ms(),
                    now_ms,
                )?;
                let incidents = kept_incidents.read(store, now_ms - BAR_DAYS * Span::Day.ms())?;
                Ok::<_, StoreError>(Read {
                    fleet,
                    health,
                    daily,
                    hourly,
                    incidents,
                })
            })();
            (joined(ran), joined(refreshed), rest)
        });
        ran?;
        refreshed?;
        let read = rest?;
        *at_ms = Some(now_ms);
        Ok(read)
    }
}

/// Puts `record` among a target's last `runs` (newest first, at most [`LAST_RUNS`]) in its
/// place, unless it is there already or older than all of a full list.
fn insert_run(runs: &mut Vec<LatestRun>, record: &ResultRecord, names: &mut Names) {
    if runs.iter().any(|run| run.run_id.as_str() == record.run_id) {
        return;
    }
    let newer = runs
        .partition_point(|run| (run.ts, run.run_id.as_str()) > (record.ts, record.run_id.as_str()));
    if newer == LAST_RUNS {
        return;
    }
    // Room is made before the run goes in: a list copied from a snapshot has no spare
    // room, and growing it would double it for good.
    if runs.len() == LAST_RUNS {
        runs.pop();
    }
    runs.insert(newer, LatestRun::of(record, names));
}

impl Runs {
    /// Reads the runs written since the last read (late ones too), or the hour's whole at
    /// the first read and when a run came too late to be summed as a cold read sums it.
    fn advance(&mut self, config: &Config, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        let hour_start = Window::H1.start(now_ms);
        if let Some(after) = self.seen.take() {
            // Before the runs written since: a run in both is taken once.
            self.read_latest(config, store, false)?;
            let mut written = Vec::new();
            let seen = store.each_result_written(i64::MIN, Some(&after), &mut |record| {
                written.push(record);
            })?;
            let in_order = written
                .iter()
                .filter(|record| record.ts.ms() >= hour_start)
                .all(|record| self.minutes.takes_in_order(record));
            if in_order {
                if seen.results_pruned_before != after.results_pruned_before {
                    self.forget_before(seen.results_pruned_before);
                }
                self.add_written(written, hour_start);
                self.minutes.settle(now_ms);
                self.seen = Some(seen);
                return Ok(());
            }
        }
        self.minutes = Minutes::default();
        let minutes = &mut self.minutes;
        let seen = store.each_result_written(hour_start, None, &mut |record| {
            minutes.add(&record);
        })?;
        self.minutes.settle(now_ms);
        // Read after the runs: a run written in between is in both, and taken once.
        self.read_latest(config, store, true)?;
        self.seen = Some(seen);
        Ok(())
    }

    /// Reads the last runs of the config's targets whose runs were not read yet (`whole`:
    /// of every one, after the hour's runs were read whole), each merged with what was
    /// written since: a checkpoint restored for a config with a target more reads that
    /// target's runs alone, and then holds what a cold read would.
    fn read_latest(
        &mut self,
        config: &Config,
        store: &Store,
        whole: bool,
    ) -> Result<(), StoreError> {
        if whole {
            self.latest = Arc::default();
            self.read_for.clear();
        }
        let ids: Vec<&str> = config
            .targets
            .iter()
            .map(|t| t.id.as_str())
            .filter(|id| {
                self.read_for
                    .binary_search_by(|r| r.as_str().cmp(id))
                    .is_err()
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let Runs { latest, names, .. } = self;
        let latest = Arc::make_mut(latest);
        for id in &ids {
            latest.entry((*id).to_owned()).or_default();
        }
        // Each run kept as it comes, never the records of every target at once.
        store.each_latest_results(&ids, LAST_RUNS, &mut |record| {
            if let Some(runs) = latest.get_mut(&record.target) {
                insert_run(Arc::make_mut(runs), &record, names);
            }
        })?;
        for id in &ids {
            if let Some(runs) = latest.get_mut(*id) {
                Arc::make_mut(runs).shrink_to_fit();
            }
        }
        self.read_for.extend(ids.into_iter().map(str::to_owned));
        self.read_for.sort_unstable();
        Ok(())
    }

    /// Adds runs newly written: each among its target's last runs (unless it is there
    /// already), and into its minute when it finished from `hour_start` on.
    fn add_written(&mut self, written: Vec<ResultRecord>, hour_start: i64) {
        if written.is_empty() {
            // Nothing changes: no copy of what a publish still rendering shares.
            return;
        }
        // A publish rendering from them may still share them: then the map of targets and
        // each target given a new run is copied, no more.
        let latest = Arc::make_mut(&mut self.latest);
        for record in &written {
            let runs = Arc::make_mut(latest.entry(record.target.clone()).or_default());
            insert_run(runs, record, &mut self.names);
        }
        for record in written.iter().filter(|r| r.ts.ms() >= hour_start) {
            self.minutes.add(record);
        }
    }

    /// Forgets the last runs that finished before `before_ms`: the store pruned them.
    fn forget_before(&mut self, before_ms: i64) {
        let latest = Arc::make_mut(&mut self.latest);
        for runs in latest.values_mut() {
            if runs.iter().any(|run| run.ts.ms() < before_ms) {
                Arc::make_mut(runs).retain(|run| run.ts.ms() >= before_ms);
            }
        }
    }
}
