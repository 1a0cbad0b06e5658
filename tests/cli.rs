//! The `sonde` binary as a user runs it: `probe` in every format against a simulator on
//! 127.0.0.1, `check`, exit codes, and the API key absent from every byte it prints.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// A key nobody could mistake: its head and tail are both distinctive.
const KEY: &str = "sk-sonde-test-HEADPART0123456789-tailpart-abcdefghijklmnop";

const SCENARIO: &str = r#"
[models.good]
token_ms = 3
api_key = "sk-sonde-test-HEADPART0123456789-tailpart-abcdefghijklmnop"

[models.wrong-key]
api_key = "a-different-key"

[models.echo]
error_rate = 1.0
error = "auth"
"#;

fn sonde(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(args)
        .current_dir(dir)
        .env("SONDE_TEST_KEY", KEY)
        .env("RUST_LOG", "trace")
        .output()
        .expect("run sonde")
}

async fn sonde_async(args: Vec<&'static str>, dir: std::path::PathBuf) -> Output {
    tokio::task::spawn_blocking(move || sonde(&args, &dir))
        .await
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_no_key(output: &Output) {
    let all = text(output);
    assert!(!all.contains(KEY), "the key leaked:\n{all}");
    assert!(
        !all.contains("HEADPART0123456789"),
        "a fragment of the key leaked:\n{all}"
    );
    assert!(
        !all.contains("tailpart-abcdefghijklmnop"),
        "a fragment of the key leaked:\n{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_appears_in_any_format_and_exit_codes_follow_outcomes() {
    let sim = common::simulator(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let config: String = common::KINDS
        .iter()
        .map(|kind| {
            common::provider_text(
                kind,
                kind,
                &common::base_url(&sim, kind),
                "api_key_env = \"SONDE_TEST_KEY\"",
                &["good", "wrong-key", "echo"],
            )
        })
        .collect();
    std::fs::write(dir.path().join("sonde.toml"), config).unwrap();
    for format in ["table", "json", "csv"] {
        let output = sonde_async(vec!["probe", "--format", format], dir.path().to_owned()).await;
        assert_no_key(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "some runs fail: {}",
            text(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("auth"), "{stdout}");
        if format == "table" {
            let (_, capabilities) = stdout.split_once("\ncapabilities\n").expect("summary");
            for kind in common::KINDS {
                let line = capabilities
                    .lines()
                    .find(|line| line.starts_with(&format!("{kind}/good ")))
                    .expect("a line per answering target");
                assert!(
                    line.ends_with("streaming yes  usage_in_stream yes  tools -  json -"),
                    "{line}"
                );
            }
        }
        if format == "json" {
            let records: Vec<serde_json::Value> = stdout
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            assert_eq!(records.len(), 18);
            for echo in records.iter().filter(|r| r["model"] == "echo") {
                assert_eq!(echo["outcome"], "auth");
                if echo["provider"] == "openai" {
                    // OpenAI echoes the key it was given; only the redacted form may show.
                    assert!(
                        echo["error"].as_str().unwrap().contains("[REDACTED]"),
                        "{echo}"
                    );
                }
            }
            let good: Vec<_> = records.iter().filter(|r| r["model"] == "good").collect();
            assert!(good.iter().all(|r| r["outcome"] == "ok"), "{good:?}");
        }
        if format == "csv" {
            let mut reader = csv::Reader::from_reader(stdout.as_bytes());
            let header = reader.headers().unwrap().clone();
            assert_eq!(&header[0], "ts");
            assert!(
                header.iter().any(|h| h == "ttft_ms") && header.iter().any(|h| h == "streamed")
            );
            assert_eq!(reader.records().count(), 18);
        }
    }
    let only_good = sonde_async(
        vec!["probe", "--target", "openai/good", "--format", "json"],
        dir.path().to_owned(),
    )
    .await;
    assert_eq!(
        only_good.status.code(),
        Some(0),
        "all ok: {}",
        text(&only_good)
    );
    assert_no_key(&only_good);
    assert_eq!(
        String::from_utf8_lossy(&only_good.stdout).lines().count(),
        2
    );
    let one_probe = sonde_async(
        vec![
            "probe",
            "--target",
            "openai/good",
            "--probe",
            "stream",
            "--format",
            "json",
        ],
        dir.path().to_owned(),
    )
    .await;
    let line = String::from_utf8_lossy(&one_probe.stdout).to_string();
    assert_eq!(line.lines().count(), 1);
    assert!(line.contains("\"probe\":\"stream\""));
    let check = sonde_async(vec!["check"], dir.path().to_owned()).await;
    assert_eq!(check.status.code(), Some(0));
    assert_no_key(&check);
    assert!(String::from_utf8_lossy(&check.stdout).contains("SONDE_TEST_KEY (set)"));
    let requests = sim.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.uri == "/v1beta/models/good:streamGenerateContent?alt=sse"),
        "Gemini was called in its own format"
    );
    for request in requests {
        assert!(
            !request.uri.contains(KEY) && !request.uri.contains("key="),
            "a key in a URL: {}",
            request.uri
        );
    }
}

#[test]
fn bad_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        "[[providers]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = []\n",
    )
    .unwrap();
    for command in ["probe", "check"] {
        let output = sonde(&[command], dir.path());
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("sonde.toml:5: key `providers[0].model`: unknown field"),
            "{stderr}"
        );
    }
}

