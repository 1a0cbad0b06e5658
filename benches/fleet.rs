//! A fleet's store at the scale of issue #13: 10 locations × 1,000 targets, one run a minute,
//! 30 days, on PostgreSQL. Then every window of every target (merged over the locations,
//! and each location's) and a whole publish, read back cold; then the publishes of a fleet
//! publisher that keeps its history (`publish::history::History`, as the daemon holding the
//! publisher lock does), each after another minute of the fleet's runs. The history ends
//! 2 min 45 s before an hour begins, so the third of those publishes is the first of a new
//! hour (the `24h` window moves: the one publish an hour that looks at every key), marked
//! in what the bench prints; `SONDE_BENCH_FLEET_TURN=day` ends it before a day begins
//! instead (`24h`, `7d` and `30d` all move: the one publish a day that costs the most).
//! `SONDE_BENCH_FLEET_LEAD` sets how many whole minutes before that turn the history ends
//! (2, and 45 s), to time the publishes that read ahead the buckets leaving the windows at
//! the turn (each of the last 10 minutes a tenth of them): 11 and 14 minutes of publishes
//! time all ten.
//! Last, that publisher saves its checkpoint (`publish::checkpoint`) and another starts
//! from it a minute of runs later, as a restarted daemon or one taking the publisher lock
//! over does: the checkpoint's size, the save, the restore and that publisher's first
//! publish (the median of three); a one-shot export's feed from that checkpoint (`sonde
//! publish --format`, `sonde sync`) against the cold read each took before; the same with
//! 20 targets more in the config; from the
//! checkpoint as another version of sonde in this layout saved it (after an upgrade), with
//! the read of the whole store that replaces it; and from one whose incidents, runs, then
//! window sums are in another layout (an upgrade that changed that part: read whole, the
//! others restored; the incidents read whole are what every restart cost before they were
//! a part). Before all that,
//! the uptime bar's incidents read whole (a publisher's first read) and then only those
//! written since (each later publish's).
//!
//! What is stored is what 30 days of the fleet leaves, without writing 432 M raw results:
//! the last hour's raw results (600,000: the `5m` and `1h` windows read them), hourly rollups
//! for the last 24 hours and daily rollups for 30 days (540,000 rows), each folded by the
//! writer's own `SparseRollup::add_run` from synthetic runs (60 a rollup hour, 1,440 a day)
//! and written through the store's copy path, then the closed buckets' points packed as
//! `sonde store migrate` packs them (a fleet's writers pack theirs as they write); a state per
//! target and location; every location's heartbeat, fresh. The heatmap's 28 days of hourly
//! rollups are left out (one day of them) unless `SONDE_BENCH_FLEET_HEATMAP=1`: they are most
//! of a cold publish's reading, and writing them takes the bench about 6 minutes more.
//!
//! `cargo bench --bench fleet` (needs PostgreSQL's server binaries, as the tests do; it starts
//! its own server in a temporary folder). `SONDE_BENCH_FLEET_LOCATIONS` and
//! `SONDE_BENCH_FLEET_TARGETS` scale it down (10 and 1,000 by default);
//! `SONDE_BENCH_FLEET_MINUTES` sets how many periodic publishes the kept publisher makes
//! (5), and `SONDE_BENCH_FLEET_KEPT_ONLY=1` skips the cold reads (most of the bench's
//! time) to measure only the kept publisher. `SONDE_BENCH_FLEET_INCIDENTS` sets how many
//! incidents (ten minutes down each) every target had in every location over the uptime
//! bar's 90 days (5: 50,000 at this scale, a fleet with flaky free tiers among its
//! providers).

mod common;
#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod server;
#[path = "../tests/common/checkpoint.rs"]
#[allow(dead_code)]
mod stored;

use std::time::{Duration, Instant};

