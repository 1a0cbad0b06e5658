//! The store on a real PostgreSQL server (started per test by `common::postgres`): the same
//! history through either backend publishes the same site byte for byte; `sonde store
//! migrate` copies a SQLite store whole and twice without duplicates; a daemon keeps every
//! run it logged as recorded across a server restart and a `kill -9`, holds runs in its
//! bounded buffer while the server is away and drops (and logs) only past it; a second
//! daemon is refused.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::daemon::Daemon;

use sonde::aggregate::rollup::PointScalars;
use sonde::aggregate::rollup::Span;
use sonde::aggregate::sparse::SparseRollup;
use sonde::config::{Config, StoreBackend, StoreConfig};
use sonde::publish::{self, Snapshot, checkpoint};
use sonde::result::{Outcome, ResultRecord};
use sonde::runner::{Scheduled, not_sent};
use sonde::store::writer::import;
use sonde::store::{
    Batch, Copied, Heartbeat, Prune, RollupHead, RollupRow, Seen, Store, points_of_rollups,
};
use sonde::units::now_ms;

/// Providers and models of the scripted history: two hosts of one group, and a third
/// that goes down for an hour and answers with another model for a while.
const PROVIDERS: &str = r#"
[[providers]]
name = "alpha"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[[providers.models]]
id = "llama"
group = "llama"
input_price = 0.5
output_price = 1.5
probes = ["ping", "stream"]

[[providers]]
name = "beta"
kind = "anthropic"
base_url = "http://127.0.0.1:9/v1"
[[providers.models]]
id = "llama"
group = "llama"
input_price = 0.4
output_price = 1.2
probes = ["ping", "stream"]

[[providers]]
name = "gamma"
kind = "gemini"
base_url = "http://127.0.0.1:9/v1beta"
[[providers.models]]
id = "llama"
group = "llama"
input_price = 0.3
output_price = 0.9
probes = ["ping", "stream"]
"#;

fn config(dir: &Path, store: &str) -> Config {
    let path = dir.join("sonde.toml");
    std::fs::write(&path, format!("{store}\n{PROVIDERS}")).unwrap();
    Config::load(&path).unwrap()
}

fn postgres_store(var: &str) -> String {
    format!("[store]\nurl_env = \"{var}\"\nretention_days = 400\nrollup_retention_days = 400\n")
}

/// A new database `name` on `cluster`, its URL in a variable of the test's own
/// (`SONDE_TEST_<NAME>_URL`): the `[store]` table that selects it.
fn postgres_database(cluster: &common::postgres::Cluster, name: &str) -> String {
    let var = format!("SONDE_TEST_{}_URL", name.to_uppercase());
    // SAFETY: set before any thread of the test reads the environment; the variable is
    // the test's own.
    unsafe { std::env::set_var(&var, cluster.database(name)) };
    postgres_store(&var)
}

/// A server started for the test `test` (`None`: PostgreSQL's tests are skipped), with a
/// new database `name` on it, and the config, in a temporary folder kept with it, of a
/// store there.
fn with_a_database(
    test: &str,
    name: &str,
) -> Option<(common::postgres::Cluster, tempfile::TempDir, Config)> {
    let cluster = common::postgres::start(test)?;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &postgres_database(&cluster, name));
    Some((cluster, dir, config))
}

/// Three days of runs every 10 minutes per target and probe, ending `now`: latencies that
/// vary, errors of several kinds, an hour's outage of gamma, substitution and a fake
/// stream from gamma for a while, ITL gaps, tokens and cost.
fn history(config: &Config, now: i64) -> Vec<ResultRecord> {
    let step = 10 * 60 * 1000;
    let start = now - 3 * 24 * 3600 * 1000;
    let mut records = Vec::new();
    let mut i: u64 = 0;
    let mut at = start;
    while at <= now {
        for (t, target) in config.targets.iter().enumerate() {
            for name in &target.probes {
                i += 1;
                let probe = config.probes.get(name).unwrap();
                let scheduled = Scheduled {
                    at: Instant::now(),
                    wall: UNIX_EPOCH + Duration::from_millis(at as u64),
                };
                let wobble = ((i * 7_919) % 1000) as f64;
                let outage = t == 2 && (now - at) < 5 * 3600 * 1000 && (now - at) > 4 * 3600 * 1000;
                let outcome = if outage {
                    Outcome::Timeout
                } else if wobble < 15.0 {
                    Outcome::ServerError
                } else if wobble < 25.0 {
                    Outcome::RateLimited
                } else {
                    Outcome::Ok
                };
                let mut r = not_sent(
                    target,
                    probe,
                    scheduled,
                    outcome,
                    format!("scripted {outcome}"),
                );
                r.queue_lag_ms = wobble / 1000.0;
                r.location = "eu-west".into();
                if outcome == Outcome::Ok {
                    r.error = None;
                    r.http_status = Some(200);
                    r.ttfb_ms = Some(40.0 + wobble * 0.1);
                    r.ttft_ms = Some(80.0 + wobble * 0.9 + t as f64 * 33.3);
                    r.e2e_ms = Some(500.0 + wobble / 3.0);
                    r.tokens_per_s = Some(90.0 + wobble * 0.017);
                    r.input_tokens = Some(33);
                    r.output_tokens = Some(40 + (i % 7) as u32);
                    r.cost_usd = Some(7.6e-5 * (1.0 + wobble / 1000.0));
                    r.cap_streaming = Some(true);
                    r.streamed = !(t == 2 && (now - at) < 24 * 3600 * 1000);
                    r.itl_gaps_us = (0..39)
                        .map(|g| 10_000 + (g * 131 + i as u32) % 5_000)
                        .collect();
                    r.chunks = 40;
                    if t == 2 && (now - at) < 2 * 3600 * 1000 {
                        r.served_model = Some("llama-3.1-8b-instruct".into());
                        r.model_substituted = true;
                    }
                    // Every other column filled now and then, so both backends' readers
                    // are held to every type: NUMERIC(20) past f64's exact integers, enums,
                    // booleans.
                    if i.is_multiple_of(11) {
                        r.ratelimit_remaining_requests = Some(i64::MAX as u64 - i);
                        r.ratelimit_remaining_tokens = Some(i);
                        r.quality_item = Some(sonde::quality::Kind::Arithmetic);
                        r.quality = Some(sonde::quality::Judgement::WrongAnswer);
                        r.quality_detail = Some("answered 41, not 42 — «quoted»".into());
                        r.finish_reason = Some("stop".into());
                        r.upstream = Some("DeepInfra".into());
                        r.reasoning_tokens = Some(5);
                        r.ttfat_ms = Some(91.5);
                        r.itl_p50_ms = Some(10.25);
                        r.itl_max_ms = Some(14.75);
                        r.connect_ms = Some(1.5);
                        r.close_ms = Some(0.25);
                        r.tokens_estimated = true;
                        r.gateway_alias = true;
                        r.cap_tools = Some(false);
                        r.cap_json = Some(true);
                        r.cap_usage_in_stream = Some(false);
                    }
                } else if outcome == Outcome::RateLimited {
                    r.http_status = Some(429);
                    r.retry_after_s = Some(2.5);
                }
                records.push(r);
            }
        }
        at += step;
    }
    records
}

