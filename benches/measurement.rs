//! The per-chunk measurement path: SSE bytes in → timestamped content events out, through
//! the production code (`TimedBody` → SSE parser → OpenAI adapter → `Recorder`).
//!
//! `cargo bench --bench measurement` reports throughput in bytes/s (group `sse_bytes`) and
//! in content events/s (group `sse_events`; ns per event = 1e9 / that rate). The stream is a
//! recorded-shape OpenAI answer of 256 tokens, delivered one event per read (a slow model)
//! and 16 events per read (a fast one, or a busy socket).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::stream;
use sonde::config::ProviderKind;
use sonde::measurement::Recorder;
use sonde::provider;
use sonde::runner::body::{ArrivalClock, TimedBody};
use sonde::runner::read_sse;

const TOKENS: usize = 256;

/// A realistic answer: role delta, 256 content deltas, finish, usage tail, `[DONE]`.
fn events() -> Vec<String> {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-9x8y7z\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"deepseek-chat\",\"system_fingerprint\":\"fp_8802369eaa\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        )
    };
    let mut events = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    events.extend((0..TOKENS).map(|i| chunk(&format!("{{\"content\":\" word{i}\"}}"), "null")));
    events.push(chunk("{}", "\"stop\""));
    events.push(
        "data: {\"id\":\"chatcmpl-9x8y7z\",\"choices\":[],\"usage\":{\"prompt_tokens\":25,\"completion_tokens\":256,\"total_tokens\":281}}\n\n"
            .to_owned(),
    );
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// The events grouped `per_read` to a chunk, as the socket would hand them over.
fn reads(per_read: usize) -> Vec<Bytes> {
    events()
        .chunks(per_read)
        .map(|group| Bytes::from(group.concat()))
        .collect()
}

async fn measure(reads: &[Bytes]) -> u32 {
    let t0 = Instant::now();
    let clock = ArrivalClock::new(t0);
    let body = TimedBody::new(
        stream::iter(reads.iter().cloned().map(Ok::<_, std::io::Error>)),
        std::sync::Arc::clone(&clock),
        u64::MAX,
        Duration::from_secs(60),
    );
    let mut recorder = Recorder::new(t0);
    let adapter = provider::adapter(ProviderKind::OpenAi);
    let read = read_sse(
        body,
        &clock,
        adapter,
        &mut recorder,
        t0 + Duration::from_secs(60),
    )
    .await;
    assert!(read.is_ok());
    let measured = recorder.finish(true, None);
    assert!(measured.done);
    measured.chunks
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let total_bytes: usize = events().iter().map(String::len).sum();
    for (group_name, throughput) in [
        ("sse_bytes", Throughput::Bytes(total_bytes as u64)),
        ("sse_events", Throughput::Elements(TOKENS as u64)),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(throughput);
        for per_read in [1, 16] {
            let data = reads(per_read);
            group.bench_with_input(
                BenchmarkId::new("events_per_read", per_read),
                &data,
                |b, data| {
                    b.to_async(&runtime)
                        .iter(|| async { black_box(measure(black_box(data)).await) });
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
