//! What a publisher keeps of the store between publishes, so that a periodic publish reads
//! what changed rather than a month of history: the rollup windows (`WindowCache`), the
//! daily and hourly figures of the bar, charts and heatmap for closed buckets, the last
//! hour's runs folded per minute (`publish::minutes`) and each target's last runs.
//!
//! Each publish reads the current and previous hour's and day's rollup scalars (a run may
//! still land in the previous bucket just after it closed) and the runs written since the
//! last read, whatever their finishing time ([`Seen`]: the store's own record of what a
//! read saw, so a run written late — after a store outage, or by a fleet location catching
//! up — is read like any other). A new run joins its target's last runs and, when it
//! finished within the hour, its minute; one that came too late to be summed in the order a
//! cold read sums it (`Minutes::takes_in_order`) makes the hour's runs be read whole again.
//! The `5m` and `1h` windows are folded from the kept runs, the others come from the
//! `WindowCache`, which reads the rollup heads written since its last read: windows, the
//! feed and the runs listed never lag. Closed buckets of the bar, the daily table, the
//! charts and the heatmap are read once — the hours as each closes — and all again at the
//! first publish of each day: a run written late into an older hour or day shows there from
//! the next day. A new `History` reads everything, which is what `sonde publish` does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::latest::LatestRun;
use super::minutes::Minutes;
use super::window_cache::WindowCache;
use super::windows::summarize_with;
use super::{BAR_DAYS, HEATMAP_DAYS, LAST_RUNS};
use crate::aggregate::quality::Quality;
use crate::aggregate::rollup::{Scalars, Span};
use crate::aggregate::{TargetStats, Window};
use crate::config::Config;
use crate::interned::Names;
use crate::result::{Outcome, ResultRecord};
use crate::store::{Seen, Store, StoreError};

/// One hour of a target on the TTFT chart and heatmap: its busiest probe's figures, in 8
/// bytes (a publisher keeps a month of them per target; the charts draw them to a pixel,
/// and a TTFT in milliseconds keeps 7 significant digits in an `f32`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourPoint {
    /// TTFT median, ms.
    ttft_p50_ms: f32,
    /// TTFT 95th percentile, ms; NaN when the hour had too few runs for one.
    ttft_p95_ms: f32,
}

impl HourPoint {
    /// TTFT median, ms.
    pub fn ttft_p50_ms(&self) -> f64 {
        f64::from(self.ttft_p50_ms)
    }

    /// TTFT 95th percentile, ms, when the hour had one.
    pub fn ttft_p95_ms(&self) -> Option<f64> {
        Some(f64::from(self.ttft_p95_ms)).filter(|ms| !ms.is_nan())
    }
}

/// One day of a target on the uptime bar, the daily table and the quality trend: what they
/// show of every probe's and location's runs that day. A publisher keeps the bar's 90 days
/// per target; the day's whole scalars (outcome map, latest error and served model) took
/// ten times the room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayPoint {
    /// Runs of every outcome.
    attempts: u64,
    /// `ok` runs.
    ok: u64,
    /// Provider faults.
    pub failures: u64,
    /// The quality canary's judgements.
    pub quality: Quality,
}

impl DayPoint {
    /// Counts a rollup's runs in.
    fn add(&mut self, scalars: &Scalars) {
        self.attempts += scalars.attempts();
        self.ok += scalars.count(Outcome::Ok);
        self.failures += scalars.failures;
        self.quality.merge(&scalars.quality);
    }

    /// Runs counted, of every outcome.
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// ok ÷ (ok + provider faults), as [`Scalars::availability`]; `None` without either.
    pub fn availability(&self) -> Option<f64> {
        let counted = self.ok + self.failures;
        (counted > 0).then(|| self.ok as f64 / counted as f64)
    }
}

/// A bucket's start in whole hours since the epoch (hours and days both begin on one): half
/// the bytes of unix ms, beside each of a month of points per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hour(u32);

impl Hour {
    /// The hour `ms` (a bucket's start) begins.
    fn of(ms: i64) -> Hour {
        Hour(u32::try_from(ms.div_euclid(Span::Hour.ms())).unwrap_or(0))
    }

    /// Its start, unix ms.
    fn ms(self) -> i64 {
        i64::from(self.0) * Span::Hour.ms()
    }
}

/// Per target, per bucket.
type ByBucket<T> = HashMap<String, BTreeMap<i64, T>>;

/// Per target, its closed buckets' figures, oldest first (shared with the snapshots
/// published from them, not copied).
type Kept<T> = HashMap<String, Arc<Vec<(Hour, T)>>>;

/// One target's figures per bucket, oldest first: the closed buckets' as a [`History`]
/// keeps them (shared), then the open ones' read at the publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<T> {
    closed: Arc<Vec<(Hour, T)>>,
    open: Vec<(Hour, T)>,
}

impl<T> Series<T> {
    /// Every bucket's start (unix ms) and its figures, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (i64, &T)> {
        self.closed
            .iter()
            .chain(&self.open)
            .map(|(hour, figures)| (hour.ms(), figures))
    }
}

