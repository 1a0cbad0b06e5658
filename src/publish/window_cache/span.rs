//! One span's windows kept between publishes (`24h` of the hourly rollups; `7d` and `30d`
//! of the daily ones), and the read that brings them up to date: each window's closed
//! sums by key, each key's current bucket, and the span's heads as last read.
//!
//! At the span's turn every key's oldest bucket leaves its windows and is subtracted, which
//! needs its rollup: a publisher reading them all then read 30,000 rows more at a fleet's
//! day turn (10 locations × 1,000 targets, `7d` and `30d`), the slowest publish of its day.
//! So the publishes of the last [`AHEAD_MINUTES`] before a turn each read a slice of those
//! buckets ahead, and at the turn a bucket still stored at the version read is subtracted
//! from there; one written to since is read then, as before.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::closed::{Closed, Summed};
use super::heads::Heads;
use super::{Key, windows_of};
use crate::aggregate::Window;
use crate::aggregate::rollup::{Scalars, Span};
use crate::aggregate::sparse::SparseRollup;
use crate::scheduler::stable_hash;
use crate::store::{RollupHead, RollupKey, Store, StoreError};

/// How many minutes before a span's turn its publishes begin reading ahead the buckets
/// that leave the windows then. A key is read ahead once the minutes left are at most one
/// more than its slot (its [`stable_hash`] modulo this), so a publisher publishing every
/// minute reads a tenth of the keys in each of those publishes, and one publishing less
/// often reads more of them at each.
const AHEAD_MINUTES: i64 = 10;

/// A bucket's rollup read ahead of its leaving: (bucket, version, rollup).
type ReadAhead = (i64, i64, Arc<SparseRollup>);

/// A key's current bucket as last read.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Current {
    /// Its rows added (one, unless runs were written ahead of the clock).
    pub(super) rollup: Arc<SparseRollup>,
    /// Those rows' (bucket, version).
    rows: Vec<(i64, i64)>,
}

impl Current {
    /// The rollup, when it is `bucket`'s row alone at `version`: a bucket that closed with
    /// no run written to it since it was read is summed from here rather than read again.
    fn only(&self, bucket: i64, version: i64) -> Option<&SparseRollup> {
        (self.rows == [(bucket, version)]).then_some(&*self.rollup)
    }
}

/// One span's windows and what they were read from.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SpanCache {
    /// The span.
    span: Span,
    /// Each of the span's windows' closed sums by key.
    closed: HashMap<Window, HashMap<Key, Closed>>,
    /// Each key's current bucket, read at every refresh.
    current: HashMap<Key, Current>,
    /// The span's heads as last read.
    heads: Heads,
    /// By key, the buckets that leave the windows at the next turn, read ahead. Not kept
    /// in a checkpoint: a restored history reads them at the turn.
    #[serde(skip)]
    ahead: HashMap<Key, Vec<ReadAhead>>,
    /// How many buckets the last read subtracted from those read ahead.
    #[serde(skip)]
    taken_ahead: usize,
}

/// `key`'s slot among the [`AHEAD_MINUTES`]: the same in every publish and publisher.
fn slot(key: &Key) -> i64 {
    let hash = stable_hash(&key.target)
        ^ stable_hash(&key.location).rotate_left(21)
        ^ stable_hash(&key.probe).rotate_left(42);
    (hash % AHEAD_MINUTES as u64) as i64
}

/// `bucket`'s rollup of `key` as read ahead, when it was read at `version`.
fn read_ahead<'a>(
    ahead: &'a HashMap<Key, Vec<ReadAhead>>,
    key: &Key,
    bucket: i64,
    version: i64,
) -> Option<&'a SparseRollup> {
    let rows = ahead.get(key)?;
    let (_, _, rollup) = rows
        .iter()
        .find(|row| (row.0, row.1) == (bucket, version))?;
    Some(rollup)
}

/// The version of `bucket` among a key's `rows` ((bucket, version) ascending), if stored.
fn version_in(rows: &[(i64, i64)], bucket: i64) -> Option<i64> {
    let at = rows.binary_search_by_key(&bucket, |row| row.0).ok()?;
    Some(rows[at].1)
}

impl SpanCache {
    /// Nothing read yet of `span`'s windows.
    pub(super) fn new(span: Span) -> SpanCache {
        SpanCache {
            span,
            closed: HashMap::new(),
            current: HashMap::new(),
            heads: Heads::default(),
            ahead: HashMap::new(),
            taken_ahead: 0,
        }
    }

