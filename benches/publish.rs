//! Publishing at scale: 200 targets with 30 days of history (one result every 10 minutes
//! per target, 864 k rows, generated through the real write path), then
//!
//! - a cold publish (`sonde publish`: everything read from the store, then rendered), and
//! - the daemon's periodic publish: a `History` kept between publishes while each minute
//!   brings one new run per target (written through the real write path into a copy of the
//!   store), timed from the store read to the last rendered file — as a server publishes
//!   (every file but the targets' pages, which it renders when asked for) and as a publisher
//!   writing `[publish] out` renders (every page);
//!
//! and the size of `index.html` (about 400 KB since each bar cell's title carries its day's
//! run count, issue #18; under 300 KB before).
//!
//! `cargo bench --bench publish`. The store is kept in `target/sonde-bench-publish.db`
//! and reused while it holds the expected rows; the periodic publishes write into
//! `target/sonde-bench-publish-live.db`, a fresh copy each run.
//! `SONDE_BENCH_PUBLISH_TARGETS=500` (a multiple of 20) runs it with more targets, on
//! `target/sonde-bench-publish-500.db` (what `benches/scripts/serve_rss.sh` reads with
//! `SONDE_BENCH_TARGETS=500`). `SONDE_BENCH_PUBLISH_HOUR_EVERY_S=10` first gives the live
//! copy a run per target every 10 s over the hour before the periodic publishes, as a
//! daemon probing that often has, and copies it then, before the periodic publishes write
//! their minutes past the clock, to `target/sonde-bench-publish-hour.db` for
//! `serve_rss.sh`'s `SONDE_BENCH_STORE` (serve it within minutes: the hour is the last one).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sonde::config::{Config, StoreBackend, StoreConfig};
use sonde::publish::history::History;
use sonde::publish::{self, Snapshot};
use sonde::store::Store;
use sonde::store::writer::import;

const EVERY_MIN: i64 = 10;
const RUNS: i64 = 30 * 24 * 60 / EVERY_MIN;
/// Periodic publishes timed for the printed figures.
const PERIODIC: usize = 30;

/// Targets: `SONDE_BENCH_PUBLISH_TARGETS`, default 200.
fn targets() -> usize {
    std::env::var("SONDE_BENCH_PUBLISH_TARGETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| n % 20 == 0 && *n > 0)
        .unwrap_or(200)
}

/// `SONDE_BENCH_PUBLISH_HOUR_EVERY_S`: the seconds between a target's runs over the live
/// copy's last hour (none when unset).
fn hour_every_s() -> Option<i64> {
    std::env::var("SONDE_BENCH_PUBLISH_HOUR_EVERY_S")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
}

/// The store's file name in `target/`: the 200-target one keeps its historical name.
fn store_name(targets: usize) -> String {
    if targets == 200 {
        "sonde-bench-publish.db".into()
    } else {
        format!("sonde-bench-publish-{targets}.db")
    }
}

fn prepare(config: &Config) -> PathBuf {
    let probe = config.probes.get("stream").unwrap();
    let start = common::now_ms() - RUNS * EVERY_MIN * 60_000;
    let records = || {
        (0..RUNS).flat_map(move |slot| {
            config.targets.iter().enumerate().map(move |(t, target)| {
                let at = start + slot * EVERY_MIN * 60_000 + t as i64 * 1000;
                let wobble = ((slot * 7919 + t as i64 * 104_729) % 1000) as f64;
                common::synthetic(target, probe, at, wobble, t as f64)
            })
        })
    };
    common::generated_store(
        config,
        &store_name(config.targets.len()),
        config.targets.len() as u64 * RUNS as u64,
        records,
    )
}

/// A copy of the generated store to write new runs into.
fn live_copy(path: &Path) -> PathBuf {
    let live = path.with_file_name("sonde-bench-publish-live.db");
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", live.display()));
    }
    std::fs::copy(path, &live).expect("copy the bench store");
    live
}

/// The live store's periodic publisher: one run per target a minute, then a publish.
struct Periodic {
    config: Config,
    history: History,
    now: i64,
    minute: i64,
}

impl Periodic {
    fn new(config: &Config, live: PathBuf) -> Periodic {
        let config = Config {
            store: StoreConfig {
                retention_days: 400,
                rollup_retention_days: 400,
                ..StoreConfig::sqlite(live)
            },
            ..config.clone()
        };
        let mut periodic = Periodic {
            config,
            history: History::new(),
            now: common::now_ms(),
            minute: 0,
        };
        if let Some(every_s) = hour_every_s() {
            periodic.fill_hour(every_s);
            if let StoreBackend::Sqlite { path } = &periodic.config.store.backend {
                let hour = path.with_file_name("sonde-bench-publish-hour.db");
                std::fs::copy(path, hour).expect("copy the store with its dense hour");
            }
        }
        // The daemon's first publish reads everything; the figures are of the later ones.
        periodic.publish();
        periodic
    }

