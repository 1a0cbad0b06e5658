//! Alerts end to end: a real `sonde run` watches a dead target and tells five real receivers
//! on 127.0.0.1 (webhook, Slack, Discord, PagerDuty and Alertmanager shapes); one receiver is
//! down, the daemon is killed with notifications pending, and after a restart every receiver
//! has had its notification once, in its shape, with no secret in the daemon's log. Through
//! the writer, a scripted outage and recovery put a trigger and then a resolve in the outbox.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use common::daemon::Daemon;
use sonde::aggregate::alerting::Event;
use sonde::config::Config;
use sonde::result::Outcome;
use sonde::store::{Store, writer::import};

/// What a receiver got: path, body, and whether it answered 2xx.
type Received = Arc<Mutex<Vec<(String, serde_json::Value, bool)>>>;

/// A receiver for every alert: records each POST; answers 503 on `/hook` while `down`.
async fn receiver(down: Arc<AtomicBool>) -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let state = (Arc::clone(&received), down);
    let app =
        Router::new().fallback(
            |State((received, down)): State<(Received, Arc<AtomicBool>)>,
             uri: Uri,
             body: String| async move {
                let path = uri.path().to_owned();
                let accept = !(path == "/hook" && down.load(Ordering::SeqCst));
                let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                received.lock().unwrap().push((path, json, accept));
                if accept {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.with_state(state)).await });
    (addr, received)
}

const ALERTS: &str = r#"
[[alerts]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"

[[alerts]]
name = "chat"
kind = "slack"
url_env = "SLACK_URL"

[[alerts]]
name = "gaming"
kind = "discord"
url_env = "DISCORD_URL"

[[alerts]]
name = "pager"
kind = "pagerduty"
url_env = "PD_URL"
routing_key_env = "PD_KEY"

[[alerts]]
name = "am"
kind = "alertmanager"
url_env = "AM_URL"
"#;

fn write_config(dir: &Path, base_url: &str) {
    let text = format!(
        "[store]\npath = \"sonde.db\"\n\n[prober]\nlocation = \"lab\"\n\n[schedules]\nping = \"every 1s\"\n\n\
         [[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nrpm = 600\n\n\
         [[providers.models]]\nid = \"dead\"\nprobes = [\"ping\"]\n{ALERTS}"
    );
    std::fs::write(dir.join("sonde.toml"), text).unwrap();
}

fn successes(received: &Received, path: &str) -> Vec<serde_json::Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, ok)| p == path && *ok)
        .map(|(_, body, _)| body.clone())
        .collect()
}

