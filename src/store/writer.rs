//! The store's single writer: a thread that takes finished runs from a channel, batches them
//! (up to 500, or what arrived within 100 ms), folds them into rollups, spend and target
//! states, writes each batch in one transaction, and only then logs each run as `recorded`.
//!
//! Each batch carries the prober's heartbeat (its location, the time, its shortest schedule),
//! and an idle writer writes one alone every shortest schedule (at most every 10 s), so the
//! fleet knows a silent location from a quiet one.
//!
//! A thread, not a task: store calls block, and keeping them off the runtime keeps them off
//! the measurement path. The queue in front of it is bounded: a writer that falls behind
//! slows the runs that feed it (counted) instead of growing memory.
//!
//! When the store fails (PostgreSQL restarting, a full disk) the writer keeps taking runs
//! into a buffer of at most `[store] buffer` runs and retries with exponential waits (100 ms
//! to 10 s); past the buffer, the oldest unwritten run is dropped, counted and logged with its
//! `run_id`. Nothing in memory (rollups, states) changes until a batch commits, so a retried
//! batch is folded afresh and counts each run once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::aggregate::alerting::{self, Budget};
use crate::aggregate::health::{IncidentKind, TargetHealth};
use crate::aggregate::rollup::Span;
use crate::aggregate::slo::SLOW_BURN;
use crate::aggregate::sparse::SparseRollup;
use crate::config::{Alert, Config, HealthConfig, QualityConfig, Slo, StoreConfig};
use crate::counters::RunCounters;
use crate::result::ResultRecord;
use crate::store::{
    Batch, Heartbeat, Prune, Pruned, RollupRow, Spend, Store, StoreError, TargetAt,
};
use crate::units::{month_of, now_ms};

/// Most runs in one transaction.
const MAX_BATCH: usize = 500;
/// Longest a run waits for its batch to fill.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Attempts at the last runs once the daemon is stopping, before they are reported lost.
const STOPPING_ATTEMPTS: u32 = 5;
/// How often old results and rollups are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs the queue to the writer holds at most: a few minutes of 10,000 targets' runs.
const QUEUE: usize = 10_000;
/// Longest an idle writer goes without writing its heartbeat.
const MAX_HEARTBEAT: Duration = Duration::from_secs(10);

/// What the writer is handed.
#[derive(Debug)]
enum Message {
    /// A finished run.
    Run(Box<ResultRecord>),
    /// Outbox rows a receiver took (id, unix ms): marked sent with the next batch.
    Delivered(Vec<(i64, i64)>),
}

/// Sends finished runs (and notification deliveries) to the writer; dropping every sender
/// lets the writer flush and stop.
#[derive(Debug, Clone)]
pub struct RecordSender {
    queue: SyncSender<Message>,
    /// Where waits on a full queue and lost runs are counted.
    counters: Arc<RunCounters>,
}

impl RecordSender {
    /// Hands `record` to the writer; waits, off the async runtime, while the queue is full.
    /// A record the writer can no longer take is counted and logged as lost.
    pub async fn send(&self, record: ResultRecord) {
        let record = match self.queue.try_send(Message::Run(Box::new(record))) {
            Ok(()) => return,
            Err(TrySendError::Full(record)) => record,
            Err(TrySendError::Disconnected(record)) => return self.lost(&record),
        };
        self.counters
            .daemon
            .writer_waits
            .fetch_add(1, Ordering::Relaxed);
        let queue = self.queue.clone();
        // The record comes back only when it could not be sent.
        let sent = tokio::task::spawn_blocking(move || queue.send(record).err().map(|e| e.0)).await;
        match sent {
            Ok(None) => {}
            Ok(Some(unsent)) => self.lost(&unsent),
            Err(_) => {
                self.counters.daemon.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!("a run was lost: the task handing it to the writer failed");
            }
        }
    }

    /// Tells the writer that a receiver took these outbox rows (id, unix ms). Returns
    /// false when the writer has stopped (the rows stay pending and are sent again later).
    pub async fn delivered(&self, rows: Vec<(i64, i64)>) -> bool {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || queue.send(Message::Delivered(rows)).is_ok())
            .await
            .unwrap_or(false)
    }

    fn lost(&self, message: &Message) {
        let Message::Run(record) = message else {
            return;
        };
        self.counters.daemon.lost.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            run_id = %record.run_id,
            target_id = %record.target,
            "a run was lost: the store's writer has stopped"
        );
    }
}

