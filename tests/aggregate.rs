//! Aggregation through the real writer and store: window membership, percentiles from
//! rollups against the exact percentiles of the raw values, availability, and incidents from
//! a scripted outcome series.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use sonde::aggregate::Window;
use sonde::aggregate::health::State;
use sonde::config::{Config, HealthConfig, StoreConfig};
use sonde::publish::Snapshot;
use sonde::publish::history::History;
use sonde::publish::windows::summarize;
use sonde::result::{Outcome, ResultRecord};
use sonde::runner::{Scheduled, not_sent};
use sonde::store::writer::Writer;
use sonde::store::{Store, TargetAt};
use sonde::units::now_ms;

fn config() -> Config {
    Config::parse(
        Path::new("t.toml"),
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [[providers.models]]\nid = \"a\"\n[[providers.models]]\nid = \"b\"\n",
    )
    .unwrap()
}

/// A finished run of `probe` on target `index` at unix ms `at`.
fn run_at(config: &Config, index: usize, probe: &str, at: i64, outcome: Outcome) -> ResultRecord {
    let scheduled = Scheduled {
        at: std::time::Instant::now(),
        wall: UNIX_EPOCH + Duration::from_millis(at as u64),
    };
    let probe = config.probes.get(probe).unwrap();
    let mut record = not_sent(
        &config.targets[index],
        probe,
        scheduled,
        outcome,
        String::new(),
    );
    record.error = (outcome != Outcome::Ok).then(|| "scripted".to_owned());
    record
}

fn write_all(dir: &Path, records: Vec<ResultRecord>) -> Store {
    write_with(dir, records, HealthConfig::default())
}

fn write_with(dir: &Path, records: Vec<ResultRecord>, health: HealthConfig) -> Store {
    let store_config = StoreConfig {
        retention_days: 400,
        rollup_retention_days: 400,
        ..StoreConfig::sqlite(dir.join("sonde.db"))
    };
    let config = Config {
        store: store_config.clone(),
        health,
        ..config()
    };
    let store = Store::open(&store_config, &config.prober.location).unwrap();
    let (writer, sender) = Writer::spawn(store, &config, std::sync::Arc::default()).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for record in records {
            sender.send(record).await;
        }
    });
    drop(sender);
    writer.join();
    Store::open_read_only(&store_config).unwrap()
}

/// The nearest-rank percentile of `values`.
fn exact(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[test]
fn rollup_percentiles_match_the_raw_values_and_windows_hold_their_runs() {
    let config = config();
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let minute = 60_000;
    let mut records = Vec::new();
    let mut ttfts = Vec::new();
    // 1200 ok runs over the last 40 minutes, TTFT spread over three orders of magnitude.
    for i in 0..1200i64 {
        let mut r = run_at(
            &config,
            0,
            "stream",
            now - 40 * minute + i * 2000,
            Outcome::Ok,
        );
        let ttft = 20.0 + ((i * 7919) % 1200) as f64 * 1.37 + (i % 7) as f64 * 0.311;
        r.ttft_ms = Some(ttft);
        r.e2e_ms = Some(ttft + 400.0);
        r.tokens_per_s = Some(50.0 + (i % 50) as f64);
        r.itl_gaps_us = vec![10_000 + (i % 10) as u32 * 1000; 39];
        ttfts.push(ttft);
        records.push(r);
    }
    // Failures and rate limits in the last hour, and runs further back.
    for i in 0..100 {
        records.push(run_at(
            &config,
            0,
            "ping",
            now - 30 * minute + i * 100,
            Outcome::ServerError,
        ));
        records.push(run_at(
            &config,
            0,
            "ping",
            now - 30 * minute + i * 100 + 50,
            Outcome::RateLimited,
        ));
    }
    let hours_ago = |h: i64| now - h * 3_600_000;
    records.push(run_at(&config, 0, "ping", hours_ago(3), Outcome::Ok));
    records.push(run_at(&config, 0, "ping", hours_ago(3 * 24), Outcome::Ok));
    records.push(run_at(&config, 0, "ping", hours_ago(20 * 24), Outcome::Ok));
    records.push(run_at(&config, 0, "ping", hours_ago(45 * 24), Outcome::Ok));
    // Target b: only recent.
    records.push(run_at(&config, 1, "ping", now - 1000, Outcome::Ok));

    let store = write_all(dir.path(), records);
    let stats = summarize(&store, &config, now).unwrap();
    let a = stats.iter().find(|s| s.target == "p/a").unwrap();
    let attempts = |w| a.window(w).unwrap().attempts;
    // The 45-day-old run is in no window; 5m holds the stream runs (every 2 s) since the
    // start of the minute four before the current one: 120 to 150 of them.
    assert_eq!(attempts(Window::H1), 1400);
    let five = (0..1200i64)
        .filter(|i| now - 40 * minute + i * 2000 >= Window::M5.start(now))
        .count() as u64;
    assert!((120..=150).contains(&five), "{five}");
    assert_eq!(attempts(Window::M5), five);
    assert_eq!(attempts(Window::H24), 1401);
    assert!(attempts(Window::D7) == 1402, "{}", attempts(Window::D7));
    assert_eq!(attempts(Window::D30), 1403);

    let hour = a.window(Window::H1).unwrap();
    assert_eq!(
        (hour.ok, hour.failures, hour.rate_limited),
        (1200, 100, 100)
    );
    let availability = hour.availability.unwrap();
    assert!(
        (availability - 1200.0 / 1300.0).abs() < 1e-12,
        "rate limits are apart"
    );

    // Rollups (24h) and raw (1h) give the same distribution, within 0.1 % of the exact one.
    let rolled = &a
        .window(Window::H24)
        .unwrap()
        .probe("stream")
        .unwrap()
        .ttft_ms;
    let raw = &hour.probe("stream").unwrap().ttft_ms;
    assert_eq!(rolled, raw);
    assert_eq!(rolled.count, 1200);
    for (q, got) in [
        (0.5, rolled.p50),
        (0.9, rolled.p90),
        (0.95, rolled.p95),
        (0.99, rolled.p99),
    ] {
        let want = exact(&mut ttfts, q);
        let got = got.unwrap();
        assert!(
            (got - want).abs() <= want * 0.001 + 0.001,
            "p{}: {got} from the histogram vs {want} exact",
            q * 100.0
        );
    }
    let itl = &hour.latency.itl_ms;
    assert_eq!(itl.count, 1200 * 39);
    assert!((itl.p50.unwrap() - 14.0).abs() <= 0.02, "{itl:?}");

    // Percentiles the samples cannot support are not shown.
    let b = stats.iter().find(|s| s.target == "p/b").unwrap();
    let ping = &b.window(Window::H1).unwrap().probe("ping").unwrap().ttft_ms;
    assert_eq!(ping.count, 0);
    let five = &a.window(Window::M5).unwrap().latency.ttft_ms;
    assert!(
        five.p95.is_some() && five.p99.is_some(),
        "150 samples support p99"
    );
}

/// `script` (`o` ok, `x` timeout) as ping runs of target 0, `every_ms` apart, from `start`.
fn scripted(config: &Config, script: &str, start: i64, every_ms: i64) -> Vec<ResultRecord> {
    script
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let outcome = if c == 'o' {
                Outcome::Ok
            } else {
                Outcome::Timeout
            };
            run_at(config, 0, "ping", start + i as i64 * every_ms, outcome)
        })
        .collect()
}

