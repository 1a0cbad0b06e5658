//! Where a reader stands in a store's history of writes: taken with a read, in the read's
//! own snapshot, so that the next read asks only for the rows written after it — a
//! publisher then reads a minute's new runs and changed rollups, not a month of heads and
//! an hour of run ids, and sees a run written late (after a store outage, or by a fleet
//! location catching up) as it sees any other.
//!
//! Each backend counts writes its own way. SQLite has one writer, so a store-wide counter
//! taken in each write transaction grows in commit order, and "written after" is "counter
//! greater". PostgreSQL's writers commit side by side, so no counter they take grows in
//! commit order; every row carries the id of the transaction that last wrote it
//! (`pg_current_xact_id()`), and a row is new when that transaction was not visible in the
//! snapshot the last read took (`pg_visible_in_snapshot`): exact whatever the order writers
//! committed in.
//!
//! Deletions are not rows: pruning past retention records the bound it deleted before,
//! which the next read hands over, so a reader forgets exactly what the store deleted.

use serde::{Deserialize, Serialize};

/// A reader's place in the store's writes, as of one read: kept with a publisher's
/// checkpoint, since it means the same to any reader of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The writes the read saw.
    pub(super) upto: Upto,
    /// Results that finished before this unix ms have been pruned.
    pub results_pruned_before: i64,
    /// Rollups whose bucket began before this unix ms have been pruned.
    pub rollups_pruned_before: i64,
}

/// The writes a read saw, in the backend's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Upto {
    /// SQLite: the write counter's value.
    Counter(i64),
    /// PostgreSQL: the read's snapshot as `pg_snapshot` text (`xmin:xmax:xip,…`).
    Snapshot(String),
}

impl Seen {
    /// The counter of a SQLite read: what is written after it has a greater one.
    pub(super) fn counter(&self) -> Option<i64> {
        match &self.upto {
            Upto::Counter(n) => Some(*n),
            Upto::Snapshot(_) => None,
        }
    }

    /// The snapshot of a PostgreSQL read: what it did not see is new.
    pub(super) fn snapshot(&self) -> Option<&str> {
        match &self.upto {
            Upto::Snapshot(text) => Some(text),
            Upto::Counter(_) => None,
        }
    }
}
