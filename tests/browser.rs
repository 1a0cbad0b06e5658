//! The status page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/run`) driven over the WebDriver protocol. It loads
//! the served index and a target page, checks the key elements render and the console has
//! no errors, and saves screenshots under `target/test-output/`.
//!
//! Without chromedriver the test says so loudly and passes, unless `SONDE_REQUIRE_BROWSER=1`
//! (set by `.ci/run`), where its absence fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use sonde::config::Config;
use sonde::runner::{Runner, Scheduled};
use sonde::server::{self, Site};
use sonde::store::Store;
use sonde::store::writer::import;
use tokio_util::sync::CancellationToken;

fn find(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(binary))
        .find(|path| path.is_file())
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(binary: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if let Ok(response) = common::http()
            .get(format!("{}/status", driver.base))
            .send()
            .await
            && response.status().is_success()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not come up");
}

/// One WebDriver call; returns its `value`.
async fn call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let request = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http
            .post(url)
            .header("content-type", "application/json")
            .body(body.unwrap_or(json!({})).to_string()),
    };
    let response = request.send().await.expect("WebDriver call");
    let value: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    value["value"].clone()
}

/// A served site with real runs of two simulated targets.
async fn served_site(dir: &Path) -> (String, CancellationToken) {
    let sim = common::simulator(
        "[models.fast]\nttft_ms = 30\ntoken_ms = 2\n[models.broken]\nerror_rate = 1.0\nerror = \"server_error\"\n",
    )
    .await;
    let text = format!(
        "[store]\npath = \"{}\"\n{}",
        dir.join("sonde.db").display(),
        common::config_text(&sim.base_url(), "", &["fast", "broken"])
    );
    let config = Config::parse(&dir.join("sonde.toml"), &text).unwrap();
    let runner = Runner::new(&config).unwrap();
    let mut records = Vec::new();
    for target in &config.targets {
        for probe in ["ping", "stream"] {
            for _ in 0..3 {
                let probe = config.probes.get(probe).unwrap();
                records.push(runner.run(target, probe, Scheduled::now()).await);
            }
        }
    }
    import(
        Store::open(&config.store.path).unwrap(),
        config.store.clone(),
        config.health,
        records,
    )
    .unwrap();
    let site = Site::new(Arc::new(config));
    site.refresh().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(listener, site, shutdown.clone()));
    // The simulator must outlive the runs only; the site is served from the store.
    drop(sim);
    (format!("http://{addr}/"), shutdown)
}

/// One WebDriver session: `base` is `…/session/{id}`.
struct Session {
    http: reqwest::Client,
    base: String,
}

impl Session {
    async fn get(&self, path: &str) -> Value {
        call(&self.http, "GET", &format!("{}/{path}", self.base), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        call(
            &self.http,
            "POST",
            &format!("{}/{path}", self.base),
            Some(body),
        )
        .await
    }

    /// How many elements match a CSS selector.
    async fn count(&self, selector: &str) -> usize {
        let found = self
            .post(
                "elements",
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        found.as_array().map_or(0, Vec::len)
    }

    /// The WebDriver id of the first element matching a CSS selector.
    async fn element(&self, selector: &str) -> String {
        let found = self
            .post(
                "element",
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        found
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element matches {selector}: {found}"))
            .to_owned()
    }

    /// Saves a PNG screenshot under `target/test-output/`.
    async fn screenshot(&self, name: &str) {
        let shot = self.get("screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(output_dir().join(name), png).unwrap();
    }
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_chromium_without_console_errors() {
    let required = std::env::var("SONDE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver_binary), Some(chromium)) = (find("chromedriver"), find("chromium")) else {
        assert!(
            !required,
            "SONDE_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed \
             (apt-get install -y chromium chromium-driver)"
        );
        eprintln!(
            "\n*** SKIPPED the browser test: chromium and chromedriver are not installed. \
             `apt-get install -y chromium chromium-driver` to run it; .ci/run does. ***\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (url, shutdown) = served_site(dir.path()).await;
    let driver = start_driver(&driver_binary).await;
    let http = common::http();
    let profile = dir.path().join("chromium-profile");
    let session = call(
        &http,
        "POST",
        &format!("{}/session", driver.base),
        Some(json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", format!("--user-data-dir={}", profile.display()),
                         "--window-size=1200,1400"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}})),
    )
    .await;
    let id = session["sessionId"]
        .as_str()
        .expect("a WebDriver session")
        .to_owned();
    let page = Session {
        http,
        base: format!("{}/session/{id}", driver.base),
    };

    page.post("url", json!({"url": url})).await;
    assert_eq!(page.get("title").await, "LLM provider status");
    assert_eq!(page.count(".t").await, 2, "one row per target");
    for selector in [".bar", ".st.ok", ".st.down", "footer a[href='feed.json']"] {
        assert!(page.count(selector).await > 0, "{selector} is on the index");
    }
    page.screenshot("browser-index.png").await;

    let link = page.element("a[href^='t/sim_fast']").await;
    page.post(&format!("element/{link}/click"), json!({})).await;
    let heading = page.element("h1").await;
    let text = page.get(&format!("element/{heading}/text")).await;
    assert!(text.as_str().unwrap().starts_with("sim/"), "{text}");
    for selector in ["table", ".heat", "section h2"] {
        assert!(
            page.count(selector).await > 0,
            "{selector} is on the target page"
        );
    }
    page.screenshot("browser-target.png").await;

    let logs = page.post("se/log", json!({"type": "browser"})).await;
    let errors: Vec<&Value> = logs
        .as_array()
        .map(|entries| entries.iter().filter(|e| e["level"] == "SEVERE").collect())
        .unwrap_or_default();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    call(&page.http, "DELETE", &page.base, None).await;
    shutdown.cancel();
}
