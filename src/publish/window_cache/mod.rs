//! The rollup windows (`24h`, `7d`, `30d`) kept between publishes, so that a periodic
//! publish decodes only the rollups that changed instead of a month of them per target.
//!
//! For each window and (target, location, probe) the cache keeps the sum of the window's
//! closed buckets (every bucket but the current one) in sparse form, with the version of
//! each bucket in it, and every rollup head of the windows (key and version) as last read.
//! A publish reads only the heads written since the last read (`store::Seen`; every head
//! at the first read, after a failed one, and when the store pruned), keeps a sum only
//! while each of its buckets is still stored with the same version, and then reads and
//! decodes only the rows it lacks: the current buckets of the keys written to, buckets
//! that closed since (unless nothing was written to one since it was read as the current
//! bucket: then that read is summed), and buckets that left the window (to subtract
//! them). The hourly and the daily span are read at once, each on a handle of its own
//! (`span.rs`). Within one hour
//! (one day for `7d` and `30d`) only the keys written to are looked at; once the windows
//! move, every key is.
//! A bucket leaving a window is subtracted from its sum: its distributions and counts
//! exactly, and the spend (a float sum, exact only in one order) added up again from the
//! buckets left, in bucket order, as a cold read adds it. The fields a merge takes whole
//! from one bucket (last ok, last error, the latest named answer and substitution, each
//! capability flag) stay, unless the bucket leaving is the newest holding the sum's value
//! of one: then that sum's scalars are merged again from the rows of its buckets, read
//! without their histograms (as they are when a bucket is summed after a newer one, so
//! scalars are always merged in bucket order). A bucket written to after it was summed — a late
//! run, another location catching up, a copy — has a new version and the sum is rebuilt
//! from the store, so a window from the cache is always the window a cold read gives
//! (tested in `tests/publish.rs`).
//!
//! A fleet's target is seen from several locations: its global window is every counted
//! location's merged. Those closed sums, merged, are kept too, with the stamp of each sum
//! in them (a sum changed gets a new stamp), and taken again while the stamps are the
//! same: a periodic publish then reads the locations' current buckets together with one
//! merged month (`aggregate::sum::RollupSum`) instead of merging every location's month
//! again.

mod closed;
mod heads;
mod span;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use self::span::SpanCache;
use super::joined;
use crate::aggregate::Window;
use crate::aggregate::rollup::Span;
use crate::aggregate::sparse::SparseRollup;
use crate::aggregate::sum::RollupSum;
use crate::result::ResultRecord;
use crate::store::{RollupHead, RollupKey, Store, StoreError};

/// A rollup's target, location and probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// Target id.
    pub target: String,
    /// The location whose runs these are.
    pub location: String,
    /// Probe name.
    pub probe: String,
}

impl Key {
    /// The key of `record`'s runs.
    pub fn of_record(record: &ResultRecord) -> Key {
        Key {
            target: record.target.clone(),
            location: record.location.clone(),
            probe: record.probe.clone(),
        }
    }

    /// The store's key of this key's rollup of `bucket`.
    fn at(&self, bucket: i64) -> RollupKey<'_> {
        (bucket, &self.target, &self.probe, &self.location)
    }

    /// Makes this the key of `head`, reusing its strings' room: the key to look up with
    /// while heads are read (a month of them at a first read), without an allocation per
    /// head.
    fn set(&mut self, head: &RollupHead<'_>) {
        for (text, from) in [
            (&mut self.target, head.target),
            (&mut self.location, head.location),
            (&mut self.probe, head.probe),
        ] {
            text.clear();
            text.push_str(from);
        }
    }
}

/// One target's and probe's closed sums of a window over several locations, merged.
#[derive(Debug)]
struct Merged {
    /// The stamps of the sums merged, in the locations' order.
    stamps: Vec<u64>,
    /// Their sum.
    sum: Arc<SparseRollup>,
}

/// A window, target and probe: what a [`Merged`] is kept under.
type MergedKey = (Window, String, String);

/// Every window's closed sums, by window and key, and the current buckets as last read.
#[derive(Debug, Serialize, Deserialize)]
pub struct WindowCache {
    /// Per span (hours, then days: [`SPANS`]) its windows.
    spans: [SpanCache; 2],
    /// The sums of a target's locations merged since the last refresh
    /// ([`WindowCache::merged`], called for many targets at once). Not kept in a
    /// checkpoint: merged again from the sums.
    #[serde(skip)]
    merged: Mutex<HashMap<MergedKey, Merged>>,
    /// Those merged before it: one is taken again while the sums it merged are unchanged,
    /// and the others are dropped at the next refresh.
    #[serde(skip)]
    merged_before: Mutex<HashMap<MergedKey, Merged>>,
}

impl Default for WindowCache {
    fn default() -> WindowCache {
        WindowCache::new()
    }
}

/// `mutex`'s map, locked: a panic while it was held (another target's summing) leaves it
/// whole, since each change to it is one insert or remove.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The spans whose rollups make the cache's windows, in the order it keeps them.
const SPANS: [Span; 2] = [Span::Hour, Span::Day];

