//! Per-provider admission: every run on a provider passes its gate, so the provider's rate
//! limit and concurrency cap hold across all its targets and probes, and a 429 pauses them all.
//!
//! The rate limit is GCRA with a burst of one (virtual scheduling): each request takes the
//! next send time, at least `per / requests` after the previous one, plus 1 %, so that
//! network jitter between sonde and the provider can never put `requests + 1` arrivals in
//! one window of the provider's clock.
//!
//! Probers of a fleet sharing a provider each hold a whole-number share of its requests per
//! window ([`Gate::share`], from their leases in the store: `requests / holders`, the
//! remainder to the first by name), spaced so that no window holds more than the share. A
//! smaller share applies at once, measured from the last send; a larger one only a window
//! later, once what was sent at the old share has left the window; a prober whose lease the
//! others have not yet made room for sends nothing. (The `governor` crate, used before,
//! cannot change the rate of a live limiter without forgetting its last send.)

use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::Provider;
use crate::result::{Outcome, ResultRecord};

/// Longest pause a 429 can impose, whatever the provider asks: a provider that answers
/// `Retry-After: 86400` is still probed the next hour, so its recovery is seen.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// How often a held gate looks again whether it may send.
const HELD_POLL: Duration = Duration::from_millis(250);

/// One provider's gate.
#[derive(Debug)]
pub struct Gate {
    /// The provider's limit: requests per window.
    requests: u32,
    /// The limit's window.
    per: Duration,
    pacer: Mutex<Pacer>,
    slots: Semaphore,
    pause: Mutex<Pause>,
}

/// The rate limit's state.
#[derive(Debug)]
struct Pacer {
    /// Time between sends for this prober's share.
    spacing: Duration,
    /// The earliest the next request may be sent.
    next: Instant,
    /// The latest send time handed out.
    last: Option<Instant>,
    /// No share yet (or no longer): nothing may be sent.
    held: bool,
    /// A larger share, and when it may be used: a window after it was granted.
    growing: Option<(Instant, Duration)>,
}

/// The least time between two sends that puts at most `requests` in any window `per`
/// (plus 1 %, against jitter between this clock and the provider's).
fn spacing_of(requests: u32, per: Duration) -> Duration {
    (per.mul_f64(1.01) / requests.max(1)).max(Duration::from_micros(1))
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
    /// The gate for `provider`'s `rpm` / `rate_window` and `max_concurrency`, with the
    /// whole limit to itself.
    pub fn new(provider: &Provider) -> Gate {
        let requests = provider.rate.requests.max(1);
        let per = provider.rate.per;
        Gate {
            requests,
            per,
            pacer: Mutex::new(Pacer {
                spacing: spacing_of(requests, per),
                next: Instant::now(),
                last: None,
                held: false,
                growing: None,
            }),
            slots: Semaphore::new(provider.max_concurrency.max(1) as usize),
            pause: Mutex::new(Pause::default()),
        }
    }

    /// [`Gate::new`] for a prober of a fleet: it sends nothing until its first
    /// [`Gate::share`].
    pub fn shared(provider: &Provider) -> Gate {
        let gate = Gate::new(provider);
        gate.pacer().held = true;
        gate
    }

    fn pacer(&self) -> std::sync::MutexGuard<'_, Pacer> {
        self.pacer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The window the provider's limit counts in.
    pub fn window(&self) -> Duration {
        self.per
    }

    /// Takes this prober's share of the limit among `holders` probers, of which it is the
    /// `rank`-th by name (from 0): `requests / holders` per window, one more for the first
    /// `requests % holders`; nothing while `active` is false or the share is 0. A smaller
    /// share counts from the last send at once; a larger one applies a window later.
    /// Returns the share.
    pub fn share(&self, holders: u32, rank: u32, active: bool) -> u32 {
        let holders = holders.max(1);
        let share = self.requests / holders + u32::from(rank < self.requests % holders);
        let mut pacer = self.pacer();
        pacer.held = !active || share == 0;
        if share == 0 {
            return 0;
        }
        let spacing = spacing_of(share, self.per);
        if spacing >= pacer.spacing {
            if let Some(last) = pacer.last {
                pacer.next = pacer.next.max(last + spacing);
            }
            pacer.spacing = spacing;
            pacer.growing = None;
        } else if pacer.growing.is_none_or(|(_, pending)| pending != spacing) {
            pacer.growing = Some((Instant::now() + self.per, spacing));
        }
        share
    }

    /// Sends nothing until the next [`Gate::share`] (the lease could not be renewed).
    pub fn hold(&self) {
        self.pacer().held = true;
    }

    /// The send time of the next request, once the gate is not held.
    async fn next_send(&self) -> Instant {
        loop {
            {
                let mut pacer = self.pacer();
                if let Some((from, spacing)) = pacer.growing
                    && from <= Instant::now()
                {
                    pacer.spacing = spacing;
                    pacer.growing = None;
                }
                if !pacer.held {
                    let at = pacer.next.max(Instant::now());
                    pacer.next = at + pacer.spacing;
                    pacer.last = Some(at);
                    return at;
                }
            }
            tokio::time::sleep(HELD_POLL).await;
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
            tokio::time::sleep_until(self.next_send().await).await;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn provider(rpm: u32) -> std::sync::Arc<Provider> {
        let config = Config::parse(
            Path::new("t.toml"),
            &format!(
                "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                 rpm = {rpm}\nmax_concurrency = 8\n[[providers.models]]\nid = \"m\"\n"
            ),
        )
        .unwrap();
        std::sync::Arc::clone(&config.providers[0])
    }

    /// Send times of `n` admissions on `gate`, from the start of the test.
    async fn sends(gate: &Gate, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..n {
            let _admission = gate.admit().await;
            out.push(start.elapsed());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_divides_the_spacing_and_a_smaller_one_counts_from_the_last_send() {
        let gate = Gate::new(&provider(60));
        let whole = sends(&gate, 3).await;
        assert_eq!(whole[1] - whole[0], Duration::from_millis(1010));
        assert_eq!(gate.share(3, 0, true), 20);
        let third = sends(&gate, 2).await;
        // The first send after the share waits three spacings from the last send.
        assert_eq!(
            third.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            [3030, 6060]
        );
        // The share grows back only a window later.
        assert_eq!(gate.share(1, 0, true), 60);
        let regrown = sends(&gate, 1).await;
        assert_eq!(regrown[0].as_millis(), 3030, "still a third");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let whole_again = sends(&gate, 2).await;
        assert_eq!(whole_again[1] - whole_again[0], Duration::from_millis(1010));
    }

    #[test]
    fn shares_are_whole_and_add_up_to_the_limit() {
        let gate = Gate::new(&provider(12));
        let shares: Vec<u32> = (0..5).map(|rank| gate.share(5, rank, true)).collect();
        assert_eq!(shares, [3, 3, 2, 2, 2]);
        let small = Gate::new(&provider(2));
        assert_eq!(small.share(3, 2, true), 0, "no share: this prober waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_gate_sends_nothing_until_its_share_is_active() {
        let gate = std::sync::Arc::new(Gate::shared(&provider(60)));
        let waiting = tokio::spawn({
            let gate = std::sync::Arc::clone(&gate);
            async move { sends(&gate, 1).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a held gate admitted a run");
        gate.share(2, 0, true);
        let sent = waiting.await.unwrap();
        assert!(sent[0] >= Duration::from_secs(5) && sent[0] < Duration::from_secs(6));
    }
}