impl<T> Default for Series<T> {
    fn default() -> Self {
        Series {
            closed: Arc::default(),
            open: Vec::new(),
        }
    }
}

/// Per target its series: the closed buckets of `kept` followed by those of `open` (all
/// later).
fn series<T: Clone>(kept: &Kept<T>, open: ByBucket<T>) -> HashMap<String, Series<T>> {
    let mut out: HashMap<String, Series<T>> = kept
        .iter()
        .map(|(target, closed)| {
            let series = Series {
                closed: Arc::clone(closed),
                open: Vec::new(),
            };
            (target.clone(), series)
        })
        .collect();
    for (target, buckets) in open {
        let open = &mut out.entry(target).or_default().open;
        open.extend(
            buckets
                .into_iter()
                .map(|(b, figures)| (Hour::of(b), figures)),
        );
    }
    out
}

/// Appends to each target's kept buckets those of `later` (all after the kept ones). Grown
/// to fit, not doubled: an hour is appended to every target's month of hours each hour.
fn append<T: Clone>(kept: &mut Kept<T>, later: ByBucket<T>) {
    for (target, buckets) in later {
        let kept = Arc::make_mut(kept.entry(target).or_default());
        kept.reserve_exact(buckets.len());
        kept.extend(
            buckets
                .into_iter()
                .map(|(b, figures)| (Hour::of(b), figures)),
        );
    }
}

/// Drops the kept buckets before `first` (copying a target's only when a snapshot still
/// shares it and it has some to drop).
fn drop_before<T: Clone>(kept: &mut Kept<T>, first: i64) {
    for buckets in kept.values_mut() {
        let old = buckets.partition_point(|(b, _)| b.ms() < first);
        if old > 0 {
            Arc::make_mut(buckets).drain(..old);
        }
    }
    kept.retain(|_, buckets| !buckets.is_empty());
}

/// The figures of closed buckets, read once.
#[derive(Debug, Default)]
struct Closed {
    /// The day they were read whole (`None`: never).
    day: Option<i64>,
    /// Hours before this are in `hours`.
    hours_to: i64,
    /// Days before this are in `days`.
    days_to: i64,
    /// The busiest probe's TTFT per target and closed hour.
    hours: Kept<HourPoint>,
    /// Every probe's and location's scalars merged, per target and closed day.
    days: Kept<DayPoint>,
}

/// What a publisher keeps between publishes.
#[derive(Debug, Default)]
pub struct History {
    /// The rollup windows.
    windows: WindowCache,
    closed: Closed,
    /// The last hour's runs folded per key and minute (the `5m` and `1h` windows').
    minutes: Minutes,
    /// What the last read of runs saw; `None`: the next reads the hour's runs whole.
    runs_seen: Option<Seen>,
    /// Per target its last [`LAST_RUNS`] runs, newest first.
    latest: Arc<HashMap<String, Arc<Vec<LatestRun>>>>,
    /// The names those runs share.
    names: Names,
}

/// The buckets of `target` in `by`, added empty when it has none (its name copied only
/// then: rows come one per bucket).
fn target_entry<'a, T>(by: &'a mut ByBucket<T>, target: &str) -> &'a mut BTreeMap<i64, T> {
    if !by.contains_key(target) {
        by.insert(target.to_owned(), BTreeMap::new());
    }
    by.get_mut(target).expect("just inserted")
}

/// Keeps the point of the busier of two probes (or locations) of one hour, by ok runs (on a
/// tie, the later read, as a cold read would).
fn busiest(slot: &mut Option<(u32, HourPoint)>, scalars: &Scalars) {
    let Some(p50) = scalars.ttft_p50_ms else {
        return;
    };
    let ok = u32::try_from(scalars.count(Outcome::Ok)).unwrap_or(u32::MAX);
    if slot.is_none_or(|(busiest, _)| ok >= busiest) {
        let point = HourPoint {
            ttft_p50_ms: p50 as f32,
            ttft_p95_ms: scalars.ttft_p95_ms.map_or(f32::NAN, |ms| ms as f32),
        };
        *slot = Some((ok, point));
    }
}

/// Per target, the busiest probe's point of each hour from `since` to before `before` (an
/// hour without a streamed run has none).
fn hour_points(store: &Store, since: i64, before: i64) -> Result<ByBucket<HourPoint>, StoreError> {
    let mut points: ByBucket<Option<(u32, HourPoint)>> = HashMap::new();
    store.each_rollup_scalars_since(Span::Hour, since, &mut |bucket, target, _, scalars| {
        if bucket < before {
            busiest(
                target_entry(&mut points, target).entry(bucket).or_default(),
                &scalars,
            );
        }
    })?;
    Ok(points
        .into_iter()
        .map(|(target, hours)| {
            let hours = hours.into_iter().filter_map(|(b, p)| Some((b, p?.1)));
            (target, hours.collect())
        })
        .collect())
}

