//! The daemon against the simulator: rate limits seen from the provider's side, pauses on
//! 429, budgets, overlap skipping, durability across `kill -9`, and the single-writer lock.
//! Rate windows are scaled down (`rate_window`) so a test of seconds checks the real limiter.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sonde::config::Config;
use sonde::daemon;
use sonde::result::Outcome;
use sonde::store::Store;
use tokio_util::sync::CancellationToken;

const SCENARIO: &str = r#"
[default]
token_ms = 1

[models.always-429]
error_rate = 1.0
error = "rate_limited"
retry_after_s = 2

[models.slow]
ttft_ms = 2500

[models.unavailable]
error_rate = 1.0
error = "unavailable"
retry_after_s = 1
"#;

/// A config in `dir` for a provider at `base_url` with `provider_extra`, models `models`
/// (each on `probes`), `[schedules]` and `[store]` in the same dir.
fn write_config(
    dir: &Path,
    base_url: &str,
    provider_extra: &str,
    models: &[&str],
    schedules: &str,
) -> Config {
    let mut text = format!(
        "[store]\npath = \"sonde.db\"\n\n[schedules]\n{schedules}\n\n[[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n{provider_extra}\n"
    );
    for model in models {
        text.push_str(&format!(
            "[[providers.models]]\nid = \"{model}\"\ninput_price = 1000.0\noutput_price = 1000.0\nprobes = [\"ping\"]\n"
        ));
    }
    let path = dir.join("sonde.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

/// Runs the daemon in-process for `duration`, then stops it.
async fn run_for(
    config: Config,
    duration: Duration,
) -> std::sync::Arc<sonde::counters::RunCounters> {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        stop.cancel();
    });
    daemon::run(config, shutdown, Duration::from_secs(5))
        .await
        .expect("daemon runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_targets_never_pass_the_providers_rate_limit() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = models.iter().map(String::as_str).collect();
    // rpm = 30 over a 6 s window: the limit of a 30 rpm free tier, ten times faster.
    let config = write_config(
        dir.path(),
        &sim.base_url(),
        "rpm = 30\nrate_window = \"6s\"\nmax_concurrency = 4",
        &names,
        "ping = \"every 1s\"",
    );
    let started = Instant::now();
    let stats = run_for(config, Duration::from_secs(14)).await;
    let arrivals: Vec<Instant> = sim.requests().iter().map(|r| r.at).collect();
    assert!(
        arrivals.len() >= 60,
        "the limiter lets the allowed rate through: {} requests in {:?}",
        arrivals.len(),
        started.elapsed()
    );
    for (i, first) in arrivals.iter().enumerate() {
        let in_window = arrivals[i..]
            .iter()
            .take_while(|at| at.duration_since(*first) < Duration::from_secs(6))
            .count();
        assert!(
            in_window <= 30,
            "{in_window} requests within 6 s of request {i}"
        );
    }
    assert!(
        stats.daemon.skipped_overlap.load(Ordering::Relaxed) > 0,
        "runs waiting for the limiter make later ticks skip, not queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_pauses_the_whole_provider() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sim.base_url(),
        "rpm = 600\nmax_concurrency = 1",
        &["always-429", "fine"],
        "ping = \"every 1s\"",
    );
    let stats = run_for(config, Duration::from_secs(7)).await;
    let requests = sim.requests();
    let limited: Vec<Instant> = requests
        .iter()
        .filter(|r| r.model == "always-429")
        .map(|r| r.at)
        .collect();
    assert!(!limited.is_empty());
    assert!(stats.daemon.rate_limit_pauses.load(Ordering::Relaxed) >= 1);
    for at in &limited {
        let too_soon: Vec<_> = requests
            .iter()
            .filter(|r| r.at > *at && r.at.duration_since(*at) < Duration::from_secs(2))
            .collect();
        assert!(
            too_soon.is_empty(),
            "requests within 2 s of a 429: {too_soon:?}"
        );
    }
    // Unpaused, two jobs every second would send 14; each 2 s pause lets at most one
    // request per job through.
    assert!(
        requests.len() <= 8,
        "7 s with a 2 s pause after every 429: {}",
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_cap_stops_sending_and_survives_a_restart() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    // Each ping costs about $0.03 at $1000 per million tokens; its worst case is about
    // $0.09. A $0.2 cap allows a handful.
    let config = write_config(
        dir.path(),
        &sim.base_url(),
        "rpm = 600\nmax_concurrency = 1\nbudget = { monthly_usd = 0.2 }",
        &["fine"],
        "ping = \"every 1s\"",
    );
    let stats = run_for(config.clone(), Duration::from_secs(8)).await;
    assert!(stats.daemon.skipped_budget.load(Ordering::Relaxed) >= 2);
    let store = Store::open_read_only(&config.store).unwrap();
    let results = store.results_since(0, None).unwrap();
    let sent: Vec<_> = results
        .iter()
        .filter(|(r, _)| r.outcome != Outcome::SkippedBudget)
        .collect();
    let spent: f64 = sent.iter().filter_map(|(r, _)| r.cost_usd).sum();
    assert!(spent <= 0.2, "spent ${spent} of a $0.2 cap");
    assert_eq!(
        sim.requests().len(),
        sent.len(),
        "a skipped run sends nothing"
    );
    let first_skip = results
        .iter()
        .position(|(r, _)| r.outcome == Outcome::SkippedBudget)
        .expect("the cap was reached");
    assert!(
        results[first_skip..]
            .iter()
            .all(|(r, _)| r.outcome == Outcome::SkippedBudget),
        "no run is sent once the cap is reached"
    );
    let skipped = &results[first_skip].0;
    assert!(
        skipped.error.as_deref().unwrap().contains("monthly budget"),
        "{skipped:?}"
    );
    drop(store);

    let before = sim.requests().len();
    let stats = run_for(config, Duration::from_secs(3)).await;
    assert_eq!(sim.requests().len(), before, "spend survived the restart");
    assert!(stats.daemon.skipped_budget.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_its_period_skips_ticks_instead_of_piling_up() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sim.base_url(),
        "rpm = 600\nmax_concurrency = 4",
        &["slow"],
        "ping = \"every 1s\"",
    );
    let stats = run_for(config, Duration::from_secs(6)).await;
    let requests = sim.requests();
    assert!(
        (2..=3).contains(&requests.len()),
        "one 2.5 s run at a time: {}",
        requests.len()
    );
    for pair in requests.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(2500));
    }
    assert!(stats.daemon.skipped_overlap.load(Ordering::Relaxed) >= 3);
}

