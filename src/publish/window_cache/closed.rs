//! The closed buckets of one window and key, summed: added as they close, subtracted as
//! they leave the window, and stamped at every change so that merges of them made earlier
//! are known to be current.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::aggregate::rollup::{Scalars, TAKEN};
use crate::aggregate::sparse::SparseRollup;

/// A stamp no other state of a closed sum had: a sum changed gets a new one, so a merge
/// of sums made earlier is known to be current when the stamps of its sums are.
fn stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A bucket in a closed sum.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Summed {
    /// The bucket.
    pub(super) bucket: i64,
    /// Its row's version when summed.
    pub(super) version: i64,
    /// Its spend: a window's is these added in bucket order, as a cold read adds them
    /// (float addition is exact only in one order), so it is added again when one leaves.
    cost_usd: f64,
}

/// The closed buckets of one window and key, summed. Changed only through its methods,
/// which give it a new stamp.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Closed {
    /// Each bucket in the sum, ascending.
    pub(super) buckets: Vec<Summed>,
    /// The buckets' rollups added: distributions and scalars. A bucket leaving the window
    /// is subtracted: its distributions and counts exactly, the spend added again from the
    /// buckets left; the fields a merge takes whole from one bucket stay unless they were
    /// that bucket's, and then the scalars are merged again from the rows still in it.
    /// Shared with the windows read from it until they are dropped (a publish's).
    pub(super) sum: Arc<SparseRollup>,
    /// Per field taken whole ([`TAKEN`]): the newest bucket holding the sum's value of it.
    from: [Option<i64>; TAKEN],
    /// This state's [`stamp`]; a new one when restored, as no merge made before is kept.
    #[serde(skip, default = "stamp")]
    pub(super) stamp: u64,
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
    pub(super) fn version(&self, bucket: i64) -> Option<i64> {
        let at = self
            .buckets
            .binary_search_by_key(&bucket, |summed| summed.bucket)
            .ok()?;
        Some(self.buckets[at].version)
    }

    /// Adds `rollup`, `bucket`'s at `version`; false when a newer bucket is in the sum
    /// already: then its scalars are not merged in bucket order, and must be merged again.
    pub(super) fn add(&mut self, bucket: i64, version: i64, rollup: &SparseRollup) -> bool {
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
    pub(super) fn subtract(&mut self, bucket: i64, rollup: &SparseRollup) -> Option<bool> {
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
    pub(super) fn merge_scalars(&mut self, rows: &[(i64, i64, Scalars)]) -> bool {
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
