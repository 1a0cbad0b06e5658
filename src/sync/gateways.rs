//! The daemon's gateways: every `[[sync]]` brought to the feed after each publish (by the
//! daemon holding the publisher lock only), and the alerts of the groups they hold.
//!
//! A hold's alert goes straight to the receivers of the alerts that follow the `sync`
//! cause, not through the store's outbox: it is a fact of this publisher's last sync, not
//! of a recorded run. A trigger is sent again at each sync until every receiver took it;
//! the resolve is sent once.

use crate::aggregate::alerting::Event;
use std::sync::Arc;

use crate::config::{Alert, Config};
use crate::counters::{RunCounters, SyncCounts};
use crate::notify::{self, Env};
use crate::publish::feed::Feed;
use crate::publish::gateway;
use crate::units::now_ms;

use super::{CAUSE, HoldEvent, Syncer, hold_alerts};

/// Every `[[sync]]` of a daemon.
#[derive(Debug)]
pub struct Gateways {
    syncers: Vec<Syncer>,
    /// The alerts that follow [`CAUSE`].
    alerts: Vec<Alert>,
    /// This daemon's location, on its notifications.
    location: String,
    /// Where what each sync did is counted, for `/metrics`.
    counters: Option<Arc<RunCounters>>,
}

impl Gateways {
    /// The gateways of `config`, counting what they do in `counters`.
    pub fn new(config: &Config, counters: Option<Arc<RunCounters>>) -> Gateways {
        Gateways {
            syncers: config.sync.iter().cloned().map(Syncer::new).collect(),
            alerts: config
                .alerts
                .iter()
                .filter(|a| a.causes.iter().any(|c| c == CAUSE))
                .cloned()
                .collect(),
            location: config.prober.location.clone(),
            counters,
        }
    }

    /// Brings every gateway to `feed` (of `config`), logs what each did, and tells the
    /// alerts of holds begun and ended, with receivers' secrets from `env`. A gateway that
    /// fails is logged and tried again after the next publish.
    pub async fn sync(&mut self, config: &Config, feed: &Feed, env: &Env) {
        let deployments = gateway::deployments(config, feed);
        for syncer in &mut self.syncers {
            let name = syncer.config().name.clone();
            let note = |note: &dyn Fn(&mut SyncCounts)| {
                if let Some(counters) = &self.counters {
                    counters.note_sync(&name, note);
                }
            };
            let report = match syncer.sync(&deployments, false).await {
                Ok(report) => report,
                Err(err) => {
                    note(&|counts| counts.failures += 1);
                    tracing::error!(sync = %name, error = %err, "gateway sync failed; tried again after the next publish");
                    continue;
                }
            };
            let now = now_ms();
            note(&|counts| {
                counts.syncs += 1;
                for applied in report.applied.iter().filter(|a| a.ok()) {
                    *counts.changes.entry(applied.change.action()).or_default() += 1;
                }
                counts.refused += report.failed() as u64;
                counts.held = report.plan.held.len() as u64;
                if report.failed() == 0 {
                    counts.last_success_ms = now;
                }
            });
            tracing::info!(
                sync = %name,
                changes = report.applied.len(),
                failed = report.failed(),
                unchanged = report.plan.unchanged,
                held = report.plan.held.len(),
                conflicts = report.plan.conflicts.len(),
                "gateway synced"
            );
            for event in syncer.hold_events(&report.plan.held, now) {
                let told = tell(&self.alerts, &self.location, &name, &event, now, env).await;
                if told && event.event == Event::Trigger {
                    syncer.alerted(&event.group);
                }
            }
        }
    }
}

/// Sends the notifications of `event` (of the sync `name`, seen at `location`) to `alerts`;
/// whether every receiver took its own.
async fn tell(
    alerts: &[Alert],
    location: &str,
    name: &str,
    event: &HoldEvent,
    now: i64,
    env: &Env,
) -> bool {
    let notifications = hold_alerts(alerts, name, location, event, now);
    if notifications.is_empty() {
        return true;
    }
    let http = match notify::client() {
        Ok(http) => http,
        Err(err) => {
            tracing::error!(error = %err.without_url(), "cannot build the notification client");
            return false;
        }
    };
    let mut all = true;
    for notification in &notifications {
        let Some(alert) = alerts.iter().find(|a| a.name == notification.alert) else {
            continue;
        };
        match notify::send(&http, alert, notification, now, env.as_ref()).await {
            Ok(()) => {
                tracing::info!(alert = %alert.name, sync = %name, group = %event.group, event = event.event.as_str(), "notification delivered")
            }
            Err(why) => {
                all = false;
                tracing::warn!(alert = %alert.name, sync = %name, group = %event.group, error = %why, "notification not delivered; tried again after the next sync");
            }
        }
    }
    all
}
