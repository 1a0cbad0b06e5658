//! The charts' scalars of each location's closed buckets packed into one row per span,
//! bucket and location (`points`), so that a first read of the heatmap's month of a fleet's
//! hours reads thousands of rows rather than millions (10 locations × 1,000 targets × 672
//! hours): what a cold publish spent most of its time on.
//!
//! The invariant, for every span and location: each bucket before the location's bound (in
//! `packed`) has in `points` exactly the [`PointScalars`] of the location's rollup rows of
//! that bucket, with their versions, and no row when it has none. It is kept in the
//! transaction of every write of a rollup:
//! - a location's first rollup of a span registers it, its bound the lowest there is;
//! - a rollup written below its location's bound (a late run, a copy) has its bucket packed
//!   again from the rows as they now are;
//! - a writer moves its own location's bound up to its clock's current bucket (never past a
//!   bucket its batch wrote to), packing the buckets it passes, [`ADVANCE`] at a time (a
//!   store packed for the first time is caught up over a few batches), and
//!   [`Backend::pack`](crate::store::Backend::pack) moves every location's at once;
//! - pruning deletes the packed rows of the buckets it deletes.
//!
//! A first read then takes, in one snapshot, each location's packed buckets below its bound
//! and its rows from the bound on (the current buckets, and a stopped location's last), and
//! hands them over bucket by bucket in the rollups' own order: what reading the rows gives
//! (`store::points_of_rollups`, which `tests/postgres.rs` compares it with).

use std::collections::HashMap;

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{Failure, rows};
use crate::aggregate::rollup::{PointScalars, Span};
use crate::store::{EachPoint, RollupHead, RollupRow};

/// The most buckets of a span a writer packs in one batch: a store packed for the first time
/// (an upgrade) is caught up over a few batches instead of holding up one for seconds.
const ADVANCE: i64 = 24;

/// One location's rollups of one bucket, as packed: the names once, each row by index.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Packed {
    /// The rows' targets, ascending.
    targets: Vec<String>,
    /// The rows' probes, ascending.
    probes: Vec<String>,
    /// Each row by target and probe (indices into the lists above, ascending), its version
    /// and its point scalars.
    rows: Vec<(u32, u32, i64, PointScalars)>,
}

impl Packed {
    /// Packs `rows` (target, probe, version and point scalars, by target then probe).
    fn of(rows: Vec<(String, String, i64, PointScalars)>) -> Packed {
        let mut targets: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        targets.dedup();
        let mut probes: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
        probes.sort_unstable();
        probes.dedup();
        let index = |names: &[String], name: &str| {
            names
                .binary_search_by(|n| n.as_str().cmp(name))
                .map_or(0, |at| at as u32)
        };
        let rows = rows
            .into_iter()
            .map(|(target, probe, version, point)| {
                let (t, p) = (index(&targets, &target), index(&probes, &probe));
                (t, p, version, point)
            })
            .collect();
        Packed {
            targets,
            probes,
            rows,
        }
    }

    /// Its rows as stored: target, probe, version and point scalars.
    fn rows(&self) -> impl Iterator<Item = (&str, &str, i64, &PointScalars)> {
        self.rows.iter().filter_map(|(t, p, version, point)| {
            let target = self.targets.get(*t as usize)?;
            let probe = self.probes.get(*p as usize)?;
            Some((target.as_str(), probe.as_str(), *version, point))
        })
    }
}

/// A row read from `rollups` rather than from a packed bucket.
type Loose = (i64, String, String, String, i64, PointScalars);

