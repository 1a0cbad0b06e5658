//! The SQLite backend: one file, one writer (an `flock` on the database file itself, so a
//! second name for it — a symbolic or hard link — is the same lock), any number of readers
//! thanks to WAL. A batch is written in one transaction with `synchronous = FULL`.

mod schema;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::seen::Upto;
use super::{
    Backend, Batch, Copied, EachScalars, EachStored, Heartbeat, INCIDENT_COLUMNS, INCIDENT_ORDER,
    Incident, Prune, Pruned, ROLLUP_COLUMNS, ROLLUP_ORDER, Retired, RollupHead, RollupKey,
    RollupRow, Seen, Spend, Store, StoreError, StoredRollup, TargetAt,
};
use crate::aggregate::alerting::Notification;
use crate::aggregate::health::{IncidentKind, State, TargetHealth, Transition};
use crate::aggregate::rollup::{Scalars, Span};
use crate::interned::Names;
use crate::result::ResultRecord;
pub use schema::RESULT_COLUMNS;

/// How long a writer's lock held by another handle is asked for again before the store
/// counts as another writer's: longer than a started process takes to exec.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// An open SQLite store.
pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    /// The database file, locked (`flock`) for the writer's lifetime: the lock is on the
    /// file's inode, so every path to it shares it, and the OS releases it when the process
    /// dies, even by `kill -9`, so a crashed daemon never leaves a stale lock. SQLite's own
    /// locks are `fcntl` locks, which do not interact with it.
    _lock: Option<File>,
    /// The location whose writer opened it; `None` when opened read-only.
    location: Option<String>,
}

