//! The store: raw results, hourly and daily rollups, monthly spend, target states and
//! incidents, in SQLite (`sqlite/`, the embedded default) or PostgreSQL (`postgres/`, for a
//! fleet or a database server the user already runs).
//!
//! Both implement [`Backend`], and everything above the store (daemon, writer, windows,
//! publish, export, server) holds a [`Store`] without knowing which it has. Each backend keeps
//! the same promises: one writer at a time (an OS lock on the SQLite file, an advisory lock in
//! PostgreSQL), any number of readers; a batch is one durable transaction, so when
//! [`Backend::write`] returns every result of it survives a `kill -9`; results are keyed by
//! `run_id`, so writing a batch twice adds nothing; queries return rows in the same order
//! from either backend (results by time, then `run_id`: an order of the data itself, not of
//! the row ids a store happened to give), so what is published does not depend on where it
//! was stored, or whether it was copied there.

pub mod migrate;
mod postgres;
mod seen;
pub(crate) mod sqlite;
pub mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregate::alerting::Notification;
use crate::aggregate::health::{IncidentKind, State, TargetHealth, Transition};
use crate::aggregate::rollup::{DecodeError, PointScalars, Scalars, Span};
use crate::aggregate::sparse::SparseRollup;
use crate::config::{StoreBackend, StoreConfig};
use crate::result::ResultRecord;
pub use seen::Seen;
/// What a `Seen` holds, named for the checkpoint's layout test.
#[cfg(test)]
pub(crate) use seen::Upto;

/// What can go wrong with the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another daemon holds the store.
    #[error(
        "{store} is in use by another sonde daemon (it holds the store's lock); stop it \
         first, or give this one another store"
    )]
    Locked {
        /// The store, as [`Backend::describe`] names it.
        store: String,
    },
    /// SQLite failed.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// PostgreSQL failed or could not be reached.
    #[error("store {store}: {message}")]
    Postgres {
        /// The server and database, never the password.
        store: String,
        /// The cause, with any credential masked.
        message: String,
    },
    /// The store is configured wrongly (an unset variable, an unreadable CA file, a bad URL).
    #[error("store: {0}")]
    Setup(String),
    /// The schema could not be brought up to date.
    #[error("store {store}: migrating the schema failed: {message}")]
    Migration {
        /// The store.
        store: String,
        /// The cause.
        message: String,
    },
    /// A file operation failed.
    #[error("store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer's thread could not be started.
    #[error("cannot start the store's writer thread: {0}")]
    Thread(std::io::Error),
    /// A stored value does not decode.
    #[error("store {store}: {message}")]
    Corrupt {
        /// The store.
        store: String,
        /// What did not decode.
        message: String,
    },
    /// A read was asked for what changed since a read of another kind of store.
    #[error(
        "store {store}: asked what changed since a read of another store; read it whole \
         (a publisher's history belongs to one store)"
    )]
    OtherStore {
        /// The store asked.
        store: String,
    },
}

/// One rollup row: the runs of one target and probe seen from one location in one bucket.
#[derive(Debug, Clone)]
pub struct RollupRow {
    /// Hour or day.
    pub span: Span,
    /// Unix ms of the bucket's start.
    pub bucket: i64,
    /// Target id.
    pub target: String,
    /// Probe name.
    pub probe: String,
    /// The location whose runs these are.
    pub location: String,
    /// The runs in it.
    pub rollup: SparseRollup,
}

/// A rollup row's key and version, borrowed from the row as it is read: what the
/// publisher's window cache checks its sums against without reading the row (a first read,
/// or one after the windows moved, walks a month of heads: nothing is allocated for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RollupHead<'a> {
    /// Unix ms of the bucket's start.
    pub bucket: i64,
    /// Target id.
    pub target: &'a str,
    /// Probe name.
    pub probe: &'a str,
    /// The location whose runs these are.
    pub location: &'a str,
    /// The row's version: every write of a rollup row gives it a version no row of the
    /// store had before (a store-wide counter), so a row with the version a sum saw is the
    /// row it summed.
    pub version: i64,
}