    /// How many buckets leaving the windows the last read subtracted from those read
    /// ahead rather than reading them then.
    pub(super) fn taken_ahead(&self) -> usize {
        self.taken_ahead
    }

    /// Every closed sum.
    pub(super) fn sums(&self) -> impl Iterator<Item = &SparseRollup> {
        let closed = self.closed.values().flat_map(|sums| sums.values());
        closed.map(|c| &*c.sum)
    }

    /// Every window and key with a closed sum or a current bucket.
    pub(super) fn keys(&self) -> impl Iterator<Item = (Window, &Key)> {
        let closed = self
            .closed
            .iter()
            .flat_map(|(window, sums)| sums.keys().map(move |key| (*window, key)));
        let current = self.current.keys().flat_map(move |key| {
            windows_of(self.span)
                .iter()
                .filter(move |window| self.closed_of(**window, key).is_none())
                .map(move |&window| (window, key))
        });
        closed.chain(current)
    }

    /// The closed sum of `window` and `key`.
    pub(super) fn closed_of(&self, window: Window, key: &Key) -> Option<&Closed> {
        self.closed.get(&window)?.get(key)
    }

    /// The current bucket of `key`.
    pub(super) fn current_of(&self, key: &Key) -> Option<&Arc<SparseRollup>> {
        Some(&self.current.get(key)?.rollup)
    }

    /// Reads what changed at `now_ms`.
    pub(super) fn refresh(&mut self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        // A sum whose bucket changed between the two reads is dropped and read again.
        while !self.read(store, now_ms)? {}
        Ok(())
    }