/// Where [`SPANS`] has the span whose rollups make `window` (one of the cache's).
fn span_at(window: Window) -> usize {
    SPANS
        .iter()
        .position(|&span| windows_of(span).contains(&window))
        .unwrap_or(SPANS.len() - 1)
}

/// The rollup windows of `span`.
fn windows_of(span: Span) -> &'static [Window] {
    match span {
        Span::Hour => &[Window::H24],
        Span::Day => &[Window::D7, Window::D30],
    }
}

impl WindowCache {
    /// An empty cache: the first read decodes every rollup of the windows.
    pub fn new() -> WindowCache {
        WindowCache {
            spans: SPANS.map(SpanCache::new),
            merged: Mutex::default(),
            merged_before: Mutex::default(),
        }
    }

    /// `measure` added over every sum the cache holds: each key's and the merged ones.
    fn over_sums(&self, measure: fn(&SparseRollup) -> usize) -> usize {
        let closed: usize = self
            .spans
            .iter()
            .flat_map(SpanCache::sums)
            .map(measure)
            .sum();
        let merged = lock(&self.merged);
        closed + merged.values().map(|m| measure(&m.sum)).sum::<usize>()
    }

    /// Counters held in the sums.
    pub fn counters(&self) -> usize {
        self.over_sums(SparseRollup::counters)
    }

    /// The bytes the sums' counters take: the cache's memory beyond its scalars.
    pub fn bytes(&self) -> usize {
        self.over_sums(SparseRollup::bytes)
    }

    /// How many buckets leaving the windows the last refresh subtracted from those read
    /// ahead in the publishes before it, rather than reading them then.
    pub fn taken_ahead(&self) -> usize {
        self.spans.iter().map(SpanCache::taken_ahead).sum()
    }

    /// Reads what changed for the `24h`, `7d` and `30d` windows at `now_ms`; then
    /// [`WindowCache::keys`], [`WindowCache::whole`] and [`WindowCache::merged`] give them.
    /// The two spans are read at once, the hourly on a handle of its own
    /// ([`Backend::fork`](crate::store::Backend::fork)): most of a read is waiting for the
    /// store, and at a day's turn both spans move.
    pub fn refresh(&mut self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        *lock(&self.merged_before) = std::mem::take(&mut *lock(&self.merged));
        let fork = store.fork()?;
        let [hour, day] = &mut self.spans;
        let (hourly, daily) = std::thread::scope(|scope| {
            let hourly = scope.spawn(move || hour.refresh(&fork, now_ms));
            let daily = day.refresh(store, now_ms);
            (joined(hourly), daily)
        });
        hourly?;
        daily
    }

    /// Every window and key with a closed sum or a current bucket at the last refresh.
    pub fn keys(&self) -> impl Iterator<Item = (Window, &Key)> {
        self.spans.iter().flat_map(SpanCache::keys)
    }

    /// `window` of `key` whole at the last refresh: its closed sum (distributions and its
    /// buckets' scalars) and its current bucket, held apart and read as one.
    pub fn whole(&self, window: Window, key: &Key) -> RollupSum {
        let span = &self.spans[span_at(window)];
        let mut whole = RollupSum::default();
        if let Some(entry) = span.closed_of(window, key) {
            whole.push(Arc::clone(&entry.sum));
        }
        if let Some(current) = span.current_of(key) {
            whole.push(Arc::clone(current));
        }
        whole
    }

    /// `window` of one target and probe over `keys` (theirs, in one location order) whole
    /// at the last refresh: the keys' closed sums merged, then their current buckets, held
    /// apart and read as one. The merged closed sums are kept while none of them changes
    /// (until a bucket closes, in a periodic publish), so a fleet's target costs no merge
    /// at all in a periodic publish instead of one of every location's month.
    pub fn merged(&self, window: Window, keys: &[&Key]) -> RollupSum {
        let [first, ..] = keys else {
            return RollupSum::default();
        };
        if keys.len() == 1 {
            return self.whole(window, first);
        }
        let span = &self.spans[span_at(window)];
        let closed: Vec<_> = keys
            .iter()
            .filter_map(|key| span.closed_of(window, key))
            .collect();
        let stamps: Vec<u64> = closed.iter().map(|c| c.stamp).collect();
        let at = (window, first.target.clone(), first.probe.clone());
        let before = lock(&self.merged_before).remove(&at);
        let merged = match before {
            Some(merged) if merged.stamps == stamps => merged,
            _ => {
                let mut sum = SparseRollup::default();
                for entry in closed {
                    sum.add(&entry.sum);
                }
                Merged {
                    stamps,
                    sum: Arc::new(sum),
                }
            }
        };
        let mut whole = RollupSum::of(Arc::clone(&merged.sum));
        for key in keys {
            if let Some(current) = span.current_of(key) {
                whole.push(Arc::clone(current));
            }
        }
        lock(&self.merged).insert(at, merged);
        whole
    }
}
