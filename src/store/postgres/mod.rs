//! The PostgreSQL backend: tokio-postgres with a deadpool pool for reads, one dedicated
//! connection for each location's writer, holding that location's advisory lock (the lock
//! lives as long as that session: a writer whose connection dropped reconnects and takes it
//! again before it writes; one killed with `kill -9` releases it as the server sees the
//! socket close). Probers in several locations write one store side by side, each only its
//! own rows; `fleet.rs` holds what they share (the publisher lock, rate leases, budget
//! reservations).
//!
//! The [`Backend`] interface is synchronous, as SQLite's calls are; the driver is async. The
//! store owns a one-thread tokio runtime that drives its connections, and each call waits on
//! its query from the caller's thread (`futures_executor::block_on` inside the runtime's
//! context), so the store works the same from the writer's thread, a blocking task or a test,
//! and its I/O never runs on the probing runtime.

mod fleet;
mod points;
mod record;
mod rows;
mod schema;
mod tls;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::TryStreamExt;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::seen::Upto;
use super::{
    Backend, Batch, Copied, EachPoint, EachScalars, EachStored, FleetLimits, Heartbeat,
    INCIDENT_COLUMNS, INCIDENT_ORDER, Incident, Prune, Pruned, ROLLUP_COLUMNS, ROLLUP_ORDER,
    Retired, RollupHead, RollupKey, RollupRow, Seen, Spend, Store, StoreError, StoredRollup,
    TargetAt, points_of_rollups,
};
use crate::aggregate::alerting::Notification;
use crate::aggregate::health::{IncidentKind, State, TargetHealth, Transition};
use crate::aggregate::rollup::Span;
use crate::aggregate::sparse::SparseRollup;
use crate::interned::Names;
use crate::redact::Secret;
use crate::result::ResultRecord;

/// The class of the writers' advisory locks (with the location's hash): one writer per
/// location.
const WRITER_LOCK: i32 = 0x736f_6e64; // "sond"
/// The database's clock in unix ms: one clock for every prober of a fleet.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
/// Longest wait for a connection (new or from the pool) before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the pool keeps for readers: a publish reads on four at once (the runs, each
/// span's rollup windows, the rest), and the server's requests (`results.csv`) take others.
const POOL_SIZE: usize = 6;

/// Whether a store is opened to write (lock, migrations) or only to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The writer of one location (or a migration): takes that location's writer lock,
    /// applies migrations, adopts the rows written before locations.
    Writer(String),
    /// Publish, serve, export, and a prober's share of the fleet's limits: reads (and takes
    /// leases and reservations) while writers write.
    Reader,
}

/// The URL held by the environment variable `var`.
pub fn url_from_env(var: &str) -> Result<Secret, StoreError> {
    Secret::from_env(var).ok_or_else(|| {
        StoreError::Setup(format!(
            "[store] url_env names {var}, which is not set: export {var}=postgres://user:password@host/database"
        ))
    })
}

/// An open PostgreSQL store.
pub struct Postgres {
    /// Drives the connections, shared with the store's forks; shut down in the background
    /// when the last of them is dropped, so a store may be dropped anywhere, even inside
    /// another runtime.
    runtime: Option<Arc<tokio::runtime::Runtime>>,
    /// Connections for reads.
    pool: Pool,
    /// How to open the writer's connection again.
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// The writer's session, holding [`WRITER_LOCK`]; `None` for a reader, or after it broke.
    writer: Option<Client>,
    /// The session holding or trying for the publisher lock, once opened.
    publisher: std::sync::Mutex<Option<fleet::LockSession>>,
    /// The session holding or trying for the checkpoint lock, once opened.
    checkpointer: std::sync::Mutex<Option<fleet::LockSession>>,
    access: Access,
    /// `postgresql://host:port/database`, for messages.
    name: String,
    /// The URL, masked in every error text.
    url: Secret,
}