fn sonde_run(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["run", "--log-format", "json"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sonde run")
}

/// The run ids a daemon's JSON log says were recorded.
fn recorded_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "recorded")
        .filter_map(|line| line["run_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_recorded_result_and_a_second_daemon_is_refused() {
    use std::io::Read;

    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sim.base_url(),
        "rpm = 6000\nmax_concurrency = 8",
        &["a", "b", "c", "d"],
        "ping = \"every 1s\"",
    );
    let mut first = sonde_run(dir.path());
    tokio::time::sleep(Duration::from_secs(4)).await;

    let second = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            Command::new(env!("CARGO_BIN_EXE_sonde"))
                .args(["run"])
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    common::refused_as_second_daemon(&second);

    first.kill().unwrap(); // SIGKILL: no chance to flush.
    first.wait().unwrap();
    let mut log = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let logged = recorded_ids(&log);
    assert!(logged.len() >= 8, "recorded runs: {}", logged.len());

    let store = Store::open_read_only(&config.store).unwrap();
    let stored: Vec<String> = store
        .results_since(0, None)
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.run_id)
        .collect();
    for id in &logged {
        assert!(
            stored.contains(id),
            "run {id} was logged as recorded but is not stored"
        );
    }
    drop(store);

    // A restart opens the store cleanly, keeps going, and stops cleanly on SIGTERM.
    let restarted = sonde_run(dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let output = common::terminate(restarted).await;
    assert_eq!(output.status.code(), Some(0), "a clean stop exits 0");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("every recorded run is on disk"), "{log}");
    let store = Store::open_read_only(&config.store).unwrap();
    let stored = store.results_since(0, None).unwrap();
    let mut ids: Vec<&str> = stored.iter().map(|(r, _)| r.run_id.as_str()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no duplicates");
    assert!(total > logged.len(), "the restarted daemon recorded more");
    for id in recorded_ids(&log) {
        assert!(ids.contains(&id.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_use_the_right_words_and_levels_without_colour_off_a_terminal() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = "[schedules]\nping = \"every 1s\"\n".to_owned();
    for (provider, model) in [
        ("down", "unavailable"),
        ("busy", "always-429"),
        ("fine", "a"),
    ] {
        text.push_str(&format!(
            "[[providers]]\nname = \"{provider}\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             rpm = 6000\n[[providers.models]]\nid = \"{model}\"\nprobes = [\"ping\"]\n",
            sim.base_url()
        ));
    }
    std::fs::write(dir.path().join("sonde.toml"), text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["run"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let output = common::terminate(child).await;
    let log = String::from_utf8(output.stderr).unwrap();
    assert!(!log.contains('\u{1b}'), "colour codes on a pipe:\n{log}");
    let lines =
        |needle: &str| -> Vec<&str> { log.lines().filter(|l| l.contains(needle)).collect() };
    let pauses = lines("pausing every probe");
    let words = |provider: &str| {
        pauses
            .iter()
            .filter(|l| l.contains(&format!("provider={provider}")))
            .map(|l| l.split(": pausing").next().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert!(!words("down").is_empty(), "{log}");
    for line in words("down") {
        assert!(
            line.ends_with("unavailable (HTTP 503) and asked to retry later"),
            "{line}"
        );
    }
    assert!(!words("busy").is_empty(), "{log}");
    for line in words("busy") {
        assert!(line.ends_with("rate limited (HTTP 429)"), "{line}");
    }
    for line in &pauses {
        assert!(line.contains(" INFO "), "a pause is routine: {line}");
    }
    let changes = lines("state changed");
    let down = changes
        .iter()
        .find(|l| l.contains("target_id=down/unavailable") && l.contains("to=\"down\""))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(down.contains(" WARN "), "{down}");
    let healthy = changes
        .iter()
        .find(|l| l.contains("target_id=fine/a") && l.contains("to=\"healthy\""))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(healthy.contains(" INFO "), "routine: {healthy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_run_counters_only_grow_and_carry_their_labels() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // The 429ing model on a provider of its own: its pauses must not hold the other back.
    let mut text =
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[schedules]\nping = \"every 1s\"\n");
    for (provider, model) in [("sim", "a"), ("busy", "always-429")] {
        text.push_str(&format!(
            "[[providers]]\nname = \"{provider}\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             rpm = 6000\n[[providers.models]]\nid = \"{model}\"\nprobes = [\"ping\"]\n",
            sim.base_url()
        ));
    }
    let path = dir.path().join("sonde.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(
        config,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    let http = common::http();
    let scrape = || async {
        let text = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let runs: std::collections::BTreeMap<String, f64> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "sonde_runs_total")
            .map(|s| {
                let target = s.labels.get("target").unwrap();
                assert_eq!(s.labels.get("provider"), target.split('/').next());
                assert_eq!(s.labels.get("probe"), Some("ping"));
                assert!(s.labels.get("group").is_some());
                let key = format!(
                    "{}#{}",
                    s.labels.get("target").unwrap(),
                    s.labels.get("outcome").unwrap()
                );
                match s.value {
                    prometheus_parse::Value::Counter(v) => (key, v),
                    ref other => panic!("not a counter: {other:?}"),
                }
            })
            .collect();
        (runs, text)
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (first, _) = scrape().await;
    // /metrics is recomputed at most once a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (second, text) = scrape().await;
    shutdown.cancel();
    let counters = daemon.await.unwrap().unwrap();
    assert!(first.contains_key("sim/a#ok"), "{text}");
    // The counters of what left no record are exposed too, and grow with the daemon's own.
    let counter = |name: &str| -> u64 { common::metric(&text, name) };
    let pauses = counter("sonde_rate_limit_pauses_total");
    assert!(pauses >= 1, "{text}");
    assert!(pauses <= counters.daemon.rate_limit_pauses.load(Ordering::Relaxed));
    assert_eq!(counter("sonde_runs_lost_total"), 0, "{text}");
    assert!(
        text.contains("# TYPE sonde_runs_lost_total counter"),
        "{text}"
    );
    assert_eq!(counter("sonde_runs_abandoned_total"), 0, "{text}");
    assert!(
        second.contains_key("busy/always-429#rate_limited"),
        "{text}"
    );
    for (key, before) in &first {
        assert!(
            second[key] >= *before,
            "{key} went down: {first:?} → {second:?}"
        );
    }
    assert!(
        second.values().sum::<f64>() > first.values().sum::<f64>(),
        "{first:?} → {second:?}"
    );
    assert!(text.contains("sonde_last_run_timestamp_seconds{target=\"sim/a\"}"));
}

/// `<dir>/sonde.toml`, written and loaded: a SQLite store, a site published every second
/// into `site`, and `models` of the simulator at `base_url` pinged every second.
fn publishing_config(dir: &Path, base_url: &str, models: &[&str]) -> Config {
    // `[publish]` follows the schedules, before the providers.
    let schedules = "ping = \"every 1s\"\n\n[publish]\nout = \"site\"\nevery = \"1s\"";
    write_config(
        dir,
        base_url,
        "rpm = 100\nrate_window = \"1s\"",
        models,
        schedules,
    )
}

/// Runs `sonde publish` with `args` in `dir`, logging at INFO; asserts it succeeded and
/// returns its standard output and error.
fn publish_logged(dir: &Path, args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .arg("publish")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (String::from_utf8(output.stdout).unwrap(), stderr)
}

/// The daemon saves its history as the store's checkpoint after its first publish; a
/// publisher started later (`sonde publish` here) restores it and reads only what was
/// written since. (Three seconds of runs may be too few for a state: the figures are
/// checked, not the state.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_saves_a_checkpoint_that_a_later_publish_restores() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = publishing_config(dir.path(), &sim.base_url(), &["m0", "m1"]);
    let started = sonde::units::now_ms();
    run_for(config.clone(), Duration::from_secs(3)).await;

    let store = Store::open_read_only(&config.store).unwrap();
    let restored = sonde::publish::checkpoint::restore(&store, sonde::units::now_ms())
        .unwrap()
        .expect("the daemon saved a checkpoint");
    let saved_at = restored.at_ms().unwrap();
    assert!(
        saved_at >= started,
        "saved by this run: {saved_at} < {started}"
    );

    let (_, stderr) = publish_logged(dir.path(), &["--out", "again"]);
    assert!(
        stderr.contains("restored the publisher's checkpoint"),
        "{stderr}"
    );
    let feed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("again/feed.json")).unwrap())
            .unwrap();
    let targets = feed["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{feed}");
    for target in targets {
        // Its runs, read from the checkpoint and the store since: the simulator answers
        // every ping.
        assert!(target["samples"].as_u64().unwrap() >= 1, "{target}");
        assert_eq!(target["availability"], 1.0, "{target}");
    }

    // A gateway's export, regenerated on a schedule, restores it too, and routes what the
    // site's feed does.
    let (yaml, stderr) = publish_logged(dir.path(), &["--format", "litellm"]);
    assert!(
        stderr.contains("restored the publisher's checkpoint"),
        "{stderr}"
    );
    for target in targets {
        let id = target["id"].as_str().unwrap();
        assert!(yaml.contains(&format!("id: \"{id}\"")), "{id} in {yaml}");
    }
}

/// A daemon that only probes keeps no checkpoint: a gateway's export regenerated on a
/// schedule saves one, so that the next restores it instead of reading the store whole;
/// with `publish.checkpoint = "0s"` none is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_keeps_the_checkpoint_when_no_daemon_does() {
    let sim = common::simulator(SCENARIO).await;
    for off in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let schedules = if off {
            "ping = \"every 1s\"\n\n[publish]\ncheckpoint = \"0s\""
        } else {
            "ping = \"every 1s\""
        };
        let config = write_config(dir.path(), &sim.base_url(), "", &["m0"], schedules);
        run_for(config.clone(), Duration::from_secs(2)).await;
        let saved = || {
            let store = Store::open_read_only(&config.store).unwrap();
            store.checkpoint_saved_ms().unwrap()
        };
        assert_eq!(saved(), None, "the daemon publishes nothing");
        let export = || {
            let (yaml, stderr) = publish_logged(dir.path(), &["--format", "litellm"]);
            assert!(yaml.contains("id: \"sim/m0\""), "{yaml}");
            stderr
        };
        let first = export();
        if off {
            assert_eq!(saved(), None, "checkpoint = \"0s\": {first}");
            continue;
        }
        assert!(
            first.contains("saved the publisher's checkpoint: no daemon keeps one"),
            "{first}"
        );
        assert!(saved().is_some());
        let second = export();
        assert!(
            second.contains("restored the publisher's checkpoint"),
            "{second}"
        );
        assert!(
            !second.contains("saved the publisher's checkpoint"),
            "{second}"
        );
    }
}

/// A checkpoint gone from the store (a PostgreSQL crash empties its unlogged table) is saved
/// again at the next publish, not `publish.checkpoint` (5 minutes) after the last save: a
/// publisher starting meanwhile would read the store whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_gone_from_the_store_is_saved_again_at_the_next_publish() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = publishing_config(dir.path(), &sim.base_url(), &["m0"]);
    let daemon = tokio::spawn(run_for(config.clone(), Duration::from_secs(8)));
    let saved = || {
        let store = Store::open_read_only(&config.store).ok()?;
        store.checkpoint_saved_ms().ok().flatten()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while saved().is_none() {
        assert!(std::time::Instant::now() < deadline, "no first save");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = rusqlite::Connection::open(dir.path().join("sonde.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(db.execute("DELETE FROM checkpoint", []).unwrap(), 1);
    assert_eq!(saved(), None, "gone");
    daemon.await.unwrap();
    assert!(saved().is_some(), "the daemon saved it again");
}

/// After an upgrade: the daemon finds the checkpoint of another sonde in this layout,
/// publishes from it at once while it reads the store whole in the background, then
/// publishes from what it read and saves the checkpoint as its own again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upgrade_the_daemon_bridges_the_old_checkpoint_then_saves_its_own() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = publishing_config(dir.path(), &sim.base_url(), &["m0"]);
    run_for(config.clone(), Duration::from_secs(3)).await;

    // The checkpoint as another version in this layout left it.
    let store = Store::open_read_only(&config.store).unwrap();
    let bytes = store
        .checkpoint()
        .unwrap()
        .expect("the daemon saved a checkpoint");
    let (patched, other) = common::checkpoint::as_saved_by_another_version(&bytes);
    let patched_at = sonde::units::now_ms();
    store.save_checkpoint(patched_at, &patched).unwrap();
    let restored = sonde::publish::checkpoint::restore(&store, patched_at)
        .unwrap()
        .unwrap();
    assert_eq!(restored.other_version(), Some(other.as_str()));

    let child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["run"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let output = common::terminate(child).await;
    let log = String::from_utf8(output.stderr).unwrap();
    let bridged = log
        .find("restored the checkpoint of another sonde in this layout")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(log.contains(&format!("saved_by=\"{other}\"")), "{log}");
    let read = log
        .find("read the store whole: the next publish is from this version's own history")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(bridged < read, "{log}");
    assert!(
        !log.contains("saving the publisher's checkpoint failed"),
        "{log}"
    );

    let own = sonde::publish::checkpoint::restore(&store, sonde::units::now_ms())
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(
        own.other_version(),
        None,
        "saved as this version's own:\n{log}"
    );
    assert!(own.at_ms().unwrap() > patched_at, "{log}");
}
