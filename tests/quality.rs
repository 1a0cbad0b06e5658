//! The quality canary end to end: the real runner asks generated items of the simulator (in
//! every wire format), a host degraded on purpose is flagged within the runs the power
//! calculation predicts while a faithful one is not, and the verdict reaches the feed's
//! weights, the pages and `/metrics`; a drift against a target's own past opens a quality
//! incident through the store's writer.

mod common;

use std::path::Path;

use sonde::aggregate::health::IncidentKind;
use sonde::aggregate::quality::{Member, Quality, Standing, judge_group};
use sonde::aggregate::stats::runs_to_detect;
use sonde::config::Config;
use sonde::publish::{self, Snapshot};
use sonde::quality::{Judgement, Kind};
use sonde::result::{Outcome, ResultRecord};
use sonde::runner::{Runner, Scheduled};
use sonde::store::{Store, writer::import};
use sonde::units::now_ms;

const SCENARIO: &str = r#"
[models."faithful"]
[models."degraded"]
accuracy = 0.8
tool_error_rate = 0.1
tool_error_kind = "schema_mismatch"
"#;

fn config(dir: &Path, base_url: &str) -> Config {
    let text = format!(
        r#"
[store]
path = "{store}"

[[providers]]
name = "sim"
kind = "openai"
base_url = "{base_url}"

[[providers.models]]
id = "faithful"
group = "llama"
probes = ["quality", "quality-tools"]

[[providers.models]]
id = "degraded"
group = "llama"
probes = ["quality", "quality-tools"]
"#,
        store = dir.join("sonde.db").display()
    );
    Config::parse(&dir.join("sonde.toml"), &text).unwrap()
}

