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

pub mod body;
pub mod transport;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use sse_stream::SseByteStream;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::capability::{self, Evidence};
use crate::config::{Config, Target};
use crate::measurement::{
    Measured, Recorder, estimate_tokens, finish_is_token_limit, tokens_per_second,
};
use crate::probe::{Answer, Probe, ProbeKind, nonce};
use crate::provider::{self, Adapter, Call, GatewayRoute, RateLimits};
use crate::redact::Secret;
use crate::result::{Outcome, ResultRecord, us_to_ms};
use crate::sanitize::provider_text;
use body::{ArrivalClock, BodyError, TimedBody};
use transport::ConnectSlot;

/// An error body is read only this far: enough for the provider's message.
const ERROR_BODY_CAP: u64 = 64 * 1024;

/// How long to wait for the end of a body after its terminal event.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

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
        Ok(Runner { providers })
    }

    /// Runs `probe` once against `target`. Never fails: every failure is a record.
    pub async fn run(&self, target: &Target, probe: &Probe, scheduled: Scheduled) -> ResultRecord {
        let started = Instant::now();
        let run_id = nonce();
        let Some(http) = self.providers.get(&target.provider.name) else {
            let attempt = Attempt::new(target, probe, scheduled, started, &run_id, None, 0);
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
                let attempt = Attempt::new(target, probe, scheduled, started, &run_id, None, 0);
                return attempt.failed(
                    Recorder::new(started),
                    Outcome::Auth,
                    format!("environment variable {var} is not set: export the provider's API key in it (not sent)"),
                );
            }
        };
        let messages = probe.render(&run_id);
        let prompt_chars = messages.iter().map(|m| m.content.chars().count()).sum();
        let call = Call {
            base_url: &target.provider.base_url,
            model: &target.model.id,
            messages: &messages,
            max_tokens: probe
                .max_tokens
                .saturating_add(target.model.reasoning_budget),
            max_tokens_field: target.model.max_tokens_field,
            temperature: probe.temperature,
            stream: probe.stream,
            extra_body: &target.model.extra_body,
            key,
            tool: probe.tool.as_ref(),
            json_mode: probe.json_mode,
        };
        let attempt = Attempt::new(
            target,
            probe,
            scheduled,
            started,
            &run_id,
            key,
            prompt_chars,
        );
        let adapter = provider::adapter(target.provider.kind);
        let request = match probe.kind {
            ProbeKind::Chat => adapter.request(&http.http, &call),
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
/// error.
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

/// One run in progress: what the record needs beyond the measurements.
struct Attempt<'a> {
    target: &'a Target,
    probe: &'a Probe,
    scheduled: Scheduled,
    started: Instant,
    run_id: &'a str,
    deadline: Instant,
    key: Option<&'a Secret>,
    prompt_chars: usize,
    connect_us: Option<u64>,
    http_status: Option<u16>,
    retry_after_s: Option<f64>,
    rate_limits: RateLimits,
    gateway: GatewayRoute,
    /// The answer came as an event stream.
    sse: bool,
}

impl<'a> Attempt<'a> {
    fn new(
        target: &'a Target,
        probe: &'a Probe,
        scheduled: Scheduled,
        started: Instant,
        run_id: &'a str,
        key: Option<&'a Secret>,
        prompt_chars: usize,
    ) -> Self {
        Attempt {
            target,
            probe,
            scheduled,
            started,
            run_id,
            deadline: started + target.provider.timeout,
            key,
            prompt_chars,
            connect_us: None,
            http_status: None,
            retry_after_s: None,
            rate_limits: RateLimits::default(),
            gateway: GatewayRoute::default(),
            sse: false,
        }
    }