async fn wait_until(what: &str, limit: Duration, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receiver_gets_its_notification_once_through_an_outage_and_a_kill() {
    let sim =
        common::simulator("[models.\"dead\"]\nerror_rate = 1.0\nerror = \"server_error\"\n").await;
    let down = Arc::new(AtomicBool::new(true));
    let (addr, received) = receiver(Arc::clone(&down)).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &sim.base_url());
    let url = |path: &str| format!("http://{addr}{path}");
    let env = [
        ("HOOK_URL", url("/hook")),
        ("SLACK_URL", url("/slack")),
        ("DISCORD_URL", url("/discord")),
        ("PD_URL", url("/pd")),
        ("PD_KEY", "PDROUTINGKEY0123".to_owned()),
        ("AM_URL", url("/am")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The target goes down after three failed pings; every receiver but the webhook takes
    // its trigger, the webhook answers 503 and is retried.
    let mut first = Daemon::start(dir.path(), &env);
    let got_all_but_hook = || {
        ["/slack", "/discord", "/pd", "/am/api/v2/alerts"]
            .iter()
            .all(|path| !successes(&received, path).is_empty())
    };
    let hook_refused = || {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, ok)| p == "/hook" && !ok)
            .count()
            >= 2
    };
    wait_until("the first notifications", Duration::from_secs(30), || {
        got_all_but_hook() && hook_refused()
    })
    .await;
    // Killed with the webhook's notification still pending.
    let mut process = first.process();
    process.kill().unwrap();
    process.wait().unwrap();
    let first_log = first.text();

    // The receiver is back; the restarted daemon sends what was pending, and only that.
    down.store(false, Ordering::SeqCst);
    let mut second = Daemon::start(dir.path(), &env);
    wait_until(
        "the webhook's notification",
        Duration::from_secs(30),
        || !successes(&received, "/hook").is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    common::terminate(second.process()).await;
    let second_log = second.text();

    for path in ["/hook", "/slack", "/discord", "/pd", "/am/api/v2/alerts"] {
        assert_eq!(
            successes(&received, path).len(),
            1,
            "{path} got its notification once: {:#?}",
            received.lock().unwrap()
        );
    }
    let hook = &successes(&received, "/hook")[0];
    assert_eq!(hook["event"], "trigger");
    assert_eq!(hook["target"], "sim/dead");
    assert_eq!(hook["cause"], "health");
    assert_eq!(hook["state"], "down");
    assert_eq!(hook["dedup_key"], "sonde/sim/dead/health/lab");
    assert!(hook["id"].as_i64().is_some());
    assert!(
        hook["summary"]
            .as_str()
            .unwrap()
            .contains("failures in a row"),
        "{hook}"
    );
    let slack = &successes(&received, "/slack")[0];
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("[sonde FIRING] sim/dead is down")
    );
    assert!(successes(&received, "/discord")[0]["content"].is_string());
    let pd = &successes(&received, "/pd")[0];
    assert_eq!(pd["routing_key"], "PDROUTINGKEY0123");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["dedup_key"], "sonde/sim/dead/health/lab");
    assert_eq!(pd["payload"]["severity"], "critical");
    let am = &successes(&received, "/am/api/v2/alerts")[0];
    assert_eq!(am[0]["labels"]["target"], "sim/dead");
    assert_eq!(am[0]["labels"]["alertname"], "SondeIncident");

    // Nothing is left pending, and no secret reached the log.
    let config = Config::load(&dir.path().join("sonde.toml")).unwrap();
    let store = Store::open_read_only(&config.store).unwrap();
    assert!(store.pending_notifications("lab", 10).unwrap().is_empty());
    for log in [&first_log, &second_log] {
        assert!(!log.contains("PDROUTINGKEY0123"), "{log}");
        assert!(!log.contains(&format!("{addr}/hook")), "{log}");
    }
    assert!(
        first_log.contains("notification not delivered"),
        "the refusals are logged: {first_log}"
    );
}

/// Stores, through the writer, five failures then seventy successes a minute apart, ending
/// now: down, degraded while the failures are within the last hour, then healthy.
fn store_outage(config: &Config) {
    let now = sonde::units::now_ms();
    let history: Vec<_> = (0..75)
        .map(|i| {
            let outcome = if i < 5 {
                Outcome::ServerError
            } else {
                Outcome::Ok
            };
            common::scripted(config, 0, now - 80 * 60_000 + i * 60_000, outcome, 100.0)
        })
        .collect();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, config, history).unwrap();
}

#[test]
fn an_outage_and_its_recovery_put_a_trigger_then_a_resolve_in_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9/v1");
    let config = Config::load(&dir.path().join("sonde.toml")).unwrap();
    store_outage(&config);
    let store = Store::open_read_only(&config.store).unwrap();
    let pending = store.pending_notifications("lab", 100).unwrap();
    let hook: Vec<Event> = pending
        .iter()
        .filter(|(_, n)| n.alert == "hook")
        .map(|(_, n)| n.event)
        .collect();
    assert_eq!(hook, [Event::Trigger, Event::Resolve], "{pending:#?}");
    assert_eq!(pending.len(), 10, "five alerts, two notifications each");
    assert!(pending.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    let resolve = &pending
        .iter()
        .find(|(_, n)| n.event == Event::Resolve)
        .unwrap()
        .1;
    assert_eq!(resolve.state, "healthy");
    assert!(
        resolve.summary.contains("healthy again"),
        "{}",
        resolve.summary
    );
}

