//! The status page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/run`) driven over the WebDriver protocol. It loads
//! the served index, a target page and a group's comparison page at 1400 px and 390 px, in
//! light and dark, checks what a reader sees (no sideways scrolling, figures in columns,
//! unwrapped times, p95 drawn, axis labels inside their chart and sized between readable and
//! body text, legends), that the console has no errors, and saves a screenshot of each under
//! `target/test-output/`.
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
use sonde::server::Site;
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
    let port = common::free_port();
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
            .replace("id = \"fast\"\n", "id = \"fast\"\ngroup = \"chat\"\n")
            .replace("id = \"broken\"\n", "id = \"broken\"\ngroup = \"chat\"\n")
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
        Store::open(&config.store, &config.prober.location).unwrap(),
        &config,
        records,
    )
    .unwrap();
    let site = Site::new(Arc::new(config));
    site.refresh().await.unwrap();
    let (addr, shutdown) = common::serve_site(site).await;
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

    /// Runs `script` in the page and returns its value.
    async fn script(&self, script: &str) -> Value {
        self.post("execute/sync", json!({"script": script, "args": []}))
            .await
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

    page.post("url", json!({"url": url.clone()})).await;
    assert_eq!(page.get("title").await, "LLM provider status");
    assert_eq!(page.count(".t").await, 2, "one row per target");
    for selector in [
        ".bar",
        ".barx",
        ".legend .sw.i",
        ".st.ok",
        ".st.down",
        "footer a[href='feed.json']",
    ] {
        assert!(page.count(selector).await > 0, "{selector} is on the index");
    }
    let target = page
        .script("return document.querySelector(\"a[href^='t/sim_fast']\").getAttribute('href')")
        .await;
    let target = format!("{url}{}", target.as_str().unwrap());
    let group = page
        .script("return document.querySelector(\"h2 a[href^='g/']\").getAttribute('href')")
        .await;
    let group = format!("{url}{}", group.as_str().unwrap());
    let history = format!("{url}incidents.html");

    // Every page at a desktop's and a phone's width, in light and dark.
    for (width, scheme) in [
        (1400, "light"),
        (1400, "dark"),
        (390, "light"),
        (390, "dark"),
    ] {
        page.post("window/rect", json!({"width": width, "height": 1100}))
            .await;
        page.post(
            "goog/cdp/execute",
            json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]}}),
        )
        .await;
        for (name, address) in [
            ("index", &url),
            ("target", &target),
            ("group", &group),
            ("incidents", &history),
        ] {
            page.post("url", json!({"url": address})).await;
            let at = format!("{name} at {width} px, {scheme}");
            assert_eq!(
                page.script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
                    .await,
                true,
                "{at}: the page scrolls sideways; wide tables must scroll in their own box"
            );
            let background = page
                .script("return getComputedStyle(document.body).backgroundColor")
                .await;
            let want = if scheme == "dark" {
                "rgb(13, 17, 23)"
            } else {
                "rgb(255, 255, 255)"
            };
            assert_eq!(background, want, "{at}");
            page.screenshot(&format!("browser-{name}-{width}-{scheme}.png"))
                .await;
        }
        page.post("url", json!({"url": url.clone()})).await;
        // Timestamps stay on one line.
        let lines = page
            .script(
                "const t = document.querySelector('header time'); \
                 return t.getBoundingClientRect().height / parseFloat(getComputedStyle(t).lineHeight)",
            )
            .await;
        assert!(lines.as_f64().unwrap() < 1.5, "the time wraps: {lines}");
        if width == 1400 {
            // The figures of every row line up in columns.
            let lefts = page
                .script(
                    "return Array.from(document.querySelectorAll('.t .f')) \
                     .map(f => Array.from(f.children).map(c => Math.round(c.getBoundingClientRect().left)))",
                )
                .await;
            let rows = lefts.as_array().unwrap();
            assert!(rows.windows(2).all(|pair| pair[0] == pair[1]), "{lefts}");
        }

        page.post("url", json!({"url": target.clone()})).await;
        assert!(page.count("svg.chart circle.p95").await > 0, "p95 is drawn");
        assert!(page.count(".heat").await > 0 && page.count(".legend .sw.h0").await > 0);
        assert!(
            page.count("#days table").await > 0,
            "the bar's days as a table"
        );
        // Every axis label inside its chart, no larger than body text, readable on a phone.
        let labels = page
            .script(
                "const svg = document.querySelector('svg.chart').getBoundingClientRect(); \
                 return Array.from(document.querySelectorAll('svg.chart text.axis')) \
                   .filter(t => getComputedStyle(t).display !== 'none') \
                   .map(t => { const r = t.getBoundingClientRect(); \
                     return [r.left - svg.left, svg.right - r.right, r.height]; })",
            )
            .await;
        let body = 15.0;
        for label in labels.as_array().unwrap() {
            let [left, right, height] = [0, 1, 2].map(|i| label[i].as_f64().unwrap());
            assert!(
                left >= -0.5 && right >= -0.5,
                "{width}: a label is clipped: {label}"
            );
            assert!(
                height <= body * 1.45,
                "{width}: an axis label outgrows body text: {label}"
            );
            assert!(
                height >= 9.0,
                "{width}: an axis label is too small to read: {label}"
            );
        }

        page.post("url", json!({"url": group.clone()})).await;
        assert_eq!(
            page.count("figure.cmp svg").await,
            4,
            "the group's comparison charts"
        );
        // fast: all four figures; broken: availability (0 %) and price.
        assert_eq!(
            page.count("figure.cmp svg rect.barv").await,
            6,
            "a bar per known figure"
        );
    }

    let logs = page.post("se/log", json!({"type": "browser"})).await;
    let errors: Vec<&Value> = logs
        .as_array()
        .map(|entries| entries.iter().filter(|e| e["level"] == "SEVERE").collect())
        .unwrap_or_default();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // Last (a bare image makes the browser ask for /favicon.ico): a target's badge renders as an SVG image of its state, and the favicon is served.
    let badge = target.replace("/t/", "/badge/").replace(".html", ".svg");
    page.post("url", json!({"url": badge})).await;
    assert_eq!(
        page.script("return document.documentElement.tagName").await,
        "svg"
    );
    let width = page
        .script("return document.documentElement.getBoundingClientRect().width")
        .await;
    assert!(
        width.as_f64().unwrap() > 60.0,
        "the badge has a size: {width}"
    );
    assert!(
        page.script("return document.documentElement.textContent")
            .await
            .as_str()
            .unwrap()
            .contains("sim/fast"),
    );
    page.screenshot("browser-badge.png").await;
    page.post("url", json!({"url": format!("{url}favicon.svg")}))
        .await;
    assert_eq!(
        page.script("return document.querySelectorAll('circle').length")
            .await,
        1
    );
    call(&page.http, "DELETE", &page.base, None).await;
    shutdown.cancel();
}