impl Sqlite {
    /// Opens (creating if needed) the store at `path` for `location`'s writer: takes the
    /// lock, sets WAL, applies pending migrations; the writer that brings a store to
    /// locations gets the rows written before them.
    pub fn open(path: &Path, location: &str) -> Result<Sqlite, StoreError> {
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
        // A process this one starts holds a copy of every descriptor from its fork until
        // its exec closes them, and with it the lock of a handle just dropped: the lock is
        // asked for again for a moment before it counts as another writer's.
        let mut patience = LOCK_PATIENCE;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if !patience.is_zero() => {
                    let nap = patience.min(Duration::from_millis(10));
                    std::thread::sleep(nap);
                    patience -= nap;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        store: path.display().to_string(),
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
            }
        }
        let mut conn = Connection::open(path).map_err(|source| sqlite(path, source))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(|source| sqlite(path, source))?;
        let before: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|source| sqlite(path, source))?;
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|err| StoreError::Migration {
                store: path.display().to_string(),
                message: err.to_string(),
            })?;
        if (1..schema::LOCATIONS_VERSION).contains(&before) {
            let tx = conn.transaction().map_err(|source| sqlite(path, source))?;
            for table in schema::LOCATED_TABLES {
                tx.execute(
                    &format!("UPDATE {table} SET location = ?1 WHERE location = ''"),
                    [location],
                )
                .map_err(|source| sqlite(path, source))?;
            }
            tx.commit().map_err(|source| sqlite(path, source))?;
        }
        Ok(Sqlite {
            conn,
            path: path.to_owned(),
            _lock: Some(lock),
            location: Some(location.to_owned()),
        })
    }

    /// The checkpoint row's `column`, if the store holds one.
    fn checkpoint_column<T: rusqlite::types::FromSql>(
        &self,
        column: &str,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!("SELECT {column} FROM checkpoint WHERE id = 1");
        self.conn
            .query_row(&sql, [], |row| row.get(0))
            .optional()
            .map_err(|source| self.err(source))
    }

    /// Opens an existing store for reading, while a daemon may be writing it.
    pub fn open_read_only(path: &Path) -> Result<Sqlite, StoreError> {
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
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|source| sqlite(path, source))?;
        if version != schema::LATEST {
            return Err(StoreError::Migration {
                store: path.display().to_string(),
                message: super::schema_mismatch(version, schema::LATEST),
            });
        }
        Ok(Sqlite {
            conn,
            path: path.to_owned(),
            _lock: None,
            location: None,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        sqlite(&self.path, source)
    }

    /// Data of this store that does not decode, as `message` says.
    fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt {
            store: self.path.display().to_string(),
            message,
        }
    }

    /// A read transaction: what is read until it finishes is one snapshot, the one its
    /// [`Seen`] describes.
    fn read_snapshot(&self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        self.conn
            .unchecked_transaction()
            .map_err(|source| self.err(source))
    }

    /// What a read in the current transaction sees: the write counter and the pruned
    /// bounds.
    fn seen(&self) -> Result<Seen, StoreError> {
        self.conn
            .query_row(
                "SELECT (SELECT n FROM rollup_version), results_before, rollups_before
                 FROM pruned",
                [],
                |row| {
                    Ok(Seen {
                        upto: Upto::Counter(row.get(0)?),
                        results_pruned_before: row.get(1)?,
                        rollups_pruned_before: row.get(2)?,
                    })
                },
            )
            .map_err(|source| self.err(source))
    }

    /// Hands `each` the rows of `span` from `since_bucket` written after `after` (every
    /// one when `None`), their head's columns and then `more`, in the one order and one
    /// snapshot; returns what that snapshot saw.
    fn each_rollup_written(
        &self,
        more: &str,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(&rusqlite::Row<'_>) -> Result<(), StoreError>,
    ) -> Result<Seen, StoreError> {
        let read = self.read_snapshot()?;
        let seen = self.seen()?;
        let version = self.written_after(after)?;
        let e = |source| self.err(source);
        let mut statement = self
            .conn
            .prepare_cached(&rollups_written_sql(more, version.is_some()))
            .map_err(e)?;
        let mut rows = match version {
            Some(version) => statement.query(params![span.as_str(), since_bucket, version]),
            None => statement.query(params![span.as_str(), since_bucket]),
        }
        .map_err(e)?;
        while let Some(row) = rows.next().map_err(e)? {
            each(row)?;
        }
        drop(rows);
        drop(statement);
        read.finish().map_err(e)?;
        Ok(seen)
    }

    /// The write counter rows must be greater than to be written after `after`; `None`:
    /// every row.
    fn written_after(&self, after: Option<&Seen>) -> Result<Option<i64>, StoreError> {
        after
            .map(|seen| {
                seen.counter().ok_or_else(|| StoreError::OtherStore {
                    store: self.describe(),
                })
            })
            .transpose()
    }

    /// Hands `each` the incidents a `SELECT {INCIDENT_COLUMNS} FROM incidents …` query with
    /// one parameter returns, in its order, with their row ids.
    fn each_incident(
        &self,
        sql: &str,
        param: i64,
        each: &mut dyn FnMut(i64, Incident),
    ) -> Result<(), StoreError> {
        let e = |source| self.err(source);
        let mut statement = self.conn.prepare_cached(sql).map_err(e)?;
        let mut rows = statement.query([param]).map_err(e)?;
        let mut names = Names::new();
        while let Some(row) = rows.next().map_err(e)? {
            let mut text = |at| Ok::<_, rusqlite::Error>(names.get(&row.get::<_, String>(at)?));
            let incident = Incident {
                target: text(1).map_err(e)?,
                state: State::from_name(&row.get::<_, String>(2).map_err(e)?),
                cause: text(3).map_err(e)?,
                start_ms: row.get(4).map_err(e)?,
                end_ms: row.get(5).map_err(e)?,
                location: text(6).map_err(e)?,
                kind: IncidentKind::from_name(&row.get::<_, String>(7).map_err(e)?),
            };
            each(row.get(0).map_err(e)?, incident);
        }
        Ok(())
    }

    /// The results a `SELECT * FROM results …` query returns, in its order, with their
    /// unix ms.
    fn records(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError> {
        let mut out = Vec::new();
        self.each_record(sql, params, &mut |record, ts_ms| out.push((record, ts_ms)))?;
        Ok(out)
    }

    /// Hands `each` the results a `SELECT * FROM results …` query returns, in its order, with
    /// their unix ms, one at a time as they are read.
    fn each_record(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        each: &mut dyn FnMut(ResultRecord, i64),
    ) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(sql)
            .map_err(|source| self.err(source))?;
        // The columns are looked up once per statement, not once per row.
        let names = serde_rusqlite::columns_from_statement(&statement);
        let index = |name: &str| {
            statement
                .column_index(name)
                .map_err(|source| self.err(source))
        };
        let (ts_column, gaps_column) = (index("ts_ms")?, index("itl_gaps")?);
        let mut rows = statement.query(params).map_err(|source| self.err(source))?;
        while let Some(row) = rows.next().map_err(|source| self.err(source))? {
            let ts_ms: i64 = row.get(ts_column).map_err(|source| self.err(source))?;
            each(self.record_of(row, &names, gaps_column)?, ts_ms);
        }
        Ok(())
    }

    /// Hands `each` every rollup a `SELECT bucket, target, probe, location, version,
    /// scalars, ttft, e2e, itl, tps …` statement returns for each of `params`, in order.
    fn rollup_rows<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: impl IntoIterator<Item = P>,
        each: &mut EachStored<'_>,
    ) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(sql)
            .map_err(|source| self.err(source))?;
        for params in params {
            let mut rows = statement.query(params).map_err(|source| self.err(source))?;
            while let Some(row) = rows.next().map_err(|source| self.err(source))? {
                let head = rollup_head(row).map_err(|source| self.err(source))?;
                let text = text_at(row, 5).map_err(|source| self.err(source))?;
                let blob = |i| {
                    row.get_ref(i)
                        .map(|value| value.as_bytes_or_null().ok().flatten().unwrap_or_default())
                        .map_err(|source| self.err(source))
                };
                let blobs = [blob(6)?, blob(7)?, blob(8)?, blob(9)?];
                let scalars = serde_json::from_str::<Scalars>(text)
                    .map_err(|err| self.corrupt(format!("rollup scalars do not decode: {err}")))?;
                each(head, StoredRollup { scalars, blobs })
                    .map_err(|err| self.corrupt(err.to_string()))?;
            }
        }
        Ok(())
    }

    /// The record in `row`, whose columns are named `columns`, its ITL gaps in column
    /// `gaps_column`.
    fn record_of(
        &self,
        row: &rusqlite::Row<'_>,
        columns: &[String],
        gaps_column: usize,
    ) -> Result<ResultRecord, StoreError> {
        let mut record: ResultRecord = serde_rusqlite::from_row_with_columns(row, columns)
            .map_err(|err| self.corrupt(format!("a stored result does not decode: {err}")))?;
        let gaps: Option<Vec<u8>> = row.get(gaps_column).map_err(|source| self.err(source))?;
        record.itl_gaps_us = gaps
            .unwrap_or_default()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(record)
    }
}