/// Every file of the site (`results.csv` too), feed and exports built from `store` at `now`.
fn site(config: &Config, store: &Store, now: i64) -> publish::Files {
    let snapshot = Snapshot::load(config, store, now).unwrap();
    let mut files = publish::build(config, &snapshot).unwrap();
    let csv = publish::results_csv::render(store, now).unwrap();
    files.insert(publish::results_csv::PATH.into(), csv);
    files
}

#[test]
fn both_backends_publish_the_same_site_from_the_same_history() {
    let Some(cluster) = common::postgres::start("both_backends_publish_the_same_site") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = postgres_database(&cluster, "equivalence");
    // An alert, so the outage's notifications go to each backend's outbox.
    let alert = "[[alerts]]\nname = \"hook\"\nkind = \"webhook\"\nurl_env = \"HOOK\"\n";
    let sqlite = config(
        dir.path(),
        &format!(
            "[store]\npath = \"sonde.db\"\nretention_days = 400\nrollup_retention_days = 400\n{alert}"
        ),
    );
    let postgres = config(dir.path(), &format!("{store}{alert}"));
    let now = now_ms();
    let records = history(&sqlite, now);
    let count = records.len() as u64;
    for config in [&sqlite, &postgres] {
        let store = Store::open(&config.store, &config.prober.location).unwrap();
        let written = import(store, config, records.clone()).unwrap();
        assert_eq!(written, count);
    }
    let from_sqlite = Store::open_read_only(&sqlite.store).unwrap();
    let from_postgres = Store::open_read_only(&postgres.store).unwrap();
    assert!(
        from_postgres
            .describe()
            .starts_with("postgresql://127.0.0.1:")
    );
    assert!(
        !from_postgres.describe().contains("postgres@"),
        "no user or password in names"
    );
    assert_eq!(from_postgres.result_count().unwrap(), count);
    assert_eq!(
        from_sqlite.results_since(0, None).unwrap(),
        from_postgres.results_since(0, None).unwrap()
    );
    // Every target's last runs in one read, as a target at a time gives them (an unknown
    // target among them has none).
    let mut ids: Vec<&str> = sqlite.targets.iter().map(|t| t.id.as_str()).collect();
    ids.insert(1, "nobody/none");
    let one_by_one: Vec<ResultRecord> = ids
        .iter()
        .flat_map(|id| from_sqlite.latest_results(id, 7).unwrap())
        .collect();
    assert_eq!(one_by_one.len(), 7 * (ids.len() - 1));
    for store in [&from_sqlite, &from_postgres] {
        let mut together = Vec::new();
        store
            .each_latest_results(&ids, 7, &mut |record| together.push(record))
            .unwrap();
        assert_eq!(together, one_by_one);
    }
    assert_eq!(from_sqlite.spend().unwrap(), from_postgres.spend().unwrap());
    let incidents = from_sqlite.incidents(0).unwrap();
    assert!(!incidents.is_empty(), "the outage opened an incident");
    let from_postgres_incidents = from_postgres.incidents(0).unwrap();
    assert_eq!(incidents, from_postgres_incidents);
    // A publisher keeps them until its next publish: read into the room they take.
    assert_eq!(incidents.capacity(), incidents.len());
    assert_eq!(
        from_postgres_incidents.capacity(),
        from_postgres_incidents.len()
    );
    let outbox = from_sqlite.pending_notifications("eu-west", 100).unwrap();
    assert!(
        outbox.iter().any(|(_, n)| n.target == "gamma/llama"),
        "the outage was notified: {outbox:#?}"
    );
    let notifications = |rows: Vec<(i64, sonde::aggregate::alerting::Notification)>| {
        rows.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
    };
    assert_eq!(
        notifications(outbox),
        notifications(from_postgres.pending_notifications("eu-west", 100).unwrap())
    );

    let windows = |store: &Store| {
        format!(
            "{:?}",
            publish::windows::summarize(store, &sqlite, now).unwrap()
        )
    };
    assert_eq!(windows(&from_sqlite), windows(&from_postgres));

    // A fork reads what its store reads, from another thread, and goes on reading once the
    // store it came from is dropped (PostgreSQL's shares that store's pool and runtime).
    let all = from_sqlite.results_since(0, None).unwrap();
    for config in [&sqlite, &postgres] {
        let store = Store::open_read_only(&config.store).unwrap();
        let fork = store.fork().unwrap();
        assert_eq!(fork.describe(), store.describe());
        drop(store);
        let read = std::thread::spawn(move || fork.results_since(0, None).unwrap());
        assert!(
            read.join().unwrap() == all,
            "{:?} forked",
            config.store.backend
        );
    }

    let a = site(&sqlite, &from_sqlite, now);
    let b = site(&postgres, &from_postgres, now);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{name} differs between SQLite and PostgreSQL"
        );
    }
    let feed: serde_json::Value = serde_json::from_slice(&a["feed.json"]).unwrap();
    let gamma = feed["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "gamma/llama")
        .unwrap();
    assert_eq!(
        gamma["model_substituted"], true,
        "the history is what the feed shows: {gamma}"
    );
    assert_eq!(gamma["weight"], 0.0);

    for config in [&sqlite, &postgres] {
        a_rewritten_rollup_has_a_new_version(config, now);
    }
}

