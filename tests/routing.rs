//! What sonde measures governs what it publishes: a substituting gateway, a fake streamer and
//! a target that refused a capability its group requires change the feed's weights, the
//! pages, `/metrics` and the gateway exports; the feed a poller gets is fresh; the LiteLLM
//! export parses as YAML 1.2 whatever ids the config accepts.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use sonde::config::Config;
use sonde::publish::windows::{locations, summarize};
use sonde::publish::{self, Snapshot, feed, gateway};
use sonde::result::{Outcome, ResultRecord};
use sonde::server::Site;
use sonde::store::Store;
use sonde::store::writer::import;
use sonde::units::now_ms;

/// Four providers of one route group that requires tools: `honest`, `swapper` (answers with
/// another model), `buffer` (fake streaming) and `notools` (refused the tools probe).
fn config_text(dir: &Path, weights: &str) -> String {
    let mut text = format!(
        "[store]\npath = \"{}\"\n\n[publish]\nwindow = \"1h\"\n{weights}\n\n\
         [groups.llama]\nrequire = [\"tools\"]\n\n",
        dir.join("sonde.db").display()
    );
    for name in ["honest", "swapper", "buffer", "notools"] {
        text.push_str(&format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             [[providers.models]]\nid = \"llama-70b\"\ngroup = \"llama\"\ninput_price = 1.0\n\
             output_price = 1.0\nprobes = [\"stream\", \"tools\"]\n\n"
        ));
    }
    text
}

/// Twenty stream runs of each target in the last 20 minutes, as each behaves, and one tools
/// run each (refused by `notools`).
fn history(config: &Config) -> Vec<ResultRecord> {
    let now = now_ms();
    let tools = config.probes.get("tools").unwrap();
    let mut records = Vec::new();
    for (index, target) in config.targets.iter().enumerate() {
        for i in 0..20 {
            let mut r = common::scripted(
                config,
                index,
                now - 1_200_000 + i * 60_000,
                Outcome::Ok,
                200.0,
            );
            r.served_model = Some("llama-70b".into());
            match target.provider.name.as_str() {
                "swapper" => {
                    r.served_model = Some("llama-8b".into());
                    r.model_substituted = true;
                    r.upstream = Some("CheapHost".into());
                }
                "buffer" => {
                    r.streamed = false;
                    r.cap_streaming = Some(false);
                    r.tokens_per_s = None;
                }
                _ => {}
            }
            records.push(r);
        }
        let scheduled = sonde::runner::Scheduled {
            at: std::time::Instant::now(),
            wall: UNIX_EPOCH + Duration::from_millis((now - 30_000) as u64),
        };
        let refused = target.provider.name == "notools";
        let mut r = sonde::runner::not_sent(
            target,
            tools,
            scheduled,
            if refused {
                Outcome::ClientError
            } else {
                Outcome::Ok
            },
            String::new(),
        );
        r.error = refused.then(|| "tools are not supported".to_owned());
        r.cap_tools = Some(!refused);
        records.push(r);
    }
    records
}

fn scripted(dir: &Path, weights: &str) -> Config {
    let path = dir.join("sonde.toml");
    let config = Config::parse(&path, &config_text(dir, weights)).unwrap();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, history(&config)).unwrap();
    config
}

fn feed_of(config: &Config) -> feed::Feed {
    let store = Store::open_read_only(&config.store).unwrap();
    let now = now_ms();
    feed::build(
        config,
        &summarize(&store, config, now).unwrap(),
        &locations(&store, now).unwrap(),
        now,
    )
}

fn target<'a>(feed: &'a feed::Feed, id: &str) -> &'a feed::FeedTarget {
    feed.targets.iter().find(|t| t.id == id).unwrap()
}

