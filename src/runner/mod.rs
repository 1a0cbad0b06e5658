//! Executes runs: one probe against one target, from request to result record.
//!
//! The hot path. A run takes its time marks as bytes arrive (see [`body`]), decodes events
//! through its provider's adapter as they complete, and never buffers a stream before timing
//! it. Every way a run can fail ends in a classified [`ResultRecord`] before the provider's
//! `timeout`: the deadline covers connection, headers and body alike, the stall timeout and
//! the body cap are enforced on bytes.
//!
//! Time marks: `started` is when the run begins (connection setup, if any, starts here);
//! `t0` is just before the request is written — after a new connection is set up, or
//! `started` on a pooled connection. Queue lag runs from the scheduled time to `started`, so
//! connection setup is neither lag nor latency: it is `connect_ms`.
//!
//! The rooms, along a run: [`attempt`] sends the request and routes the response,
//! [`body`] stamps bytes as they arrive, [`read`] turns them into events, [`verdict`] decides
//! the outcome, [`record`] assembles the result record; [`transport`] is the HTTP client.

mod attempt;
pub mod body;
pub mod read;
mod record;
pub mod transport;
mod verdict;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::{Config, Target};
use crate::measurement::Recorder;
use crate::probe::{Probe, ProbeKind, nonce};
use crate::provider::{self, Call};
use crate::redact::Secret;
use crate::result::{Outcome, ResultRecord};
use attempt::Attempt;
pub use read::{ReadResult, read_sse};
pub use record::same_model;

/// When a run was meant to start.
#[derive(Debug, Clone, Copy)]
pub struct Scheduled {
    /// On the monotonic clock, for queue lag.
    pub at: Instant,
    /// On the wall clock, for the record's `ts`.
    pub wall: SystemTime,
}