/// The running writer.
#[derive(Debug)]
pub struct Writer {
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer over `store` for the prober of `config`; returns it and the sender
    /// runs go to.
    pub fn spawn(
        store: Store,
        config: &Config,
        counters: Arc<RunCounters>,
    ) -> Result<(Writer, RecordSender), StoreError> {
        let mut state = State::load(store, config)?;
        state.counters = Arc::clone(&counters);
        let (queue, receiver) = sync_channel::<Message>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("sonde-store".into())
            .spawn(move || state.run(receiver))
            .map_err(StoreError::Thread)?;
        let sender = RecordSender { queue, counters };
        Ok((Writer { thread }, sender))
    }

    /// Waits until every run sent has been written (all senders must be dropped first).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Writes `records` through the same folding as the daemon's writer, synchronously, in
/// batches: for importing results (another prober's, or generated ones for benchmarks).
/// Each location in them gets a heartbeat at its latest run, with `config`'s shortest
/// schedule; a record without a location is `config`'s prober's. Then every location's
/// closed buckets are packed (`Backend::pack`). Returns how many were written.
pub fn import(
    store: Store,
    config: &Config,
    records: impl IntoIterator<Item = ResultRecord>,
) -> Result<u64, StoreError> {
    let mut state = State::load(store, config)?;
    let mut count = 0;
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<ResultRecord> = records
            .by_ref()
            .take(MAX_BATCH)
            .map(|record| state.placed(record))
            .collect();
        count += chunk.len() as u64;
        let (mut batch, budget) = state.fold(&chunk)?;
        for (record, at) in &batch.results {
            match batch
                .heartbeats
                .iter_mut()
                .find(|beat| beat.location == record.location)
            {
                Some(beat) => beat.seen_ms = beat.seen_ms.max(*at),
                None => batch.heartbeats.push(Heartbeat {
                    location: record.location.clone(),
                    seen_ms: *at,
                    shortest_ms: state.shortest_ms,
                    retired_ms: None,
                    silent_ms: None,
                }),
            }
        }
        state.store.write(&batch)?;
        state.alert_budget = budget;
        state.keep(batch);
    }
    // Every location's closed buckets, not only the writer's.
    state.store.pack(crate::units::now_ms())?;
    Ok(count)
}

/// Span, bucket, target, probe, location.
type RollupKey = (Span, i64, String, String, String);

struct State {
    store: Store,
    store_config: StoreConfig,
    health_config: HealthConfig,
    quality_config: QualityConfig,
    /// Who is told about incidents.
    alerts: Vec<Alert>,
    /// Each target's SLO, for burn rates.
    slos: HashMap<String, Slo>,
    /// Notifications each alert made in the last hour.
    alert_budget: Budget,
    /// Outbox rows delivered, to mark sent with the next batch.
    delivered: Vec<(i64, i64)>,
    /// This prober's location, for its heartbeat.
    location: String,
    /// Its shortest schedule, ms.
    shortest_ms: i64,
    /// The latest and previous bucket of each span per target, probe and location, as
    /// stored: sparse, so a bucket takes the space of the values it saw (a dense histogram
    /// of a few milliseconds' spread takes tens of KiB, and 10,000 targets have 20,000
    /// current buckets).
    rollups: HashMap<RollupKey, SparseRollup>,
    /// The hour whose start last trimmed `rollups`: they are trimmed when a newer hour's
    /// run is kept, not at every batch.
    trimmed_hour: i64,
    /// Every target's state in every location, as stored.
    health: HashMap<TargetAt, TargetHealth>,
    /// Runs received and not yet stored, oldest first: at most `store_config.buffer`.
    pending: VecDeque<ResultRecord>,
    last_prune: Option<Instant>,
    /// The daemon's process-lifetime counters, shared with the senders: runs counted as
    /// they are recorded, and as `lost` when the store was away longer than the buffer
    /// could hold.
    counters: Arc<RunCounters>,
}

