//! Readiness (`/readyz`): whether this server has a site fresh enough to be sent traffic.
//! `/healthz` says the process answers; a load balancer in front of several daemons (a
//! fleet serving behind one address) needs to know more: a daemon just started reads the
//! store whole before its first publish (40–50 s at 10 locations × 1,000 targets),
//! and one whose publishes keep failing serves an ever older site.

use std::time::{Duration, Instant};

use crate::counters::PublishCounts;
use crate::units::now_ms;

/// How many publish intervals the site may age before the server stops calling itself
/// ready: one late or failed publish is not a reason to leave a load balancer's rotation,
/// three in a row are.
const STALE_AFTER_PUBLISHES: u32 = 3;

/// What the server's publishes have done since it started.
#[derive(Debug)]
pub(super) struct Readiness {
    /// When the server was made: the first publish is awaited from here.
    started: Instant,
    /// When the last successful publish ended; `None` before the first.
    published: Option<Instant>,
    /// Publishes that failed since the last successful one.
    failed: u32,
    /// Whether a publish is under way.
    publishing: bool,
    /// What `/metrics` shows of the publishes.
    counts: PublishCounts,
}

impl Readiness {
    /// A server that has not published yet.
    pub(super) fn new() -> Readiness {
        Readiness {
            started: Instant::now(),
            published: None,
            failed: 0,
            publishing: false,
            counts: PublishCounts::default(),
        }
    }

    /// What `/metrics` shows of the publishes.
    pub(super) fn counts(&self) -> PublishCounts {
        self.counts
    }

    /// Notes that a publish began.
    pub(super) fn publish_began(&mut self) {
        self.publishing = true;
    }

    /// Whether the first publish is under way: a request for what it makes would wait
    /// for a cold read of the whole store.
    pub(super) fn first_under_way(&self) -> bool {
        self.publishing && self.published.is_none()
    }

    /// Notes a publish that ended at `at`, or failed.
    pub(super) fn publish_ended(&mut self, at: Instant, ok: bool) {
        self.publishing = false;
        if ok {
            self.published = Some(at);
            self.failed = 0;
            self.counts.last_success_ms = now_ms();
        } else {
            self.failed += 1;
            self.counts.failures += 1;
        }
    }

    /// `Ok` with what makes the server ready at `now`, or `Err` with why not, for a site
    /// published every `every`.
    pub(super) fn at(&self, now: Instant, every: Duration) -> Result<String, String> {
        let stale_after = every * STALE_AFTER_PUBLISHES;
        let Some(published) = self.published else {
            let waited = now.saturating_duration_since(self.started).as_secs();
            return Err(match self.failed {
                0 => format!(
                    "not ready: the first publish is still reading the store ({waited} s so far)"
                ),
                n => format!(
                    "not ready: no publish has succeeded yet ({n} failed in {waited} s; sonde's log says why)"
                ),
            });
        };
        let age = now.saturating_duration_since(published);
        let failed = match self.failed {
            0 => String::new(),
            n => format!("; {n} failed since"),
        };
        if age > stale_after {
            return Err(format!(
                "not ready: the site was last published {} s ago{failed} (more than {} s: \
                 {STALE_AFTER_PUBLISHES} × publish.every); sonde's log says why",
                age.as_secs(),
                stale_after.as_secs()
            ));
        }
        Ok(format!("ready: published {} s ago{failed}", age.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_from_the_first_publish_until_three_intervals_pass_without_one() {
        let every = Duration::from_secs(60);
        let mut readiness = Readiness::new();
        let start = readiness.started;
        assert!(!readiness.first_under_way());
        readiness.publish_began();
        assert!(readiness.first_under_way());
        let waiting = readiness.at(start + Duration::from_secs(5), every);
        assert!(
            waiting
                .unwrap_err()
                .contains("first publish is still reading")
        );
        readiness.publish_ended(start + Duration::from_secs(7), false);
        assert!(!readiness.first_under_way());
        let failing = readiness.at(start + Duration::from_secs(8), every);
        assert!(failing.unwrap_err().contains("1 failed in 8 s"));

        readiness.publish_began();
        readiness.publish_ended(start + Duration::from_secs(10), true);
        readiness.publish_began();
        assert!(!readiness.first_under_way(), "one has ended");
        let ready = readiness
            .at(start + Duration::from_secs(70), every)
            .unwrap();
        assert_eq!(ready, "ready: published 60 s ago");
        readiness.publish_ended(start + Duration::from_secs(80), false);
        let late = readiness
            .at(start + Duration::from_secs(190), every)
            .unwrap();
        assert_eq!(late, "ready: published 180 s ago; 1 failed since");
        let stale = readiness.at(start + Duration::from_secs(191), every);
        assert!(
            stale
                .unwrap_err()
                .contains("last published 181 s ago; 1 failed since")
        );

        readiness.publish_ended(start + Duration::from_secs(200), true);
        assert!(
            readiness
                .at(start + Duration::from_secs(200), every)
                .is_ok()
        );
    }
}
