//! What probers sharing one PostgreSQL store share: the publisher lock (one daemon of the
//! fleet writes the published site), the checkpoint lock (one daemon saves the publisher's
//! checkpoint, whether or not it writes the site), each provider's request rate (leases,
//! re-divided as probers come and go) and its monthly budget (reservations, checked against
//! every location's spend in one transaction). Times are the database's clock, so probers' clocks
//! need not agree.

use std::time::Duration;

use tokio_postgres::{Client, Transaction};

use super::{Failure, NOW_MS, Postgres};
use crate::result::ResultRecord;
use crate::store::{
    FleetLimits, LEASE_SEEN, LEASE_TTL, RateShare, SharedReservation, StoreError, lease_kept_for,
};

/// The publisher's advisory lock: one publishing daemon per store.
pub(super) const PUBLISHER_LOCK: i64 = 0x736f_6e64_655f_7075; // "sonde_pu"
/// The checkpoint's advisory lock: one daemon per store saves the publisher's checkpoint.
pub(super) const CHECKPOINT_LOCK: i64 = 0x736f_6e64_655f_636b; // "sonde_ck"
/// The class of the budget's advisory transaction locks (with the provider's hash).
const BUDGET_LOCK: i32 = 0x6275_6467; // "budg"

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A session kept for an advisory lock, holding it or trying for it again at each call: a
/// daemon standing by opens no new connection per try (two a publish would fill a server
/// logging its connections).
pub(super) struct LockSession {
    /// The session.
    client: Client,
    /// Whether it holds the lock.
    holds: bool,
}

/// Tries for the advisory lock `key` on `client`'s session.
async fn try_lock(client: &Client, key: i64) -> Result<bool, tokio_postgres::Error> {
    client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .and_then(|row| row.try_get(0))
}

impl Postgres {
    /// Takes the advisory lock `key` on a session of its own, kept in `session`, or says
    /// it is still held: a holding session is checked with a query each time, so a lock
    /// lost with its connection is noticed, and taken again only if no other daemon took
    /// it meanwhile; a session that does not hold it tries again, and a dead one is
    /// replaced.
    pub(super) fn hold_lock(
        &self,
        session: &std::sync::Mutex<Option<LockSession>>,
        key: i64,
    ) -> Result<bool, StoreError> {
        let mut kept = session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let runtime = self.runtime()?;
        let _context = runtime.enter();
        if let Some(kept_session) = kept.as_mut() {
            let client = &kept_session.client;
            let answer = if kept_session.holds {
                futures_executor::block_on(client.simple_query("SELECT 1")).map(|_| true)
            } else {
                futures_executor::block_on(try_lock(client, key))
            };
            match answer {
                Ok(holds) => {
                    kept_session.holds = holds;
                    return Ok(holds);
                }
                Err(_) => *kept = None,
            }
        }
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let opened = futures_executor::block_on(async move {
            let (client, connection) = config.connect(tls).await.map_err(Failure::Db)?;
            tokio::spawn(connection);
            let holds = try_lock(&client, key).await.map_err(Failure::Db)?;
            Ok(LockSession { client, holds })
        })
        .map_err(|failure| self.error(failure))?;
        let holds = opened.holds;
        *kept = Some(opened);
        Ok(holds)
    }
}

