//! Per-provider admission: every run on a provider passes its gate, so the provider's rate
//! limit and concurrency cap hold across all its targets and probes, and a 429 pauses them all.
//!
//! The rate limit is GCRA (the `governor` crate) with a burst of one: requests are spaced at
//! least `per / requests` apart, plus 1 %, so that network jitter between sonde and the
//! provider can never put `requests + 1` arrivals in one window of the provider's clock.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::Provider;
use crate::result::{Outcome, ResultRecord};

/// Longest pause a 429 can impose, whatever the provider asks: a provider that answers
/// `Retry-After: 86400` is still probed the next hour, so its recovery is seen.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// One provider's gate.
#[derive(Debug)]
pub struct Gate {
    limiter: DefaultDirectRateLimiter,
    slots: Semaphore,
    pause: Mutex<Pause>,
}

#[derive(Debug, Default)]
struct Pause {
    until: Option<Instant>,
    /// Delays for 429s without `Retry-After`; reset by a success.
    backoff: Option<ExponentialBackoff>,
}

/// Permission to send one request; the concurrency slot is held until it is dropped.
#[derive(Debug)]
pub struct Admission<'a> {
    _slot: SemaphorePermit<'a>,
}

impl Gate {
    /// The gate for `provider`'s `rpm` / `rate_window` and `max_concurrency`.
    pub fn new(provider: &Provider) -> Gate {
        let requests = provider.rate.requests.max(1);
        let spacing = provider.rate.per.mul_f64(1.01) / requests;
        let quota = Quota::with_period(spacing.max(Duration::from_micros(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        Gate {
            limiter: RateLimiter::direct(quota),
            slots: Semaphore::new(provider.max_concurrency.max(1) as usize),
            pause: Mutex::new(Pause::default()),
        }
    }

    /// Waits for a concurrency slot, a rate-limit token and the end of any pause.
    pub async fn admit(&self) -> Admission<'_> {
        // The semaphore is never closed, so acquiring only waits.
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the gate's semaphore is never closed");
        loop {
            self.wait_out_pause().await;
            self.limiter.until_ready().await;
            // A 429 may have arrived while this run waited for its token.
            if self
                .paused_until()
                .is_none_or(|until| until <= Instant::now())
            {
                return Admission { _slot: slot };
            }
        }
    }

    async fn wait_out_pause(&self) {
        while let Some(until) = self.paused_until() {
            if until <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        self.pause.lock().ok().and_then(|pause| pause.until)
    }

    /// Learns from a finished run: a 429 (or a 503 with `Retry-After`) pauses the provider
    /// for its `Retry-After`, or for an exponential backoff with jitter when it gave none;
    /// any answer that was not a rate limit resets the backoff. Returns the pause imposed.
    pub fn learn(&self, record: &ResultRecord) -> Option<Duration> {
        let Ok(mut pause) = self.pause.lock() else {
            return None;
        };
        let overloaded = record.outcome == Outcome::ServerError && record.retry_after_s.is_some();
        if record.outcome != Outcome::RateLimited && !overloaded {
            if record.http_status.is_some() {
                pause.backoff = None;
            }
            return None;
        }
        let delay = match record.retry_after_s {
            Some(seconds) => Duration::from_secs_f64(seconds.clamp(0.0, MAX_PAUSE.as_secs_f64())),
            None => pause
                .backoff
                .get_or_insert_with(|| {
                    ExponentialBuilder::new()
                        .with_min_delay(Duration::from_secs(1))
                        .with_max_delay(Duration::from_secs(300))
                        .with_factor(2.0)
                        .with_jitter()
                        .without_max_times()
                        .build()
                })
                .next()
                .unwrap_or(Duration::from_secs(300)),
        };
        let until = Instant::now() + delay;
        pause.until = Some(pause.until.map_or(until, |current| current.max(until)));
        Some(delay)
    }
}
