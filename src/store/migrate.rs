//! `sonde store migrate`: copies one store into another (a SQLite file into PostgreSQL, or
//! back), every table whole, losing nothing. Results and rollups go in pages of [`PAGE`], each
//! page one transaction, so a large store never sits in memory; the copy is idempotent
//! (results keyed by `run_id`, rollups, spend and states replaced under their keys, incidents
//! by target, location and start, heartbeats by location), so an interrupted copy is finished by running it again.

use crate::aggregate::rollup::Span;
use crate::store::{Copied, Store, StoreError};

/// Results copied per transaction.
pub const PAGE: usize = 5_000;

/// Rows read from the source, per table (what the destination was given; rows it already
/// held are kept once).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Raw results.
    pub results: u64,
    /// Hourly and daily rollups.
    pub rollups: u64,
    /// Provider × month spend rows.
    pub spend: u64,
    /// Target states.
    pub states: u64,
    /// Incidents.
    pub incidents: u64,
    /// Locations (their heartbeats).
    pub locations: u64,
}

/// Gives an empty `location` (a row written before stores had locations) `unlocated`.
fn give_place<T>(location: &mut T, unlocated: &str)
where
    T: std::ops::Deref<Target = str> + for<'a> From<&'a str>,
{
    if location.is_empty() {
        *location = T::from(unlocated);
    }
}

/// Copies every row of `from` into `to`, giving rows written before stores had locations to
/// `unlocated`, then packs `to`'s closed buckets (`Backend::pack`); `progress` hears the
/// results copied so far.
pub fn copy(
    from: &Store,
    to: &mut Store,
    unlocated: &str,
    mut progress: impl FnMut(u64),
) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    let mut after: Option<(i64, String)> = None;
    loop {
        let mut page = from.results_after(
            after.as_ref().map(|(ts, run_id)| (*ts, run_id.as_str())),
            PAGE,
        )?;
        page.iter_mut()
            .for_each(|(record, _)| give_place(&mut record.location, unlocated));
        let Some((last, ts_ms)) = page.last() else {
            break;
        };
        after = Some((*ts_ms, last.run_id.clone()));
        counts.results += page.len() as u64;
        to.copy(&Copied {
            results: page,
            ..Copied::default()
        })?;
        progress(counts.results);
    }
    for span in [Span::Hour, Span::Day] {
        let mut after: Option<(i64, String, String, String)> = None;
        loop {
            let mut page = from.rollups_after(
                span,
                after.as_ref().map(|(bucket, target, probe, location)| {
                    (*bucket, target.as_str(), probe.as_str(), location.as_str())
                }),
                PAGE,
            )?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some((
                last.bucket,
                last.target.clone(),
                last.probe.clone(),
                last.location.clone(),
            ));
            counts.rollups += page.len() as u64;
            page.iter_mut()
                .for_each(|row| give_place(&mut row.location, unlocated));
            to.copy(&Copied {
                rollups: page,
                ..Copied::default()
            })?;
        }
    }
    let mut health: Vec<_> = from.health()?.into_iter().collect();
    health
        .iter_mut()
        .for_each(|(at, _)| give_place(&mut at.location, unlocated));
    health.sort_by(|a, b| a.0.cmp(&b.0));
    let mut incidents = from.incidents(i64::MIN)?;
    incidents
        .iter_mut()
        .for_each(|incident| give_place(&mut incident.location, unlocated));
    let mut spend = from.spend()?;
    spend
        .iter_mut()
        .for_each(|row| give_place(&mut row.location, unlocated));
    // Oldest first, so that incident ids keep their order in the destination.
    incidents.reverse();
    let rest = Copied {
        results: Vec::new(),
        rollups: Vec::new(),
        spend,
        health,
        incidents,
        heartbeats: from.heartbeats()?,
    };
    counts.spend = rest.spend.len() as u64;
    counts.states = rest.health.len() as u64;
    counts.incidents = rest.incidents.len() as u64;
    counts.locations = rest.heartbeats.len() as u64;
    to.copy(&rest)?;
    to.pack(crate::units::now_ms())?;
    Ok(counts)
}
