//! Driving gateways from the feed: after each publish (the daemon's `[[sync]]`) or once
//! (`sonde sync litellm`), a gateway's deployments for sonde's targets are brought to the
//! feed's weights through its admin API.
//!
//! [`plan`] decides what changes (pure); [`litellm`] talks to the proxy; [`Syncer`] runs one
//! sync, logs every change with the proxy's answer, and keeps which groups are held (left
//! at their last weights because every deployment would be at 0) so the daemon alerts when
//! a hold begins and ends ([`hold_alerts`]).

mod gateways;
pub mod litellm;
pub mod plan;

use std::collections::BTreeMap;

use crate::aggregate::alerting::{Event, Notification};
use crate::config::{Alert, SyncConfig};
use crate::publish::gateway::Deployment;
use crate::redact::Secret;
pub use gateways::Gateways;
use litellm::{Answer, Client};
use plan::{Change, Gone, Held, Plan};

/// The cause an alert follows to hear of held groups.
pub const CAUSE: &str = "sync";

/// Why a sync could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The admin key's variable is not set.
    #[error(
        "environment variable {var} (the admin key of gateway {name}) is not set: export it, \
         or name another with key_env / --key-env"
    )]
    MissingKey {
        /// The sync's name.
        name: String,
        /// The variable.
        var: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The gateway could not be reached, or its answer was cut short or not HTTP.
    #[error("no whole answer from {url}: {why}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why not, the key masked.
        why: String,
    },
    /// The gateway refused the list of deployments.
    #[error(
        "{url} answered {status}: {text} (is the key an admin key, and the proxy started with \
         STORE_MODEL_IN_DB=True?)"
    )]
    Refused {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of its answer, the key masked.
        text: String,
    },
    /// The list of deployments was not what LiteLLM answers.
    #[error("{url} did not answer a LiteLLM model list: {why}")]
    Malformed {
        /// What was asked.
        url: String,
        /// What was wrong.
        why: String,
    },
    /// The list of deployments passed the cap.
    #[error("{url} answered more than {cap} bytes; not read further")]
    TooLarge {
        /// What was asked.
        url: String,
        /// The cap, bytes.
        cap: usize,
    },
}

/// A change and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The change.
    pub change: Change,
    /// The proxy's answer; `Err` when it could not be asked (or the change was skipped
    /// because a change before it in its group failed), with why.
    pub answer: Result<Answer, String>,
}

impl Applied {
    /// Whether the proxy made it.
    pub fn ok(&self) -> bool {
        self.answer.as_ref().is_ok_and(Answer::ok)
    }
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The plan (its `changes` are in `applied`, or only planned on a dry run).
    pub plan: Plan,
    /// The changes made or tried, in order; empty on a dry run.
    pub applied: Vec<Applied>,
}

impl Report {
    /// Changes the proxy refused or that could not be made.
    pub fn failed(&self) -> usize {
        self.applied.iter().filter(|a| !a.ok()).count()
    }
}

/// One gateway kept at the feed's weights, and the groups it holds.
#[derive(Debug)]
pub struct Syncer {
    config: SyncConfig,
    /// Held groups: since when (unix ms), and whether their alert went out.
    held: BTreeMap<String, Hold>,
}

/// A held group's memory.
#[derive(Debug, Clone, Copy)]
struct Hold {
    since_ms: i64,
    alerted: bool,
}

/// A held group's beginning or end, for the alerts that follow [`CAUSE`].
#[derive(Debug, Clone, PartialEq)]
pub struct HoldEvent {
    /// Trigger at the start, resolve at the end.
    pub event: Event,
    /// The route group.
    pub group: String,
    /// The targets sonde would have set to 0 or deleted (empty at the end).
    pub targets: Vec<String>,
    /// When the hold began, unix ms.
    pub since_ms: i64,
}

impl Syncer {
    /// A syncer of the gateway `config` names.
    pub fn new(config: SyncConfig) -> Syncer {
        Syncer {
            config,
            held: BTreeMap::new(),
        }
    }

    /// Its config.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Brings the gateway to `deployments` (the feed's, [`crate::publish::gateway::deployments`]);
    /// with `dry_run`, only plans. The admin key is read from the environment now, so a
    /// rotated key is used from the next sync on.
    pub async fn sync(
        &mut self,
        deployments: &[Deployment],
        dry_run: bool,
    ) -> Result<Report, SyncError> {
        let name = &self.config.name;
        let key = Secret::from_env(&self.config.key_env).ok_or_else(|| SyncError::MissingKey {
            name: name.clone(),
            var: self.config.key_env.clone(),
        })?;
        let client = Client::new(self.config.url.clone(), key)?;
        let listed = client.list().await?;
        let mut plan = plan::plan(
            deployments,
            &listed,
            self.config.on_down,
            self.config.min_change,
        );
        for held in &plan.held {
            tracing::warn!(
                sync = %name,
                group = %held.group,
                targets = %held.targets.join(", "),
                "every deployment of the group would be at weight 0: kept at their last weights"
            );
        }
        for id in &plan.conflicts {
            tracing::warn!(
                sync = %name,
                target = %id,
                "a deployment sonde did not create has this target's id: left alone, not pushed"
            );
        }
        if dry_run {
            return Ok(Report {
                plan,
                applied: Vec::new(),
            });
        }
        let changes = std::mem::take(&mut plan.changes);
        let mut applied = Vec::with_capacity(changes.len());
        // Groups where a change failed: their later changes (lowering, deleting) are not
        // made, so a group never loses weight it was to gain first.
        let mut failed_groups: Vec<String> = Vec::new();
        for change in changes {
            let group = change.group().to_owned();
            let answer = if failed_groups.contains(&group) && change.lowers() {
                Err("not made: an earlier change of its group failed".to_owned())
            } else {
                client.apply(&change).await.map_err(|err| err.to_string())
            };
            let done = Applied { change, answer };
            log(name, &done);
            if !done.ok() && !failed_groups.contains(&group) {
                failed_groups.push(group);
            }
            applied.push(done);
        }
        Ok(Report { plan, applied })
    }