impl Backend for Sqlite {
    fn fork(&self) -> Result<Store, StoreError> {
        Ok(Store(Box::new(Sqlite::open_read_only(&self.path)?)))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| sqlite(&path, source);
        let tx = self.conn.transaction().map_err(e)?;
        let version = next_version(
            &tx,
            !batch.results.is_empty() || !batch.rollups.is_empty() || !batch.transitions.is_empty(),
        )
        .map_err(e)?;
        insert_results(&tx, &path, &batch.results, version)?;
        upsert_rollups(&tx, &batch.rollups, version).map_err(e)?;
        put_spend(
            &tx,
            "INSERT INTO spend (provider, month, location, usd, tokens)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (provider, month, location) DO UPDATE SET
                usd = usd + excluded.usd, tokens = tokens + excluded.tokens",
            &batch.spend,
        )
        .map_err(e)?;
        upsert_states(&tx, &batch.health).map_err(e)?;
        for transition in &batch.transitions {
            write_transition(&tx, transition, version).map_err(e)?;
        }
        put_heartbeats(&tx, &batch.heartbeats).map_err(e)?;
        put_outbox(&tx, &batch.notifications, &batch.delivered).map_err(e)?;
        tx.commit().map_err(e)
    }

    fn copy(&mut self, rows: &Copied) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| sqlite(&path, source);
        let tx = self.conn.transaction().map_err(e)?;
        let version = next_version(
            &tx,
            !rows.results.is_empty() || !rows.rollups.is_empty() || !rows.incidents.is_empty(),
        )
        .map_err(e)?;
        insert_results(&tx, &path, &rows.results, version)?;
        upsert_rollups(&tx, &rows.rollups, version).map_err(e)?;
        put_spend(
            &tx,
            "INSERT OR REPLACE INTO spend (provider, month, location, usd, tokens)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            &rows.spend,
        )
        .map_err(e)?;
        {
            let mut incident = tx
                .prepare_cached(
                    "INSERT INTO incidents
                        (target, state, cause, start_ms, end_ms, location, kind, version)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE NOT EXISTS
                        (SELECT 1 FROM incidents
                         WHERE target = ?1 AND location = ?6 AND start_ms = ?4 AND kind = ?7)",
                )
                .map_err(e)?;
            for row in &rows.incidents {
                incident
                    .execute(params![
                        row.target,
                        row.state.as_str(),
                        row.cause,
                        row.start_ms,
                        row.end_ms,
                        row.location,
                        row.kind.as_str(),
                        version
                    ])
                    .map_err(e)?;
            }
        }
        upsert_states(&tx, &rows.health).map_err(e)?;
        put_heartbeats(&tx, &rows.heartbeats).map_err(e)?;
        tx.commit().map_err(e)
    }

    fn each_result_since(
        &self,
        since_ms: i64,
        target: Option<&str>,
        each: &mut dyn FnMut(ResultRecord, i64),
    ) -> Result<(), StoreError> {
        self.each_record(
            "SELECT * FROM results WHERE ts_ms >= ?1 AND (?2 IS NULL OR target = ?2)
             ORDER BY ts_ms, run_id",
            params![since_ms, target],
            each,
        )
    }

    fn results_after(
        &self,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError> {
        let (ts_ms, run_id) = after.unwrap_or((i64::MIN, ""));
        self.records(
            "SELECT * FROM results WHERE (ts_ms, run_id) > (?1, ?2)
             ORDER BY ts_ms, run_id LIMIT ?3",
            params![ts_ms, run_id, limit_of(limit)],
        )
    }

    fn each_newest_since(
        &self,
        since_ms: i64,
        limit: usize,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<(), StoreError> {
        self.each_record(
            "SELECT * FROM (SELECT * FROM results WHERE ts_ms >= ?1
                            ORDER BY ts_ms DESC, run_id DESC LIMIT ?2)
             ORDER BY ts_ms, run_id",
            params![since_ms, limit_of(limit)],
            &mut |record, _| each(record),
        )
    }

    fn each_result_written(
        &self,
        since_ms: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<Seen, StoreError> {
        let read = self.read_snapshot()?;
        let seen = self.seen()?;
        match self.written_after(after)? {
            None => self.each_record(
                "SELECT * FROM results WHERE ts_ms >= ?1 ORDER BY ts_ms, run_id",
                [since_ms],
                &mut |record, _| each(record),
            )?,
            Some(version) => self.each_record(
                RESULTS_WRITTEN_SINCE,
                [since_ms, version],
                &mut |record, _| each(record),
            )?,
        }
        read.finish().map_err(|source| self.err(source))?;
        Ok(seen)
    }

    fn result_count_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM results WHERE ts_ms >= ?1",
                [since_ms],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|source| self.err(source))
    }

    fn each_rollup_since(
        &self,
        span: Span,
        since_bucket: i64,
        each: &mut dyn FnMut(RollupRow),
    ) -> Result<(), StoreError> {
        self.rollup_rows(
            &format!(
                "SELECT {ROLLUP_COLUMNS} FROM rollups WHERE span = ?1 AND bucket >= ?2
                 {ROLLUP_ORDER}"
            ),
            [params![span.as_str(), since_bucket]],
            &mut |head, stored| {
                each(RollupRow::of(span, head, stored)?);
                Ok(())
            },
        )
    }

    fn each_rollup_head_written(
        &self,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(RollupHead<'_>),
    ) -> Result<Seen, StoreError> {
        // Indexes hold these columns (`rollups_versions` every head, `rollups_by_version`
        // the heads by version): the rows' scalars and histograms are not read.
        self.each_rollup_written("", span, since_bucket, after, &mut |row| {
            each(rollup_head(row).map_err(|source| self.err(source))?);
            Ok(())
        })
    }

    fn rollups_at(
        &self,
        span: Span,
        keys: &[RollupKey<'_>],
        each: &mut EachStored<'_>,
    ) -> Result<(), StoreError> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        self.rollup_rows(
            &format!(
                "SELECT {ROLLUP_COLUMNS} FROM rollups
                 WHERE span = ?1 AND bucket = ?2 AND target = ?3 AND probe = ?4 AND location = ?5"
            ),
            keys.iter().map(|&(bucket, target, probe, location)| {
                (span.as_str(), bucket, target, probe, location)
            }),
            each,
        )
    }

    fn rollups_after(
        &self,
        span: Span,
        after: Option<RollupKey<'_>>,
        limit: usize,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let (bucket, target, probe, location) = after.unwrap_or((i64::MIN, "", "", ""));
        let mut page = Vec::new();
        self.rollup_rows(
            &format!(
                "SELECT {ROLLUP_COLUMNS} FROM rollups
                 WHERE span = ?1 AND (bucket, target, probe, location) > (?2, ?3, ?4, ?5)
                 {ROLLUP_ORDER} LIMIT ?6"
            ),
            [params![
                span.as_str(),
                bucket,
                target,
                probe,
                location,
                limit_of(limit)
            ]],
            &mut |head, stored| {
                page.push(RollupRow::of(span, head, stored)?);
                Ok(())
            },
        )?;
        Ok(page)
    }

    fn each_rollup_scalars_written(
        &self,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut EachScalars<'_>,
    ) -> Result<Seen, StoreError> {
        self.each_rollup_written(", scalars", span, since_bucket, after, &mut |row| {
            let e = |source| self.err(source);
            let scalars = serde_json::from_str(text_at(row, 5).map_err(e)?)
                .map_err(|err| self.corrupt(format!("rollup scalars do not decode: {err}")))?;
            each(rollup_head(row).map_err(e)?, scalars);
            Ok(())
        })
    }

    fn latest_results(&self, target: &str, limit: usize) -> Result<Vec<ResultRecord>, StoreError> {
        let out = self.records(
            "SELECT * FROM results WHERE target = ?1 ORDER BY ts_ms DESC, run_id DESC LIMIT ?2",
            params![target, limit_of(limit)],
        )?;
        Ok(out.into_iter().map(|(record, _)| record).collect())
    }

    fn month_spend(&self, month: &str) -> Result<HashMap<String, (f64, u64)>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT provider, SUM(usd), SUM(tokens) FROM spend WHERE month = ?1
                 GROUP BY provider",
            )
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

    fn spend(&self) -> Result<Vec<Spend>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT provider, month, location, usd, tokens FROM spend
                 ORDER BY provider, month, location",
            )
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map([], |row| {
                Ok(Spend {
                    provider: row.get(0)?,
                    month: row.get(1)?,
                    location: row.get(2)?,
                    usd: row.get(3)?,
                    tokens: row.get::<_, i64>(4)? as u64,
                })
            })
            .map_err(|source| self.err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.err(source))
    }

    fn health(&self) -> Result<HashMap<TargetAt, TargetHealth>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT target, location, health FROM target_state")
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    TargetAt {
                        target: row.get(0)?,
                        location: row.get(1)?,
                    },
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(|source| self.err(source))?;
        let mut out = HashMap::new();
        for row in rows {
            let (at, json) = row.map_err(|source| self.err(source))?;
            if let Ok(health) = serde_json::from_str(&json) {
                out.insert(at, health);
            }
        }
        Ok(out)
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.checkpoint_column("body")
    }

    fn checkpoint_saved_ms(&self) -> Result<Option<i64>, StoreError> {
        self.checkpoint_column("saved_ms")
    }

    fn save_checkpoint(&self, saved_ms: i64, body: &[u8]) -> Result<(), StoreError> {
        let save = |conn: &Connection| {
            conn.execute(
                "INSERT OR REPLACE INTO checkpoint (id, saved_ms, body) VALUES (1, ?1, ?2)",
                params![saved_ms, body],
            )
        };
        if self._lock.is_some() {
            return save(&self.conn)
                .map(drop)
                .map_err(|source| self.err(source));
        }
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|source| self.err(source))?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .and_then(|()| save(&conn))
            .map(drop)
            .map_err(|source| self.err(source))
    }

    fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT location, seen_ms, shortest_ms, retired_ms FROM locations \
                 ORDER BY location",
            )
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map([], |row| {
                Ok(Heartbeat {
                    location: row.get(0)?,
                    seen_ms: row.get(1)?,
                    shortest_ms: row.get(2)?,
                    retired_ms: row.get(3)?,
                    silent_ms: None,
                })
            })
            .map_err(|source| self.err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.err(source))
    }

    fn pending_notifications(
        &self,
        location: &str,
        limit: usize,
    ) -> Result<Vec<(i64, Notification)>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, body FROM outbox WHERE location = ?1 AND sent_ms IS NULL
                 ORDER BY id LIMIT ?2",
            )
            .map_err(|source| self.err(source))?;
        let rows = statement
            .query_map(params![location, limit_of(limit)], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|source| self.err(source))?;
        let rows: Vec<(i64, String)> = rows
            .collect::<Result<_, _>>()
            .map_err(|source| self.err(source))?;
        rows.into_iter()
            .map(|(id, body)| {
                serde_json::from_str(&body)
                    .map(|notification| (id, notification))
                    .map_err(|err| self.corrupt(format!("outbox row {id} does not parse: {err}")))
            })
            .collect()
    }

    fn each_incident_written(
        &self,
        since_ms: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(i64, Incident),
    ) -> Result<Seen, StoreError> {
        let read = self.read_snapshot()?;
        let seen = self.seen()?;
        match self.written_after(after)? {
            None => self.each_incident(&open_since_sql(), since_ms, each)?,
            Some(version) => self.each_incident(
                &format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents INDEXED BY incidents_by_version
                     WHERE version > ?1"
                ),
                version,
                each,
            )?,
        }
        read.finish().map_err(|source| self.err(source))?;
        Ok(seen)
    }

    fn prune(&mut self, bounds: &Prune) -> Result<Pruned, StoreError> {
        let path = self.path.clone();
        let e = |source| sqlite(&path, source);
        let tx = self.conn.transaction().map_err(e)?;
        let Prune {
            results_before_ms,
            rollups_before_ms,
            incidents_before_ms,
        } = *bounds;
        let results = tx
            .execute("DELETE FROM results WHERE ts_ms < ?1", [results_before_ms])
            .map_err(e)?;
        let rollups = tx
            .execute("DELETE FROM rollups WHERE bucket < ?1", [rollups_before_ms])
            .map_err(e)?;
        let incidents = tx
            .execute(
                "DELETE FROM incidents WHERE end_ms < ?1",
                [incidents_before_ms],
            )
            .map_err(e)?;
        tx.execute("DELETE FROM outbox WHERE sent_ms < ?1", [results_before_ms])
            .map_err(e)?;
        tx.execute(
            "UPDATE pruned SET results_before = MAX(results_before, ?1),
                rollups_before = MAX(rollups_before, ?2)",
            [results_before_ms, rollups_before_ms],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(Pruned {
            results,
            rollups,
            incidents,
        })
    }

    fn retire(&mut self, at_ms: i64) -> Result<Option<Retired>, StoreError> {
        let path = self.path.clone();
        let e = |source| sqlite(&path, source);
        let Some(location) = self.location.clone() else {
            return Err(e(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("opened read-only: a location is retired by a handle of its writer".into()),
            )));
        };
        let tx = self.conn.transaction().map_err(e)?;
        let marked = tx
            .execute(
                "UPDATE locations SET retired_ms = MAX(?2, seen_ms) WHERE location = ?1",
                params![&location, at_ms],
            )
            .map_err(e)?;
        if marked == 0 {
            return Ok(None);
        }
        let version = next_version(&tx, true).map_err(e)?;
        let incidents_closed = tx
            .execute(
                "UPDATE incidents SET end_ms = ?2, version = ?3
                 WHERE location = ?1 AND end_ms IS NULL",
                params![&location, at_ms, version],
            )
            .map_err(e)?;
        let states_forgotten = tx
            .execute("DELETE FROM target_state WHERE location = ?1", [&location])
            .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(Some(Retired {
            incidents_closed,
            states_forgotten,
        }))
    }
}

