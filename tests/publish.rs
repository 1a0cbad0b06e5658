//! Publishing from a store with scripted history: the page's figures equal the aggregates,
//! hostile names are escaped, no key is published, the feed validates against its schema
//! with weights that sum to 1, the gateway exports parse in their documented shapes, the
//! server answers with ETags and fresh feeds, and `/metrics` parses as Prometheus text.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sonde::aggregate::Window;
use sonde::config::Config;
use sonde::publish::windows::{locations, summarize};
use sonde::publish::{self, Snapshot, checkpoint, feed, gateway, metrics, results_csv};
use sonde::result::Outcome;
use sonde::runner::{Runner, Scheduled};
use sonde::server::Site;
use sonde::store::writer::import;
use sonde::store::{Prune, Store};
use sonde::units::now_ms;

const EVIL: &str = "<script>alert(1)</script>";
const KEY: &str = "sk-publish-test-KEYHEAD0123456789-keytail-zyxwvu";
const KEY_VAR: &str = "SONDE_PUBLISH_TEST_KEY";

fn config_text(base_url: &str, store: &Path) -> String {
    format!(
        r#"[store]
path = "{store}"

[publish]
title = "Status {EVIL}"
window = "24h"

[[providers]]
name = "evil<b>&'x"
kind = "openai"
base_url = "{base_url}"
api_key_env = "{KEY_VAR}"
  [[providers.models]]
  id = "{EVIL}"
  group = "{EVIL}"
  input_price = 1.0
  output_price = 2.0
  [[providers.models]]
  id = "half"
  group = "{EVIL}"
  input_price = 0.5
  output_price = 0.5

[[providers]]
name = "dead"
kind = "openai"
base_url = "{base_url}"
  [[providers.models]]
  id = "gone"
  group = "{EVIL}"
"#,
        store = store.display()
    )
}

/// A store with scripted history for the three targets, plus one real auth failure (whose
/// provider echoed the key) from the simulator. Returns the config.
async fn scripted_store(dir: &Path) -> Config {
    // SAFETY: every test of this binary sets the same value, before any reads it.
    unsafe { std::env::set_var(KEY_VAR, KEY) };
    let sim = common::simulator("[models.\"half\"]\nerror_rate = 1.0\nerror = \"auth\"\n").await;
    let store_path = dir.join("sonde.db");
    let config = Config::parse(
        &dir.join("sonde.toml"),
        &config_text(&sim.base_url(), &store_path),
    )
    .unwrap();
    let now = now_ms();
    let mut records = Vec::new();
    for i in 0..40 {
        records.push(common::scripted(
            &config,
            0,
            now - 3_000_000 + i * 60_000,
            Outcome::Ok,
            100.0 + i as f64 * 5.0,
        ));
    }
    for i in 0..20 {
        let outcome = if i % 2 == 0 {
            Outcome::Ok
        } else {
            Outcome::ServerError
        };
        records.push(common::scripted(
            &config,
            1,
            now - 2_000_000 + i * 60_000,
            outcome,
            300.0,
        ));
    }
    for i in 0..5 {
        records.push(common::scripted(
            &config,
            2,
            now - 600_000 + i * 60_000,
            Outcome::Timeout,
            0.0,
        ));
    }
    let runner = Runner::new(&config).unwrap();
    let echoed = runner
        .run(
            &config.targets[1],
            config.probes.get("ping").unwrap(),
            Scheduled::now(),
        )
        .await;
    assert_eq!(echoed.outcome, Outcome::Auth);
    assert!(echoed.error.as_deref().unwrap().contains("[REDACTED]"));
    records.push(echoed);
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, records).unwrap();
    config
}

/// The snapshot and every file `sonde publish` writes (`results.csv` read from the store).
fn build(config: &Config) -> (Snapshot, publish::Files) {
    let store = Store::open_read_only(&config.store).unwrap();
    let snapshot = Snapshot::load(config, &store, now_ms()).unwrap();
    let mut files = publish::build(config, &snapshot).unwrap();
    let csv = results_csv::render(&store, snapshot.now_ms).unwrap();
    files.insert(results_csv::PATH.into(), csv);
    (snapshot, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_the_aggregates_escape_names_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted_store(dir.path()).await;
    let (snapshot, files) = build(&config);
    let store = Store::open_read_only(&config.store).unwrap();
    let stats = summarize(&store, &config, snapshot.now_ms).unwrap();

    for (name, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(KEY) && !text.contains("KEYHEAD0123456789"),
            "the key is in {name}"
        );
        if name.ends_with(".html") || name.ends_with(".svg") || name.ends_with(".xml") {
            assert!(!text.contains(EVIL), "{name} has the raw script tag");
            assert!(!text.contains("evil<b>"), "{name} has a raw provider name");
        }
    }
    let index = String::from_utf8_lossy(&files["index.html"]);
    assert!(
        index.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || index.contains("&lt;script&gt;"),
        "escaped group name"
    );

    // The target page's window table carries the aggregates, formatted.
    for (i, target) in config.targets.iter().enumerate() {
        let page_name = files
            .keys()
            .find(|name| {
                name.starts_with("t/") && {
                    let page = String::from_utf8_lossy(&files[*name]);
                    page.contains(&format!("model {}", html_escape(&target.model.id)))
                        && page
                            .contains(&format!("provider {}", html_escape(&target.provider.name)))
                }
            })
            .unwrap_or_else(|| panic!("a page for target {i}"));
        let page = String::from_utf8_lossy(&files[page_name]);
        let s = stats.iter().find(|s| s.target == target.id).unwrap();
        let day = s.window(Window::H24).unwrap();
        let availability = day.availability.map_or("–".into(), |a| {
            if a >= 1.0 {
                "100%".to_owned()
            } else {
                format!("{:.1}%", a * 100.0)
            }
        });
        let ttft = day
            .latency
            .ttft_ms
            .p50
            .map_or("–".into(), |v| format!("{v:.0} ms"));
        let row = format!(
            "<td>24h</td><td class=\"n\">{}</td><td class=\"n\">{availability}</td><td class=\"n\">{ttft}</td>",
            day.attempts
        );
        assert!(page.contains(&row), "{page_name} lacks {row}");
    }
    let evil = stats.iter().find(|s| s.target.ends_with(EVIL)).unwrap();
    assert_eq!(evil.window(Window::H24).unwrap().attempts, 40);
    let p50 = evil
        .window(Window::H24)
        .unwrap()
        .latency
        .ttft_ms
        .p50
        .unwrap();
    assert!((p50 - 195.0).abs() <= 0.2, "{p50}");
    let half = stats.iter().find(|s| s.target.ends_with("/half")).unwrap();
    assert_eq!(half.window(Window::H1).unwrap().availability, Some(0.5));

    // The down target is an open incident on top of the index.
    let incidents = index
        .split("<h2>Current incidents</h2>")
        .nth(1)
        .expect("incidents section");
    assert!(incidents.contains("dead/gone"));
    assert!(files.contains_key("results.csv") && files.contains_key("feed.json"));
    assert!(index.contains("href=\"t/"), "relative links only");
    assert!(!index.contains("href=\"/"), "no absolute links");

    // At a glance: the headline, the favicon in the worst state, a badge (SVG and shields.io
    // endpoint) per target and per group.
    assert!(index.contains("Outage: 1 of 3 targets down"), "{index}");
    assert!(String::from_utf8_lossy(&files["favicon.svg"]).contains("#cf222e"));
    let file = |prefix: &str, ext: &str| {
        files
            .iter()
            .find(|(name, _)| name.starts_with(prefix) && name.ends_with(ext))
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_else(|| panic!("no {prefix}*{ext}"))
    };
    let svg = file("badge/dead_gone-", ".svg");
    assert!(
        svg.contains(">down</text>") && svg.contains("#cf222e"),
        "{svg}"
    );
    let endpoint: serde_json::Value =
        serde_json::from_str(&file("badge/dead_gone-", ".json")).unwrap();
    assert_eq!(
        endpoint,
        serde_json::json!({"schemaVersion": 1, "label": "dead/gone", "message": "down", "color": "red"})
    );
    let group: serde_json::Value = serde_json::from_str(&file("badge/g/", ".json")).unwrap();
    assert_eq!(group["message"], "2 of 3 up", "{group}");
    assert_eq!(group["color"], "yellow");
    assert!(
        file("badge/g/", ".svg").contains("&#60;script&#62;"),
        "names are escaped"
    );
    // The incidents as an Atom feed a feed parser reads, and as a page.
    let atom = feed_rs::parser::parse(&files["incidents.xml"][..]).expect("valid Atom");
    assert_eq!(atom.feed_type, feed_rs::model::FeedType::Atom);
    assert_eq!(
        atom.title.unwrap().content,
        format!("Status {EVIL}: incidents"),
        "the title is escaped, not lost"
    );
    assert_eq!(atom.entries.len(), 2, "the outage and the degraded host");
    let title = |e: &feed_rs::model::Entry| e.title.as_ref().unwrap().content.clone();
    let entry = atom
        .entries
        .iter()
        .find(|e| title(e) == "dead/gone: down")
        .unwrap();
    assert!(
        entry
            .id
            .starts_with("urn:sonde:incident:health:dead%2Fgone:")
    );
    assert!(entry.links[0].href.starts_with("t/dead_gone-"));
    let summary = entry.summary.as_ref().unwrap().content.clone();
    assert!(summary.ends_with("scripted timeout. Ongoing."), "{summary}");
    let history = String::from_utf8_lossy(&files["incidents.html"]);
    assert!(history.contains("dead/gone") && history.contains("Down"));
    assert!(index.contains("href=\"incidents.xml\""));
}