#[test]
fn an_slo_is_published_with_its_attainment_and_error_budget() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[store]\npath = \"sonde.db\"\n\n[groups.\"llama\"]\nslo = { availability = 0.99, ttft_p95_ms = 300, window = \"24h\" }\n\n\
                [[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n\
                [[providers.models]]\nid = \"dead\"\ngroup = \"llama\"\nprobes = [\"stream\"]\n";
    std::fs::write(dir.path().join("sonde.toml"), text).unwrap();
    let config = Config::load(&dir.path().join("sonde.toml")).unwrap();
    assert!(
        config.targets[0].model.slo.is_some(),
        "the group's SLO is the target's"
    );
    let now = sonde::units::now_ms();
    // 200 runs in the last hours: 4 provider faults, and 6 of the 196 successes slower
    // than the 300 ms bound.
    let history: Vec<_> = (0..200)
        .map(|i| {
            let at = now - 200 * 60_000 + i * 60_000;
            let outcome = if i % 50 == 7 {
                Outcome::ServerError
            } else {
                Outcome::Ok
            };
            let ttft = if i % 33 == 5 { 500.0 } else { 100.0 };
            common::scripted(&config, 0, at, outcome, ttft)
        })
        .collect();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, history).unwrap();
    let store = Store::open_read_only(&config.store).unwrap();
    let snapshot = sonde::publish::Snapshot::load(&config, &store, now).unwrap();
    let files = sonde::publish::build(&config, &snapshot).unwrap();
    let feed: serde_json::Value = serde_json::from_slice(&files["feed.json"]).unwrap();
    let slo = &feed["targets"][0]["slo"];
    assert_eq!(slo["window"], "24h");
    let availability = &slo["availability"];
    assert_eq!(
        (
            availability["good"].as_u64(),
            availability["total"].as_u64()
        ),
        (Some(196), Some(200))
    );
    assert_eq!(availability["met"], false);
    // 200 runs at 99 % allow 2 faults; 4 spent the budget twice over.
    assert!(
        (availability["budget_left"].as_f64().unwrap() + 1.0).abs() < 1e-9,
        "{slo}"
    );
    let ttft = &slo["ttft"];
    assert_eq!(
        (ttft["good"].as_u64(), ttft["total"].as_u64()),
        (Some(190), Some(196))
    );
    assert_eq!(ttft["met"], true);
    // 5 % of 196 is 9.8 slow runs allowed; 6 spent leave 38.8 %.
    assert!((ttft["budget_left"].as_f64().unwrap() - (1.0 - 6.0 / 9.8)).abs() < 1e-9);
    let page = files
        .iter()
        .find(|(name, _)| name.starts_with("t/sim_dead-"))
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .unwrap();
    assert!(page.contains("Service level, last 24h"), "{page}");
    assert!(page.contains("exhausted (100 % over)"), "{page}");
    let index = String::from_utf8_lossy(&files["index.html"]);
    assert!(
        index.contains("SLO missed (24h) · budget 0 % left"),
        "{index}"
    );
    let stats = sonde::publish::windows::summarize(&store, &config, now).unwrap();
    let feed = sonde::publish::feed::build(&config, &stats, &snapshot.locations, now);
    let metrics = sonde::publish::metrics::render(&stats, &feed, None);
    assert!(metrics.contains(
        "sonde_slo_attained_ratio{target=\"sim/dead\",objective=\"availability\",window=\"24h\"} 0.98"
    ), "{metrics}");
}

/// The notifications each burn alert made from `fails` (which minutes of a history of
/// `minutes` runs, one a minute, ending now, fail).
fn burn_alerts(minutes: i64, fails: impl Fn(i64) -> bool) -> Vec<(String, Event)> {
    let dir = tempfile::tempdir().unwrap();
    let text = "[store]\npath = \"sonde.db\"\n\n\
                [[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n\
                [[providers.models]]\nid = \"m\"\nprobes = [\"stream\"]\nslo = { availability = 0.99 }\n\n\
                [[alerts]]\nname = \"fast\"\nkind = \"webhook\"\nurl_env = \"HOOK\"\ncauses = [\"slo_fast\"]\n\n\
                [[alerts]]\nname = \"slow\"\nkind = \"webhook\"\nurl_env = \"HOOK\"\ncauses = [\"slo_slow\"]\n";
    std::fs::write(dir.path().join("sonde.toml"), text).unwrap();
    let config = Config::load(&dir.path().join("sonde.toml")).unwrap();
    let now = sonde::units::now_ms();
    let history: Vec<_> = (0..minutes)
        .map(|m| {
            let outcome = if fails(m) {
                Outcome::ServerError
            } else {
                Outcome::Ok
            };
            common::scripted(&config, 0, now - (minutes - m) * 60_000, outcome, 100.0)
        })
        .collect();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, history).unwrap();
    let store = Store::open_read_only(&config.store).unwrap();
    store
        .pending_notifications(&config.prober.location, 100)
        .unwrap()
        .into_iter()
        .map(|(_, n)| (n.alert, n.event))
        .collect()
}

