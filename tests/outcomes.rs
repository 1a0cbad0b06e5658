//! Every outcome class, produced by a real server on 127.0.0.1 and classified by the real
//! client. Runs that must end at a deadline are timed: never later than deadline + 1 s.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{After, DONE, chunk, head, raw_config, raw_server};
use sonde::result::Outcome;

async fn outcome_of(model: &str, provider_extra: &str) -> sonde::result::ResultRecord {
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(&sim.base_url(), provider_extra, &[model]);
    common::run(&config, model, "ping").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_keeps_retry_after() {
    let r = outcome_of("limited", "").await;
    assert_eq!(r.outcome, Outcome::RateLimited);
    assert_eq!(r.http_status, Some(429));
    assert_eq!(r.retry_after_s, Some(2.0));
    assert!(
        r.error.as_deref().unwrap().contains("Rate limit reached"),
        "{:?}",
        r.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors() {
    let r = outcome_of("broken", "").await;
    assert_eq!(
        (r.outcome, r.http_status),
        (Outcome::ServerError, Some(500))
    );
    let r = outcome_of("overloaded", "").await;
    assert_eq!(
        (r.outcome, r.http_status),
        (Outcome::ServerError, Some(503))
    );
    assert_eq!(r.retry_after_s, Some(7.0));
    assert!(r.error.as_deref().unwrap().contains("overloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_client_error_and_not_found() {
    let r = outcome_of("forbidden", "").await;
    assert_eq!((r.outcome, r.http_status), (Outcome::Auth, Some(401)));
    let r = outcome_of("invalid", "").await;
    assert_eq!(
        (r.outcome, r.http_status),
        (Outcome::ClientError, Some(400))
    );
    let r = outcome_of("no-such-model", "").await;
    assert_eq!((r.outcome, r.http_status), (Outcome::NotFound, Some(404)));
    assert!(r.error.as_deref().unwrap().contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_auth_and_nothing_is_sent() {
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(
        &sim.base_url(),
        "api_key_env = \"SONDE_TEST_UNSET_KEY_VAR\"",
        &["wrong"],
    );
    let r = common::run(&config, "wrong", "ping").await;
    assert_eq!(r.outcome, Outcome::Auth);
    assert_eq!(r.http_status, None);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("SONDE_TEST_UNSET_KEY_VAR is not set")
    );
    assert!(sim.requests().is_empty(), "no request without a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_ends_at_the_deadline() {
    let started = Instant::now();
    let r = outcome_of("hanging", "timeout = \"1s\"").await;
    let elapsed = started.elapsed();
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert_eq!(r.http_status, None);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("no response headers within 1s")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_ends_at_the_stall_timeout() {
    let started = Instant::now();
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(
        &sim.base_url(),
        "stall_timeout = \"1s\"\ntimeout = \"30s\"",
        &["stalling"],
    );
    let r = common::run(&config, "stalling", "stream").await;
    let elapsed = started.elapsed();
    assert_eq!(r.outcome, Outcome::Stalled, "{r:?}");
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.chunks, 5, "the tokens before the stall are kept");
    assert!(r.ttft_ms.is_some());
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_past_the_deadline_is_a_timeout() {
    // One keep-alive comment every 200 ms: never stalled, but never done either.
    let mut script = vec![(0, head("200 OK", "text/event-stream"))];
    script.extend((0..100).map(|_| (200, b": keep-alive\n\n".to_vec())));
    let addr = raw_server(script, After::Close).await;
    let config = raw_config(addr, "timeout = \"1s\"\nstall_timeout = \"500ms\"");
    let started = Instant::now();
    let r = common::run(&config, "m", "ping").await;
    let elapsed = started.elapsed();
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_mid_stream_errors() {
    let r = outcome_of("garbled", "").await;
    assert_eq!(r.outcome, Outcome::Malformed, "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("not valid JSON"));
    let sim = common::simulator(common::SCENARIO).await;
    let config = common::config(&sim.base_url(), "", &["cut", "dropped-json", "erroring"]);
    let r = common::run(&config, "cut", "stream").await;
    assert_eq!(r.outcome, Outcome::Truncated, "{r:?}");
    assert_eq!(
        r.chunks, 40,
        "all content arrived, the terminal event did not"
    );
    let r = common::run(&config, "dropped-json", "stream").await;
    assert_eq!(r.outcome, Outcome::Truncated, "{r:?}");
    assert!(
        r.error.as_deref().unwrap().contains("connection broke"),
        "{:?}",
        r.error
    );
    let r = common::run(&config, "erroring", "stream").await;
    assert_eq!(r.outcome, Outcome::ServerError, "{r:?}");
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.chunks, 4);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("Upstream provider disconnected")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_and_answers_cut_by_the_token_limit() {
    let r = outcome_of("wrong", "").await;
    assert_eq!(r.outcome, Outcome::ContentMismatch, "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("does not match"));
    let r = outcome_of("overthinker", "").await;
    assert_eq!(r.outcome, Outcome::CutOff, "{r:?}");
    assert_eq!(r.finish_reason.as_deref(), Some("length"));
    assert_eq!(
        r.reasoning_tokens,
        Some(16),
        "ping's max_tokens went to reasoning"
    );
    assert!(r.error.as_deref().unwrap().contains("reasoning_budget"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_stop_at_the_cap() {
    let r = outcome_of("huge", "max_body_bytes = 100000").await;
    assert_eq!(r.outcome, Outcome::TooLarge, "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("100000-byte cap"));
    // An endless body: only a reader that stops at the cap ends before the deadline.
    let mut script = vec![(0, head("200 OK", "text/event-stream"))];
    let filler = chunk(&format!("{{\"content\":\"{}\"}}", "x".repeat(8000)));
    script.extend((0..100_000).map(|_| (0, filler.clone().into_bytes())));
    let addr = raw_server(script, After::Hold).await;
    let config = raw_config(addr, "max_body_bytes = 50000\ntimeout = \"20s\"");
    let started = Instant::now();
    let r = common::run(&config, "m", "ping").await;
    assert_eq!(r.outcome, Outcome::TooLarge, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        r.chunks <= 7,
        "no more than the cap was read: {} chunks",
        r.chunks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_connect() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = common::config(&format!("http://127.0.0.1:{port}/v1"), "", &["m"]);
    let r = common::run(&config, "m", "ping").await;
    assert_eq!(r.outcome, Outcome::Connect, "{r:?}");
    assert!(
        r.error.as_deref().unwrap().contains("refused"),
        "{:?}",
        r.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_server_behind_https_is_tls() {
    let addr = common::greeting_server(b"HTTP/1.1 400 Bad Request\r\n\r\nnot tls").await;
    let config = common::config(&format!("https://{addr}/v1"), "", &["m"]);
    let r = common::run(&config, "m", "ping").await;
    assert_eq!(r.outcome, Outcome::Tls, "{r:?}");
}

/// A resolver that knows no name: the DNS failure reqwest reports, without leaving loopback.
struct NoNames;

impl reqwest::dns::Resolve for NoNames {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("no such host: {}", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

#[tokio::test]
async fn resolver_failures_are_dns() {
    let client = reqwest::Client::builder()
        .dns_resolver(Arc::new(NoNames))
        .build()
        .unwrap();
    let err = client
        .get("http://probe-target.invalid/v1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(sonde::runner::transport::classify(&err), Outcome::Dns);
    assert!(sonde::runner::transport::describe(&err).contains("no such host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_stream_errors_after_a_200_are_classified() {
    let script = vec![
        (0, head("200 OK", "text/event-stream")),
        (0, chunk(r#"{"role":"assistant","content":""}"#).into_bytes()),
        (0, b"data: {\"error\":{\"code\":429,\"message\":\"Rate limit exceeded: free-models-per-min\"}}\n\n".to_vec()),
        (0, DONE.as_bytes().to_vec()),
    ];
    let addr = raw_server(script, After::Close).await;
    let r = common::run(&raw_config(addr, ""), "m", "ping").await;
    assert_eq!(r.outcome, Outcome::RateLimited, "{r:?}");
    assert_eq!(r.http_status, Some(200));
    assert!(r.error.as_deref().unwrap().contains("free-models-per-min"));
}