impl State {
    fn load(store: Store, config: &Config) -> Result<State, StoreError> {
        let mut health = store.health()?;
        let slos: HashMap<String, Slo> = config
            .targets
            .iter()
            .filter_map(|t| Some((t.id.clone(), t.model.slo.clone()?)))
            .collect();
        // The last hour rebuilds the degraded rule; with SLOs, six hours their burn rates.
        let hour_ago = now_ms() - Span::Hour.ms();
        let since = if slos.is_empty() {
            hour_ago
        } else {
            now_ms() - SLOW_BURN.0
        };
        for (record, at) in store.results_since(since, None)? {
            let state = health
                .entry(TargetAt::new(&record.target, &record.location))
                .or_default();
            if at >= hour_ago {
                state.remember(crate::aggregate::health::verdict(&record), at);
            }
            if let Some(slo) = slos.get(&record.target) {
                state.burn.add(&record, at, slo);
            }
        }
        Ok(State {
            store,
            store_config: config.store.clone(),
            health_config: config.health,
            quality_config: config.quality.clone(),
            alerts: config.alerts.clone(),
            slos,
            alert_budget: Budget::default(),
            delivered: Vec::new(),
            location: config.prober.location.clone(),
            shortest_ms: i64::try_from(config.shortest_schedule().as_millis()).unwrap_or(i64::MAX),
            rollups: HashMap::new(),
            trimmed_hour: i64::MIN,
            health,
            pending: VecDeque::new(),
            last_prune: None,
            counters: Arc::default(),
        })
    }