impl Postgres {
    /// Connects to the database at `url`; a writer takes the lock and migrates, a reader
    /// checks that a sonde store is there.
    pub fn open(
        url: &Secret,
        ca_file: Option<&Path>,
        access: Access,
    ) -> Result<Postgres, StoreError> {
        let mut config = url.expose().parse::<tokio_postgres::Config>().map_err(|err| {
            StoreError::Setup(format!(
                "the PostgreSQL URL does not parse ({}); expected postgres://user:password@host:port/database[?sslmode=require]",
                url.redact(&err.to_string())
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let name = describe(&config);
        let tls = tls::connector(ca_file)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sonde-postgres")
            .enable_all()
            .build()
            .map_err(|err| {
                StoreError::Setup(format!("cannot start PostgreSQL's runtime: {err}"))
            })?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|err| StoreError::Setup(format!("cannot build the connection pool: {err}")))?;
        let mut store = Postgres {
            runtime: Some(Arc::new(runtime)),
            pool,
            config,
            tls,
            writer: None,
            publisher: std::sync::Mutex::new(None),
            checkpointer: std::sync::Mutex::new(None),
            access: access.clone(),
            name,
            url: url.clone(),
        };
        match access {
            Access::Writer(_) => {
                store.writer()?;
            }
            Access::Reader => {
                let found = store.call(async |pool: &Pool| {
                    let client = pool.get().await.map_err(Failure::pool)?;
                    schema::found(&**client).await.map_err(Failure::Text)
                })?;
                match found {
                    None | Some(schema::Found { version: 0, .. }) => {
                        return Err(StoreError::Setup(format!(
                            "{} holds no sonde store: run `sonde run` with this [store] first, or copy one in with `sonde store migrate`",
                            store.name
                        )));
                    }
                    Some(found) if !found.writable() => {
                        return Err(store.migration(super::schema_mismatch(
                            found.version.into(),
                            schema::LATEST.into(),
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(store)
    }

    /// The runtime driving the connections (gone only once the store is dropped).
    fn runtime(&self) -> Result<&tokio::runtime::Runtime, StoreError> {
        self.runtime
            .as_deref()
            .ok_or_else(|| self.failed("the store is closed"))
    }

    /// Runs `query` with the pool, waiting for it from this thread.
    fn call<T>(
        &self,
        query: impl AsyncFnOnce(&Pool) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime()?;
        let _context = runtime.enter();
        futures_executor::block_on(query(&self.pool)).map_err(|failure| self.error(failure))
    }

    /// The checkpoint row's `column`, if the store holds one.
    fn checkpoint_column<T>(&self, column: &str) -> Result<Option<T>, StoreError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let sql = format!("SELECT {column} FROM checkpoint WHERE id = 1");
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            let row = client.query_opt(&sql, &[]).await.map_err(Failure::Db)?;
            row.map(|row| row.try_get(0).map_err(Failure::Db))
                .transpose()
        })
    }

    /// The writer's session, opened (lock taken, schema migrated) when it is missing or
    /// broke since the last call.
    fn writer(&mut self) -> Result<&mut Client, StoreError> {
        if self.writer.as_ref().is_some_and(Client::is_closed) {
            self.writer = None;
        }
        if self.writer.is_none() {
            let Access::Writer(location) = &self.access else {
                return Err(self.failed("this store was opened read-only"));
            };
            let location = location.clone();
            let runtime = self.runtime()?;
            let (config, tls) = (self.config.clone(), self.tls.clone());
            let _context = runtime.enter();
            let opened = futures_executor::block_on(async move {
                let (mut client, connection) = config.connect(tls).await.map_err(Failure::Db)?;
                tokio::spawn(connection);
                let locked: bool = client
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        &[&WRITER_LOCK, &location],
                    )
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(Failure::Db)?;
                if !locked {
                    return Err(Failure::Locked);
                }
                let tx = client.transaction().await.map_err(Failure::Db)?;
                let before = schema::migrate(&tx).await.map_err(Failure::Migration)?;
                if (1..schema::LOCATIONS_VERSION).contains(&before) {
                    for table in schema::LOCATED_TABLES {
                        tx.execute(
                            &format!("UPDATE {table} SET location = $1 WHERE location = ''"),
                            &[&location],
                        )
                        .await
                        .map_err(Failure::Db)?;
                    }
                }
                tx.commit().await.map_err(Failure::Db)?;
                Ok(client)
            });
            self.writer = Some(opened.map_err(|failure| self.error(failure))?);
        }
        self.writer.as_mut().ok_or_else(|| StoreError::Postgres {
            store: self.name.clone(),
            message: "no writer session".into(),
        })
    }

    /// Runs `work` in one transaction of the writer's session, once the schema is one this
    /// build may still write ([`schema::still_writable`]: a newer daemon may have migrated
    /// it since the session began).
    fn transaction<T>(
        &mut self,
        work: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime()?;
        let context = runtime.handle().clone();
        let client = self.writer()?;
        let _context = context.enter();
        let done = futures_executor::block_on(async move {
            let tx = client.transaction().await.map_err(Failure::Db)?;
            schema::still_writable(&tx)
                .await
                .map_err(Failure::Migration)?;
            let done = work(&tx).await?;
            tx.commit().await.map_err(Failure::Db)?;
            Ok(done)
        });
        done.map_err(|failure| {
            if self.writer.as_ref().is_some_and(Client::is_closed) {
                self.writer = None;
            }
            self.error(failure)
        })
    }

    fn error(&self, failure: Failure) -> StoreError {
        match failure {
            Failure::Locked => StoreError::Locked {
                store: self.name.clone(),
            },
            Failure::Migration(message) => self.migration(message),
            Failure::Corrupt(message) => StoreError::Corrupt {
                store: self.name.clone(),
                message,
            },
            Failure::Db(err) => self.failed(&crate::sanitize::with_causes(&err)),
            Failure::Text(message) => self.failed(&message),
        }
    }

    fn failed(&self, message: &str) -> StoreError {
        StoreError::Postgres {
            store: self.name.clone(),
            message: self.url.redact(message).into_owned(),
        }
    }

    fn migration(&self, message: String) -> StoreError {
        StoreError::Migration {
            store: self.name.clone(),
            message: self.url.redact(&message).into_owned(),
        }
    }

    /// Hands `each` every rollup a `SELECT bucket, target, probe, location, version,
    /// scalars, ttft, e2e, itl, tps …` query returns, in its order, one at a time as they
    /// arrive (a month of a fleet's decoded rollups never sits in memory at once).
    fn rollup_rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        each: &mut EachStored<'_>,
    ) -> Result<(), StoreError> {
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            let rows = client
                .query_raw(sql, params.iter().map(|p| *p as &dyn ToSql))
                .await
                .map_err(Failure::Db)?;
            let mut rows = std::pin::pin!(rows);
            while let Some(row) = rows.try_next().await.map_err(Failure::Db)? {
                let head = rows::rollup_head(&row)?;
                let blob = |i: usize| row.try_get::<_, &[u8]>(i).map_err(Failure::Db);
                let stored = StoredRollup {
                    scalars: rows::scalars(row.try_get(5).map_err(Failure::Db)?)?,
                    blobs: [blob(6)?, blob(7)?, blob(8)?, blob(9)?],
                };
                each(head, stored)
                    .map_err(|err| Failure::Corrupt(format!("a rollup does not decode: {err}")))?;
            }
            Ok(())
        })
    }

    /// The spend a `SELECT provider, month, location, usd, tokens FROM spend …` query
    /// returns.
    fn spend_rows(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Spend>, StoreError> {
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            let rows = client.query(sql, params).await.map_err(Failure::Db)?;
            rows.iter()
                .map(|row| {
                    Ok(Spend {
                        provider: row.try_get(0).map_err(Failure::Db)?,
                        month: row.try_get(1).map_err(Failure::Db)?,
                        location: row.try_get(2).map_err(Failure::Db)?,
                        usd: row.try_get(3).map_err(Failure::Db)?,
                        tokens: row.try_get::<_, i64>(4).map_err(Failure::Db)? as u64,
                    })
                })
                .collect()
        })
    }

    /// Results a `SELECT {record::COLUMNS} FROM results r …` query returns, in its order.
    fn records(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<(ResultRecord, i64)>, StoreError> {
        let mut out = Vec::new();
        self.each_record(sql, params, &mut |record, ts_ms| out.push((record, ts_ms)))?;
        Ok(out)
    }

    /// Hands `each` the results a `SELECT {record::COLUMNS} FROM results r …` query
    /// returns, in its order, with their unix ms, one at a time as they arrive.
    fn each_record(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        each: &mut dyn FnMut(ResultRecord, i64),
    ) -> Result<(), StoreError> {
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            each_record_on(&**client, sql, params, each).await
        })
    }

    /// Hands `each` the rows of `span` from `since_bucket` written after `after` (those of
    /// the transactions its snapshot did not see, found through `rollups_by_xact`; every
    /// one when `None`), their head's columns and then `more`, in the one order and one
    /// snapshot; returns what that snapshot saw.
    fn each_rollup_written(
        &self,
        more: &str,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(&tokio_postgres::Row) -> Result<(), Failure>,
    ) -> Result<Seen, StoreError> {
        self.read_written(after, async |tx, after| {
            let span = span.as_str();
            let (written_after, params): (_, Vec<&(dyn ToSql + Sync)>) = match &after {
                None => (String::new(), vec![&span, &since_bucket]),
                Some(snapshot) => (
                    format!("AND {}", written_after("$3")),
                    vec![&span, &since_bucket, snapshot],
                ),
            };
            let rows = tx
                .query_raw(
                    &format!(
                        "SELECT bucket, target, probe, location, version{more} FROM rollups
                         WHERE span = $1 AND bucket >= $2 {written_after} {ROLLUP_ORDER}"
                    ),
                    params.iter().map(|p| *p as &dyn ToSql),
                )
                .await
                .map_err(Failure::Db)?;
            let mut rows = std::pin::pin!(rows);
            while let Some(row) = rows.try_next().await.map_err(Failure::Db)? {
                each(&row)?;
            }
            Ok(())
        })
    }

    /// Runs `read` in one read-only snapshot (repeatable read) with the snapshot `after`
    /// describes (`None`: no earlier read), and returns what it saw: that snapshot and the
    /// pruned bounds.
    fn read_written(
        &self,
        after: Option<&Seen>,
        read: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>, Option<&str>) -> Result<(), Failure>,
    ) -> Result<Seen, StoreError> {
        let after = after
            .map(|seen| {
                seen.snapshot().ok_or_else(|| StoreError::OtherStore {
                    store: self.name.clone(),
                })
            })
            .transpose()?;
        self.call(async |pool: &Pool| {
            let mut client = pool.get().await.map_err(Failure::pool)?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(Failure::Db)?;
            let row = tx
                .query_one(
                    "SELECT pg_current_snapshot()::text, results_before, rollups_before
                     FROM pruned",
                    &[],
                )
                .await
                .map_err(Failure::Db)?;
            let seen = Seen {
                upto: Upto::Snapshot(row.try_get(0).map_err(Failure::Db)?),
                results_pruned_before: row.try_get(1).map_err(Failure::Db)?,
                rollups_pruned_before: row.try_get(2).map_err(Failure::Db)?,
            };
            read(&tx, after).await?;
            tx.commit().await.map_err(Failure::Db)?;
            Ok(seen)
        })
    }
}

