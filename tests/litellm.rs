//! sonde against the real LiteLLM proxy (PyPI `litellm[proxy]`, pinned in
//! `tests/litellm/setup.sh`), on 127.0.0.1 with the simulator behind it.
//!
//! Through: sonde probes the proxy and must measure the simulator's injected delays plus the
//! gateway's overhead, classify upstream failures as it does directly, honour the Retry-After
//! LiteLLM forwards as `llm_provider-retry-after`, tell LiteLLM's model alias from a real
//! substitution, and see through `mock_response` fake streaming.
//!
//! Into: the proxy loads `sonde publish --format litellm` as its config, and its routing
//! follows sonde's weights; a target sonde marks down gets no traffic.
//!
//! The proxy is installed by `.ci/run` (or by this test, through the same script) into a
//! cached virtualenv. `SONDE_SKIP_LITELLM=1` skips the suite, loudly; nothing else does.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sonde::config::Config;
use sonde::result::{Outcome, ResultRecord};

const MASTER_KEY: &str = "sk-sonde-litellm-master-0123456789";

const SCENARIO: &str = r#"
[models.paced]
ttft_ms = 200
token_ms = 20

[models.limited]
error_rate = 1.0
error = "rate_limited"
retry_after_s = 2

[models.broken]
error_rate = 1.0
error = "server_error"

[models.midfail]
token_ms = 2
fault = "mid_stream_error"
fault_after_tokens = 5

[models.swapped]
served_model = "other-model"

[models.fast]

[models.slow]

[models.dead]
"#;

/// The LiteLLM binary, or `None` when the suite is skipped on purpose.
fn litellm() -> Option<PathBuf> {
    common::installed::installed(&common::installed::Tool {
        name: "the LiteLLM proxy",
        skip_var: "SONDE_SKIP_LITELLM",
        path_var: "SONDE_LITELLM_BIN",
        setup: "tests/litellm/setup.sh",
        needs: "python3 with venv and PyPI",
        untested: "sonde's gateway export and its measurements through a real gateway are",
    })
}

/// A running proxy; killed when dropped.
struct Proxy(common::Spawned);

impl Proxy {
    /// Starts `litellm --config <config>` as the README says (master key from the
    /// environment) and waits for `/health/liveliness`.
    async fn start(bin: &Path, config: &Path, env: &[(&str, &str)]) -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["--config", &config.display().to_string()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("LITELLM_TELEMETRY", "False")
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_MASTER_KEY", MASTER_KEY)
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the LiteLLM proxy");
        let mut proxy = Proxy(common::Spawned { child, port, log });
        let url = format!("http://127.0.0.1:{port}/health/liveliness");
        let log = proxy.0.log.clone();
        let took =
            common::wait_until_up(&url, &mut proxy.0.child, Duration::from_secs(120), || {
                tail(&log)
            })
            .await;
        eprintln!("LiteLLM up in {:.1} s", took.as_secs_f64());
        proxy
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.0.port)
    }

    fn log_tail(&self) -> String {
        tail(&self.0.log)
    }
}

/// The last 40 lines of the log at `path`.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs the sonde binary in `dir` with the proxy's key in `LITELLM_KEY`.
async fn sonde(dir: &Path, args: Vec<String>, key: &str) -> Output {
    let (dir, key) = (dir.to_owned(), key.to_owned());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(&args)
            .current_dir(&dir)
            .env("LITELLM_KEY", key)
            .output()
            .expect("run sonde")
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn records(output: &Output) -> BTreeMap<String, ResultRecord> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<ResultRecord>(line).unwrap())
        .map(|r| (r.model.clone(), r))
        .collect()
}

fn deployment(name: &str, model: &str, api_base: &str) -> String {
    format!(
        "  - model_name: {name}\n    litellm_params:\n      model: openai/{model}\n      \
         api_base: {api_base}\n      api_key: sk-upstream-unused\n    model_info:\n      id: sim-{model}\n"
    )
}