#[test]
fn substitution_fake_streaming_and_refused_requirements_change_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted(dir.path(), "");
    let feed = feed_of(&config);
    let honest = target(&feed, "honest/llama-70b");
    let swapper = target(&feed, "swapper/llama-70b");
    let buffer = target(&feed, "buffer/llama-70b");
    let notools = target(&feed, "notools/llama-70b");

    assert_eq!(swapper.weight, 0.0);
    assert!(!swapper.routable);
    assert!(swapper.model_substituted);
    assert_eq!(swapper.substituted_rate, Some(1.0));
    assert_eq!(swapper.served_model.as_deref(), Some("llama-8b"));
    assert_eq!(swapper.upstream.as_deref(), Some("CheapHost"));
    assert!(swapper.notes[0].contains("answered as llama-8b in 20 of 20 answers"));

    assert_eq!(notools.weight, 0.0);
    assert!(notools.notes.iter().any(|n| n.contains("refused tools")));

    // Equal in everything else, the fake streamer gets a tenth of the honest one's score.
    assert_eq!(buffer.streamed_rate, Some(0.0));
    assert!(buffer.routable);
    assert!(
        (buffer.weight - 0.1 / 1.1).abs() < 1e-9,
        "{}",
        buffer.weight
    );
    assert!(
        (honest.weight - 1.0 / 1.1).abs() < 1e-9,
        "{}",
        honest.weight
    );
    assert_eq!((honest.rank, buffer.rank), (1, 2));
    assert_eq!(honest.streamed_rate, Some(1.0));
    assert!(!honest.model_substituted);
    assert_eq!(feed.groups["llama"].routable, 2);
    assert_eq!(feed.groups["llama"].require, ["tools"]);

    // The exports follow the weights.
    let yaml = gateway::litellm(&config, &feed);
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).unwrap();
    let ids: Vec<&str> = docs[0]["model_list"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|d| d["model_info"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["honest/llama-70b", "buffer/llama-70b"]);
    let openrouter = gateway::openrouter(&config, &feed, false);
    let provider = &openrouter["models"]["llama"]["provider"];
    assert_eq!(provider["order"], serde_json::json!(["honest", "buffer"]));
    assert_eq!(
        provider["ignore"],
        serde_json::json!(["notools", "swapper"])
    );

    // The pages say it.
    let store = Store::open_read_only(&config.store).unwrap();
    let snapshot = Snapshot::load(&config, &store, now_ms()).unwrap();
    let files = publish::build(&config, &snapshot).unwrap();
    let index = String::from_utf8(files["index.html"].clone()).unwrap();
    assert!(index.contains("substitutes model"), "{index}");
    assert!(index.contains("fake streaming"));
    assert!(index.contains("answers as llama-8b via CheapHost"));
    assert!(index.contains("not routed"));
    let page = files
        .iter()
        .find(|(name, _)| name.starts_with("t/swapper"))
        .map(|(_, bytes)| String::from_utf8(bytes.clone()).unwrap())
        .unwrap();
    assert!(page.contains("Routing: answered as llama-8b"), "{page}");
    assert!(
        page.contains("≠ llama-8b"),
        "the run table names the served model"
    );
    let metrics = publish::metrics::render(&snapshot.stats, &feed, None);
    assert!(
        metrics.contains(
            "sonde_target_model_substituted{target=\"swapper/llama-70b\",window=\"1h\"} 1"
        )
    );
    assert!(
        metrics.contains("sonde_target_routable{target=\"notools/llama-70b\",window=\"1h\"} 0")
    );
    assert!(
        metrics
            .contains("sonde_target_streamed_ratio{target=\"buffer/llama-70b\",window=\"1h\"} 0")
    );
}

