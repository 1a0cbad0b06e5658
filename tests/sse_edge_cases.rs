//! What real OpenAI-compatible endpoints send, byte for byte, from a raw server on
//! 127.0.0.1: each edge case of the wire format is one test.

mod common;

use common::{After, DONE, chunk, finish, head, raw_config, raw_server, usage};
use sonde::result::{Outcome, ResultRecord};

const ROLE: &str = r#"{"role":"assistant","content":""}"#;

async fn serve(script: Vec<(u64, String)>) -> ResultRecord {
    let mut steps = vec![(0, head("200 OK", "text/event-stream"))];
    steps.extend(
        script
            .into_iter()
            .map(|(delay, text)| (delay, text.into_bytes())),
    );
    let addr = raw_server(steps, After::Close).await;
    common::run(&raw_config(addr, ""), "m", "ping").await
}

fn ms_near(value: Option<f64>, expected: f64) -> bool {
    value.is_some_and(|v| (v - expected).abs() <= 30.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_are_not_content() {
    let r = serve(vec![
        (0, ": OPENROUTER PROCESSING\n\n".into()),
        (100, ": OPENROUTER PROCESSING\n\n".into()),
        (200, chunk(r#"{"content":"pong"}"#)),
        (0, finish("stop")),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(
        ms_near(r.ttft_ms, 300.0),
        "TTFT {:?} counts the comments",
        r.ttft_ms
    );
    assert_eq!(r.chunks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_line_ends() {
    let crlf = |text: String| text.replace('\n', "\r\n");
    let r = serve(vec![
        (0, crlf(chunk(ROLE))),
        (50, crlf(chunk(r#"{"content":"po"}"#))),
        (20, crlf(chunk(r#"{"content":"ng"}"#))),
        (0, crlf(finish("stop"))),
        (0, crlf(DONE.into())),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.chunks, 2);
    assert!(r.streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_only_first_delta_is_not_the_first_token() {
    let r = serve(vec![
        (0, chunk(ROLE)),
        (250, chunk(r#"{"content":"pong"}"#)),
        (0, finish("stop")),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(ms_near(r.ttft_ms, 250.0), "TTFT {:?}", r.ttft_ms);
    assert!(r.ttfb_ms.unwrap() < 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_deltas_are_not_content() {
    let r = serve(vec![
        (0, chunk(ROLE)),
        (30, chunk("{}")),
        (30, chunk(r#"{"content":""}"#)),
        (30, chunk(r#"{"content":null}"#)),
        (30, chunk(r#"{"content":"pong"}"#)),
        (0, finish("stop")),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.chunks, 1);
    assert!(ms_near(r.ttft_ms, 120.0), "TTFT {:?}", r.ttft_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_tail_gives_the_token_counts() {
    let r = serve(vec![
        (0, chunk(ROLE)),
        (10, chunk(r#"{"content":"pong"}"#)),
        (0, finish("stop")),
        (0, usage(21, 3)),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!((r.input_tokens, r.output_tokens), (Some(21), Some(3)));
    assert!(!r.tokens_estimated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_usage_tokens_are_estimated_and_flagged() {
    let r = serve(vec![
        (0, chunk(ROLE)),
        (10, chunk(r#"{"content":"pong pong"}"#)),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.output_tokens, Some(3), "9 characters ≈ 3 tokens");
    assert!(r.tokens_estimated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_ends_the_stream_and_its_absence_is_truncation() {
    let with_done = serve(vec![(0, chunk(r#"{"content":"pong"}"#)), (40, DONE.into())]).await;
    assert_eq!(with_done.outcome, Outcome::Ok);
    assert!(
        ms_near(with_done.close_ms, 40.0),
        "close {:?}",
        with_done.close_ms
    );
    let without = serve(vec![
        (0, chunk(r#"{"content":"pong"}"#)),
        (0, finish("stop")),
    ])
    .await;
    assert_eq!(without.outcome, Outcome::Truncated, "{without:?}");
    assert!(
        without
            .error
            .as_deref()
            .unwrap()
            .contains("finish_reason stop was seen")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_object_inside_the_stream() {
    let r = serve(vec![
        (0, chunk(ROLE)),
        (10, chunk(r#"{"content":"po"}"#)),
        (
            10,
            "data: {\"error\":{\"message\":\"Provider returned error\",\"code\":502},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n".into(),
        ),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::ServerError, "{r:?}");
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.chunks, 1);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("Provider returned error")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_ignores_stream_true() {
    let body = r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#;
    let steps = vec![
        (0, head("200 OK", "application/json")),
        (150, body.as_bytes().to_vec()),
    ];
    let addr = raw_server(steps, After::Close).await;
    let r = common::run(&raw_config(addr, ""), "m", "ping").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(!r.streamed);
    assert_eq!(r.chunks, 1);
    assert_eq!(r.output_tokens, Some(1));
    assert!(
        ms_near(r.ttft_ms, 150.0),
        "content was first available with the body: {:?}",
        r.ttft_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_split_across_reads_is_timed_when_it_completes() {
    let whole = chunk(r#"{"content":"pong"}"#);
    let (first, second) = whole.split_at(whole.len() / 2);
    let r = serve(vec![
        (0, first.into()),
        (200, second.into()),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(ms_near(r.ttft_ms, 200.0), "TTFT {:?}", r.ttft_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_one_read_share_one_arrival() {
    let burst = [chunk(r#"{"content":"po"}"#), chunk(r#"{"content":"ng"}"#)].concat();
    let r = serve(vec![
        (0, burst),
        (60, chunk(r#"{"content":"!"}"#)),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.chunks, 3);
    assert_eq!(
        r.itl_gaps_us.len(),
        1,
        "one gap between two arrivals: {:?}",
        r.itl_gaps_us
    );
    assert!(r.streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_fields_of_both_dialects() {
    let r = serve(vec![
        (0, chunk(r#"{"reasoning_content":"Let me think"}"#)),
        (50, chunk(r#"{"reasoning":"about it"}"#)),
        (50, chunk(r#"{"content":"pong"}"#)),
        (0, DONE.into()),
    ])
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(ms_near(r.ttft_ms, 0.0), "{:?}", r.ttft_ms);
    assert!(ms_near(r.ttfat_ms, 100.0), "{:?}", r.ttfat_ms);
    assert_eq!(r.chunks, 3);
}