/// A row written by a transaction the snapshot in `param` (`$n`), as text, did not see: one
/// that had not committed when that read began.
fn written_after(param: &str) -> String {
    format!(
        "xact >= pg_snapshot_xmin({param}::text::pg_snapshot)
         AND NOT pg_visible_in_snapshot(xact, {param}::text::pg_snapshot)"
    )
}

/// The incidents open at or after `$1`, in their one order: through the index on their end
/// (and the open ones' `NULL`s in it), not every incident ever written.
fn open_since_sql() -> String {
    format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE end_ms IS NULL OR end_ms >= $1 \
         {INCIDENT_ORDER}"
    )
}

/// Hands `each` the incidents a `SELECT {INCIDENT_COLUMNS} FROM incidents …` query on
/// `client` returns, in its order, with their row ids.
async fn each_incident_on(
    client: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    each: &mut dyn FnMut(i64, Incident),
) -> Result<(), Failure> {
    let rows = client.query(sql, params).await.map_err(Failure::Db)?;
    let mut names = Names::new();
    for row in &rows {
        let mut text = |at| Ok::<_, Failure>(names.get(row.try_get(at).map_err(Failure::Db)?));
        let incident = Incident {
            target: text(1)?,
            state: State::from_name(row.try_get(2).map_err(Failure::Db)?),
            cause: text(3)?,
            start_ms: row.try_get(4).map_err(Failure::Db)?,
            end_ms: row.try_get(5).map_err(Failure::Db)?,
            location: text(6)?,
            kind: IncidentKind::from_name(row.try_get(7).map_err(Failure::Db)?),
        };
        each(row.try_get(0).map_err(Failure::Db)?, incident);
    }
    Ok(())
}

