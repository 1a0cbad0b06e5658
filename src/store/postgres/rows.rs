//! Rows into PostgreSQL: results as JSON (one statement per batch through
//! `jsonb_populate_recordset`, so the record's serde fields are the columns; they are read
//! back as typed columns by `record`), rollups as scalars plus HdrHistogram blobs, target
//! states as JSON text.

use serde_json::{Map, Value};
use tokio_postgres::Transaction;

use super::{Failure, NOW_MS};
use crate::aggregate::alerting::Notification;
use crate::aggregate::health::TargetHealth;
use crate::aggregate::rollup::Scalars;
use crate::result::ResultRecord;
use crate::store::sqlite::RESULT_COLUMNS;
use crate::store::{Heartbeat, RollupHead, RollupRow, Spend, TargetAt};

/// Inserts results whose `run_id` is new, in one statement.
pub(super) async fn insert_results(
    tx: &Transaction<'_>,
    results: &[(ResultRecord, i64)],
) -> Result<(), Failure> {
    if results.is_empty() {
        return Ok(());
    }
    let rows = results
        .iter()
        .map(|(record, ts_ms)| {
            let mut row = match serde_json::to_value(record) {
                Ok(Value::Object(row)) => row,
                Ok(_) => Map::new(),
                Err(err) => {
                    return Err(Failure::Corrupt(format!(
                        "a record does not serialize: {err}"
                    )));
                }
            };
            row.insert("ts_ms".into(), Value::from(*ts_ms));
            row.insert(
                "itl_gaps_us".into(),
                Value::from(record.itl_gaps_us.clone()),
            );
            Ok(Value::Object(row))
        })
        .collect::<Result<Vec<Value>, Failure>>()?;
    let columns = std::iter::once("ts_ms")
        .chain(std::iter::once("itl_gaps_us"))
        .chain(RESULT_COLUMNS.iter().copied())
        .map(|column| format!("\"{column}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO results ({columns}) SELECT {columns}
         FROM jsonb_populate_recordset(NULL::results, $1::jsonb) ON CONFLICT (run_id) DO NOTHING"
    );
    tx.execute(&sql, &[&Value::Array(rows)])
        .await
        .map_err(Failure::Db)?;
    Ok(())
}

/// Writes spend rows with `sql` (`$1..$5`: provider, month, location, usd, tokens), in
/// order: adding to a stored total is not commutative in floating point, so the order is
/// kept.
pub(super) async fn put_spend(
    tx: &Transaction<'_>,
    sql: &str,
    rows: &[Spend],
) -> Result<(), Failure> {
    let statement = tx.prepare(sql).await.map_err(Failure::Db)?;
    for row in rows {
        tx.execute(
            &statement,
            &[
                &row.provider,
                &row.month,
                &row.location,
                &row.usd,
                &(row.tokens as i64),
            ],
        )
        .await
        .map_err(Failure::Db)?;
    }
    Ok(())
}

/// Adds `notifications` to the outbox and marks the `delivered` ones (id, unix ms) sent.
pub(super) async fn put_outbox(
    tx: &Transaction<'_>,
    notifications: &[Notification],
    delivered: &[(i64, i64)],
) -> Result<(), Failure> {
    for n in notifications {
        let body = serde_json::to_string(n).unwrap_or_default();
        tx.execute(
            "INSERT INTO outbox (location, alert, body, created_ms) VALUES ($1, $2, $3, $4)",
            &[&n.location, &n.alert, &body, &n.at_ms],
        )
        .await
        .map_err(Failure::Db)?;
    }
    for (id, at) in delivered {
        tx.execute(
            "UPDATE outbox SET sent_ms = $2 WHERE id = $1 AND sent_ms IS NULL",
            &[id, at],
        )
        .await
        .map_err(Failure::Db)?;
    }
    Ok(())
}

/// Stores heartbeats, keeping the later one of each location and its later retirement; a
/// prober's own (`silent_ms` set) is stamped heard on the database's clock, whatever its
/// `seen_ms` (its prober's clock) says.
pub(super) async fn put_heartbeats(
    tx: &Transaction<'_>,
    rows: &[Heartbeat],
) -> Result<(), Failure> {
    let sql = format!(
        "INSERT INTO locations (location, seen_ms, shortest_ms, retired_ms, heard_ms)
         VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN {NOW_MS} END)
         ON CONFLICT (location) DO UPDATE SET
            seen_ms = GREATEST(locations.seen_ms, excluded.seen_ms),
            shortest_ms = excluded.shortest_ms,
            retired_ms = GREATEST(locations.retired_ms, excluded.retired_ms),
            heard_ms = COALESCE(excluded.heard_ms, locations.heard_ms)"
    );
    for row in rows {
        tx.execute(
            &sql,
            &[
                &row.location,
                &row.seen_ms,
                &row.shortest_ms,
                &row.retired_ms,
                &row.silent_ms.is_some(),
            ],
        )
        .await
        .map_err(Failure::Db)?;
    }
    Ok(())
}