/// Registers the locations of `written` (rollups just stored, of any location) and packs
/// again the buckets written below their location's bound; then, for a writer (its
/// `location` and clock's `now_ms`), moves its own location's bounds towards the current
/// buckets, packing at most [`ADVANCE`] buckets of each span, and never up to a bucket it
/// just wrote: an import of older runs, in time order, then packs each bucket once, after
/// its last run, rather than again at every batch.
pub(super) async fn written(
    tx: &Transaction<'_>,
    written: &[RollupRow],
    writer: Option<(&str, i64)>,
) -> Result<(), Failure> {
    let mut by_location: HashMap<(Span, &str), Vec<i64>> = HashMap::new();
    for row in written {
        by_location
            .entry((row.span, row.location.as_str()))
            .or_default()
            .push(row.bucket);
    }
    if let Some((location, _)) = writer {
        for span in [Span::Hour, Span::Day] {
            by_location.entry((span, location)).or_default();
        }
    }
    for ((span, location), buckets) in by_location {
        let bound = bound(tx, span, location).await?;
        let oldest = buckets.iter().min().copied();
        repack_below(tx, span, location, bound, buckets).await?;
        if let Some((writer, now_ms)) = writer
            && writer == location
        {
            let upto = span.bucket_of(now_ms).min(oldest.unwrap_or(i64::MAX));
            advance(tx, span, location, bound, upto).await?;
        }
    }
    Ok(())
}

/// Packs again `location`'s `buckets` of `span` that are below its `bound`.
async fn repack_below(
    tx: &Transaction<'_>,
    span: Span,
    location: &str,
    bound: i64,
    mut buckets: Vec<i64>,
) -> Result<(), Failure> {
    buckets.retain(|&bucket| bucket < bound);
    buckets.sort_unstable();
    buckets.dedup();
    if buckets.is_empty() {
        return Ok(());
    }
    repack(tx, span, location, Buckets::Listed(&buckets)).await
}

/// `location`'s bound for `span`, registered (the lowest there is) when it has none: one
/// statement, which writes nothing once it is registered.
async fn bound(tx: &Transaction<'_>, span: Span, location: &str) -> Result<i64, Failure> {
    tx.query_one(
        "WITH registered AS (
            INSERT INTO packed (span, location, before) VALUES ($1, $2, $3)
            ON CONFLICT (span, location) DO NOTHING RETURNING before)
         SELECT before FROM registered
         UNION ALL SELECT before FROM packed WHERE span = $1 AND location = $2",
        &[&span.as_str(), &location, &i64::MIN],
    )
    .await
    .and_then(|row| row.try_get(0))
    .map_err(Failure::Db)
}