    async fn execute(
        mut self,
        adapter: &dyn Adapter,
        request: reqwest::RequestBuilder,
    ) -> ResultRecord {
        let provider = &self.target.provider;
        let slot = Arc::new(ConnectSlot::default());
        let sent = slot
            .scope(tokio::time::timeout_at(
                self.deadline.into(),
                request.send(),
            ))
            .await;
        let headers_at = Instant::now();
        let t0 = match slot.get().filter(|(_, end)| *end <= headers_at) {
            Some((start, end)) => {
                self.connect_us = Some(micros(end.saturating_duration_since(start)));
                end
            }
            None => self.started,
        };
        let mut recorder = Recorder::new(t0);
        let response = match sent {
            Err(_) => {
                let message = format!(
                    "no response headers within {} (timeout){}",
                    humantime::format_duration(provider.timeout),
                    if self.connect_us.is_some() {
                        ""
                    } else {
                        "; no connection was made"
                    }
                );
                return self.failed(recorder, Outcome::Timeout, message);
            }
            Ok(Err(err)) => {
                let outcome = transport::classify(&err);
                return self.failed(recorder, outcome, transport::describe(&err));
            }
            Ok(Ok(response)) => response,
        };
        recorder.headers(headers_at);
        let status = response.status().as_u16();
        self.http_status = Some(status);
        self.retry_after_s = retry_after(response.headers());
        self.rate_limits = RateLimits::from_headers(response.headers());
        self.gateway = GatewayRoute::from_headers(response.headers());
        let clock = ArrivalClock::new(t0);
        if response.status().is_redirection() {
            let measured = recorder.finish(self.probe.stream, None);
            let message = transport::redirect_refusal(&response);
            return self.record(measured, Outcome::ClientError, Some(message));
        }
        if !response.status().is_success() {
            let cap = ERROR_BODY_CAP.min(provider.max_body_bytes);
            let body = TimedBody::new(
                response.bytes_stream(),
                Arc::clone(&clock),
                cap,
                provider.stall_timeout,
            );
            let (bytes, _) = collect(body, self.deadline).await;
            let failure = adapter.decode_error(status, &bytes);
            let measured = recorder.finish(self.probe.stream, Some(clock.latest()));
            return self.record(measured, failure.outcome, Some(failure.message));
        }
        if self.probe.kind == ProbeKind::Models {
            let body = TimedBody::new(
                response.bytes_stream(),
                Arc::clone(&clock),
                provider.max_body_bytes,
                provider.stall_timeout,
            );
            let (bytes, failure) = collect(body, self.deadline).await;
            let measured = recorder.finish(false, Some(clock.latest()));
            let (outcome, error) = match failure {
                Some((outcome, message)) => (outcome, Some(message)),
                None => judge_model_list(adapter.decode_models(&bytes), &self.target.model.id),
            };
            return self.record(measured, outcome, error);
        }
        let as_sse = self.probe.stream && !is_json(response.headers());
        self.sse = as_sse;
        let body = TimedBody::new(
            response.bytes_stream(),
            Arc::clone(&clock),
            provider.max_body_bytes,
            provider.stall_timeout,
        );
        let read = if as_sse {
            read_sse(body, &clock, adapter, &mut recorder, self.deadline).await
        } else {
            read_whole(body, &clock, adapter, &mut recorder, self.deadline).await
        };
        let measured = recorder.finish(self.probe.stream, Some(clock.latest()));
        let (outcome, error) = judge(read, &measured, self.probe);
        self.record(measured, outcome, error)
    }

    /// A record for a run that ended before any measurement worth keeping.
    fn failed(self, recorder: Recorder, outcome: Outcome, error: String) -> ResultRecord {
        let measured = recorder.finish(self.probe.stream, None);
        self.record(measured, outcome, Some(error))
    }

