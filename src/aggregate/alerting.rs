//! Alerting: which notifications a run leads to, decided as the store's writer folds it, so
//! that each is written to the outbox in the same transaction as the state change behind it.
//!
//! Per alert, cause (`health`, `quality`) and target × location a [`Mark`] counts the runs
//! of an open incident in a row (`failure_threshold` of them trigger) and, once triggered,
//! the runs since it closed (`success_threshold` of them resolve). A triggered alert is
//! reminded every `reminder_every` while it stays open. An alert makes at most
//! `max_per_hour` notifications in any hour: past that a trigger waits for a later run and a
//! reminder is skipped; a resolve of a trigger that was made always goes. Marks are kept in
//! the target's stored state, so a restart neither forgets a trigger nor sends it twice.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::health::TargetHealth;
use super::slo::{FAST_BURN, SLOW_BURN};
use crate::config::{Alert, Slo};
use crate::result::ResultRecord;
use crate::units::duration_ms;

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An incident is open (long enough).
    Trigger,
    /// It is still open.
    Reminder,
    /// It closed (long enough ago).
    Resolve,
}

impl Event {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Trigger => "trigger",
            Event::Reminder => "reminder",
            Event::Resolve => "resolve",
        }
    }
}

/// One notification, as the outbox keeps it and a webhook receives it (the `id` is the
/// outbox's, added when it is sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The alert it is for.
    pub alert: String,
    /// What happened.
    pub event: Event,
    /// Stable for one incident's trigger, reminders and resolve:
    /// `sonde/<target>/<cause>/<location>`.
    pub dedup_key: String,
    /// Target id.
    pub target: String,
    /// Route group.
    pub group: String,
    /// The location that saw it.
    pub location: String,
    /// `health` or `quality`.
    pub cause: String,
    /// The target's state there (`down`, `degraded`, `healthy`, …; `drifting` or
    /// `recovered` for quality).
    pub state: String,
    /// In words.
    pub summary: String,
    /// Unix ms the incident began.
    pub started_ms: i64,
    /// Unix ms of the run that made the notification.
    pub at_ms: i64,
}

/// One alert's memory of one cause of one target in one location.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// Runs in a row with the incident open.
    pub open_runs: u32,
    /// Runs in a row with it closed, since it triggered.
    pub closed_runs: u32,
    /// Unix ms the open incident began.
    pub started_ms: i64,
    /// A trigger was made and not yet resolved.
    pub triggered: bool,
    /// Unix ms of its latest trigger or reminder.
    pub last_sent_ms: i64,
}

/// Notifications made per alert in the last hour, for `max_per_hour` (not persisted: after
/// a restart the hour starts afresh).
#[derive(Debug, Clone, Default)]
pub struct Budget {
    sent: BTreeMap<String, VecDeque<i64>>,
}

const HOUR_MS: i64 = 3_600_000;

impl Budget {
    fn allows(&mut self, alert: &Alert, at_ms: i64) -> bool {
        let sent = self.sent.entry(alert.name.clone()).or_default();
        while sent.front().is_some_and(|t| at_ms - t >= HOUR_MS) {
            sent.pop_front();
        }
        sent.len() < alert.max_per_hour as usize
    }

    fn spend(&mut self, alert: &Alert, at_ms: i64) {
        self.sent
            .entry(alert.name.clone())
            .or_default()
            .push_back(at_ms);
    }
}

/// The notifications `record` leads to, its target's `state` already updated by it (health,
/// drift and burn), its marks updated in `state`; `slo` is the target's, for burn causes.
pub fn evaluate(
    alerts: &[Alert],
    state: &mut TargetHealth,
    record: &ResultRecord,
    at_ms: i64,
    slo: Option<&Slo>,
    budget: &mut Budget,
) -> Vec<Notification> {
    let mut made = Vec::new();
    for alert in alerts
        .iter()
        .filter(|a| a.follows(&record.target, &record.group))
    {
        for cause in &alert.causes {
            let (open, words, since) = match cause.as_str() {
                "health" => (state.state.is_bad(), state.state.as_str(), state.since_ms),
                "quality" => {
                    let drifting = state.drift.open().next().is_some();
                    let words = if drifting { "drifting" } else { "recovered" };
                    (drifting, words, at_ms)
                }
                // A gateway's held group: told by the syncer, not by runs.
                "sync" => continue,
                burn => {
                    let Some(slo) = slo else { continue };
                    let rule = if burn == "slo_fast" {
                        FAST_BURN
                    } else {
                        SLOW_BURN
                    };
                    let burning = state.burn.burning(slo, at_ms, rule);
                    let words = if burning { "burning" } else { "within budget" };
                    (burning, words, at_ms)
                }
            };
            let failures = state.failures;
            let key = format!("{}\u{1f}{cause}", alert.name);
            let mark = state.alerts.entry(key).or_default();
            let event = step(alert, mark, open, since, at_ms, budget);
            if let Some(event) = event {
                if event != Event::Resolve {
                    budget.spend(alert, at_ms);
                }
                made.push(Notification {
                    alert: alert.name.clone(),
                    event,
                    dedup_key: format!("sonde/{}/{cause}/{}", record.target, record.location),
                    target: record.target.clone(),
                    group: record.group.clone(),
                    location: record.location.clone(),
                    cause: cause.clone(),
                    state: words.to_owned(),
                    summary: summary(event, record, cause, words, failures),
                    started_ms: mark.started_ms,
                    at_ms,
                });
            }
        }
    }
    made
}