/// Why a store whose schema is at `found` cannot be read by this build (at `latest`), and
/// what to do.
fn schema_mismatch(found: i64, latest: i64) -> String {
    if found > latest {
        format!(
            "the store holds schema version {found}, newer than this sonde's {latest}: upgrade sonde"
        )
    } else {
        format!(
            "the store holds schema version {found}, older than this sonde's {latest}: \
             start this sonde's `sonde run` on it once (it migrates the store), then read it"
        )
    }
}

/// The columns every full read of a rollup row selects, in the order the backends' row
/// readers take them.
const ROLLUP_COLUMNS: &str =
    "bucket, target, probe, location, version, scalars, ttft, e2e, itl, tps";

/// The one order rollups are read in, whatever the backend (text compared byte by byte).
const ROLLUP_ORDER: &str = "ORDER BY bucket, target, probe, location";

/// The columns every read of an incident selects, its row id first, in the order the
/// backends' row readers take them.
const INCIDENT_COLUMNS: &str = "id, target, state, cause, start_ms, end_ms, location, kind";

/// The one order incidents are read in, whatever the backend (text compared byte by byte):
/// newest first, the row id last so that no two are tied.
const INCIDENT_ORDER: &str =
    "ORDER BY start_ms DESC, target DESC, location DESC, kind DESC, id DESC";

/// A rollup's bucket, target, probe and location: the key of one row of a span.
pub type RollupKey<'k> = (i64, &'k str, &'k str, &'k str);

/// What [`Backend::each_rollup_scalars_written`] hands each row to: its head and scalars.
pub type EachScalars<'f> = dyn FnMut(RollupHead<'_>, Scalars) + 'f;

/// What [`Backend::each_rollup_point_written`] hands each row to: its head and what the
/// charts read of its scalars.
pub type EachPoint<'f> = dyn FnMut(RollupHead<'_>, PointScalars) + 'f;

/// What [`Backend::rollups_at`] hands each stored row to, before its histograms are
/// decoded.
pub type EachStored<'f> =
    dyn FnMut(RollupHead<'_>, StoredRollup<'_>) -> Result<(), DecodeError> + 'f;

/// The rollup `read` hands to the reader it is given (the last, if several), decoded.
pub(crate) fn one_rollup(
    read: impl FnOnce(&mut EachStored<'_>) -> Result<(), StoreError>,
) -> Result<Option<SparseRollup>, StoreError> {
    let mut found = None;
    read(&mut |_, stored| {
        found = Some(SparseRollup::from_parts(stored.scalars, stored.blobs)?);
        Ok(())
    })?;
    Ok(found)
}

/// [`Backend::each_rollup_point_written`] read from the rollups' own rows: every backend's
/// unless it keeps the points packed, and the reference a packed read must equal.
pub fn points_of_rollups<B: Backend + ?Sized>(
    store: &B,
    span: Span,
    since_bucket: i64,
    after: Option<&Seen>,
    each: &mut EachPoint<'_>,
) -> Result<Seen, StoreError> {
    store.each_rollup_scalars_written(span, since_bucket, after, &mut |head, scalars| {
        each(head, scalars.point());
    })
}

/// A stored rollup as read, before its histograms are decoded.
#[derive(Debug)]
pub struct StoredRollup<'a> {
    /// Its scalars.
    pub scalars: Scalars,
    /// Its histograms' V2 blobs: TTFT, E2E, ITL, tokens/s.
    pub blobs: [&'a [u8]; 4],
}

impl RollupRow {
    /// The row of a stored rollup read in `span`, its histograms decoded.
    pub fn of(
        span: Span,
        head: RollupHead<'_>,
        stored: StoredRollup<'_>,
    ) -> Result<RollupRow, DecodeError> {
        Ok(RollupRow {
            span,
            bucket: head.bucket,
            target: head.target.to_owned(),
            probe: head.probe.to_owned(),
            location: head.location.to_owned(),
            rollup: SparseRollup::from_parts(stored.scalars, stored.blobs)?,
        })
    }
}

/// A target as one location sees it: the key of stored states.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetAt {
    /// Target id.
    pub target: String,
    /// Location.
    pub location: String,
}