/// A run written late into a closed hour gives that hour's row (and only it) a version it
/// did not have, and `rollups_at` reads the row as it is now; a publisher keeping its
/// history sees the late run and a new one as a cold read does.
fn a_rewritten_rollup_has_a_new_version(config: &Config, now: i64) {
    let mut kept = sonde::publish::history::History::new();
    let first = Store::open_read_only(&config.store).unwrap();
    Snapshot::load_with(config, &first, now, &mut kept).unwrap();
    // The publisher's checkpoint as it stands now, restored below after the writes.
    checkpoint::save(&first, &kept).unwrap();
    drop(first);
    let since = now - 30 * 3_600_000;
    // Every head (`after` None), or those written after a read: with what the read saw.
    let heads = |store: &Store, after: Option<&Seen>| {
        let mut heads = std::collections::BTreeMap::new();
        let seen = store
            .each_rollup_head_written(Span::Hour, since, after, &mut |head| {
                heads.insert(
                    (
                        head.bucket,
                        head.target.to_owned(),
                        head.location.to_owned(),
                    ),
                    head.version,
                );
            })
            .unwrap();
        (heads, seen)
    };
    let (before, seen) = heads(&Store::open_read_only(&config.store).unwrap(), None);
    let runs_seen = Store::open_read_only(&config.store)
        .unwrap()
        .each_result_written(i64::MIN, None, &mut |_| {})
        .unwrap();
    let mut late = common::scripted(config, 0, now - 5 * 3_600_000, Outcome::Timeout, 0.0);
    // The history's location: its row of that hour exists.
    late.location = "eu-west".into();
    let (target, location, probe) = (
        late.target.clone(),
        late.location.clone(),
        late.probe.clone(),
    );
    let bucket = Span::Hour.bucket_of(late.ts.ms());
    let write = |record| {
        import(
            Store::open(&config.store, &config.prober.location).unwrap(),
            config,
            vec![record],
        )
        .unwrap()
    };
    write(late);
    let store = Store::open_read_only(&config.store).unwrap();
    let (after, _) = heads(&store, None);
    let key = (bucket, target.clone(), location.clone());
    assert!(after[&key] > before[&key], "{}", store.describe());
    // Asked for what was written since the first read: that row alone, at its new
    // version, and the late run alone, however old its hour.
    let (written, seen) = heads(&store, Some(&seen));
    assert_eq!(
        written.into_iter().collect::<Vec<_>>(),
        [(key.clone(), after[&key])],
        "{}",
        store.describe()
    );
    assert!(
        heads(&store, Some(&seen)).0.is_empty(),
        "nothing written since"
    );
    let mut late_runs = Vec::new();
    let runs_seen = store
        .each_result_written(i64::MIN, Some(&runs_seen), &mut |record| {
            late_runs.push((record.ts.ms(), record.outcome))
        })
        .unwrap();
    assert_eq!(
        late_runs,
        [(now - 5 * 3_600_000, Outcome::Timeout)],
        "{}",
        store.describe()
    );
    let unchanged = |k: &&(i64, String, String)| **k != key;
    assert_eq!(
        before
            .iter()
            .filter(|(k, _)| unchanged(k))
            .collect::<Vec<_>>(),
        after
            .iter()
            .filter(|(k, _)| unchanged(k))
            .collect::<Vec<_>>(),
        "no other row changed"
    );
    let mut read = Vec::new();
    store
        .rollups_at(
            Span::Hour,
            &[
                (bucket, &target, &probe, &location),
                (bucket, "no/such", &probe, &location),
            ],
            &mut |head, stored| {
                read.push((head.version, stored.scalars.count(Outcome::Timeout)));
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(read.len(), 1, "a key with no row is skipped");
    assert_eq!(read[0].0, after[&key]);
    assert!(read[0].1 >= 1, "the late timeout is in the row read");

    let mut new = common::scripted(config, 1, now + 30_000, Outcome::Ok, 640.0);
    new.location = "eu-west".into();
    let new_id = new.run_id.clone();
    write(new);
    let mut new_runs = Vec::new();
    store
        .each_result_written(i64::MIN, Some(&runs_seen), &mut |record| {
            new_runs.push(record.run_id)
        })
        .unwrap();
    assert_eq!(
        new_runs,
        std::slice::from_ref(&new_id),
        "{}",
        store.describe()
    );
    let later = now + 60_000;
    let warm = Snapshot::load_with(config, &store, later, &mut kept).unwrap();
    let warm = publish::build(config, &warm).unwrap();
    let cold = site(config, &store, later);
    assert_eq!(
        String::from_utf8_lossy(&warm["feed.json"]),
        String::from_utf8_lossy(&cold["feed.json"]),
        "{}",
        store.describe()
    );
    let csv = String::from_utf8_lossy(&cold["results.csv"]).into_owned();
    assert!(csv.contains(&new_id), "{}: {csv}", store.describe());

    // A publisher started now, from the checkpoint saved before the late and new runs.
    let mut restored = checkpoint::restore(&store, later)
        .unwrap()
        .expect("a checkpoint");
    let from_checkpoint = Snapshot::load_with(config, &store, later, &mut restored).unwrap();
    let from_checkpoint = publish::build(config, &from_checkpoint).unwrap();
    assert_eq!(
        from_checkpoint.keys().collect::<Vec<_>>(),
        warm.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &warm {
        assert!(
            bytes == &from_checkpoint[name],
            "{name}: the restored publisher's differs from the kept one's ({})",
            store.describe()
        );
    }
}

/// Every row's head and point scalars of `span` from `since`, as `store` reads them for the
/// charts (`packed`: a first read, from PostgreSQL's packed points) or from the rows.
fn points(store: &Store, span: Span, since: i64, packed: bool) -> Vec<(String, PointScalars)> {
    let mut rows = Vec::new();
    let mut each = |head: RollupHead<'_>, point: PointScalars| {
        let head = format!(
            "{} {} {} {} v{}",
            head.bucket, head.target, head.probe, head.location, head.version
        );
        rows.push((head, point));
    };
    if packed {
        store.each_rollup_point_written(span, since, None, &mut each)
    } else {
        points_of_rollups(&**store, span, since, None, &mut each)
    }
    .unwrap();
    rows
}

/// PostgreSQL's first read of the charts' scalars comes from a row per location and closed
/// bucket, and hands over exactly what reading every rollup row gives, in the same order:
/// after an import (packed whole), a late run, a copy into a packed bucket, a copied
/// location nothing packed yet, its writer packing a day of hours a batch, and pruning.
#[test]
fn packed_points_read_as_the_rollups_rows_do() {
    let Some((cluster, _dir, config)) = with_a_database("packed_points", "packed") else {
        return;
    };
    let now = now_ms();
    let records = history(&config, now);
    let us_east: Vec<ResultRecord> = records
        .iter()
        .filter(|r| r.ts.ms() > now - 2 * 86_400_000)
        .map(|r| {
            let mut r = r.clone();
            r.location = "us-east".into();
            r.run_id = format!("us-{}", r.run_id);
            r
        })
        .collect();
    for (location, records) in [("eu-west", records), ("us-east", us_east)] {
        let store = Store::open(&config.store, location).unwrap();
        import(store, &config, records).unwrap();
    }
    let since = now - 4 * 86_400_000;
    let same = |what: &str| {
        let store = Store::open_read_only(&config.store).unwrap();
        for span in [Span::Hour, Span::Day] {
            let packed = points(&store, span, since, true);
            let rows = points(&store, span, since, false);
            assert!(!rows.is_empty());
            assert!(rows.iter().any(|(_, p)| p.ttft_p50_ms.is_some()));
            assert_eq!(packed.len(), rows.len(), "{what}: {span:?}");
            for (packed, row) in packed.iter().zip(&rows) {
                assert_eq!(packed, row, "{what}: {span:?}");
            }
        }
    };
    let count = |sql: &str| cluster.psql("packed", sql).trim().parse::<u64>().unwrap();
    // 3 days of eu-west's hours and 2 of us-east's, but the current hour's.
    let packed_hours = count("SELECT count(*) FROM points WHERE span = 'hour'");
    assert!(
        (5 * 24 - 4..=5 * 24 + 2).contains(&packed_hours),
        "{packed_hours}"
    );
    same("imported");

    let hour = |ago: i64| Span::Hour.bucket_of(now - ago * 3_600_000);
    let body_of = |bucket: i64| {
        cluster.psql(
            "packed",
            &format!(
                "SELECT md5(body) FROM points WHERE span = 'hour' AND location = 'us-east' AND bucket = {bucket}"
            ),
        )
    };
    let before = body_of(hour(30));
    let mut late = common::scripted(&config, 0, now - 30 * 3_600_000, Outcome::Timeout, 0.0);
    late.location = "us-east".into();
    import(
        Store::open(&config.store, "us-east").unwrap(),
        &config,
        vec![late],
    )
    .unwrap();
    assert_ne!(
        body_of(hour(30)),
        before,
        "the late run's hour is packed again"
    );
    same("a late run");

    // A copy: a new target's row in one of eu-west's packed hours, and a location whose
    // rows were copied in but nothing packed.
    let mut copier = Store::open(&config.store, "ap-south").unwrap();
    let row = |location: &str, target: &str, bucket: i64| {
        let mut run = common::scripted(&config, 1, bucket + 60_000, Outcome::Ok, 120.0);
        run.location = location.into();
        run.target = target.into();
        let mut rollup = SparseRollup::default();
        rollup.add_run(&run, run.ts.ms());
        RollupRow {
            span: Span::Hour,
            bucket,
            target: target.into(),
            probe: run.probe.clone(),
            location: location.into(),
            rollup,
        }
    };
    let rollups = (40..70)
        .map(|ago| row("ap-south", "delta/llama", hour(ago)))
        .chain([row("eu-west", "delta/llama", hour(50))])
        .collect();
    copier
        .copy(&Copied {
            rollups,
            ..Copied::default()
        })
        .unwrap();
    let bound = || {
        count(
            "SELECT (before - (SELECT min(bucket) FROM rollups WHERE location = 'ap-south' AND span = 'hour')) / 3600000 FROM packed WHERE span = 'hour' AND location = 'ap-south'",
        )
    };
    assert_eq!(
        cluster
            .psql(
                "packed",
                "SELECT before FROM packed WHERE span = 'hour' AND location = 'ap-south'"
            )
            .trim(),
        i64::MIN.to_string(),
        "a copied location is registered with nothing packed"
    );
    same("copied");
    // Its writer packs a day of hours a batch, a heartbeat's batch too.
    copier.write(&Batch::default()).unwrap();
    assert_eq!(bound(), 24);
    same("a day of ap-south's hours packed");
    copier.write(&Batch::default()).unwrap();
    assert_eq!(bound(), 48);
    copier.write(&Batch::default()).unwrap();
    assert_eq!(
        count("SELECT count(*) FROM points WHERE span = 'hour' AND location = 'ap-south'"),
        30
    );
    same("ap-south's hours packed");

    let pruned_before = hour(48);
    copier
        .prune(&Prune {
            results_before_ms: i64::MIN,
            rollups_before_ms: pruned_before,
            incidents_before_ms: i64::MIN,
        })
        .unwrap();
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM points WHERE bucket < {pruned_before}"
        )),
        0
    );
    same("pruned");
}