fn html_escape(text: &str) -> String {
    askama_escape(text)
}

/// What askama's HTML escaping produces, for comparison.
fn askama_escape(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_validates_and_its_weights_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted_store(dir.path()).await;
    let (_, files) = build(&config);
    let feed: serde_json::Value = serde_json::from_slice(&files["feed.json"]).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/feed.v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&feed)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let targets = feed["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    let mut sums = std::collections::BTreeMap::<String, f64>::new();
    for t in targets {
        *sums.entry(t["group"].as_str().unwrap().into()).or_default() +=
            t["weight"].as_f64().unwrap();
        if t["state"] == "down" {
            assert_eq!(t["weight"], 0.0, "{t}");
        }
    }
    for (group, sum) in sums {
        assert!((sum - 1.0).abs() < 1e-9, "group {group} sums to {sum}");
    }
    let gone = targets.iter().find(|t| t["id"] == "dead/gone").unwrap();
    assert_eq!(gone["state"], "down");
    let evil = targets.iter().find(|t| t["model"] == EVIL).unwrap();
    assert_eq!(evil["rank"], 1, "the available, fast one ranks first");
    assert_eq!(
        evil["ttft_ms"]["p99"],
        serde_json::Value::Null,
        "40 runs cannot support p99"
    );
    let p95 = evil["ttft_ms"]["p95"].as_f64().unwrap();
    assert!((p95 - 285.0).abs() <= 0.3, "{p95}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_exports_parse_in_their_documented_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted_store(dir.path()).await;
    let store = Store::open_read_only(&config.store).unwrap();
    let now = now_ms();
    let stats = summarize(&store, &config, now).unwrap();
    let feed = feed::build(&config, &stats, &locations(&store, now).unwrap(), now);

    let yaml = gateway::litellm(&config, &feed);
    assert!(!yaml.contains(KEY));
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("valid YAML");
    let list = parsed["model_list"].as_sequence().unwrap();
    assert_eq!(list.len(), 2, "the down target is left out");
    let mut total = 0.0;
    for deployment in list {
        assert_eq!(deployment["model_name"].as_str(), Some(EVIL));
        let params = &deployment["litellm_params"];
        assert!(params["model"].as_str().unwrap().starts_with("openai/"));
        assert_eq!(
            params["api_key"].as_str(),
            Some(format!("os.environ/{KEY_VAR}").as_str())
        );
        assert!(
            params["api_base"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:")
        );
        total += params["weight"].as_f64().unwrap();
        assert!(
            deployment["model_info"]["id"]
                .as_str()
                .unwrap()
                .starts_with("evil<b>&'x/")
        );
    }
    assert!((total - 1.0).abs() < 1e-5);
    assert_eq!(
        parsed["router_settings"]["routing_strategy"].as_str(),
        Some("simple-shuffle")
    );

    let openrouter = gateway::openrouter(&config, &feed, false);
    let order = openrouter["models"][EVIL]["provider"]["order"]
        .as_array()
        .unwrap();
    assert_eq!(
        order,
        &vec![serde_json::json!("evil<b>&'x")],
        "down providers are left out"
    );
    assert_eq!(
        openrouter["models"][EVIL]["provider"]["allow_fallbacks"],
        true
    );
}

/// The plain bytes of a gzip body.
fn inflate(gzip: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gzip), &mut plain).unwrap();
    plain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_site_fresh_feeds_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted_store(dir.path()).await;
    let site = Site::new(Arc::new(config.clone()));
    let (addr, shutdown) = common::serve_site(Arc::clone(&site)).await;
    let http = common::http();
    let base = format!("http://{addr}");
    site.refresh().await.unwrap();
    let published = std::time::Instant::now();

    // Just after a publish, its own figures are the fresh bodies: the feed of the
    // publish's instant, not one computed again (past the second they may be reused, a
    // slow machine computes afresh).
    let feed = common::get_json(&http, &format!("{base}/feed.json")).await;
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let index = http.get(format!("{base}/")).send().await.unwrap();
    let index = index.text().await.unwrap();
    let generated = index
        .split("datetime=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    if published.elapsed() < Duration::from_millis(500) {
        assert_eq!(feed["generated_at"], generated, "the publish's feed");
    }
    assert!(metrics.contains("sonde_target_state{"), "{metrics}");

    let index = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        index.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let etag = index.headers()["etag"].clone();
    let again = http
        .get(format!("{base}/index.html"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let plain = index.bytes().await.unwrap();
    assert!(plain.starts_with(b"<!doctype html>"));
    // A client that accepts gzip gets the page as kept, compressed, with its own ETag.
    let gzip = http
        .get(format!("{base}/index.html"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    assert_eq!(gzip.headers()["vary"], "accept-encoding");
    let gzip_etag = gzip.headers()["etag"].clone();
    let compressed = gzip.bytes().await.unwrap();
    assert!(
        compressed.len() * 2 < plain.len(),
        "{} of {}",
        compressed.len(),
        plain.len()
    );
    assert_eq!(inflate(&compressed), plain, "the same page");
    let again = http
        .get(format!("{base}/index.html"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", gzip_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    for missing in ["nope.html", "t/nope.html", "t/x/y.html"] {
        assert_eq!(
            http.get(format!("{base}/{missing}"))
                .send()
                .await
                .unwrap()
                .status(),
            404,
            "{missing}"
        );
    }

    // Target pages are rendered when asked for, from the snapshot the index was made from.
    let index = http.get(format!("{base}/")).send().await.unwrap();
    let index = index.text().await.unwrap();
    let hrefs: Vec<&str> = index
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.starts_with("t/") && href.ends_with(".html"))
        .collect();
    assert_eq!(
        hrefs
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        config.targets.len(),
        "one page per target"
    );
    let mut pages = Vec::new();
    for href in hrefs {
        let page = http.get(format!("{base}/{href}")).send().await.unwrap();
        assert_eq!(page.status(), 200, "{href}");
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        let etag = page.headers()["etag"].clone();
        let text = page.text().await.unwrap();
        assert!(!text.contains(KEY));
        let again = http
            .get(format!("{base}/{href}"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(
            again.status(),
            304,
            "{href} is the same until the next refresh"
        );
        pages.push(text);
    }
    let titled: std::collections::BTreeSet<String> = pages
        .iter()
        .filter_map(|page| Some(page.split("<h1>").nth(1)?.split("</h1>").next()?.to_owned()))
        .collect();
    let ids: std::collections::BTreeSet<String> = config
        .targets
        .iter()
        .map(|t| askama_escape(&t.id))
        .collect();
    assert_eq!(titled, ids, "each target's own page");

    let feed = common::get_json(&http, &format!("{base}/feed.json")).await;
    assert_eq!(feed["version"], 1);
    // The fresh bodies are kept compressed as the files are: gzip to a client that takes
    // it, the same JSON inflated to one that does not, and a poller sending its ETag back
    // gets a 304 while they are unchanged.
    let gzip = http
        .get(format!("{base}/feed.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    assert_eq!(gzip.headers()["cache-control"], "no-cache");
    let gzip_etag = gzip.headers()["etag"].clone();
    let inflated = inflate(&gzip.bytes().await.unwrap());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&inflated).unwrap(),
        feed
    );
    let again = http
        .get(format!("{base}/feed.json"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", gzip_etag.clone())
        .send()
        .await
        .unwrap();
    // Within the second the body is kept, the same; past it (a slow machine), recomputed
    // with a new `generated_at`, so a new ETag.
    match again.status().as_u16() {
        304 => {}
        200 => assert_ne!(again.headers()["etag"], gzip_etag),
        status => panic!("{status}"),
    }
    // A new run shows within a second or so: the body is recomputed at most once a second,
    // and the previous one is served while that runs.
    let record = common::scripted(&config, 2, now_ms(), Outcome::Ok, 50.0);
    let run_id = record.run_id.clone();
    {
        let store = Store::open(&config.store, &config.prober.location).unwrap();
        import(store, &config, vec![record]).unwrap();
    }
    let samples = |feed: &serde_json::Value| {
        feed["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == "dead/gone")
            .unwrap()["samples"]
            .as_u64()
    };
    let mut fresh = feed.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fresh = common::get_json(&http, &format!("{base}/feed.json")).await;
        if samples(&fresh) != samples(&feed) {
            break;
        }
    }
    assert_eq!(
        samples(&fresh),
        samples(&feed).map(|n| n + 1),
        "the feed is fresh"
    );

    // `results.csv` is read from the store when asked for: the new run is in it.
    let response = http
        .get(format!("{base}/results.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.bytes().await.unwrap();
    let rows: Vec<sonde::result::ResultRecord> = csv::Reader::from_reader(&csv[..])
        .deserialize()
        .map(Result::unwrap)
        .collect();
    let store = Store::open_read_only(&config.store).unwrap();
    let day = store.result_count_since(now_ms() - 86_400_000).unwrap();
    assert_eq!(rows.len() as u64, day, "every run of the last 24 hours");
    assert_eq!(
        rows.last().map(|r| r.run_id.as_str()),
        Some(run_id.as_str())
    );

    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], metrics::CONTENT_TYPE);
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text exposition");
    let state = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sonde_target_state"
                && s.labels.get("target") == Some("dead/gone")
                && s.labels.get("state") == Some("down")
        })
        .expect("a state gauge");
    assert!(matches!(state.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    let count = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sonde_ttft_seconds_30d_samples"
                && s.labels.get("target").is_some_and(|t| t.ends_with(EVIL))
        })
        .expect("the TTFT samples with the escaped label");
    assert!(
        matches!(count.value, prometheus_parse::Value::Gauge(v) if v == 40.0),
        "{:?}",
        count.value
    );
    let p95 = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sonde_ttft_seconds_30d"
                && s.labels.get("target").is_some_and(|t| t.ends_with(EVIL))
                && s.labels.get("quantile") == Some("0.95")
        })
        .expect("a TTFT p95 gauge");
    assert!(matches!(p95.value, prometheus_parse::Value::Gauge(v) if (v - 0.285).abs() < 0.001));
    assert!(
        !text.contains("quantile=\"0.99\""),
        "40 runs cannot support a p99"
    );
    assert!(text.contains("# TYPE sonde_ttft_seconds_30d gauge"));
    assert!(text.contains("sonde_build_info{version=\""));
    assert!(
        !text.contains("sonde_runs_total"),
        "sonde serve records nothing, so it counts nothing"
    );
    assert!(text.contains("sonde_last_run_timestamp_seconds{target=\"dead/gone\"}"));
    assert!(!text.contains(KEY));
    shutdown.cancel();
}

/// A served site writing its publishes to a folder of its own.
struct Served {
    /// Its config.
    config: Config,
    /// Its `[publish] out`.
    out: std::path::PathBuf,
    /// The site.
    site: Arc<Site>,
    /// Where it is served.
    addr: std::net::SocketAddr,
    /// Stops the server.
    shutdown: tokio_util::sync::CancellationToken,
}

/// [`scripted_store`]'s history served, publishing to `out` in `dir`, its config changed
/// by `tweak` first; nothing published yet.
async fn served_publishing(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Served {
    let mut config = scripted_store(dir).await;
    let out = dir.join("site");
    config.publish.out = Some(out.clone());
    tweak(&mut config);
    let site = Site::new(Arc::new(config.clone()));
    let (addr, shutdown) = common::serve_site(Arc::clone(&site)).await;
    Served {
        config,
        out,
        site,
        addr,
        shutdown,
    }
}

/// Makes the site's folder `out` the user's (no longer sonde's): publishes to it fail.
fn make_the_users(out: &Path) {
    std::fs::remove_file(out.join(".sonde-site")).unwrap();
    std::fs::write(out.join("mine.txt"), "the user's").unwrap();
}

/// A publish sets the served figures aside before it makes its own (a publisher never
/// holds two snapshots' figures): a target's page asked for meanwhile waits for the
/// publish and is served from it; after a publish that failed, it is a 503 with
/// `Retry-After` until the next one, while the rest of the site is still served. Fresh
/// bodies computed for a poller replace the figures the pages are rendered from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_page_asked_for_during_a_publish_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        config,
        out,
        site,
        addr,
        shutdown,
    } = served_publishing(dir.path(), |_| {}).await;
    let http = common::http();
    site.refresh().await.unwrap();
    let index = http.get(format!("http://{addr}/")).send().await.unwrap();
    let index = index.text().await.unwrap();
    let href = index
        .split("href=\"")
        .filter_map(|rest| rest.split_once("\">dead/gone</a>"))
        .map(|(href, _)| href.to_owned())
        .next()
        .unwrap();
    let page = format!("http://{addr}/{href}");

    let publishing = {
        let site = Arc::clone(&site);
        tokio::spawn(async move {
            for _ in 0..20 {
                site.refresh().await.unwrap();
            }
        })
    };
    let mut asked = 0;
    while !publishing.is_finished() {
        let answer = http.get(&page).send().await.unwrap();
        assert_eq!(answer.status(), 200, "asked during publishes");
        assert!(answer.text().await.unwrap().contains("<h2>Windows</h2>"));
        asked += 1;
    }
    publishing.await.unwrap();
    assert!(asked > 0);

    // The site's folder is no longer sonde's: the publish fails after it set the figures
    // aside.
    make_the_users(&out);
    assert!(site.refresh().await.is_err());
    let answer = http.get(&page).send().await.unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer.headers()["retry-after"],
        config.publish.every.as_secs().max(1).to_string()
    );
    let index = http.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(index.status(), 200, "the rest of the site is still served");

    std::fs::remove_dir_all(&out).unwrap();
    site.refresh().await.unwrap();
    assert_eq!(http.get(&page).send().await.unwrap().status(), 200);

    // Bodies computed for a poller after the publish's have aged replace the served
    // figures: the target's page is then as fresh as the feed.
    let mut run = common::scripted(&config, 2, now_ms(), Outcome::ServerError, 0.0);
    run.error = Some("fresh-marker".into());
    write(&config, &config.prober.location, vec![run]);
    let seen = |text: &str| text.contains("fresh-marker");
    assert!(!seen(
        &http.get(&page).send().await.unwrap().text().await.unwrap()
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let feed = common::get_json(&http, &format!("http://{addr}/feed.json")).await;
    assert_ne!(feed["generated_at"], "", "{feed}");
    assert!(seen(
        &http.get(&page).send().await.unwrap().text().await.unwrap()
    ));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_the_site_wait_for_the_first_publish_and_readyz_drops_after_three_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        out,
        site,
        addr,
        shutdown,
        ..
    } = served_publishing(dir.path(), |config| {
        config.publish.every = Duration::from_secs(1)
    })
    .await;
    let http = common::http();
    let readyz = || async {
        let answer = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        let retry = answer.headers().get("retry-after").cloned();
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap(), retry)
    };
    let healthz = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "alive before the first publish");

    let (status, text, retry) = readyz().await;
    assert_eq!(
        (status, retry.unwrap()),
        (503, "1".parse().unwrap()),
        "{text}"
    );
    assert!(
        text.contains("the first publish is still reading the store"),
        "{text}"
    );
    // Until then the site's pages say so, rather than a 404 (pollers of the feed and the
    // metrics are told so while the first publish reads: the server's own tests).
    for path in ["", "index.html", "t/anything.html"] {
        let answer = http
            .get(format!("http://{addr}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 503, "/{path}");
        assert_eq!(answer.headers()["retry-after"], "1", "/{path}");
        let text = answer.text().await.unwrap();
        assert!(
            text.starts_with("not ready: the first publish"),
            "/{path}: {text}"
        );
    }

    site.refresh().await.unwrap();
    let (status, text, _) = readyz().await;
    assert_eq!((status, text.as_str()), (200, "ready: published 0 s ago"));
    for path in ["", "feed.json", "metrics"] {
        let answer = http
            .get(format!("http://{addr}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "/{path}");
    }
    let missing = http
        .get(format!("http://{addr}/nothing.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Publishes fail (the site's folder is no longer sonde's): one late publish keeps the
    // server in rotation, three intervals without one take it out.
    make_the_users(&out);
    assert!(site.refresh().await.is_err());
    let (status, text, _) = readyz().await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("; 1 failed since"), "{text}");
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert!(site.refresh().await.is_err());
    let (status, text, retry) = readyz().await;
    assert_eq!(
        (status, retry.unwrap()),
        (503, "1".parse().unwrap()),
        "{text}"
    );
    assert!(
        text.starts_with("not ready: the site was last published ")
            && text.contains(" s ago; 2 failed since (more than 3 s"),
        "{text}"
    );

    std::fs::remove_dir_all(&out).unwrap();
    site.refresh().await.unwrap();
    let (status, text, _) = readyz().await;
    assert_eq!((status, text.as_str()), (200, "ready: published 0 s ago"));
    // /metrics shows the same for a Prometheus rule: the failures, and when the site
    // was last published.
    let metrics = common::get_text(&format!("http://{addr}/metrics")).await;
    let value = |name: &str| -> f64 { common::metric(&metrics, name) };
    assert_eq!(value("sonde_publish_failures_total"), 2.0);
    let published = value("sonde_publish_last_success_timestamp_seconds");
    assert!(
        (now_ms() as f64 / 1000.0 - published).abs() < 2.0,
        "{published}"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_pages_alone_and_written_one_by_one_are_the_built_sites() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted_store(dir.path()).await;
    let (snapshot, files) = build(&config);
    let feed = snapshot.feed(&config);
    let shared = publish::build_shared(&config, &snapshot, &feed).unwrap();
    let pages: Vec<&String> = files.keys().filter(|k| k.starts_with("t/")).collect();
    assert_eq!(pages.len(), config.targets.len());
    assert!(shared.keys().all(|k| !k.starts_with("t/")));
    assert_eq!(
        shared.len() + pages.len() + 1,
        files.len(),
        "and results.csv, read from the store"
    );
    for path in pages {
        let alone = publish::target_page(&config, &snapshot, &feed, path)
            .expect("a target's path")
            .unwrap();
        assert_eq!(alone, files[path], "{path}");
    }
    for unknown in ["t/nope.html", "index.html", "t/", "t/.html"] {
        assert!(
            publish::target_page(&config, &snapshot, &feed, unknown).is_none(),
            "{unknown}"
        );
    }

    // Written as `sonde publish` writes it: results.csv, the shared files (each handed on
    // as it is written, as a server keeps them), then the pages.
    let out = dir.path().join("site");
    let mut kept = publish::Files::new();
    let written = publish::write_site_from(
        &out,
        &config,
        &snapshot,
        &feed,
        &files[results_csv::PATH],
        &mut |path, file| {
            let bytes = file.into_bytes(&path)?;
            kept.insert(path, bytes);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(kept, shared);
    assert_eq!(written.files, files.len());
    assert_eq!(written.bytes, files.values().map(Vec::len).sum::<usize>());
    for (path, bytes) in &files {
        assert_eq!(&std::fs::read(out.join(path)).unwrap(), bytes, "{path}");
    }
    assert!(out.join(".sonde-site").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_is_swapped_in_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted_store(dir.path()).await;
    let (_, files) = build(&config);
    let out = dir.path().join("site");
    publish::write_site(&out, &files).unwrap();
    std::fs::write(out.join("stale.html"), "old").unwrap();
    publish::write_site(&out, &files).unwrap();
    assert!(
        !out.join("stale.html").exists(),
        "the old folder was replaced, not patched"
    );
    assert_eq!(
        std::fs::read(out.join("index.html")).unwrap(),
        files["index.html"]
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".site"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_csv_holds_the_newest_runs_up_to_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let config = scripted_store(dir.path()).await;
    let now = now_ms();
    // More runs in the last 24 hours than the cap, a second apart, and one older.
    let extra = results_csv::CSV_RUNS as i64 + 50;
    let records = (0..extra)
        .map(|i| common::scripted(&config, 0, now - 80_000_000 + i * 1_000, Outcome::Ok, 100.0))
        .chain([common::scripted(
            &config,
            0,
            now - 90_000_000,
            Outcome::Ok,
            90.0,
        )])
        .collect::<Vec<_>>();
    let store = Store::open(&config.store, &config.prober.location).unwrap();
    import(store, &config, records).unwrap();
    let store = Store::open_read_only(&config.store).unwrap();
    let day: Vec<String> = store
        .results_since(now - 86_400_000, None)
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.run_id)
        .collect();
    assert!(day.len() > results_csv::CSV_RUNS);
    let kept = &day[day.len() - results_csv::CSV_RUNS..];
    let (_, files) = build(&config);
    let mut reader = csv::Reader::from_reader(&files["results.csv"][..]);
    let rows: Vec<sonde::result::ResultRecord> = reader.deserialize().map(Result::unwrap).collect();
    let ids: Vec<String> = rows.iter().map(|r| r.run_id.clone()).collect();
    assert_eq!(
        ids, kept,
        "the newest runs of the last 24 hours, oldest first"
    );
    assert!(rows.iter().all(|r| r.ttft_ms != Some(90.0)), "no older run");
}

/// Runs of target `index` every `every_ms` from `from` to `to` (exclusive), ok but for one in
/// seven, TTFT and spend varying with time (spends whose float sum depends on its order).
fn runs(
    config: &Config,
    index: usize,
    from: i64,
    to: i64,
    every_ms: i64,
) -> Vec<sonde::result::ResultRecord> {
    (0..)
        .map(|i| from + i * every_ms)
        .take_while(|at| *at < to)
        .map(|at| {
            let outcome = if (at / every_ms) % 7 == 0 {
                Outcome::ServerError
            } else {
                Outcome::Ok
            };
            let mut run = common::scripted(
                config,
                index,
                at,
                outcome,
                80.0 + (at / 60_000 % 900) as f64,
            );
            run.cost_usd = Some((at / 60_000 % 97) as f64 * 1.3e-5);
            run
        })
        .collect()
}

/// A run of target `index` at `at` showing what only it shows: a capability flag, a
/// substitution, an error. When its bucket leaves a window, the window holds none of them.
fn singular(config: &Config, index: usize, at: i64, flag: &str) -> sonde::result::ResultRecord {
    let mut run = common::scripted(config, index, at, Outcome::Ok, 95.0);
    match flag {
        "tools" => run.cap_tools = Some(true),
        _ => run.cap_json = Some(false),
    }
    run.served_model = Some(format!("other-{flag}"));
    run.model_substituted = true;
    run.cost_usd = Some(0.1);
    run
}

fn write(config: &Config, location: &str, records: Vec<sonde::result::ResultRecord>) {
    let mut config = config.clone();
    config.prober.location = location.to_owned();
    let store = Store::open(&config.store, location).unwrap();
    import(store, &config, records).unwrap();
}

#[test]
fn a_retired_location_leaves_the_fleet_and_comes_back_with_its_prober() {
    let dir = tempfile::tempdir().unwrap();
    common::retired_location_against_cold_reads(&config_with(dir.path(), &["m0", "m1"]));
}

#[test]
fn kept_incidents_are_read_as_written_since_and_publish_what_a_cold_read_does() {
    let dir = tempfile::tempdir().unwrap();
    common::kept_incidents_against_cold_reads(&config_with(dir.path(), &["m0", "m1"]));
}

#[test]
fn a_kept_history_publishes_what_a_cold_read_publishes() {
    kept_history_against_cold_reads(false);
}

/// The same steps, the history saved as the store's checkpoint after each publish and
/// restored from it before the next: what a publisher restarted at any moment publishes.
#[test]
fn a_history_restored_from_its_checkpoint_publishes_what_a_cold_read_publishes() {
    kept_history_against_cold_reads(true);
}

/// Publishes from a kept history across late runs, another location, an hour's and a
/// day's end, each against a cold read; `through_checkpoint`: the history goes through the
/// store's checkpoint before each publish.
fn kept_history_against_cold_reads(through_checkpoint: bool) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = \"{}\"\n\n[publish]\nwindow = \"24h\"\n\n[prober]\nlocation = \"a\"\n\n\
         [[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [[providers.models]]\nid = \"m0\"\n[[providers.models]]\nid = \"m1\"\n",
        dir.path().join("sonde.db").display()
    );
    let config = Config::parse(&dir.path().join("sonde.toml"), &text).unwrap();
    let day = 86_400_000;
    let hour = 3_600_000;
    // Ten days of history up to 20 minutes before an hour's end, late in a day.
    let t0 = (now_ms() / day) * day - day + 22 * hour + 40 * 60_000;
    let mut history = Vec::new();
    for index in 0..2 {
        history.extend(runs(&config, index, t0 - 10 * day, t0, 20 * 60_000));
    }
    // The only evidence of its kind, in the buckets that leave `7d` (past the day's end
    // below) and `24h` (past the hour's end).
    let (today, this_hour) = (t0 / day * day, t0 / hour * hour);
    history.push(singular(&config, 0, today - 6 * day + hour, "tools"));
    history.push(singular(&config, 1, today - 6 * day + hour, "tools"));
    history.push(singular(&config, 0, this_hour - 23 * hour + 60_000, "json"));
    write(&config, "a", history);
    let publish = |kept: &mut sonde::publish::history::History, now: i64| {
        let store = Store::open_read_only(&config.store).unwrap();
        if through_checkpoint && kept.at_ms().is_some() {
            let bytes = checkpoint::save(&store, kept).unwrap();
            assert!(bytes > 1_000, "{bytes} bytes");
            *kept = checkpoint::restore(&store, now)
                .unwrap()
                .expect("the checkpoint just saved");
        }
        let warm = Snapshot::load_with(&config, &store, now, kept).unwrap();
        let cold = Snapshot::load(&config, &store, now).unwrap();
        // Every figure to the last bit, the spend's float sum and the fields taken whole
        // from one bucket included.
        assert_eq!(format!("{:?}", warm.stats), format!("{:?}", cold.stats));
        (
            publish::build(&config, &warm).unwrap(),
            publish::build(&config, &cold).unwrap(),
            warm,
        )
    };
    let mut kept = sonde::publish::history::History::new();
    let (warm, cold, _) = publish(&mut kept, t0);
    assert_eq!(warm, cold, "the first publish reads everything");
    let before = kept.counters();
    assert!(before > 0, "the closed buckets are kept");

    // Across an hour's end: new runs, a run written late into a closed hour and a closed
    // day, and another location's runs.
    let t1 = t0 + 50 * 60_000;
    let mut more = runs(&config, 0, t0, t1, 5 * 60_000);
    more.push(common::scripted(
        &config,
        1,
        t0 - 3 * hour - 60_000,
        Outcome::Timeout,
        0.0,
    ));
    more.push(common::scripted(
        &config,
        1,
        t0 - 2 * day,
        Outcome::Ok,
        4_000.0,
    ));
    write(&config, "a", more);
    write(
        &config,
        "b",
        runs(&config, 1, t0 - 2 * hour, t1, 10 * 60_000),
    );
    let (warm, cold, snapshot) = publish(&mut kept, t1);
    assert_eq!(
        String::from_utf8_lossy(&warm["feed.json"]),
        String::from_utf8_lossy(&cold["feed.json"]),
        "windows and weights are exact at every publish"
    );
    assert_same_site(
        &warm,
        &cold,
        "the late runs are on the bar and heatmap at once",
    );
    let m1 = snapshot.stats_of("p/m1").unwrap();
    let week = m1.window(Window::D7).unwrap();
    assert_eq!(
        week.outcomes.get(&Outcome::Timeout),
        Some(&1),
        "the late run is counted"
    );
    let max = week.latency.ttft_ms.max.unwrap();
    assert!(
        (4_000.0..4_005.0).contains(&max),
        "and the late day's: {max}"
    );
    assert_eq!(m1.locations.len(), 2, "both locations");

    // Minutes later in the same hour: the two locations' closed sums, merged at the last
    // publish, are taken again where they did not change; where a late run changed one
    // (location a's 24 hours of m1), they are merged again.
    let t1b = t1 + 6 * 60_000;
    let mut late = runs(&config, 1, t1, t1b, 2 * 60_000);
    late.push(common::scripted(
        &config,
        1,
        t0 - 5 * hour,
        Outcome::Ok,
        3_000.0,
    ));
    write(&config, "a", late);
    write(&config, "b", runs(&config, 1, t1, t1b, 3 * 60_000));
    let (warm, cold, snapshot) = publish(&mut kept, t1b);
    assert_eq!(
        String::from_utf8_lossy(&warm["feed.json"]),
        String::from_utf8_lossy(&cold["feed.json"]),
        "the merged windows are the cold ones"
    );
    assert_same_site(&warm, &cold, "and so are the pages");
    let m1 = snapshot.stats_of("p/m1").unwrap();
    let runs_in = |window: &sonde::aggregate::WindowStats| window.outcomes.values().sum::<u64>();
    let of_locations: u64 = m1.locations.iter().map(|l| runs_in(&l.window)).sum();
    assert_eq!(
        runs_in(m1.window(Window::H24).unwrap()),
        of_locations,
        "the merged 24 hours hold every run of both locations"
    );
    assert!(of_locations > 0);

    // The last minutes before the hour's and the day's end: each publish reads ahead a
    // slice of the buckets that leave the windows then (the last reads them all).
    let end = today + day;
    for at in [end - 8 * 60_000, end - 60_000] {
        write(
            &config,
            "a",
            runs(&config, 1, at - 7 * 60_000, at, 2 * 60_000),
        );
        let (warm, cold, _) = publish(&mut kept, at);
        assert_same_site(&warm, &cold, "reading ahead");
    }
    // Runs written late, after that, into two of those buckets: m0's day leaving `7d` and
    // m1's hour leaving `24h`. They are read again at the turn, the two others taken from
    // what was read ahead (kept between publishes, not in a checkpoint).
    let late = vec![
        common::scripted(
            &config,
            0,
            today - 6 * day + 2 * hour + 7 * 60_000,
            Outcome::Ok,
            7_000.0,
        ),
        common::scripted(&config, 1, today + 31 * 60_000, Outcome::Ok, 6_000.0),
    ];
    write(&config, "a", late);

    // Past the day's end: the whole site is the cold one.
    let t2 = t0 + 2 * hour;
    write(&config, "a", runs(&config, 0, t1, t2, 5 * 60_000));
    let (warm, cold, _) = publish(&mut kept, t2);
    assert_same_site(&warm, &cold, "past the day's end");
    let taken = if through_checkpoint { 0 } else { 2 };
    assert_eq!(
        kept.taken_ahead(),
        taken,
        "buckets subtracted from those read ahead"
    );
}

/// Fails with `what` and the files that differ unless `warm` and `cold` are the same site.
fn assert_same_site(warm: &publish::Files, cold: &publish::Files, what: &str) {
    let differing: std::collections::BTreeSet<&String> = cold
        .keys()
        .chain(warm.keys())
        .filter(|k| warm.get(*k) != cold.get(*k))
        .collect();
    assert!(differing.is_empty(), "{what}: {differing:?}");
}

/// A store pruned past retention: a publisher that kept the runs and windows from before
/// forgets what the store deleted, and publishes what a cold read does.
#[test]
fn a_kept_history_forgets_what_the_store_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = \"{}\"\n\n[prober]\nlocation = \"a\"\n\n\
         [[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [[providers.models]]\nid = \"m0\"\n[[providers.models]]\nid = \"m1\"\n",
        dir.path().join("sonde.db").display()
    );
    let config = Config::parse(&dir.path().join("sonde.toml"), &text).unwrap();
    let day = 86_400_000;
    let now = (now_ms() / day) * day + 12 * 3_600_000 - day;
    // m0 ran all week; m1 only 5 and 4 days ago, so all its last runs are old.
    write(
        &config,
        "a",
        runs(&config, 0, now - 7 * day, now, 30 * 60_000),
    );
    write(
        &config,
        "a",
        runs(&config, 1, now - 5 * day, now - 4 * day, 60 * 60_000),
    );
    let mut kept = sonde::publish::history::History::new();
    let store = Store::open_read_only(&config.store).unwrap();
    let first = Snapshot::load_with(&config, &store, now, &mut kept).unwrap();
    assert!(!first.latest["p/m1"].is_empty(), "m1's old runs are listed");

    let mut writer = Store::open(&config.store, "a").unwrap();
    let pruned = writer
        .prune(&Prune {
            results_before_ms: now - 3 * day,
            rollups_before_ms: now - 3 * day,
            incidents_before_ms: i64::MIN,
        })
        .unwrap();
    assert!(pruned.results > 0 && pruned.rollups > 0);
    drop(writer);
    let later = now + 60_000;
    let warm = Snapshot::load_with(&config, &store, later, &mut kept).unwrap();
    let cold = Snapshot::load(&config, &store, later).unwrap();
    assert!(
        warm.latest.get("p/m1").is_none_or(|runs| runs.is_empty()),
        "m1's runs were all pruned"
    );
    assert_eq!(warm.latest, cold.latest, "the last runs are the store's");
    let week = |snapshot: &Snapshot| {
        let stats = snapshot.stats_of("p/m0").unwrap();
        stats
            .window(Window::D7)
            .unwrap()
            .outcomes
            .values()
            .sum::<u64>()
    };
    assert_eq!(
        week(&warm),
        week(&cold),
        "the week holds what the store does"
    );
    assert_eq!(
        String::from_utf8_lossy(&publish::build(&config, &warm).unwrap()["feed.json"]),
        String::from_utf8_lossy(&publish::build(&config, &cold).unwrap()["feed.json"]),
        "windows and weights are a cold read's"
    );
}

/// The config of a store in `dir` with `models` (each a `[[providers.models]]` table).
fn config_with(dir: &std::path::Path, models: &[&str]) -> Config {
    let mut text = format!(
        "[store]\npath = \"{}\"\n\n[prober]\nlocation = \"a\"\n\n\
         [[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        dir.join("sonde.db").display()
    );
    for model in models {
        text.push_str(&format!("[[providers.models]]\nid = \"{model}\"\n"));
    }
    Config::parse(&dir.join("sonde.toml"), &text).unwrap()
}

/// A checkpoint saved under a config is restored under one with a target more and one
/// fewer: the target that joined has its last runs read then — merged with those of its
/// runs the history took in as written since, before it was in the config — and every
/// file is a cold read's under the new config.
#[test]
fn a_checkpoint_restored_for_other_targets_publishes_what_a_cold_read_does() {
    let dir = tempfile::tempdir().unwrap();
    let all = config_with(dir.path(), &["m0", "m1", "m2"]);
    let before = config_with(dir.path(), &["m0", "m1"]);
    let after = config_with(dir.path(), &["m0", "m2"]);
    let now = now_ms() / 60_000 * 60_000;
    // An hour of every target's runs, m2's from another location (not in `before`).
    write(
        &all,
        "a",
        runs(&all, 0, now - 3_600_000, now - 600_000, 60_000),
    );
    write(
        &all,
        "a",
        runs(&all, 1, now - 3_600_000, now - 600_000, 60_000),
    );
    write(
        &all,
        "b",
        runs(&all, 2, now - 3_600_000, now - 600_000, 60_000),
    );
    let store = Store::open_read_only(&all.store).unwrap();
    let mut kept = sonde::publish::history::History::new();
    Snapshot::load_with(&before, &store, now - 540_000, &mut kept).unwrap();
    // Three more of m2's runs, taken in as written since.
    write(
        &all,
        "b",
        runs(&all, 2, now - 600_000, now - 420_000, 60_000),
    );
    Snapshot::load_with(&before, &store, now - 360_000, &mut kept).unwrap();
    checkpoint::save(&store, &kept).unwrap();
    write(
        &all,
        "a",
        runs(&all, 0, now - 300_000, now - 120_000, 60_000),
    );

    let mut restored = checkpoint::restore(&store, now).unwrap().expect("saved");
    let warm = Snapshot::load_with(&after, &store, now, &mut restored).unwrap();
    let cold = Snapshot::load(&after, &store, now).unwrap();
    let listed = |snapshot: &Snapshot| snapshot.latest.get("p/m2").map_or(0, |runs| runs.len());
    assert_eq!(
        listed(&cold),
        sonde::publish::LAST_RUNS,
        "m2 has more runs than listed"
    );
    assert_eq!(listed(&warm), listed(&cold), "m2's older runs were read");
    assert_eq!(format!("{:?}", warm.stats), format!("{:?}", cold.stats));
    assert_eq!(
        publish::build(&after, &warm).unwrap(),
        publish::build(&after, &cold).unwrap(),
        "the site of the new config"
    );
}

/// A store in `dir` with an hour of runs of `m0` (the config lists `m0` and `m1`), and the
/// checkpoint's bytes of a history that read it, not saved: (config, store, now, bytes).
fn an_hour_checkpointed(dir: &Path) -> (Config, Store, i64, Vec<u8>) {
    let config = config_with(dir, &["m0", "m1"]);
    let now = now_ms();
    write(&config, "a", runs(&config, 0, now - 3_600_000, now, 60_000));
    let store = Store::open_read_only(&config.store).unwrap();
    let mut kept = sonde::publish::history::History::new();
    Snapshot::load_with(&config, &store, now, &mut kept).unwrap();
    let bytes = checkpoint::encode(&kept).unwrap().bytes;
    (config, store, now, bytes)
}

/// The checkpoint keeps the incidents: a publisher restored from it reads only those
/// written since (a change the store's readers are not told of, made behind them, is not
/// seen), while one saved before they were a part of it (four parts) restores the others
/// and reads them whole.
#[test]
fn the_checkpoint_keeps_the_incidents_and_one_saved_before_them_reads_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store, now, bytes) = an_hour_checkpointed(dir.path());
    let cold = Snapshot::load(&config, &store, now).unwrap();
    assert!(!cold.incidents.is_empty(), "the hour has incidents");
    let db = rusqlite::Connection::open(dir.path().join("sonde.db")).unwrap();
    db.execute("UPDATE incidents SET cause = 'changed behind'", [])
        .unwrap();
    let later = now + 30_000;
    let restored_from = |bytes: &[u8]| {
        store.save_checkpoint(now, bytes).unwrap();
        let mut restored = checkpoint::restore(&store, now)
            .expect("restores")
            .expect("a checkpoint");
        Snapshot::load_with(&config, &store, later, &mut restored).unwrap()
    };
    let causes = |snapshot: &Snapshot| -> Vec<String> {
        let causes = snapshot.incidents.iter().map(|i| i.cause.to_string());
        causes.collect()
    };
    let kept = restored_from(&bytes);
    assert_eq!(kept.incidents, cold.incidents, "kept in the checkpoint");
    let before_them = restored_from(&common::checkpoint::without_the_last_part(&bytes));
    assert!(
        causes(&before_them).iter().all(|c| c == "changed behind"),
        "read whole: {:?}",
        causes(&before_them)
    );
    let cold = Snapshot::load(&config, &store, later).unwrap();
    assert_eq!(
        publish::build(&config, &before_them).unwrap(),
        publish::build(&config, &cold).unwrap()
    );
}

/// A checkpoint cut in half is left with its reason, and the publisher reads the store
/// whole.
#[test]
fn a_damaged_checkpoint_is_left_and_the_store_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store, now, bytes) = an_hour_checkpointed(dir.path());
    assert!(
        checkpoint::restore(&store, now).unwrap().is_none(),
        "no checkpoint yet"
    );
    store
        .save_checkpoint(now, &bytes[..bytes.len() / 2])
        .unwrap();
    let Err(err) = checkpoint::restore(&store, now) else {
        panic!("half a checkpoint was restored");
    };
    assert!(
        err.to_string().contains("; the store is read whole"),
        "{err}"
    );
    let cold = Snapshot::load(&config, &store, now).unwrap();
    assert_eq!(
        common::published_afresh(&config, &store, now),
        publish::build(&config, &cold).unwrap(),
        "read whole"
    );
}

/// A checkpoint whose runs were saved in another layout of that part: the other parts are
/// restored and the runs read whole. The runs' bytes are damaged too, so decoding them
/// instead of leaving them would fail the restore.
#[test]
fn a_checkpoint_part_in_another_layout_is_left_and_the_rest_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store, now, bytes) = an_hour_checkpointed(dir.path());
    let at_ms = now;
    let runs_left = common::checkpoint::with_a_part_in_another_layout(&bytes, 3);
    store.save_checkpoint(at_ms, &runs_left).unwrap();

    let mut restored = checkpoint::restore(&store, now)
        .expect("the other parts restore")
        .expect("a checkpoint");
    assert_eq!(restored.at_ms(), Some(at_ms));
    let later = now + 30_000;
    write(&config, "a", runs(&config, 1, now, later, 10_000));
    let from_parts = Snapshot::load_with(&config, &store, later, &mut restored).unwrap();
    let cold = Snapshot::load(&config, &store, later).unwrap();
    assert_eq!(
        publish::build(&config, &from_parts).unwrap(),
        publish::build(&config, &cold).unwrap()
    );
    assert!(!from_parts.latest.is_empty(), "the runs were read whole");
}