#[test]
fn the_factors_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted(
        dir.path(),
        "weights = { substitution = 0.5, streaming = 0 }",
    );
    let feed = feed_of(&config);
    let honest = target(&feed, "honest/llama-70b");
    let swapper = target(&feed, "swapper/llama-70b");
    let buffer = target(&feed, "buffer/llama-70b");
    assert!(swapper.routable);
    assert!(
        (swapper.weight - 0.5 / 2.5).abs() < 1e-9,
        "{}",
        swapper.weight
    );
    assert!(
        (buffer.weight - honest.weight).abs() < 1e-9,
        "no streaming penalty"
    );
    assert_eq!(target(&feed, "notools/llama-70b").weight, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_after_an_idle_gap_sees_a_state_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted(dir.path(), "");
    let site = Site::new(Arc::new(config.clone()));
    let (addr, shutdown) = common::serve_site(site).await;
    let url = format!("http://{addr}/feed.json");
    let http = common::http();
    let state = |feed: &serde_json::Value| {
        feed["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == "honest/llama-70b")
            .unwrap()["state"]
            .clone()
    };
    let before = common::get_json(&http, &url).await;
    assert_eq!(state(&before), "healthy");
    // Three failures in a row: the honest target goes down.
    let now = now_ms();
    let failures = (0..3)
        .map(|i| {
            common::scripted(
                &config,
                0,
                now - 3_000 + i * 1_000,
                Outcome::ServerError,
                0.0,
            )
        })
        .collect::<Vec<_>>();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, failures).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = common::get_json(&http, &url).await;
    assert_eq!(state(&after), "down", "the first poll after a gap is fresh");
    let generated = chrono::DateTime::parse_from_rfc3339(after["generated_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(now_ms() - generated < 2_000, "generated_at is honest");
    shutdown.cancel();
}

#[test]
fn a_custom_gemini_endpoint_keeps_its_api_base_in_the_litellm_export() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = \"{}\"\n\
         [[providers]]\nname = \"google\"\nkind = \"gemini\"\n\
         base_url = \"https://generativelanguage.googleapis.com/v1beta\"\napi_key_env = \"G\"\n\
         [[providers.models]]\nid = \"gemini-2.5-flash\"\ngroup = \"flash\"\n\
         [[providers]]\nname = \"proxy\"\nkind = \"gemini\"\n\
         base_url = \"http://gemini-proxy.internal:8080/v1beta\"\napi_key_env = \"G\"\n\
         [[providers.models]]\nid = \"gemini-2.5-flash\"\ngroup = \"flash\"\n",
        dir.path().join("s.db").display()
    );
    let config = Config::parse(&dir.path().join("sonde.toml"), &text).unwrap();
    Store::open(&config.store, &config.prober.location).unwrap();
    let yaml = gateway::litellm(&config, &feed_of(&config));
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).unwrap();
    let list = docs[0]["model_list"].as_vec().unwrap();
    let base = |id: &str| {
        list.iter()
            .find(|d| d["model_info"]["id"].as_str() == Some(id))
            .unwrap()["litellm_params"]["api_base"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(
        base("google/gemini-2.5-flash"),
        None,
        "Google's own endpoint"
    );
    assert_eq!(
        base("proxy/gemini-2.5-flash").as_deref(),
        Some("http://gemini-proxy.internal:8080/v1beta")
    );
}

#[test]
fn every_character_survives_a_yaml_1_2_round_trip() {
    let mut text = String::new();
    for c in (0u32..0x3100).chain([0xd7ff, 0xe000, 0xfeff, 0xfffe, 0xffff, 0x1f600, 0x10ffff]) {
        if let Some(c) = char::from_u32(c) {
            text.push(c);
        }
    }
    let yaml = format!("key: {}\n", gateway::yaml_quoted(&text));
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).expect("valid YAML 1.2");
    assert_eq!(docs[0]["key"].as_str(), Some(text.as_str()));
    // libyaml (what PyYAML, and so LiteLLM, reads with) refuses unprintable characters
    // anywhere in a stream: the escapes must keep every one of them out.
    let libyaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("libyaml reads it");
    assert_eq!(libyaml["key"].as_str(), Some(text.as_str()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For every id and group the config accepts, the LiteLLM export is YAML 1.2 that names
    /// them exactly.
    #[test]
    fn the_litellm_export_parses_for_every_id_the_config_accepts(
        id in "\\PC{1,12}|[\\x00-\\x7f\\u{80}-\\u{9f}\\u{2028}\\u{feff}\"'\\\\:#]{1,12}",
        group in "\\PC{1,12}|[\\x00-\\x7f\\u{80}-\\u{9f}\\u{2028}\\u{feff}\"'\\\\:#]{1,12}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[store]\npath = \"{}\"\n[[providers]]\nname = \"p\"\nkind = \"openai\"\n\
             base_url = \"http://127.0.0.1:9/v1\"\n[[providers.models]]\nid = {}\ngroup = {}\n",
            dir.path().join("s.db").display(),
            toml::Value::String(id.clone()),
            toml::Value::String(group.clone()),
        );
        let Ok(config) = Config::parse(&dir.path().join("sonde.toml"), &text) else {
            return Ok(());
        };
        Store::open(&config.store, &config.prober.location).unwrap();
        let yaml = gateway::litellm(&config, &feed_of(&config));
        let docs = yaml_rust2::YamlLoader::load_from_str(&yaml)
            .map_err(|err| TestCaseError::fail(format!("{err}\n{yaml}")))?;
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml)
            .map_err(|err| TestCaseError::fail(format!("libyaml: {err}\n{yaml}")))?;
        let deployment = &docs[0]["model_list"][0];
        prop_assert_eq!(deployment["model_name"].as_str(), Some(group.as_str()));
        let model = format!("openai/{id}");
        prop_assert_eq!(deployment["litellm_params"]["model"].as_str(), Some(model.as_str()));
        let target = format!("p/{id}");
        prop_assert_eq!(deployment["model_info"]["id"].as_str(), Some(target.as_str()));
    }
}

