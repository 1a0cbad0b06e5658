//! A notification in each receiver's shape: sonde's own webhook body (or the alert's
//! template), Slack's and Discord's incoming webhooks, PagerDuty's Events API v2 and
//! Alertmanager's `/api/v2/alerts`. URLs and routing keys are read from the environment here,
//! at send time, and go only into the request.

use serde_json::{Value, json};

use crate::aggregate::alerting::{Event, Notification};
use crate::config::{Alert, AlertKind, PAGERDUTY_EVENTS};
use crate::units::rfc3339;

/// How long a firing alert stays firing in Alertmanager without news: reminders renew it, a
/// resolve ends it.
const ALERTMANAGER_FIRING_MS: i64 = 86_400_000;

/// A request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Where to POST.
    pub url: String,
    /// The JSON body.
    pub body: String,
}

/// Why a notification cannot be sent yet (it stays in the outbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

/// sonde's webhook body: every field of the notification, its outbox `id`, times in RFC 3339.
fn webhook_body(n: &Notification, id: i64) -> Value {
    json!({
        "version": 1,
        "id": id,
        "alert": n.alert,
        "event": n.event.as_str(),
        "dedup_key": n.dedup_key,
        "target": n.target,
        "group": n.group,
        "location": n.location,
        "cause": n.cause,
        "state": n.state,
        "summary": n.summary,
        "started_at": rfc3339(n.started_ms),
        "at": rfc3339(n.at_ms),
    })
}

/// The one-line text of chat receivers.
fn text(n: &Notification) -> String {
    let label = match n.event {
        Event::Trigger => "FIRING",
        Event::Reminder => "STILL FIRING",
        Event::Resolve => "RESOLVED",
    };
    format!(
        "[sonde {label}] {} (alert {}, since {})",
        n.summary,
        n.alert,
        rfc3339(n.started_ms)
    )
}

/// `template` with each `{field}` replaced by the field's value, escaped as JSON string
/// contents.
fn fill(template: &str, n: &Notification, id: i64) -> String {
    let body = webhook_body(n, id);
    let mut filled = template.to_owned();
    if let Value::Object(fields) = body {
        for (field, value) in fields {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let escaped = serde_json::to_string(&text).unwrap_or_default();
            filled = filled.replace(
                &format!("{{{field}}}"),
                &escaped[1..escaped.len().saturating_sub(1)],
            );
        }
    }
    filled
}

fn severity(n: &Notification) -> &'static str {
    if n.state == "down" {
        "critical"
    } else {
        "warning"
    }
}