/// The transaction's value of the store's write counter, taken when it `writes` rows a
/// reader asks for by it (results, rollups, incidents); 0 otherwise. Only one process
/// writes a SQLite store, so the counter, one row, grows in commit order.
fn next_version(tx: &rusqlite::Transaction<'_>, writes: bool) -> rusqlite::Result<i64> {
    if !writes {
        return Ok(0);
    }
    tx.prepare_cached("UPDATE rollup_version SET n = n + 1 RETURNING n")?
        .query_row([], |row| row.get(0))
}

/// The incidents open at or after `?1`, in their one order.
fn open_since_sql() -> String {
    format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE end_ms IS NULL OR end_ms >= ?1 \
         {INCIDENT_ORDER}"
    )
}

/// The results written since a read (`?2`, its counter) from `?1`: through the version's
/// index, named (SQLite's planner, without statistics, would scan the time index).
const RESULTS_WRITTEN_SINCE: &str = "SELECT * FROM results INDEXED BY results_by_version
     WHERE version > ?2 AND ts_ms >= ?1 ORDER BY ts_ms, run_id";

/// The rollups of a span (`?1`) from a bucket (`?2`), their head's columns and then `more`:
/// every one through the key's index, or (`written_since`) those written since a read
/// (`?3`, its counter) through the version's, named (SQLite's planner, without statistics,
/// would take the key's for both).
fn rollups_written_sql(more: &str, written_since: bool) -> String {
    let (rows, written) = if written_since {
        ("rollups INDEXED BY rollups_by_version", "AND version > ?3")
    } else {
        ("rollups", "")
    };
    format!(
        "SELECT bucket, target, probe, location, version{more} FROM {rows}
         WHERE span = ?1 AND bucket >= ?2 {written} {ROLLUP_ORDER}"
    )
}

