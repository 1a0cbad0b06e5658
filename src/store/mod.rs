//! The SQLite store: raw results, hourly and daily rollups, monthly spend, target states and
//! incidents. One writer (the daemon, holding an OS lock on the database file itself, so a
//! second name for it — a symbolic or hard link — is the same lock), any number of readers
//! (export, publish) thanks to WAL.
//!
//! A batch is written in one transaction, synchronously to disk (`synchronous = FULL`): when
//! [`Store::write`] returns, every result of the batch survives a `kill -9` or a power cut.
//! Results are keyed by `run_id`, so writing a batch twice adds nothing.

mod schema;
pub mod writer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use thiserror::Error;

use crate::aggregate::health::{State, TargetHealth, Transition};
use crate::aggregate::rollup::{Rollup, Scalars, Span};
use crate::result::ResultRecord;
pub use schema::RESULT_COLUMNS;

/// What can go wrong with the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another daemon holds the store.
    #[error(
        "{path} is in use by another sonde daemon (it holds a lock on this file, whatever \
         name or link it was opened by); stop it first, or give this one another [store] path"
    )]
    Locked {
        /// The database.
        path: PathBuf,
    },
    /// SQLite failed.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The schema could not be brought up to date.
    #[error("store {path}: migrating the schema failed: {message}")]
    Migration {
        /// The database.
        path: PathBuf,
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
    #[error("store {path}: {message}")]
    Corrupt {
        /// The database.
        path: PathBuf,
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

/// Everything one transaction writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// New results with their unix ms.
    pub results: Vec<(ResultRecord, i64)>,
    /// Rollups to store whole (already merged with what was stored).
    pub rollups: Vec<RollupRow>,
    /// Spend to add: provider, month (`YYYY-MM`), USD, tokens.
    pub spend: Vec<(String, String, f64, u64)>,
    /// Target states to store.
    pub health: Vec<(String, TargetHealth)>,
    /// State changes, which open and close incidents.
    pub transitions: Vec<Transition>,
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The database file, locked (`flock`) for the writer's lifetime: the lock is on the
    /// file's inode, so every path to it shares it, and the OS releases it when the process
    /// dies, even by `kill -9`, so a crashed daemon never leaves a stale lock. SQLite's own
    /// locks are `fcntl` locks, which do not interact with it.
    _lock: Option<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` for writing: takes the lock, sets WAL,
    /// applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        let mut conn = Connection::open(path).map_err(|source| sqlite(path, source))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(|source| sqlite(path, source))?;
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|err| StoreError::Migration {
                path: path.to_owned(),
                message: err.to_string(),
            })?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            _lock: Some(lock),
        })
    }

    /// Opens an existing store for reading, while a daemon may be writing it.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no store here: run `sonde run` first, or point [store] path at one",
                ),
            });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| sqlite(path, source))?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(|source| sqlite(path, source))?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            _lock: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        sqlite(&self.path, source)
    }

    /// Writes a batch in one durable transaction.
    pub fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| sqlite(&path, source);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let columns: Vec<String> = RESULT_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
            let values: Vec<String> = RESULT_COLUMNS.iter().map(|c| format!(":{c}")).collect();
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT OR IGNORE INTO results (ts_ms, itl_gaps, {}) VALUES (:ts_ms, :itl_gaps, {})",
                    columns.join(", "),
                    values.join(", ")
                ))
                .map_err(e)?;
            for (record, ts_ms) in &batch.results {
                let named =
                    serde_rusqlite::to_params_named(record).map_err(|err| StoreError::Corrupt {
                        path: path.clone(),
                        message: format!("a record does not serialize: {err}"),
                    })?;
                let gaps: Vec<u8> = record
                    .itl_gaps_us
                    .iter()
                    .flat_map(|gap| gap.to_le_bytes())
                    .collect();
                let mut params = named.to_slice();
                params.push((":ts_ms", ts_ms));
                params.push((":itl_gaps", &gaps));
                insert.execute(params.as_slice()).map_err(e)?;
            }
            let mut upsert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO rollups (span, bucket, target, probe, scalars, ttft, e2e, itl, tps)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(e)?;
            for row in &batch.rollups {
                let scalars =
                    serde_json::to_string(&row.rollup.stored_scalars()).unwrap_or_default();
                let [ttft, e2e, itl, tps] = row.rollup.blobs();
                upsert
                    .execute(params![
                        row.span.as_str(),
                        row.bucket,
                        row.target,
                        row.probe,
                        scalars,
                        ttft,
                        e2e,
                        itl,
                        tps
                    ])
                    .map_err(e)?;
            }
            let mut spend = tx
                .prepare_cached(
                    "INSERT INTO spend (provider, month, usd, tokens) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (provider, month) DO UPDATE SET
                        usd = usd + excluded.usd, tokens = tokens + excluded.tokens",
                )
                .map_err(e)?;
            for (provider, month, usd, tokens) in &batch.spend {
                spend
                    .execute(params![provider, month, usd, *tokens as i64])
                    .map_err(e)?;
            }
            let mut state = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO target_state (target, health) VALUES (?1, ?2)",
                )
                .map_err(e)?;
            for (target, health) in &batch.health {
                state
                    .execute(params![
                        target,
                        serde_json::to_string(health).unwrap_or_default()
                    ])
                    .map_err(e)?;
            }
            for transition in &batch.transitions {
                write_transition(&tx, transition).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Results with `ts_ms >= since_ms`, oldest first, optionally of one target.
    pub fn results_since(
        &self,
        since_ms: i64,
        target: Option<&str>,
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT * FROM results WHERE ts_ms >= ?1 AND (?2 IS NULL OR target = ?2)
                 ORDER BY ts_ms, id",
            )
            .map_err(|source| self.err(source))?;
        let mut rows = statement
            .query(params![since_ms, target])
            .map_err(|source| self.err(source))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|source| self.err(source))? {
            let record = self.record_of(row)?;
            let ts_ms: i64 = row.get("ts_ms").map_err(|source| self.err(source))?;
            out.push((record, ts_ms));
        }
        Ok(out)
    }

    /// The newest `limit` results with `ts_ms >= since_ms`, oldest first.
    pub fn newest_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<ResultRecord>, StoreError> {
        let mut out = self.records(
            "SELECT * FROM results WHERE ts_ms >= ?1 ORDER BY ts_ms DESC, id DESC LIMIT ?2",
            params![since_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        out.reverse();
        Ok(out)
    }

    /// Number of stored results.
    pub fn result_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM results", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|source| self.err(source))
    }

    /// Rollups of `span` with `bucket >= since_bucket`.
    pub fn rollups_since(
        &self,
        span: Span,
        since_bucket: i64,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT bucket, target, probe, scalars, ttft, e2e, itl, tps FROM rollups
                 WHERE span = ?1 AND bucket >= ?2 ORDER BY bucket",
            )
            .map_err(|source| self.err(source))?;
        let mut rows = statement
            .query(params![span.as_str(), since_bucket])
            .map_err(|source| self.err(source))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|source| self.err(source))? {
            let get = |i| {
                row.get_ref(i)
                    .map(|value| value.as_bytes_or_null().ok().flatten())
            };
            let decode = || -> rusqlite::Result<RollupRow> {
                let scalars: String = row.get(3)?;
                let blobs = [get(4)?, get(5)?, get(6)?, get(7)?].map(Option::unwrap_or_default);
                let rollup = serde_json::from_str::<Scalars>(&scalars)
                    .map_err(|err| err.to_string())
                    .and_then(|scalars| {
                        Rollup::from_parts(scalars, blobs).map_err(|err| err.to_string())
                    })
                    .map_err(|message| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            message.into(),
                        )
                    })?;
                Ok(RollupRow {
                    span,
                    bucket: row.get(0)?,
                    target: row.get(1)?,
                    probe: row.get(2)?,
                    rollup,
                })
            };
            out.push(decode().map_err(|source| self.err(source))?);
        }
        Ok(out)
    }

    /// The scalar part of the rollups of `span` with `bucket >= since_bucket` (cheap: no
    /// histogram is decoded): bucket, target, probe, scalars.
    pub fn rollup_scalars_since(
        &self,
        span: Span,
        since_bucket: i64,
    ) -> Result<Vec<(i64, String, String, Scalars)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT bucket, target, probe, scalars FROM rollups
                 WHERE span = ?1 AND bucket >= ?2 ORDER BY bucket",
            )
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map(params![span.as_str(), since_bucket], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(|source| self.err(source))?;
        let mut out = Vec::new();
        for row in rows {
            let (bucket, target, probe, json) = row.map_err(|source| self.err(source))?;
            let scalars = serde_json::from_str(&json).map_err(|err| StoreError::Corrupt {
                path: self.path.clone(),
                message: format!("rollup scalars do not decode: {err}"),
            })?;
            out.push((bucket, target, probe, scalars));
        }
        Ok(out)
    }

    /// The latest `limit` results of `target`, newest first.
    pub fn latest_results(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<ResultRecord>, StoreError> {
        self.records(
            "SELECT * FROM results WHERE target = ?1 ORDER BY ts_ms DESC, id DESC LIMIT ?2",
            params![target, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// The results a `SELECT * FROM results …` query returns, in its order.
    fn records(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ResultRecord>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(sql)
            .map_err(|source| self.err(source))?;
        let mut rows = statement.query(params).map_err(|source| self.err(source))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|source| self.err(source))? {
            out.push(self.record_of(row)?);
        }
        Ok(out)
    }

    fn record_of(&self, row: &rusqlite::Row<'_>) -> Result<ResultRecord, StoreError> {
        let mut record: ResultRecord =
            serde_rusqlite::from_row(row).map_err(|err| StoreError::Corrupt {
                path: self.path.clone(),
                message: format!("a stored result does not decode: {err}"),
            })?;
        let gaps: Option<Vec<u8>> = row.get("itl_gaps").map_err(|source| self.err(source))?;
        record.itl_gaps_us = gaps
            .unwrap_or_default()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(record)
    }

    /// One stored rollup.
    pub fn rollup(
        &self,
        span: Span,
        bucket: i64,
        target: &str,
        probe: &str,
    ) -> Result<Option<Rollup>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT scalars, ttft, e2e, itl, tps FROM rollups
                 WHERE span = ?1 AND bucket = ?2 AND target = ?3 AND probe = ?4",
                params![span.as_str(), bucket, target, probe],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        [
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                            row.get::<_, Vec<u8>>(3)?,
                            row.get::<_, Vec<u8>>(4)?,
                        ],
                    ))
                },
            )
            .optional()
            .map_err(|source| self.err(source))?;
        let Some((scalars, blobs)) = row else {
            return Ok(None);
        };
        let corrupt = |message: String| StoreError::Corrupt {
            path: self.path.clone(),
            message,
        };
        let scalars: Scalars =
            serde_json::from_str(&scalars).map_err(|err| corrupt(err.to_string()))?;
        let [a, b, c, d] = &blobs;
        Rollup::from_parts(scalars, [a, b, c, d])
            .map(Some)
            .map_err(|err| corrupt(err.to_string()))
    }

    /// Spend per provider in `month` (`YYYY-MM`): USD and tokens.
    pub fn month_spend(&self, month: &str) -> Result<HashMap<String, (f64, u64)>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT provider, usd, tokens FROM spend WHERE month = ?1")
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map([month], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    (row.get::<_, f64>(1)?, row.get::<_, i64>(2)? as u64),
                ))
            })
            .map_err(|source| self.err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.err(source))
    }

    /// Every target's stored state.
    pub fn health(&self) -> Result<HashMap<String, TargetHealth>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT target, health FROM target_state")
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|source| self.err(source))?;
        let mut out = HashMap::new();
        for row in rows {
            let (target, json) = row.map_err(|source| self.err(source))?;
            if let Ok(health) = serde_json::from_str(&json) {
                out.insert(target, health);
            }
        }
        Ok(out)
    }

    /// Incidents that were open at or after `since_ms`, newest first.
    pub fn incidents(&self, since_ms: i64) -> Result<Vec<Incident>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT target, state, cause, start_ms, end_ms FROM incidents
                 WHERE end_ms IS NULL OR end_ms >= ?1 ORDER BY start_ms DESC, id DESC",
            )
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map([since_ms], |row| {
                Ok(Incident {
                    target: row.get(0)?,
                    state: State::from_name(&row.get::<_, String>(1)?),
                    cause: row.get(2)?,
                    start_ms: row.get(3)?,
                    end_ms: row.get(4)?,
                })
            })
            .map_err(|source| self.err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.err(source))
    }

    /// Deletes raw results older than `results_before_ms` and rollups whose bucket began
    /// before `rollups_before_ms`; returns how many of each.
    pub fn prune(
        &self,
        results_before_ms: i64,
        rollups_before_ms: i64,
    ) -> Result<(usize, usize), StoreError> {
        let results = self
            .conn
            .execute("DELETE FROM results WHERE ts_ms < ?1", [results_before_ms])
            .map_err(|source| self.err(source))?;
        let rollups = self
            .conn
            .execute("DELETE FROM rollups WHERE bucket < ?1", [rollups_before_ms])
            .map_err(|source| self.err(source))?;
        Ok((results, rollups))
    }
}

/// Opens, continues, updates or closes the target's incident for one state change: a fall
/// from good opens an incident (or reopens the last one, on a relapse), a change between
/// degraded and down keeps the open one (its state is the worst seen), a recovery closes it.
fn write_transition(tx: &rusqlite::Transaction<'_>, t: &Transition) -> rusqlite::Result<()> {
    let close = "UPDATE incidents SET end_ms = ?2 WHERE target = ?1 AND end_ms IS NULL";
    if !t.to.is_bad() {
        tx.execute(close, params![t.target, t.at_ms])?;
        return Ok(());
    }
    let worst = "state = CASE WHEN ?2 = 'down' THEN 'down' ELSE state END";
    let continued = if t.from.is_bad() {
        tx.execute(
            &format!("UPDATE incidents SET {worst} WHERE target = ?1 AND end_ms IS NULL"),
            params![t.target, t.to.as_str()],
        )?
    } else if t.reopens {
        tx.execute(
            &format!(
                "UPDATE incidents SET end_ms = NULL, {worst} WHERE id = \
                 (SELECT MAX(id) FROM incidents WHERE target = ?1)"
            ),
            params![t.target, t.to.as_str()],
        )?
    } else {
        0
    };
    if continued == 0 {
        tx.execute(close, params![t.target, t.at_ms])?;
        tx.execute(
            "INSERT INTO incidents (target, state, cause, start_ms) VALUES (?1, ?2, ?3, ?4)",
            params![t.target, t.to.as_str(), t.cause, t.at_ms],
        )?;
    }
    Ok(())
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Outcome, sample};

    #[test]
    fn the_columns_are_the_records_fields() {
        let json = serde_json::to_value(sample(Outcome::Ok)).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = RESULT_COLUMNS.to_vec();
        fields.sort_unstable();
        columns.sort_unstable();
        assert_eq!(fields, columns);
    }

    #[test]
    fn a_record_round_trips_and_a_second_write_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut record = sample(Outcome::ServerError);
        record.ttft_ms = Some(12.5);
        record.cap_tools = Some(false);
        record.ratelimit_remaining_requests = Some(7);
        record.itl_gaps_us = vec![1, 70_000];
        let batch = Batch {
            results: vec![(record.clone(), 1_000)],
            ..Batch::default()
        };
        store.write(&batch).unwrap();
        store.write(&batch).unwrap();
        let stored = store.results_since(0, None).unwrap();
        assert_eq!(stored, vec![(record, 1_000)]);
        assert!(matches!(
            Store::open(&dir.path().join("s.db")),
            Err(StoreError::Locked { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn every_name_of_the_store_is_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let _held = Store::open(&path).unwrap();
        let symlink = dir.path().join("link.db");
        std::os::unix::fs::symlink(&path, &symlink).unwrap();
        let hard = dir.path().join("hard.db");
        std::fs::hard_link(&path, &hard).unwrap();
        for other in [symlink, hard, dir.path().join("./s.db")] {
            assert!(
                matches!(Store::open(&other), Err(StoreError::Locked { .. })),
                "{}",
                other.display()
            );
        }
    }
}
