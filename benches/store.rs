//! The store at scale: 30 days of results for 100 targets at one result per minute
//! (4.32 M rows), generated through the real write path (`store::writer::import`), then the
//! time to compute every window (5m, 1h, 24h, 7d, 30d) of every target.
//!
//! `cargo bench --bench store` prints the generation time and the file size once, then
//! criterion times `publish::windows::summarize`. The store is kept in `target/sonde-bench-30d.db`
//! and reused while it holds the expected rows (delete it to regenerate).

mod common;

use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sonde::config::{Config, StoreConfig};
use sonde::publish::windows::summarize;
use sonde::result::Outcome;
use sonde::runner::{Scheduled, not_sent};
use sonde::store::Store;

const TARGETS: usize = 100;
const DAYS: i64 = 30;
const PER_TARGET: i64 = DAYS * 24 * 60;

fn config() -> Config {
    let mut text = String::from(
        "[[providers]]\nname = \"bench\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nprobes = [\"stream\"]\n",
    );
    for i in 0..TARGETS {
        text.push_str(&format!(
            "[[providers.models]]\nid = \"model-{i:03}\"\ninput_price = 0.5\noutput_price = 1.5\n"
        ));
    }
    Config::parse(Path::new("bench.toml"), &text).expect("bench config")
}

/// Generates the store unless it already holds the expected rows; returns its path.
fn prepare(config: &Config) -> std::path::PathBuf {
    let probe = config.probes.get("stream").unwrap();
    let start = common::now_ms() - PER_TARGET * 60_000;
    let templates: Vec<_> = config
        .targets
        .iter()
        .map(|target| {
            let mut record = not_sent(target, probe, Scheduled::now(), Outcome::Ok, String::new());
            record.error = None;
            record.http_status = Some(200);
            record.input_tokens = Some(33);
            record.output_tokens = Some(40);
            record.streamed = true;
            record.chunks = 40;
            record
        })
        .collect();
    let templates = std::sync::Arc::new(templates);
    let records = move || {
        (0..PER_TARGET).flat_map(move |minute| {
            let templates = std::sync::Arc::clone(&templates);
            (0..TARGETS).map(move |t| {
                let mut record = templates[t].clone();
                let at = start + minute * 60_000 + t as i64 * 500;
                record.ts = sonde::units::Timestamp::from_ms(at);
                record.run_id = format!("{t:03}-{minute:08}");
                let wobble = ((minute * 7919 + t as i64 * 104_729) % 1000) as f64;
                if wobble < 8.0 {
                    record.outcome = Outcome::ServerError;
                    record.error = Some("simulated 500".into());
                } else {
                    let ttft = 80.0 + wobble * 0.9 + t as f64;
                    record.ttft_ms = Some(ttft);
                    record.ttfat_ms = Some(ttft);
                    record.e2e_ms = Some(ttft + 390.0 + wobble * 0.1);
                    record.itl_p50_ms = Some(10.0);
                    record.tokens_per_s = Some(100.0 - wobble * 0.02);
                    record.cost_usd = Some((33.0 * 0.5 + 40.0 * 1.5) / 1e6);
                    record.itl_gaps_us = (0..39)
                        .map(|i| 9_000 + ((i * 37 + minute) % 2_000) as u32)
                        .collect();
                }
                record
            })
        })
    };
    common::generated_store(
        config,
        "sonde-bench-30d.db",
        TARGETS as u64 * PER_TARGET as u64,
        records,
    )
}

fn windows(c: &mut Criterion) {
    let config = config();
    let path = prepare(&config);
    let store = Store::open_read_only(&StoreConfig::sqlite(path.clone())).expect("bench store");
    let now = common::now_ms();
    let once = Instant::now();
    let stats = summarize(&store, &config, now).expect("summarize");
    println!(
        "all windows of {} targets: {:.1} ms (first call, cold cache)",
        stats.len(),
        once.elapsed().as_secs_f64() * 1000.0
    );
    let parts = Instant::now();
    let raw = store.results_since(now - 3_600_000, None).expect("raw");
    let t_raw = parts.elapsed();
    let mut hourly = 0usize;
    store
        .each_rollup_since(
            sonde::aggregate::rollup::Span::Hour,
            now - 25 * 3_600_000,
            &mut |_| hourly += 1,
        )
        .expect("hourly");
    let t_hourly = parts.elapsed() - t_raw;
    let mut daily = 0usize;
    store
        .each_rollup_since(
            sonde::aggregate::rollup::Span::Day,
            now - 31 * 86_400_000,
            &mut |_| daily += 1,
        )
        .expect("daily");
    let t_daily = parts.elapsed() - t_raw - t_hourly;
    println!(
        "parts: {} raw rows {:.0} ms, {} hourly rollups {:.0} ms, {} daily rollups {:.0} ms",
        raw.len(),
        t_raw.as_secs_f64() * 1000.0,
        hourly,
        t_hourly.as_secs_f64() * 1000.0,
        daily,
        t_daily.as_secs_f64() * 1000.0
    );
    let mut group = c.benchmark_group("store_30d");
    group.sample_size(10);
    group.bench_function("summarize_all_windows_100_targets", |b| {
        b.iter(|| summarize(&store, &config, now).expect("summarize"))
    });
    group.finish();
}

criterion_group!(benches, windows);
criterion_main!(benches);