#[test]
fn a_wall_display_refresh_is_asked_for_only_when_configured() {
    for (refresh, want) in [("", None), ("refresh = \"90s\"", Some("90"))] {
        let dir = tempfile::tempdir().unwrap();
        let config = scripted(dir.path(), refresh);
        let store = Store::open_read_only(&config.store).unwrap();
        let snapshot = Snapshot::load(&config, &store, now_ms()).unwrap();
        let files = publish::build(&config, &snapshot).unwrap();
        for (name, bytes) in &files {
            if !name.ends_with(".html") {
                continue;
            }
            let html = String::from_utf8(bytes.clone()).unwrap();
            let asked = html.contains("http-equiv=\"refresh\"");
            assert_eq!(asked, want.is_some(), "{name}");
            if let Some(seconds) = want {
                assert!(html.contains(&format!("content=\"{seconds}\"")), "{name}");
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let err = Config::parse(
        Path::new("sonde.toml"),
        &config_text(dir.path(), "refresh = \"1s\""),
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("publish.refresh"), "{err}");
}

#[test]
fn the_openrouter_export_speaks_openrouters_names_and_can_insist_on_them() {
    let dir = tempfile::tempdir().unwrap();
    // OpenRouter's names for each provider: one slug for the group, one upstream each, and
    // `swapper` without a mapping (its sonde names stand).
    let names = [
        ("honest", Some("DeepInfra")),
        ("swapper", None),
        ("buffer", Some("Together")),
        ("notools", Some("Lambda")),
    ];
    let mut text = config_text(dir.path(), "");
    for (provider, upstream) in names {
        let Some(upstream) = upstream else { continue };
        // The fake streamer's host serves OpenRouter's free variant of the model.
        let slug = if provider == "buffer" {
            "meta-llama/llama-3.3-70b-instruct:free"
        } else {
            "meta-llama/llama-3.3-70b-instruct"
        };
        let block = format!("name = \"{provider}\"\n");
        let at = text.find(&block).unwrap();
        let group = at + text[at..].find("group = \"llama\"\n").unwrap();
        text.insert_str(
            group,
            &format!("openrouter = {{ model = \"{slug}\", provider = \"{upstream}\" }}\n"),
        );
    }
    let path = dir.path().join("sonde.toml");
    let config = Config::parse(&path, &text).unwrap();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, history(&config)).unwrap();
    let feed = feed_of(&config);

    let export = gateway::openrouter(&config, &feed, false);
    let llama = &export["models"]["llama"];
    // Two slugs routed in the group: OpenRouter's `models`, best first; swapper's own model
    // id is not routed, so not named.
    assert_eq!(
        llama["models"],
        serde_json::json!([
            "meta-llama/llama-3.3-70b-instruct",
            "meta-llama/llama-3.3-70b-instruct:free"
        ])
    );
    assert!(llama.get("model").is_none());
    assert_eq!(
        llama["provider"],
        serde_json::json!({
            "order": ["DeepInfra", "Together"],
            "ignore": ["Lambda", "swapper"],
            "allow_fallbacks": true,
        })
    );
    let only = gateway::openrouter(&config, &feed, true);
    assert_eq!(
        only["models"]["llama"]["provider"],
        serde_json::json!({
            "order": ["DeepInfra", "Together"],
            "only": ["DeepInfra", "Together"],
            "ignore": ["Lambda", "swapper"],
            "allow_fallbacks": false,
        })
    );

    // A bad name is a config error with its file, line and key.
    let bad = text.replacen("provider = \"DeepInfra\"", "provider = \"\"", 1);
    let err = Config::parse(&path, &bad).unwrap_err().to_string();
    assert!(
        err.contains("providers[0].models[0].openrouter.provider"),
        "{err}"
    );
    assert!(err.contains("sonde.toml:"), "{err}");
}

#[test]
fn the_envoy_export_is_one_weighted_route_per_group_with_down_targets_as_last_resort() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "[store]\npath = \"{}\"\n",
        dir.path().join("sonde.db").display()
    );
    for (provider, model, group) in [
        ("Fast_Host", "llama-70b", "llama"),
        ("slow", "llama-70b", "llama"),
        ("dead", "llama-70b", "llama"),
        ("swap", "llama-70b", "llama"),
        ("gone", "qwen", "qwen"),
    ] {
        text.push_str(&format!(
            "[[providers]]\nname = \"{provider}\"\nkind = \"openai\"\n\
             base_url = \"http://127.0.0.1:9/v1\"\nprobes = [\"stream\"]\n\
             [[providers.models]]\nid = \"{model}\"\ngroup = \"{group}\"\n"
        ));
    }
    let path = dir.path().join("sonde.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&path, &text).unwrap();
    use common::Plays::{Down, Substitutes, Up};
    common::play(&config, &[Up(100.0), Up(900.0), Down, Substitutes, Down]);
    let feed = feed_of(&config);

    let yaml = gateway::envoy(&config, &feed, "my-gateway");
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).unwrap();
    // The qwen group has only a down target, so nothing at priority 0: its route still
    // exists, with the down target as the last resort.
    assert_eq!(docs.len(), 2, "{yaml}");
    let rfc1123 = |name: &str| {
        !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    };
    let llama = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("sonde-llama"))
        .unwrap_or_else(|| panic!("{yaml}"));
    assert_eq!(
        llama["apiVersion"].as_str(),
        Some("aigateway.envoyproxy.io/v1alpha1")
    );
    assert_eq!(llama["kind"].as_str(), Some("AIGatewayRoute"));
    let parent = &llama["spec"]["parentRefs"][0];
    assert_eq!(parent["name"].as_str(), Some("my-gateway"));
    assert_eq!(parent["kind"].as_str(), Some("Gateway"));
    let rule = &llama["spec"]["rules"][0];
    let header = &rule["matches"][0]["headers"][0];
    assert_eq!(header["name"].as_str(), Some("x-ai-eg-model"));
    assert_eq!(header["value"].as_str(), Some("llama"));
    assert_eq!(header["type"].as_str(), Some("Exact"));
    let refs: Vec<(String, i64, i64, String)> = rule["backendRefs"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["weight"].as_i64().unwrap(),
                r["priority"].as_i64().unwrap(),
                r["modelNameOverride"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (name, weight, priority, model) in &refs {
        assert!(rfc1123(name), "{name}");
        assert!(*weight >= 0 && *priority >= 0, "{refs:?}");
        assert_eq!(model, "llama-70b");
    }
    let names: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        ["fast-host-llama-70b", "slow-llama-70b", "dead-llama-70b"],
        "the substituting target is left out: {refs:?}"
    );
    let fast = target(&feed, "Fast_Host/llama-70b").weight;
    assert_eq!(refs[0].1, (fast * 1000.0).round() as i64);
    assert_eq!(refs[0].1 + refs[1].1, 1000, "{refs:?}");
    assert_eq!((refs[0].2, refs[1].2), (0, 0));
    assert_eq!((refs[2].1, refs[2].2), (1, 1), "down: a last resort");
    let qwen = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("sonde-qwen"))
        .unwrap();
    assert_eq!(
        qwen["spec"]["rules"][0]["backendRefs"][0]["priority"].as_i64(),
        Some(1)
    );

    // The file is sonde's to replace, and nothing else is.
    let out = dir.path().join("routes.yaml");
    for _ in 0..2 {
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(["publish", "--config"])
            .arg(&path)
            .args([
                "--format",
                "envoy",
                "--envoy-gateway",
                "my-gateway",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{run:?}");
    }
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("AIGatewayRoute")
    );
    let mine = dir.path().join("mine.yaml");
    std::fs::write(&mine, "kind: Mine\n").unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["publish", "--config"])
        .arg(&path)
        .args(["--format", "envoy", "--out"])
        .arg(&mine)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "kind: Mine\n");
}