impl TargetAt {
    /// `target` seen from `location`.
    pub fn new(target: &str, location: &str) -> TargetAt {
        TargetAt {
            target: target.to_owned(),
            location: location.to_owned(),
        }
    }
}

/// A location's last sign of life: written with each batch its prober stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The location.
    pub location: String,
    /// Unix ms of its latest batch.
    pub seen_ms: i64,
    /// Its shortest schedule, ms: it is stale once silent for three of them.
    pub shortest_ms: i64,
    /// Unix ms it was last retired ([`Backend::retire`]), if ever.
    pub retired_ms: Option<i64>,
    /// How long the store has not heard its prober, ms on the store's own clock, where
    /// the store keeps one (PostgreSQL: the database's, the same for every prober of a
    /// fleet, so a prober whose clock is off is judged as one whose clock is right). When
    /// written: `Some(0)` for a prober's own heartbeat, heard now; `None` for one copied or
    /// imported with its runs. Read: `None` where the store keeps no clock (SQLite, whose
    /// single node's clock `seen_ms` is on) or its prober was not heard since (a copy,
    /// or a prober of a version before the column).
    pub silent_ms: Option<i64>,
}

impl Heartbeat {
    /// Whether it is retired: not since written to. A heartbeat its prober writes after
    /// the retirement, of any version of sonde, puts it back in service: where the store
    /// keeps its own clock, any one its prober stamped (a retirement clears the stamp),
    /// whatever the prober's clock says; else one later on the prober's clock.
    pub fn retired(&self) -> bool {
        self.silent_ms.is_none()
            && self
                .retired_ms
                .is_some_and(|retired| retired >= self.seen_ms)
    }
}

/// What retiring a location did ([`Backend::retire`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Its incidents that were open, closed at the retirement.
    pub incidents_closed: usize,
    /// Its targets' states, forgotten.
    pub states_forgotten: usize,
}

/// A period a target spent down or degraded, or with its answers drifted from its own past,
/// as one location saw it. Its text is shared ([`crate::interned`]): a flapping fleet has
/// tens of thousands in the 90 days a publisher reads, and a few dozen distinct names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Availability or quality.
    pub kind: IncidentKind,
    /// Target id.
    pub target: Arc<str>,
    /// The location that saw it.
    pub location: Arc<str>,
    /// Down or degraded.
    pub state: State,
    /// What started it.
    pub cause: Arc<str>,
    /// Unix ms it began.
    pub start_ms: i64,
    /// Unix ms it ended; `None` while it lasts.
    pub end_ms: Option<i64>,
}

/// Spend of one provider in one month by the probers of one location.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    /// Provider name.
    pub provider: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// The location that spent it.
    pub location: String,
    /// US dollars.
    pub usd: f64,
    /// Input and output tokens.
    pub tokens: u64,
}

/// Everything one transaction writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// New results with their unix ms.
    pub results: Vec<(ResultRecord, i64)>,
    /// Rollups to store whole (already merged with what was stored).
    pub rollups: Vec<RollupRow>,
    /// Spend to add to what is stored.
    pub spend: Vec<Spend>,
    /// Target states to store.
    pub health: Vec<(TargetAt, TargetHealth)>,
    /// State changes, which open and close incidents.
    pub transitions: Vec<Transition>,
    /// The writing locations' signs of life.
    pub heartbeats: Vec<Heartbeat>,
    /// Notifications the batch's changes lead to, for the outbox.
    pub notifications: Vec<Notification>,
    /// Outbox rows a receiver took: id and unix ms.
    pub delivered: Vec<(i64, i64)>,
}