    /// The holds that began or ended with `held` (a sync's), at `now_ms`; a beginning is
    /// given again at each sync until [`Syncer::alerted`] says it went out.
    pub fn hold_events(&mut self, held: &[Held], now_ms: i64) -> Vec<HoldEvent> {
        let mut events = Vec::new();
        for (group, hold) in &self.held {
            if !held.iter().any(|h| &h.group == group) && hold.alerted {
                events.push(HoldEvent {
                    event: Event::Resolve,
                    group: group.clone(),
                    targets: Vec::new(),
                    since_ms: hold.since_ms,
                });
            }
        }
        self.held
            .retain(|group, _| held.iter().any(|h| &h.group == group));
        for h in held {
            let hold = self.held.entry(h.group.clone()).or_insert(Hold {
                since_ms: now_ms,
                alerted: false,
            });
            if !hold.alerted {
                events.push(HoldEvent {
                    event: Event::Trigger,
                    group: h.group.clone(),
                    targets: h.targets.clone(),
                    since_ms: hold.since_ms,
                });
            }
        }
        events
    }

    /// Records that the beginning of `group`'s hold was told.
    pub fn alerted(&mut self, group: &str) {
        if let Some(hold) = self.held.get_mut(group) {
            hold.alerted = true;
        }
    }
}

/// The notifications of `event` for each of `alerts` that follows [`CAUSE`] and the group
/// (or one of its held targets), from the sync `name` at `location`, made at `now_ms`.
pub fn hold_alerts(
    alerts: &[Alert],
    name: &str,
    location: &str,
    event: &HoldEvent,
    now_ms: i64,
) -> Vec<Notification> {
    let targets = event.targets.join(", ");
    let summary = match event.event {
        Event::Resolve => format!(
            "gateway {name}: group {} follows sonde's weights again",
            event.group
        ),
        _ => format!(
            "gateway {name}: every deployment of group {} would be at weight 0 ({targets} not \
             routable); kept at their last weights",
            event.group
        ),
    };
    alerts
        .iter()
        .filter(|alert| alert.causes.iter().any(|c| c == CAUSE))
        .filter(|alert| {
            alert.follows("", &event.group)
                || event.targets.iter().any(|t| alert.follows(t, &event.group))
        })
        .map(|alert| Notification {
            alert: alert.name.clone(),
            event: event.event,
            dedup_key: format!("sonde/sync/{name}/{}", event.group),
            target: targets.clone(),
            group: event.group.clone(),
            location: location.to_owned(),
            cause: CAUSE.to_owned(),
            state: if event.event == Event::Resolve {
                "synced"
            } else {
                "held"
            }
            .to_owned(),
            summary: summary.clone(),
            started_ms: event.since_ms,
            at_ms: now_ms,
        })
        .collect()
}

/// Logs `done` with the proxy's answer.
fn log(name: &str, done: &Applied) {
    let (action, weight, from) = describe(&done.change);
    let target = done.change.id();
    let group = done.change.group();
    match &done.answer {
        Ok(answer) if answer.ok() => tracing::info!(
            sync = %name, action, target, group, weight, from,
            status = answer.status, answer = %answer.text,
            "gateway changed"
        ),
        Ok(answer) => tracing::error!(
            sync = %name, action, target, group, weight, from,
            status = answer.status, answer = %answer.text,
            "the gateway refused a change"
        ),
        Err(why) => tracing::error!(
            sync = %name, action, target, group, weight, from, error = %why,
            "a change was not made"
        ),
    }
}

/// A change as words and numbers: action, new weight, old weight (an update's only).
pub fn describe(change: &Change) -> (&'static str, f64, Option<f64>) {
    match change {
        Change::Create(d) => ("create", d.weight, None),
        Change::Update { deployment, from } => ("update", deployment.weight, *from),
        Change::Delete {
            why: Gone::Down, ..
        } => ("delete (down)", 0.0, None),
        Change::Delete {
            why: Gone::Unknown, ..
        } => ("delete (no longer a target)", 0.0, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_triggers_until_told_then_resolves_once() {
        let config = crate::config::SyncConfig {
            name: "proxy".into(),
            kind: crate::config::SyncKind::Litellm,
            url: "http://127.0.0.1:4000".parse().unwrap(),
            key_env: "KEY".into(),
            on_down: crate::config::OnDown::Zero,
            min_change: 0.05,
        };
        let mut syncer = Syncer::new(config);
        let held = [Held {
            group: "chat".into(),
            targets: vec!["a".into()],
        }];
        let first = syncer.hold_events(&held, 1_000);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].event, Event::Trigger);
        // Not told yet: given again, with its first time.
        let again = syncer.hold_events(&held, 2_000);
        assert_eq!(again[0].since_ms, 1_000);
        syncer.alerted("chat");
        assert!(syncer.hold_events(&held, 3_000).is_empty());
        let end = syncer.hold_events(&[], 4_000);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].event, Event::Resolve);
        assert!(syncer.hold_events(&[], 5_000).is_empty());
    }
}
