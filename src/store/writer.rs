//! The store's single writer: a thread that takes finished runs from a channel, batches them
//! (up to 500, or what arrived within 100 ms), folds them into rollups, spend and target
//! states, writes each batch in one transaction, and only then logs each run as `recorded`.
//!
//! A thread, not a task: SQLite calls block, and keeping them off the runtime keeps them off
//! the measurement path. A batch that fails to write is kept and retried, never dropped. The
//! queue in front of it is bounded: a writer that falls behind slows the runs that feed it
//! (counted) instead of growing memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::aggregate::health::TargetHealth;
use crate::aggregate::rollup::Rollup;
use crate::aggregate::rollup::Span;
use crate::config::{HealthConfig, StoreConfig};
use crate::counters::RunCounters;
use crate::result::ResultRecord;
use crate::store::{Batch, RollupRow, Store, StoreError};
use crate::units::{month_of, now_ms};

/// Most runs in one transaction.
const MAX_BATCH: usize = 500;
/// Longest a run waits for its batch to fill.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often old results and rollups are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs the queue to the writer holds at most: a few minutes of 10,000 targets' runs.
const QUEUE: usize = 10_000;

/// Sends finished runs to the writer; dropping every sender lets the writer flush and stop.
#[derive(Debug, Clone)]
pub struct RecordSender {
    queue: SyncSender<ResultRecord>,
    counts: Arc<SendCounts>,
}

/// What sending cost: waits on a full queue, and runs lost because the writer had stopped.
#[derive(Debug, Default)]
pub struct SendCounts {
    /// Sends that found the queue full and waited for room.
    pub waited: AtomicU64,
    /// Runs not recorded because the writer had stopped.
    pub dropped: AtomicU64,
}

impl RecordSender {
    /// Hands `record` to the writer; waits, off the async runtime, while the queue is full.
    /// A record the writer can no longer take is counted and logged as lost.
    pub async fn send(&self, record: ResultRecord) {
        let record = match self.queue.try_send(record) {
            Ok(()) => return,
            Err(TrySendError::Full(record)) => record,
            Err(TrySendError::Disconnected(record)) => return self.lost(&record),
        };
        self.counts.waited.fetch_add(1, Ordering::Relaxed);
        let queue = self.queue.clone();
        // The record comes back only when it could not be sent.
        let sent = tokio::task::spawn_blocking(move || queue.send(record).err().map(|e| e.0)).await;
        match sent {
            Ok(None) => {}
            Ok(Some(unsent)) => self.lost(&unsent),
            Err(_) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!("a run was lost: the task handing it to the writer failed");
            }
        }
    }

    fn lost(&self, record: &ResultRecord) {
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            run_id = %record.run_id,
            target_id = %record.target,
            "a run was lost: the store's writer has stopped"
        );
    }

    /// The counts of every clone of this sender.
    pub fn counts(&self) -> Arc<SendCounts> {
        Arc::clone(&self.counts)
    }
}

/// The running writer.
#[derive(Debug)]
pub struct Writer {
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer over `store`; returns it and the sender runs go to.
    pub fn spawn(
        store: Store,
        store_config: StoreConfig,
        health: HealthConfig,
        counters: Arc<RunCounters>,
    ) -> Result<(Writer, RecordSender), StoreError> {
        let mut state = State::load(store, store_config, health)?;
        state.counters = Some(counters);
        let (queue, receiver) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("sonde-store".into())
            .spawn(move || state.run(receiver))
            .map_err(StoreError::Thread)?;
        let sender = RecordSender {
            queue,
            counts: Arc::default(),
        };
        Ok((Writer { thread }, sender))
    }

    /// Waits until every run sent has been written (all senders must be dropped first).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Writes `records` through the same folding as the daemon's writer, synchronously, in
/// batches: for importing results (another prober's, or generated ones for benchmarks).
/// Returns how many were written.
pub fn import(
    store: Store,
    store_config: StoreConfig,
    health: HealthConfig,
    records: impl IntoIterator<Item = ResultRecord>,
) -> Result<u64, StoreError> {
    let mut state = State::load(store, store_config, health)?;
    let mut count = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    for record in records {
        batch.push(record);
        if batch.len() == MAX_BATCH {
            count += batch.len() as u64;
            let folded = state.fold(std::mem::take(&mut batch));
            state.store.write(&folded)?;
        }
    }
    count += batch.len() as u64;
    let folded = state.fold(batch);
    state.store.write(&folded)?;
    Ok(count)
}

type RollupKey = (Span, i64, String, String);

struct State {
    store: Store,
    store_config: StoreConfig,
    health_config: HealthConfig,
    rollups: HashMap<RollupKey, Rollup>,
    health: HashMap<String, TargetHealth>,
    last_prune: Option<Instant>,
    /// The daemon's process-lifetime counters, counted as runs are recorded.
    counters: Option<Arc<RunCounters>>,
}

impl State {
    fn load(
        store: Store,
        store_config: StoreConfig,
        health_config: HealthConfig,
    ) -> Result<State, StoreError> {
        let mut health = store.health()?;
        let hour_ago = now_ms() - Span::Hour.ms();
        for (record, at) in store.results_since(hour_ago, None)? {
            health
                .entry(record.target.clone())
                .or_default()
                .remember(crate::aggregate::health::verdict(&record), at);
        }
        Ok(State {
            store,
            store_config,
            health_config,
            rollups: HashMap::new(),
            health,
            last_prune: None,
            counters: None,
        })
    }