#[test]
fn migrate_copies_a_sqlite_store_whole_and_again_without_duplicates() {
    let Some(cluster) = common::postgres::start("migrate_copies_a_sqlite_store") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = config(
        dir.path(),
        "[store]\npath = \"sonde.db\"\nretention_days = 400\nrollup_retention_days = 400\n",
    );
    let now = now_ms();
    let records = history(&sqlite, now);
    let mut count = records.len();
    import(
        Store::open(&sqlite.store, &sqlite.prober.location).unwrap(),
        &sqlite,
        records,
    )
    .unwrap();
    // A location retired before the migration: its retirement travels with it.
    let mut gone = sqlite.clone();
    gone.prober.location = "gone".into();
    let runs: Vec<ResultRecord> = history(&gone, now)
        .into_iter()
        .take(50)
        .map(|mut run| {
            run.location = "gone".into();
            run.run_id = format!("gone-{}", run.run_id);
            run
        })
        .collect();
    count += runs.len();
    import(Store::open(&gone.store, "gone").unwrap(), &gone, runs).unwrap();
    let retired = Store::open(&gone.store, "gone")
        .unwrap()
        .retire(now)
        .unwrap();
    assert!(retired.is_some());
    let url = cluster.database("migrated");
    let migrate = || {
        let output = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(["store", "migrate", "--from"])
            .arg(dir.path().join("sonde.db"))
            .args(["--to-env", "SONDE_TEST_MIGRATE_URL"])
            .env("SONDE_TEST_MIGRATE_URL", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(!text.contains(&url) && !String::from_utf8_lossy(&output.stderr).contains(&url));
        text
    };
    let first = migrate();
    let rows = |text: &str, table: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(table)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {table} count in {text}"))
    };
    assert_eq!(rows(&first, "results "), count as u64);
    assert!(
        rows(&first, "rollups ") > 0 && rows(&first, "incidents ") > 0,
        "{first}"
    );
    let spent = Store::open_read_only(&sqlite.store)
        .unwrap()
        .spend()
        .unwrap();
    assert!(spent.len() >= 3 * (1 + usize::from(crossed_a_month(now))));
    assert_eq!(rows(&first, "spend "), spent.len() as u64, "{first}");
    let second = migrate();
    assert_eq!(first, second, "a second copy reads the same rows");

    let var = "SONDE_TEST_MIGRATED_URL";
    // SAFETY: this test's own variable, set before the store reads it.
    unsafe { std::env::set_var(var, &url) };
    let postgres = config(dir.path(), &postgres_store(var));
    let from_postgres = Store::open_read_only(&postgres.store).unwrap();
    let from_sqlite = Store::open_read_only(&sqlite.store).unwrap();
    assert_eq!(
        from_postgres.result_count().unwrap(),
        count as u64,
        "no duplicates"
    );
    assert_eq!(
        from_sqlite.incidents(0).unwrap(),
        from_postgres.incidents(0).unwrap()
    );
    let beats = from_postgres.heartbeats().unwrap();
    assert_eq!(from_sqlite.heartbeats().unwrap(), beats);
    assert!(
        beats
            .iter()
            .any(|beat| beat.location == "gone" && beat.retired())
    );
    assert_eq!(
        from_sqlite.spend().unwrap(),
        from_postgres.spend().unwrap(),
        "spend copied, not added twice"
    );
    let a = site(&sqlite, &from_sqlite, now);
    let b = site(&postgres, &from_postgres, now);
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs after the migration");
    }
}