use sonde::aggregate::health::{IncidentKind, State, TargetHealth};
use sonde::aggregate::rollup::Span;
use sonde::aggregate::sparse::SparseRollup;
use sonde::config::{Config, StoreBackend, StoreConfig};
use sonde::publish::history::History;
use sonde::publish::windows::{self, summarize};
use sonde::publish::{self, BAR_DAYS, HEATMAP_DAYS, Snapshot, checkpoint};
use sonde::result::ResultRecord;
use sonde::scheduler::stable_hash;
use sonde::store::{Copied, Heartbeat, Incident, RollupRow, Store, TargetAt};
use stored::{as_saved_by_another_version, with_a_part_in_another_layout};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// One synthetic run of `target` (index `t`) from `location` (index `l`) at `at`.
fn run(config: &Config, t: usize, l: usize, at: i64, minute: i64) -> ResultRecord {
    let probe = config.probes.get("stream").expect("stream probe");
    let wobble = ((minute * 7919 + t as i64 * 104_729 + l as i64 * 31) % 1000) as f64;
    let mut record = common::synthetic(&config.targets[t], probe, at, wobble, (t + l) as f64);
    record.location = format!("loc-{l:02}");
    record.run_id = format!("{t:04}-{l:02}-{minute:08}");
    record
}

/// Writes the fleet's 30 days into `store`; returns the rows written.
fn generate(store: &mut Store, config: &Config, locations: usize, now: i64) -> u64 {
    let hours = if heatmap() { HEATMAP_DAYS * 24 } else { 24 };
    let hour = Span::Hour.ms();
    let day = Span::Day.ms();
    let mut written = 0u64;
    let mut page = Copied::default();
    let mut flush = |page: &mut Copied, store: &mut Store, force: bool| {
        if force || page.results.len() + page.rollups.len() >= 5_000 {
            written += (page.results.len() + page.rollups.len()) as u64;
            store.copy(&std::mem::take(page)).expect("copy");
        }
    };
    for l in 0..locations {
        for t in 0..config.targets.len() {
            let target = &config.targets[t].id;
            let location = format!("loc-{l:02}");
            // The last hour, raw.
            let mut hour_rollup = SparseRollup::default();
            for minute in 0..60 {
                let at = now - (60 - minute) * 60_000 + (t as i64 * 37) % 60_000;
                let record = run(config, t, l, at, minute);
                hour_rollup.add_run(&record, at);
                page.results.push((record, at));
            }
            let rollup_row = |span: Span, bucket: i64, rollup: &SparseRollup| RollupRow {
                span,
                bucket,
                target: target.clone(),
                probe: "stream".into(),
                location: location.clone(),
                rollup: rollup.clone(),
            };
            for h in 0..hours {
                let bucket = Span::Hour.bucket_of(now) - h * hour;
                page.rollups
                    .push(rollup_row(Span::Hour, bucket, &hour_rollup));
            }
            let mut day_rollup = SparseRollup::default();
            for _ in 0..24 {
                day_rollup.add(&hour_rollup);
            }
            for d in 0..30 {
                let bucket = Span::Day.bucket_of(now) - d * day;
                page.rollups
                    .push(rollup_row(Span::Day, bucket, &day_rollup));
            }
            page.health.push((
                TargetAt::new(target, &location),
                TargetHealth {
                    state: State::Healthy,
                    samples: 43_200,
                    since_ms: now - 30 * day,
                    ..TargetHealth::default()
                },
            ));
            page.incidents.extend(incidents(target, &location, now));
            flush(&mut page, store, false);
        }
        page.heartbeats.push(Heartbeat {
            location: format!("loc-{l:02}"),
            seen_ms: now,
            shortest_ms: 60_000,
            retired_ms: None,
            silent_ms: None,
        });
    }
    flush(&mut page, store, true);
    written
}

