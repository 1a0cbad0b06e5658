//! The rollup windows (`24h`, `7d`, `30d`) kept between publishes, so that a periodic
//! publish decodes only the rollups that changed instead of a month of them per target.
//!
//! For each window and (target, location, probe) the cache keeps the sum of the window's
//! closed buckets (every bucket but the current one) in sparse form, with the version of
//! each bucket in it. A publish reads every rollup head of the windows (key and version,
//! from an index: not the rows), keeps a sum only while each of its buckets is still stored
//! with the same version, and then reads and decodes only the rows it lacks: the current
//! buckets, buckets that closed since, and buckets that left the window (to subtract them).
//! Scalars do not subtract: when a bucket leaves a window (once an hour for `24h`, once a
//! day for `7d` and `30d`) that window's scalars are merged again from the rows of its
//! buckets, read without their histograms. A bucket written to after it was summed — a late
//! run, another location catching up, a copy — has a new version and the sum is rebuilt
//! from the store, so a window from the cache is always the window a cold read gives
//! (tested in `tests/publish.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::aggregate::Window;
use crate::aggregate::rollup::{Scalars, Span};
use crate::aggregate::sparse::SparseRollup;
use crate::result::ResultRecord;
use crate::store::{RollupHead, RollupKey, Store, StoreError};

/// A rollup's target, location and probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The key of `head`, taking its text (a month's heads are walked at every publish).
    fn of(head: RollupHead) -> Key {
        Key {
            target: head.target,
            location: head.location,
            probe: head.probe,
        }
    }
}

/// The closed buckets of one window and key, summed.
#[derive(Debug, Default)]
struct Closed {
    /// Each bucket in the sum and its version, ascending by bucket.
    buckets: Vec<(i64, i64)>,
    /// The buckets' rollups added: distributions and scalars. Scalars do not subtract, so
    /// when a bucket leaves the window they are merged again from the rows still in it.
    sum: SparseRollup,
}

impl Closed {
    /// The version of `bucket` in the sum, if it is in it.
    fn version(&self, bucket: i64) -> Option<i64> {
        let at = self.buckets.binary_search_by_key(&bucket, |b| b.0).ok()?;
        Some(self.buckets[at].1)
    }

    /// Records `bucket` at `version` as summed.
    fn insert(&mut self, bucket: i64, version: i64) {
        let at = self.buckets.partition_point(|b| b.0 < bucket);
        self.buckets.insert(at, (bucket, version));
    }

    /// Records `bucket` as no longer summed.
    fn remove(&mut self, bucket: i64) {
        self.buckets.retain(|b| b.0 != bucket);
    }
}

/// Every window's closed sums, by window and key, and the current buckets as last read.
#[derive(Debug, Default)]
pub struct WindowCache {
    closed: HashMap<(Window, Key), Closed>,
    /// Each span's current bucket per key, read at every [`WindowCache::refresh`].
    open: HashMap<(Span, Key), SparseRollup>,
}

