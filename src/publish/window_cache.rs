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
//! that closed since, and buckets that left the window (to subtract them). Within one hour
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::aggregate::Window;
use crate::aggregate::rollup::{Scalars, Span, TAKEN};
use crate::aggregate::sparse::SparseRollup;
use crate::aggregate::sum::RollupSum;
use crate::result::ResultRecord;
use crate::store::{RollupHead, RollupKey, Seen, Store, StoreError};

/// A rollup's target, location and probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// A stamp no other state of a closed sum had: a sum changed gets a new one, so a merge
/// of sums made earlier is known to be current when the stamps of its sums are.
fn stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A bucket in a closed sum.
#[derive(Debug, Clone, Copy)]
struct Summed {
    /// The bucket.
    bucket: i64,
    /// Its row's version when summed.
    version: i64,
    /// Its spend: a window's is these added in bucket order, as a cold read adds them
    /// (float addition is exact only in one order), so it is added again when one leaves.
    cost_usd: f64,
}

/// The closed buckets of one window and key, summed. Changed only through its methods,
/// which give it a new stamp.
#[derive(Debug)]
struct Closed {
    /// Each bucket in the sum, ascending.
    buckets: Vec<Summed>,
    /// The buckets' rollups added: distributions and scalars. A bucket leaving the window
    /// is subtracted: its distributions and counts exactly, the spend added again from the
    /// buckets left; the fields a merge takes whole from one bucket stay unless they were
    /// that bucket's, and then the scalars are merged again from the rows still in it.
    /// Shared with the windows read from it until they are dropped (a publish's).
    sum: Arc<SparseRollup>,
    /// Per field taken whole ([`TAKEN`]): the newest bucket holding the sum's value of it.
    from: [Option<i64>; TAKEN],
    /// This state's [`stamp`].
    stamp: u64,
}

impl Default for Closed {
    fn default() -> Closed {
        Closed {
            buckets: Vec::new(),
            sum: Arc::default(),
            from: [None; TAKEN],
            stamp: stamp(),
        }
    }
}

impl Closed {
    /// The version of `bucket` in the sum, if it is in it.
    fn version(&self, bucket: i64) -> Option<i64> {
        let at = self
            .buckets
            .binary_search_by_key(&bucket, |summed| summed.bucket)
            .ok()?;
        Some(self.buckets[at].version)
    }

    /// Adds `rollup`, `bucket`'s at `version`; false when a newer bucket is in the sum
    /// already: then its scalars are not merged in bucket order, and must be merged again.
    fn add(&mut self, bucket: i64, version: i64, rollup: &SparseRollup) -> bool {
        let sum = Arc::make_mut(&mut self.sum);
        sum.add(rollup);
        let at = self.buckets.partition_point(|b| b.bucket < bucket);
        let newest = at == self.buckets.len();
        self.buckets.insert(
            at,
            Summed {
                bucket,
                version,
                cost_usd: rollup.scalars.cost_usd,
            },
        );
        note_taken(&mut self.from, &sum.scalars, &rollup.scalars, bucket);
        self.stamp = stamp();
        newest
    }

    /// Takes `bucket`'s `rollup` out; `Some(false)` when its scalars must be merged again
    /// (the bucket held a field taken whole), `None` when the sum does not hold it.
    fn subtract(&mut self, bucket: i64, rollup: &SparseRollup) -> Option<bool> {
        let sum = Arc::make_mut(&mut self.sum);
        sum.subtract_distributions(rollup).ok()?;
        self.buckets.retain(|b| b.bucket != bucket);
        self.stamp = stamp();
        let exact = !self.from.contains(&Some(bucket))
            && sum.scalars.subtract_counts(&rollup.scalars).is_ok();
        if exact {
            sum.scalars.cost_usd = self.buckets.iter().fold(0.0, |c, b| c + b.cost_usd);
        }
        Some(exact)
    }