/// Stores rollups whole, replacing the same span, bucket, target, probe and location.
pub(super) async fn upsert_rollups(
    tx: &Transaction<'_>,
    rows: &[RollupRow],
) -> Result<(), Failure> {
    if rows.is_empty() {
        return Ok(());
    }
    let upsert = tx
        .prepare(
            "INSERT INTO rollups
                (span, bucket, target, probe, location, scalars, ttft, e2e, itl, tps, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, nextval('rollup_version'))
             ON CONFLICT (span, bucket, target, probe, location) DO UPDATE SET
                scalars = excluded.scalars, ttft = excluded.ttft, e2e = excluded.e2e,
                itl = excluded.itl, tps = excluded.tps, version = excluded.version,
                xact = excluded.xact",
        )
        .await
        .map_err(Failure::Db)?;
    // Sent together: the connection pipelines them, one round trip for the lot.
    let writes = rows.iter().map(|row| {
        let upsert = &upsert;
        async move {
            let scalars = serde_json::to_string(&row.rollup.stored_scalars()).unwrap_or_default();
            let [ttft, e2e, itl, tps] = row.rollup.blobs();
            tx.execute(
                upsert,
                &[
                    &row.span.as_str(),
                    &row.bucket,
                    &row.target,
                    &row.probe,
                    &row.location,
                    &scalars,
                    &ttft,
                    &e2e,
                    &itl,
                    &tps,
                ],
            )
            .await
        }
    });
    futures_util::future::try_join_all(writes)
        .await
        .map_err(Failure::Db)?;
    Ok(())
}

/// Stores target states, replacing each target's in its location.
pub(super) async fn upsert_states(
    tx: &Transaction<'_>,
    states: &[(TargetAt, TargetHealth)],
) -> Result<(), Failure> {
    if states.is_empty() {
        return Ok(());
    }
    let upsert = tx
        .prepare(
            "INSERT INTO target_state (target, location, health) VALUES ($1, $2, $3)
             ON CONFLICT (target, location) DO UPDATE SET health = excluded.health",
        )
        .await
        .map_err(Failure::Db)?;
    let writes = states.iter().map(|(at, health)| {
        let upsert = &upsert;
        async move {
            let json = serde_json::to_string(health).unwrap_or_default();
            tx.execute(upsert, &[&at.target, &at.location, &json]).await
        }
    });
    futures_util::future::try_join_all(writes)
        .await
        .map_err(Failure::Db)?;
    Ok(())
}

/// The head in a rollup row's first five columns: bucket, target, probe, location, version.
pub(super) fn rollup_head(row: &tokio_postgres::Row) -> Result<RollupHead<'_>, Failure> {
    Ok(RollupHead {
        bucket: row.try_get(0).map_err(Failure::Db)?,
        target: row.try_get(1).map_err(Failure::Db)?,
        probe: row.try_get(2).map_err(Failure::Db)?,
        location: row.try_get(3).map_err(Failure::Db)?,
        version: row.try_get(4).map_err(Failure::Db)?,
    })
}

/// A rollup's stored scalars.
pub(super) fn scalars(text: &str) -> Result<Scalars, Failure> {
    serde_json::from_str(text)
        .map_err(|err| Failure::Corrupt(format!("rollup scalars do not decode: {err}")))
}
