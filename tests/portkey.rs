//! sonde's Portkey export through Portkey's real open-source gateway (npm
//! `@portkey-ai/gateway`, pinned in `tests/portkey/setup.sh`), on 127.0.0.1 with the
//! simulator behind it: the gateway accepts each group's config as it is exported (its key
//! variables filled in, as the README says), its load balancing follows sonde's weights, a
//! down or substituting target gets nothing, and the Anthropic and Gemini targets are reached
//! through the hosts the export gives.
//!
//! The gateway is installed by `.ci/run` (or by this test, through the same script) into a
//! cached folder. `SONDE_SKIP_PORTKEY=1` skips the suite, loudly; nothing else does.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sonde::config::Config;

const SCENARIO: &str = r#"
[models.fast]

[models.slow]

[models.dead]

[models.swap]
"#;

/// The gateway's server script, or `None` when the suite is skipped on purpose.
fn portkey() -> Option<PathBuf> {
    common::installed::installed(&common::installed::Tool {
        name: "Portkey's gateway",
        skip_var: "SONDE_SKIP_PORTKEY",
        path_var: "SONDE_PORTKEY_SERVER",
        setup: "tests/portkey/setup.sh",
        needs: "node, npm and the npm registry",
        untested: "sonde's Portkey export against the real gateway is",
    })
}

/// A running gateway; killed when dropped.
struct Gateway {
    child: Child,
    port: u16,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `node SERVER --port=N` and waits until it answers.
    async fn start(server: &Path) -> Gateway {
        let port = common::free_port();
        let child = Command::new("node")
            .arg(server)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Portkey's gateway (node)");
        let mut gateway = Gateway { child, port };
        let started = Instant::now();
        let http = common::http();
        while http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_err()
        {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("Portkey's gateway exited ({status})");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Portkey's gateway did not start within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        gateway
    }

    /// A chat completion for `config` (one group's config from the export); the answer's
    /// status and body.
    async fn chat(&self, config: &Value) -> (u16, Value) {
        let response = common::http()
            .post(format!(
                "http://127.0.0.1:{}/v1/chat/completions",
                self.port
            ))
            .header("content-type", "application/json")
            .header("x-portkey-config", config.to_string())
            .body(
                serde_json::json!({
                    "model": "any",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Reply with the single word: pong"}],
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// `text` with every `${VAR}` of `vars` filled in, as `envsubst` does.
fn envsubst(text: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(text.to_owned(), |text, (var, value)| {
        text.replace(&format!("${{{var}}}"), value)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portkey_balances_by_the_weights_sonde_exports_and_never_to_a_down_target() {
    let Some(server) = portkey() else { return };
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{base}\"\n\
         api_key_env = \"SIM_KEY\"\nprobes = [\"stream\"]\n\
         [[providers.models]]\nid = \"fast\"\ngroup = \"chat\"\n\
         [[providers.models]]\nid = \"slow\"\ngroup = \"chat\"\n\
         [[providers.models]]\nid = \"dead\"\ngroup = \"chat\"\n\
         [[providers.models]]\nid = \"swap\"\ngroup = \"chat\"\n\
         [[providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{base}\"\n\
         api_key_env = \"SIM_KEY\"\nprobes = [\"stream\"]\n\
         [[providers.models]]\nid = \"fast\"\ngroup = \"sonnet\"\n\
         [[providers]]\nname = \"gem\"\nkind = \"gemini\"\nbase_url = \"{gemini}\"\n\
         probes = [\"stream\"]\n\
         [[providers.models]]\nid = \"fast\"\ngroup = \"flash\"\n\
         [[providers.models]]\nid = \"dead\"\ngroup = \"gone\"\n",
        base = sim.base_url(),
        gemini = sim.gemini_base_url()
    );
    let config_path = dir.path().join("sonde.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let config = Config::parse(&config_path, &toml).unwrap();
    // Scripted measurements: fast and slow always up, TTFT 100 vs 900 ms, same price — the
    // feed's weights 0.9 / 0.1; dead failing every run; swap up and fastest of all, but
    // answering with another model (weight 0); the Anthropic and Gemini targets alone in
    // their groups, and a group whose only target is down.
    use common::Plays::{Down, Substitutes, Up};
    common::play(
        &config,
        &[
            Up(100.0),
            Up(900.0),
            Down,
            Substitutes,
            Up(100.0),
            Up(100.0),
            Down,
        ],
    );

    // The README's commands, as written there.
    let readme = std::fs::read_to_string("README.md").unwrap();
    for line in [
        "sonde publish --config sonde.toml --format portkey --out portkey.json",
        "jq '.configs.chat' portkey.json | envsubst > chat.json",
    ] {
        assert!(readme.contains(line), "the README no longer says: {line}");
    }
    let export = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["publish", "--config", "sonde.toml", "--format", "portkey"])
        .args(["--out", "portkey.json"])
        .current_dir(dir.path())
        .env("SIM_KEY", "sk-sim-secret-0123456789")
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let text = std::fs::read_to_string(dir.path().join("portkey.json")).unwrap();
    assert!(
        !text.contains("sk-sim-secret"),
        "a key in the export:\n{text}"
    );
    assert!(text.contains("${SIM_KEY}"), "{text}");
    let exported: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(exported["generator"], "sonde");
    assert_eq!(exported["unroutable"], serde_json::json!(["gone"]));
    let chat = &exported["configs"]["chat"];
    assert_eq!(chat["strategy"]["mode"], "loadbalance");
    let models: Vec<&str> = chat["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["override_params"]["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["fast", "slow"], "{chat}");
    let weights: f64 = chat["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["weight"].as_f64().unwrap())
        .sum();
    assert!((weights - 1.0).abs() < 1e-5, "{chat}");
    // Google's API takes no key here: Portkey still wants one, and gets a placeholder.
    assert_eq!(
        exported["configs"]["flash"]["targets"][0]["api_key"],
        "none"
    );

    let filled: Value =
        serde_json::from_str(&envsubst(&text, &[("SIM_KEY", "sk-sim-secret-0123456789")])).unwrap();
    let gateway = Gateway::start(&server).await;
    let mut served: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..200 {
        let (status, body) = gateway.chat(&filled["configs"]["chat"]).await;
        assert_eq!(status, 200, "{body}");
        *served
            .entry(body["model"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    eprintln!("Portkey's split of 200 requests by sonde's weights: {served:?}");
    let fast = served.get("fast").copied().unwrap_or(0);
    let slow = served.get("slow").copied().unwrap_or(0);
    assert_eq!(fast + slow, 200, "{served:?}");
    // Binomial(200, 0.9): mean 180, σ 4.2; ±4σ.
    assert!((163..=197).contains(&fast), "{served:?}");
    for model in ["dead", "swap"] {
        let sent = sim.requests().iter().filter(|r| r.model == model).count();
        assert_eq!(sent, 0, "the simulator saw requests for {model}");
    }

    // The other wire formats, through the hosts the export gives.
    let before = sim.requests().len();
    for group in ["sonnet", "flash"] {
        let (status, body) = gateway.chat(&filled["configs"][group]).await;
        assert_eq!(status, 200, "{group}: {body}");
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{group}: {body}"
        );
    }
    let uris: Vec<String> = sim.requests()[before..]
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    assert!(uris[0].ends_with("/v1/messages"), "{uris:?}");
    assert!(uris[1].starts_with("/v1beta/models/fast:"), "{uris:?}");
}