    /// Merges the scalars again from `rows` (the stored (bucket, version, scalars) of the
    /// key, ascending), in bucket order as a cold read does; false when a bucket summed is
    /// not stored at the version it was summed at.
    fn merge_scalars(&mut self, rows: &[(i64, i64, Scalars)]) -> bool {
        let mut scalars = Scalars::default();
        let mut from = [None; TAKEN];
        for summed in &mut self.buckets {
            let Ok(at) = rows.binary_search_by_key(&summed.bucket, |row| row.0) else {
                return false;
            };
            let (_, version, row) = &rows[at];
            if *version != summed.version {
                return false;
            }
            scalars.merge(row);
            note_taken(&mut from, &scalars, row, summed.bucket);
            summed.cost_usd = row.cost_usd;
        }
        Arc::make_mut(&mut self.sum).scalars = scalars;
        self.from = from;
        self.stamp = stamp();
        true
    }
}

/// Notes `bucket` as where each field taken whole comes from when `sum`, with `added`
/// (its scalars) just merged, holds its value.
fn note_taken(from: &mut [Option<i64>; TAKEN], sum: &Scalars, added: &Scalars, bucket: i64) {
    for (from, held) in from.iter_mut().zip(sum.holds(added)) {
        if held {
            *from = Some(bucket);
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

/// One span's rollup heads in the windows as of the last read, kept so that a read asks
/// the store only for the heads written since.
#[derive(Debug, Default)]
struct Heads {
    /// What the last read saw; `None`: every head is read.
    seen: Option<Seen>,
    /// Each key's rows, (bucket, version) ascending by bucket.
    rows: HashMap<Key, Vec<(i64, i64)>>,
    /// The span's current bucket at the last read: when it moves, so do the windows.
    current: Option<i64>,
}

/// Each key's heads written since the last read, (bucket, version) ascending.
type Written = HashMap<Key, Vec<(i64, i64)>>;

impl Heads {
    /// Reads the heads of `span` from `since` written since the last read (every one at
    /// the first, or when the last failed) into `rows`, and forgets those before `since`
    /// and those the store pruned. Returns the heads written since, or `None` when every
    /// head was read.
    fn read(
        &mut self,
        store: &Store,
        span: Span,
        since: i64,
    ) -> Result<Option<Written>, StoreError> {
        let after = self.seen.take();
        if after.is_none() {
            self.rows.clear();
        }
        let mut written = Written::new();
        let mut scratch = Key::default();
        let rows = &mut self.rows;
        let seen = store.each_rollup_head_written(span, since, after.as_ref(), &mut |head| {
            scratch.set(&head);
            let row = (head.bucket, head.version);
            match rows.get_mut(&scratch) {
                Some(rows) => match rows.binary_search_by_key(&row.0, |r| r.0) {
                    Ok(at) => rows[at].1 = row.1,
                    Err(at) => rows.insert(at, row),
                },
                None => {
                    rows.insert(scratch.clone(), vec![row]);
                }
            }
            if after.is_some() {
                match written.get_mut(&scratch) {
                    Some(rows) => rows.push(row),
                    None => {
                        written.insert(scratch.clone(), vec![row]);
                    }
                }
            }
        })?;
        let floor = since.max(seen.rollups_pruned_before);
        self.rows.retain(|_, rows| {
            let gone = rows.partition_point(|row| row.0 < floor);
            rows.drain(..gone);
            !rows.is_empty()
        });
        let pruned = after
            .as_ref()
            .is_some_and(|after| after.rollups_pruned_before != seen.rollups_pruned_before);
        self.seen = Some(seen);
        Ok(after.filter(|_| !pruned).map(|_| written))
    }
}

/// A window, target and probe: what a [`Merged`] is kept under.
type MergedKey = (Window, String, String);

/// Every window's closed sums, by window and key, and the current buckets as last read.
#[derive(Debug, Default)]
pub struct WindowCache {
    /// Each window's closed sums by key.
    closed: HashMap<Window, HashMap<Key, Closed>>,
    /// Each span's current bucket per key, read at every [`WindowCache::refresh`].
    open: HashMap<Span, HashMap<Key, Arc<SparseRollup>>>,
    /// The sums of a target's locations merged since the last refresh
    /// ([`WindowCache::merged`]).
    merged: HashMap<MergedKey, Merged>,
    /// Those merged before it: one is taken again while the sums it merged are unchanged,
    /// and the others are dropped at the next refresh.
    merged_before: HashMap<MergedKey, Merged>,
    /// Each span's heads as last read.
    heads: HashMap<Span, Heads>,
}

/// The version of `bucket` among a key's `rows` ((bucket, version) ascending), if stored.
fn version_in(rows: &[(i64, i64)], bucket: i64) -> Option<i64> {
    let at = rows.binary_search_by_key(&bucket, |row| row.0).ok()?;
    Some(rows[at].1)
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

    /// Every sum the cache holds: each key's and the merged ones.
    fn sums(&self) -> impl Iterator<Item = &SparseRollup> {
        let closed = self.closed.values().flat_map(|sums| sums.values());
        closed
            .map(|c| &*c.sum)
            .chain(self.merged.values().map(|m| &*m.sum))
    }

    /// Counters held in the sums.
    pub fn counters(&self) -> usize {
        self.sums().map(SparseRollup::counters).sum()
    }

    /// The bytes the sums' counters take: the cache's memory beyond its scalars.
    pub fn bytes(&self) -> usize {
        self.sums().map(SparseRollup::bytes).sum()
    }

    /// Reads what changed for the `24h`, `7d` and `30d` windows at `now_ms`; then
    /// [`WindowCache::keys`], [`WindowCache::whole`] and [`WindowCache::merged`] give them.
    pub fn refresh(&mut self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        self.merged_before = std::mem::take(&mut self.merged);
        for span in [Span::Hour, Span::Day] {
            // A sum whose bucket changed between the two reads is dropped and read again.
            while !self.read_span(store, span, now_ms)? {}
        }
        Ok(())
    }

    /// Every window and key with a closed sum or a current bucket at the last refresh.
    pub fn keys(&self) -> impl Iterator<Item = (Window, &Key)> {
        let closed = self
            .closed
            .iter()
            .flat_map(|(window, sums)| sums.keys().map(move |key| (*window, key)));
        let open = self.open.iter().flat_map(move |(span, keys)| {
            keys.keys().flat_map(move |key| {
                windows_of(*span)
                    .iter()
                    .filter(move |window| self.closed_of(**window, key).is_none())
                    .map(move |&window| (window, key))
            })
        });
        closed.chain(open)
    }

    /// `window` of `key` whole at the last refresh: its closed sum (distributions and its
    /// buckets' scalars) and its current bucket, held apart and read as one.
    pub fn whole(&self, window: Window, key: &Key) -> RollupSum {
        let mut whole = RollupSum::default();
        if let Some(entry) = self.closed_of(window, key) {
            whole.push(Arc::clone(&entry.sum));
        }
        if let Some(current) = self.open_of(window, key) {
            whole.push(Arc::clone(current));
        }
        whole
    }

    /// `window` of one target and probe over `keys` (theirs, in one location order) whole
    /// at the last refresh: the keys' closed sums merged, then their current buckets, held
    /// apart and read as one. The merged closed sums are kept while none of them changes
    /// (until a bucket closes, in a periodic publish), so a fleet's target costs no merge
    /// at all in a periodic publish instead of one of every location's month.
    pub fn merged(&mut self, window: Window, keys: &[&Key]) -> RollupSum {
        let [first, ..] = keys else {
            return RollupSum::default();
        };
        if keys.len() == 1 {
            return self.whole(window, first);
        }
        let sums = self.closed.get(&window);
        let closed: Vec<&Closed> = keys.iter().filter_map(|key| sums?.get(*key)).collect();
        let stamps: Vec<u64> = closed.iter().map(|c| c.stamp).collect();
        let at = (window, first.target.clone(), first.probe.clone());
        let merged = match self.merged_before.remove(&at) {
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
            if let Some(open) = self.open_of(window, key) {
                whole.push(Arc::clone(open));
            }
        }
        self.merged.insert(at, merged);
        whole
    }

    /// The closed sum of `window` and `key`.
    fn closed_of(&self, window: Window, key: &Key) -> Option<&Closed> {
        self.closed.get(&window)?.get(key)
    }

    /// The current bucket of `window`'s span and `key`.
    fn open_of(&self, window: Window, key: &Key) -> Option<&Arc<SparseRollup>> {
        self.open.get(&span_of(window))?.get(key)
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
        let mut heads = self.heads.remove(&span).unwrap_or_default();
        let changed = heads.read(store, span, since)?;
        // Every key is looked at when the windows moved or every head was read; otherwise
        // only the keys with a head written since the last read.
        let whole = changed.is_none() || heads.current != Some(current);
        heads.current = Some(current);
        let stored = &heads.rows;
        let mut wanted: HashSet<(&Key, i64)> = HashSet::new();
        for &window in windows {
            let start = window.start(now_ms);
            let sums = self.closed.entry(window).or_default();
            let keys: Vec<(&Key, &[(i64, i64)])> = match &changed {
                Some(changed) if !whole => changed
                    .iter()
                    .filter_map(|(key, rows)| Some((stored.get_key_value(key)?.0, &rows[..])))
                    .collect(),
                _ => {
                    // A key with no row left has nothing to sum.
                    sums.retain(|key, _| stored.contains_key(key));
                    stored.iter().map(|(key, rows)| (key, &rows[..])).collect()
                }
            };
            for (key, written) in keys {
                let rows = &stored[key];
                if !sums.contains_key(key) {
                    sums.insert(key.clone(), Closed::default());
                }
                let Some(entry) = sums.get_mut(key) else {
                    continue;
                };
                // A sum is intact while every bucket in it has the version it was summed at:
                // all of them checked when every key is looked at, else those written since.
                let intact = if whole {
                    entry
                        .buckets
                        .iter()
                        .all(|b| version_in(rows, b.bucket) == Some(b.version))
                } else {
                    written.iter().all(|&(bucket, version)| {
                        entry.version(bucket).is_none_or(|summed| summed == version)
                    })
                };
                let look = if intact {
                    written
                } else {
                    *entry = Closed::default();
                    rows
                };
                for &(bucket, _) in look {
                    let summed = entry.version(bucket).is_some();
                    let closed = (start..current).contains(&bucket);
                    if (closed && !summed) || (bucket < start && summed) {
                        wanted.insert((key, bucket));
                    }
                }
                // The current buckets are read whole for every key looked at.
                for &(bucket, _) in rows.iter().filter(|row| row.0 >= current) {
                    wanted.insert((key, bucket));
                }
            }
        }
        let keys: Vec<_> = wanted.iter().map(|(key, bucket)| key.at(*bucket)).collect();
        let mut open: HashMap<Key, SparseRollup> = HashMap::new();
        let mut again: HashSet<(Window, Key)> = HashSet::new();
        let closed = &mut self.closed;
        let mut scratch = Key::default();
        store.rollups_at(span, &keys, &mut |head, stored| {
            scratch.set(&head);
            let (bucket, version) = (head.bucket, head.version);
            let sparse = SparseRollup::from_parts(stored.scalars, stored.blobs)?;
            if bucket >= current {
                match open.get_mut(&scratch) {
                    Some(rollup) => rollup.add(&sparse),
                    None => {
                        open.insert(scratch.clone(), sparse);
                    }
                }
                return Ok(());
            }
            for &window in windows {
                let start = window.start(now_ms);
                let Some(entry) = closed.get_mut(&window).and_then(|s| s.get_mut(&scratch)) else {
                    continue;
                };
                let summed = entry.version(bucket);
                let exact = if bucket >= start && summed.is_none() {
                    entry.add(bucket, version, &sparse)
                } else if bucket < start && summed == Some(version) {
                    entry.subtract(bucket, &sparse).unwrap_or(true)
                } else {
                    true
                };
                if !exact {
                    again.insert((window, scratch.clone()));
                }
            }
            Ok(())
        })?;
        // A bucket that left the window and could not be subtracted (rewritten or deleted
        // between the two reads) leaves its sum wrong: the sum is read again.
        let mut broken = false;
        for &window in windows {
            let start = window.start(now_ms);
            for entry in self.closed.entry(window).or_default().values_mut() {
                if entry.buckets.first().is_some_and(|b| b.bucket < start) {
                    *entry = Closed::default();
                    broken = true;
                }
            }
        }
        let stored = heads.rows.values().map(Vec::len).sum();
        if !self.merge_scalars_again(store, span, &again, stored)? {
            broken = true;
        }
        if broken {
            // Every head is read again, and every key looked at.
            return Ok(false);
        }
        let kept = self.open.entry(span).or_default();
        match changed {
            Some(changed) if !whole => {
                for key in changed.keys() {
                    kept.remove(key);
                }
                kept.extend(
                    open.into_iter()
                        .map(|(key, rollup)| (key, Arc::new(rollup))),
                );
            }
            _ => {
                *kept = open
                    .into_iter()
                    .map(|(key, rollup)| (key, Arc::new(rollup)))
                    .collect();
            }
        }
        self.heads.insert(span, heads);
        Ok(true)
    }

    /// Merges again the scalars of each sum in `again` (a bucket that left it took a field
    /// merged whole along, or a bucket came in before a newer one) from the rows of the
    /// buckets in it, in bucket order as a cold read merges them; false when a row changed
    /// since it was summed (that sum is dropped, to be read again). A few sums read their
    /// own rows (fewer than half of the span's `stored` rows); when many do, the span's scalars are read in one pass from the oldest
    /// bucket summed, without their histograms, rather than row by row.
    fn merge_scalars_again(
        &mut self,
        store: &Store,
        span: Span,
        again: &HashSet<(Window, Key)>,
        stored: usize,
    ) -> Result<bool, StoreError> {
        let sums: Vec<(&Key, &[Summed])> = again
            .iter()
            .filter_map(|(window, key)| Some((key, &self.closed_of(*window, key)?.buckets[..])))
            .collect();
        let Some(oldest) = sums
            .iter()
            .filter_map(|(_, b)| Some(b.first()?.bucket))
            .min()
        else {
            return Ok(true);
        };
        // Each key's rows: (bucket, version, scalars), ascending by bucket.
        let mut rows: HashMap<&Key, Vec<(i64, i64, Scalars)>> =
            sums.iter().map(|(key, _)| (*key, Vec::new())).collect();
        let mut scratch = Key::default();
        let mut take = |head: RollupHead<'_>, scalars: Scalars| {
            scratch.set(&head);
            if let Some(rows) = rows.get_mut(&scratch) {
                rows.push((head.bucket, head.version, scalars));
            }
        };
        // A row read by its key costs more than one read in the pass (a join, and its
        // histograms come along): the keys' own rows are read when they are fewer than half
        // of the span's.
        let keyed: usize = sums.iter().map(|(_, buckets)| buckets.len()).sum();
        if keyed * 2 < stored {
            let mut keys: Vec<RollupKey<'_>> = sums
                .iter()
                .flat_map(|(key, buckets)| buckets.iter().map(|b| key.at(b.bucket)))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            store.rollups_at(span, &keys, &mut |head, stored| {
                take(head, stored.scalars);
                Ok(())
            })?;
        } else {
            store.each_rollup_scalars_written(span, oldest, None, &mut take)?;
        }
        let mut intact = true;
        for (window, key) in again {
            let Some(entry) = self.closed.get_mut(window).and_then(|s| s.get_mut(key)) else {
                continue;
            };
            if !entry.merge_scalars(rows.get(key).map_or(&[][..], Vec::as_slice)) {
                *entry = Closed::default();
                intact = false;
            }
        }
        Ok(intact)
    }
}