/// Whether the three days before `now` span two calendar months (UTC).
fn crossed_a_month(now: i64) -> bool {
    sonde::units::month_of(now) != sonde::units::month_of(now - 3 * 24 * 3600 * 1000)
}

const SCENARIO: &str = "[default]\ntoken_ms = 1\n";

fn daemon_config(dir: &Path, base_url: &str, store_extra: &str) {
    let mut text = format!(
        "[store]\nurl_env = \"SONDE_TEST_DAEMON_URL\"\n{store_extra}\n\n[schedules]\nping = \"every 1s\"\n\n[[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nrpm = 6000\nmax_concurrency = 8\n"
    );
    for model in ["a", "b", "c", "d"] {
        text.push_str(&format!(
            "[[providers.models]]\nid = \"{model}\"\nprobes = [\"ping\"]\n"
        ));
    }
    std::fs::write(dir.join("sonde.toml"), text).unwrap();
}

fn stored_ids(url: &str) -> Vec<String> {
    let var = "SONDE_TEST_READ_URL";
    // SAFETY: every test that reads through this variable sets it to its own URL just before
    // opening; the store copies it at open.
    unsafe { std::env::set_var(var, url) };
    let config = StoreConfig {
        backend: StoreBackend::Postgres {
            url_env: var.into(),
            ca_file: None,
        },
        ..StoreConfig::default()
    };
    let store = Store::open_read_only(&config).unwrap();
    store
        .results_since(0, None)
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.run_id)
        .collect()
}

/// A publisher keeping its incidents reads only those opened or changed since its last
/// read (the transaction id the table's trigger sets on every update) and publishes what a
/// cold read does, after an update by a prober that does not know the column too (one of
/// the version before, while a fleet is upgraded).
#[test]
fn kept_incidents_publish_what_a_cold_read_does() {
    let Some((cluster, _dir, config)) = with_a_database("kept_incidents", "incidents") else {
        return;
    };
    common::kept_incidents_against_cold_reads(&config);

    let now = now_ms();
    let mut kept = sonde::publish::history::History::new();
    let before = common::incidents_kept_and_cold(&config, &mut kept, now, "read whole");
    let open = before
        .iter()
        .find(|i| i.end_ms.is_none())
        .expect("one open");
    cluster.psql(
        "incidents",
        &format!(
            "UPDATE incidents SET end_ms = {now} WHERE target = '{}' AND end_ms IS NULL",
            open.target
        ),
    );
    let after = common::incidents_kept_and_cold(&config, &mut kept, now + 1, "closed by another");
    assert!(after.iter().all(|i| i.end_ms.is_some()), "{after:?}");
}

/// A location retired on PostgreSQL: refused while its writer's session holds its advisory
/// lock, then out of the fleet and back with its prober, kept and cold publishes alike.
#[test]
fn a_retired_location_leaves_the_fleet_and_comes_back_with_its_prober() {
    let Some((_cluster, _dir, config)) = with_a_database("a_retired_location", "retired") else {
        return;
    };
    common::retired_location_against_cold_reads(&config);
}

/// A store a newer sonde migrated: written and read as it is while the newer migrations
/// leave this build's code working (the oldest writer the store records is no newer than
/// this build's schema), as a fleet's probers of the version before go on during an
/// upgrade; refused, by writers and readers alike and by a writer's session already open,
/// once one did not.
#[test]
fn a_location_is_judged_silent_on_the_databases_clock_whatever_its_probers_clock_says() {
    let Some((cluster, _dir, config)) = with_a_database("judged_silent", "silent") else {
        return;
    };
    let minute = 60_000;
    let now = now_ms();
    let beat = |location: &str, seen_ms: i64, silent_ms: Option<i64>| Batch {
        heartbeats: vec![Heartbeat {
            location: location.into(),
            seen_ms,
            shortest_ms: minute,
            retired_ms: None,
            silent_ms,
        }],
        ..Batch::default()
    };
    // Two probers whose clocks are 10 minutes off, each way, and a location imported with
    // its runs (not heard by the store), its last run 5 minutes ago.
    let mut behind = Store::open(&config.store, "behind").unwrap();
    behind
        .write(&beat("behind", now - 10 * minute, Some(0)))
        .unwrap();
    let mut ahead = Store::open(&config.store, "ahead").unwrap();
    ahead
        .write(&beat("ahead", now + 10 * minute, Some(0)))
        .unwrap();
    drop(ahead);
    let mut imported = Store::open(&config.store, "imported").unwrap();
    imported
        .write(&beat("imported", now - 5 * minute, None))
        .unwrap();
    drop(imported);
    let reader = Store::open_read_only(&config.store).unwrap();
    let stale = || -> Vec<(String, bool)> {
        let statuses = publish::windows::locations(&reader, now_ms()).unwrap();
        statuses
            .into_iter()
            .map(|s| (s.location, s.stale))
            .collect()
    };
    let judged = |ahead: bool, behind: bool| {
        vec![
            ("ahead".to_owned(), ahead),
            ("behind".to_owned(), behind),
            ("imported".to_owned(), true),
        ]
    };
    // Judged on their probers' clocks (SQLite's rule, one clock there), behind would be
    // stale and ahead fresh for 13 minutes after its prober died.
    assert_eq!(stale(), judged(false, false), "both just heard");
    let heard = |location: &str| {
        let sql =
            format!("SELECT heard_ms IS NOT NULL FROM locations WHERE location = '{location}'");
        cluster.psql("silent", &sql).trim() == "t"
    };
    assert!(!heard("imported"));

    // ahead's prober dies: 4 minutes (past 3 schedules) later on the database's clock.
    cluster.psql(
        "silent",
        "UPDATE locations SET heard_ms = heard_ms - 240000 WHERE location = 'ahead'",
    );
    assert_eq!(stale(), judged(true, false), "ahead silent for 4 minutes");

    // A prober of the version before writes behind's heartbeat, with its statement: the
    // stamp is cleared, and behind is judged on its prober's clock again.
    cluster.psql(
        "silent",
        &format!(
            "INSERT INTO locations (location, seen_ms, shortest_ms, retired_ms) \
             VALUES ('behind', {}, {minute}, NULL) \
             ON CONFLICT (location) DO UPDATE SET \
                seen_ms = GREATEST(locations.seen_ms, excluded.seen_ms), \
                shortest_ms = excluded.shortest_ms, \
                retired_ms = GREATEST(locations.retired_ms, excluded.retired_ms)",
            now - 9 * minute
        ),
    );
    assert!(!heard("behind"));
    assert_eq!(stale(), judged(true, true), "an old prober's heartbeat");
    // Its own prober again, its clock still behind the heartbeat stored: heard.
    behind
        .write(&beat("behind", now - 10 * minute, Some(0)))
        .unwrap();
    assert_eq!(stale(), judged(true, false), "heard again");
    let beats = reader.heartbeats().unwrap();
    assert_eq!(
        beats[1].seen_ms,
        now - 9 * minute,
        "the later heartbeat kept"
    );
    assert!(
        beats[1]
            .silent_ms
            .is_some_and(|ms| (0..minute).contains(&ms)),
        "{beats:?}"
    );

    // Retired, then its prober started again, its clock still 10 minutes behind the
    // retirement's: back in service at its first heartbeat.
    let listed = || -> Vec<String> {
        let statuses = publish::windows::locations(&reader, now_ms()).unwrap();
        let kept = statuses.into_iter().filter(|s| !s.retired);
        kept.map(|s| s.location).collect()
    };
    behind.retire(now_ms()).unwrap().expect("retired");
    assert!(!heard("behind"), "a retirement clears the stamp");
    assert_eq!(listed(), ["ahead", "imported"]);
    behind
        .write(&beat("behind", now - 10 * minute, Some(0)))
        .unwrap();
    assert_eq!(listed(), ["ahead", "behind", "imported"]);
}

