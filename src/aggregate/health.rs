//! A target's state — healthy, degraded, down, unknown — decided with hysteresis from its
//! runs as they are recorded, and the transitions that become incidents.
//!
//! Down takes `down_after` consecutive failures and is left only after `healthy_after`
//! consecutive successes, so one failure does not flap a target. An up target is degraded
//! while its availability over the last hour is below `degraded_below`.
//!
//! Flap damping — fast to fall, slow to recover. A worse state is taken at once (a router
//! must stop sending traffic); a better one only once the current bad state has lasted its
//! *hold* (`hold`, default 2 min). A target that falls again within `relapse_window` (default
//! 15 min) of its last improvement has relapsed: its hold doubles for each relapse (up to
//! `max_hold`, default 1 h), and a fall from good continues its last incident instead of
//! opening a new one. So within an incident the k-th stay in a bad state lasts at least
//! hold × 2^k, and two incidents of one target are at least `relapse_window` apart: at most
//! 60 min / relapse_window + 1 (5 by default) incidents per target per hour.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::alerting::Mark;
use super::drift::Drift;
use super::slo::Burn;
use crate::config::{HealthConfig, QualityConfig};
use crate::result::{Outcome, ResultRecord};
use crate::units::duration_ms;

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
    /// Down in some of the fleet's fresh locations, fewer than its quorum: a regional
    /// outage. Only a fleet's global state is partial, never one location's.
    Partial,
    /// Too few runs to say.
    Unknown,
}

impl State {
    /// How good the state is, for "better" and "worse": down < degraded < healthy; unknown
    /// counts as healthy (nothing against it).
    pub fn rank(self) -> u8 {
        match self {
            State::Down => 0,
            State::Degraded | State::Partial => 1,
            State::Healthy | State::Unknown => 2,
        }
    }

    /// Down, partial or degraded: the states an incident covers.
    pub fn is_bad(self) -> bool {
        matches!(self, State::Down | State::Partial | State::Degraded)
    }

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Degraded => "degraded",
            State::Down => "down",
            State::Partial => "partial",
            State::Unknown => "unknown",
        }
    }

    /// Parses [`State::as_str`]'s names; anything else is unknown.
    pub fn from_name(name: &str) -> State {
        match name {
            "healthy" => State::Healthy,
            "degraded" => State::Degraded,
            "down" => State::Down,
            "partial" => State::Partial,
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

/// The verdict on a run, as docs/design.md counts availability.
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

/// What an incident is about: a target's availability, or the quality of its answers (a
/// drift from its own past, `aggregate::drift`). A target may have one of each open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Down or degraded.
    Health,
    /// Its answers drifted from its own past.
    Quality,
}

impl IncidentKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Health => "health",
            IncidentKind::Quality => "quality",
        }
    }

    /// Parses [`IncidentKind::as_str`]'s names; anything else is health.
    pub fn from_name(name: &str) -> IncidentKind {
        match name {
            "quality" => IncidentKind::Quality,
            _ => IncidentKind::Health,
        }
    }
}