    fn record(self, measured: Measured, outcome: Outcome, error: Option<String>) -> ResultRecord {
        let model = &self.target.model;
        let reported = measured.usage.output_tokens.is_some();
        let (input_tokens, output_tokens, tokens_estimated) = if reported {
            (
                measured.usage.input_tokens,
                measured.usage.output_tokens,
                false,
            )
        } else if measured.chunks > 0 {
            (
                Some(
                    measured
                        .usage
                        .input_tokens
                        .unwrap_or_else(|| estimate_tokens(self.prompt_chars)),
                ),
                Some(estimate_tokens(measured.content_chars)),
                true,
            )
        } else {
            (measured.usage.input_tokens, None, false)
        };
        let tokens_per_s = match (
            measured.streamed,
            output_tokens,
            measured.ttft_us,
            measured.e2e_us,
        ) {
            (true, Some(tokens), Some(ttft), Some(e2e)) => {
                tokens_per_second(tokens, ttft, e2e).map(round3)
            }
            _ => None,
        };
        let cost_usd = cost(
            model.input_price,
            model.output_price,
            input_tokens,
            output_tokens,
        );
        let gateway_alias = self.gateway.alias.is_some()
            && measured.served_model.as_deref() == self.gateway.alias.as_deref();
        let model_substituted = !gateway_alias
            && measured
                .served_model
                .as_deref()
                .is_some_and(|served| !same_model(&model.id, served));
        let ms = |us: Option<u64>| us.map(us_to_ms);
        let flags = capability::observe(
            &self.probe.capabilities,
            Evidence {
                outcome,
                streamed: measured.streamed,
                sse: self.sse,
                usage_reported: reported,
            },
        );
        ResultRecord {
            ts: humantime::format_rfc3339_millis(self.scheduled.wall).to_string(),
            target: self.target.id.clone(),
            provider: self.target.provider.name.clone(),
            model: model.id.clone(),
            group: model.group.clone(),
            probe: self.probe.name.clone(),
            outcome,
            http_status: self.http_status,
            queue_lag_ms: us_to_ms(micros(
                self.started.saturating_duration_since(self.scheduled.at),
            )),
            ttfb_ms: ms(measured.ttfb_us),
            ttft_ms: ms(measured.ttft_us),
            ttfat_ms: ms(measured.ttfat_us),
            e2e_ms: ms(measured.e2e_us),
            itl_p50_ms: ms(measured.itl_p50_us),
            itl_max_ms: ms(measured.itl_max_us),
            input_tokens,
            output_tokens,
            reasoning_tokens: measured.usage.reasoning_tokens,
            tokens_estimated,
            tokens_per_s,
            chunks: measured.chunks,
            streamed: measured.streamed,
            served_model: measured
                .served_model
                .map(|served| provider_text(self.key, &served)),
            cost_usd,
            retry_after_s: self.retry_after_s,
            error: error.map(|text| provider_text(self.key, &text)),
            connect_ms: ms(self.connect_us),
            close_ms: ms(measured.close_us),
            finish_reason: measured
                .finish_reason
                .map(|reason| provider_text(self.key, &reason)),
            ratelimit_remaining_requests: self.rate_limits.remaining_requests,
            ratelimit_remaining_tokens: self.rate_limits.remaining_tokens,
            model_substituted,
            upstream: measured
                .upstream
                .or(self.gateway.model)
                .map(|upstream| provider_text(self.key, &upstream)),
            cap_streaming: flags.streaming,
            cap_usage_in_stream: flags.usage_in_stream,
            cap_tools: flags.tools,
            cap_json: flags.json,
            run_id: self.run_id.to_owned(),
            gateway_alias,
            itl_gaps_us: measured.gaps_us,
        }
    }
}

/// How reading a body ended: at its end, or with a classified failure and its description.
pub type ReadResult = Result<(), (Outcome, String)>;

/// Reads an SSE body event by event, each stamped with the arrival of its last chunk, until
/// the terminal event, an error event, the end of the body or `deadline`. The measurement
/// hot path: `benches/measurement.rs` drives it with recorded streams.
pub async fn read_sse<S, E>(
    body: TimedBody<S>,
    clock: &ArrivalClock,
    adapter: &dyn Adapter,
    recorder: &mut Recorder,
    deadline: Instant,
) -> ReadResult
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut events = SseByteStream::new(body);
    loop {
        let next = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .map_err(|_| {
                (
                    Outcome::Timeout,
                    "the run's deadline passed mid-stream (timeout)".to_owned(),
                )
            })?;
        match next {
            None => return Ok(()),
            Some(Ok(event)) => {
                let at = clock.latest();
                adapter
                    .decode_event(&event, &mut |decoded| recorder.event(at, decoded))
                    .map_err(|err| (Outcome::Malformed, err.0))?;
                if recorder.is_finished() {
                    drain(&mut events, deadline).await;
                    return Ok(());
                }
            }
            Some(Err(sse_stream::Error::Body(source))) => {
                return Err(match source.downcast::<BodyError>() {
                    Ok(body_error) => body_failure(*body_error),
                    Err(other) => (Outcome::Truncated, other.to_string()),
                });
            }
            Some(Err(other)) => {
                return Err((
                    Outcome::Malformed,
                    format!("not a valid SSE stream: {other}"),
                ));
            }
        }
    }
}

