//! The store on PostgreSQL against SQLite, on the same machine in the same run: the same
//! generated history (100 targets, one run a minute, `SONDE_BENCH_PG_DAYS` days, 2 by
//! default) written through the real write path (`store::writer::import`, as the daemon's
//! writer folds and writes), then every window of every target and a whole publish read
//! back from each. Prints each figure and PostgreSQL's as a ratio of SQLite's.
//!
//! `cargo bench --bench postgres` (needs PostgreSQL's server binaries, as the tests do; it
//! starts its own server in a temporary folder). CPU is this process's (user + system), so
//! for PostgreSQL it is the client's share — the daemon's cost; the server's own work runs
//! in its processes, usually on another machine.

mod common;
#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod server;

use std::time::{Duration, Instant};

use sonde::config::{Config, StoreBackend, StoreConfig};
use sonde::publish::windows::summarize;
use sonde::publish::{self, Snapshot};
use sonde::store::Store;
use sonde::store::writer::import;

const TARGETS: usize = 100;

/// This process's CPU time so far (user + system), from `/proc/self/stat` (clock ticks of
/// 10 ms: ample for runs of seconds).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command's closing parenthesis: state is field 0, utime 11, stime 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Figures {
    write_wall: Duration,
    write_cpu: Duration,
    windows: Duration,
    publish: Duration,
}

fn measure(config: &Config, store_config: &StoreConfig, days: i64, now: i64) -> Figures {
    let probe = config.probes.get("stream").expect("stream probe");
    let minutes = days * 24 * 60;
    let start = now - minutes * 60_000;
    let records = (0..minutes).flat_map(move |minute| {
        config.targets.iter().enumerate().map(move |(t, target)| {
            let at = start + minute * 60_000 + t as i64 * 500;
            let wobble = ((minute * 7919 + t as i64 * 104_729) % 1000) as f64;
            common::synthetic(target, probe, at, wobble, t as f64)
        })
    });
    let store = Store::open(store_config, &config.prober.location).expect("open store");
    let (wall, cpu_before) = (Instant::now(), cpu());
    let config_here = Config {
        store: store_config.clone(),
        ..config.clone()
    };
    let written = import(store, &config_here, records).expect("import");
    let (write_wall, write_cpu) = (wall.elapsed(), cpu() - cpu_before);
    assert_eq!(written, minutes as u64 * TARGETS as u64);
    let reader = Store::open_read_only(store_config).expect("open for reading");
    let windows = common::median(5, || {
        summarize(&reader, config, now).expect("windows");
    });
    let publish = common::median(5, || {
        let snapshot = Snapshot::load(config, &reader, now).expect("snapshot");
        publish::build(config, &snapshot).expect("build");
    });
    println!(
        "{:<40} {written} runs written in {:.1} s, {:.3} CPU-s per 1,000 runs; all windows {:.0} ms; publish {:.0} ms",
        reader.describe(),
        write_wall.as_secs_f64(),
        write_cpu.as_secs_f64() * 1000.0 / written as f64,
        windows.as_secs_f64() * 1000.0,
        publish.as_secs_f64() * 1000.0
    );
    Figures {
        write_wall,
        write_cpu,
        windows,
        publish,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with('-') && arg != "postgres")
    {
        return;
    }
    let Some(cluster) = server::start("the postgres bench") else {
        return;
    };
    let days: i64 = std::env::var("SONDE_BENCH_PG_DAYS")
        .ok()
        .and_then(|days| days.parse().ok())
        .unwrap_or(2);
    let config = common::fleet_config(TARGETS);
    let now = common::now_ms();
    let dir = tempfile::tempdir().expect("temp dir");
    let long = |backend| StoreConfig {
        backend,
        retention_days: 400,
        rollup_retention_days: 400,
        ..StoreConfig::default()
    };
    let sqlite = measure(
        &config,
        &long(StoreBackend::Sqlite {
            path: dir.path().join("bench.db"),
        }),
        days,
        now,
    );
    // SAFETY: set before any store reads it; this bench's own variable.
    unsafe { std::env::set_var("SONDE_BENCH_PG_URL", cluster.database("bench")) };
    let postgres = measure(
        &config,
        &long(StoreBackend::Postgres {
            url_env: "SONDE_BENCH_PG_URL".into(),
            ca_file: None,
        }),
        days,
        now,
    );
    let ratio = |pg: Duration, lite: Duration| pg.as_secs_f64() / lite.as_secs_f64().max(1e-9);
    println!(
        "PostgreSQL ÷ SQLite: write CPU {:.2}×, write wall {:.2}×, all windows {:.2}×, publish {:.2}×",
        ratio(postgres.write_cpu, sqlite.write_cpu),
        ratio(postgres.write_wall, sqlite.write_wall),
        ratio(postgres.windows, sqlite.windows),
        ratio(postgres.publish, sqlite.publish)
    );
}