/// Rows copied whole from another store (`sonde store migrate`): unlike a [`Batch`], spend
/// and incidents replace what is stored under the same key instead of adding to it, so a
/// copy run twice stores each row once.
#[derive(Debug, Default)]
pub struct Copied {
    /// Results with their unix ms (kept when their `run_id` is new).
    pub results: Vec<(ResultRecord, i64)>,
    /// Rollups (replacing the same span, bucket, target, probe and location).
    pub rollups: Vec<RollupRow>,
    /// Spend (replacing the same provider, month and location).
    pub spend: Vec<Spend>,
    /// Target states (replacing the same target and location).
    pub health: Vec<(TargetAt, TargetHealth)>,
    /// Incidents (kept when no incident of the target and location starts at the same ms).
    pub incidents: Vec<Incident>,
    /// Locations' heartbeats (the later one kept).
    pub heartbeats: Vec<Heartbeat>,
}

/// What a store does; SQLite and PostgreSQL each implement it, with the same results.
pub trait Backend: Send {
    /// The store for messages: a file path, or the server and database (never a password).
    fn describe(&self) -> String;

    /// Another handle reading this store, for reads on another thread at the same time as
    /// this one's: PostgreSQL's shares the connection pool and its runtime (each read takes
    /// a connection of its own), SQLite's is a read-only connection of its own. It never
    /// writes, takes no lock and holds no fleet session.
    fn fork(&self) -> Result<Store, StoreError>;

    /// Writes a batch in one durable transaction.
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// Writes copied rows in one transaction (idempotent, see [`Copied`]).
    fn copy(&mut self, rows: &Copied) -> Result<(), StoreError>;