/// Reads what follows the terminal event (the chunked-encoding end, usually already in
/// flight) so the connection goes back to the pool instead of being closed. Bounded by
/// [`DRAIN_GRACE`], the deadline and the body cap; whatever it finds is ignored.
async fn drain<S: Stream + Unpin>(events: &mut S, deadline: Instant) {
    let until = deadline.min(Instant::now() + DRAIN_GRACE);
    while let Ok(Some(_)) = tokio::time::timeout_at(until.into(), events.next()).await {}
}

/// Reads a whole JSON body (stamped chunk by chunk as it arrives), then decodes it.
async fn read_whole<S>(
    body: TimedBody<S>,
    clock: &ArrivalClock,
    adapter: &dyn Adapter,
    recorder: &mut Recorder,
    deadline: Instant,
) -> ReadResult
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    let (bytes, failure) = collect(body, deadline).await;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let at = clock.latest();
    adapter
        .decode_body(&bytes, &mut |decoded| recorder.event(at, decoded))
        .map_err(|err| (Outcome::Malformed, err.0))
}

/// Collects a capped body; on failure, what arrived and why it stopped.
async fn collect<S>(
    mut body: TimedBody<S>,
    deadline: Instant,
) -> (Vec<u8>, Option<(Outcome, String)>)
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    let mut bytes = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline.into(), body.next()).await {
            Err(_) => {
                let message = format!(
                    "the run's deadline passed after {} body bytes (timeout)",
                    bytes.len()
                );
                return (bytes, Some((Outcome::Timeout, message)));
            }
            Ok(None) => return (bytes, None),
            Ok(Some(Ok(chunk))) => bytes.extend_from_slice(&chunk),
            Ok(Some(Err(err))) => return (bytes, Some(body_failure(err))),
        }
    }
}

fn body_failure(err: BodyError) -> (Outcome, String) {
    let outcome = match err {
        BodyError::TooLarge { .. } => Outcome::TooLarge,
        BodyError::Stalled { .. } => Outcome::Stalled,
        BodyError::Transport { .. } => Outcome::Truncated,
    };
    (outcome, err.to_string())
}

/// The outcome of a run whose response was a success status.
fn judge(read: ReadResult, measured: &Measured, probe: &Probe) -> (Outcome, Option<String>) {
    if let Some((outcome, message)) = &measured.error {
        return (
            *outcome,
            Some(format!("error inside the response: {message}")),
        );
    }
    if let Err((outcome, message)) = read {
        return (outcome, Some(message));
    }
    if !measured.done {
        let finish = measured
            .finish_reason
            .as_deref()
            .map_or(String::new(), |reason| {
                format!(" (finish_reason {reason} was seen)")
            });
        return (
            Outcome::Truncated,
            Some(format!(
                "the stream ended without its terminal event{finish}"
            )),
        );
    }
    let cut_off = measured
        .finish_reason
        .as_deref()
        .is_some_and(finish_is_token_limit);
    let answer = Answer {
        text: &measured.answer,
        tool_name: measured.tool_name.as_deref(),
        tool_arguments: &measured.tool_arguments,
    };
    let verdict =
        if answer.text.is_empty() && answer.tool_name.is_none() && answer.tool_arguments.is_empty()
        {
            Err("the answer is empty".to_owned())
        } else {
            probe.check(&answer)
        };
    match verdict {
        Ok(()) => (Outcome::Ok, None),
        Err(why) if cut_off => (
            Outcome::CutOff,
            Some(format!(
                "{why}: the token limit ended it (finish_reason {}){}; raise the probe's \
                 max_tokens or the model's reasoning_budget",
                measured.finish_reason.as_deref().unwrap_or_default(),
                measured
                    .usage
                    .reasoning_tokens
                    .map_or(String::new(), |tokens| format!(
                        " after {tokens} reasoning tokens"
                    ))
            )),
        ),
        Err(why) => (Outcome::ContentMismatch, Some(why)),
    }
}