/// Inserts results whose `run_id` is new, written at `version`.
fn insert_results(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    results: &[(ResultRecord, i64)],
    version: i64,
) -> Result<(), StoreError> {
    let e = |source| sqlite(path, source);
    let columns: Vec<String> = RESULT_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
    let values: Vec<String> = RESULT_COLUMNS.iter().map(|c| format!(":{c}")).collect();
    let mut insert = tx
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO results (ts_ms, itl_gaps, version, {})
             VALUES (:ts_ms, :itl_gaps, :version, {})",
            columns.join(", "),
            values.join(", ")
        ))
        .map_err(e)?;
    for (record, ts_ms) in results {
        let named = serde_rusqlite::to_params_named(record).map_err(|err| StoreError::Corrupt {
            store: path.display().to_string(),
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
        params.push((":version", &version));
        insert.execute(params.as_slice()).map_err(e)?;
    }
    Ok(())
}

/// Writes spend rows with `sql` (`?1..?5`: provider, month, location, usd, tokens), in
/// order: adding to a stored total is not commutative in floating point, so the order is
/// kept.
fn put_spend(tx: &rusqlite::Transaction<'_>, sql: &str, rows: &[Spend]) -> rusqlite::Result<()> {
    let mut statement = tx.prepare_cached(sql)?;
    for row in rows {
        statement.execute(params![
            row.provider,
            row.month,
            row.location,
            row.usd,
            row.tokens as i64
        ])?;
    }
    Ok(())
}

/// Adds `notifications` to the outbox and marks the `delivered` ones (id, unix ms) sent.
fn put_outbox(
    tx: &rusqlite::Transaction<'_>,
    notifications: &[Notification],
    delivered: &[(i64, i64)],
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (location, alert, body, created_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for n in notifications {
        let body = serde_json::to_string(n).unwrap_or_default();
        insert.execute(params![n.location, n.alert, body, n.at_ms])?;
    }
    let mut sent =
        tx.prepare_cached("UPDATE outbox SET sent_ms = ?2 WHERE id = ?1 AND sent_ms IS NULL")?;
    for (id, at) in delivered {
        sent.execute(params![id, at])?;
    }
    Ok(())
}

/// Stores heartbeats, keeping the later one of each location and its later retirement.
fn put_heartbeats(tx: &rusqlite::Transaction<'_>, rows: &[Heartbeat]) -> rusqlite::Result<()> {
    let mut statement = tx.prepare_cached(
        "INSERT INTO locations (location, seen_ms, shortest_ms, retired_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (location) DO UPDATE SET
            seen_ms = MAX(seen_ms, excluded.seen_ms), shortest_ms = excluded.shortest_ms,
            retired_ms = MAX(IFNULL(retired_ms, excluded.retired_ms),
                             IFNULL(excluded.retired_ms, retired_ms))",
    )?;
    for row in rows {
        statement.execute(params![
            row.location,
            row.seen_ms,
            row.shortest_ms,
            row.retired_ms
        ])?;
    }
    Ok(())
}

/// The text in column `i` of `row`, borrowed.
fn text_at<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    Ok(row.get_ref(i)?.as_str()?)
}

/// The head in a rollup row's first five columns: bucket, target, probe, location, version.
fn rollup_head<'r>(row: &'r rusqlite::Row<'_>) -> rusqlite::Result<RollupHead<'r>> {
    Ok(RollupHead {
        bucket: row.get(0)?,
        target: text_at(row, 1)?,
        probe: text_at(row, 2)?,
        location: text_at(row, 3)?,
        version: row.get(4)?,
    })
}

/// Stores rollups whole, replacing the same span, bucket, target, probe and location,
/// written at `version`.
fn upsert_rollups(
    tx: &rusqlite::Transaction<'_>,
    rows: &[RollupRow],
    version: i64,
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT OR REPLACE INTO rollups
            (span, bucket, target, probe, location, scalars, ttft, e2e, itl, tps, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for row in rows {
        let scalars = serde_json::to_string(&row.rollup.stored_scalars()).unwrap_or_default();
        let [ttft, e2e, itl, tps] = row.rollup.blobs();
        upsert.execute(params![
            row.span.as_str(),
            row.bucket,
            row.target,
            row.probe,
            row.location,
            scalars,
            ttft,
            e2e,
            itl,
            tps,
            version
        ])?;
    }
    Ok(())
}

/// Stores target states, replacing each target's in its location.
fn upsert_states(
    tx: &rusqlite::Transaction<'_>,
    states: &[(TargetAt, TargetHealth)],
) -> rusqlite::Result<()> {
    let mut state = tx.prepare_cached(
        "INSERT OR REPLACE INTO target_state (target, location, health) VALUES (?1, ?2, ?3)",
    )?;
    for (at, health) in states {
        state.execute(params![
            at.target,
            at.location,
            serde_json::to_string(health).unwrap_or_default()
        ])?;
    }
    Ok(())
}

/// Opens, continues, updates or closes the target's incident for one state change: a fall
/// from good opens an incident (or reopens the last one, on a relapse), a change between
/// degraded and down keeps the open one (its state is the worst seen), a recovery closes it.
/// Each row written takes the transaction's `version`.
fn write_transition(
    tx: &rusqlite::Transaction<'_>,
    t: &Transition,
    version: i64,
) -> rusqlite::Result<()> {
    let kind = t.kind.as_str();
    let close = "UPDATE incidents SET end_ms = ?2, version = ?5
                 WHERE target = ?1 AND location = ?3 AND kind = ?4 AND end_ms IS NULL";
    if !t.to.is_bad() {
        tx.execute(close, params![t.target, t.at_ms, t.location, kind, version])?;
        return Ok(());
    }
    let worst = "state = CASE WHEN ?2 = 'down' THEN 'down' ELSE state END, version = ?5";
    let continued = if t.from.is_bad() {
        tx.execute(
            &format!(
                "UPDATE incidents SET {worst}
                 WHERE target = ?1 AND location = ?3 AND kind = ?4 AND end_ms IS NULL"
            ),
            params![t.target, t.to.as_str(), t.location, kind, version],
        )?
    } else if t.reopens {
        tx.execute(
            &format!(
                "UPDATE incidents SET end_ms = NULL, {worst} WHERE id = \
                 (SELECT MAX(id) FROM incidents WHERE target = ?1 AND location = ?3 AND kind = ?4)"
            ),
            params![t.target, t.to.as_str(), t.location, kind, version],
        )?
    } else {
        0
    };
    if continued == 0 {
        tx.execute(close, params![t.target, t.at_ms, t.location, kind, version])?;
        tx.execute(
            "INSERT INTO incidents (target, state, cause, start_ms, location, kind, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                t.target,
                t.to.as_str(),
                t.cause,
                t.at_ms,
                t.location,
                kind,
                version
            ],
        )?;
    }
    Ok(())
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
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
    use crate::store::Backend;

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
    fn reads_of_what_was_written_since_go_through_the_version_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("s.db"), "here").unwrap();
        let plan = |sql: &str| {
            let mut statement = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let values = vec![1; statement.parameter_count()];
            let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
                row.get::<_, String>(3)
            });
            rows.unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let results = plan(RESULTS_WRITTEN_SINCE);
        assert!(
            results.contains("results_by_version (version>?)"),
            "{results}"
        );
        for more in ["", ", scalars"] {
            let since = plan(&rollups_written_sql(more, true));
            assert!(
                since.contains("rollups_by_version (span=? AND version>?)"),
                "{since}"
            );
            let every = plan(&rollups_written_sql(more, false));
            assert!(!every.contains("rollups_by_version"), "{every}");
        }
    }

    #[test]
    fn a_record_round_trips_and_a_second_write_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Sqlite::open(&dir.path().join("s.db"), "here").unwrap();
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
            Sqlite::open(&dir.path().join("s.db"), "here"),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn a_reader_of_a_store_not_yet_migrated_is_told_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).unwrap();
        schema::migrations()
            .to_version(&mut conn, schema::LATEST as usize - 1)
            .unwrap();
        let Err(err) = Sqlite::open_read_only(&path) else {
            panic!("an old schema was read");
        };
        let err = err.to_string();
        assert!(err.contains("older than this sonde's"), "{err}");
        assert!(err.contains("`sonde run`"), "{err}");
        drop(conn);
        drop(Sqlite::open(&path, "here").unwrap());
        assert!(
            Sqlite::open_read_only(&path).is_ok(),
            "the writer migrated it"
        );
    }

    #[test]
    fn the_writer_that_upgrades_a_store_gets_its_rows_from_before_locations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            schema::migrations().to_version(&mut conn, 2).unwrap();
            conn.execute(
                "INSERT INTO target_state (target, health) VALUES ('p/m', '{}')",
                [],
            )
            .unwrap();
        }
        let mut store = Sqlite::open(&path, "upgraded-here").unwrap();
        let mut record = sample(Outcome::Ok);
        record.location = String::new();
        store
            .write(&Batch {
                results: vec![(record, 1_000)],
                ..Batch::default()
            })
            .unwrap();
        drop(store);
        let again = Sqlite::open(&path, "later").unwrap();
        let stored = again.results_since(0, None).unwrap();
        assert_eq!(stored[0].0.location, "", "only the upgrade adopts");
        let located: Vec<String> = again
            .conn
            .prepare("SELECT location FROM target_state")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(located, ["upgraded-here"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_just_released_is_taken_while_other_threads_start_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Sqlite::open(&path, "here").unwrap());
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Each started process holds a copy of the lock's descriptor until its exec.
            for _ in 0..2 {
                scope.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = std::process::Command::new("true").status();
                    }
                });
            }
            let refused =
                (0..300).find_map(|round| Some((round, Sqlite::open(&path, "here").err()?)));
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(refused.is_none(), "{refused:?}");
        });
    }

    #[cfg(unix)]
    #[test]
    fn every_name_of_the_store_is_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let _held = Sqlite::open(&path, "here").unwrap();
        let symlink = dir.path().join("link.db");
        std::os::unix::fs::symlink(&path, &symlink).unwrap();
        let hard = dir.path().join("hard.db");
        std::fs::hard_link(&path, &hard).unwrap();
        for other in [symlink, hard, dir.path().join("./s.db")] {
            assert!(
                matches!(Sqlite::open(&other, "here"), Err(StoreError::Locked { .. })),
                "{}",
                other.display()
            );
        }
    }
}