/// A checkpoint with one part damaged in the store, in its own layout: bytes that do not
/// inflate, or that inflate to something other than the part. That part is left and read
/// whole, the others restored, for each part in turn; what is published is a cold read's.
#[test]
fn a_damaged_checkpoint_part_is_left_and_the_rest_restored() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (config, store, now, bytes) = an_hour_checkpointed(dir.path());
    let mut not_the_part = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
    let plain = rmp_serde::to_vec(&("damaged", [1, 2, 3])).unwrap();
    not_the_part.write_all(&plain).unwrap();
    let not_the_part = not_the_part.finish().unwrap();
    let later = now + 30_000;
    write(&config, "a", runs(&config, 1, now, later, 10_000));
    let cold = publish::build(&config, &Snapshot::load(&config, &store, later).unwrap()).unwrap();
    for at in 0..5 {
        for damage in [vec![0xff; 64], not_the_part.clone()] {
            let damaged = common::checkpoint::with_a_part_damaged(&bytes, at, damage);
            store.save_checkpoint(now, &damaged).unwrap();
            let mut restored = checkpoint::restore(&store, now)
                .unwrap_or_else(|err| panic!("part {at} damaged failed the restore: {err}"))
                .expect("a checkpoint");
            assert_eq!(restored.at_ms(), Some(now));
            let snapshot = Snapshot::load_with(&config, &store, later, &mut restored).unwrap();
            assert_eq!(
                publish::build(&config, &snapshot).unwrap(),
                cold,
                "part {at} damaged"
            );
        }
    }
}