#[test]
fn a_scripted_outage_becomes_one_closed_incident() {
    let config = config();
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms() - 20 * 60_000;
    let records = scripted(&config, "ooooxxxxxoooo", start, 60_000);
    let down_only = HealthConfig {
        degraded_below: 0.0,
        ..HealthConfig::default()
    };
    let store = write_with(dir.path(), records, down_only);
    let incidents = store.incidents(0).unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let down = &incidents[0];
    assert_eq!(down.state, State::Down);
    assert_eq!(
        down.start_ms,
        start + 6 * 60_000,
        "down at the third failure"
    );
    assert_eq!(
        down.end_ms,
        Some(start + 10 * 60_000),
        "up at the second success, the hold (2 min) past"
    );
    assert!(down.cause.contains("last: timeout"), "{:?}", down.cause);
    let health = store.health().unwrap();
    assert_eq!(
        health[&TargetAt::new("p/a", &config.prober.location)].state,
        State::Healthy
    );
}

#[test]
fn degraded_and_down_are_one_incident_at_its_worst() {
    let config = config();
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms() - 20 * 60_000;
    let store = write_all(
        dir.path(),
        scripted(&config, "ooooxxxxxoooo", start, 60_000),
    );
    let incidents = store.incidents(0).unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(
        incidents[0].state,
        State::Down,
        "the worst state it reached"
    );
    assert_eq!(incidents[0].start_ms, start + 4 * 60_000, "degraded first");
    assert_eq!(
        incidents[0].end_ms, None,
        "still degraded: 5 failures in the last hour"
    );
    assert_eq!(
        store.health().unwrap()[&TargetAt::new("p/a", &config.prober.location)].state,
        State::Degraded
    );
}

#[test]
fn a_flapping_target_stays_one_incident_in_the_store() {
    // 30 % of runs failing in bursts of three, a run every 10 s, for an hour: undamped,
    // this flipped between degraded and down every 50 s, each flip a new incident.
    let config = config();
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms() - 61 * 60_000;
    let script = "o".repeat(6) + &"xxxooooooo".repeat(36);
    let store = write_all(dir.path(), scripted(&config, &script, start, 10_000));
    let incidents = store.incidents(0).unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].state, State::Down);
}

#[test]
fn a_kept_history_shares_the_incidents_until_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        store: StoreConfig {
            retention_days: 400,
            rollup_retention_days: 400,
            ..StoreConfig::sqlite(dir.path().join("sonde.db"))
        },
        ..config()
    };
    let start = now_ms() - 30 * 60_000;
    let down_only = || HealthConfig {
        degraded_below: 0.0,
        ..HealthConfig::default()
    };
    let outage = scripted(&config, "ooooxxxxx", start, 60_000);
    write_with(dir.path(), outage, down_only());
    let mut history = History::new();
    let now = now_ms();
    let load = |history: &mut History| {
        let store = Store::open_read_only(&config.store).unwrap();
        Snapshot::load_with(&config, &store, now, history).unwrap()
    };
    let (first, second) = (load(&mut history), load(&mut history));
    assert_eq!(first.incidents.len(), 1, "{:?}", first.incidents);
    assert_eq!(first.incidents[0].end_ms, None, "open");
    assert!(
        Arc::ptr_eq(&first.incidents, &second.incidents),
        "unchanged: one copy for both snapshots"
    );

    // Another target goes down: the next snapshot has both, as the store holds them now.
    let other: Vec<ResultRecord> = (0..5)
        .map(|i| run_at(&config, 1, "ping", start + i * 60_000, Outcome::Timeout))
        .collect();
    write_with(dir.path(), other, down_only());
    let third = load(&mut history);
    assert!(!Arc::ptr_eq(&second.incidents, &third.incidents));
    assert_eq!(third.incidents.len(), 2, "{:?}", third.incidents);
    let store = Store::open_read_only(&config.store).unwrap();
    assert_eq!(
        third.incidents,
        Snapshot::load(&config, &store, now).unwrap().incidents
    );
}
