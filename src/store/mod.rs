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
pub(crate) mod sqlite;
pub mod writer;

use std::collections::HashMap;
use std::path::PathBuf;

use thiserror::Error;

use crate::aggregate::health::{State, TargetHealth, Transition};
use crate::aggregate::rollup::{Rollup, Scalars, Span};
use crate::config::{StoreBackend, StoreConfig};
use crate::result::ResultRecord;

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
}

/// One rollup row.
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
    /// The runs in it.
    pub rollup: Rollup,
}

/// A period a target spent down or degraded.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Target id.
    pub target: String,
    /// Down or degraded.
    pub state: State,
    /// What started it.
    pub cause: String,
    /// Unix ms it began.
    pub start_ms: i64,
    /// Unix ms it ended; `None` while it lasts.
    pub end_ms: Option<i64>,
}

/// Spend of one provider in one month.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    /// Provider name.
    pub provider: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
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
    pub health: Vec<(String, TargetHealth)>,
    /// State changes, which open and close incidents.
    pub transitions: Vec<Transition>,
}

/// Rows copied whole from another store (`sonde store migrate`): unlike a [`Batch`], spend
/// and incidents replace what is stored under the same key instead of adding to it, so a
/// copy run twice stores each row once.
#[derive(Debug, Default)]
pub struct Copied {
    /// Results with their unix ms (kept when their `run_id` is new).
    pub results: Vec<(ResultRecord, i64)>,
    /// Rollups (replacing the same span, bucket, target and probe).
    pub rollups: Vec<RollupRow>,
    /// Spend (replacing the same provider and month).
    pub spend: Vec<Spend>,
    /// Target states (replacing the same target).
    pub health: Vec<(String, TargetHealth)>,
    /// Incidents (kept when no incident of the target starts at the same ms).
    pub incidents: Vec<Incident>,
}

/// What a store does; SQLite and PostgreSQL each implement it, with the same results.
pub trait Backend: Send {
    /// The store for messages: a file path, or the server and database (never a password).
    fn describe(&self) -> String;

    /// Writes a batch in one durable transaction.
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// Writes copied rows in one transaction (idempotent, see [`Copied`]).
    fn copy(&mut self, rows: &Copied) -> Result<(), StoreError>;

    /// Results with `ts_ms >= since_ms`, oldest first, optionally of one target.
    fn results_since(
        &self,
        since_ms: i64,
        target: Option<&str>,
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError>;

    /// Up to `limit` results after the position `(ts_ms, run_id)` (exclusive; `None` from the
    /// start), ordered by time then `run_id`: for reading a whole store in pages.
    fn results_after(
        &self,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError>;

    /// The newest `limit` results with `ts_ms >= since_ms`, oldest first.
    fn newest_since(&self, since_ms: i64, limit: usize) -> Result<Vec<ResultRecord>, StoreError>;

    /// The latest `limit` results of `target`, newest first.
    fn latest_results(&self, target: &str, limit: usize) -> Result<Vec<ResultRecord>, StoreError>;

    /// Number of stored results.
    fn result_count(&self) -> Result<u64, StoreError>;

    /// Rollups of `span` with `bucket >= since_bucket`, by bucket, target, probe.
    fn rollups_since(&self, span: Span, since_bucket: i64) -> Result<Vec<RollupRow>, StoreError>;

    /// Up to `limit` rollups of `span` after the position `(bucket, target, probe)`
    /// (exclusive; `None` from the start), in that order: for reading a whole store in pages.
    fn rollups_after(
        &self,
        span: Span,
        after: Option<(i64, &str, &str)>,
        limit: usize,
    ) -> Result<Vec<RollupRow>, StoreError>;

    /// The scalar part of the rollups of `span` with `bucket >= since_bucket` (cheap: no
    /// histogram is decoded): bucket, target, probe, scalars; by bucket, target, probe.
    fn rollup_scalars_since(
        &self,
        span: Span,
        since_bucket: i64,
    ) -> Result<Vec<(i64, String, String, Scalars)>, StoreError>;

    /// One stored rollup.
    fn rollup(
        &self,
        span: Span,
        bucket: i64,
        target: &str,
        probe: &str,
    ) -> Result<Option<Rollup>, StoreError>;

    /// Spend per provider in `month` (`YYYY-MM`): USD and tokens.
    fn month_spend(&self, month: &str) -> Result<HashMap<String, (f64, u64)>, StoreError>;

    /// Every month's spend of every provider, by provider and month.
    fn spend(&self) -> Result<Vec<Spend>, StoreError>;

    /// Every target's stored state.
    fn health(&self) -> Result<HashMap<String, TargetHealth>, StoreError>;

    /// Incidents that were open at or after `since_ms`, newest first.
    fn incidents(&self, since_ms: i64) -> Result<Vec<Incident>, StoreError>;

    /// Deletes raw results older than `results_before_ms` and rollups whose bucket began
    /// before `rollups_before_ms`; returns how many of each.
    fn prune(
        &mut self,
        results_before_ms: i64,
        rollups_before_ms: i64,
    ) -> Result<(usize, usize), StoreError>;
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
    /// Opens (creating if needed) the configured store for writing: takes the writer's lock
    /// and applies pending migrations.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        Ok(Store(match &config.backend {
            StoreBackend::Sqlite { path } => Box::new(sqlite::Sqlite::open(path)?),
            StoreBackend::Postgres { url_env, ca_file } => Box::new(postgres::Postgres::open(
                &postgres::url_from_env(url_env)?,
                ca_file.as_deref(),
                postgres::Access::Writer,
            )?),
        }))
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