impl FleetLimits for Postgres {
    fn lease_rate(
        &self,
        provider: &str,
        location: &str,
        window: Duration,
        held: bool,
    ) -> Result<RateShare, StoreError> {
        let (ttl, activation) = (ms(LEASE_TTL), ms(LEASE_SEEN + window));
        let recent = ms(LEASE_TTL + window);
        let kept = ms(lease_kept_for(window));
        self.call(async |pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            // A lease starts again unless its prober held it throughout and the others
            // cannot have grown into it yet. A process that did not hold it starts again
            // even when it has not lapsed (its location's daemon restarted after a crash):
            // it cannot know when the one before it last sent.
            client
                .execute(
                    &format!(
                        "INSERT INTO rate_leases (provider, location, since_ms, renewed_ms)
                         SELECT $1, $2, now.ms, now.ms FROM (SELECT {NOW_MS} AS ms) now
                         ON CONFLICT (provider, location) DO UPDATE SET
                            since_ms = CASE WHEN NOT $4
                                    OR rate_leases.renewed_ms < excluded.renewed_ms - $3
                                THEN excluded.since_ms ELSE rate_leases.since_ms END,
                            renewed_ms = excluded.renewed_ms"
                    ),
                    &[&provider, &location, &kept, &held],
                )
                .await
                .map_err(Failure::Db)?;
            let row = client
                .query_one(
                    &format!(
                        "SELECT COUNT(*) FILTER (WHERE renewed_ms >= now.ms - $3),
                                COUNT(*) FILTER (WHERE renewed_ms >= now.ms - $3
                                                 AND location < $2),
                                BOOL_OR(location = $2 AND since_ms <= now.ms - $4),
                                COUNT(*) FILTER (WHERE location <> $2
                                                 AND renewed_ms >= now.ms - $5)
                         FROM rate_leases, (SELECT {NOW_MS} AS ms) now WHERE provider = $1"
                    ),
                    &[&provider, &location, &ttl, &activation, &recent],
                )
                .await
                .map_err(Failure::Db)?;
            let count = |i| -> Result<u32, Failure> {
                let n: i64 = row.try_get(i).map_err(Failure::Db)?;
                Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
            };
            let seen: Option<bool> = row.try_get(2).map_err(Failure::Db)?;
            Ok(RateShare {
                holders: count(0)?.max(1),
                rank: count(1)?,
                active: seen.unwrap_or(false) || count(3)? == 0,
            })
        })
    }

    fn release_rate(&self, provider: &str, location: &str) -> Result<(), StoreError> {
        // Not deleted: dated just past the lease's life, it stops counting as a holder at
        // once and still counts as recent for a window, which is what keeps a newcomer out.
        let lapsed = ms(LEASE_TTL) + 1;
        self.call(async |pool| {
            let client = pool.get().await.map_err(Failure::pool)?;
            client
                .execute(
                    &format!(
                        "UPDATE rate_leases SET renewed_ms = LEAST(renewed_ms, {NOW_MS} - $3)
                         WHERE provider = $1 AND location = $2"
                    ),
                    &[&provider, &location, &lapsed],
                )
                .await
                .map_err(Failure::Db)?;
            Ok(())
        })
    }

    fn reserve(&self, r: &SharedReservation<'_>) -> Result<Result<(), String>, StoreError> {
        self.call(async |pool| {
            let mut client = pool.get().await.map_err(Failure::pool)?;
            let tx = client.transaction().await.map_err(Failure::Db)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&BUDGET_LOCK, &r.provider],
            )
            .await
            .map_err(Failure::Db)?;
            // One statement, one snapshot: a writer committing a run's spend and deleting its
            // reservation in between cannot make the run count zero times.
            let row = tx
                .query_one(
                    &format!(
                        "SELECT
                            (SELECT COALESCE(SUM(usd), 0) FROM spend
                             WHERE provider = $1 AND month = $2),
                            (SELECT COALESCE(SUM(tokens), 0)::bigint FROM spend
                             WHERE provider = $1 AND month = $2),
                            (SELECT COALESCE(SUM(usd), 0) FROM budget_reservations
                             WHERE provider = $1 AND month = $2 AND expires_ms > {NOW_MS}),
                            (SELECT COALESCE(SUM(tokens), 0)::bigint FROM budget_reservations
                             WHERE provider = $1 AND month = $2 AND expires_ms > {NOW_MS})"
                    ),
                    &[&r.provider, &r.month],
                )
                .await
                .map_err(Failure::Db)?;
            let get_f = |i| row.try_get::<_, f64>(i).map_err(Failure::Db);
            let get_i = |i| row.try_get::<_, i64>(i).map_err(Failure::Db);
            let (spent_usd, spent_tokens) = (get_f(0)?, get_i(1)?.max(0) as u64);
            let (held_usd, held_tokens) = (get_f(2)?, get_i(3)?.max(0) as u64);
            if let Some(cap) = r.cap.monthly_usd
                && spent_usd + held_usd + r.usd > cap
            {
                return Ok(Err(format!(
                    "not sent: {} has spent ${spent_usd:.4} of its ${cap} monthly budget in {} \
                     across the fleet (${held_usd:.4} more in flight), and this run could cost \
                     up to ${:.4}",
                    r.provider, r.month, r.usd
                )));
            }
            if let Some(cap) = r.cap.monthly_tokens
                && spent_tokens + held_tokens + r.tokens > cap
            {
                return Ok(Err(format!(
                    "not sent: {} has spent {spent_tokens} of its {cap} monthly tokens in {} \
                     across the fleet ({held_tokens} more in flight), and this run could use \
                     up to {}",
                    r.provider, r.month, r.tokens
                )));
            }
            tx.execute(
                "INSERT INTO budget_reservations
                    (run_id, provider, month, location, usd, tokens, expires_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id) DO NOTHING",
                &[
                    &r.run_id,
                    &r.provider,
                    &r.month,
                    &r.location,
                    &r.usd,
                    &i64::try_from(r.tokens).unwrap_or(i64::MAX),
                    &r.expires_ms,
                ],
            )
            .await
            .map_err(Failure::Db)?;
            tx.commit().await.map_err(Failure::Db)?;
            Ok(Ok(()))
        })
    }
}

/// In the transaction that stores `results` (and adds their spend): their reservations end,
/// so a run's cost counts once, as a reservation before and as spend after.
pub(super) async fn settle(
    tx: &Transaction<'_>,
    results: &[(ResultRecord, i64)],
) -> Result<(), Failure> {
    if results.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = results
        .iter()
        .map(|(record, _)| record.run_id.as_str())
        .collect();
    tx.execute(
        "DELETE FROM budget_reservations WHERE run_id = ANY($1)",
        &[&ids],
    )
    .await
    .map_err(Failure::Db)?;
    Ok(())
}