/// The span whose rollups make `window` (one of the cache's).
fn span_of(window: Window) -> Span {
    if windows_of(Span::Hour).contains(&window) {
        Span::Hour
    } else {
        Span::Day
    }
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
        WindowCache::default()
    }

    /// Counters held in the sums.
    pub fn counters(&self) -> usize {
        self.closed.values().map(|c| c.sum.counters()).sum()
    }

    /// The bytes the sums' counters take: the cache's memory beyond its scalars.
    pub fn bytes(&self) -> usize {
        self.closed.values().map(|c| c.sum.bytes()).sum()
    }

    /// Reads what changed for the `24h`, `7d` and `30d` windows at `now_ms`; then
    /// [`WindowCache::keys`] and [`WindowCache::whole`] give them.
    pub fn refresh(&mut self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        for span in [Span::Hour, Span::Day] {
            // A sum whose bucket changed between the two reads is dropped and read again.
            while !self.read_span(store, span, now_ms)? {}
        }
        Ok(())
    }

    /// Every window and key with a closed sum or a current bucket at the last refresh.
    pub fn keys(&self) -> impl Iterator<Item = (Window, &Key)> {
        let open = self.open.keys().flat_map(move |(span, key)| {
            windows_of(*span)
                .iter()
                .filter(move |&&window| !self.closed.contains_key(&(window, key.clone())))
                .map(move |&window| (window, key))
        });
        self.closed.keys().map(|(w, k)| (*w, k)).chain(open)
    }

    /// `window` of `key` whole at the last refresh: its closed sum, its buckets' scalars
    /// and its current bucket. Built when asked for, one at a time: every window of every
    /// key at once would be a second copy of the cache.
    pub fn whole(&self, window: Window, key: &Key) -> SparseRollup {
        let mut whole = SparseRollup::default();
        if let Some(entry) = self.closed.get(&(window, key.clone())) {
            whole.add(&entry.sum);
        }
        if let Some(current) = self.open.get(&(span_of(window), key.clone())) {
            whole.add(current);
        }
        whole
    }

    /// Reads `span`'s windows; false when a sum had to be dropped mid-read.
    fn read_span(&mut self, store: &Store, span: Span, now_ms: i64) -> Result<bool, StoreError> {
        let windows = windows_of(span);
        let current = span.bucket_of(now_ms);
        // One bucket before the longest window: the one that just left it, to subtract.
        let since = windows
            .iter()
            .map(|w| w.start(now_ms))
            .min()
            .unwrap_or(current)
            - span.ms();
        let mut stored: HashMap<Key, BTreeMap<i64, i64>> = HashMap::new();
        store.each_rollup_head_since(span, since, &mut |head| {
            let (bucket, version) = (head.bucket, head.version);
            stored
                .entry(Key::of(head))
                .or_default()
                .insert(bucket, version);
        })?;
        let mut wanted: HashSet<(Key, i64)> = HashSet::new();
        for &window in windows {
            let start = window.start(now_ms);
            let keys: HashSet<Key> = stored
                .keys()
                .cloned()
                .chain(
                    self.closed
                        .keys()
                        .filter(|(w, _)| *w == window)
                        .map(|(_, k)| k.clone()),
                )
                .collect();
            for key in keys {
                let rows = stored.get(&key);
                let entry = self.closed.entry((window, key.clone())).or_default();
                let intact = entry
                    .buckets
                    .iter()
                    .all(|(bucket, version)| rows.and_then(|r| r.get(bucket)) == Some(version));
                if !intact {
                    *entry = Closed::default();
                }
                for (&bucket, _) in rows.into_iter().flatten() {
                    let summed = entry.version(bucket).is_some();
                    let closed = (start..current).contains(&bucket);
                    if bucket >= current || (closed && !summed) || (bucket < start && summed) {
                        wanted.insert((key.clone(), bucket));
                    }
                }
                if entry.buckets.is_empty() && rows.is_none() {
                    self.closed.remove(&(window, key));
                }
            }
        }
        let keys: Vec<_> = wanted.iter().map(|(key, bucket)| key.at(*bucket)).collect();
        let mut open: HashMap<Key, SparseRollup> = HashMap::new();
        let mut left: HashSet<(Window, Key)> = HashSet::new();
        let closed = &mut self.closed;
        store.rollups_at(span, &keys, &mut |head, stored| {
            let (bucket, version) = (head.bucket, head.version);
            let key = Key::of(head);
            let sparse = SparseRollup::from_parts(stored.scalars, stored.blobs)?;
            if bucket >= current {
                open.entry(key).or_default().add(&sparse);
                return Ok(());
            }
            for &window in windows {
                let start = window.start(now_ms);
                let Some(entry) = closed.get_mut(&(window, key.clone())) else {
                    continue;
                };
                let summed = entry.version(bucket);
                if bucket >= start && summed.is_none() {
                    entry.sum.add(&sparse);
                    entry.insert(bucket, version);
                } else if bucket < start
                    && summed == Some(version)
                    && entry.sum.subtract_distributions(&sparse).is_ok()
                {
                    entry.remove(bucket);
                    left.insert((window, key.clone()));
                }
            }
            Ok(())
        })?;
        // A bucket that left the window and could not be subtracted (rewritten or deleted
        // between the two reads) leaves its sum wrong: the sum is read again.
        let mut broken = false;
        for ((window, _), entry) in self.closed.iter_mut() {
            if windows.contains(window)
                && entry
                    .buckets
                    .first()
                    .is_some_and(|b| b.0 < window.start(now_ms))
            {
                *entry = Closed::default();
                broken = true;
            }
        }
        if !self.merge_scalars_again(store, span, &left)? {
            broken = true;
        }
        if broken {
            return Ok(false);
        }
        self.open.retain(|(s, _), _| *s != span);
        self.open
            .extend(open.into_iter().map(|(key, rollup)| ((span, key), rollup)));
        Ok(true)
    }

    /// Merges again the scalars of each sum in `left` (a bucket left it) from the rows of
    /// the buckets still in it, in bucket order as they were first merged; false when a row
    /// changed since it was summed (that sum is dropped, to be read again).
    fn merge_scalars_again(
        &mut self,
        store: &Store,
        span: Span,
        left: &HashSet<(Window, Key)>,
    ) -> Result<bool, StoreError> {
        if left.is_empty() {
            return Ok(true);
        }
        let wanted: HashSet<(&Key, i64)> = left
            .iter()
            .filter_map(|(window, key)| Some((key, self.closed.get(&(*window, key.clone()))?)))
            .flat_map(|(key, entry)| entry.buckets.iter().map(move |b| (key, b.0)))
            .collect();
        let keys: Vec<_> = wanted.iter().map(|(key, bucket)| key.at(*bucket)).collect();
        let mut rows: HashMap<(Key, i64), (i64, Scalars)> = HashMap::new();
        store.rollups_at(span, &keys, &mut |head, stored| {
            let (bucket, version) = (head.bucket, head.version);
            rows.insert((Key::of(head), bucket), (version, stored.scalars));
            Ok(())
        })?;
        let mut intact = true;
        for (window, key) in left {
            let Some(entry) = self.closed.get_mut(&(*window, key.clone())) else {
                continue;
            };
            let merged = entry.buckets.iter().try_fold(
                Scalars::default(),
                |mut scalars, &(bucket, version)| {
                    let (stored, row) = rows.get(&(key.clone(), bucket))?;
                    (*stored == version).then(|| {
                        scalars.merge(row);
                        scalars
                    })
                },
            );
            match merged {
                Some(scalars) => entry.sum.scalars = scalars,
                None => {
                    *entry = Closed::default();
                    intact = false;
                }
            }
        }
        Ok(intact)
    }
}
