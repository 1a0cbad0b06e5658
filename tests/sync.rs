//! `sonde sync litellm` and the daemon's `[[sync]]` against LiteLLM's model management.
//!
//! The real proxy keeps API-added models in its database through Prisma, whose engine
//! binaries cannot be downloaded here; `tests/litellm/model_admin.py` stands in for it with
//! LiteLLM's own request models validating every body sonde sends and LiteLLM's own `Router`
//! (simple-shuffle) routing `/chat/completions` by the stored weights, rebuilt after every
//! change as the proxy reloads. So the splits below are LiteLLM's, on what sonde pushed.
//!
//! The LiteLLM package is installed by `.ci/run` (or by this test, through
//! `tests/litellm/setup.sh`); `SONDE_SKIP_LITELLM=1` skips the suite, loudly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::daemon::Daemon;
use serde_json::{Value, json};
use sonde::config::Config;

const MASTER_KEY: &str = "sk-sonde-admin-0123456789abcdef";

const SCENARIO: &str = r#"
[models.fast]

[models.slow]

[models.dead]
"#;

/// LiteLLM's Python, or `None` when the suite is skipped on purpose.
fn litellm_python() -> Option<PathBuf> {
    let bin = common::installed::installed(&common::installed::Tool {
        name: "the LiteLLM proxy",
        skip_var: "SONDE_SKIP_LITELLM",
        path_var: "SONDE_LITELLM_BIN",
        setup: "tests/litellm/setup.sh",
        needs: "python3 with venv and PyPI",
        untested: "driving a LiteLLM proxy's weights (`sonde sync litellm`, `[[sync]]`) is",
    })?;
    Some(bin.with_file_name("python"))
}

/// The model management stand-in; killed when dropped.
struct ModelAdmin(common::Spawned);

impl ModelAdmin {
    /// Starts it with `manual` deployments (added by hand, not sonde's), the providers'
    /// key in `SIM_KEY` for its router.
    async fn start(python: &Path, dir: &Path, manual: &Value) -> ModelAdmin {
        let port = common::free_port();
        let manual_file = dir.join("manual.json");
        std::fs::write(&manual_file, manual.to_string()).unwrap();
        let log = dir.join("model_admin.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .arg("tests/litellm/model_admin.py")
            .args([&port.to_string(), MASTER_KEY])
            .arg(&manual_file)
            .env("LITELLM_TELEMETRY", "False")
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("SIM_KEY", "sk-sim")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the model admin stand-in");
        let mut admin = ModelAdmin(common::Spawned { child, port, log });
        let url = format!("{}/health/liveliness", admin.url());
        let log = admin.0.log.clone();
        common::wait_until_up(&url, &mut admin.0.child, Duration::from_secs(60), || {
            std::fs::read_to_string(&log).unwrap_or_default()
        })
        .await;
        admin
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port)
    }

    /// Every deployment by id: (group, weight, sonde's).
    async fn deployments(&self) -> BTreeMap<String, (String, Option<f64>, bool)> {
        let body = common::http()
            .get(format!("{}/model/info", self.url()))
            .bearer_auth(MASTER_KEY)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let info: Value = serde_json::from_slice(&body).unwrap();
        info["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["model_info"]["id"].as_str().unwrap().to_owned(),
                    (
                        d["model_name"].as_str().unwrap().to_owned(),
                        d["litellm_params"]["weight"].as_f64(),
                        d["model_info"]["sonde_managed"] == json!(true),
                    ),
                )
            })
            .collect()
    }

    /// Sends `n` chat requests for `group`; how many each deployment served.
    async fn split(&self, group: &str, n: usize) -> BTreeMap<String, u32> {
        common::litellm_split(&self.url(), MASTER_KEY, group, n).await
    }
}