    /// Results with `ts_ms >= since_ms`, oldest first, optionally of one target.
    fn results_since(
        &self,
        since_ms: i64,
        target: Option<&str>,
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError> {
        let mut out = Vec::new();
        self.each_result_since(since_ms, target, &mut |record, ts_ms| {
            out.push((record, ts_ms))
        })?;
        Ok(out)
    }

    /// Hands `each` the results with `ts_ms >= since_ms` (optionally of one target) with
    /// their unix ms, by time then `run_id`, one at a time as they are read.
    fn each_result_since(
        &self,
        since_ms: i64,
        target: Option<&str>,
        each: &mut dyn FnMut(ResultRecord, i64),
    ) -> Result<(), StoreError>;

    /// Up to `limit` results after the position `(ts_ms, run_id)` (exclusive; `None` from the
    /// start), ordered by time then `run_id`: for reading a whole store in pages.
    fn results_after(
        &self,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError>;

    /// Hands `each` the newest `limit` results with `ts_ms >= since_ms`, oldest first, one at
    /// a time as they are read.
    fn each_newest_since(
        &self,
        since_ms: i64,
        limit: usize,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<(), StoreError>;

    /// Hands `each` the results with `ts_ms >= since_ms` written after `after` (every one
    /// when `None`), by time then `run_id`, one at a time as they are read; returns what
    /// this read saw, taken in its snapshot: a reader that keeps runs reads only the new
    /// ones, late or not.
    fn each_result_written(
        &self,
        since_ms: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<Seen, StoreError>;

    /// The latest `limit` results of `target`, newest first.
    fn latest_results(&self, target: &str, limit: usize) -> Result<Vec<ResultRecord>, StoreError>;

    /// Hands `each` the latest `limit` results of each of `targets`, a target's together and
    /// newest first, the targets in the order given. One read a target by default; a
    /// backend across a network overrides it with one read for all (PostgreSQL: a
    /// publisher's start at 1,000 targets made 1,000 round trips).
    fn each_latest_results(
        &self,
        targets: &[&str],
        limit: usize,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<(), StoreError> {
        for target in targets {
            for record in self.latest_results(target, limit)? {
                each(record);
            }
        }
        Ok(())
    }

    /// Number of stored results.
    fn result_count(&self) -> Result<u64, StoreError> {
        self.result_count_since(i64::MIN)
    }

    /// Number of stored results with `ts_ms >= since_ms` (an index range count: cheap).
    fn result_count_since(&self, since_ms: i64) -> Result<u64, StoreError>;

    /// Hands `each` the rollups of `span` with `bucket >= since_bucket`, by bucket, target,
    /// probe, location, one at a time as they are read.
    fn each_rollup_since(
        &self,
        span: Span,
        since_bucket: i64,
        each: &mut dyn FnMut(RollupRow),
    ) -> Result<(), StoreError>;

    /// Hands `each` the head (key and version) of every rollup of `span` with `bucket >=
    /// since_bucket` written after `after` (every one when `None`), each key's by bucket
    /// ascending (the keys in any order), without reading the rows' scalars or histograms
    /// (an index holds the heads); returns what this read saw, taken in its snapshot.
    fn each_rollup_head_written(
        &self,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(RollupHead<'_>),
    ) -> Result<Seen, StoreError>;

    /// Hands `each` the rollups of `span` stored under `keys` (as they are now, with their
    /// version), by bucket, target, probe, location; a key with no row is skipped. A row
    /// `each` cannot decode is a corrupt store.
    fn rollups_at(
        &self,
        span: Span,
        keys: &[RollupKey<'_>],
        each: &mut EachStored<'_>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` rollups of `span` after the position `(bucket, target, probe,
    /// location)` (exclusive; `None` from the start), in that order: for reading a whole
    /// store in pages.
    fn rollups_after(
        &self,
        span: Span,
        after: Option<RollupKey<'_>>,
        limit: usize,
    ) -> Result<Vec<RollupRow>, StoreError>;

    /// Hands `each` the head and scalar part of every rollup of `span` with `bucket >=
    /// since_bucket` written after `after` (every one when `None`; cheap: no histogram is
    /// decoded), one row at a time — a month of hours is hundreds of thousands —, by
    /// bucket, target, probe, location (every location's row apart); returns what this
    /// read saw, taken in its snapshot.
    fn each_rollup_scalars_written(
        &self,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut EachScalars<'_>,
    ) -> Result<Seen, StoreError>;

    /// [`Backend::each_rollup_scalars_written`], each row's scalars as the charts read them
    /// ([`PointScalars`]), in the same order: what the bar, the daily table and the heatmap
    /// are folded from. PostgreSQL reads most of a first read (`after` `None`) from its
    /// packed points ([`Backend::pack`]) rather than from a month of rows.
    fn each_rollup_point_written(
        &self,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut EachPoint<'_>,
    ) -> Result<Seen, StoreError> {
        points_of_rollups(self, span, since_bucket, after, each)
    }

    /// Packs the charts' scalars of every location's closed buckets (before the current
    /// hour or day at `now_ms`) where the store keeps them packed, so that a first read of
    /// them reads a row per location and bucket: what `sonde store migrate` does after a
    /// copy (a writer packs its own location's as it writes). Nothing for SQLite, whose
    /// reads of a single node's rollups need none.
    fn pack(&mut self, _now_ms: i64) -> Result<(), StoreError> {
        Ok(())
    }

    /// One stored rollup of one location.
    fn rollup(
        &self,
        span: Span,
        bucket: i64,
        at: &TargetAt,
        probe: &str,
    ) -> Result<Option<SparseRollup>, StoreError> {
        one_rollup(|each| self.rollups_at(span, &[(bucket, &at.target, probe, &at.location)], each))
    }

    /// Spend per provider in `month` (`YYYY-MM`) by every location together: USD and
    /// tokens.
    fn month_spend(&self, month: &str) -> Result<HashMap<String, (f64, u64)>, StoreError>;

    /// Every month's spend of every provider, by provider, month and location.
    fn spend(&self) -> Result<Vec<Spend>, StoreError>;

    /// Every stored state of every target in every location.
    fn health(&self) -> Result<HashMap<TargetAt, TargetHealth>, StoreError>;

    /// Incidents that were open at or after `since_ms`, newest first (by start, then target,
    /// location, kind and row id, all descending; text byte by byte): the whole read of
    /// [`Backend::each_incident_written`], collected.
    fn incidents(&self, since_ms: i64) -> Result<Vec<Incident>, StoreError> {
        let mut incidents = Vec::new();
        self.each_incident_written(since_ms, None, &mut |_, incident| {
            incidents.push(incident);
        })?;
        // Kept in the room they take, not a doubling list's.
        incidents.shrink_to_fit();
        Ok(incidents)
    }

    /// Hands `each` the incidents, with their row ids, that were opened or changed (closed,
    /// reopened, made worse) after `after`, whenever they ended; or, when `None`, every one
    /// open at or after `since_ms`, in [`Backend::incidents`]' order. Returns what this read
    /// saw, taken in its snapshot: a publisher keeping the incidents reads only the new.
    fn each_incident_written(
        &self,
        since_ms: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(i64, Incident),
    ) -> Result<Seen, StoreError>;

    /// Every location that ever wrote, with its last heartbeat, by name.
    fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError>;

    /// Up to `limit` notifications of `location` not yet delivered, oldest first, with their
    /// outbox ids.
    fn pending_notifications(
        &self,
        location: &str,
        limit: usize,
    ) -> Result<Vec<(i64, Notification)>, StoreError>;

    /// The publisher's checkpoint as last saved, if one was (`publish::checkpoint`).
    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// When the store's checkpoint was saved (unix ms), without reading it; `None` when it
    /// holds none: never saved, or emptied since (on PostgreSQL, by a crash of the server).
    fn checkpoint_saved_ms(&self) -> Result<Option<i64>, StoreError>;

    /// Saves the publisher's checkpoint over the last one, at `saved_ms`. Called by the
    /// daemon holding the checkpoint lock, on a reading handle: a read-only SQLite handle
    /// opens the file for this one write (the daemon's process holds the store's lock).
    fn save_checkpoint(&self, saved_ms: i64, body: &[u8]) -> Result<(), StoreError>;

    /// Whether this process may write the published site: it takes (or still holds) the
    /// store's publisher lock, which one daemon of a fleet holds at a time. A store only
    /// one daemon can write (SQLite) always says yes.
    fn publisher_lock(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Whether this process saves the publisher's checkpoint: it takes (or still holds)
    /// the store's checkpoint lock, which one daemon of a fleet holds at a time, apart from
    /// the publisher lock, so a fleet whose daemons only serve keeps a checkpoint too. A
    /// store only one daemon can write (SQLite) always says yes.
    fn checkpoint_lock(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// The fleet's shared limits, when the store coordinates several probers (PostgreSQL);
    /// `None` when this prober is alone with its store.
    fn into_fleet_limits(self: Box<Self>) -> Option<Arc<dyn FleetLimits>> {
        None
    }

    /// Deletes what lies before `bounds` and records the results' and rollups' bounds for
    /// readers ([`Seen`]); returns how many of each were deleted.
    fn prune(&mut self, bounds: &Prune) -> Result<Pruned, StoreError>;

    /// Retires the location this handle writes as ([`Store::open`]: its lock refuses a
    /// second writer, so a running prober of it refuses this), at `at_ms`, in one
    /// transaction: marks its heartbeat retired ([`Heartbeat::retired`], until its prober
    /// writes again), so publishers leave it out of the fleet's
    /// lists and figures; closes its open incidents then; forgets its targets' states. What
    /// it measured stays until retention prunes it. `Ok(None)` when it never wrote a
    /// heartbeat.
    fn retire(&mut self, at_ms: i64) -> Result<Option<Retired>, StoreError>;
}

/// Days an ended incident is kept at least, whatever the rollups' retention: the uptime
/// bar's 90 days (`publish::BAR_DAYS`) and one more, so that a publisher whose clock is
/// behind the pruning writer's still finds every incident of its bar's first day.
pub const INCIDENTS_KEPT_DAYS: i64 = 91;

/// What [`Backend::prune`] deletes: every row from before its bound, unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// Raw results run before it (and outbox rows sent before it).
    pub results_before_ms: i64,
    /// Rollups (and packed points) whose bucket began before it.
    pub rollups_before_ms: i64,
    /// Incidents that ended before it; one still open is never deleted.
    pub incidents_before_ms: i64,
}

impl Prune {
    /// The bounds of `store`'s retention at `now_ms`: results after `retention_days`,
    /// rollups after `rollup_retention_days`, ended incidents with the rollups (the days
    /// they are shown on) but never within [`INCIDENTS_KEPT_DAYS`].
    pub fn at(store: &StoreConfig, now_ms: i64) -> Prune {
        let days_ago = |days: i64| now_ms - days * Span::Day.ms();
        let rollups_before_ms = days_ago(i64::from(store.rollup_retention_days));
        Prune {
            results_before_ms: days_ago(i64::from(store.retention_days)),
            rollups_before_ms,
            incidents_before_ms: rollups_before_ms.min(days_ago(INCIDENTS_KEPT_DAYS)),
        }
    }
}

/// How many rows a [`Backend::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Raw results.
    pub results: usize,
    /// Rollups.
    pub rollups: usize,
    /// Ended incidents.
    pub incidents: usize,
}

/// How often a prober renews its rate leases.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);
/// A lease not renewed for this long is gone: its prober stopped or lost the database.
pub const LEASE_TTL: Duration = Duration::from_secs(LEASE_RENEW.as_secs() * 3);
/// A new lease counts for the others at once; its prober sends only this long, plus the
/// limit's window, after taking it: every other holder has renewed (and shrunk its share)
/// by then, and what they sent at their larger share has left the window.
pub const LEASE_SEEN: Duration = Duration::from_secs(LEASE_RENEW.as_secs() * 2);

/// How long after its last renewal a lapsed lease whose prober held it throughout keeps
/// its age for a limit counted over `window`: the others grow into a lapsed lease's part a
/// window after they notice it lapsed ([`LEASE_TTL`] after its renewal), and hear of its
/// renewal within one of their own, so that renewal must come a renewal before, and one
/// more for the time their renewals take. Never shorter than [`LEASE_TTL`], for which
/// every lease counts.
pub fn lease_kept_for(window: Duration) -> Duration {
    (LEASE_TTL + window)
        .saturating_sub(LEASE_RENEW * 2)
        .max(LEASE_TTL)
}

/// What probers sharing one store share: each provider's request rate, in leases, and its
/// monthly budget, in reservations. Implemented by the PostgreSQL store.
pub trait FleetLimits: Send + Sync {
    /// Renews `location`'s lease on `provider`'s rate limit, whose window is `window`, and
    /// says how the limit is divided now. `held`: this prober renewed the lease before and
    /// has sent only within it since (it still trusts it, the database away meanwhile): a
    /// lease that lapsed then keeps its age while the others, which take a lapsed lease's
    /// part only a window after they notice, hear of it again before that
    /// ([`lease_kept_for`]). A lease not `held` starts again, a newcomer's, even one not
    /// lapsed: a daemon restarted after a crash cannot know when the one before it last
    /// sent.
    fn lease_rate(
        &self,
        provider: &str,
        location: &str,
        window: Duration,
        held: bool,
    ) -> Result<RateShare, StoreError>;

    /// Gives up `location`'s lease on `provider` at a graceful stop: the others count one
    /// holder fewer at their next renewal instead of when the lease expires, while a
    /// newcomer still waits a window for this prober's last sends to leave it.
    fn release_rate(&self, provider: &str, location: &str) -> Result<(), StoreError>;

    /// Reserves `usd` and `tokens` of `provider`'s `cap` for the run `run_id` in `month`,
    /// until `expires_ms` or until the run's result is stored (whichever is first), if
    /// every location's spend plus every live reservation plus this stays within the cap.
    /// `Ok(Err(reason))` when it would not.
    fn reserve(
        &self,
        reservation: &SharedReservation<'_>,
    ) -> Result<Result<(), String>, StoreError>;
}

/// How a provider's rate limit is divided among the probers holding leases on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateShare {
    /// Probers holding a live lease on the provider, this one included.
    pub holders: u32,
    /// This prober's place among them by location name, from 0 (the first ones get the
    /// remainder of the division).
    pub rank: u32,
    /// Whether this prober may send: it is alone (no other lease within the last window),
    /// or its lease is old enough that every other holder has shrunk its share and what
    /// they sent at their larger share has left the window.
    pub active: bool,
}

/// A run's worst case, reserved against a provider's monthly cap across the fleet.
#[derive(Debug, Clone)]
pub struct SharedReservation<'a> {
    /// The run (its result's `run_id` settles the reservation).
    pub run_id: &'a str,
    /// The provider.
    pub provider: &'a str,
    /// `YYYY-MM`.
    pub month: &'a str,
    /// The reserving location.
    pub location: &'a str,
    /// Worst-case USD.
    pub usd: f64,
    /// Worst-case tokens.
    pub tokens: u64,
    /// The provider's caps.
    pub cap: crate::config::Budget,
    /// Unix ms after which an unsettled reservation no longer counts (a prober killed
    /// mid-run).
    pub expires_ms: i64,
}

/// An open store, whichever backend holds it.
pub struct Store(Box<dyn Backend>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.0.describe()).finish()
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.0
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut (dyn Backend + 'static) {
        &mut *self.0
    }
}

impl Store {
    /// Opens (creating if needed) the configured store for `location`'s writer: takes that
    /// location's writer lock and applies pending migrations; the writer that brings a store
    /// to locations gets the rows written before them.
    pub fn open(config: &StoreConfig, location: &str) -> Result<Store, StoreError> {
        Ok(Store(match &config.backend {
            StoreBackend::Sqlite { path } => Box::new(sqlite::Sqlite::open(path, location)?),
            StoreBackend::Postgres { url_env, ca_file } => Box::new(postgres::Postgres::open(
                &postgres::url_from_env(url_env)?,
                ca_file.as_deref(),
                postgres::Access::Writer(location.to_owned()),
            )?),
        }))
    }

    /// The fleet's shared limits, when this store coordinates several probers.
    pub fn into_fleet_limits(self) -> Option<Arc<dyn FleetLimits>> {
        self.0.into_fleet_limits()
    }

    /// Opens an existing store for reading, while a daemon may be writing it.
    pub fn open_read_only(config: &StoreConfig) -> Result<Store, StoreError> {
        Ok(Store(match &config.backend {
            StoreBackend::Sqlite { path } => Box::new(sqlite::Sqlite::open_read_only(path)?),
            StoreBackend::Postgres { url_env, ca_file } => Box::new(postgres::Postgres::open(
                &postgres::url_from_env(url_env)?,
                ca_file.as_deref(),
                postgres::Access::Reader,
            )?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_incidents_are_pruned_with_the_rollups_but_never_on_a_bar() {
        let day = Span::Day.ms();
        let now = 1_000 * day;
        let mut store = StoreConfig::default();
        let bounds = Prune::at(&store, now);
        assert_eq!(bounds.results_before_ms, now - 30 * day);
        assert_eq!(bounds.rollups_before_ms, now - 400 * day);
        assert_eq!(bounds.incidents_before_ms, now - 400 * day);
        store.rollup_retention_days = 30;
        let bounds = Prune::at(&store, now);
        assert_eq!(bounds.rollups_before_ms, now - 30 * day);
        assert_eq!(bounds.incidents_before_ms, now - INCIDENTS_KEPT_DAYS * day);
    }
}