/// Another version's checkpoint in this layout: `sonde publish` leaves it and reads the
/// store whole; a server publishes from it (what that version would have), marked, and it
/// is never saved as this version's; the store read whole is what replaces it.
#[test]
fn another_versions_checkpoint_is_bridged_by_a_server_and_left_by_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), &["m0", "m1"]);
    let now = now_ms();
    write(
        &config,
        "a",
        runs(&config, 0, now - 7_200_000, now - 60_000, 60_000),
    );
    let store = Store::open_read_only(&config.store).unwrap();
    let mut kept = sonde::publish::history::History::new();
    Snapshot::load_with(&config, &store, now - 60_000, &mut kept).unwrap();
    let (bytes, other) =
        common::checkpoint::as_saved_by_another_version(&checkpoint::encode(&kept).unwrap().bytes);
    store.save_checkpoint(now - 60_000, &bytes).unwrap();
    write(&config, "a", runs(&config, 1, now - 60_000, now, 20_000));
    let cold = publish::build(&config, &Snapshot::load(&config, &store, now).unwrap()).unwrap();

    let mut left = sonde::publish::history::History::new();
    let leave = checkpoint::OtherVersion::Leave;
    let snapshot = Snapshot::load_restoring(&config, &store, now, &mut left, leave).unwrap();
    assert_eq!(left.other_version(), None, "read whole");
    assert_eq!(publish::build(&config, &snapshot).unwrap(), cold);

    let mut bridged = sonde::publish::history::History::new();
    let bridge = checkpoint::OtherVersion::Bridge;
    let snapshot = Snapshot::load_restoring(&config, &store, now, &mut bridged, bridge).unwrap();
    assert_eq!(bridged.other_version(), Some(other.as_str()));
    assert_eq!(
        publish::build(&config, &snapshot).unwrap(),
        cold,
        "the same sums, read by the same code"
    );
    let Err(err) = checkpoint::save(&store, &bridged) else {
        panic!("a bridged history was saved");
    };
    assert!(
        err.to_string()
            .contains(&format!("sonde {other}'s checkpoint")),
        "{err}"
    );

    let whole = sonde::publish::history::History::read_whole(&config, &store, now).unwrap();
    assert_eq!(whole.other_version(), None);
    assert_eq!(whole.at_ms(), Some(now));
    checkpoint::save(&store, &whole).unwrap();
    let own = checkpoint::restore(&store, now).unwrap().expect("saved");
    assert_eq!(own.other_version(), None, "this version's own again");
}