/// The request for notification `n` (outbox row `id`) of `alert`, with secrets from `env`.
pub fn request(
    alert: &Alert,
    n: &Notification,
    id: i64,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Request, Missing> {
    let read = |var: &Option<String>, what: &str| -> Result<Option<String>, Missing> {
        match var {
            None => Ok(None),
            Some(var) => env(var).filter(|v| !v.is_empty()).map(Some).ok_or_else(|| {
                Missing(format!(
                    "environment variable {var} ({what} of alert {}) is not set",
                    alert.name
                ))
            }),
        }
    };
    let url = read(&alert.url_env, "the receiver's URL")?;
    let need_url = || {
        url.clone()
            .ok_or_else(|| Missing(format!("alert {} has no url_env", alert.name)))
    };
    let (url, body) = match alert.kind {
        AlertKind::Webhook => {
            let body = match &alert.template {
                Some(template) => fill(template, n, id),
                None => webhook_body(n, id).to_string(),
            };
            (need_url()?, body)
        }
        AlertKind::Slack => (need_url()?, json!({ "text": text(n) }).to_string()),
        AlertKind::Discord => (need_url()?, json!({ "content": text(n) }).to_string()),
        AlertKind::Pagerduty => {
            let key = read(&alert.routing_key_env, "the routing key")?
                .ok_or_else(|| Missing(format!("alert {} has no routing_key_env", alert.name)))?;
            let mut body = json!({
                "routing_key": key,
                "event_action": if n.event == Event::Resolve { "resolve" } else { "trigger" },
                "dedup_key": n.dedup_key,
            });
            if n.event != Event::Resolve {
                let summary: String = n.summary.chars().take(1024).collect();
                body["payload"] = json!({
                    "summary": summary,
                    "source": if n.location.is_empty() { "sonde" } else { &n.location },
                    "severity": severity(n),
                    "timestamp": rfc3339(n.at_ms),
                    "component": n.target,
                    "group": n.group,
                    "class": n.cause,
                    "custom_details": {
                        "alert": n.alert, "state": n.state, "started_at": rfc3339(n.started_ms),
                    },
                });
            }
            (
                url.unwrap_or_else(|| PAGERDUTY_EVENTS.to_owned()),
                body.to_string(),
            )
        }
        AlertKind::Alertmanager => {
            let base = need_url()?;
            let ends = if n.event == Event::Resolve {
                n.at_ms
            } else {
                n.at_ms + ALERTMANAGER_FIRING_MS
            };
            let body = json!([{
                "labels": {
                    "alertname": "SondeIncident",
                    "alert": n.alert,
                    "target": n.target,
                    "group": n.group,
                    "location": n.location,
                    "cause": n.cause,
                    "severity": severity(n),
                },
                "annotations": { "summary": n.summary, "state": n.state },
                "startsAt": rfc3339(n.started_ms),
                "endsAt": rfc3339(ends),
            }]);
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            (url, body.to_string())
        }
    };
    Ok(Request { url, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Alert;

    fn notification(event: Event) -> Notification {
        Notification {
            alert: "oncall".into(),
            event,
            dedup_key: "sonde/p/m/health/eu".into(),
            target: "p/m".into(),
            group: "m".into(),
            location: "eu".into(),
            cause: "health".into(),
            state: "down".into(),
            summary: "p/m is \"down\"".into(),
            started_ms: 0,
            at_ms: 60_000,
        }
    }

    fn alert(kind: AlertKind) -> Alert {
        Alert::sample(kind)
    }

    fn env(var: &str) -> Option<String> {
        match var {
            "URL" => Some("http://127.0.0.1:1/hook".into()),
            "KEY" => Some("R0UTINGKEY".into()),
            _ => None,
        }
    }

    fn body(kind: AlertKind, event: Event) -> Value {
        let r = request(&alert(kind), &notification(event), 7, &env).unwrap();
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn every_kind_has_its_receivers_shape() {
        let hook = body(AlertKind::Webhook, Event::Trigger);
        assert_eq!(
            (hook["id"].as_i64(), hook["event"].as_str()),
            (Some(7), Some("trigger"))
        );
        assert_eq!(hook["started_at"], "1970-01-01T00:00:00.000Z");
        assert!(
            body(AlertKind::Slack, Event::Resolve)["text"]
                .as_str()
                .unwrap()
                .starts_with("[sonde RESOLVED] p/m is \"down\"")
        );
        assert!(
            body(AlertKind::Discord, Event::Reminder)["content"]
                .as_str()
                .unwrap()
                .starts_with("[sonde STILL FIRING]")
        );
        let pd = body(AlertKind::Pagerduty, Event::Trigger);
        assert_eq!(pd["routing_key"], "R0UTINGKEY");
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["payload"]["severity"], "critical");
        let resolve = body(AlertKind::Pagerduty, Event::Resolve);
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"], pd["dedup_key"]);
        assert!(resolve.get("payload").is_none());
        let am = request(
            &alert(AlertKind::Alertmanager),
            &notification(Event::Resolve),
            1,
            &env,
        )
        .unwrap();
        assert_eq!(am.url, "http://127.0.0.1:1/hook/api/v2/alerts");
        let am: Value = serde_json::from_str(&am.body).unwrap();
        assert_eq!(am[0]["endsAt"], "1970-01-01T00:01:00.000Z");
        assert_eq!(am[0]["labels"]["alertname"], "SondeIncident");
    }

    #[test]
    fn a_template_is_filled_with_escaped_values_and_a_missing_secret_waits() {
        let templated = Alert {
            template: Some(r#"{"msg": "{summary} at {at}", "n": {id}}"#.into()),
            ..alert(AlertKind::Webhook)
        };
        let r = request(&templated, &notification(Event::Trigger), 3, &env).unwrap();
        let value: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(value["msg"], "p/m is \"down\" at 1970-01-01T00:01:00.000Z");
        assert_eq!(value["n"], 3);
        let none = |_: &str| None;
        let err = request(
            &alert(AlertKind::Slack),
            &notification(Event::Trigger),
            1,
            &none,
        )
        .unwrap_err();
        assert!(err.0.contains("URL"), "{err:?}");
    }
}