/// Merges into `days` every probe's and location's scalars of each day from `since` to
/// before `before`.
fn merge_days(
    store: &Store,
    since: i64,
    before: i64,
    days: &mut ByBucket<DayPoint>,
) -> Result<(), StoreError> {
    store.each_rollup_scalars_since(Span::Day, since, &mut |bucket, target, _, scalars| {
        if bucket < before {
            let merged = target_entry(days, target);
            merged.entry(bucket).or_default().add(&scalars);
        }
    })
}

impl History {
    /// An empty history: the first publish reads everything.
    pub fn new() -> History {
        History::default()
    }

    /// Counters kept in the rollup windows' sums.
    pub fn counters(&self) -> usize {
        self.windows.counters()
    }

    /// The bytes those counters take.
    pub fn counter_bytes(&self) -> usize {
        self.windows.bytes()
    }

    /// Every target's windows and states at `now_ms` (`windows::summarize`), reading only
    /// what changed since the last call.
    pub fn stats(
        &mut self,
        config: &Config,
        store: &Store,
        now_ms: i64,
    ) -> Result<Vec<TargetStats>, StoreError> {
        self.advance(config, store, now_ms)?;
        summarize_with(
            store,
            config,
            now_ms,
            &mut self.windows,
            Some(&self.minutes),
        )
    }

    /// Reads what changed since the last call for `config`'s targets at `now_ms`.
    fn advance(&mut self, config: &Config, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        self.advance_closed(store, now_ms)?;
        self.advance_runs(config, store, now_ms)
    }

    /// Reads the buckets that closed (all of them at the first publish of a day).
    fn advance_closed(&mut self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        let (hour, day) = (Span::Hour, Span::Day);
        let today = day.bucket_of(now_ms);
        let open_hours = hour.bucket_of(now_ms) - hour.ms();
        let open_days = today - day.ms();
        let closed = &mut self.closed;
        if closed.day != Some(today) {
            *closed = Closed {
                day: Some(today),
                hours_to: hour.bucket_of(now_ms) - HEATMAP_DAYS * day.ms(),
                days_to: today - (BAR_DAYS - 1) * day.ms(),
                ..Closed::default()
            };
        }
        if closed.hours_to < open_hours {
            append(
                &mut closed.hours,
                hour_points(store, closed.hours_to, open_hours)?,
            );
            closed.hours_to = open_hours;
        }
        if closed.days_to < open_days {
            let mut days = HashMap::new();
            merge_days(store, closed.days_to, open_days, &mut days)?;
            append(&mut closed.days, days);
            closed.days_to = open_days;
        }
        drop_before(
            &mut closed.hours,
            hour.bucket_of(now_ms) - HEATMAP_DAYS * day.ms(),
        );
        drop_before(&mut closed.days, today - (BAR_DAYS - 1) * day.ms());
        Ok(())
    }

    /// Reads the runs written since the last read (late ones too), or the hour's whole at
    /// the first read and when a run came too late to be summed as a cold read sums it.
    fn advance_runs(
        &mut self,
        config: &Config,
        store: &Store,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let hour_start = Window::H1.start(now_ms);
        if let Some(after) = self.runs_seen.take() {
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
                self.runs_seen = Some(seen);
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
        let mut latest = HashMap::new();
        for target in &config.targets {
            latest.insert(
                target.id.clone(),
                Arc::new(
                    store
                        .latest_results(&target.id, LAST_RUNS)?
                        .iter()
                        .map(|record| LatestRun::of(record, &mut self.names))
                        .collect(),
                ),
            );
        }
        self.latest = Arc::new(latest);
        self.runs_seen = Some(seen);
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
            if runs.iter().any(|run| *run.run_id == *record.run_id) {
                continue;
            }
            runs.push(LatestRun::of(record, &mut self.names));
            runs.sort_by(|a, b| (b.ts, &b.run_id).cmp(&(a.ts, &a.run_id)));
            runs.truncate(LAST_RUNS);
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

    /// Per target, the daily scalars of the bar's days, oldest first: closed days as kept,
    /// the open ones read now.
    pub(super) fn daily(
        &self,
        store: &Store,
        now_ms: i64,
    ) -> Result<HashMap<String, Series<DayPoint>>, StoreError> {
        let mut open = HashMap::new();
        let from = Span::Day.bucket_of(now_ms) - Span::Day.ms();
        merge_days(store, from, i64::MAX, &mut open)?;
        Ok(series(&self.closed.days, open))
    }

    /// Per target, the hourly chart points of the heatmap's days, oldest first: closed hours
    /// as kept, the open ones read now.
    pub(super) fn hourly(
        &self,
        store: &Store,
        now_ms: i64,
    ) -> Result<HashMap<String, Series<HourPoint>>, StoreError> {
        let from = Span::Hour.bucket_of(now_ms) - Span::Hour.ms();
        Ok(series(
            &self.closed.hours,
            hour_points(store, from, i64::MAX)?,
        ))
    }

    /// Per target, its last runs, newest first.
    pub(super) fn latest(&self) -> Arc<HashMap<String, Arc<Vec<LatestRun>>>> {
        Arc::clone(&self.latest)
    }
}
