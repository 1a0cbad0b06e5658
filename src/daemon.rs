//! The probing daemon: one scheduling loop per (target, probe), each run admitted by its
//! provider's gate and budget, measured by the runner, and handed to the store's writer.
//!
//! On a store that coordinates a fleet (PostgreSQL), each provider's rate limit is shared
//! with the other probers through leases (`lease`), and a run on a provider with a budget
//! also reserves its worst case in the store, against every location's spend, before it is
//! sent; a prober that cannot reach the store for that sends nothing on a budgeted provider.
//!
//! Stopping: when `shutdown` fires, no new run starts (runs still waiting for admission are
//! dropped unsent), runs in flight get until `grace` to finish, the writer flushes what it
//! was given, and [`run`] returns. A run cut by the grace deadline is not recorded: it has no
//! honest outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::Budgets;
use crate::config::{Config, StoreBackend, Target};
use crate::counters::RunCounters;
use crate::limiter::Gate;
use crate::probe::{Probe, nonce};
use crate::result::Outcome;
use crate::runner::{Runner, RunnerError, Scheduled};
use crate::scheduler::Schedule;
use crate::server::{self, Site};
use crate::store::writer::{RecordSender, Writer};
use crate::store::{self, SharedReservation, Store, StoreError};
use crate::units::{month_of, now_ms};

/// Why the daemon could not start.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The store could not be opened (or is held by another daemon).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP clients could not be built.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// The server's address could not be bound.
    #[error("cannot listen on {addr}: {source} (set another [server] listen)")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// How long past its provider's timeout a run's shared budget reservation counts when its
/// result never arrives: long enough for a writer to get through a store outage.
const RESERVATION_MARGIN: Duration = Duration::from_secs(3600);

/// What every job shares.
struct Shared {
    runner: Runner,
    gates: Arc<HashMap<String, Gate>>,
    budgets: Budgets,
    /// The fleet's shared limits, when the store coordinates several probers.
    fleet: Option<Arc<dyn store::FleetLimits>>,
    /// This prober's location.
    location: String,
    records: RecordSender,
    counters: Arc<RunCounters>,
    shutdown: CancellationToken,
    abort: CancellationToken,
    runs: TaskTracker,
}

