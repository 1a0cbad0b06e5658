//! `[[alerts]]`: who is told when an incident opens, lasts or closes, and how. URLs and
//! routing keys come from environment variables named here, like API keys: the file never
//! holds a secret.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::daemon::{RawDuration, bounded, duration};
use super::error::{Errors, Source};

/// PagerDuty's Events API v2 endpoint, when an alert names no `url_env`.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// What an alert may follow: availability incidents, quality drifts, an SLO's fast and slow
/// error-budget burn, and a gateway sync holding a group at its last weights.
const CAUSES: [&str; 5] = ["health", "quality", "slo_fast", "slo_slow", "sync"];

/// Where a notification goes, in which shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A POST of sonde's documented JSON body, or of `template` filled in.
    Webhook,
    /// A Slack incoming webhook (`{"text": …}`).
    Slack,
    /// A Discord webhook (`{"content": …}`).
    Discord,
    /// PagerDuty's Events API v2: trigger and resolve under a stable `dedup_key`.
    Pagerduty,
    /// An Alertmanager's `/api/v2/alerts`, so its routing, grouping and silences apply.
    Alertmanager,
}

impl AlertKind {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Webhook => "webhook",
            AlertKind::Slack => "slack",
            AlertKind::Discord => "discord",
            AlertKind::Pagerduty => "pagerduty",
            AlertKind::Alertmanager => "alertmanager",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    name: Spanned<String>,
    kind: AlertKind,
    #[serde(default)]
    url_env: Option<Spanned<String>>,
    #[serde(default)]
    routing_key_env: Option<Spanned<String>>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    causes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    failure_threshold: Option<Spanned<u32>>,
    #[serde(default)]
    success_threshold: Option<Spanned<u32>>,
    #[serde(default = "yes")]
    send_on_resolved: bool,
    #[serde(default)]
    reminder_every: Option<RawDuration>,
    #[serde(default)]
    max_per_hour: Option<Spanned<u32>>,
}

fn yes() -> bool {
    true
}

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Unique name; part of every notification.
    pub name: String,
    /// The receiver's shape.
    pub kind: AlertKind,
    /// The variable holding the receiver's URL (for PagerDuty, optional: Events API v2).
    pub url_env: Option<String>,
    /// The variable holding PagerDuty's routing (integration) key.
    pub routing_key_env: Option<String>,
    /// A webhook's body with `{target}`, `{group}`, `{location}`, `{cause}`, `{state}`,
    /// `{event}`, `{summary}`, `{dedup_key}`, `{at}`, `{started_at}` and `{id}` replaced
    /// (as JSON string contents); sonde's own body when absent.
    pub template: Option<String>,
    /// Targets it follows (ids; a trailing `*` matches a prefix); all when empty.
    pub targets: Vec<String>,
    /// Route groups it follows; all when empty.
    pub groups: Vec<String>,
    /// What it follows: `health`, `quality`, `slo_fast`, `slo_slow`, `sync`.
    pub causes: Vec<String>,
    /// Runs of one open incident in a row before it triggers.
    pub failure_threshold: u32,
    /// Runs after the incident closed, in a row, before it resolves.
    pub success_threshold: u32,
    /// Whether a resolve is sent.
    pub send_on_resolved: bool,
    /// Remind this often while it stays triggered.
    pub reminder_every: Option<Duration>,
    /// Notifications it may create in any hour: past them, triggers wait (they are made on
    /// a later run) and reminders are skipped; resolves of sent triggers always go.
    pub max_per_hour: u32,
}

impl Alert {
    /// An alert of `kind` named `oncall` on every target's health, secrets in `URL` and
    /// `KEY`, every other setting at its default: for unit tests.
    #[cfg(test)]
    pub fn sample(kind: AlertKind) -> Alert {
        Alert {
            name: "oncall".into(),
            kind,
            url_env: Some("URL".into()),
            routing_key_env: Some("KEY".into()),
            template: None,
            targets: Vec::new(),
            groups: Vec::new(),
            causes: vec!["health".into()],
            failure_threshold: 1,
            success_threshold: 1,
            send_on_resolved: true,
            reminder_every: None,
            max_per_hour: 20,
        }
    }