#[test]
fn a_newer_schema_is_written_while_it_allows_this_build_and_refused_once_it_does_not() {
    let Some((cluster, _dir, config)) = with_a_database("a_newer_schema", "newer") else {
        return;
    };
    drop(Store::open(&config.store, "a").unwrap());
    let schema = || cluster.psql("newer", "SELECT version, oldest_writer FROM sonde_schema");
    let (ours, oldest) = {
        let text = schema();
        let mut fields = text.trim().split('|').map(|f| f.parse::<i32>().unwrap());
        (fields.next().unwrap(), fields.next().unwrap())
    };
    assert!(oldest < ours, "{ours} {oldest}");

    // A newer sonde's migration that only added.
    cluster.psql("newer", "UPDATE sonde_schema SET version = version + 1");
    let mut writer = Store::open(&config.store, "a").expect("a newer schema this build may write");
    let now = now_ms();
    let run = common::scripted(&config, 0, now, sonde::result::Outcome::Ok, 100.0);
    writer
        .write(&Batch {
            results: vec![(run, now)],
            ..Batch::default()
        })
        .unwrap();
    drop(writer);
    let reader = Store::open_read_only(&config.store).expect("and read");
    assert_eq!(reader.result_count().unwrap(), 1);
    drop(reader);
    assert_eq!(
        schema().trim(),
        format!("{}|{oldest}", ours + 1),
        "left as it is"
    );

    // One that needs newer code, applied while a writer's session lasts: its next write is
    // refused (the writer holds the runs), then new sessions are.
    let mut lasting = Store::open(&config.store, "b").unwrap();
    cluster.psql("newer", "UPDATE sonde_schema SET oldest_writer = version");
    let run = common::scripted(&config, 1, now, sonde::result::Outcome::Ok, 100.0);
    let batch = Batch {
        results: vec![(run, now)],
        ..Batch::default()
    };
    let Err(err) = lasting.write(&batch) else {
        panic!("a session wrote on a schema this build may not write");
    };
    assert!(err.to_string().contains("upgrade sonde"), "{err}");
    drop(lasting);
    let refused = |opened: Result<Store, sonde::store::StoreError>| {
        let Err(err) = opened else {
            panic!("a schema this build may not write was opened");
        };
        let text = err.to_string();
        assert!(
            text.contains(&format!("newer than this sonde's {ours}: upgrade sonde")),
            "{text}"
        );
    };
    refused(Store::open(&config.store, "a"));
    refused(Store::open_read_only(&config.store));
    cluster.psql(
        "newer",
        &format!("UPDATE sonde_schema SET oldest_writer = {oldest}"),
    );
    let mut writer = Store::open(&config.store, "b").unwrap();
    writer.write(&batch).unwrap();
    assert_eq!(writer.result_count().unwrap(), 2, "nothing half written");
}

/// A one-shot command (`sonde publish`, an export, `sonde sync`) keeps the checkpoint only
/// when no daemon does: not while another holds the checkpoint lock, then once it is free,
/// and again only when the one it saved is older than `publish.checkpoint` and a publish
/// interval. Each publish from it is a cold read's.
#[test]
fn a_one_shot_saves_the_checkpoint_only_when_no_daemon_keeps_it() {
    let Some((_cluster, _dir, config)) =
        with_a_database("a_one_shot_saves_the_checkpoint", "one_shot")
    else {
        return;
    };
    let now = now_ms();
    let records = history(&config, now);
    let writer = Store::open(&config.store, &config.prober.location).unwrap();
    import(writer, &config, records).unwrap();
    let keeping = Store::open_read_only(&config.store).unwrap();
    assert!(
        keeping.checkpoint_lock().unwrap(),
        "a daemon takes the lock"
    );
    let store = Store::open_read_only(&config.store).unwrap();
    let published = |at: i64| {
        let snapshot = Snapshot::load_one_shot(&config, &store, at).unwrap();
        let cold = Snapshot::load(&config, &store, at).unwrap();
        assert_eq!(
            publish::build(&config, &snapshot).unwrap(),
            publish::build(&config, &cold).unwrap(),
            "a one-shot's publish at {at} is a cold read's"
        );
    };

    published(now);
    assert_eq!(
        store.checkpoint_saved_ms().unwrap(),
        None,
        "a daemon holds the checkpoint lock"
    );
    drop(keeping);
    published(now);
    assert_eq!(store.checkpoint_saved_ms().unwrap(), Some(now), "saved");
    let every = config.publish.checkpoint.unwrap() + config.publish.every;
    let kept_for = every.as_millis() as i64;
    published(now + kept_for - 1);
    assert_eq!(
        store.checkpoint_saved_ms().unwrap(),
        Some(now),
        "restored, not saved again while fresh"
    );
    published(now + kept_for);
    assert_eq!(
        store.checkpoint_saved_ms().unwrap(),
        Some(now + kept_for),
        "saved again once older"
    );
}