/// Runs the daemon until `shutdown` fires; returns its counters once everything it recorded
/// is on disk.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<Arc<RunCounters>, DaemonError> {
    let store = Store::open(&config.store, &config.prober.location)?;
    let store_name = store.describe();
    let spent = store.month_spend(&month_of(now_ms()))?;
    let budgets = Budgets::new(&config, &spent, &month_of(now_ms()));
    let counters = Arc::new(RunCounters::default());
    let (writer, records) = Writer::spawn(store, &config, Arc::clone(&counters))?;
    let fleet = match &config.store.backend {
        StoreBackend::Postgres { .. } => Store::open_read_only(&config.store)?.into_fleet_limits(),
        StoreBackend::Sqlite { .. } => None,
    };
    let gates: Arc<HashMap<String, Gate>> = Arc::new(
        config
            .providers
            .iter()
            .map(|provider| {
                let gate = if fleet.is_some() {
                    Gate::shared(provider)
                } else {
                    Gate::new(provider)
                };
                (provider.name.clone(), gate)
            })
            .collect(),
    );
    let leases = TaskTracker::new();
    if let Some(fleet) = &fleet {
        leases.spawn(crate::lease::renew(
            Arc::clone(fleet),
            Arc::clone(&gates),
            config.prober.location.clone(),
            shutdown.clone(),
        ));
    }
    let shared = Arc::new(Shared {
        runner: Runner::new(&config)?,
        gates,
        budgets,
        fleet,
        location: config.prober.location.clone(),
        records,
        counters: Arc::clone(&counters),
        shutdown: shutdown.clone(),
        abort: CancellationToken::new(),
        runs: TaskTracker::new(),
    });
    let publishing = start_publishing(&config, &shutdown, Arc::clone(&counters)).await?;
    let notifying = TaskTracker::new();
    if !config.alerts.is_empty() {
        notifying.spawn(crate::notify::deliver(
            config.alerts.clone(),
            config.store.clone(),
            config.prober.location.clone(),
            shared.records.clone(),
            crate::notify::process_env(),
            shutdown.clone(),
        ));
    }
    notifying.close();
    let jobs = TaskTracker::new();
    let mut count = 0;
    for target in &config.targets {
        for (name, schedule) in &target.schedules {
            let Some(probe) = config.probes.get(name) else {
                continue;
            };
            count += 1;
            jobs.spawn(job(
                Arc::clone(&shared),
                target.clone(),
                probe.clone(),
                schedule.clone(),
            ));
        }
    }
    tracing::info!(
        jobs = count,
        targets = config.targets.len(),
        store = %store_name,
        location = %config.prober.location,
        "sonde daemon started"
    );
    shutdown.cancelled().await;
    jobs.close();
    jobs.wait().await;
    shared.runs.close();
    let in_flight = shared.runs.len();
    tracing::info!(in_flight, grace = ?grace, "stopping: waiting for runs in flight");
    if tokio::time::timeout(grace, shared.runs.wait())
        .await
        .is_err()
    {
        shared.abort.cancel();
        shared.runs.wait().await;
    }
    // The notifier holds a sender too: it stops with `shutdown`. The last sender goes with
    // `shared`; the writer then flushes (deliveries included) and stops.
    notifying.wait().await;
    drop(shared);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap_or_default();
    publishing.close();
    publishing.wait().await;
    leases.close();
    leases.wait().await;
    let counts = &counters.daemon;
    tracing::info!(
        runs = counts.runs.load(Ordering::Relaxed),
        skipped_overlap = counts.skipped_overlap.load(Ordering::Relaxed),
        skipped_budget = counts.skipped_budget.load(Ordering::Relaxed),
        rate_limit_pauses = counts.rate_limit_pauses.load(Ordering::Relaxed),
        abandoned = counts.abandoned.load(Ordering::Relaxed),
        writer_waits = counts.writer_waits.load(Ordering::Relaxed),
        lost = counts.lost.load(Ordering::Relaxed),
        "sonde daemon stopped; every recorded run is on disk"
    );
    Ok(counters)
}

/// Starts the publish loop (which syncs the gateways) and the server when the config asks
/// for them; both stop with `shutdown`.
async fn start_publishing(
    config: &Config,
    shutdown: &CancellationToken,
    counters: Arc<RunCounters>,
) -> Result<TaskTracker, DaemonError> {
    let tasks = TaskTracker::new();
    if config.publish.out.is_none() && config.server.listen.is_none() && config.sync.is_empty() {
        return Ok(tasks);
    }
    let site = Site::counting(Arc::new(config.clone()), counters);
    if let Some(addr) = config.server.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(url = %format!("http://{local}/"), "serving the status page");
        let (site, stop) = (Arc::clone(&site), shutdown.clone());
        tasks.spawn(async move {
            if let Err(err) = server::serve(listener, site, stop).await {
                tracing::error!(error = %err, "the server stopped");
            }
        });
    }
    tasks.spawn(server::publish_loop(site, shutdown.clone()));
    Ok(tasks)
}

/// One (target, probe): sleeps to each fire time and starts a run unless the last one is
/// still going.
async fn job(shared: Arc<Shared>, target: Target, probe: Probe, schedule: Schedule) {
    let key = format!("{}#{}", target.id, probe.name);
    let busy = Arc::new(AtomicBool::new(false));
    let target = Arc::new(target);
    let probe = Arc::new(probe);
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now, &key) else {
            tracing::warn!(job = %key, "the schedule has no future fire time; the job ends");
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + wait;
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep_until(deadline) => {}
        }
        if busy.swap(true, Ordering::AcqRel) {
            shared
                .counters
                .daemon
                .skipped_overlap
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(job = %key, "skipped: the previous run is still going");
            continue;
        }
        let scheduled = Scheduled {
            at: deadline.into_std(),
            wall: SystemTime::from(next),
        };
        shared.runs.spawn(one_run(
            Arc::clone(&shared),
            Arc::clone(&target),
            Arc::clone(&probe),
            scheduled,
            Arc::clone(&busy),
        ));
    }
}