/// Moves `location`'s `bound` for `span` towards the bucket `current` (packing the buckets
/// before it), at most [`ADVANCE`] buckets; true when it got there.
async fn advance(
    tx: &Transaction<'_>,
    span: Span,
    location: &str,
    bound: i64,
    current: i64,
) -> Result<bool, Failure> {
    if bound >= current {
        return Ok(true);
    }
    let from = if bound == i64::MIN {
        // Nothing packed yet: from the location's oldest row, or nothing to pack.
        let oldest: Option<i64> = tx
            .query_one(
                "SELECT MIN(bucket) FROM rollups WHERE span = $1 AND location = $2",
                &[&span.as_str(), &location],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(Failure::Db)?;
        oldest.unwrap_or(current).min(current)
    } else {
        bound
    };
    let to = from
        .saturating_add(ADVANCE.saturating_mul(span.ms()))
        .min(current);
    if from < to {
        repack(tx, span, location, Buckets::Range(from, to)).await?;
    }
    tx.execute(
        "UPDATE packed SET before = $3 WHERE span = $1 AND location = $2",
        &[&span.as_str(), &location, &to],
    )
    .await
    .map_err(Failure::Db)?;
    Ok(to == current)
}

/// Moves every location's bound for `span` [`ADVANCE`] buckets towards the bucket current at
/// `now_ms`; true when they all got there.
pub(super) async fn advance_all(
    tx: &Transaction<'_>,
    span: Span,
    now_ms: i64,
) -> Result<bool, Failure> {
    let rows = tx
        .query(
            "SELECT location, before FROM packed WHERE span = $1 ORDER BY location",
            &[&span.as_str()],
        )
        .await
        .map_err(Failure::Db)?;
    let mut done = true;
    for row in &rows {
        let location: &str = row.try_get(0).map_err(Failure::Db)?;
        let bound: i64 = row.try_get(1).map_err(Failure::Db)?;
        done &= advance(tx, span, location, bound, span.bucket_of(now_ms)).await?;
    }
    Ok(done)
}

/// Which buckets [`repack`] packs.
enum Buckets<'a> {
    /// Those from the first up to the second (exclusive).
    Range(i64, i64),
    /// These.
    Listed(&'a [i64]),
}

/// Packs `location`'s `buckets` of `span` again from its rollup rows as they are in `tx`.
async fn repack(
    tx: &Transaction<'_>,
    span: Span,
    location: &str,
    buckets: Buckets<'_>,
) -> Result<(), Failure> {
    let (which, bounds): (&str, Vec<Box<dyn ToSql + Sync + Send>>) = match buckets {
        Buckets::Range(from, to) => (
            "bucket >= $3 AND bucket < $4",
            vec![Box::new(from), Box::new(to)],
        ),
        Buckets::Listed(list) => ("bucket = ANY($3)", vec![Box::new(list.to_vec())]),
    };
    let span_name = span.as_str();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&span_name, &location];
    params.extend(bounds.iter().map(|b| &**b as &(dyn ToSql + Sync)));
    tx.execute(
        &format!("DELETE FROM points WHERE span = $1 AND location = $2 AND {which}"),
        &params,
    )
    .await
    .map_err(Failure::Db)?;
    // Read whole before the first packed row is written: the connection answers one
    // statement at a time. At most `ADVANCE` buckets of one location's rows.
    let rows = tx
        .query(
            &format!(
                "SELECT bucket, target, probe, version, scalars FROM rollups
                 WHERE span = $1 AND location = $2 AND {which} ORDER BY bucket, target, probe"
            ),
            &params,
        )
        .await
        .map_err(Failure::Db)?;
    let mut bucket = None;
    let mut packing = Vec::new();
    for row in &rows {
        let at: i64 = row.try_get(0).map_err(Failure::Db)?;
        if bucket.is_some_and(|b| b != at) {
            put(tx, span, location, bucket, std::mem::take(&mut packing)).await?;
        }
        bucket = Some(at);
        let scalars = rows::scalars(row.try_get(4).map_err(Failure::Db)?)?;
        packing.push((
            row.try_get(1).map_err(Failure::Db)?,
            row.try_get(2).map_err(Failure::Db)?,
            row.try_get(3).map_err(Failure::Db)?,
            scalars.point(),
        ));
    }
    put(tx, span, location, bucket, packing).await
}

/// Stores `rows` as `location`'s packed `bucket` (nothing when there is none).
async fn put(
    tx: &Transaction<'_>,
    span: Span,
    location: &str,
    bucket: Option<i64>,
    rows: Vec<(String, String, i64, PointScalars)>,
) -> Result<(), Failure> {
    let Some(bucket) = bucket.filter(|_| !rows.is_empty()) else {
        return Ok(());
    };
    let body = rmp_serde::to_vec(&Packed::of(rows))
        .map_err(|err| Failure::Corrupt(format!("packed points do not encode: {err}")))?;
    tx.execute(
        "INSERT INTO points (span, bucket, location, body) VALUES ($1, $2, $3, $4)",
        &[&span.as_str(), &bucket, &location, &body],
    )
    .await
    .map_err(Failure::Db)?;
    Ok(())
}