    /// Writes the next minute's runs (not timed).
    fn next_minute(&mut self) {
        self.minute += 1;
        self.write_runs(self.now + self.minute * 60_000, self.minute);
    }

    /// Writes a run per target every `every_s` seconds over the hour before `now`.
    fn fill_hour(&mut self, every_s: i64) {
        let started = Instant::now();
        for slot in 0..3600 / every_s {
            self.write_runs(self.now - 3_600_000 + slot * every_s * 1000, slot);
        }
        println!(
            "the last hour filled with a run per target every {every_s} s in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Writes one run per target at `at` (plus the target's index in ms), their TTFTs
    /// varied by `slot`.
    fn write_runs(&self, at: i64, slot: i64) {
        let probe = self.config.probes.get("stream").unwrap().clone();
        let records: Vec<_> = self
            .config
            .targets
            .iter()
            .enumerate()
            .map(|(t, target)| {
                let wobble = ((slot * 7919 + t as i64 * 104_729) % 1000) as f64;
                common::synthetic(target, &probe, at + t as i64, wobble, t as f64)
            })
            .collect();
        let store = Store::open(&self.config.store, &self.config.prober.location).unwrap();
        import(store, &self.config, records).expect("write runs");
    }

    /// One publish at the current minute: the snapshot and the server's files (every
    /// file but the targets' pages), then the targets' pages; the duration of each.
    fn publish(&mut self) -> (Duration, Duration) {
        let store = Store::open_read_only(&self.config.store).expect("live store");
        let now = self.now + self.minute * 60_000 + 30_000;
        let started = Instant::now();
        let snapshot =
            Snapshot::load_with(&self.config, &store, now, &mut self.history).expect("snapshot");
        let feed = snapshot.feed(&self.config);
        publish::build_shared(&self.config, &snapshot, &feed).expect("build");
        let served = started.elapsed();
        let pages = Instant::now();
        let rendered = std::sync::atomic::AtomicUsize::new(0);
        publish::each_target_page(&self.config, &snapshot, &feed, &|_| {
            rendered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .expect("pages");
        assert_eq!(rendered.into_inner(), self.config.targets.len());
        (served, pages.elapsed())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn render(c: &mut Criterion) {
    let targets = targets();
    let config = common::fleet_config(targets);
    let path = prepare(&config);
    let store = Store::open_read_only(&StoreConfig::sqlite(path.clone())).expect("bench store");
    let now = common::now_ms();
    let started = Instant::now();
    let snapshot = Snapshot::load(&config, &store, now).expect("snapshot");
    let loaded = started.elapsed();
    let files = publish::build(&config, &snapshot).expect("build");
    let total = started.elapsed();
    let index = files["index.html"].len();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/publish-bench-index.html");
    let _ = std::fs::write(&sample, &files["index.html"]);
    let bytes: usize = files.values().map(Vec::len).sum();
    println!(
        "{targets} targets, 30 days, cold: snapshot {:.0} ms + render {:.0} ms = {:.0} ms; {} files, {} KiB; index.html {} bytes ({:.0} KB)",
        ms(loaded),
        ms(total - loaded),
        ms(total),
        files.len(),
        bytes / 1024,
        index,
        index as f64 / 1000.0
    );
    let mut periodic = Periodic::new(&config, live_copy(&path));
    let (mut served, mut whole): (Vec<Duration>, Vec<Duration>) = (0..PERIODIC)
        .map(|_| {
            periodic.next_minute();
            let (served, pages) = periodic.publish();
            (served, served + pages)
        })
        .unzip();
    served.sort();
    whole.sort();
    println!(
        "{targets} targets, 30 days, periodic (one new run per target a minute), over {PERIODIC} publishes: served (every file but the targets' pages) median {:.0} ms, max {:.0} ms; with every target's page rendered median {:.0} ms, max {:.0} ms; {} counters kept ({:.1} MiB)",
        ms(served[PERIODIC / 2]),
        ms(served[PERIODIC - 1]),
        ms(whole[PERIODIC / 2]),
        ms(whole[PERIODIC - 1]),
        periodic.history.counters(),
        periodic.history.counter_bytes() as f64 / (1024.0 * 1024.0)
    );
    let mut group = c.benchmark_group(format!("publish_{targets}_targets_30d"));
    group.sample_size(10);
    group.bench_function("cold_snapshot_and_render", |b| {
        b.iter(|| {
            let snapshot = Snapshot::load(&config, &store, now).expect("snapshot");
            publish::build(&config, &snapshot).expect("build")
        })
    });
    group.bench_function("periodic_snapshot_and_render", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| {
                    periodic.next_minute();
                    let (served, pages) = periodic.publish();
                    served + pages
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