/// `sonde sync litellm` in `dir` with the admin key in `LITELLM_KEY`.
fn sync(dir: &Path, admin: &ModelAdmin, extra: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["sync", "litellm", "--url", &admin.url(), "--key-env"])
        .arg("LITELLM_KEY")
        .args(extra)
        .current_dir(dir)
        .env("LITELLM_KEY", MASTER_KEY)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains(MASTER_KEY), "the admin key in the output");
    eprintln!("sonde sync litellm {extra:?}:\n{text}");
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A folder with a config of one provider on `base_url` and `models` in group `chat`, and
/// its store scripted with `plays`.
fn scripted_store(base_url: &str, models: &[&str], plays: &[common::Plays]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "[[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
         api_key_env = \"SIM_KEY\"\nprobes = [\"stream\"]\n"
    );
    for model in models {
        toml.push_str(&format!(
            "[[providers.models]]\nid = \"{model}\"\ngroup = \"chat\"\n"
        ));
    }
    let path = dir.path().join("sonde.toml");
    std::fs::write(&path, &toml).unwrap();
    common::play(&Config::parse(&path, &toml).unwrap(), plays);
    dir
}

fn manual_deployments(sim: &str) -> Value {
    json!([
        {"model_name": "legacy", "litellm_params": {"model": "openai/fast", "api_base": sim,
         "api_key": "os.environ/SIM_KEY", "weight": 1}, "model_info": {"id": "by-hand-1"}},
        {"model_name": "chat", "litellm_params": {"model": "openai/slow", "api_base": sim,
         "api_key": "os.environ/SIM_KEY", "weight": 0}, "model_info": {"id": "by-hand-2"}},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sonde_sync_litellm_pushes_the_feeds_weights_and_leaves_other_deployments_alone() {
    let Some(python) = litellm_python() else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let work = tempfile::tempdir().unwrap();
    let admin = ModelAdmin::start(&python, work.path(), &manual_deployments(&sim.base_url())).await;
    let by_hand = |all: &BTreeMap<String, (String, Option<f64>, bool)>| {
        (all["by-hand-1"].clone(), all["by-hand-2"].clone())
    };
    let manual_before = by_hand(&admin.deployments().await);

    // The README's command, as written there.
    let readme = std::fs::read_to_string("README.md").unwrap();
    let command = "sonde sync litellm --url http://127.0.0.1:4000 --key-env LITELLM_MASTER_KEY";
    assert!(
        readme.contains(command),
        "the README no longer says: {command}"
    );

    // fast and slow up (TTFT 100 against 900 ms: weights 0.9 and 0.1), dead down.
    use common::Plays::{Down, Up};
    let models = ["fast", "slow", "dead"];
    let up = scripted_store(&sim.base_url(), &models, &[Up(100.0), Up(900.0), Down]);

    let dry = sync(up.path(), &admin, &["--dry-run"]);
    assert!(dry.status.success());
    assert!(
        stdout(&dry).contains("create sim/fast weight 0.89") && stdout(&dry).contains("(dry run)"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        admin.deployments().await.len(),
        2,
        "a dry run changes nothing"
    );

    let done = sync(up.path(), &admin, &[]);
    assert!(done.status.success());
    let all = admin.deployments().await;
    let near = |(group, weight, sondes): &(String, Option<f64>, bool), want: f64| {
        group == "chat" && *sondes && weight.is_some_and(|w| (w - want).abs() < 0.01)
    };
    assert!(near(&all["sim/fast"], 0.9), "{all:?}");
    assert!(near(&all["sim/slow"], 0.1), "{all:?}");
    let pushed = (all["sim/fast"].1, all["sim/slow"].1);
    assert!(
        !all.contains_key("sim/dead"),
        "no deployment for a down target"
    );
    assert_eq!(by_hand(&all), manual_before);

    let split = admin.split("chat", 200).await;
    eprintln!("LiteLLM's split of 200 requests after the sync: {split:?}");
    let fast = split.get("sim/fast").copied().unwrap_or(0);
    let slow = split.get("sim/slow").copied().unwrap_or(0);
    assert_eq!(fast + slow, 200, "{split:?}");
    // Binomial(200, 0.9): mean 180, σ 4.2; ±4σ.
    assert!((163..=197).contains(&fast), "{split:?}");
    assert_eq!(
        sim.requests().iter().filter(|r| r.model == "dead").count(),
        0
    );

    // Again at once: nothing moved, nothing is pushed.
    let again = sync(up.path(), &admin, &[]);
    assert!(stdout(&again).contains("made 0 changes, 0 failed, 2 unchanged"));

    // Every target down: the group would route nowhere (or evenly, down ones included), so
    // it is held at its last weights, and the exit code says so.
    let all_down = scripted_store(&sim.base_url(), &models, &[Down, Down, Down]);
    let held = sync(all_down.path(), &admin, &[]);
    assert_eq!(held.status.code(), Some(3), "{}", stdout(&held));
    assert!(stdout(&held).contains("held chat:"), "{}", stdout(&held));
    let all = admin.deployments().await;
    assert_eq!(
        (all["sim/fast"].1, all["sim/slow"].1),
        pushed,
        "held at its weights"
    );

    // fast down, slow up, with `--on-down remove`: fast's deployment goes, slow takes all.
    let fast_down = scripted_store(&sim.base_url(), &models, &[Down, Up(900.0), Down]);
    let removed = sync(fast_down.path(), &admin, &["--on-down", "remove"]);
    assert!(removed.status.success(), "{}", stdout(&removed));
    let all = admin.deployments().await;
    assert!(!all.contains_key("sim/fast"), "{all:?}");
    assert_eq!(all["sim/slow"], ("chat".into(), Some(1.0), true));
    assert_eq!(by_hand(&all), manual_before);
    let split = admin.split("chat", 50).await;
    assert_eq!(split.get("sim/slow"), Some(&50), "{split:?}");
    // A wrong key: the proxy's refusal, and no key in the text.
    let refused = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["sync", "litellm", "--url", &admin.url()])
        .args(["--key-env", "LITELLM_KEY"])
        .current_dir(fast_down.path())
        .env("LITELLM_KEY", "sk-wrong-key-0123456789")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text.contains("answered 401"), "{text}");
    assert!(!text.contains("sk-wrong-key-0123456789"), "{text}");
}

/// An upstream that forwards to the simulator until switched off, then answers 503.
struct Switch {
    down: AtomicBool,
    upstream: String,
    http: reqwest::Client,
}

async fn forward(State(switch): State<Arc<Switch>>, request: axum::extract::Request) -> Response {
    if switch.down.load(Ordering::SeqCst) {
        let body = json!({"error": {"message": "switched off", "type": "server_error"}});
        return (StatusCode::SERVICE_UNAVAILABLE, body.to_string()).into_response();
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut headers = parts.headers.clone();
    headers.remove("host");
    let upstream = switch
        .http
        .request(parts.method, format!("{}{path}", switch.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut response = Response::builder().status(upstream.status().as_u16());
    for (name, value) in upstream.headers() {
        response = response.header(name.as_str(), value.as_bytes());
    }
    response
        .body(axum::body::Body::from_stream(upstream.bytes_stream()))
        .unwrap()
}

async fn switch(upstream: String) -> (Arc<Switch>, String) {
    let switch = Arc::new(Switch {
        down: AtomicBool::new(false),
        upstream,
        http: common::http(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(forward)
        .with_state(Arc::clone(&switch));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (switch, format!("http://{addr}"))
}

/// A webhook receiver keeping every body it is sent.
async fn receiver() -> (Arc<Mutex<Vec<Value>>>, String) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let kept = Arc::clone(&got);
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_str::<Value>(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (got, format!("http://{addr}/hook"))
}

/// Waits (at most `limit`) until `ready` holds, blocking this worker.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_the_proxy_at_the_feeds_weights_publish_by_publish() {
    let Some(python) = litellm_python() else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let (a, a_url) = switch(format!("http://{}", sim.addr())).await;
    let (b, b_url) = switch(format!("http://{}", sim.addr())).await;
    let (hooks, hook_url) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = ModelAdmin::start(&python, dir.path(), &manual_deployments(&sim.base_url())).await;
    let manual_before = admin.deployments().await;
    let port = common::free_port();
    let every = Duration::from_secs(2);
    let toml = format!(
        "[store]\npath = \"sonde.db\"\n\n[health]\ndown_after = 1\nhealthy_after = 1\n\
         min_samples = 1\nhold = \"1s\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [publish]\nevery = \"2s\"\nwindow = \"5m\"\n\n[schedules]\nping = \"every 1s\"\n\n\
         [[sync]]\nname = \"proxy\"\nkind = \"litellm\"\nurl = \"{}\"\nkey_env = \"LITELLM_KEY\"\n\n\
         [[alerts]]\nname = \"ops\"\nkind = \"webhook\"\nurl_env = \"HOOK_URL\"\ncauses = [\"sync\"]\n\n\
         [[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{a_url}/v1\"\n\
         api_key_env = \"SIM_KEY\"\n[[providers.models]]\nid = \"fast\"\ngroup = \"chat\"\n\
         probes = [\"ping\"]\n\n\
         [[providers]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"{b_url}/v1\"\n\
         api_key_env = \"SIM_KEY\"\n[[providers.models]]\nid = \"fast\"\ngroup = \"chat\"\n\
         probes = [\"ping\"]\n",
        admin.url()
    );
    std::fs::write(dir.path().join("sonde.toml"), toml).unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("LITELLM_KEY", MASTER_KEY),
            ("SIM_KEY", "sk-sim"),
            ("HOOK_URL", &hook_url),
        ],
    );
    let feed_url = format!("http://127.0.0.1:{port}/feed.json");
    let runtime = tokio::runtime::Handle::current();
    let state = |id: &str| -> String {
        let feed = runtime.block_on(async {
            match common::http().get(&feed_url).send().await {
                Ok(response) => {
                    let body = response.bytes().await.unwrap_or_default();
                    serde_json::from_slice(&body).unwrap_or(Value::Null)
                }
                Err(_) => Value::Null,
            }
        });
        feed["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"] == id)
            .and_then(|t| t["state"].as_str())
            .unwrap_or("none")
            .to_owned()
    };
    let weight = |id: &str| -> Option<f64> {
        runtime
            .block_on(admin.deployments())
            .get(id)
            .and_then(|d| d.1)
    };
    tokio::task::block_in_place(|| {
        wait_until("both targets' deployments", Duration::from_secs(60), || {
            weight("a/fast").is_some_and(|w| w > 0.0) && weight("b/fast").is_some_and(|w| w > 0.0)
        });
    });
    let split = admin.split("chat", 40).await;
    assert_eq!(split.values().sum::<u32>(), 40, "{split:?}");
    assert!(
        split.contains_key("a/fast") && split.contains_key("b/fast"),
        "{split:?}"
    );

    // a goes down: within a publish of the feed saying so, the proxy sends it nothing.
    a.down.store(true, Ordering::SeqCst);
    let lag = tokio::task::block_in_place(|| {
        wait_until("a/fast down in the feed", Duration::from_secs(30), || {
            state("a/fast") == "down"
        });
        wait_until(
            "a/fast at weight 0 on the proxy",
            2 * every + Duration::from_secs(8),
            || weight("a/fast") == Some(0.0),
        )
    });
    eprintln!(
        "the proxy had a/fast at weight 0 {} ms after the feed said down",
        lag.as_millis()
    );
    assert_eq!(admin.deployments().await["b/fast"].1, Some(1.0));
    let split = admin.split("chat", 40).await;
    assert_eq!(split.get("b/fast"), Some(&40), "{split:?}");

    // b goes down too: the group is held at its last weights, and the alert is told.
    b.down.store(true, Ordering::SeqCst);
    tokio::task::block_in_place(|| {
        wait_until("b/fast down in the feed", Duration::from_secs(30), || {
            state("b/fast") == "down"
        });
        wait_until("the hold's alert", Duration::from_secs(20), || {
            !hooks.lock().unwrap().is_empty()
        });
    });
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let metrics_show = |line: &str| {
        let metrics_url = metrics_url.clone();
        let line = line.to_owned();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = common::get_text(&metrics_url).await;
                if text.lines().any(|l| l == line) {
                    return;
                }
                assert!(Instant::now() < deadline, "/metrics lacks {line}:\n{text}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    metrics_show("sonde_sync_held_groups{sync=\"proxy\"} 1").await;
    let alert = hooks.lock().unwrap()[0].clone();
    assert_eq!(alert["event"], "trigger", "{alert}");
    assert_eq!(alert["cause"], "sync", "{alert}");
    assert_eq!(alert["group"], "chat", "{alert}");
    assert_eq!(alert["state"], "held", "{alert}");
    assert_eq!(alert["dedup_key"], "sonde/sync/proxy/chat", "{alert}");
    let all = admin.deployments().await;
    assert_eq!(all["b/fast"].1, Some(1.0), "held at its last weight");
    assert_eq!(all["a/fast"].1, Some(0.0));

    // a comes back: the group follows the feed again, and the hold's resolve is sent.
    a.down.store(false, Ordering::SeqCst);
    tokio::task::block_in_place(|| {
        wait_until("a/fast back on the proxy", Duration::from_secs(40), || {
            weight("a/fast").is_some_and(|w| w > 0.0)
        });
        wait_until("the hold's resolve", Duration::from_secs(20), || {
            hooks
                .lock()
                .unwrap()
                .iter()
                .any(|h| h["event"] == "resolve")
        });
    });
    let after = admin.deployments().await;
    assert_eq!(after["b/fast"].1, Some(0.0), "b/fast is down: weight 0");
    for id in ["by-hand-1", "by-hand-2"] {
        assert_eq!(after[id], manual_before[id], "{id} was left alone");
    }
    metrics_show("sonde_sync_held_groups{sync=\"proxy\"} 0").await;
    metrics_show("sonde_sync_changes_total{sync=\"proxy\",action=\"create\"} 2").await;
    metrics_show("sonde_sync_failures_total{sync=\"proxy\"} 0").await;
    let text = common::get_text(&metrics_url).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text exposition");
    let syncs = scrape
        .samples
        .iter()
        .find(|s| s.metric == "sonde_sync_runs_total" && s.labels.get("sync") == Some("proxy"))
        .expect("sonde_sync_runs_total");
    assert!(
        matches!(syncs.value, prometheus_parse::Value::Counter(n) if n >= 3.0),
        "{:?}",
        syncs.value
    );
    let changes = daemon.lines("gateway changed");
    assert!(changes.len() >= 4, "{}", daemon.text());
    assert!(changes.iter().all(|c| c["status"] == 200), "{changes:?}");
    let log = daemon.text();
    assert!(
        !log.contains(MASTER_KEY) && !log.contains("sk-sim"),
        "a key in the log"
    );
    let mut daemon = daemon;
    common::terminate(daemon.process()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_answering_garbage_or_cut_short_is_a_clear_error_not_a_hang() {
    use common::After;
    let store = scripted_store(
        "http://127.0.0.1:9/v1",
        &["fast"],
        &[common::Plays::Up(100.0)],
    );
    let head = |length: usize| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        )
        .into_bytes()
    };
    let html = b"<html>not a model list</html>".to_vec();
    let garbage = common::raw_server(vec![(0, head(html.len())), (0, html)], After::Close).await;
    let cut = common::raw_server(
        vec![(0, head(1000)), (0, b"{\"data\": [".to_vec())],
        After::Close,
    )
    .await;
    let stranger = common::greeting_server(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    for (addr, says) in [
        (garbage, "did not answer a LiteLLM model list"),
        (cut, "no whole answer from"),
        (stranger, "no whole answer from"),
    ] {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(["sync", "litellm", "--url", &format!("http://{addr}")])
            .args(["--key-env", "LITELLM_KEY"])
            .current_dir(store.path())
            .env("LITELLM_KEY", MASTER_KEY)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(text.contains(says), "{says:?} in {text}");
        assert!(!text.contains(MASTER_KEY), "{text}");
        assert!(started.elapsed() < Duration::from_secs(20), "{text}");
    }
}