    /// Whether it follows `target` of `group`.
    pub fn follows(&self, target: &str, group: &str) -> bool {
        let target_ok = self.targets.is_empty()
            || self
                .targets
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => target.starts_with(prefix),
                    None => pattern == target,
                });
        target_ok && (self.groups.is_empty() || self.groups.iter().any(|g| g == group))
    }
}

pub(super) fn alerts(source: &Source<'_>, errors: &mut Errors, raw: Vec<RawAlert>) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("alerts[{i}].{field}");
        let name = raw.name.get_ref().clone();
        if name.is_empty() || alerts.iter().any(|a| a.name == name) {
            errors.push(source.error(
                Some(raw.name.span()),
                key("name"),
                "every alert needs a name of its own",
            ));
        }
        let env = |errors: &mut Errors, field: &str, value: Option<Spanned<String>>| {
            let value = value?;
            if super::is_env_name(value.get_ref()) {
                Some(value.into_inner())
            } else {
                errors.push(source.error(
                    Some(value.span()),
                    key(field),
                    "this must be the NAME of an environment variable holding it, never the \
                     URL or key itself",
                ));
                None
            }
        };
        let name_span = raw.name.span();
        let (url_given, key_given) = (raw.url_env.is_some(), raw.routing_key_env.is_some());
        let url_env = env(errors, "url_env", raw.url_env);
        let routing_key_env = env(errors, "routing_key_env", raw.routing_key_env);
        match raw.kind {
            AlertKind::Pagerduty if !key_given => errors.push(source.error(
                Some(name_span.clone()),
                key("routing_key_env"),
                "a pagerduty alert needs `routing_key_env`: the variable holding the \
                 integration's routing key",
            )),
            AlertKind::Pagerduty => {}
            _ if !url_given => errors.push(source.error(
                Some(name_span.clone()),
                key("url_env"),
                format!(
                    "a {} alert needs `url_env`: the variable holding the receiver's URL",
                    raw.kind.as_str()
                ),
            )),
            _ => {}
        }
        let causes = match raw.causes {
            Some(causes) => {
                if let Some(bad) = causes
                    .get_ref()
                    .iter()
                    .find(|c| !CAUSES.contains(&c.as_str()))
                {
                    errors.push(source.error(
                        Some(causes.span()),
                        key("causes"),
                        format!(
                            "{bad:?} is not a cause: health, quality, slo_fast, slo_slow or sync"
                        ),
                    ));
                }
                causes.into_inner()
            }
            None => CAUSES.iter().map(|c| c.to_string()).collect(),
        };
        let threshold = |errors: &mut Errors, field: &str, value| {
            bounded(source, errors, &key(field), value, 1..=10_000, 1)
        };
        alerts.push(Alert {
            name,
            kind: raw.kind,
            url_env,
            routing_key_env,
            template: raw.template,
            targets: raw.targets,
            groups: raw.groups,
            causes,
            failure_threshold: threshold(errors, "failure_threshold", raw.failure_threshold),
            success_threshold: threshold(errors, "success_threshold", raw.success_threshold),
            send_on_resolved: raw.send_on_resolved,
            reminder_every: raw.reminder_every.map(|every| {
                duration(
                    source,
                    errors,
                    &key("reminder_every"),
                    Some(every),
                    Duration::from_secs(60)..=Duration::from_secs(7 * 86_400),
                    Duration::from_secs(3600),
                )
            }),
            max_per_hour: bounded(
                source,
                errors,
                &key("max_per_hour"),
                raw.max_per_hour,
                1..=10_000,
                20,
            ),
        });
    }
    alerts
}
