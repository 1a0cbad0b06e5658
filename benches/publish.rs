//! Publishing at scale: 200 targets with 30 days of history (one result every 10 minutes
//! per target, 864 k rows, generated through the real write path), then the time to read
//! the snapshot and render the whole site, and the size of `index.html` (about 400 KB since
//! each bar cell's title carries its day's run count, issue #18; under 300 KB before).
//!
//! `cargo bench --bench publish`. The store is kept in `target/sonde-bench-publish.db`
//! and reused while it holds the expected rows.

mod common;

use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sonde::config::{Config, StoreConfig};
use sonde::publish::{self, Snapshot};
use sonde::store::Store;

const TARGETS: usize = 200;
const EVERY_MIN: i64 = 10;
const RUNS: i64 = 30 * 24 * 60 / EVERY_MIN;

fn prepare(config: &Config) -> std::path::PathBuf {
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
        "sonde-bench-publish.db",
        TARGETS as u64 * RUNS as u64,
        records,
    )
}

fn render(c: &mut Criterion) {
    let config = common::fleet_config(TARGETS);
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
        "200 targets, 30 days: snapshot {:.0} ms + render {:.0} ms = {:.0} ms; {} files, {} KiB; index.html {} bytes ({:.0} KB)",
        loaded.as_secs_f64() * 1000.0,
        (total - loaded).as_secs_f64() * 1000.0,
        total.as_secs_f64() * 1000.0,
        files.len(),
        bytes / 1024,
        index,
        index as f64 / 1000.0
    );
    let mut group = c.benchmark_group("publish_200_targets_30d");
    group.sample_size(10);
    group.bench_function("snapshot_and_render", |b| {
        b.iter(|| {
            let snapshot = Snapshot::load(&config, &store, now).expect("snapshot");
            publish::build(&config, &snapshot).expect("build")
        })
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