/// Hands `each` the results a `SELECT {record::COLUMNS} FROM results r …` query on
/// `client` returns, in its order, with their unix ms, one at a time as they arrive.
async fn each_record_on(
    client: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    each: &mut dyn FnMut(ResultRecord, i64),
) -> Result<(), Failure> {
    let rows = client
        .query_raw(sql, params.iter().copied())
        .await
        .map_err(Failure::Db)?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await.map_err(Failure::Db)? {
        let (record, ts_ms) = record::record(&row)?;
        each(record, ts_ms);
    }
    Ok(())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take().and_then(Arc::into_inner) {
            runtime.shutdown_background();
        }
    }
}

impl Backend for Postgres {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn fork(&self) -> Result<Store, StoreError> {
        Ok(Store(Box::new(Postgres {
            runtime: self.runtime.clone(),
            pool: self.pool.clone(),
            config: self.config.clone(),
            tls: self.tls.clone(),
            writer: None,
            publisher: std::sync::Mutex::new(None),
            checkpointer: std::sync::Mutex::new(None),
            access: Access::Reader,
            name: self.name.clone(),
            url: self.url.clone(),
        })))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let location = match &self.access {
            Access::Writer(location) => location.clone(),
            Access::Reader => return Err(self.failed("this store was opened read-only")),
        };
        let now_ms = crate::units::now_ms();
        self.transaction(async |tx| {
            rows::insert_results(tx, &batch.results).await?;
            rows::upsert_rollups(tx, &batch.rollups).await?;
            points::written(tx, &batch.rollups, Some((&location, now_ms))).await?;
            rows::put_spend(
                tx,
                "INSERT INTO spend (provider, month, location, usd, tokens)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (provider, month, location) DO UPDATE SET
                    usd = spend.usd + excluded.usd, tokens = spend.tokens + excluded.tokens",
                &batch.spend,
            )
            .await?;
            rows::upsert_states(tx, &batch.health).await?;
            for transition in &batch.transitions {
                write_transition(tx, transition)
                    .await
                    .map_err(Failure::Db)?;
            }
            rows::put_heartbeats(tx, &batch.heartbeats).await?;
            rows::put_outbox(tx, &batch.notifications, &batch.delivered).await?;
            fleet::settle(tx, &batch.results).await
        })
    }