/// Moves one mark by one run; the event it makes, if any (and allowed).
fn step(
    alert: &Alert,
    mark: &mut Mark,
    open: bool,
    since_ms: i64,
    at_ms: i64,
    budget: &mut Budget,
) -> Option<Event> {
    if open {
        if mark.open_runs == 0 && !mark.triggered {
            mark.started_ms = since_ms;
        }
        mark.open_runs = mark.open_runs.saturating_add(1);
        mark.closed_runs = 0;
        if !mark.triggered {
            if mark.open_runs >= alert.failure_threshold && budget.allows(alert, at_ms) {
                mark.triggered = true;
                mark.last_sent_ms = at_ms;
                return Some(Event::Trigger);
            }
            return None;
        }
        let due = alert
            .reminder_every
            .is_some_and(|every| at_ms - mark.last_sent_ms >= duration_ms(every));
        if due {
            mark.last_sent_ms = at_ms;
            if budget.allows(alert, at_ms) {
                return Some(Event::Reminder);
            }
        }
        return None;
    }
    mark.open_runs = 0;
    if !mark.triggered {
        return None;
    }
    mark.closed_runs = mark.closed_runs.saturating_add(1);
    if mark.closed_runs < alert.success_threshold {
        return None;
    }
    mark.triggered = false;
    mark.closed_runs = 0;
    alert.send_on_resolved.then_some(Event::Resolve)
}

fn summary(event: Event, record: &ResultRecord, cause: &str, words: &str, failures: u32) -> String {
    let at = if record.location.is_empty() {
        String::new()
    } else {
        format!(" (seen from {})", record.location)
    };
    let rule = |(long, short, factor): (i64, i64, f64)| {
        let span =
            |ms: i64| humantime::format_duration(std::time::Duration::from_millis(ms as u64));
        format!("{factor}× over {} and {}", span(long), span(short))
    };
    match (event, cause) {
        (Event::Resolve, "slo_fast" | "slo_slow") => format!(
            "{}: its SLO's error budget burns within the rule again{at}",
            record.target
        ),
        (_, "slo_fast") => format!(
            "{}: its SLO's error budget burns fast, at least {}{at}",
            record.target,
            rule(FAST_BURN)
        ),
        (_, "slo_slow") => format!(
            "{}: its SLO's error budget burns slowly, at least {}{at}",
            record.target,
            rule(SLOW_BURN)
        ),
        (Event::Resolve, "quality") => {
            format!("{}: answers back to their past quality{at}", record.target)
        }
        (Event::Resolve, _) => format!("{} is {words} again{at}", record.target),
        (_, "quality") => format!("{}: answers drifted from their own past{at}", record.target),
        _ => {
            let last = record.error.as_deref().map_or(String::new(), |error| {
                format!("; last: {}: {error}", record.outcome)
            });
            format!(
                "{} is {words}{at}: {} failures in a row{last}",
                record.target, failures
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aggregate::health::State;
    use crate::config::AlertKind;
    use crate::result::{Outcome, sample};

    fn alert() -> Alert {
        Alert::sample(AlertKind::Webhook)
    }

    /// Feeds `script` (`x` a run while down, `o` a run while healthy) a minute apart and
    /// returns the events with the index of their run.
    fn events(alert: &Alert, script: &str, budget: &mut Budget) -> Vec<(usize, Event)> {
        let mut state = TargetHealth::default();
        script
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                state.state = if c == 'x' {
                    State::Down
                } else {
                    State::Healthy
                };
                let outcome = if c == 'x' {
                    Outcome::ServerError
                } else {
                    Outcome::Ok
                };
                let record = sample(outcome);
                evaluate(
                    std::slice::from_ref(alert),
                    &mut state,
                    &record,
                    i as i64 * 60_000,
                    None,
                    budget,
                )
                .into_iter()
                .map(move |n| (i, n.event))
            })
            .collect()
    }

    #[test]
    fn thresholds_delay_the_trigger_and_the_resolve() {
        use Event::*;
        let plain = alert();
        assert_eq!(
            events(&plain, "ooxxxoo", &mut Budget::default()),
            [(2, Trigger), (5, Resolve)]
        );
        let patient = Alert {
            failure_threshold: 3,
            success_threshold: 2,
            ..alert()
        };
        assert_eq!(
            events(&patient, "xxoxxxoxoo", &mut Budget::default()),
            [(5, Trigger), (9, Resolve)],
            "a run back up resets the failure count; a relapse resets the success count"
        );
        let quiet = Alert {
            send_on_resolved: false,
            ..alert()
        };
        assert_eq!(events(&quiet, "xo", &mut Budget::default()), [(0, Trigger)]);
    }

    #[test]
    fn reminders_repeat_and_the_hourly_limit_holds_triggers_back() {
        use Event::*;
        let reminding = Alert {
            reminder_every: Some(Duration::from_secs(600)),
            ..alert()
        };
        let script = "x".repeat(25) + "o";
        assert_eq!(
            events(&reminding, &script, &mut Budget::default()),
            [(0, Trigger), (10, Reminder), (20, Reminder), (25, Resolve)]
        );
        // Two notifications an hour: the third flap's trigger waits for the hour to pass.
        let limited = Alert {
            max_per_hour: 2,
            ..alert()
        };
        let flaps = "xo".to_owned() + &"o".repeat(10) + "xxo" + &"x".repeat(60);
        let made = events(&limited, &flaps, &mut Budget::default());
        assert_eq!(made[..3], [(0, Trigger), (1, Resolve), (12, Trigger)]);
        assert_eq!(made[3].1, Resolve);
        assert!(made[4].0 >= 60, "{made:?}");
        assert_eq!(made.len(), 5);
    }
}
