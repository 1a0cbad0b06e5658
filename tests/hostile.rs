//! Hostile and broken endpoints on 127.0.0.1 against the real client: a redirect to another
//! origin never receives the key, provider text cannot drive a terminal, a key echoed whole,
//! cut short or escaped is masked in every field, and a model id cannot leave its URL path
//! segment.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{After, DONE, head, raw_server};
use sonde::config::Config;
use sonde::result::{Outcome, ResultRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A key with characters that JSON, HTML and URLs escape.
const KEY: &str = "sk-proj/Hostile+Key0123456789/abcdefghijKLMNOP==";
const KEY_VAR: &str = "SONDE_HOSTILE_TEST_KEY";

fn set_key() {
    // SAFETY: every test of this binary sets the same value before any reads it.
    unsafe { std::env::set_var(KEY_VAR, KEY) };
}

/// A config for a provider of `kind` at `addr` with the key, serving model `model`.
fn config_for(kind: &str, addr: SocketAddr, model: &str) -> Config {
    set_key();
    let path = if kind == "gemini" { "v1beta" } else { "v1" };
    let text = common::provider_text(
        "hostile",
        kind,
        &format!("http://{addr}/{path}"),
        &format!("api_key_env = \"{KEY_VAR}\"\ntimeout = \"5s\""),
        &[model],
    );
    Config::parse(Path::new("hostile.toml"), &text).expect("test config")
}

/// Every text field a record carries from its provider.
fn provider_fields(record: &ResultRecord) -> Vec<String> {
    [
        &record.error,
        &record.served_model,
        &record.upstream,
        &record.finish_reason,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
}

/// A server answering every request with `status` and the JSON `body`.
async fn json_server(status: &str, body: &str) -> SocketAddr {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    raw_server(vec![(0, response.into_bytes())], After::Close).await
}

/// A server streaming the SSE `events` then `[DONE]`.
async fn sse_server(events: String) -> SocketAddr {
    raw_server(
        vec![
            (0, head("200 OK", "text/event-stream")),
            (0, events.into_bytes()),
            (0, DONE.as_bytes().to_vec()),
        ],
        After::Close,
    )
    .await
}

/// Answers every connection with `response` after reading its request, and keeps what
/// each request said: a server to count and inspect what reaches it.
async fn capture_server(response: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16384];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = stream.write_all(response).await;
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_refused_and_the_key_never_reaches_its_target() {
    let (elsewhere, seen) = capture_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    for status in [
        "307 Temporary Redirect",
        "308 Permanent Redirect",
        "302 Found",
    ] {
        let redirect = format!(
            "HTTP/1.1 {status}\r\nLocation: http://{elsewhere}/v1/steal?token=query-secret\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let addr = raw_server(vec![(0, redirect.into_bytes())], After::Close).await;
        for kind in common::KINDS {
            let config = config_for(kind, addr, "m");
            let record = common::run(&config, "m", "ping").await;
            let error = record.error.clone().unwrap_or_default();
            assert_eq!(record.outcome, Outcome::ClientError, "{kind}: {error}");
            assert_eq!(record.http_status, Some(status[..3].parse().unwrap()));
            assert!(error.contains(&format!("http://{elsewhere}")), "{error}");
            assert!(
                !error.contains("query-secret") && !error.contains("/steal"),
                "never the location's path or query: {error}"
            );
        }
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "the other origin was contacted: {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_text_cannot_drive_a_terminal() {
    let hostile = "\\u001b[2J\\u001b]0;owned\\u0007\\u001b]52;c;ZXZpbA==\\u0007\\u009b31m\\u202etxt.exe\\u007f";
    let body = format!(
        "{{\"error\":{{\"message\":\"bad request {hostile} end\",\"type\":\"invalid_request_error\"}}}}"
    );
    let error_server = json_server("400 Bad Request", &body).await;
    let model_chunk = format!(
        "data: {{\"model\":\"m{hostile}\",\"provider\":\"Up{hostile}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"pong\"}},\"finish_reason\":null}}]}}\n\n\
         data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop{hostile}\"}}]}}\n\n"
    );
    let stream_server = sse_server(model_chunk).await;
    for addr in [error_server, stream_server] {
        let config = config_for("openai", addr, "m");
        let record = common::run(&config, "m", "ping").await;
        let fields = provider_fields(&record);
        assert!(!fields.is_empty(), "{record:?}");
        for field in &fields {
            assert!(
                !field.chars().any(sonde::sanitize::is_unsafe),
                "an unsafe character survived: {field:?}"
            );
        }
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            !json.contains("\\u001b") && !json.contains("\\u202e"),
            "{json}"
        );
    }

    // And the table a person reads: nothing but printable text.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        common::provider_text(
            "hostile",
            "openai",
            &format!("http://{error_server}/v1"),
            "",
            &["m"],
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["probe", "--probe", "ping", "--format", "table"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("bad request"), "{table}");
    assert!(
        !table
            .chars()
            .any(|c| c != '\n' && sonde::sanitize::is_unsafe(c)),
        "{table:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_echoed_whole_cut_or_escaped_is_masked_in_every_field() {
    let json_escaped = KEY.replace('/', "\\\\/");
    let url_escaped = KEY
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    let first_20 = &KEY[..20];
    let echoes = [
        // An unexplained JSON body, quoted as it came: the key JSON-escaped.
        (
            "502 Bad Gateway",
            format!("{{\"detail\":\"upstream refused key {json_escaped}\"}}"),
        ),
        // An HTML error page with the key URL-encoded in a link.
        (
            "503 Service Unavailable",
            format!("<a href=\"/retry?key={url_escaped}\">retry</a>"),
        ),
        // The first 20 characters, as dashboards show a key.
        (
            "401 Unauthorized",
            format!(
                "{{\"error\":{{\"message\":\"Incorrect API key provided: {first_20}…\",\"type\":\"invalid_request_error\"}}}}"
            ),
        ),
    ];
    for (status, body) in echoes {
        let addr = json_server(status, &body).await;
        let record = common::run(&config_for("openai", addr, "m"), "m", "ping").await;
        assert_masked(&record);
    }
    // The key echoed back as the finish reason and the served model of a stream.
    let stream = format!(
        "data: {{\"model\":\"{KEY}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"pong\"}},\"finish_reason\":null}}]}}\n\n\
         data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"{json_escaped}\"}}]}}\n\n"
    );
    let addr = sse_server(stream).await;
    let record = common::run(&config_for("openai", addr, "m"), "m", "ping").await;
    assert!(record.finish_reason.is_some(), "{record:?}");
    assert!(record.served_model.is_some(), "{record:?}");
    assert_masked(&record);
}

/// No field of `record`, nor the record as JSON, carries 12 consecutive characters of the key.
fn assert_masked(record: &ResultRecord) {
    let fields = provider_fields(record);
    assert!(
        fields.iter().any(|f| f.contains("[REDACTED]")),
        "nothing was masked: {fields:?}"
    );
    let json = serde_json::to_string(record).unwrap();
    let escaped = KEY
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    for form in [KEY.to_owned(), KEY.replace('/', "\\/"), escaped] {
        let chars: Vec<char> = form.chars().collect();
        for window in chars.windows(12) {
            let run: String = window.iter().collect();
            for text in fields.iter().chain([&json]) {
                assert!(!text.contains(&run), "{run:?} leaked in {text}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gemini_model_id_stays_inside_its_path_segment() {
    let (addr, requests) =
        capture_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    for (model, segment) in [
        ("../../admin", "..%2F..%2Fadmin"),
        ("x?key=leak#frag", "x%3Fkey%3Dleak%23frag"),
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("models/gemini-pro", "gemini-pro"),
    ] {
        let record = common::run(&config_for("gemini", addr, model), model, "ping").await;
        assert_eq!(record.outcome, Outcome::NotFound, "{record:?}");
        let request = requests.lock().unwrap().pop().unwrap();
        let line = request.lines().next().unwrap_or_default();
        assert_eq!(
            line,
            format!("POST /v1beta/models/{segment}:streamGenerateContent?alt=sse HTTP/1.1"),
            "{model}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_id_with_slashes_reaches_the_simulator_whole() {
    let sim = common::simulator("[models.\"org/../model\"]\nttft_ms = 1\n").await;
    let config = common::kind_config(&sim, "gemini", "", &["org/../model"]);
    let record = common::run(&config, "org/../model", "ping").await;
    assert_eq!(record.outcome, Outcome::Ok, "{record:?}");
    assert_eq!(sim.requests().last().unwrap().model, "org/../model");
}