    fn copy(&mut self, copied: &Copied) -> Result<(), StoreError> {
        self.transaction(async |tx| {
            rows::insert_results(tx, &copied.results).await?;
            rows::upsert_rollups(tx, &copied.rollups).await?;
            points::written(tx, &copied.rollups, None).await?;
            rows::put_spend(
                tx,
                "INSERT INTO spend (provider, month, location, usd, tokens)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (provider, month, location) DO UPDATE SET
                    usd = excluded.usd, tokens = excluded.tokens",
                &copied.spend,
            )
            .await?;
            let incident = tx
                .prepare(
                    "INSERT INTO incidents (target, state, cause, start_ms, end_ms, location, kind)
                     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS
                        (SELECT 1 FROM incidents
                         WHERE target = $1 AND location = $6 AND start_ms = $4 AND kind = $7)",
                )
                .await
                .map_err(Failure::Db)?;
            for row in &copied.incidents {
                tx.execute(
                    &incident,
                    &[
                        &&*row.target,
                        &row.state.as_str(),
                        &&*row.cause,
                        &row.start_ms,
                        &row.end_ms,
                        &&*row.location,
                        &row.kind.as_str(),
                    ],
                )
                .await
                .map_err(Failure::Db)?;
            }
            rows::upsert_states(tx, &copied.health).await?;
            rows::put_heartbeats(tx, &copied.heartbeats).await
        })
    }

    fn each_result_since(
        &self,
        since_ms: i64,
        target: Option<&str>,
        each: &mut dyn FnMut(ResultRecord, i64),
    ) -> Result<(), StoreError> {
        self.each_record(
            &format!(
                "SELECT {} FROM results r WHERE ts_ms >= $1 AND ($2::text IS NULL OR target = $2)
                 ORDER BY ts_ms, run_id",
                *record::COLUMNS
            ),
            &[&since_ms, &target],
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
            &format!(
                "SELECT {} FROM results r WHERE (ts_ms, run_id) > ($1, $2)
                 ORDER BY ts_ms, run_id LIMIT $3",
                *record::COLUMNS
            ),
            &[&ts_ms, &run_id, &limit_of(limit)],
        )
    }