impl Scheduled {
    /// Now, on both clocks.
    pub fn now() -> Scheduled {
        Scheduled {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// A runner could not be set up.
#[derive(Debug, Error)]
pub enum RunnerError {
    /// reqwest refused the client configuration.
    #[error("cannot build the HTTP client for provider {provider}: {source}")]
    Client {
        /// The provider.
        provider: String,
        /// reqwest's reason.
        source: reqwest::Error,
    },
}

/// What a provider's credential turned out to be.
#[derive(Debug)]
enum Key {
    /// The provider needs none.
    NotNeeded,
    /// Read from the environment.
    Present(Secret),
    /// The config names a variable that is not set.
    Missing(String),
}

#[derive(Debug)]
struct ProviderHttp {
    http: reqwest::Client,
    key: Key,
}

/// Runs probes against the targets of one config: one HTTP client (and connection pool) per
/// provider, keys read once from the environment.
#[derive(Debug)]
pub struct Runner {
    providers: HashMap<String, ProviderHttp>,
    /// This prober's location, stamped on every record.
    location: String,
}

impl Runner {
    /// Builds the clients of every provider in `config`.
    pub fn new(config: &Config) -> Result<Runner, RunnerError> {
        let mut providers = HashMap::new();
        for provider in &config.providers {
            let http = transport::client(provider).map_err(|source| RunnerError::Client {
                provider: provider.name.clone(),
                source,
            })?;
            let key = match &provider.api_key_env {
                None => Key::NotNeeded,
                Some(var) => {
                    Secret::from_env(var).map_or_else(|| Key::Missing(var.clone()), Key::Present)
                }
            };
            providers.insert(provider.name.clone(), ProviderHttp { http, key });
        }
        Ok(Runner {
            providers,
            location: config.prober.location.clone(),
        })
    }

    /// Runs `probe` once against `target`. Never fails: every failure is a record.
    pub async fn run(&self, target: &Target, probe: &Probe, scheduled: Scheduled) -> ResultRecord {
        self.run_as(target, probe, scheduled, nonce()).await
    }

    /// [`Runner::run`] with the run's id (its nonce) chosen by the caller, who reserved
    /// budget under it.
    pub async fn run_as(
        &self,
        target: &Target,
        probe: &Probe,
        scheduled: Scheduled,
        run_id: String,
    ) -> ResultRecord {
        let mut record = self.attempt(target, probe, scheduled, &run_id).await;
        record.location.clone_from(&self.location);
        record
    }

    /// [`not_sent`]'s record, stamped with this prober's location.
    pub fn not_sent(
        &self,
        target: &Target,
        probe: &Probe,
        scheduled: Scheduled,
        outcome: Outcome,
        message: String,
    ) -> ResultRecord {
        let mut record = not_sent(target, probe, scheduled, outcome, message);
        record.location.clone_from(&self.location);
        record
    }

    async fn attempt(
        &self,
        target: &Target,
        probe: &Probe,
        scheduled: Scheduled,
        run_id: &str,
    ) -> ResultRecord {
        let started = Instant::now();
        let Some(http) = self.providers.get(&target.provider.name) else {
            let attempt = Attempt::new(target, probe, scheduled, started, run_id, None, 0);
            return attempt.failed(
                Recorder::new(started),
                Outcome::ClientError,
                format!(
                    "provider {} is not in this runner's config",
                    target.provider.name
                ),
            );
        };
        let key = match &http.key {
            Key::NotNeeded => None,
            Key::Present(secret) => Some(secret),
            Key::Missing(var) => {
                let attempt = Attempt::new(target, probe, scheduled, started, run_id, None, 0);
                return attempt.failed(
                    Recorder::new(started),
                    Outcome::Auth,
                    format!("environment variable {var} is not set: export the provider's API key in it (not sent)"),
                );
            }
        };
        let prompt = probe.prompt(run_id);
        let prompt_chars = prompt
            .messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        let call = Call {
            base_url: &target.provider.base_url,
            model: &target.model.id,
            messages: &prompt.messages,
            max_tokens: probe
                .max_tokens
                .saturating_add(target.model.reasoning_budget),
            max_tokens_field: target.model.max_tokens_field,
            temperature: probe.temperature,
            stream: probe.stream,
            extra_body: &target.model.extra_body,
            key,
            tools: &prompt.tools,
            force_tool: prompt.force_tool,
            json_mode: probe.json_mode,
        };
        let mut attempt =
            Attempt::new(target, probe, scheduled, started, run_id, key, prompt_chars);
        attempt.item = prompt.item.as_ref();
        let adapter = provider::adapter(target.provider.kind);
        let request = match probe.kind {
            ProbeKind::Chat | ProbeKind::Quality => adapter.request(&http.http, &call),
            ProbeKind::Models => adapter.models_request(&http.http, &target.provider.base_url, key),
        };
        let request = match request {
            Ok(request) => request,
            Err(err) => return attempt.failed(Recorder::new(started), Outcome::Auth, err.0),
        };
        let record = attempt.execute(adapter, request).await;
        tracing::debug!(
            target_id = %record.target,
            probe = %record.probe,
            outcome = %record.outcome,
            ttft_ms = ?record.ttft_ms,
            "run finished"
        );
        record
    }
}

/// The record of a run that was not sent (`skipped_budget`): no timings, `message` as its
/// error, no location (see [`Runner::not_sent`]).
pub fn not_sent(
    target: &Target,
    probe: &Probe,
    scheduled: Scheduled,
    outcome: Outcome,
    message: String,
) -> ResultRecord {
    let started = Instant::now();
    let run_id = nonce();
    Attempt::new(target, probe, scheduled, started, &run_id, None, 0).failed(
        Recorder::new(started),
        outcome,
        message,
    )
}

/// Runs every (target, probe) pair once, at most `concurrency` at a time, all scheduled for
/// now. Results come back in the order of `jobs`.
pub async fn run_round(
    runner: Arc<Runner>,
    jobs: Vec<(Target, Probe)>,
    concurrency: usize,
) -> Vec<ResultRecord> {
    let scheduled = Scheduled::now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, (target, probe)) in jobs.into_iter().enumerate() {
        let runner = Arc::clone(&runner);
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (index, runner.run(&target, &probe, scheduled).await)
        });
    }
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, record)| record).collect()
}