/// A change of state: the start or end of an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// What the incident is about.
    pub kind: IncidentKind,
    /// The target.
    pub target: String,
    /// The location that saw it (the run's).
    pub location: String,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Unix ms of the run that caused it.
    pub at_ms: i64,
    /// The failure that caused it, in words.
    pub cause: String,
    /// A fall from good within the relapse window of the last recovery: it continues the
    /// target's last incident instead of opening a new one.
    pub reopens: bool,
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
    /// Falls within the relapse window of an improvement, in a row: the hold doubles for
    /// each.
    #[serde(default)]
    pub relapses: u32,
    /// Unix ms of the last improvement (a better state), for the relapse window.
    #[serde(default)]
    pub improved_ms: Option<i64>,
    /// Recent verdicts (unix ms, success), for the degraded rule. Rebuilt from the store at
    /// start, not persisted.
    #[serde(skip)]
    pub recent: VecDeque<(i64, bool)>,
    /// The quality drift detectors.
    #[serde(default)]
    pub drift: Drift,
    /// Each alert's memory of this target, by alert name and cause.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alerts: BTreeMap<String, Mark>,
    /// The last 6 hours by the minute, for SLO burn rates. Rebuilt from the store at start,
    /// not persisted.
    #[serde(skip)]
    pub burn: Burn,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth {
            state: State::Unknown,
            failures: 0,
            successes: 0,
            samples: 0,
            since_ms: 0,
            relapses: 0,
            improved_ms: None,
            recent: VecDeque::new(),
            drift: Drift::default(),
            alerts: BTreeMap::new(),
            burn: Burn::default(),
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

    /// Takes one run's quality judgement into account: a quality incident opening (from
    /// healthy to degraded) or closing.
    pub fn observe_quality(
        &mut self,
        record: &ResultRecord,
        at_ms: i64,
        config: &QualityConfig,
    ) -> Option<Transition> {
        let change = self.drift.observe(record, at_ms, config)?;
        let (from, to) = if change.opened {
            (State::Healthy, State::Degraded)
        } else {
            (State::Degraded, State::Healthy)
        };
        Some(Transition {
            kind: IncidentKind::Quality,
            target: record.target.clone(),
            location: record.location.clone(),
            from,
            to,
            at_ms,
            cause: change.cause,
            reopens: false,
        })
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
        let candidate = if self.failures >= config.down_after {
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
        let improves = self.state.is_bad() && candidate.rank() > self.state.rank();
        let next = if improves && at_ms - self.since_ms < self.hold_ms(config) {
            self.state
        } else {
            candidate
        };
        if next == self.state {
            return None;
        }
        let mut reopens = false;
        if next.rank() < self.state.rank() {
            let relapsed = self
                .improved_ms
                .is_some_and(|improved| at_ms - improved < duration_ms(config.relapse_window));
            self.relapses = if relapsed { self.relapses + 1 } else { 0 };
            reopens = relapsed && !self.state.is_bad();
        } else if next.rank() > self.state.rank() {
            self.improved_ms = Some(at_ms);
        }
        let availability = self.recent_availability(at_ms).unwrap_or(1.0) * 100.0;
        let cause = match next {
            State::Down | State::Partial | State::Unknown => format!(
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
            kind: IncidentKind::Health,
            target: target.to_owned(),
            location: record.location.clone(),
            from: self.state,
            to: next,
            at_ms,
            cause,
            reopens,
        };
        self.state = next;
        self.since_ms = at_ms;
        Some(transition)
    }

    /// How long the current bad state must last before the target may improve: `hold`,
    /// doubled for each relapse, at most `max_hold`.
    pub fn hold_ms(&self, config: &HealthConfig) -> i64 {
        let doubled = config
            .hold
            .saturating_mul(2u32.saturating_pow(self.relapses.min(31)));
        duration_ms(doubled.min(config.max_hold))
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

    /// Hysteresis alone, without the hold of flap damping.
    fn undamped() -> HealthConfig {
        HealthConfig {
            hold: std::time::Duration::ZERO,
            ..HealthConfig::default()
        }
    }

    #[test]
    fn down_after_three_failures_back_after_two_successes() {
        use State::{Degraded as G, Down as D, Healthy as H, Unknown as U};
        let config = HealthConfig {
            degraded_below: 0.0,
            ..undamped()
        };
        assert_eq!(
            states("ooooxxoxxxoxoo", &config),
            [U, U, H, H, H, H, H, H, H, D, D, D, D, H]
        );
        let degrading = undamped();
        // 3 failures in 10 is 70 % over the hour: degraded, not down.
        assert_eq!(
            states("oooxoxoxoo", &degrading),
            [U, U, H, G, G, G, G, G, G, G]
        );
    }

    /// Runs `script` (`o` ok, `x` failure) `every_ms` apart; returns every transition.
    fn transitions(script: &str, every_ms: i64, config: &HealthConfig) -> Vec<Transition> {
        let mut health = TargetHealth::default();
        script
            .chars()
            .enumerate()
            .filter_map(|(i, c)| {
                let outcome = if c == 'o' {
                    Outcome::Ok
                } else {
                    Outcome::ServerError
                };
                health.observe("p/m", &sample(outcome), i as i64 * every_ms, config)
            })
            .collect()
    }

    /// Incidents a series of transitions opens (a fall from good that does not reopen).
    fn incidents(transitions: &[Transition]) -> usize {
        transitions
            .iter()
            .filter(|t| t.to.is_bad() && !t.from.is_bad() && !t.reopens)
            .count()
    }

    #[test]
    fn a_flapping_target_is_one_incident_held_down_longer_each_time() {
        // Three failures, two successes, over and over, a run every 10 s: 50 s cycles.
        let script = "ooo".to_owned() + &"xxxoo".repeat(144);
        let undamped = transitions(&script, 10_000, &undamped());
        let twelve_minutes = |t: &&Transition| t.at_ms < 12 * 60_000;
        assert!(undamped.iter().filter(twelve_minutes).count() >= 14);
        let damped = transitions(&script, 10_000, &HealthConfig::default());
        let flips = damped.iter().filter(twelve_minutes).count();
        // unknown → healthy → degraded → down, then holds of 2, 4 and 8 min: 7 in 12 min.
        assert!(flips <= 7, "{flips} flips: {damped:#?}");
        // Over the two hours: 14 at most (holds 2, 4, 8, 16, 32, 60, 60 min) against 288.
        assert!(undamped.len() >= 280, "{}", undamped.len());
        assert!(damped.len() <= 14, "{}", damped.len());
        assert_eq!(incidents(&damped), 1, "{damped:#?}");
        // The k-th stay down lasts at least hold × 2^k (up to an hour).
        let downs: Vec<i64> = damped
            .windows(2)
            .filter(|pair| pair[0].to == State::Down)
            .map(|pair| pair[1].at_ms - pair[0].at_ms)
            .collect();
        assert!(downs.len() >= 3, "{downs:?}");
        for (k, down) in downs.iter().enumerate() {
            assert!(*down >= (120_000 << k).min(3_600_000), "{downs:?}");
        }
    }

    #[test]
    fn incidents_per_hour_are_bounded_by_the_relapse_window() {
        // Down for a minute, then up for 16 minutes (past the relapse window), for 7 hours:
        // each fall is a new incident, and there can be no more than one per 15 minutes.
        let config = HealthConfig {
            degraded_below: 0.0,
            ..HealthConfig::default()
        };
        let cycle = "x".repeat(6) + &"o".repeat(96);
        let script = "ooo".to_owned() + &cycle.repeat(24);
        let all = transitions(&script, 10_000, &config);
        let hours = (script.len() as f64 * 10.0 / 3600.0).ceil() as usize;
        assert!(incidents(&all) <= hours * 5, "{}", incidents(&all));
        assert!(
            incidents(&all) >= 10,
            "falls past the window are separate incidents"
        );
        // The same falls 10 minutes apart (within the window) stay one incident.
        let close = "x".repeat(6) + &"o".repeat(60);
        let script = "ooo".to_owned() + &close.repeat(24);
        assert_eq!(incidents(&transitions(&script, 10_000, &config)), 1);
    }

    #[test]
    fn neutral_runs_do_not_move_the_state() {
        let config = HealthConfig::default();
        let all = states("oooxrrrxrrx", &config);
        assert_eq!(all.last(), Some(&State::Down), "{all:?}");
        assert_eq!(states("rrrrrr", &config), [State::Unknown; 6]);
    }
}