    fn each_result_written(
        &self,
        since_ms: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<Seen, StoreError> {
        self.read_written(after, async |tx, after| {
            let each = &mut |record, _| each(record);
            match after {
                None => {
                    each_record_on(
                        tx,
                        &format!(
                            "SELECT {} FROM results r WHERE ts_ms >= $1 ORDER BY ts_ms, run_id",
                            *record::COLUMNS
                        ),
                        &[&since_ms],
                        each,
                    )
                    .await
                }
                Some(snapshot) => {
                    each_record_on(
                        tx,
                        &format!(
                            "SELECT {} FROM results r WHERE ts_ms >= $1 AND {}
                             ORDER BY ts_ms, run_id",
                            *record::COLUMNS,
                            written_after("$2")
                        ),
                        &[&since_ms, &snapshot],
                        each,
                    )
                    .await
                }
            }
        })
    }

    fn each_newest_since(
        &self,
        since_ms: i64,
        limit: usize,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<(), StoreError> {
        self.each_record(
            &format!(
                "SELECT {} FROM
                   (SELECT * FROM results WHERE ts_ms >= $1
                    ORDER BY ts_ms DESC, run_id DESC LIMIT $2) r
                 ORDER BY ts_ms, run_id",
                *record::COLUMNS
            ),
            &[&since_ms, &limit_of(limit)],
            &mut |record, _| each(record),
        )
    }

    fn latest_results(&self, target: &str, limit: usize) -> Result<Vec<ResultRecord>, StoreError> {
        let out = self.records(
            &format!(
                "SELECT {} FROM results r WHERE target = $1
                 ORDER BY ts_ms DESC, run_id DESC LIMIT $2",
                *record::COLUMNS
            ),
            &[&target, &limit_of(limit)],
        )?;
        Ok(out.into_iter().map(|(record, _)| record).collect())
    }

    fn each_latest_results(
        &self,
        targets: &[&str],
        limit: usize,
        each: &mut dyn FnMut(ResultRecord),
    ) -> Result<(), StoreError> {
        self.each_record(
            &format!(
                "SELECT {} FROM unnest($1::text[]) WITH ORDINALITY AS t(id, n)
                 CROSS JOIN LATERAL
                   (SELECT * FROM results WHERE target = t.id
                    ORDER BY ts_ms DESC, run_id DESC LIMIT $2) r
                 ORDER BY t.n, r.ts_ms DESC, r.run_id DESC",
                *record::COLUMNS
            ),
            &[&targets, &limit_of(limit)],
            &mut |record, _| each(record),
        )
    }

    fn result_count_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            let row = client
                .query_one(
                    "SELECT COUNT(*) FROM results WHERE ts_ms >= $1",
                    &[&since_ms],
                )
                .await
                .map_err(Failure::Db)?;
            Ok(row.try_get::<_, i64>(0).map_err(Failure::Db)? as u64)
        })
    }

    fn each_rollup_since(
        &self,
        span: Span,
        since_bucket: i64,
        each: &mut dyn FnMut(RollupRow),
    ) -> Result<(), StoreError> {
        self.rollup_rows(
            &format!(
                "SELECT {ROLLUP_COLUMNS} FROM rollups WHERE span = $1 AND bucket >= $2
                 {ROLLUP_ORDER}"
            ),
            &[&span.as_str(), &since_bucket],
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
        // Every head: an index-only scan, the primary key's index includes the version.
        self.each_rollup_written("", span, since_bucket, after, &mut |row| {
            each(rows::rollup_head(row)?);
            Ok(())
        })
    }

    fn rollups_at(
        &self,
        span: Span,
        keys: &[RollupKey<'_>],
        each: &mut EachStored<'_>,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let buckets: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let targets: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let probes: Vec<&str> = keys.iter().map(|k| k.2).collect();
        let locations: Vec<&str> = keys.iter().map(|k| k.3).collect();
        let mut distinct = buckets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // One query for every key: the keys as arrays joined on the primary key. The
        // keys' buckets, given apart, let the join read only their rows through the index:
        // without them, PostgreSQL hashes the whole span to join a few buckets' keys
        // (4 buckets of 10,000 keys: 0.9 s against 0.3 s).
        self.rollup_rows(
            &format!(
                "SELECT {ROLLUP_COLUMNS} FROM rollups r
                 JOIN unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
                    AS k (k_bucket, k_target, k_probe, k_location)
                 ON r.bucket = k.k_bucket AND r.target = k.k_target COLLATE \"C\"
                    AND r.probe = k.k_probe COLLATE \"C\"
                    AND r.location = k.k_location COLLATE \"C\"
                 WHERE r.span = $1 AND r.bucket = ANY($6) {ROLLUP_ORDER}"
            ),
            &[
                &span.as_str(),
                &buckets,
                &targets,
                &probes,
                &locations,
                &distinct,
            ],
            each,
        )
    }

    fn rollup(
        &self,
        span: Span,
        bucket: i64,
        at: &TargetAt,
        probe: &str,
    ) -> Result<Option<SparseRollup>, StoreError> {
        // The primary key whole, not the keys' join: for a bucket newer than the table's
        // statistics (every new hour and day, which the writer asks for once per key at
        // its turn) PostgreSQL expects no row and reads the bucket's rows through the
        // index, filtering them by the key, so the joined form cost a fleet's writer a read
        // of every row written to the new bucket so far for each key it began.
        let sql = format!(
            "SELECT {ROLLUP_COLUMNS} FROM rollups
             WHERE span = $1 AND bucket = $2 AND target = $3 COLLATE \"C\"
                AND probe = $4 COLLATE \"C\" AND location = $5 COLLATE \"C\""
        );
        let key: [&(dyn ToSql + Sync); 5] =
            [&span.as_str(), &bucket, &at.target, &probe, &at.location];
        super::one_rollup(|each| self.rollup_rows(&sql, &key, each))
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
                 WHERE span = $1 AND (bucket, target, probe, location) > ($2, $3, $4, $5)
                 {ROLLUP_ORDER} LIMIT $6"
            ),
            &[
                &span.as_str(),
                &bucket,
                &target,
                &probe,
                &location,
                &limit_of(limit),
            ],
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
            let scalars = rows::scalars(row.try_get(5).map_err(Failure::Db)?)?;
            each(rows::rollup_head(row)?, scalars);
            Ok(())
        })
    }

    fn each_rollup_point_written(
        &self,
        span: Span,
        since_bucket: i64,
        after: Option<&Seen>,
        each: &mut EachPoint<'_>,
    ) -> Result<Seen, StoreError> {
        if after.is_some() {
            return points_of_rollups(self, span, since_bucket, after, each);
        }
        self.read_written(None, async |tx, _| {
            points::read(tx, span, since_bucket, each).await
        })
    }

    fn pack(&mut self, now_ms: i64) -> Result<(), StoreError> {
        for span in [Span::Hour, Span::Day] {
            // A transaction per step: a month of a fleet's hours is millions of rows.
            while !self.transaction(async |tx| points::advance_all(tx, span, now_ms).await)? {}
        }
        Ok(())
    }

    fn month_spend(&self, month: &str) -> Result<HashMap<String, (f64, u64)>, StoreError> {
        let rows = self.spend_rows(
            "SELECT provider, month, '', SUM(usd), SUM(tokens)::bigint FROM spend
             WHERE month = $1 GROUP BY provider, month",
            &[&month],
        )?;
        Ok(rows
            .into_iter()
            .map(|row| (row.provider, (row.usd, row.tokens)))
            .collect())
    }

    fn spend(&self) -> Result<Vec<Spend>, StoreError> {
        self.spend_rows(
            "SELECT provider, month, location, usd, tokens FROM spend
             ORDER BY provider, month, location",
            &[],
        )
    }

    fn health(&self) -> Result<HashMap<TargetAt, TargetHealth>, StoreError> {
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            let rows = client
                .query("SELECT target, location, health FROM target_state", &[])
                .await
                .map_err(Failure::Db)?;
            let mut out = HashMap::new();
            for row in &rows {
                let json: &str = row.try_get(2).map_err(Failure::Db)?;
                if let Ok(health) = serde_json::from_str(json) {
                    let at = TargetAt {
                        target: row.try_get(0).map_err(Failure::Db)?,
                        location: row.try_get(1).map_err(Failure::Db)?,
                    };
                    out.insert(at, health);
                }
            }
            Ok(out)
        })
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.checkpoint_column("body")
    }

    fn checkpoint_saved_ms(&self) -> Result<Option<i64>, StoreError> {
        self.checkpoint_column("saved_ms")
    }

    fn save_checkpoint(&self, saved_ms: i64, body: &[u8]) -> Result<(), StoreError> {
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            client
                .execute(
                    "INSERT INTO checkpoint (id, saved_ms, body) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET saved_ms = $1, body = $2",
                    &[&saved_ms, &body],
                )
                .await
                .map_err(Failure::Db)?;
            Ok(())
        })
    }

    fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError> {
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            let rows = client
                .query(
                    &format!(
                        "SELECT location, seen_ms, shortest_ms, retired_ms, {NOW_MS} - heard_ms \
                         FROM locations ORDER BY location"
                    ),
                    &[],
                )
                .await
                .map_err(Failure::Db)?;
            rows.iter()
                .map(|row| {
                    Ok(Heartbeat {
                        location: row.try_get(0).map_err(Failure::Db)?,
                        seen_ms: row.try_get(1).map_err(Failure::Db)?,
                        shortest_ms: row.try_get(2).map_err(Failure::Db)?,
                        retired_ms: row.try_get(3).map_err(Failure::Db)?,
                        silent_ms: row.try_get(4).map_err(Failure::Db)?,
                    })
                })
                .collect()
        })
    }

    fn pending_notifications(
        &self,
        location: &str,
        limit: usize,
    ) -> Result<Vec<(i64, Notification)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(async |pool: &Pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            let rows = client
                .query(
                    "SELECT id, body FROM outbox WHERE location = $1 AND sent_ms IS NULL
                     ORDER BY id LIMIT $2",
                    &[&location, &limit],
                )
                .await
                .map_err(Failure::Db)?;
            rows.iter()
                .map(|row| {
                    let id: i64 = row.try_get(0).map_err(Failure::Db)?;
                    let body: String = row.try_get(1).map_err(Failure::Db)?;
                    let notification = serde_json::from_str(&body).map_err(|err| {
                        Failure::Corrupt(format!("outbox row {id} does not parse: {err}"))
                    })?;
                    Ok((id, notification))
                })
                .collect()
        })
    }

    fn publisher_lock(&self) -> Result<bool, StoreError> {
        self.hold_lock(&self.publisher, fleet::PUBLISHER_LOCK)
    }

    fn checkpoint_lock(&self) -> Result<bool, StoreError> {
        self.hold_lock(&self.checkpointer, fleet::CHECKPOINT_LOCK)
    }

    fn into_fleet_limits(self: Box<Self>) -> Option<Arc<dyn FleetLimits>> {
        Some(Arc::from(self as Box<dyn FleetLimits>))
    }

    fn each_incident_written(
        &self,
        since_ms: i64,
        after: Option<&Seen>,
        each: &mut dyn FnMut(i64, Incident),
    ) -> Result<Seen, StoreError> {
        self.read_written(after, async |tx, after| match after {
            None => each_incident_on(tx, &open_since_sql(), &[&since_ms], each).await,
            Some(snapshot) => {
                let sql = format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {}",
                    written_after("$1")
                );
                each_incident_on(tx, &sql, &[&snapshot], each).await
            }
        })
    }

    fn prune(&mut self, bounds: &Prune) -> Result<Pruned, StoreError> {
        let mut counts = Pruned::default();
        let counted = &mut counts;
        let Prune {
            results_before_ms,
            rollups_before_ms,
            incidents_before_ms,
        } = *bounds;
        self.transaction(async move |tx| {
            let results = tx
                .execute(
                    "DELETE FROM results WHERE ts_ms < $1",
                    &[&results_before_ms],
                )
                .await
                .map_err(Failure::Db)?;
            let rollups = tx
                .execute(
                    "DELETE FROM rollups WHERE bucket < $1",
                    &[&rollups_before_ms],
                )
                .await
                .map_err(Failure::Db)?;
            tx.execute(
                "DELETE FROM points WHERE bucket < $1",
                &[&rollups_before_ms],
            )
            .await
            .map_err(Failure::Db)?;
            let incidents = tx
                .execute(
                    "DELETE FROM incidents WHERE end_ms < $1",
                    &[&incidents_before_ms],
                )
                .await
                .map_err(Failure::Db)?;
            tx.execute(
                "DELETE FROM outbox WHERE sent_ms < $1",
                &[&results_before_ms],
            )
            .await
            .map_err(Failure::Db)?;
            tx.execute(
                "UPDATE pruned SET results_before = GREATEST(results_before, $1),
                    rollups_before = GREATEST(rollups_before, $2)",
                &[&results_before_ms, &rollups_before_ms],
            )
            .await
            .map_err(Failure::Db)?;
            *counted = Pruned {
                results: results as usize,
                rollups: rollups as usize,
                incidents: incidents as usize,
            };
            Ok(())
        })?;
        Ok(counts)
    }

    fn retire(&mut self, at_ms: i64) -> Result<Option<Retired>, StoreError> {
        let Access::Writer(location) = &self.access else {
            return Err(
                self.failed("opened read-only: a location is retired by a handle of its writer")
            );
        };
        let location = location.clone();
        self.transaction(async move |tx| {
            let marked = tx
                .execute(
                    "UPDATE locations SET retired_ms = GREATEST($2, seen_ms) WHERE location = $1",
                    &[&location, &at_ms],
                )
                .await
                .map_err(Failure::Db)?;
            if marked == 0 {
                return Ok(None);
            }
            // The table's trigger stamps each closed one with this transaction.
            let incidents_closed = tx
                .execute(
                    "UPDATE incidents SET end_ms = $2 WHERE location = $1 AND end_ms IS NULL",
                    &[&location, &at_ms],
                )
                .await
                .map_err(Failure::Db)?;
            let states_forgotten = tx
                .execute("DELETE FROM target_state WHERE location = $1", &[&location])
                .await
                .map_err(Failure::Db)?;
            Ok(Some(Retired {
                incidents_closed: incidents_closed as usize,
                states_forgotten: states_forgotten as usize,
            }))
        })
    }
}