/// Budget, admission, the run itself, and the hand-off to the writer.
async fn one_run(
    shared: Arc<Shared>,
    target: Arc<Target>,
    probe: Arc<Probe>,
    scheduled: Scheduled,
    busy: Arc<AtomicBool>,
) {
    let _free = Release(busy);
    let month = month_of(now_ms());
    let run_id = nonce();
    let reserved = match shared.budgets.reserve(&target, &probe, &month) {
        Ok(reservation) => reserve_shared(&shared, &target, &probe, &month, &run_id)
            .await
            .map(|()| reservation),
        Err(reason) => Err(reason),
    };
    let reservation = match reserved {
        Ok(reservation) => reservation,
        Err(reason) => {
            shared
                .counters
                .daemon
                .skipped_budget
                .fetch_add(1, Ordering::Relaxed);
            let record =
                shared
                    .runner
                    .not_sent(&target, &probe, scheduled, Outcome::SkippedBudget, reason);
            shared.records.send(record).await;
            return;
        }
    };
    let Some(gate) = shared.gates.get(&target.provider.name) else {
        return;
    };
    let admitted = tokio::select! {
        () = shared.shutdown.cancelled() => None,
        admission = gate.admit() => Some(admission),
    };
    let Some(_admission) = admitted else {
        shared
            .counters
            .daemon
            .abandoned
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    let record = tokio::select! {
        () = shared.abort.cancelled() => None,
        record = shared.runner.run_as(&target, &probe, scheduled, run_id) => Some(record),
    };
    let Some(record) = record else {
        shared
            .counters
            .daemon
            .abandoned
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    if let Some(pause) = gate.learn(&record) {
        shared
            .counters
            .daemon
            .rate_limit_pauses
            .fetch_add(1, Ordering::Relaxed);
        let why = match (record.outcome, record.http_status) {
            (Outcome::RateLimited, Some(status)) => format!("rate limited (HTTP {status})"),
            (Outcome::RateLimited, None) => "rate limited".to_owned(),
            (_, Some(status)) => format!("unavailable (HTTP {status}) and asked to retry later"),
            (_, None) => "unavailable and asked to retry later".to_owned(),
        };
        // Routine for free tiers and handled here; the page shows the rate-limited share.
        tracing::info!(
            provider = %target.provider.name,
            pause = ?pause,
            "{why}: pausing every probe on this provider"
        );
    }
    reservation.settle(&record);
    shared.counters.daemon.runs.fetch_add(1, Ordering::Relaxed);
    shared.records.send(record).await;
}

/// Reserves the run's worst case against its provider's budget across the fleet, when the
/// store coordinates one and the provider has a budget; the reservation ends when the run's
/// result is stored (or, for a prober killed mid-run, when it expires).
async fn reserve_shared(
    shared: &Shared,
    target: &Target,
    probe: &Probe,
    month: &str,
    run_id: &str,
) -> Result<(), String> {
    let cap = target.provider.budget;
    let Some(fleet) = shared
        .fleet
        .as_ref()
        .filter(|_| cap.monthly_usd.is_some() || cap.monthly_tokens.is_some())
    else {
        return Ok(());
    };
    let (usd, tokens) = crate::budget::worst_case(target, probe);
    let expires_ms = now_ms()
        + i64::try_from((target.provider.timeout + RESERVATION_MARGIN).as_millis())
            .unwrap_or(i64::MAX / 2);
    let (fleet, provider, month, location, run_id) = (
        Arc::clone(fleet),
        target.provider.name.clone(),
        month.to_owned(),
        shared.location.clone(),
        run_id.to_owned(),
    );
    let reserved = tokio::task::spawn_blocking(move || {
        fleet.reserve(&SharedReservation {
            run_id: &run_id,
            provider: &provider,
            month: &month,
            location: &location,
            usd,
            tokens,
            cap,
            expires_ms,
        })
    })
    .await
    .map_err(|err| err.to_string())
    .and_then(|checked| checked.map_err(|err| err.to_string()));
    reserved.unwrap_or_else(|err| {
        Err(format!(
            "not sent: the fleet's shared budget could not be checked ({err})"
        ))
    })
}

/// Marks a job free when its run ends, however it ends.
struct Release(Arc<AtomicBool>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
