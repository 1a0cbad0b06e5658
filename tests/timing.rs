//! Timings measured against the simulator with known injected delays. Bounds are generous
//! (speed is measured in benchmarks; tests check correctness).

mod common;

use std::time::{Duration, Instant, SystemTime};

use sonde::result::Outcome;
use sonde::runner::{Runner, Scheduled};

fn within(value: Option<f64>, expected: f64, tolerance: f64) -> bool {
    value.is_some_and(|v| (v - expected).abs() <= tolerance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_probe_measures_injected_ttft_itl_and_speed() {
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(&sim.base_url(), "", &["steady"]);
    for _ in 0..3 {
        let r = common::run(&config, "steady", "stream").await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert!(within(r.ttft_ms, 200.0, 15.0), "TTFT {:?}", r.ttft_ms);
        assert_eq!(r.ttfat_ms, r.ttft_ms, "no reasoning: TTFAT is TTFT");
        assert!(
            within(r.itl_p50_ms, 20.0, 5.0),
            "ITL p50 {:?}",
            r.itl_p50_ms
        );
        assert!(
            within(r.e2e_ms, 200.0 + 39.0 * 20.0, 40.0),
            "E2E {:?}",
            r.e2e_ms
        );
        let speed = r.tokens_per_s.expect("speed");
        assert!(
            (speed - 50.0).abs() <= 5.0,
            "tokens/s {speed} vs injected 50"
        );
        assert_eq!(r.output_tokens, Some(40), "reported usage");
        assert!(!r.tokens_estimated);
        assert!(r.input_tokens.is_some_and(|t| t > 0));
        assert_eq!(r.chunks, 40);
        assert!(r.streamed);
        assert_eq!(r.itl_gaps_us.len(), 39);
        assert!(
            r.ttfb_ms.is_some_and(|t| t < 100.0),
            "headers come first: {:?}",
            r.ttfb_ms
        );
        assert!(r.close_ms >= r.e2e_ms);
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        let cost = r.cost_usd.expect("priced model");
        let expected = (f64::from(r.input_tokens.unwrap()) * 1.0 + 40.0 * 2.0) / 1e6;
        assert!((cost - expected).abs() < 1e-12, "cost {cost} vs {expected}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_counts_for_ttft_but_not_ttfat() {
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(&sim.base_url(), "", &["thinker"]);
    let r = common::run(&config, "thinker", "stream").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(within(r.ttft_ms, 100.0, 15.0), "TTFT {:?}", r.ttft_ms);
    assert!(
        within(r.ttfat_ms, 100.0 + 20.0 * 10.0, 20.0),
        "TTFAT {:?}",
        r.ttfat_ms
    );
    assert_eq!(r.reasoning_tokens, Some(20));
    assert_eq!(r.output_tokens, Some(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_streaming_is_not_streamed() {
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(&sim.base_url(), "", &["faker", "steady"]);
    let fake = common::run(&config, "faker", "stream").await;
    assert_eq!(fake.outcome, Outcome::Ok, "{fake:?}");
    assert!(!fake.streamed);
    assert_eq!(fake.chunks, 1);
    assert_eq!(fake.ttft_ms, fake.e2e_ms);
    assert!(
        within(fake.ttft_ms, 100.0 + 39.0 * 10.0, 20.0),
        "{:?}",
        fake.ttft_ms
    );
    assert_eq!(fake.tokens_per_s, None, "no decode speed without streaming");
    let real = common::run(&config, "steady", "stream").await;
    assert!(real.streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_to_a_stream_request_is_read_whole() {
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(&sim.base_url(), "", &["json-only"]);
    let r = common::run(&config, "json-only", "stream").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(!r.streamed);
    assert_eq!(r.chunks, 1);
    assert_eq!(r.output_tokens, Some(40));
    assert!(within(r.e2e_ms, 50.0 + 39.0 * 5.0, 20.0), "{:?}", r.e2e_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_probe_has_no_ttft() {
    let sim = common::simulator(common::SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("whole.toml"),
        "stream = false\nmax_tokens = 100\nexpect_contains = \"40\"\n[[messages]]\nrole = \"user\"\ncontent = \"Count from 1 to 40.\"\n",
    )
    .unwrap();
    let text = format!(
        "probes_dir = {:?}\n{}",
        dir.path().display().to_string(),
        common::config_text(&sim.base_url(), "", &["steady"])
            .replace("[\"ping\", \"stream\"]", "[\"whole\"]")
    );
    let config = sonde::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
    let r = common::run(&config, "steady", "whole").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.ttft_ms, None);
    assert_eq!(r.ttfat_ms, None);
    assert!(
        within(r.e2e_ms, 200.0 + 39.0 * 20.0, 40.0),
        "{:?}",
        r.e2e_ms
    );
    assert!(
        r.ttfb_ms.is_some_and(|t| t >= 190.0),
        "headers come with the body: {:?}",
        r.ttfb_ms
    );
    assert!(!r.streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_setup_and_queue_lag_are_apart_from_latency() {
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(&sim.base_url(), "", &["steady"]);
    let runner = Runner::new(&config).unwrap();
    let target = &config.targets[0];
    let probe = config.probes.get("ping").unwrap();
    let late = Scheduled {
        at: Instant::now() - Duration::from_millis(50),
        wall: SystemTime::now(),
    };
    let first = runner.run(target, probe, late).await;
    assert!(first.connect_ms.is_some(), "a new connection is timed");
    assert!(
        first.queue_lag_ms >= 50.0 && first.queue_lag_ms < 150.0,
        "{}",
        first.queue_lag_ms
    );
    // hyper hands a finished connection back to its pool from the connection's own task; give
    // it a moment, as the gap between scheduled runs always does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = runner.run(target, probe, Scheduled::now()).await;
    assert_eq!(second.connect_ms, None, "a pooled connection has no setup");
    assert!(second.queue_lag_ms < 50.0);
    // The bound is generous (a loaded CI machine added 16 ms once) yet below the 50 ms of
    // queue lag the first run carries: neither lag nor setup may reach the latency.
    for r in [first, second] {
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(within(r.ttft_ms, 200.0, 30.0), "{:?}", r.ttft_ms);
    }
}