/// Hands `each` every rollup's head and point scalars of `span` from `since` on, by bucket,
/// target, probe, location: each location's packed buckets below its bound, its rows from
/// there on.
pub(super) async fn read(
    tx: &Transaction<'_>,
    span: Span,
    since: i64,
    each: &mut EachPoint<'_>,
) -> Result<(), Failure> {
    let span = span.as_str();
    let loose = tx
        .query(
            "SELECT r.bucket, r.target, r.probe, r.location, r.version, r.scalars
             FROM packed k CROSS JOIN LATERAL (
                SELECT bucket, target, probe, location, version, scalars FROM rollups
                WHERE span = k.span AND location = k.location AND bucket >= GREATEST($2, k.before)
             ) r
             WHERE k.span = $1",
            &[&span, &since],
        )
        .await
        .map_err(Failure::Db)?;
    let mut rows: Vec<Loose> = Vec::with_capacity(loose.len());
    for row in &loose {
        let scalars = rows::scalars(row.try_get(5).map_err(Failure::Db)?)?;
        rows.push((
            row.try_get(0).map_err(Failure::Db)?,
            row.try_get(1).map_err(Failure::Db)?,
            row.try_get(2).map_err(Failure::Db)?,
            row.try_get(3).map_err(Failure::Db)?,
            row.try_get(4).map_err(Failure::Db)?,
            scalars.point(),
        ));
    }
    drop(loose);
    rows.sort_unstable_by(|a, b| (a.0, &a.1, &a.2, &a.3).cmp(&(b.0, &b.1, &b.2, &b.3)));
    let mut loose = rows.into_iter().peekable();
    let packed = tx
        .query_raw(
            "SELECT p.bucket, p.location, p.body FROM points p
             JOIN packed k ON k.span = p.span AND k.location = p.location
             WHERE p.span = $1 AND p.bucket >= $2 AND p.bucket < k.before
             ORDER BY p.bucket, p.location",
            [&span as &(dyn ToSql + Sync), &since],
        )
        .await
        .map_err(Failure::Db)?;
    let mut packed = std::pin::pin!(packed);
    // One bucket's packed rows (location and rows), handed over once the next begins.
    let mut bucket: Option<i64> = None;
    let mut held: Vec<(String, Packed)> = Vec::new();
    while let Some(row) = packed.try_next().await.map_err(Failure::Db)? {
        let at: i64 = row.try_get(0).map_err(Failure::Db)?;
        if bucket.is_some_and(|b| b != at) {
            hand_over(bucket, &mut held, &mut loose, each);
        }
        bucket = Some(at);
        let body: &[u8] = row.try_get(2).map_err(Failure::Db)?;
        let rows: Packed = rmp_serde::from_slice(body)
            .map_err(|err| Failure::Corrupt(format!("packed points do not decode: {err}")))?;
        held.push((row.try_get(1).map_err(Failure::Db)?, rows));
    }
    hand_over(bucket, &mut held, &mut loose, each);
    loose.for_each(|row| hand_loose(row, each));
    Ok(())
}

/// Hands `each` a row read from `rollups`.
fn hand_loose((bucket, target, probe, location, version, point): Loose, each: &mut EachPoint<'_>) {
    let head = RollupHead {
        bucket,
        target: &target,
        probe: &probe,
        location: &location,
        version,
    };
    each(head, point);
}

/// Hands `each` the rows of the buckets before `bucket` in `loose`, then `bucket`'s: its
/// `held` packed rows and its rows in `loose`, in the rollups' order; empties `held`.
fn hand_over(
    bucket: Option<i64>,
    held: &mut Vec<(String, Packed)>,
    loose: &mut std::iter::Peekable<std::vec::IntoIter<Loose>>,
    each: &mut EachPoint<'_>,
) {
    let Some(bucket) = bucket else {
        return;
    };
    let mut rows: Vec<(&str, &str, &str, i64, &PointScalars)> = Vec::new();
    let mut mine = Vec::new();
    while let Some(row) = loose.next_if(|row| row.0 <= bucket) {
        if row.0 < bucket {
            hand_loose(row, each);
        } else {
            mine.push(row);
        }
    }
    for (location, packed) in held.iter() {
        rows.extend(packed.rows().map(|(target, probe, version, point)| {
            (target, probe, location.as_str(), version, point)
        }));
    }
    rows.extend(
        mine.iter()
            .map(|(_, target, probe, location, version, point)| {
                (
                    target.as_str(),
                    probe.as_str(),
                    location.as_str(),
                    *version,
                    point,
                )
            }),
    );
    rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    for (target, probe, location, version, point) in rows {
        let head = RollupHead {
            bucket,
            target,
            probe,
            location,
            version,
        };
        each(head, point.clone());
    }
    held.clear();
}