    fn run(mut self, receiver: Receiver<Message>) {
        let mut closed = false;
        let mut retry = Retry::default();
        let heartbeat_every =
            Duration::from_millis(self.shortest_ms.max(1000) as u64).min(MAX_HEARTBEAT);
        let mut last_write = Instant::now();
        loop {
            if self.pending.is_empty() {
                if closed {
                    return;
                }
                let idle = heartbeat_every.saturating_sub(last_write.elapsed());
                match receiver.recv_timeout(idle) {
                    Ok(message) => self.take(message),
                    Err(RecvTimeoutError::Timeout) => {
                        let beat = self.beat(Batch::default());
                        match self.store.write(&beat) {
                            Ok(()) => self.delivered.drain(..beat.delivered.len()).for_each(drop),
                            Err(err) => {
                                tracing::warn!(error = %err, "writing the heartbeat failed")
                            }
                        }
                        last_write = Instant::now();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // Gather what arrives within the batch's wait (or, after a failure, the retry's).
            let until = Instant::now() + retry.wait().unwrap_or(MAX_WAIT);
            while !closed && (retry.failing() || self.pending.len() < MAX_BATCH) {
                match receiver.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(message) => self.take(message),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => closed = true,
                }
            }
            match self.write_pending() {
                Ok(()) => {
                    retry.succeeded();
                    last_write = Instant::now();
                }
                Err(err) => {
                    retry.failed();
                    tracing::error!(
                        error = %err,
                        attempt = retry.attempts,
                        held = self.pending.len(),
                        buffer = self.store_config.buffer,
                        "writing to the store failed; holding the runs and retrying"
                    );
                    if closed && retry.attempts >= STOPPING_ATTEMPTS {
                        for record in self.pending.drain(..) {
                            self.counters.daemon.lost.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(run_id = %record.run_id, target_id = %record.target, "a run was lost: the store could not be written while stopping");
                        }
                        return;
                    }
                }
            }
            self.prune_if_due();
        }
    }

    /// `record`, as this prober's when it carries no location.
    fn placed(&self, mut record: ResultRecord) -> ResultRecord {
        if record.location.is_empty() {
            record.location.clone_from(&self.location);
        }
        record
    }

    /// Takes one message: a run to hold, or deliveries to mark with the next batch.
    fn take(&mut self, message: Message) {
        match message {
            Message::Run(record) => self.hold(*record),
            Message::Delivered(rows) => self.delivered.extend(rows),
        }
    }

    /// Holds `record` until it is written; past the buffer, the oldest held run is dropped.
    fn hold(&mut self, record: ResultRecord) {
        let record = self.placed(record);
        self.pending.push_back(record);
        while self.pending.len() > self.store_config.buffer as usize {
            if let Some(oldest) = self.pending.pop_front() {
                self.counters.daemon.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    run_id = %oldest.run_id,
                    target_id = %oldest.target,
                    buffer = self.store_config.buffer,
                    "a run was lost: the store has been unreachable for longer than [store] buffer runs"
                );
            }
        }
    }

    /// Writes the oldest held runs (up to a batch); they leave the buffer only once stored.
    fn write_pending(&mut self) -> Result<(), StoreError> {
        let take = self.pending.len().min(MAX_BATCH);
        let records: Vec<ResultRecord> = self.pending.drain(..take).collect();
        let folded = self.fold(&records).and_then(|(batch, budget)| {
            let batch = self.beat(batch);
            self.store.write(&batch)?;
            Ok((batch, budget))
        });
        let batch = match folded {
            Ok((batch, budget)) => {
                self.alert_budget = budget;
                self.delivered.drain(..batch.delivered.len()).for_each(drop);
                batch
            }
            Err(err) => {
                for record in records.into_iter().rev() {
                    self.pending.push_front(record);
                }
                return Err(err);
            }
        };
        let batch = self.keep(batch);
        self.announce(&batch);
        Ok(())
    }

    /// `batch` with this prober's heartbeat, now, and the deliveries to mark.
    fn beat(&self, mut batch: Batch) -> Batch {
        batch.delivered.clone_from(&self.delivered);
        batch.heartbeats.push(Heartbeat {
            location: self.location.clone(),
            seen_ms: now_ms(),
            shortest_ms: self.shortest_ms,
            retired_ms: None,
            silent_ms: Some(0),
        });
        batch
    }

    /// After a commit: keeps the stored rollups and states in memory; returns the batch's
    /// results and transitions.
    fn keep(&mut self, mut batch: Batch) -> Batch {
        for row in std::mem::take(&mut batch.rollups) {
            self.rollups.insert(
                (row.span, row.bucket, row.target, row.probe, row.location),
                row.rollup,
            );
        }
        for (at, health) in std::mem::take(&mut batch.health) {
            self.health.insert(at, health);
        }
        if let Some(latest) = batch.results.iter().map(|(_, at)| *at).max()
            && Span::Hour.bucket_of(latest) > self.trimmed_hour
        {
            // Keep only the latest and previous bucket of each span in memory (a day's
            // buckets change only at an hour's start too).
            self.trimmed_hour = Span::Hour.bucket_of(latest);
            self.rollups
                .retain(|(span, bucket, _, _, _), _| *bucket >= span.bucket_of(latest) - span.ms());
        }
        batch
    }

    /// Counts and logs each recorded run, and each state change.
    fn announce(&self, batch: &Batch) {
        for (record, _) in &batch.results {
            self.counters.count(record);
            tracing::info!(
                run_id = %record.run_id,
                target_id = %record.target,
                probe = %record.probe,
                outcome = %record.outcome,
                ttft_ms = record.ttft_ms,
                "recorded"
            );
        }
        // Going down or drifting is what an operator must hear about; every other change is
        // routine.
        macro_rules! state_changed {
            ($level:ident, $transition:expr) => {
                tracing::$level!(
                    target_id = %$transition.target,
                    kind = $transition.kind.as_str(),
                    from = $transition.from.as_str(),
                    to = $transition.to.as_str(),
                    cause = %$transition.cause,
                    "state changed"
                )
            };
        }
        for transition in &batch.transitions {
            let alarming = transition.to == crate::aggregate::health::State::Down
                || (transition.kind == IncidentKind::Quality && transition.to.is_bad());
            if alarming {
                state_changed!(warn, transition);
            } else {
                state_changed!(info, transition);
            }
        }
    }

    /// The batch that stores `records`: their rollups merged with what is stored, the spend
    /// they add, the states they lead to, the notifications those make (with the alerts'
    /// hourly budget after them). Nothing in memory changes until it is written (see
    /// [`State::keep`]), so a batch that fails is folded afresh on the next attempt.
    fn fold(&self, records: &[ResultRecord]) -> Result<(Batch, Budget), StoreError> {
        let mut batch = Batch::default();
        let mut budget = self.alert_budget.clone();
        // The batch's rollups and states in order of first touch, each found by its key (a
        // batch of 500 runs touches up to 1,000 rollups).
        let mut rollups: Vec<(RollupKey, SparseRollup)> = Vec::new();
        let mut rollup_at: HashMap<RollupKey, usize> = HashMap::new();
        let mut health: Vec<(TargetAt, TargetHealth)> = Vec::new();
        let mut health_at: HashMap<TargetAt, usize> = HashMap::new();
        for record in records {
            let at = record.ts.ms();
            let here = TargetAt::new(&record.target, &record.location);
            for span in [Span::Hour, Span::Day] {
                let key = (
                    span,
                    span.bucket_of(at),
                    record.target.clone(),
                    record.probe.clone(),
                    record.location.clone(),
                );
                let index = match rollup_at.get(&key) {
                    Some(&index) => index,
                    None => {
                        let base = match self.rollups.get(&key) {
                            Some(rollup) => rollup.clone(),
                            None => self
                                .store
                                .rollup(span, key.1, &here, &key.3)?
                                .unwrap_or_default(),
                        };
                        rollup_at.insert(key.clone(), rollups.len());
                        rollups.push((key, base));
                        rollups.len() - 1
                    }
                };
                rollups[index].1.add_run(record, at);
            }
            let tokens = u64::from(record.input_tokens.unwrap_or(0))
                + u64::from(record.output_tokens.unwrap_or(0));
            if record.cost_usd.is_some() || tokens > 0 {
                let month = month_of(at);
                let usd = record.cost_usd.unwrap_or(0.0);
                match batch.spend.iter_mut().find(|row| {
                    row.provider == record.provider
                        && row.month == month
                        && row.location == record.location
                }) {
                    Some(row) => {
                        row.usd += usd;
                        row.tokens += tokens;
                    }
                    None => batch.spend.push(Spend {
                        provider: record.provider.clone(),
                        month,
                        location: record.location.clone(),
                        usd,
                        tokens,
                    }),
                }
            }
            let index = match health_at.get(&here) {
                Some(&index) => index,
                None => {
                    let stored = self.health.get(&here).cloned().unwrap_or_default();
                    health_at.insert(here.clone(), health.len());
                    health.push((here, stored));
                    health.len() - 1
                }
            };
            let state = &mut health[index].1;
            batch.transitions.extend(
                state
                    .observe(&record.target, record, at, &self.health_config)
                    .into_iter()
                    .chain(state.observe_quality(record, at, &self.quality_config)),
            );
            let slo = self.slos.get(&record.target);
            if let Some(slo) = slo {
                state.burn.add(record, at, slo);
            }
            batch.notifications.extend(alerting::evaluate(
                &self.alerts,
                state,
                record,
                at,
                slo,
                &mut budget,
            ));
            batch.results.push((record.clone(), at));
        }
        batch.rollups = rollups
            .into_iter()
            .map(
                |((span, bucket, target, probe, location), rollup)| RollupRow {
                    span,
                    bucket,
                    target,
                    probe,
                    location,
                    rollup,
                },
            )
            .collect();
        batch.health = health;
        Ok((batch, budget))
    }

    fn prune_if_due(&mut self) {
        if self
            .last_prune
            .is_some_and(|last| last.elapsed() < PRUNE_EVERY)
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        match self.store.prune(&Prune::at(&self.store_config, now_ms())) {
            Ok(pruned) if pruned != Pruned::default() => {
                let Pruned {
                    results,
                    rollups,
                    incidents,
                } = pruned;
                tracing::info!(results, rollups, incidents, "pruned past retention");
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "pruning the store failed"),
        }
    }
}

/// The writer's retries while the store fails: exponential waits from 100 ms to 10 s.
#[derive(Default)]
struct Retry {
    /// Failed attempts in a row.
    attempts: u32,
    delays: Option<backon::ExponentialBackoff>,
}

impl Retry {
    /// Whether the last attempt failed.
    fn failing(&self) -> bool {
        self.attempts > 0
    }

    /// The wait before the next attempt, when the last one failed.
    fn wait(&mut self) -> Option<Duration> {
        if !self.failing() {
            return None;
        }
        let delays = self.delays.get_or_insert_with(|| {
            backon::BackoffBuilder::build(
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(10))
                    .without_max_times(),
            )
        });
        delays.next()
    }

    fn failed(&mut self) {
        self.attempts += 1;
    }

    fn succeeded(&mut self) {
        if self.attempts > 0 {
            tracing::info!(attempts = self.attempts, "the store is written again");
        }
        self.attempts = 0;
        self.delays = None;
    }
}