fn ttft(summary: &Path) -> (f64, f64, f64) {
    let text = std::fs::read_to_string(summary.join("summary.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let latency = &json["targets"][0]["latency"];
    let figure = |metric: &str, q: &str| latency[metric][q].as_f64().unwrap();
    (
        figure("ttft_ms", "p50"),
        figure("ttft_ms", "max"),
        figure("itl_ms", "p50"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_litellm_sonde_measures_and_classifies_as_it_does_directly() {
    let Some(bin) = litellm() else { return };
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = sim.base_url();
    let mut yaml = String::from("model_list:\n");
    for model in ["paced", "limited", "broken", "midfail", "swapped"] {
        yaml.push_str(&deployment(model, model, &upstream));
    }
    let count: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
    yaml.push_str(&format!(
        "  - model_name: mocked\n    litellm_params:\n      model: openai/mocked\n      \
         mock_response: \"{}\"\n",
        count.join(" ")
    ));
    yaml.push_str("litellm_settings:\n  num_retries: 0\nrouter_settings:\n  num_retries: 0\n");
    let config = dir.path().join("litellm.yaml");
    std::fs::write(&config, yaml).unwrap();
    let proxy = Proxy::start(&bin, &config, &[]).await;

    let models = ["paced", "limited", "broken", "midfail", "swapped", "mocked"];
    let mut toml = format!(
        "[[providers]]\nname = \"gw\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key_env = \"LITELLM_KEY\"\nprobes = [\"stream\"]\n",
        proxy.base_url()
    );
    for model in models {
        toml.push_str(&format!("  [[providers.models]]\n  id = \"{model}\"\n"));
    }
    toml.push_str(&format!(
        "[[providers]]\nname = \"direct\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\
         probes = [\"stream\"]\n"
    ));
    for model in &models[..5] {
        toml.push_str(&format!("  [[providers.models]]\n  id = \"{model}\"\n"));
    }
    std::fs::write(dir.path().join("sonde.toml"), toml).unwrap();

    // Timing: the same 40 sequential runs, direct and through the gateway, after a few
    // through it: a fresh proxy's first request pays its lazy imports (~0.8 s).
    let warm = strings(&["probe", "--config", "sonde.toml", "--target", "gw/paced"]);
    for _ in 0..3 {
        sonde(dir.path(), warm.clone(), MASTER_KEY).await;
    }
    let bench = |target: &str, out: &str| {
        strings(&[
            "bench",
            "--config",
            "sonde.toml",
            "--target",
            target,
            "--concurrency",
            "1",
            "--requests",
            "40",
            "--out",
            out,
        ])
    };
    let direct = sonde(dir.path(), bench("direct/paced", "direct"), MASTER_KEY).await;
    assert!(direct.status.success(), "{direct:?}");
    let through = sonde(dir.path(), bench("gw/paced", "through"), MASTER_KEY).await;
    assert!(through.status.success(), "{through:?}");
    let (direct_p50, direct_max, direct_itl) = ttft(&dir.path().join("direct"));
    let (gw_p50, gw_max, gw_itl) = ttft(&dir.path().join("through"));
    eprintln!(
        "LiteLLM overhead on TTFT: p50 {:.1} ms, max {:.1} ms (direct p50 {direct_p50:.1}, \
         through {gw_p50:.1}); ITL p50 {direct_itl:.2} → {gw_itl:.2} ms",
        gw_p50 - direct_p50,
        gw_max - direct_max
    );
    assert!(
        (direct_p50 - 200.0).abs() < 15.0,
        "direct TTFT p50 {direct_p50}"
    );
    let added = gw_p50 - direct_p50;
    assert!(
        (0.0..100.0).contains(&added),
        "gateway adds {added} ms to TTFT p50"
    );
    assert!(gw_max - direct_max < 150.0, "gateway TTFT max {gw_max}");
    assert!(
        (gw_itl - 20.0).abs() < 5.0,
        "ITL through the gateway {gw_itl}"
    );

    // Classification: every model once, through and direct.
    let probe = |filter: &str| {
        strings(&[
            "probe",
            "--config",
            "sonde.toml",
            "--target",
            filter,
            "--format",
            "json",
        ])
    };
    let gw = records(&sonde(dir.path(), probe("gw"), MASTER_KEY).await);
    let direct = records(&sonde(dir.path(), probe("direct"), MASTER_KEY).await);
    for model in ["limited", "broken", "midfail"] {
        assert_eq!(
            gw[model].outcome, direct[model].outcome,
            "{model}: through {:?}, direct {:?}",
            gw[model], direct[model]
        );
    }
    assert_eq!(gw["limited"].outcome, Outcome::RateLimited);
    assert_eq!(gw["broken"].outcome, Outcome::ServerError);
    assert_eq!(gw["midfail"].outcome, Outcome::ServerError);
    assert_eq!(
        gw["limited"].retry_after_s,
        Some(2.0),
        "LiteLLM forwards Retry-After only as llm_provider-retry-after"
    );
    // A real substitution directly; through LiteLLM the answer is named by the alias.
    assert!(direct["swapped"].model_substituted);
    let swapped = &gw["swapped"];
    assert_eq!(swapped.outcome, Outcome::Ok, "{swapped:?}");
    assert_eq!(swapped.served_model.as_deref(), Some("swapped"));
    assert!(
        !swapped.model_substituted && swapped.gateway_alias,
        "{swapped:?}"
    );
    assert_eq!(swapped.upstream.as_deref(), Some("openai/swapped"));
    assert!(!direct["paced"].gateway_alias);
    assert!(gw["paced"].streamed && gw["paced"].gateway_alias);
    // mock_response: a finished answer relayed in pieces is not streaming.
    let mocked = &gw["mocked"];
    assert_eq!(mocked.outcome, Outcome::Ok, "{mocked:?}");
    assert!(mocked.chunks > 5, "{mocked:?}");
    assert!(!mocked.streamed, "{mocked:?}");

    // The daemon honours the Retry-After LiteLLM forwards: a 1 s schedule on the 429ing
    // model, and no two runs start less than the 2 s it asks apart.
    let daemon_toml = format!(
        "[store]\npath = \"daemon.db\"\n[schedules]\nstream = \"every 1s\"\n\
         [[providers]]\nname = \"gw\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key_env = \"LITELLM_KEY\"\nprobes = [\"stream\"]\nrpm = 600\nmax_concurrency = 1\n\
         [[providers.models]]\nid = \"limited\"\n",
        proxy.base_url()
    );
    std::fs::write(dir.path().join("daemon.toml"), daemon_toml).unwrap();
    let daemon = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["run", "--config", "daemon.toml"])
        .current_dir(dir.path())
        .env("LITELLM_KEY", MASTER_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(common::terminate(daemon).await.status.success());
    let export = sonde(
        dir.path(),
        strings(&["export", "--config", "daemon.toml", "--format", "json"]),
        MASTER_KEY,
    )
    .await;
    let mut starts: Vec<f64> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|line| serde_json::from_str::<ResultRecord>(line).unwrap())
        .map(|r| {
            assert_eq!(r.outcome, Outcome::RateLimited, "{r:?}");
            assert_eq!(r.retry_after_s, Some(2.0), "{r:?}");
            r.ts.ms() as f64 + r.queue_lag_ms
        })
        .collect();
    starts.sort_by(f64::total_cmp);
    let gaps: Vec<String> = starts
        .windows(2)
        .map(|pair| format!("{:.0}", pair[1] - pair[0]))
        .collect();
    eprintln!(
        "daemon behind LiteLLM's 429s: {} runs in 8 s, {gaps:?} ms apart",
        starts.len()
    );
    assert!(starts.len() >= 2, "{starts:?}");
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= 1_900.0,
            "runs {:.0} ms apart after a 2 s Retry-After: {starts:?}",
            pair[1] - pair[0]
        );
    }

    // A wrong key is an auth failure, as from any provider (LiteLLM without a database says
    // 400 "No connected db.": it cannot look up any key but its master key).
    let wrong = records(&sonde(dir.path(), probe("gw/paced"), "sk-wrong").await);
    assert_eq!(
        wrong["paced"].outcome,
        Outcome::Auth,
        "{:?}",
        wrong["paced"]
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litellm_routes_by_the_weights_sonde_exports_and_never_to_a_down_target() {
    let Some(bin) = litellm() else { return };
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key_env = \"SIM_KEY\"\nprobes = [\"stream\"]\n\
         [[providers.models]]\nid = \"fast\"\ngroup = \"chat\"\n\
         [[providers.models]]\nid = \"slow\"\ngroup = \"chat\"\n\
         [[providers.models]]\nid = \"dead\"\ngroup = \"chat\"\n\
         [[providers.models]]\nid = \"swap\"\ngroup = \"chat\"\n\
         [[providers]]\nname = \"gem\"\nkind = \"gemini\"\nbase_url = \"{}\"\n\
         api_key_env = \"SIM_KEY\"\nprobes = [\"stream\"]\n\
         [[providers.models]]\nid = \"fast\"\ngroup = \"flash\"\n",
        sim.base_url(),
        sim.gemini_base_url()
    );
    let config_path = dir.path().join("sonde.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let config = Config::parse(&config_path, &toml).unwrap();
    // Scripted measurements: fast and slow always up, TTFT 100 vs 900 ms, same price — the
    // feed's weights 0.9 / 0.1; dead failing every run; swap up and fastest of all, but
    // answering with another model (weight 0); the Gemini target alone in its group.
    use common::Plays::{Down, Substitutes, Up};
    common::play(
        &config,
        &[Up(100.0), Up(900.0), Down, Substitutes, Up(100.0)],
    );

    // The README's reload workflow, as written there.
    let readme = std::fs::read_to_string("README.md").unwrap();
    for line in [
        "sonde publish --config sonde.toml --format litellm --out litellm.yaml.new",
        "mv litellm.yaml.new litellm.yaml",
        "LITELLM_MASTER_KEY=sk-your-master-key litellm --config litellm.yaml",
    ] {
        assert!(readme.contains(line), "the README no longer says: {line}");
    }
    let export = sonde(
        dir.path(),
        strings(&[
            "publish",
            "--config",
            "sonde.toml",
            "--format",
            "litellm",
            "--out",
            "litellm.yaml.new",
        ]),
        "",
    )
    .await;
    assert!(export.status.success(), "{export:?}");
    std::fs::rename(
        dir.path().join("litellm.yaml.new"),
        dir.path().join("litellm.yaml"),
    )
    .unwrap();
    let yaml = std::fs::read_to_string(dir.path().join("litellm.yaml")).unwrap();
    assert!(
        !yaml.contains("\"sim/dead\""),
        "a down target is left out:\n{yaml}"
    );
    assert!(
        !yaml.contains("\"sim/swap\""),
        "a substituting target is left out:\n{yaml}"
    );
    let proxy = Proxy::start(
        &bin,
        &dir.path().join("litellm.yaml"),
        &[("SIM_KEY", "sk-sim")],
    )
    .await;

    let http = common::http();
    let served = common::litellm_split(&proxy.base_url(), MASTER_KEY, "chat", 200).await;
    eprintln!("LiteLLM split of 200 requests by sonde's weights: {served:?}");
    let fast = served.get("sim/fast").copied().unwrap_or(0);
    let slow = served.get("sim/slow").copied().unwrap_or(0);
    assert_eq!(fast + slow, 200, "{served:?}");
    // Binomial(200, 0.9): mean 180, σ 4.2; ±4σ.
    assert!((163..=197).contains(&fast), "{served:?}");
    assert_eq!(served.get("sim/dead"), None, "{served:?}");
    let to_dead = sim.requests().iter().filter(|r| r.model == "dead").count();
    assert_eq!(to_dead, 0, "the simulator saw requests for the down target");
    let to_swap = sim.requests().iter().filter(|r| r.model == "swap").count();
    assert_eq!(
        to_swap, 0,
        "the simulator saw requests for the substituting target"
    );

    // A Gemini provider on its own endpoint: the export keeps its api_base, so the proxy
    // reaches the simulator's Gemini route, not Google's.
    let body = serde_json::json!({
        "model": "flash",
        "messages": [{"role": "user", "content": "Reply with the single word: pong"}],
    })
    .to_string();
    let response = http
        .post(format!("{}/chat/completions", proxy.base_url()))
        .bearer_auth(MASTER_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "{status}: {text}\n{}",
        proxy.log_tail()
    );
    assert!(text.contains("pong"), "{text}");
    let gemini = sim
        .requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/v1beta/models/fast:"))
        .count();
    assert_eq!(gemini, 1, "the Gemini deployment went to the simulator");
}
