//! The hot paths after measurement, each alone and in memory (no SQLite in the timed part):
//!
//! - `histogram_recording`: one ok run folded into a rollup (TTFT, E2E, 39 ITL gaps, speed):
//!   a dense one, as `sonde bench` does per run, and a sparse one holding a day of runs, as
//!   the store's writer does per run and span;
//! - `window_aggregation`: the 30-day window of one target, 30 daily rollups of 1,440 runs
//!   each merged (in sparse form, as windows are summed), then every percentile — what
//!   `summarize` does per target and window; and one of those days' stored blobs decoded,
//!   what a cold read does to every rollup it reads;
//! - `weights`: the feed of 200 targets in 10 groups, weight formula included, from their
//!   window stats;
//! - `page_rendering`: the whole site (index, 200 target pages, feed, metrics) from a snapshot
//!   already read, a day of history per target.
//!
//! `cargo bench --bench hot_paths`. The store behind `weights` and `page_rendering` is
//! `target/sonde-bench-hot-paths.db`, generated once.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sonde::aggregate::Latency;
use sonde::aggregate::rollup::Rollup;
use sonde::aggregate::sparse::SparseRollup;
use sonde::config::StoreConfig;
use sonde::publish::windows::summarize;
use sonde::publish::{self, Snapshot, feed};
use sonde::store::Store;

const TARGETS: usize = 200;
const RUNS_PER_DAY: i64 = 1440;

fn recording(c: &mut Criterion) {
    let config = common::fleet_config(20);
    let target = &config.targets[0];
    let probe = config.probes.get("stream").unwrap();
    let record = common::synthetic(target, probe, common::now_ms(), 500.0, 0.0);
    let mut group = c.benchmark_group("histogram_recording");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_run_into_a_rollup", |b| {
        let mut rollup = Rollup::default();
        b.iter(|| rollup.add(&record, 0));
    });
    group.bench_function("one_run_into_a_sparse_day", |b| {
        let mut day = SparseRollup::default();
        for run in 0..RUNS_PER_DAY {
            let wobble = ((run * 104_729) % 1000) as f64;
            day.add_run(&common::synthetic(target, probe, 0, wobble, 0.0), 0);
        }
        b.iter_batched_ref(
            || day.clone(),
            |day| day.add_run(&record, 0),
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn aggregation(c: &mut Criterion) {
    let config = common::fleet_config(20);
    let target = &config.targets[0];
    let probe = config.probes.get("stream").unwrap();
    let days: Vec<SparseRollup> = (0..30)
        .map(|day| {
            let mut rollup = SparseRollup::default();
            for run in 0..RUNS_PER_DAY {
                let wobble = ((day * 7919 + run * 104_729) % 1000) as f64;
                rollup.add_run(&common::synthetic(target, probe, 0, wobble, 0.0), 0);
            }
            rollup
        })
        .collect();
    let mut group = c.benchmark_group("window_aggregation");
    group.bench_function("30_daily_rollups_merged_and_percentiles", |b| {
        b.iter(|| {
            let mut window = SparseRollup::default();
            for day in &days {
                window.add(day);
            }
            Latency::of(&window)
        })
    });
    // What a cold read does to every stored rollup (540,000 for a month of a fleet of
    // 10 × 1,000 targets): a day's four V2 deflate blobs back into sparse form.
    let stored = &days[0];
    let blobs = stored.blobs();
    group.bench_function("a_daily_rollups_blobs_decoded", |b| {
        b.iter(|| {
            SparseRollup::from_parts(stored.scalars.clone(), blobs.each_ref().map(Vec::as_slice))
                .expect("decodes")
        })
    });
    group.finish();
}

fn store() -> std::path::PathBuf {
    let config = common::fleet_config(TARGETS);
    let probe = config.probes.get("stream").unwrap().clone();
    let start = common::now_ms() - RUNS_PER_DAY * 60_000;
    let targets = config.targets.clone();
    common::generated_store(
        &config,
        "sonde-bench-hot-paths.db",
        TARGETS as u64 * 96,
        move || {
            (0..96i64).flat_map(move |slot| {
                let (targets, probe) = (targets.clone(), probe.clone());
                (0..targets.len()).map(move |t| {
                    let at = start + slot * 15 * 60_000 + t as i64 * 1000;
                    let wobble = ((slot * 7919 + t as i64 * 104_729) % 1000) as f64;
                    common::synthetic(&targets[t], &probe, at, wobble, t as f64)
                })
            })
        },
    )
}

fn publishing(c: &mut Criterion) {
    let config = common::fleet_config(TARGETS);
    let store = Store::open_read_only(&StoreConfig::sqlite(store())).expect("bench store");
    let now = common::now_ms();
    let stats = summarize(&store, &config, now).expect("summarize");
    let locations = sonde::publish::windows::locations(&store, now).expect("locations");
    let snapshot = Snapshot::load(&config, &store, now).expect("snapshot");
    let mut group = c.benchmark_group("publishing");
    group.bench_function("weights_200_targets", |b| {
        b.iter(|| feed::build(&config, &stats, &locations, now))
    });
    group.sample_size(20);
    group.bench_function("page_rendering_200_targets", |b| {
        b.iter(|| publish::build(&config, &snapshot).expect("build"))
    });
    group.finish();
}

criterion_group!(benches, recording, aggregation, publishing);
criterion_main!(benches);
