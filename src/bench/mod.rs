//! `sonde bench`: drives one target × probe with a load model, and hands every run's record
//! to the caller as it finishes.
//!
//! Two load models. **Closed loop**: `concurrency` workers, each sending its next request when
//! the previous one ends — the load of a fixed pool of users; a slow answer delays the requests
//! behind it, so the tail is understated (coordinated omission; [`report`] says by how much).
//! **Open loop**: requests are sent at the times an [`arrivals::Process`] draws, whatever the
//! server does, and each run's [`Scheduled`] time is its *intended* send time, so a late send
//! counts as latency (`queue_lag_ms`) instead of vanishing. At most `max_in_flight` runs are
//! in flight; past that, sends wait and the wait is measured the same way.
//!
//! Memory: records are not kept here. They stream to the caller, which writes and folds them
//! ([`figures::Tally`]), so a bench of a million requests holds a few histograms, not a
//! million records.

pub mod arrivals;
pub mod figures;
pub mod gate;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::config::Target;
use crate::probe::Probe;
use crate::result::ResultRecord;
use crate::runner::{Runner, Scheduled};
use crate::timer::Timer;
use arrivals::Process;

/// How requests are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Fixed workers, each sending when its previous request ended.
    Closed {
        /// Workers.
        concurrency: usize,
    },
    /// Sends at drawn times, regardless of answers.
    Open(Process),
}

/// What a bench of one target × probe runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The load model.
    pub load: Load,
    /// Requests to send; with `duration`, whichever ends first.
    pub requests: Option<u64>,
    /// How long to send for.
    pub duration: Option<Duration>,
    /// Open loop: runs in flight at most.
    pub max_in_flight: usize,
    /// Seed of the arrival process.
    pub seed: u64,
}

impl Plan {
    /// A short description for reports: "open loop, Poisson at 50 req/s, 400 requests".
    pub fn describe(&self) -> String {
        let model = match self.load {
            Load::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            Load::Open(Process {
                rate,
                burstiness: 1.0,
            }) => {
                format!("open loop, Poisson arrivals at {rate} req/s")
            }
            Load::Open(Process { rate, burstiness }) => {
                format!("open loop, Gamma arrivals at {rate} req/s, burstiness {burstiness}")
            }
        };
        let mut bounds = Vec::new();
        if let Some(requests) = self.requests {
            bounds.push(format!("{requests} requests"));
        }
        if let Some(duration) = self.duration {
            bounds.push(format!("at most {}", humantime::format_duration(duration)));
        }
        format!("{model}, {}", bounds.join(", "))
    }
}

/// A short lead before the first send, so that it is not already late when the loop starts.
const LEAD: Duration = Duration::from_millis(5);

/// Runs `plan` against `target` with `probe`, calling `each` with every record as its run
/// ends (in completion order). Returns when every run has ended, with the time from the
/// start of sending to the last record.
pub async fn run(
    runner: Arc<Runner>,
    target: &Target,
    probe: &Probe,
    plan: Plan,
    mut each: impl FnMut(ResultRecord),
) -> Duration {
    let (sender, mut receiver) = mpsc::channel(1024);
    let target = Arc::new(target.clone());
    let probe = Arc::new(probe.clone());
    let origin = Instant::now() + LEAD;
    let dispatch = tokio::spawn(async move {
        Timer::default().until(origin).await;
        match plan.load {
            Load::Closed { concurrency } => {
                closed(runner, target, probe, plan, concurrency, sender).await;
            }
            Load::Open(process) => {
                open(runner, target, probe, plan, process, origin, sender).await;
            }
        }
    });
    let mut last = origin;
    while let Some(record) = receiver.recv().await {
        last = Instant::now();
        each(record);
    }
    // The dispatcher ends before its sender is dropped; a panic in it is a bug to surface.
    if let Err(err) = dispatch.await
        && err.is_panic()
    {
        std::panic::resume_unwind(err.into_panic());
    }
    last.saturating_duration_since(origin)
}

async fn closed(
    runner: Arc<Runner>,
    target: Arc<Target>,
    probe: Arc<Probe>,
    plan: Plan,
    concurrency: usize,
    sender: mpsc::Sender<ResultRecord>,
) {
    let issued = Arc::new(AtomicU64::new(0));
    let end = plan.duration.map(|d| Instant::now() + d);
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (runner, target, probe) = (runner.clone(), target.clone(), probe.clone());
        let (issued, sender) = (issued.clone(), sender.clone());
        workers.spawn(async move {
            loop {
                if end.is_some_and(|end| Instant::now() >= end) {
                    break;
                }
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if plan.requests.is_some_and(|limit| n >= limit) {
                    break;
                }
                let record = runner.run(&target, &probe, Scheduled::now()).await;
                if sender.send(record).await.is_err() {
                    break;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

async fn open(
    runner: Arc<Runner>,
    target: Arc<Target>,
    probe: Arc<Probe>,
    plan: Plan,
    process: Process,
    start: Instant,
    sender: mpsc::Sender<ResultRecord>,
) {
    let slots = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let wall = SystemTime::now() + start.saturating_duration_since(Instant::now());
    let mut timer = Timer::default();
    for offset in process.offsets(plan.requests, plan.duration, plan.seed) {
        let intended = Scheduled {
            at: start + offset,
            wall: wall + offset,
        };
        timer.until(intended.at).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (runner, target, probe) = (runner.clone(), target.clone(), probe.clone());
        let sender = sender.clone();
        // Each run holds a sender: the caller's receiver ends when the last run has sent.
        tokio::spawn(async move {
            let record = runner.run(&target, &probe, intended).await;
            drop(slot);
            let _ = sender.send(record).await;
        });
    }
}