/// The checkpoint is a cache kept out of PostgreSQL's WAL: a 4 MiB save writes a few KiB of
/// it, where a logged table writes the whole body again. A crash of the server empties it
/// (the next publisher reads the store whole) while every stored run stays.
#[test]
fn the_checkpoint_is_kept_out_of_the_wal_and_a_crash_empties_it() {
    let Some((cluster, _dir, config)) =
        with_a_database("the_checkpoint_is_kept_out_of_the_wal", "checkpointed")
    else {
        return;
    };
    let now = now_ms();
    let records = history(&config, now);
    let count = records.len() as u64;
    let writer = Store::open(&config.store, &config.prober.location).unwrap();
    assert_eq!(import(writer, &config, records).unwrap(), count);
    let store = Store::open_read_only(&config.store).unwrap();

    let size = 4 << 20;
    // Bytes that do not compress, as a deflated checkpoint's.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let body: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for _ in 0..2 {
        let ((), wal) = cluster.wal_written(|| store.save_checkpoint(now, &body).unwrap());
        assert!(
            wal < size as u64 / 64,
            "a {size}-byte checkpoint wrote {wal} bytes of WAL"
        );
    }
    assert_eq!(store.checkpoint().unwrap().as_deref(), Some(&body[..]));
    let mut kept = sonde::publish::history::History::new();
    Snapshot::load_with(&config, &store, now, &mut kept).unwrap();
    checkpoint::save(&store, &kept).unwrap();
    assert!(checkpoint::restore(&store, now).unwrap().is_some());
    assert_eq!(store.checkpoint_saved_ms().unwrap(), kept.at_ms());
    drop(store);

    cluster.stop();
    cluster.start_again();
    let store = Store::open_read_only(&config.store).unwrap();
    assert!(
        store.checkpoint().unwrap().is_none() && store.checkpoint_saved_ms().unwrap().is_none(),
        "a crash empties the checkpoint (a daemon holding its lock saves it again at its next \
         publish)"
    );
    assert_eq!(store.result_count().unwrap(), count, "every run stays");
    let cold = publish::build(&config, &Snapshot::load(&config, &store, now).unwrap()).unwrap();
    assert_eq!(
        common::published_afresh(&config, &store, now),
        cold,
        "read whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_postgres_and_a_kill_9_lose_no_recorded_run() {
    let Some(cluster) = common::postgres::start("a_restart_of_postgres_and_a_kill_9") else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.database("daemon");
    daemon_config(dir.path(), &sim.base_url(), "");
    let mut daemon = Daemon::start(dir.path(), &[("SONDE_TEST_DAEMON_URL", &url)]);
    tokio::task::block_in_place(|| {
        daemon.wait_for("8 recorded runs", |d| d.ids("recorded").len() >= 8);
        // A second daemon on the same database is refused by the writer's lock.
        let second = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .arg("run")
            .current_dir(dir.path())
            .env("SONDE_TEST_DAEMON_URL", &url)
            .output()
            .unwrap();
        let message = common::refused_as_second_daemon(&second);
        assert!(!message.contains("postgres@"), "{message}");

        cluster.stop();
        let before = daemon.ids("recorded").len();
        daemon.wait_for("a failed write", |d| {
            !d.lines("writing to the store failed").is_empty()
        });
        std::thread::sleep(Duration::from_secs(3));
        cluster.start_again();
        daemon.wait_for("the store written again", |d| {
            !d.lines("the store is written again").is_empty()
        });
        daemon.wait_for("runs recorded after the restart", |d| {
            d.ids("recorded").len() >= before + 16
        });
    });
    let mut child = daemon.process();
    child.kill().unwrap(); // SIGKILL: no chance to flush.
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let recorded = daemon.ids("recorded");
    assert!(
        daemon.ids("a run was lost").is_empty(),
        "the default buffer holds a few seconds"
    );
    let stored = stored_ids(&url);
    for id in &recorded {
        assert!(
            stored.contains(id),
            "run {id} was logged as recorded but is not stored"
        );
    }
    let mut unique = stored.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "no run stored twice");
    assert!(!daemon.text().contains(&url), "the URL is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_buffer_the_writer_drops_the_oldest_runs_and_says_which() {
    let Some(cluster) = common::postgres::start("past_its_buffer_the_writer_drops") else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.database("buffered");
    daemon_config(dir.path(), &sim.base_url(), "buffer = 5");
    let mut daemon = Daemon::start(dir.path(), &[("SONDE_TEST_DAEMON_URL", &url)]);
    tokio::task::block_in_place(|| {
        daemon.wait_for("4 recorded runs", |d| d.ids("recorded").len() >= 4);
        cluster.stop();
        daemon.wait_for("runs lost past the buffer", |d| {
            d.ids("a run was lost").len() >= 6
        });
        cluster.start_again();
        daemon.wait_for("the store written again", |d| {
            !d.lines("the store is written again").is_empty()
        });
    });
    let output = common::terminate(daemon.process()).await;
    assert_eq!(output.status.code(), Some(0));
    let recorded = daemon.ids("recorded");
    let lost = daemon.ids("a run was lost");
    let stored = stored_ids(&url);
    for id in &lost {
        assert!(
            !stored.contains(id),
            "a run logged as lost was stored: {id}"
        );
        assert!(
            !recorded.contains(id),
            "a run logged as lost was also logged as recorded: {id}"
        );
    }
    for id in &recorded {
        assert!(
            stored.contains(id),
            "run {id} was logged as recorded but is not stored"
        );
    }
    let lost_line = &daemon.lines("a run was lost")[0];
    assert_eq!(lost_line["buffer"], 5, "{lost_line}");
    assert_eq!(lost_line["level"], "ERROR");
    // The counter `/metrics` shows as sonde_runs_lost_total counts each of them once.
    tokio::task::block_in_place(|| {
        daemon.wait_for("the stop line", |d| {
            !d.lines("sonde daemon stopped").is_empty()
        });
    });
    let stopped = &daemon.lines("sonde daemon stopped")[0];
    assert_eq!(stopped["lost"], lost.len() as u64, "{stopped}");
}

#[test]
fn an_unset_or_unreachable_database_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!("{}\n{PROVIDERS}", postgres_store("SONDE_TEST_UNSET_URL")),
    )
    .unwrap();
    let run = |url: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sonde"));
        command
            .args(["publish", "--out", "site"])
            .current_dir(dir.path());
        command.env_remove("SONDE_TEST_UNSET_URL");
        if let Some(url) = url {
            command.env("SONDE_TEST_UNSET_URL", url);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8(output.stderr).unwrap()
    };
    let unset = run(None);
    assert!(
        unset.contains("SONDE_TEST_UNSET_URL, which is not set"),
        "{unset}"
    );
    let port = common::free_port();
    let refused = run(Some(&format!(
        "postgres://sonde:s3cret-passw0rd-long@127.0.0.1:{port}/sonde"
    )));
    assert!(
        refused.contains(&format!("postgresql://127.0.0.1:{port}/sonde")),
        "{refused}"
    );
    assert!(!refused.contains("s3cret"), "{refused}");
}