/// The outcome of a model-list run: ok when the target's model is listed.
fn judge_model_list(
    models: Result<Vec<String>, provider::DecodeError>,
    model: &str,
) -> (Outcome, Option<String>) {
    match models {
        Err(err) => (Outcome::Malformed, Some(err.0)),
        Ok(models) if models.iter().any(|listed| listed == model) => (Outcome::Ok, None),
        Ok(models) => (
            Outcome::NotFound,
            Some(format!(
                "model {model} is not in the provider's model list ({} models listed)",
                models.len()
            )),
        ),
    }
}

/// Whether `served` is the model asked for: the same id, or a dated version or alias of it
/// (`gpt-4o` answered as `gpt-4o-2024-08-06`), ignoring case, a `models/` prefix and an
/// `org/` namespace. Anything else is a substitution.
pub fn same_model(requested: &str, served: &str) -> bool {
    let bare = |id: &str| {
        let id = id.strip_prefix("models/").unwrap_or(id);
        id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase()
    };
    let (requested, served) = (bare(requested), bare(served));
    served.starts_with(&requested) || requested.starts_with(&served)
}

/// The provider's wait hint: `retry-after-ms` (OpenAI, Azure) or `retry-after` in seconds or
/// as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<f64> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let seconds = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|value| value.is_finite() && *value >= 0.0)
    };
    // LiteLLM forwards the upstream's headers only with an `llm_provider-` prefix.
    if let Some(ms) = header("retry-after-ms")
        .or_else(|| header("llm_provider-retry-after-ms"))
        .and_then(seconds)
    {
        return Some(ms / 1000.0);
    }
    let value = header("retry-after").or_else(|| header("llm_provider-retry-after"))?;
    seconds(value).or_else(|| {
        httpdate::parse_http_date(value).ok().map(|when| {
            when.duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs_f64()
                .round()
        })
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("json"))
}

/// Tokens × prices per million; `None` when the model has no price.
fn cost(
    input_price: Option<f64>,
    output_price: Option<f64>,
    input: Option<u32>,
    output: Option<u32>,
) -> Option<f64> {
    if (input_price.is_none() && output_price.is_none()) || (input.is_none() && output.is_none()) {
        return None;
    }
    let part = |price: Option<f64>, tokens: Option<u32>| {
        price.unwrap_or(0.0) * f64::from(tokens.unwrap_or(0))
    };
    Some((part(input_price, input) + part(output_price, output)) / 1e6)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
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

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(2.0));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(1.5));
        let mut headers = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let secs = retry_after(&headers).unwrap();
        assert!((28.0..=31.0).contains(&secs), "{secs}");
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        let mut headers = HeaderMap::new();
        headers.insert("llm_provider-retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(2.0), "LiteLLM's forwarded form");
    }

    #[test]
    fn substitution_ignores_versions_and_namespaces() {
        assert!(same_model("gpt-4o", "gpt-4o-2024-08-06"));
        assert!(same_model("openai/gpt-4o", "gpt-4o"));
        assert!(same_model("gemini-2.5-flash", "models/gemini-2.5-flash"));
        assert!(same_model(
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929"
        ));
        assert!(!same_model("llama-3.3-70b", "llama-3.1-8b"));
        assert!(!same_model("deepseek-chat", "deepseek-reasoner"));
    }

    #[test]
    fn cost_needs_a_price() {
        assert_eq!(cost(None, None, Some(10), Some(10)), None);
        assert_eq!(
            cost(Some(1.0), Some(2.0), Some(1_000_000), Some(500_000)),
            Some(2.0)
        );
        assert_eq!(cost(Some(0.0), Some(0.0), Some(5), None), Some(0.0));
        assert_eq!(
            cost(Some(1.0), Some(1.0), None, None),
            None,
            "no tokens, no cost"
        );
    }
}