#[test]
fn a_fast_burn_fires_the_fast_alert_and_a_slow_burn_the_slow_one() {
    // Six good hours, then twenty minutes failing one run in two: 14.4× over the hour and
    // the last 5 minutes, but under 6× over six hours.
    let fast = burn_alerts(380, |m| m >= 360 && m % 2 == 0);
    assert_eq!(fast, [("fast".to_owned(), Event::Trigger)], "{fast:?}");
    // One run in twelve failing for six hours and a half: 8.3× over six hours and over 30
    // minutes, never 14.4× over an hour.
    let slow = burn_alerts(390, |m| m % 12 == 0);
    assert_eq!(slow, [("slow".to_owned(), Event::Trigger)], "{slow:?}");
    // A fast burn that stopped: triggered, then resolved once its short window is quiet.
    let over = burn_alerts(400, |m| (360..380).contains(&m) && m % 2 == 0);
    assert_eq!(
        over,
        [
            ("fast".to_owned(), Event::Trigger),
            ("fast".to_owned(), Event::Resolve)
        ],
        "{over:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_notifications_reach_a_refusing_receiver_in_order_once_each() {
    let down = Arc::new(AtomicBool::new(true));
    let (addr, received) = receiver(Arc::clone(&down)).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9/v1");
    let config = Config::load(&dir.path().join("sonde.toml")).unwrap();
    // An outage and its recovery: a trigger and a resolve for each of the five alerts.
    store_outage(&config);

    let store = Store::open(&config.store, &config.prober.location).unwrap();
    let (writer, sender) =
        sonde::store::writer::Writer::spawn(store, &config, Arc::default()).unwrap();
    let urls: std::collections::HashMap<&str, String> = [
        ("HOOK_URL", "/hook"),
        ("SLACK_URL", "/slack"),
        ("DISCORD_URL", "/discord"),
        ("PD_URL", "/pd"),
        ("AM_URL", "/am"),
    ]
    .into_iter()
    .map(|(var, path)| (var, format!("http://{addr}{path}")))
    .collect();
    let env: sonde::notify::Env = Arc::new(move |var| match var {
        "PD_KEY" => Some("KEY".to_owned()),
        var => urls.get(var).cloned(),
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let delivering = tokio::spawn(sonde::notify::deliver(
        config.alerts.clone(),
        config.store.clone(),
        "lab".to_owned(),
        sender.clone(),
        env,
        shutdown.clone(),
    ));
    // The webhook refuses twice, then takes what was held back, in order.
    wait_until("two refusals", Duration::from_secs(20), || {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _, ok)| path == "/hook" && !ok)
            .count()
            >= 2
    })
    .await;
    down.store(false, Ordering::SeqCst);
    wait_until("every notification", Duration::from_secs(30), || {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, ok)| *ok)
            .count()
            >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    delivering.await.unwrap();
    drop(sender);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();

    let hook: Vec<String> = successes(&received, "/hook")
        .iter()
        .map(|body| body["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(hook, ["trigger", "resolve"], "in order, once each");
    let pd: Vec<String> = successes(&received, "/pd")
        .iter()
        .map(|body| body["event_action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pd, ["trigger", "resolve"]);
    for path in ["/slack", "/discord", "/am/api/v2/alerts"] {
        assert_eq!(successes(&received, path).len(), 2, "{path}");
    }
    let store = Store::open_read_only(&config.store).unwrap();
    assert!(
        store.pending_notifications("lab", 100).unwrap().is_empty(),
        "every delivery was recorded"
    );
}
