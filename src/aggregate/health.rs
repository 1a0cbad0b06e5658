//! A target's state — healthy, degraded, down, unknown — decided with hysteresis from its
//! runs as they are recorded, and the transitions that become incidents.
//!
//! Down takes `down_after` consecutive failures and is left only after `healthy_after`
//! consecutive successes, so one failure does not flap a target. An up target is degraded
//! while its availability over the last hour is below `degraded_below`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;
use crate::result::{Outcome, ResultRecord};

/// How far back the degraded rule looks.
const RECENT_MS: i64 = 3_600_000;

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Answering, and available over the last hour.
    Healthy,
    /// Answering, but failing more than the threshold over the last hour.
    Degraded,
    /// Failing run after run.
    Down,
    /// Too few runs to say.
    Unknown,
}

impl State {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Degraded => "degraded",
            State::Down => "down",
            State::Unknown => "unknown",
        }
    }

    /// Parses [`State::as_str`]'s names; anything else is unknown.
    pub fn from_name(name: &str) -> State {
        match name {
            "healthy" => State::Healthy,
            "degraded" => State::Degraded,
            "down" => State::Down,
            _ => State::Unknown,
        }
    }
}

/// What one run says about the target's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It worked.
    Success,
    /// A provider fault.
    Failure,
    /// Says nothing about the provider: our config (auth, budget), the probe's sizing
    /// (cut off), rate limiting (shown apart), a capability the model lacks, a bad request.
    Neutral,
}

/// The verdict on a run, as DESIGN.md counts availability.
pub fn verdict(record: &ResultRecord) -> Verdict {
    let capability_refuted = record.cap_tools == Some(false) || record.cap_json == Some(false);
    match record.outcome {
        Outcome::Ok => Verdict::Success,
        Outcome::ContentMismatch if capability_refuted => Verdict::Neutral,
        Outcome::Timeout
        | Outcome::Connect
        | Outcome::Dns
        | Outcome::Tls
        | Outcome::ServerError
        | Outcome::Stalled
        | Outcome::Malformed
        | Outcome::Truncated
        | Outcome::ContentMismatch
        | Outcome::TooLarge
        | Outcome::NotFound => Verdict::Failure,
        Outcome::RateLimited
        | Outcome::Auth
        | Outcome::ClientError
        | Outcome::CutOff
        | Outcome::SkippedBudget => Verdict::Neutral,
    }
}

/// A change of state: the start or end of an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The target.
    pub target: String,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Unix ms of the run that caused it.
    pub at_ms: i64,
    /// The failure that caused it, in words.
    pub cause: String,
}

/// The state of one target and what its hysteresis needs; persisted between restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetHealth {
    /// Current state.
    pub state: State,
    /// Failures in a row.
    pub failures: u32,
    /// Successes in a row.
    pub successes: u32,
    /// Non-neutral runs seen.
    pub samples: u64,
    /// Unix ms the current state began.
    pub since_ms: i64,
    /// Recent verdicts (unix ms, success), for the degraded rule. Rebuilt from the store at
    /// start, not persisted.
    #[serde(skip)]
    pub recent: VecDeque<(i64, bool)>,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth {
            state: State::Unknown,
            failures: 0,
            successes: 0,
            samples: 0,
            since_ms: 0,
            recent: VecDeque::new(),
        }
    }
}

impl TargetHealth {
    /// Availability over the last hour before `now_ms`, if any run counted.
    pub fn recent_availability(&self, now_ms: i64) -> Option<f64> {
        let runs = self.recent.iter().filter(|(at, _)| now_ms - at < RECENT_MS);
        let (ok, all) = runs.fold((0u32, 0u32), |(ok, all), (_, success)| {
            (ok + u32::from(*success), all + 1)
        });
        (all > 0).then(|| f64::from(ok) / f64::from(all))
    }

    /// Remembers a verdict for the degraded rule without changing state (used to rebuild
    /// the last hour after a restart).
    pub fn remember(&mut self, verdict: Verdict, at_ms: i64) {
        if verdict == Verdict::Neutral {
            return;
        }
        self.recent.push_back((at_ms, verdict == Verdict::Success));
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| at_ms - at >= RECENT_MS)
        {
            self.recent.pop_front();
        }
    }

    /// Takes one run into account; returns the transition it caused, if any.
    pub fn observe(
        &mut self,
        target: &str,
        record: &ResultRecord,
        at_ms: i64,
        config: &HealthConfig,
    ) -> Option<Transition> {
        let verdict = verdict(record);
        if verdict == Verdict::Neutral {
            return None;
        }
        self.remember(verdict, at_ms);
        self.samples += 1;
        if verdict == Verdict::Success {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let up = || match self.recent_availability(at_ms) {
            Some(availability) if availability < config.degraded_below => State::Degraded,
            _ => State::Healthy,
        };
        let next = if self.failures >= config.down_after {
            State::Down
        } else if self.state == State::Down {
            if self.successes >= config.healthy_after {
                up()
            } else {
                State::Down
            }
        } else if self.samples < u64::from(config.min_samples) {
            State::Unknown
        } else {
            up()
        };
        if next == self.state {
            return None;
        }
        let availability = self.recent_availability(at_ms).unwrap_or(1.0) * 100.0;
        let cause = match next {
            State::Down | State::Unknown => format!(
                "{} failures in a row; last: {}{}",
                self.failures,
                record.outcome,
                record
                    .error
                    .as_deref()
                    .map_or(String::new(), |error| format!(": {error}"))
            ),
            State::Degraded => format!(
                "availability {availability:.1} % over the last hour, below {:.1} %",
                config.degraded_below * 100.0
            ),
            State::Healthy => format!(
                "{} successes in a row, availability {availability:.1} % over the last hour",
                self.successes
            ),
        };
        let transition = Transition {
            target: target.to_owned(),
            from: self.state,
            to: next,
            at_ms,
            cause,
        };
        self.state = next;
        self.since_ms = at_ms;
        Some(transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::sample;

    /// Runs a scripted series (`o` ok, `x` server error, `r` rate limited) one minute apart
    /// and returns the state after each run.
    fn states(script: &str, config: &HealthConfig) -> Vec<State> {
        let mut health = TargetHealth::default();
        script
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let outcome = match c {
                    'o' => Outcome::Ok,
                    'x' => Outcome::ServerError,
                    _ => Outcome::RateLimited,
                };
                health.observe("p/m", &sample(outcome), i as i64 * 60_000, config);
                health.state
            })
            .collect()
    }

    #[test]
    fn down_after_three_failures_back_after_two_successes() {
        use State::{Degraded as G, Down as D, Healthy as H, Unknown as U};
        let config = HealthConfig {
            degraded_below: 0.0,
            ..HealthConfig::default()
        };
        assert_eq!(
            states("ooooxxoxxxoxoo", &config),
            [U, U, H, H, H, H, H, H, H, D, D, D, D, H]
        );
        let degrading = HealthConfig::default();
        // 3 failures in 10 is 70 % over the hour: degraded, not down.
        assert_eq!(
            states("oooxoxoxoo", &degrading),
            [U, U, H, G, G, G, G, G, G, G]
        );
    }

    #[test]
    fn neutral_runs_do_not_move_the_state() {
        let config = HealthConfig::default();
        let all = states("oooxrrrxrrx", &config);
        assert_eq!(all.last(), Some(&State::Down), "{all:?}");
        assert_eq!(states("rrrrrr", &config), [State::Unknown; 6]);
    }
}