#[test]
fn tls_with_a_private_ca_is_verified_and_required() {
    let Some(cluster) = common::postgres::start("tls_with_a_private_ca") else {
        return;
    };
    let ca = cluster.enable_tls();
    let url = format!("{}?sslmode=require", cluster.database("tls"));
    let var = "SONDE_TEST_TLS_URL";
    // SAFETY: this test's own variable, set before any store reads it.
    unsafe { std::env::set_var(var, &url) };
    let store = |ca_file: Option<&Path>| StoreConfig {
        backend: StoreBackend::Postgres {
            url_env: var.into(),
            ca_file: ca_file.map(Path::to_path_buf),
        },
        ..StoreConfig::default()
    };
    // The system's roots do not know the test CA: the handshake fails, and says why.
    let refused = Store::open(&store(None), "here").unwrap_err().to_string();
    assert!(
        refused.to_lowercase().contains("certificate") && !refused.contains("postgres@"),
        "{refused}"
    );
    // With `ca_file`, the store opens over TLS and round-trips a batch.
    let mut opened = Store::open(&store(Some(&ca)), "here").unwrap();
    let mut record = not_sent(
        &config(tempfile::tempdir().unwrap().path(), "").targets[0],
        &sonde::probe::ProbeSet::builtin()
            .get("ping")
            .unwrap()
            .clone(),
        Scheduled::now(),
        Outcome::Ok,
        String::new(),
    );
    record.location = "here".into();
    opened
        .write(&sonde::store::Batch {
            results: vec![(record.clone(), 1_000)],
            ..sonde::store::Batch::default()
        })
        .unwrap();
    let reader = Store::open_read_only(&store(Some(&ca))).unwrap();
    assert_eq!(
        reader.results_since(0, None).unwrap()[0].0.run_id,
        record.run_id
    );
    // The server says the store's sessions are encrypted.
    let encrypted: u32 = cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = 'tls'",
        )
        .trim()
        .parse()
        .unwrap();
    assert!(encrypted >= 2, "{encrypted} TLS sessions of the store");
}

/// A server for `test` with a store in its database `db` (its URL in `var`), and the
/// store's shared limits; `None` when PostgreSQL tests are skipped.
fn fleet_limits(
    test: &str,
    var: &str,
    db: &str,
) -> Option<(
    common::postgres::Cluster,
    std::sync::Arc<dyn sonde::store::FleetLimits>,
)> {
    let cluster = common::postgres::start(test)?;
    // SAFETY: this test's own variable, set before any store reads it.
    unsafe { std::env::set_var(var, cluster.database(db)) };
    let config = StoreConfig {
        backend: StoreBackend::Postgres {
            url_env: var.into(),
            ca_file: None,
        },
        ..StoreConfig::default()
    };
    // Opening as a writer once creates the schema.
    drop(Store::open(&config, "a").unwrap());
    let fleet = Store::open_read_only(&config)
        .unwrap()
        .into_fleet_limits()
        .expect("PostgreSQL coordinates a fleet");
    Some((cluster, fleet))
}

#[test]
fn a_released_lease_stops_counting_at_once_and_still_keeps_a_newcomer_waiting() {
    let Some((_cluster, fleet)) =
        fleet_limits("a_released_lease", "SONDE_TEST_LEASE_URL", "leases")
    else {
        return;
    };
    let window = Duration::from_secs(60);
    let first = fleet.lease_rate("shared", "a", window, false).unwrap();
    assert_eq!((first.holders, first.active), (1, true), "{first:?}");
    let second = fleet.lease_rate("shared", "b", window, false).unwrap();
    assert_eq!((second.holders, second.rank), (2, 1), "{second:?}");
    assert!(!second.active, "b waits for a's sends to leave the window");

    fleet.release_rate("shared", "a").unwrap();
    let after = fleet.lease_rate("shared", "b", window, true).unwrap();
    assert_eq!(after.holders, 1, "a released its lease: {after:?}");
    assert!(
        !after.active,
        "a's last sends are still in the window: {after:?}"
    );
    let newcomer = fleet.lease_rate("shared", "c", window, false).unwrap();
    assert_eq!(newcomer.holders, 2, "{newcomer:?}");
    assert!(!newcomer.active, "{newcomer:?}");
    // Releasing what one does not hold changes nothing.
    fleet.release_rate("other", "a").unwrap();
    assert_eq!(
        fleet
            .lease_rate("shared", "c", window, true)
            .unwrap()
            .holders,
        2
    );
}

/// The database away for longer than a lease lives (a failover): the leases lapse, and a
/// prober that went on sending within its own keeps its age when it renews — it sends at
/// once, as the others cannot have grown into its part yet —, where a restarted prober (or
/// one back only after the others may have) waits as a newcomer does; so does a daemon
/// restarted at once after a crash, its lease not lapsed.
#[test]
fn a_lease_held_while_the_database_was_away_keeps_its_age() {
    let Some((cluster, fleet)) = fleet_limits(
        "a_lease_held_while_away",
        "SONDE_TEST_HELD_LEASE_URL",
        "held",
    ) else {
        return;
    };
    let window = Duration::from_secs(60);
    let back = |location: &str, since_s: i64, renewed_s: i64| {
        cluster.psql(
            "held",
            &format!(
                "UPDATE rate_leases SET since_ms = since_ms - {since_s} * 1000, \
                 renewed_ms = renewed_ms - {renewed_s} * 1000 WHERE location = '{location}'"
            ),
        );
    };
    for location in ["a", "b"] {
        fleet.lease_rate("shared", location, window, false).unwrap();
        back(location, 600, 0);
    }
    let a = fleet.lease_rate("shared", "a", window, true).unwrap();
    assert_eq!((a.holders, a.active), (2, true), "{a:?}");

    // The database away for 30 s: both leases lapsed.
    back("a", 0, 30);
    back("b", 0, 30);
    let a = fleet.lease_rate("shared", "a", window, true).unwrap();
    assert_eq!(
        (a.holders, a.active),
        (1, true),
        "a sent within its lease: {a:?}"
    );
    let b = fleet.lease_rate("shared", "b", window, false).unwrap();
    assert_eq!(
        (b.holders, b.active),
        (2, false),
        "b's prober restarted meanwhile: a newcomer: {b:?}"
    );

    // a back only after the others could have grown into its part.
    let kept = sonde::store::lease_kept_for(window).as_secs() as i64;
    back("a", 0, kept + 1);
    let a = fleet.lease_rate("shared", "a", window, true).unwrap();
    assert!(
        !a.active,
        "a lease lapsed {}s ago starts again: {a:?}",
        kept + 1
    );

    // b's daemon killed and started again at once: its lease has not lapsed, but the new
    // process cannot know when the one before it last sent.
    back("b", 600, 0);
    let b = fleet.lease_rate("shared", "b", window, true).unwrap();
    assert!(b.active, "{b:?}");
    let b = fleet.lease_rate("shared", "b", window, false).unwrap();
    assert!(!b.active, "a new process is a newcomer: {b:?}");
}
