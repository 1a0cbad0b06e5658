//! Each format's stream as the providers document it (tests/fixtures/*.txt, written from the
//! public API references), decoded event by event and compared with the expected typed events
//! (tests/fixtures/*.events, one `Debug` line per event, reviewed by hand). Then the same
//! bytes are served by a raw server and measured end to end by the real client.
//!
//! `SONDE_BLESS=1 cargo test --test fixtures` rewrites the `.events` files; review the diff.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use common::{After, head, raw_server};
use futures_util::StreamExt;
use sonde::config::{Config, ProviderKind};
use sonde::provider;
use sonde::result::{Outcome, ResultRecord};
use sse_stream::SseByteStream;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The typed events of a recorded stream, one `Debug` line each.
async fn decode(kind: ProviderKind, text: &str) -> Vec<String> {
    let bytes = Bytes::from(text.to_owned());
    let mut events = SseByteStream::new(futures_util::stream::iter([Ok::<_, Infallible>(bytes)]));
    let adapter = provider::adapter(kind);
    let mut lines = Vec::new();
    while let Some(sse) = events.next().await {
        let sse = sse.expect("fixture is valid SSE");
        if let Err(err) = adapter.decode_event(&sse, &mut |event| lines.push(format!("{event:?}")))
        {
            lines.push(format!("DecodeError({:?})", err.0));
        }
    }
    lines
}

async fn check_events(kind: ProviderKind, name: &str) {
    let text = std::fs::read_to_string(fixture(&format!("{name}.txt"))).unwrap();
    let actual = decode(kind, &text).await.join("\n") + "\n";
    let golden = fixture(&format!("{name}.events"));
    if std::env::var_os("SONDE_BLESS").is_some() {
        std::fs::write(&golden, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        actual, expected,
        "{name}: decoded events differ from {golden:?}"
    );
}

/// Serves the fixture with 10 ms between its events and measures it with probe `probe`.
async fn measure(kind: &str, name: &str, model: &str, probe: &str) -> ResultRecord {
    let text = std::fs::read_to_string(fixture(&format!("{name}.txt"))).unwrap();
    let mut script = vec![(0, head("200 OK", "text/event-stream"))];
    let separator = if text.contains("\r\n\r\n") {
        "\r\n\r\n"
    } else {
        "\n\n"
    };
    for event in text.split_inclusive(separator) {
        script.push((10, event.as_bytes().to_vec()));
    }
    let addr = raw_server(script, After::Close).await;
    let base = if kind == "gemini" { "v1beta" } else { "v1" };
    let config = Config::parse(
        std::path::Path::new("fixture.toml"),
        &format!(
            "[[providers]]\nname = \"rec\"\nkind = \"{kind}\"\nbase_url = \"http://{addr}/{base}\"\n\
             [[providers.models]]\nid = \"{model}\"\n"
        ),
    )
    .unwrap();
    common::run(&config, model, probe).await
}

#[tokio::test]
async fn openai_documented_streams_decode_event_by_event() {
    check_events(ProviderKind::OpenAi, "openai_stream").await;
    check_events(ProviderKind::OpenAi, "openai_tool_stream").await;
    check_events(ProviderKind::OpenAi, "openrouter_stream").await;
}

#[tokio::test]
async fn anthropic_documented_streams_decode_event_by_event() {
    check_events(ProviderKind::Anthropic, "anthropic_stream").await;
    check_events(ProviderKind::Anthropic, "anthropic_tool_stream").await;
    check_events(ProviderKind::Anthropic, "anthropic_error_stream").await;
}

#[tokio::test]
async fn gemini_documented_streams_decode_event_by_event() {
    check_events(ProviderKind::Gemini, "gemini_stream").await;
    check_events(ProviderKind::Gemini, "gemini_tool_stream").await;
    check_events(ProviderKind::Gemini, "gemini_error_stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_streams_measure_end_to_end() {
    let r = measure("openai", "openai_stream", "gpt-4o-mini", "stream").await;
    assert_eq!(r.outcome, Outcome::ContentMismatch, "{r:?}");
    assert_eq!(
        (r.chunks, r.output_tokens, r.input_tokens),
        (2, Some(2), Some(9))
    );
    assert_eq!(r.served_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert!(
        !r.model_substituted,
        "a dated snapshot is the model asked for"
    );
    assert!(r.streamed);

    let r = measure(
        "openai",
        "openrouter_stream",
        "meta-llama/llama-3.3-70b-instruct",
        "ping",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.upstream.as_deref(), Some("DeepInfra"));
    assert_eq!(r.output_tokens, Some(2));

    let r = measure("openai", "openai_tool_stream", "gpt-4o", "tools").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.cap_tools, Some(true));

    let r = measure(
        "anthropic",
        "anthropic_stream",
        "claude-sonnet-4-5",
        "stream",
    )
    .await;
    assert_eq!(r.outcome, Outcome::ContentMismatch, "{r:?}");
    assert_eq!(
        (r.chunks, r.output_tokens, r.input_tokens),
        (2, Some(15), Some(25))
    );
    assert_eq!(r.finish_reason.as_deref(), Some("end_turn"));
    assert!(
        !r.model_substituted,
        "a dated snapshot is the model asked for"
    );
    assert!(
        r.itl_p50_ms.is_some_and(|itl| (5.0..40.0).contains(&itl)),
        "{r:?}"
    );

    let r = measure(
        "anthropic",
        "anthropic_tool_stream",
        "claude-sonnet-4-5",
        "tools",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.cap_tools, Some(true));
    assert_eq!(r.chunks, 3, "the thinking and two argument pieces: {r:?}");
    assert_eq!(r.ttfat_ms, None, "a tool call is no visible answer text");

    let r = measure(
        "anthropic",
        "anthropic_error_stream",
        "claude-sonnet-4-5",
        "ping",
    )
    .await;
    assert_eq!(r.outcome, Outcome::ServerError, "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("Overloaded"));

    let r = measure("gemini", "gemini_stream", "gemini-2.0-flash", "stream").await;
    assert_eq!(r.outcome, Outcome::ContentMismatch, "{r:?}");
    assert_eq!(
        (r.chunks, r.output_tokens, r.input_tokens),
        (2, Some(10), Some(8))
    );
    assert_eq!(r.finish_reason.as_deref(), Some("STOP"));

    let r = measure("gemini", "gemini_tool_stream", "gemini-2.5-flash", "tools").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!((r.output_tokens, r.reasoning_tokens), (Some(81), Some(66)));

    let r = measure("gemini", "gemini_error_stream", "gemini-2.5-pro", "ping").await;
    assert_eq!(r.outcome, Outcome::ServerError, "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("overloaded"));
}