/// Opens, continues, updates or closes the target's incident for one state change, as the
/// SQLite backend does (see `store/sqlite`).
async fn write_transition(
    tx: &tokio_postgres::Transaction<'_>,
    t: &Transition,
) -> Result<(), tokio_postgres::Error> {
    let kind = t.kind.as_str();
    // Every row changed takes this transaction's id (the table's trigger sets it), as an
    // inserted one does.
    let close = "UPDATE incidents SET end_ms = $2
                 WHERE target = $1 AND location = $3 AND kind = $4 AND end_ms IS NULL";
    if !t.to.is_bad() {
        tx.execute(close, &[&t.target, &t.at_ms, &t.location, &kind])
            .await?;
        return Ok(());
    }
    let continued = if t.from.is_bad() {
        tx.execute(
            "UPDATE incidents SET state = CASE WHEN $2::text = 'down' THEN 'down' ELSE state END
             WHERE target = $1 AND location = $3 AND kind = $4 AND end_ms IS NULL",
            &[&t.target, &t.to.as_str(), &t.location, &kind],
        )
        .await?
    } else if t.reopens {
        tx.execute(
            "UPDATE incidents SET end_ms = NULL,
                state = CASE WHEN $2::text = 'down' THEN 'down' ELSE state END
             WHERE id = (SELECT MAX(id) FROM incidents
                         WHERE target = $1 AND location = $3 AND kind = $4)",
            &[&t.target, &t.to.as_str(), &t.location, &kind],
        )
        .await?
    } else {
        0
    };
    if continued == 0 {
        tx.execute(close, &[&t.target, &t.at_ms, &t.location, &kind])
            .await?;
        tx.execute(
            "INSERT INTO incidents (target, state, cause, start_ms, location, kind)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &t.target,
                &t.to.as_str(),
                &t.cause,
                &t.at_ms,
                &t.location,
                &kind,
            ],
        )
        .await?;
    }
    Ok(())
}

/// What failed inside a query, turned into a [`StoreError`] by the store that ran it.
#[derive(Debug)]
enum Failure {
    /// The server or the connection.
    Db(tokio_postgres::Error),
    /// Another writer holds the lock.
    Locked,
    /// The schema could not be brought up to date.
    Migration(String),
    /// A stored value does not decode.
    Corrupt(String),
    /// Anything else, already worded.
    Text(String),
}

impl Failure {
    fn pool(err: deadpool_postgres::PoolError) -> Failure {
        match err {
            deadpool_postgres::PoolError::Backend(err) => Failure::Db(err),
            other => Failure::Text(format!("no connection to the database: {other}")),
        }
    }
}

/// `postgresql://host:port/database`, never the user's password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("postgresql://{host}:{port}/{database}")
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
