//! The behavioural matrix every wire format passes: OpenAI-compatible, Anthropic Messages and
//! Gemini, each against the simulator speaking that format. Same injected delays and the
//! same bounds as `timing.rs`; every error shape of each format classified the same way.

mod common;

use common::KINDS;
use sonde::result::{Outcome, ResultRecord};
use sonde::simulator::RunningSimulator;

fn within(value: Option<f64>, expected: f64, tolerance: f64) -> bool {
    value.is_some_and(|v| (v - expected).abs() <= tolerance)
}

/// Runs built-in `probe` against `model` served in `kind`'s format.
async fn run(sim: &RunningSimulator, kind: &str, model: &str, probe: &str) -> ResultRecord {
    let config = common::kind_config(sim, kind, "", &[model]);
    common::run(&config, model, probe).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_timings_match_the_injected_delays_in_every_format() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let r = run(&sim, kind, "steady", "stream").await;
        assert_eq!(r.outcome, Outcome::Ok, "{kind}: {r:?}");
        assert!(
            within(r.ttft_ms, 200.0, 15.0),
            "{kind} TTFT {:?}",
            r.ttft_ms
        );
        assert!(
            within(r.itl_p50_ms, 20.0, 5.0),
            "{kind} ITL {:?}",
            r.itl_p50_ms
        );
        assert!(
            within(r.e2e_ms, 200.0 + 39.0 * 20.0, 40.0),
            "{kind} E2E {:?}",
            r.e2e_ms
        );
        let speed = r.tokens_per_s.expect("speed");
        assert!((speed - 50.0).abs() <= 5.0, "{kind} tokens/s {speed}");
        assert_eq!(r.output_tokens, Some(40), "{kind}: reported usage");
        assert!(r.input_tokens.is_some_and(|t| t > 0), "{kind}");
        assert!(!r.tokens_estimated, "{kind}");
        assert_eq!(r.chunks, 40, "{kind}");
        assert!(r.streamed, "{kind}");
        assert!(r.finish_reason.is_some(), "{kind}");
        assert_eq!(r.served_model.as_deref(), Some("steady"), "{kind}");
        assert!(!r.model_substituted, "{kind}");
        assert_eq!(r.cap_streaming, Some(true), "{kind}");
        assert_eq!(r.cap_usage_in_stream, Some(true), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_answers_are_timed_whole_in_every_format() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let config = common::kind_config(&sim, kind, "", &["steady"]);
        let mut probe = config.probes.get("stream").unwrap().clone();
        probe.stream = false;
        let r = common::run_probe(&config, "steady", &probe).await;
        assert_eq!(r.outcome, Outcome::Ok, "{kind}: {r:?}");
        assert_eq!(r.ttft_ms, None, "{kind}");
        assert!(
            within(r.e2e_ms, 200.0 + 39.0 * 20.0, 40.0),
            "{kind} E2E {:?}",
            r.e2e_ms
        );
        assert_eq!(r.output_tokens, Some(40), "{kind}");
        assert!(!r.tokens_estimated, "{kind}");
        assert!(!r.streamed, "{kind}");
        assert_eq!(r.cap_streaming, Some(false), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_and_fake_streaming_in_every_format() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let r = run(&sim, kind, "thinker", "stream").await;
        assert_eq!(r.outcome, Outcome::Ok, "{kind}: {r:?}");
        assert!(
            within(r.ttft_ms, 100.0, 15.0),
            "{kind} TTFT {:?}",
            r.ttft_ms
        );
        assert!(
            within(r.ttfat_ms, 100.0 + 20.0 * 10.0, 20.0),
            "{kind} TTFAT {:?}",
            r.ttfat_ms
        );
        let fake = run(&sim, kind, "faker", "stream").await;
        assert_eq!(fake.outcome, Outcome::Ok, "{kind}: {fake:?}");
        assert!(!fake.streamed, "{kind}");
        assert_eq!(fake.chunks, 1, "{kind}");
        assert_eq!(fake.cap_streaming, Some(false), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_shape_is_classified_in_every_format() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let r = run(&sim, kind, "limited", "ping").await;
        assert_eq!(
            (r.outcome, r.http_status, r.retry_after_s),
            (Outcome::RateLimited, Some(429), Some(2.0)),
            "{kind}: {r:?}"
        );
        let r = run(&sim, kind, "broken", "ping").await;
        assert_eq!(
            (r.outcome, r.http_status),
            (Outcome::ServerError, Some(500)),
            "{kind}"
        );
        let r = run(&sim, kind, "overloaded", "ping").await;
        assert_eq!(r.outcome, Outcome::ServerError, "{kind}: {r:?}");
        assert_eq!(r.retry_after_s, Some(7.0), "{kind}");
        assert!(
            r.error.as_deref().unwrap().contains("overloaded"),
            "{kind}: {:?}",
            r.error
        );
        let r = run(&sim, kind, "forbidden", "ping").await;
        assert_eq!(r.outcome, Outcome::Auth, "{kind}: {r:?}");
        let r = run(&sim, kind, "invalid", "ping").await;
        assert_eq!(
            (r.outcome, r.http_status),
            (Outcome::ClientError, Some(400)),
            "{kind}: {r:?}"
        );
        let r = run(&sim, kind, "no-such-model", "ping").await;
        assert_eq!(
            (r.outcome, r.http_status),
            (Outcome::NotFound, Some(404)),
            "{kind}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_are_classified_in_every_format() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let r = run(&sim, kind, "cut", "stream").await;
        assert_eq!(r.outcome, Outcome::Truncated, "{kind}: {r:?}");
        assert_eq!(r.chunks, 40, "{kind}: the content arrived, the end did not");
        let r = run(&sim, kind, "garbled", "stream").await;
        assert_eq!(r.outcome, Outcome::Malformed, "{kind}: {r:?}");
        assert_eq!(r.chunks, 3, "{kind}");
        let r = run(&sim, kind, "erroring", "stream").await;
        assert_eq!(r.outcome, Outcome::ServerError, "{kind}: {r:?}");
        assert_eq!((r.http_status, r.chunks), (Some(200), 4), "{kind}");
        assert!(
            r.error.as_deref().unwrap().contains("inside the response"),
            "{kind}: {:?}",
            r.error
        );
        let r = run(&sim, kind, "wrong", "ping").await;
        assert_eq!(r.outcome, Outcome::ContentMismatch, "{kind}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_probes_flag_what_the_target_can_do() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let r = run(&sim, kind, "capable", "tools").await;
        assert_eq!(r.outcome, Outcome::Ok, "{kind}: {r:?}");
        assert_eq!(r.cap_tools, Some(true), "{kind}");
        assert_eq!(
            r.cap_json, None,
            "{kind}: the tools probe says nothing of JSON"
        );
        let r = run(&sim, kind, "capable", "json").await;
        assert_eq!(r.outcome, Outcome::Ok, "{kind}: {r:?}");
        assert_eq!(r.cap_json, Some(true), "{kind}");

        let r = run(&sim, kind, "plain", "tools").await;
        assert_ne!(r.outcome, Outcome::Ok, "{kind}: {r:?}");
        assert_eq!(r.cap_tools, Some(false), "{kind}: {r:?}");
        let r = run(&sim, kind, "plain", "json").await;
        assert_eq!(r.outcome, Outcome::ContentMismatch, "{kind}: {r:?}");
        assert_eq!(r.cap_json, Some(false), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_list_check_costs_no_tokens_and_finds_missing_models() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let r = run(&sim, kind, "steady", "models").await;
        assert_eq!(r.outcome, Outcome::Ok, "{kind}: {r:?}");
        assert_eq!((r.output_tokens, r.cost_usd), (None, None), "{kind}");
        let r = run(&sim, kind, "not-listed", "models").await;
        assert_eq!(r.outcome, Outcome::NotFound, "{kind}: {r:?}");
        assert!(
            r.error.as_deref().unwrap().contains("not-listed"),
            "{kind}: {:?}",
            r.error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substitution_and_rate_limit_headers_are_kept_in_every_format() {
    let sim = common::simulator(common::SCENARIO).await;
    for kind in KINDS {
        let r = run(&sim, kind, "swapped", "ping").await;
        assert_eq!(r.served_model.as_deref(), Some("other-model-7b"), "{kind}");
        assert!(r.model_substituted, "{kind}: a substitution is visible");
        let r = run(&sim, kind, "dated", "ping").await;
        assert!(
            !r.model_substituted,
            "{kind}: a dated version is the same model"
        );

        let first = run(&sim, kind, "metered", "ping").await;
        let second = run(&sim, kind, "metered", "ping").await;
        let (Some(a), Some(b)) = (
            first.ratelimit_remaining_requests,
            second.ratelimit_remaining_requests,
        ) else {
            panic!("{kind}: no remaining-requests figure: {first:?}");
        };
        assert!(a < 100 && b < a, "{kind}: {a} then {b}");
    }
}