/// `target`'s incidents in `location` before `now`: `SONDE_BENCH_FLEET_INCIDENTS` of them,
/// spread over the uptime bar's days, each ten minutes down.
fn incidents(target: &str, location: &str, now: i64) -> Vec<Incident> {
    let per = count("SONDE_BENCH_FLEET_INCIDENTS", 5) as i64;
    let days = (BAR_DAYS - 1) * Span::Day.ms();
    (0..per)
        .map(|i| {
            let start_ms = now - days + i * days / per + stable_hash(target) as i64 % 60_000;
            Incident {
                kind: IncidentKind::Health,
                target: target.into(),
                location: location.into(),
                state: State::Down,
                cause: "timeout: no answer within 30 s".into(),
                start_ms,
                end_ms: Some(start_ms + 600_000),
            }
        })
        .collect()
}

/// Writes one more minute of the fleet at `at` (untimed): a run per target and location,
/// folded into its current hour's and day's rollups as the writers fold them, and every
/// location's heartbeat.
fn next_minute(store: &mut Store, config: &Config, locations: usize, at: i64, minute: i64) {
    let mut page = Copied::default();
    for l in 0..locations {
        let location = format!("loc-{l:02}");
        for (t, target) in config.targets.iter().enumerate() {
            let record = run(config, t, l, at, minute);
            let here = TargetAt::new(&target.id, &location);
            for span in [Span::Hour, Span::Day] {
                let bucket = span.bucket_of(at);
                let mut rollup = store
                    .rollup(span, bucket, &here, "stream")
                    .expect("read a rollup")
                    .unwrap_or_default();
                rollup.add_run(&record, at);
                page.rollups.push(RollupRow {
                    span,
                    bucket,
                    target: target.id.clone(),
                    probe: "stream".into(),
                    location: location.clone(),
                    rollup,
                });
            }
            page.results.push((record, at));
        }
        page.heartbeats.push(Heartbeat {
            location,
            seen_ms: at,
            shortest_ms: 60_000,
            retired_ms: None,
            silent_ms: None,
        });
    }
    store.copy(&page).expect("copy a minute");
}

/// Whether the heatmap's 28 days of hourly rollups are written (`SONDE_BENCH_FLEET_HEATMAP=1`:
/// 6.72 M rows more, what a month of the fleet really leaves) rather than the `24h`
/// window's 24 hours alone.
fn heatmap() -> bool {
    std::env::var("SONDE_BENCH_FLEET_HEATMAP").is_ok_and(|v| v == "1")
}

/// The bucket whose turn the kept publishes cross: an hour, or a day with
/// `SONDE_BENCH_FLEET_TURN=day`.
fn turn() -> Span {
    match std::env::var("SONDE_BENCH_FLEET_TURN").as_deref() {
        Ok("day") => Span::Day,
        _ => Span::Hour,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with('-') && arg != "fleet")
    {
        return;
    }
    let Some(cluster) = server::start("the fleet bench") else {
        return;
    };
    let locations = count("SONDE_BENCH_FLEET_LOCATIONS", 10);
    let targets = count("SONDE_BENCH_FLEET_TARGETS", 1_000);
    let config = common::fleet_config(targets);
    // SAFETY: set before any store reads it; this bench's own variable.
    unsafe { std::env::set_var("SONDE_BENCH_FLEET_URL", cluster.database("fleet")) };
    let config = Config {
        store: StoreConfig {
            backend: StoreBackend::Postgres {
                url_env: "SONDE_BENCH_FLEET_URL".into(),
                ca_file: None,
            },
            retention_days: 400,
            rollup_retention_days: 400,
            ..StoreConfig::default()
        },
        ..config
    };
    // 2 min 45 s before an hour (or a day) begins: the kept publisher's third periodic
    // publish is the first of a new one, when its windows move and every key is looked at.
    let turn = turn();
    let lead = count("SONDE_BENCH_FLEET_LEAD", 2) as i64;
    let now = common::now_ms() / turn.ms() * turn.ms() - lead * 60_000 - 45_000;
    let mut store = Store::open(&config.store, "loc-00").expect("open store");
    let started = Instant::now();
    let rows = generate(&mut store, &config, locations, now);
    let written = started.elapsed();
    // What `sonde store migrate` does after its copy, and a fleet's writers as they write.
    store.pack(now).expect("pack");
    println!(
        "{locations} locations × {} targets: {rows} rows written in {:.1} s, their closed buckets' points packed in {:.1} s",
        config.targets.len(),
        written.as_secs_f64(),
        (started.elapsed() - written).as_secs_f64()
    );
    drop(store);
    // What autovacuum has done to a month-old store: statistics, and the visibility map
    // that lets the publisher's walk of rollup heads read the index alone.
    cluster.psql("fleet", "VACUUM ANALYZE");
    let reader = Store::open_read_only(&config.store).expect("open for reading");
    incident_reads(&reader, now);
    if std::env::var_os("SONDE_BENCH_FLEET_KEPT_ONLY").is_none_or(|v| v != "1") {
        cold_reads(&reader, &config, locations, now);
    }
    kept_publishes(&cluster, &reader, &config, locations, now);
}

