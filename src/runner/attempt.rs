//! One run in flight: the request sent under the run's deadline, connection setup timed
//! apart, and the response routed to the reader it needs (an error body, a model list, an
//! event stream or a whole JSON answer).

use std::sync::Arc;
use std::time::Instant;

use super::Scheduled;
use super::body::{ArrivalClock, TimedBody};
use super::read::{collect, read_sse, read_whole};
use super::transport::{self, ConnectSlot};
use super::verdict::{judge, judge_model_list};
use crate::config::Target;
use crate::measurement::Recorder;
use crate::probe::{Probe, ProbeKind};
use crate::provider::headers::{is_json, retry_after};
use crate::provider::{Adapter, GatewayRoute, RateLimits};
use crate::quality::{Item, Judgement};
use crate::redact::Secret;
use crate::result::{Outcome, ResultRecord};
use crate::units::micros;

/// An error body is read only this far: enough for the provider's message.
const ERROR_BODY_CAP: u64 = 64 * 1024;

/// One run in progress: what the record needs beyond the measurements.
pub(super) struct Attempt<'a> {
    pub(super) target: &'a Target,
    pub(super) probe: &'a Probe,
    pub(super) scheduled: Scheduled,
    pub(super) started: Instant,
    pub(super) run_id: &'a str,
    pub(super) deadline: Instant,
    pub(super) key: Option<&'a Secret>,
    pub(super) prompt_chars: usize,
    pub(super) connect_us: Option<u64>,
    pub(super) http_status: Option<u16>,
    pub(super) retry_after_s: Option<f64>,
    pub(super) rate_limits: RateLimits,
    pub(super) gateway: GatewayRoute,
    /// The answer came as an event stream.
    pub(super) sse: bool,
    /// The quality item asked, for a quality probe.
    pub(super) item: Option<&'a Item>,
    /// How the answer to `item` was judged, and what was wrong with it.
    pub(super) quality: Option<(Judgement, Option<String>)>,
}

impl<'a> Attempt<'a> {
    pub(super) fn new(
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
            item: None,
            quality: None,
        }
    }

    pub(super) async fn execute(
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
            let measured = recorder.finish_us(self.probe.stream, Some(clock.latest_us()));
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
            let measured = recorder.finish_us(false, Some(clock.latest_us()));
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
        let measured = recorder.finish_us(self.probe.stream, Some(clock.latest_us()));
        let judged = judge(read, &measured, self.probe, self.item);
        self.quality = judged.quality;
        self.record(measured, judged.outcome, judged.error)
    }
}