    fn run(mut self, receiver: Receiver<ResultRecord>) {
        loop {
            let Ok(first) = receiver.recv() else {
                return;
            };
            let mut records = vec![first];
            let until = Instant::now() + MAX_WAIT;
            let mut closed = false;
            while records.len() < MAX_BATCH {
                match receiver.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(record) => records.push(record),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.write(records, closed);
            self.prune_if_due();
            if closed {
                return;
            }
        }
    }

    /// Folds `records` into a batch and writes it, retrying until it lands (or, once the
    /// daemon is stopping, a few times before reporting the loss).
    fn write(&mut self, records: Vec<ResultRecord>, stopping: bool) {
        let batch = self.fold(records);
        let mut attempt = 0u32;
        loop {
            match self.store.write(&batch) {
                Ok(()) => break,
                Err(err) => {
                    attempt += 1;
                    if stopping && attempt >= 5 {
                        tracing::error!(error = %err, runs = batch.results.len(), "could not record runs while stopping; they are lost");
                        return;
                    }
                    tracing::error!(error = %err, attempt, "writing to the store failed; retrying in 1s");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        for (record, _) in &batch.results {
            if let Some(counters) = &self.counters {
                counters.count(record);
            }
            tracing::info!(
                run_id = %record.run_id,
                target_id = %record.target,
                probe = %record.probe,
                outcome = %record.outcome,
                ttft_ms = record.ttft_ms,
                "recorded"
            );
        }
        // Going down is what an operator must hear about; every other change is routine.
        macro_rules! state_changed {
            ($level:ident, $transition:expr) => {
                tracing::$level!(
                    target_id = %$transition.target,
                    from = $transition.from.as_str(),
                    to = $transition.to.as_str(),
                    cause = %$transition.cause,
                    "state changed"
                )
            };
        }
        for transition in &batch.transitions {
            if transition.to == crate::aggregate::health::State::Down {
                state_changed!(warn, transition);
            } else {
                state_changed!(info, transition);
            }
        }
    }

    fn fold(&mut self, records: Vec<ResultRecord>) -> Batch {
        let mut batch = Batch::default();
        let mut touched: Vec<RollupKey> = Vec::new();
        let mut health_touched: Vec<String> = Vec::new();
        let mut latest = i64::MIN;
        for record in records {
            let at = record.ts.ms();
            latest = latest.max(at);
            for span in [Span::Hour, Span::Day] {
                let key = (
                    span,
                    span.bucket_of(at),
                    record.target.clone(),
                    record.probe.clone(),
                );
                if !self.rollups.contains_key(&key) {
                    let stored = match self.store.rollup(span, key.1, &key.2, &key.3) {
                        Ok(stored) => stored.unwrap_or_default(),
                        Err(err) => {
                            tracing::error!(error = %err, "a stored rollup does not read; starting it afresh");
                            Rollup::default()
                        }
                    };
                    self.rollups.insert(key.clone(), stored);
                }
                if let Some(rollup) = self.rollups.get_mut(&key) {
                    rollup.add(&record, at);
                }
                if !touched.contains(&key) {
                    touched.push(key);
                }
            }
            let tokens = u64::from(record.input_tokens.unwrap_or(0))
                + u64::from(record.output_tokens.unwrap_or(0));
            if record.cost_usd.is_some() || tokens > 0 {
                batch.spend.push((
                    record.provider.clone(),
                    month_of(at),
                    record.cost_usd.unwrap_or(0.0),
                    tokens,
                ));
            }
            let health = self.health.entry(record.target.clone()).or_default();
            if let Some(transition) =
                health.observe(&record.target, &record, at, &self.health_config)
            {
                batch.transitions.push(transition);
            }
            if !health_touched.contains(&record.target) {
                health_touched.push(record.target.clone());
            }
            batch.results.push((record, at));
        }
        for key in touched {
            if let Some(rollup) = self.rollups.get(&key) {
                batch.rollups.push(RollupRow {
                    span: key.0,
                    bucket: key.1,
                    target: key.2.clone(),
                    probe: key.3.clone(),
                    rollup: rollup.clone(),
                });
            }
        }
        for target in health_touched {
            if let Some(health) = self.health.get(&target) {
                batch.health.push((target, health.clone()));
            }
        }
        // Keep only the latest and previous bucket of each span in memory.
        self.rollups
            .retain(|(span, bucket, _, _), _| *bucket >= span.bucket_of(latest) - span.ms());
        batch
    }

    fn prune_if_due(&mut self) {
        if self
            .last_prune
            .is_some_and(|last| last.elapsed() < PRUNE_EVERY)
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let day = Span::Day.ms();
        let now = now_ms();
        let results_before = now - i64::from(self.store_config.retention_days) * day;
        let rollups_before = now - i64::from(self.store_config.rollup_retention_days) * day;
        match self.store.prune(results_before, rollups_before) {
            Ok((results, rollups)) if results + rollups > 0 => {
                tracing::info!(results, rollups, "pruned past retention");
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "pruning the store failed"),
        }
    }
}