fn standings(faithful: &Quality, degraded: &Quality, config: &Config) -> (Standing, Standing) {
    let verdicts = judge_group(
        &[
            Member {
                target: "sim/faithful",
                quality: faithful,
                reference: false,
            },
            Member {
                target: "sim/degraded",
                quality: degraded,
                reference: false,
            },
        ],
        &config.quality,
    );
    (verdicts[0].standing, verdicts[1].standing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_host_is_flagged_within_the_predicted_runs_and_loses_weight() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::simulator(SCENARIO).await;
    let config = config(dir.path(), &sim.base_url());
    let runner = Runner::new(&config).unwrap();
    // Two families, two targets: Holm's first test at α/2, and the p-value doubled because
    // the reference is chosen from the data, so one-sided 0.0025. The exact family (100 %
    // against 80 %) is the one to catch it; tools (100 % against 92.5 %) needs ~3× more.
    let predicted = runs_to_detect(1.0, 0.8, 0.0025, 0.8).unwrap();
    let bound = runs_to_detect(1.0, 0.8, 0.0025, 0.99).unwrap();
    let (mut faithful, mut degraded) = (Quality::default(), Quality::default());
    let mut records: Vec<ResultRecord> = Vec::new();
    let mut flagged_at = None;
    for round in 1..=bound {
        for (index, quality) in [(0, &mut faithful), (1, &mut degraded)] {
            for probe in ["quality", "quality-tools"] {
                let record = runner
                    .run(
                        &config.targets[index],
                        config.probes.get(probe).unwrap(),
                        Scheduled::now(),
                    )
                    .await;
                assert_eq!(record.outcome, Outcome::Ok, "{record:?}");
                assert!(record.quality.is_some(), "{record:?}");
                quality.add(&record);
                records.push(record);
            }
        }
        let (first, second) = standings(&faithful, &degraded, &config);
        assert_ne!(first, Standing::Below, "the faithful host at round {round}");
        if second == Standing::Below {
            flagged_at = Some(round);
            break;
        }
    }
    let flagged_at = flagged_at.unwrap_or_else(|| {
        panic!("not flagged in {bound} runs per probe (99 % power); predicted {predicted} at 80 %")
    });
    eprintln!(
        "degraded host flagged after {flagged_at} runs per probe; the power calculation \
         predicts {predicted} (80 % power), {bound} (99 %)"
    );
    // Every answer of the faithful host is right; the degraded one's mistakes are of the
    // kinds the scenario makes.
    for record in &records {
        let judgement = record.quality.unwrap();
        if record.target == "sim/faithful" {
            assert_eq!(judgement, Judgement::Correct, "{record:?}");
        } else {
            assert!(
                matches!(
                    judgement,
                    Judgement::Correct | Judgement::WrongAnswer | Judgement::SchemaMismatch
                ),
                "{record:?}"
            );
            if judgement == Judgement::SchemaMismatch {
                assert_eq!(record.quality_item, Some(Kind::ToolCall));
                assert!(record.quality_detail.is_some());
            }
        }
    }
    assert!(
        degraded.rates().exact.hits < degraded.rates().exact.total,
        "some exact answers were wrong"
    );

    // Through the store and the publisher: the feed, the pages and the metrics say it.
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, records).unwrap();
    let store = Store::open_read_only(&config.store).unwrap();
    let snapshot = Snapshot::load(&config, &store, now_ms()).unwrap();
    let files = publish::build(&config, &snapshot).unwrap();
    let feed: serde_json::Value = serde_json::from_slice(&files["feed.json"]).unwrap();
    let target = |id: &str| {
        feed["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    let (good, bad) = (target("sim/faithful"), target("sim/degraded"));
    assert_eq!(good["quality"]["standing"], "reference", "{good:#}");
    assert_eq!(bad["quality"]["standing"], "below", "{bad:#}");
    let factor = bad["quality"]["factor"].as_f64().unwrap();
    let exact = bad["quality"]["exact"]["rate"].as_f64().unwrap();
    assert!(
        (factor - exact.powi(4)).abs() < 0.01,
        "factor {factor} = exact rate {exact} ^ 4"
    );
    assert!(bad["weight"].as_f64().unwrap() < good["weight"].as_f64().unwrap());
    assert!(
        bad["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("quality below its reference")),
        "{bad:#}"
    );
    let low = bad["quality"]["exact"]["low"].as_f64().unwrap();
    let high = bad["quality"]["exact"]["high"].as_f64().unwrap();
    assert!(low < exact && exact < high && high < 1.0, "{bad:#}");
    let index = String::from_utf8_lossy(&files["index.html"]);
    assert_eq!(index.matches("quality below reference").count(), 1);
    let page = files
        .iter()
        .find(|(name, _)| name.starts_with("t/sim_degraded-"))
        .map(|(_, bytes)| String::from_utf8_lossy(bytes))
        .unwrap();
    assert!(page.contains("Quality canary, last 7d"), "{page}");
    assert!(page.contains("schema accuracy"));
    let stats = sonde::publish::windows::summarize(&store, &config, snapshot.now_ms).unwrap();
    let feed_value = publish::feed::build(&config, &stats, &snapshot.locations, snapshot.now_ms);
    let metrics = publish::metrics::render(&stats, &feed_value, None);
    assert!(
        metrics.contains("sonde_quality_standing{target=\"sim/degraded\",standing=\"below\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sonde_quality_right_ratio{target=\"sim/faithful\",group=\"llama\",family=\"exact\",window=\"7d\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wire_format_carries_the_items_and_the_mistakes() {
    let sim = common::simulator(
        r#"
[models."right"]
[models."wrong"]
accuracy = 0.0
tool_error_rate = 1.0
tool_error_kind = "unknown_name"
"#,
    )
    .await;
    for kind in common::KINDS {
        let extra = "";
        let config = common::kind_config(&sim, kind, extra, &["right", "wrong"]);
        for model in ["right", "wrong"] {
            let exact = common::run(&config, model, "quality").await;
            assert_eq!(exact.outcome, Outcome::Ok, "{kind} {model}: {exact:?}");
            let expected = if model == "right" {
                Judgement::Correct
            } else {
                Judgement::WrongAnswer
            };
            assert_eq!(exact.quality, Some(expected), "{kind} {model}: {exact:?}");
            // Tool items: until one that must call a tool comes up.
            let mut seen_call = false;
            for _ in 0..40 {
                let tools = common::run(&config, model, "quality-tools").await;
                assert_eq!(tools.outcome, Outcome::Ok, "{kind} {model}: {tools:?}");
                let judgement = tools.quality.unwrap();
                if tools.quality_item == Some(Kind::ToolCall) {
                    seen_call = true;
                    let expected = if model == "right" {
                        Judgement::Correct
                    } else {
                        Judgement::UnknownName
                    };
                    assert_eq!(judgement, expected, "{kind} {model}: {tools:?}");
                    break;
                }
                assert_eq!(judgement, Judgement::Correct, "{kind}: {tools:?}");
            }
            assert!(seen_call, "{kind}: no tool-call item in 40 runs");
        }
    }
}

#[test]
fn a_drift_from_the_targets_own_past_opens_a_quality_incident() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/v1");
    let now = now_ms();
    let answer = |i: i64, right: bool| {
        let mut record = common::scripted(
            &config,
            1,
            now - 200 * 60_000 + i * 60_000,
            Outcome::Ok,
            300.0,
        );
        record.probe = "quality".into();
        record.quality_item = Some(Kind::Arithmetic);
        record.quality = Some(if right {
            Judgement::Correct
        } else {
            Judgement::WrongAnswer
        });
        record
    };
    // 120 right answers, then one in two wrong.
    let history: Vec<ResultRecord> = (0..160).map(|i| answer(i, i < 120 || i % 2 == 0)).collect();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, history).unwrap();
    let store = Store::open_read_only(&config.store).unwrap();
    let incidents = store.incidents(now - 86_400_000).unwrap();
    let quality: Vec<_> = incidents
        .iter()
        .filter(|i| i.kind == IncidentKind::Quality)
        .collect();
    assert_eq!(quality.len(), 1, "{incidents:#?}");
    assert_eq!(&*quality[0].target, "sim/degraded");
    assert_eq!(quality[0].end_ms, None, "still open");
    assert!(
        quality[0].cause.starts_with("exact answers wrong in"),
        "{}",
        quality[0].cause
    );
    let opened_after = (quality[0].start_ms - (now - 200 * 60_000)) / 60_000 - 120;
    assert!(
        (0..=15).contains(&opened_after),
        "opened {opened_after} answers after the drop"
    );
    assert!(
        incidents.iter().all(|i| i.kind == IncidentKind::Quality),
        "the availability state is untouched: {incidents:#?}"
    );
    let snapshot = Snapshot::load(&config, &store, now_ms()).unwrap();
    let files = publish::build(&config, &snapshot).unwrap();
    let index = String::from_utf8_lossy(&files["index.html"]);
    assert!(
        index.contains("<span class=\"chip\">quality</span>"),
        "{index}"
    );
}