    /// Reads the windows; false when a sum had to be dropped mid-read.
    fn read(&mut self, store: &Store, now_ms: i64) -> Result<bool, StoreError> {
        let span = self.span;
        let windows = windows_of(span);
        let current = span.bucket_of(now_ms);
        // One bucket before the longest window: the one that just left it, to subtract.
        let since = windows
            .iter()
            .map(|w| w.start(now_ms))
            .min()
            .unwrap_or(current)
            - span.ms();
        // Put back only after a whole read: a failed one leaves every head to read again.
        self.taken_ahead = 0;
        let mut heads = std::mem::take(&mut self.heads);
        let changed = heads.read(store, span, since)?;
        // Every key is looked at when the windows moved or every head was read; otherwise
        // only the keys with a head written since the last read.
        let moved = heads.current != Some(current);
        let whole = changed.is_none() || moved;
        heads.current = Some(current);
        let stored = &heads.rows;
        let mut wanted: HashSet<(&Key, i64)> = HashSet::new();
        let mut again: HashSet<(Window, Key)> = HashSet::new();
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
                let (look, kept) = if intact {
                    (written, self.current.get(key))
                } else {
                    *entry = Closed::default();
                    (&rows[..], None)
                };
                // Buckets leaving the window that were read ahead, subtracted after the
                // key's buckets are added, as when they are read.
                let mut leaving: Vec<(i64, &SparseRollup)> = Vec::new();
                for &(bucket, version) in look {
                    let summed = entry.version(bucket);
                    let closed = (start..current).contains(&bucket);
                    let missing = closed && summed.is_none();
                    // A bucket closed since it was read as the current one, and not written
                    // to since, is summed from what was read.
                    let kept = kept.filter(|_| missing);
                    if let Some(rollup) = kept.and_then(|kept| kept.only(bucket, version)) {
                        let in_order = entry.add(bucket, version, rollup);
                        if !in_order {
                            again.insert((window, key.clone()));
                        }
                    } else if missing {
                        wanted.insert((key, bucket));
                    } else if bucket < start && summed.is_some() {
                        match read_ahead(&self.ahead, key, bucket, version) {
                            Some(rollup) if summed == Some(version) => {
                                leaving.push((bucket, rollup));
                            }
                            _ => {
                                wanted.insert((key, bucket));
                            }
                        }
                    }
                }
                for (bucket, rollup) in leaving {
                    self.taken_ahead += 1;
                    if entry.subtract(bucket, rollup) == Some(false) {
                        again.insert((window, key.clone()));
                    }
                }
                // The current buckets are read whole for every key looked at.
                for &(bucket, _) in rows.iter().filter(|row| row.0 >= current) {
                    wanted.insert((key, bucket));
                }
            }
        }
        // At a turn what was read ahead is used or left; before one, more is read.
        let ahead = if moved {
            self.ahead.clear();
            HashMap::new()
        } else {
            self.to_read_ahead(now_ms, current, stored)
        };
        let mut keys: Vec<_> = wanted.iter().map(|(key, bucket)| key.at(*bucket)).collect();
        keys.extend(
            ahead
                .iter()
                .flat_map(|(key, buckets)| buckets.iter().map(|&bucket| key.at(bucket))),
        );
        keys.sort_unstable();
        keys.dedup();
        let mut open: HashMap<Key, (SparseRollup, Vec<(i64, i64)>)> = HashMap::new();
        let (closed, kept_ahead) = (&mut self.closed, &mut self.ahead);
        let mut scratch = Key::default();
        store.rollups_at(span, &keys, &mut |head, stored| {
            scratch.set(&head);
            let (bucket, version) = (head.bucket, head.version);
            let sparse = SparseRollup::from_parts(stored.scalars, stored.blobs)?;
            if bucket >= current {
                match open.get_mut(&scratch) {
                    Some((rollup, rows)) => {
                        rollup.add(&sparse);
                        rows.push((bucket, version));
                    }
                    None => {
                        open.insert(scratch.clone(), (sparse, vec![(bucket, version)]));
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
            if ahead.get(&scratch).is_some_and(|b| b.contains(&bucket)) {
                let rows = kept_ahead.entry(scratch.clone()).or_default();
                rows.retain(|row| row.0 != bucket);
                rows.push((bucket, version, Arc::new(sparse)));
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
        if !self.merge_scalars_again(store, &again, stored)? {
            broken = true;
        }
        if broken {
            // Every head is read again, and every key looked at.
            return Ok(false);
        }
        let open = open.into_iter().map(|(key, (rollup, rows))| {
            let rollup = Arc::new(rollup);
            (key, Current { rollup, rows })
        });
        match changed {
            Some(changed) if !whole => {
                for key in changed.keys() {
                    self.current.remove(key);
                }
                self.current.extend(open);
            }
            _ => self.current = open.collect(),
        }
        self.heads = heads;
        Ok(true)
    }

    /// The buckets to read ahead at `now_ms` (the span's `current` bucket), by key: in the
    /// last [`AHEAD_MINUTES`] before the span's next turn, of the keys whose slot has come,
    /// each bucket that leaves a window then, summed at the version `stored` holds, and not
    /// read ahead at it already.
    fn to_read_ahead(
        &self,
        now_ms: i64,
        current: i64,
        stored: &HashMap<Key, Vec<(i64, i64)>>,
    ) -> HashMap<Key, Vec<i64>> {
        let turn = current + self.span.ms();
        let minutes_left = (turn - now_ms + 59_999) / 60_000;
        let mut read = HashMap::new();
        if !(1..=AHEAD_MINUTES).contains(&minutes_left) {
            return read;
        }
        for (&window, sums) in &self.closed {
            let start = window.start(turn);
            for (key, sum) in sums {
                if slot(key) + 1 < minutes_left {
                    continue;
                }
                let rows = stored.get(key).map_or(&[][..], Vec::as_slice);
                for summed in sum.buckets.iter().take_while(|b| b.bucket < start) {
                    let (bucket, version) = (summed.bucket, summed.version);
                    let had = read_ahead(&self.ahead, key, bucket, version).is_some();
                    if !had && version_in(rows, bucket) == Some(version) {
                        read.entry(key.clone()).or_default().push(bucket);
                    }
                }
            }
        }
        read
    }

    /// Merges again the scalars of each sum in `again` (a bucket that left it took a field
    /// merged whole along, or a bucket came in before a newer one) from the rows of the
    /// buckets in it, in bucket order as a cold read merges them; false when a row changed
    /// since it was summed (that sum is dropped, to be read again). A few sums read their
    /// own rows (fewer than half of the span's `stored` rows); when many do, the span's
    /// scalars are read in one pass from the oldest bucket summed, without their
    /// histograms, rather than row by row.
    fn merge_scalars_again(
        &mut self,
        store: &Store,
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
            store.rollups_at(self.span, &keys, &mut |head, stored| {
                take(head, stored.scalars);
                Ok(())
            })?;
        } else {
            store.each_rollup_scalars_written(self.span, oldest, None, &mut take)?;
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