/// The incidents of the uptime bar's days read whole (what every publish read before a
/// publisher kept them, and what its first still reads), then those written since that
/// read (what each later publish reads), a few times each.
fn incident_reads(reader: &Store, now: i64) {
    let since = now - BAR_DAYS * Span::Day.ms();
    let mut whole = Vec::new();
    let mut since_last = Vec::new();
    let mut count = 0;
    for _ in 0..3 {
        let started = Instant::now();
        count = 0;
        let seen = reader
            .each_incident_written(since, None, &mut |_, _| count += 1)
            .expect("read the incidents");
        whole.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        reader
            .each_incident_written(since, Some(&seen), &mut |_, _| {})
            .expect("read the incidents written since");
        since_last.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let ms = |times: &[f64]| {
        let times: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
        times.join(", ")
    };
    println!(
        "the bar's {count} incidents: read whole in {} ms; those written since in {} ms",
        ms(&whole),
        ms(&since_last)
    );
}

/// Every window and a whole publish read cold (nothing kept), and the store's reads they
/// rest on, timed apart.
fn cold_reads(reader: &Store, config: &Config, locations: usize, now: i64) {
    let cold = Instant::now();
    let stats = summarize(reader, config, now).expect("windows");
    let cold = cold.elapsed();
    assert_eq!(stats.len(), config.targets.len());
    assert!(stats.iter().all(|s| s.locations.len() == locations));
    let parts = Instant::now();
    let raw = reader
        .results_since(now - 3_600_000, None)
        .expect("raw")
        .len();
    let t_raw = parts.elapsed();
    let mut hourly = 0usize;
    reader
        .each_rollup_since(Span::Hour, now - 25 * 3_600_000, &mut |_| hourly += 1)
        .expect("hourly");
    let t_hourly = parts.elapsed() - t_raw;
    let mut daily = 0usize;
    reader
        .each_rollup_since(Span::Day, now - 31 * 86_400_000, &mut |_| daily += 1)
        .expect("daily");
    let t_daily = parts.elapsed() - t_raw - t_hourly;
    println!(
        "reads: {raw} raw results {:.0} ms, {hourly} hourly rollups {:.0} ms, {daily} daily rollups {:.0} ms",
        t_raw.as_secs_f64() * 1000.0,
        t_hourly.as_secs_f64() * 1000.0,
        t_daily.as_secs_f64() * 1000.0
    );
    let windows = common::median(3, || {
        summarize(reader, config, now).expect("windows");
    });
    let publish = common::median(3, || {
        let snapshot = Snapshot::load(config, reader, now).expect("snapshot");
        publish::build(config, &snapshot).expect("build");
    });
    println!(
        "all windows of {} targets × {locations} locations (merged and per location): {:.0} ms \
         (first {:.0} ms); a whole publish: {:.0} ms; targets: windows < 2,000 ms, publish < 2,000 ms",
        config.targets.len(),
        windows.as_secs_f64() * 1000.0,
        cold.as_secs_f64() * 1000.0,
        publish.as_secs_f64() * 1000.0
    );
}

/// The publishes of a publisher that keeps its history between them: its first reads
/// everything, each later one what the minute since changed.
fn kept_publishes(
    cluster: &server::Cluster,
    reader: &Store,
    config: &Config,
    locations: usize,
    now: i64,
) {
    let mut history = History::new();
    let publish_at = |config: &Config, at: i64, history: &mut History| {
        let started = Instant::now();
        let snapshot = Snapshot::load_with(config, reader, at, history).expect("snapshot");
        publish::build(config, &snapshot).expect("build");
        started.elapsed()
    };
    let first = publish_at(config, now, &mut history);
    let mut writer = Store::open(&config.store, "loc-00").expect("open store");
    let minutes = count("SONDE_BENCH_FLEET_MINUTES", 5).max(1) as i64;
    let turn = turn();
    let (mut buckets, mut taken) = (Vec::new(), Vec::new());
    let mut periodic: Vec<Duration> = (1..=minutes)
        .map(|minute| {
            let at = now + minute * 60_000;
            next_minute(&mut writer, config, locations, at, 60 + minute);
            buckets.push(turn.bucket_of(at + 30_000));
            let took = publish_at(config, at + 30_000, &mut history);
            taken.push(history.taken_ahead());
            took
        })
        .collect();
    let each: Vec<String> = periodic
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let turned = i > 0 && buckets[i] != buckets[i - 1];
            let ahead = taken[i];
            let mark = match (turned, turn) {
                (false, _) => String::new(),
                (true, Span::Day) => {
                    format!(" (a new day; {ahead} buckets leaving taken from those read ahead)")
                }
                (true, _) => {
                    format!(" (a new hour; {ahead} buckets leaving taken from those read ahead)")
                }
            };
            format!("{:.0}{mark}", t.as_secs_f64() * 1000.0)
        })
        .collect();
    periodic.sort();
    println!(
        "a publisher keeping its history: first publish {:.0} ms, then after each minute of \
         {} runs: median {:.0} ms (min {:.0}, max {:.0}; each: {} ms); {} counters kept \
         ({:.1} MiB)",
        first.as_secs_f64() * 1000.0,
        locations * config.targets.len(),
        periodic[periodic.len() / 2].as_secs_f64() * 1000.0,
        periodic[0].as_secs_f64() * 1000.0,
        periodic[periodic.len() - 1].as_secs_f64() * 1000.0,
        each.join(", "),
        history.counters(),
        history.counter_bytes() as f64 / (1024.0 * 1024.0)
    );

    // The publisher dies after its last publish; another starts from its checkpoint a
    // minute later.
    let started = Instant::now();
    let encoded = checkpoint::encode(&history).expect("encode the checkpoint");
    // The writers are idle meanwhile: this is the save's WAL.
    let (bytes, wal) = cluster.wal_written(|| encoded.save(reader).expect("save the checkpoint"));
    let saved = started.elapsed();
    drop(history);
    let at = now + (minutes + 1) * 60_000;
    next_minute(&mut writer, config, locations, at, 60 + minutes + 1);
    let restart = |config: &Config| {
        let started = Instant::now();
        let mut restored = checkpoint::restore(reader, at + 30_000)
            .expect("restore the checkpoint")
            .expect("a checkpoint");
        let restoring = started.elapsed();
        let first = publish_at(config, at + 30_000, &mut restored);
        (restoring, first, restored)
    };
    // The restart whose whole time is the median of three, from the same checkpoint.
    let median_restart = |config: &Config| {
        let mut restarts: Vec<(Duration, Duration)> = (0..3)
            .map(|_| {
                let (restoring, first, _) = restart(config);
                (restoring, first)
            })
            .collect();
        restarts.sort_by_key(|(restoring, first)| *restoring + *first);
        restarts[1]
    };
    let (restoring, first) = median_restart(config);
    println!(
        "its checkpoint: {:.1} MiB, saved in {:.0} ms, {:.0} KiB of WAL; a publisher started \
         from it a minute later (the median of three): restored in {:.0} ms, its first publish \
         {:.0} ms ({:.0} ms in all)",
        bytes as f64 / (1024.0 * 1024.0),
        saved.as_secs_f64() * 1000.0,
        wal as f64 / 1024.0,
        restoring.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
        (restoring + first).as_secs_f64() * 1000.0
    );

    // A gateway's export regenerated on a schedule (`sonde publish --format litellm`,
    // `sonde sync`): its feed from the checkpoint, against the cold read each took before.
    let feed_now = common::median(3, || {
        let snapshot = Snapshot::load_one_shot(config, reader, at + 30_000).expect("snapshot");
        snapshot.feed(config);
    });
    let started = Instant::now();
    let stats = summarize(reader, config, at + 30_000).expect("windows");
    let fleet = windows::locations(reader, at + 30_000).expect("locations");
    let cold = publish::feed::build(config, &stats, &fleet, at + 30_000);
    let cold_took = started.elapsed();
    let restored = Snapshot::load_one_shot(config, reader, at + 30_000)
        .expect("the feed")
        .feed(config);
    assert_eq!(
        serde_json::to_string(&restored).unwrap(),
        serde_json::to_string(&cold).unwrap(),
        "the feed from the checkpoint is the cold read's"
    );
    println!(
        "a one-shot export's feed (sonde publish --format, sonde sync): {:.0} ms from the \
         checkpoint (the median of three), against {:.0} ms read cold ({:.2}×)",
        feed_now.as_secs_f64() * 1000.0,
        cold_took.as_secs_f64() * 1000.0,
        feed_now.as_secs_f64() / cold_took.as_secs_f64()
    );

    // The same restart with 20 targets more in the config (one more model a provider).
    let more = Config {
        targets: common::fleet_config(config.targets.len() + 20).targets,
        ..config.clone()
    };
    let (restoring, first, _) = restart(&more);
    println!(
        "with 20 targets more in the config: restored in {:.0} ms, its first publish {:.0} ms \
         ({:.0} ms in all)",
        restoring.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
        (restoring + first).as_secs_f64() * 1000.0
    );

    // After an upgrade: the checkpoint as another version in this layout saved it, published
    // from while the store is read whole behind it (`History::read_whole`, on a thread of
    // its own in a server).
    let (patched, _) = as_saved_by_another_version(&encoded.bytes);
    reader
        .save_checkpoint(encoded.at_ms, &patched)
        .expect("save the older checkpoint");
    let (restoring, first, bridged) = restart(config);
    assert!(bridged.other_version().is_some());
    let started = Instant::now();
    History::read_whole(config, reader, at + 30_000).expect("read the store whole");
    let whole = started.elapsed();
    println!(
        "from another version's checkpoint (after an upgrade): restored in {:.0} ms, its first \
         publish {:.0} ms ({:.0} ms in all); the store read whole behind it in {:.0} ms",
        restoring.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
        (restoring + first).as_secs_f64() * 1000.0,
        whole.as_secs_f64() * 1000.0
    );

    // After an upgrade that changed what a publisher keeps in one part: that part is left
    // and read whole at the first publish, the others restored. With the incidents left,
    // it is a restart as the versions before they were a part of the checkpoint made it.
    for (at, part) in [(4, "incidents"), (3, "runs"), (0, "window sums")] {
        let left = with_a_part_in_another_layout(&encoded.bytes, at);
        reader
            .save_checkpoint(encoded.at_ms, &left)
            .expect("save the checkpoint");
        let (restoring, first) = median_restart(config);
        println!(
            "after an upgrade that changed the {part}' layout (that part read whole; the \
             median of three): restored in {:.0} ms, its first publish {:.0} ms ({:.0} ms in \
             all)",
            restoring.as_secs_f64() * 1000.0,
            first.as_secs_f64() * 1000.0,
            (restoring + first).as_secs_f64() * 1000.0
        );
    }
}
