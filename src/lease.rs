//! A fleet prober's share of each provider's rate limit: every [`LEASE_RENEW`] it renews its
//! lease on each provider in the shared store and sets the provider's gate to its share (the
//! limit divided among the live holders, see `limiter`). A lease the others have not yet
//! made room for, or one that could not be renewed for longer than the others wait before
//! they forget it, holds the gate: this prober then sends nothing on that provider, so the
//! probers together never exceed the limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::limiter::Gate;
use crate::store::{FleetLimits, LEASE_RENEW, LEASE_SEEN, LEASE_TTL};

/// Longest a prober keeps sending at its share on a lease it could not renew (the database
/// away): the others forget the lease [`LEASE_TTL`] after its last renewal and take its part
/// only a window of the limit later, so it stops a renewal before that.
fn trusted_for(window: Duration) -> Duration {
    (LEASE_TTL + window).saturating_sub(LEASE_RENEW)
}

/// Renews `location`'s leases on every provider of `gates` until `shutdown`, setting each
/// gate's share; then releases them.
pub async fn renew(
    shared: Arc<dyn FleetLimits>,
    gates: Arc<HashMap<String, Gate>>,
    location: String,
    shutdown: CancellationToken,
) {
    let mut renewed: HashMap<String, Instant> = HashMap::new();
    let mut announced: HashMap<String, (u32, u32, bool)> = HashMap::new();
    loop {
        for provider in gates.keys() {
            let Some(gate) = gates.get(provider) else {
                continue;
            };
            let window = gate.window();
            // Still sending within the lease: it keeps its age if it lapsed meanwhile.
            let held = renewed
                .get(provider)
                .is_some_and(|at| at.elapsed() < trusted_for(window));
            let (store, name, here) = (Arc::clone(&shared), provider.clone(), location.clone());
            let leased =
                tokio::task::spawn_blocking(move || store.lease_rate(&name, &here, window, held))
                    .await
                    .map_err(|err| err.to_string())
                    .and_then(|leased| leased.map_err(|err| err.to_string()));
            match leased {
                Ok(share) => {
                    renewed.insert(provider.clone(), Instant::now());
                    let requests = gate.share(share.holders, share.rank, share.active);
                    let now = (share.holders, requests, share.active);
                    if announced.insert(provider.clone(), now) == Some(now) {
                        continue;
                    }
                    // A newcomer says why it sends nothing, so that a prober quiet for a
                    // minute after it starts is not taken for a broken one.
                    let waits = (!share.active).then_some(LEASE_SEEN + window);
                    tracing::info!(
                        provider = %provider,
                        probers = share.holders,
                        requests,
                        window = ?window,
                        sending = share.active,
                        waits_at_most = ?waits,
                        "shared rate limit: this prober's share changed{}",
                        if share.active {
                            ""
                        } else {
                            "; as a newcomer it sends once what the others sent at their larger \
                             shares has left the window"
                        }
                    );
                }
                Err(reason) => {
                    let trusted = renewed
                        .get(provider)
                        .is_some_and(|at| at.elapsed() < trusted_for(window));
                    if !trusted {
                        gate.hold();
                        announced.remove(provider);
                    }
                    tracing::warn!(
                        provider = %provider,
                        error = %reason,
                        sending = trusted,
                        "renewing the shared rate lease failed"
                    );
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(LEASE_RENEW) => {}
        }
    }
    // The daemon admits nothing once stopping, so the leases can go.
    for provider in gates.keys() {
        let (store, name, here) = (Arc::clone(&shared), provider.clone(), location.clone());
        let released = tokio::task::spawn_blocking(move || store.release_rate(&name, &here)).await;
        if let Ok(Err(err)) = released {
            tracing::warn!(provider = %provider, error = %err, "releasing the shared rate lease failed; it expires on its own");
        }
    }
}
