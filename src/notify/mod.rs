//! Delivering notifications: at least once, in order, from the store's outbox.
//!
//! The writer puts each notification in the outbox in the transaction of the change behind
//! it (`aggregate::alerting`). This task reads this location's pending rows every second,
//! oldest first, and POSTs each to its alert's receiver ([`render`]); a 2xx answer marks the
//! row sent (through the writer, with its next batch). A failure holds that alert's later
//! rows back — so a receiver gets its notifications in order — and is retried after 1 s,
//! 2 s, 4 s, … up to 5 minutes; other alerts go on. Pending rows survive a restart and are
//! sent then. A row can be sent twice only when the daemon dies between a receiver's answer
//! and the mark; every body carries the row's `id` (and PagerDuty's `dedup_key`) for the
//! receiver to drop the second.

pub mod render;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::aggregate::alerting::Notification;
use crate::config::{Alert, StoreConfig};
use crate::store::Store;
use crate::store::writer::RecordSender;
use crate::units::now_ms;

/// How often the outbox is read.
const POLL: Duration = Duration::from_secs(1);
/// The most rows read at once.
const PAGE: usize = 100;
/// How long a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between attempts at one alert.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// An alert whose receiver failed: attempts so far, and when to try again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    next: Instant,
}

/// Where receivers' URLs and keys are looked up by variable name: the process environment
/// for the daemon.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment, as an [`Env`].
pub fn process_env() -> Env {
    Arc::new(|var| std::env::var(var).ok())
}

/// Sends `location`'s pending notifications of `alerts` until `shutdown`, with secrets from
/// `env`.
pub async fn deliver(
    alerts: Vec<Alert>,
    store: StoreConfig,
    location: String,
    records: RecordSender,
    env: Env,
    shutdown: CancellationToken,
) {
    let http = match client() {
        Ok(http) => http,
        Err(err) => {
            tracing::error!(error = %err.without_url(), "cannot build the notification client: no alert will be sent");
            return;
        }
    };
    let alerts: HashMap<String, Alert> = alerts.into_iter().map(|a| (a.name.clone(), a)).collect();
    let mut reader: Option<Store> = None;
    // Rows a receiver took that the store does not show as sent yet.
    let mut taken: HashSet<i64> = HashSet::new();
    let mut failing: HashMap<String, Backoff> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let (back, pending) = read(reader.take(), store.clone(), location.clone()).await;
        reader = back;
        taken.retain(|id| pending.iter().any(|(row, _)| row == id));
        let mut held: HashSet<&str> = HashSet::new();
        for (id, notification) in &pending {
            if taken.contains(id) || held.contains(notification.alert.as_str()) {
                continue;
            }
            let Some(alert) = alerts.get(&notification.alert) else {
                tracing::warn!(alert = %notification.alert, id, "a notification for an alert no longer configured is dropped");
                taken.insert(*id);
                records.delivered(vec![(*id, now_ms())]).await;
                continue;
            };
            if failing
                .get(&alert.name)
                .is_some_and(|b| b.next > Instant::now())
            {
                held.insert(&notification.alert);
                continue;
            }
            match send(&http, alert, notification, *id, env.as_ref()).await {
                Ok(()) => {
                    tracing::info!(alert = %alert.name, id, event = notification.event.as_str(), target_id = %notification.target, "notification delivered");
                    taken.insert(*id);
                    failing.remove(&alert.name);
                    if !records.delivered(vec![(*id, now_ms())]).await {
                        return;
                    }
                }
                Err(why) => {
                    let backoff = failing.entry(alert.name.clone()).or_insert(Backoff {
                        attempts: 0,
                        next: Instant::now(),
                    });
                    backoff.attempts += 1;
                    let wait = Duration::from_secs(1 << backoff.attempts.min(9)).min(MAX_BACKOFF);
                    backoff.next = Instant::now() + wait;
                    tracing::warn!(alert = %alert.name, id, attempts = backoff.attempts, retry_in = ?wait, error = %why, "notification not delivered; it stays in the outbox");
                    held.insert(&notification.alert);
                }
            }
        }
    }
}

/// This location's pending rows, opening the reader when it is not open; on an error the
/// reader is dropped (and reopened next time) and nothing is pending.
async fn read(
    reader: Option<Store>,
    config: StoreConfig,
    location: String,
) -> (Option<Store>, Vec<(i64, Notification)>) {
    let read = tokio::task::spawn_blocking(move || {
        let store = match reader {
            Some(store) => store,
            None => Store::open_read_only(&config)?,
        };
        let rows = store.pending_notifications(&location, PAGE)?;
        Ok::<_, crate::store::StoreError>((store, rows))
    })
    .await;
    match read {
        Ok(Ok((store, rows))) => (Some(store), rows),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "reading the notification outbox failed; retrying");
            (None, Vec::new())
        }
        Err(_) => (None, Vec::new()),
    }
}

/// The HTTP client notifications are sent with: no redirects followed, a receiver's
/// timeout.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    crate::runner::transport::plain_client(TIMEOUT)
}

/// POSTs one notification (as `id`) to `alert`'s receiver; the error says why it was not
/// taken, never the URL or key.
pub async fn send(
    http: &reqwest::Client,
    alert: &Alert,
    notification: &Notification,
    id: i64,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<(), String> {
    let request = render::request(alert, notification, id, env).map_err(|missing| missing.0)?;
    let response = http
        .post(&request.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(request.body)
        .send()
        .await
        .map_err(|err| err.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered HTTP {}", status.as_u16()))
    }
}