#[test]
fn unknown_filters_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        common::config_text("http://127.0.0.1:9/v1", "", &["m"]),
    )
    .unwrap();
    let output = sonde(&["probe", "--target", "nope"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no target matches --target \"nope\"")
    );
}

#[test]
fn every_command_has_help() {
    for command in ["probe", "check", "simulate"] {
        let output = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: sonde"));
    }
}

#[test]
fn a_reader_that_goes_away_is_not_a_panic() {
    // 2,000 targets print more than a pipe holds, so the write after `head` exits fails.
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<String> = (0..2000).map(|i| format!("model-{i}")).collect();
    let names: Vec<&str> = models.iter().map(String::as_str).collect();
    let config = dir.path().join("sonde.toml");
    std::fs::write(
        &config,
        common::config_text("http://127.0.0.1:9/v1", "", &names),
    )
    .unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' check --config '{}' | head -c 1 > /dev/null",
            env!("CARGO_BIN_EXE_sonde"),
            config.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn the_probe_table_says_who_answered_and_streams_only_where_a_probe_checks_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sim = runtime.block_on(common::simulator(
        "[default]\ntoken_ms = 3\n\n[models.swap]\ntoken_ms = 3\nserved_model = \"tiny-model\"\nupstream = \"CheapHost\"\n",
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        common::provider_text("sim", "openai", &sim.base_url(), "", &["honest", "swap"]),
    )
    .unwrap();
    let output = sonde(&["probe", "--format", "table"], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let header = stdout.lines().next().unwrap();
    let column = |name: &str| header.find(name).unwrap();
    let cell = |target: &str, probe: &str, name: &str| {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(target) && l.contains(&format!(" {probe} ")))
            .unwrap_or_else(|| panic!("{stdout}"));
        // Columns align by characters; the header is ASCII, so its offsets are characters.
        let rest: String = line.chars().skip(column(name)).collect();
        rest.split("  ").next().unwrap().trim().to_owned()
    };
    assert_eq!(cell("sim/honest", "ping", "streamed"), "–", "{stdout}");
    assert_eq!(cell("sim/honest", "stream", "streamed"), "yes", "{stdout}");
    assert_eq!(cell("sim/honest", "stream", "served"), "–", "{stdout}");
    assert_eq!(
        cell("sim/swap", "stream", "served"),
        "≠ tiny-model via CheapHost",
        "{stdout}"
    );
}

/// `sonde store retire`: a location unknown to the store is an error listing those it
/// has; one whose prober runs (holding the store's lock) is refused; one stopped is retired
/// and says what that did.
#[test]
fn store_retire_names_what_it_did_and_refuses_a_running_prober() {
    use sonde::result::Outcome;
    use sonde::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let toml = "[store]\npath = \"sonde.db\"\n\n[prober]\nlocation = \"eu-west\"\n\n\
                [[providers]]\nname = \"p\"\nkind = \"openai\"\n\
                base_url = \"http://127.0.0.1:9/v1\"\n\
                [[providers.models]]\nid = \"m0\"\n[[providers.models]]\nid = \"m1\"\n";
    std::fs::write(dir.path().join("sonde.toml"), toml).unwrap();
    let config = sonde::config::Config::load(&dir.path().join("sonde.toml")).unwrap();
    let now = sonde::units::now_ms();
    let records = (0..2).map(|index| common::scripted(&config, index, now, Outcome::Ok, 200.0));
    let store = Store::open(&config.store, "eu-west").unwrap();
    sonde::store::writer::import(store, &config, records.collect::<Vec<_>>()).unwrap();

    let unknown = sonde(&["store", "retire", "us-east"], dir.path());
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("has no location \"us-east\" (its locations: eu-west)"),
        "{}",
        text(&unknown)
    );
    let running = Store::open(&config.store, "eu-west").unwrap();
    let refused = sonde(&["store", "retire", "eu-west"], dir.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("eu-west's prober is running"),
        "{}",
        text(&refused)
    );
    drop(running);
    let retired = sonde(&["store", "retire", "eu-west"], dir.path());
    assert!(retired.status.success(), "{}", text(&retired));
    assert_eq!(
        String::from_utf8_lossy(&retired.stdout),
        "retired eu-west: 0 open incidents closed, 2 target states forgotten; its runs stay \
         until retention prunes them\n"
    );
    let reader = Store::open_read_only(&config.store).unwrap();
    let beats = reader.heartbeats().unwrap();
    assert_eq!(beats.len(), 1);
    assert!(beats[0].retired() && beats[0].retired_ms.is_some_and(|at| at >= now));
}
