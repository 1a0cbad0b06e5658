//! One span's rollup heads (key, bucket and version) as last read, kept so that a read
//! asks the store only for the heads written since.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Key;
use crate::aggregate::rollup::Span;
use crate::store::{Seen, Store, StoreError};

/// Each key's heads written since the last read, (bucket, version) ascending.
pub(super) type Written = HashMap<Key, Vec<(i64, i64)>>;

/// One span's rollup heads in the windows as of the last read.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Heads {
    /// What the last read saw; `None`: every head is read.
    seen: Option<Seen>,
    /// Each key's rows, (bucket, version) ascending by bucket.
    pub(super) rows: HashMap<Key, Vec<(i64, i64)>>,
    /// The span's current bucket at the last read: when it moves, so do the windows.
    pub(super) current: Option<i64>,
}

impl Heads {
    /// Reads the heads of `span` from `since` written since the last read (every one at
    /// the first, or when the last failed) into `rows`, and forgets those before `since`
    /// and those the store pruned. Returns the heads written since, or `None` when every
    /// head was read.
    pub(super) fn read(
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
