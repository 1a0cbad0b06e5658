//! Helpers shared by the integration tests: a simulator on 127.0.0.1, configs pointing at it,
//! one-run execution, and a raw fault server that sends exact bytes at exact times.

#![allow(dead_code)]

pub mod checkpoint;
pub mod daemon;
pub mod installed;
pub mod postgres;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use sonde::config::Config;
use sonde::result::{Outcome, ResultRecord};
use sonde::runner::{Runner, Scheduled, not_sent};
use sonde::simulator::{RunningSimulator, Scenario, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The site a publisher starting afresh at `now` builds from `store`: it restores the
/// store's checkpoint where one fits (another version's too, as a server does), else reads
/// the store whole.
pub fn published_afresh(
    config: &Config,
    store: &sonde::store::Store,
    now: i64,
) -> sonde::publish::Files {
    use sonde::publish::{Snapshot, build, checkpoint, history::History};
    let mut fresh = History::new();
    let bridge = checkpoint::OtherVersion::Bridge;
    let snapshot = Snapshot::load_restoring(config, store, now, &mut fresh, bridge).unwrap();
    build(config, &snapshot).unwrap()
}

/// Incidents opened, closed and copied between the publishes of a kept history, each
/// publish against a cold read at the same time: the same incidents in the same order and
/// the same site, on `config`'s store (two targets or more, written as its location).
/// A closed incident and one that ends off the bar's days are seen by the kept history;
/// those pruned past the rollups' retention were off its bar.
pub fn kept_incidents_against_cold_reads(config: &Config) {
    use sonde::aggregate::health::{IncidentKind, State};
    use sonde::publish::history::History;
    use sonde::store::{Copied, Incident, Prune, Store};
    let (minute, day) = (60_000, 86_400_000);
    let t = sonde::units::now_ms() / minute * minute;
    let runs = |index: usize, from: i64, n: i64, outcome: Outcome| -> Vec<ResultRecord> {
        (0..n)
            .map(|k| scripted(config, index, from + k * minute, outcome, 200.0))
            .collect()
    };
    let write = |records: Vec<ResultRecord>| {
        let store = Store::open(&config.store, &config.prober.location).unwrap();
        sonde::store::writer::import(store, config, records).unwrap();
    };
    let mut kept = History::new();
    let mut publish = |at: i64, what: &str| incidents_kept_and_cold(config, &mut kept, at, what);
    // m0 up, then down: an incident opens.
    let mut history = runs(0, t - 180 * minute, 5, Outcome::Ok);
    history.extend(runs(1, t - 180 * minute, 5, Outcome::Ok));
    history.extend(runs(0, t - 175 * minute, 4, Outcome::ServerError));
    write(history);
    let first = publish(t - 170 * minute, "read whole");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].end_ms, None, "open");

    // m0 back for more than an hour (its incident closes), then m1 down (another opens).
    write(runs(0, t - 170 * minute, 70, Outcome::Ok));
    write(runs(1, t - 100 * minute, 4, Outcome::ServerError));
    let second = publish(t - 95 * minute, "one closed, one opened");
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second[1].end_ms.is_some(), "m0's closed: {second:?}");

    // Copied in (a store migrated): one of the bar's days, one older.
    let copied = |start_ms: i64| Incident {
        kind: IncidentKind::Health,
        target: config.targets[0].id.as_str().into(),
        location: "elsewhere".into(),
        state: State::Degraded,
        cause: "copied".into(),
        start_ms,
        end_ms: Some(start_ms + 10 * minute),
    };
    let mut copier = Store::open(&config.store, "elsewhere").unwrap();
    let incidents = vec![copied(t - 50 * day), copied(t - 200 * day)];
    copier
        .copy(&Copied {
            incidents,
            ..Copied::default()
        })
        .unwrap();
    drop(copier);
    let third = publish(t - 90 * minute, "copied");
    assert_eq!(third.len(), 3, "{third:?}");

    // Ninety days on, only m1's open incident is on the bar.
    let fourth = publish(t + 90 * day - 100 * minute, "ended before the bar's days");
    assert_eq!(fourth.len(), 1, "{fourth:?}");
    assert_eq!(fourth[0].end_ms, None);

    // Past the rollups' retention, pruning deletes every ended incident and leaves the open
    // one: the bar, kept or read cold, is what it was.
    let later = t + i64::from(config.store.rollup_retention_days) * day + day;
    let unpruned = publish(later, "before pruning");
    let mut writer = Store::open(&config.store, &config.prober.location).unwrap();
    let pruned = writer.prune(&Prune::at(&config.store, later)).unwrap();
    assert_eq!(pruned.incidents, 3, "m0's and the two copied");
    assert_eq!(
        writer.incidents(i64::MIN).unwrap().as_slice(),
        &unpruned[..]
    );
    drop(writer);
    assert_eq!(publish(later, "pruned"), unpruned);
}

/// Location `b` of `config`'s store (two targets or more, written as `a` and `b`) retired
/// while `a` goes on: refused while `b`'s writer holds its lock, then gone from the
/// fleet's list and every target's, counted in no figure, its open incident closed, and
/// back once its prober writes again; each publish, kept and cold, the same.
pub fn retired_location_against_cold_reads(config: &Config) {
    use sonde::publish::history::History;
    use sonde::store::{Batch, Retired, Store, StoreError};
    let minute = 60_000;
    let t = sonde::units::now_ms() / minute * minute;
    let write = |location: &str, index: usize, from: i64, n: i64, outcome: Outcome| {
        let mut config = config.clone();
        config.prober.location = location.to_owned();
        let records = (0..n).map(|k| scripted(&config, index, from + k * minute, outcome, 200.0));
        let store = Store::open(&config.store, location).unwrap();
        sonde::store::writer::import(store, &config, records.collect::<Vec<_>>()).unwrap();
    };
    // a sees both targets up; b sees m0 down (an incident opens) and m1 up.
    write("a", 0, t - 30 * minute, 30, Outcome::Ok);
    write("a", 1, t - 30 * minute, 30, Outcome::Ok);
    write("b", 0, t - 30 * minute, 30, Outcome::ServerError);
    write("b", 1, t - 30 * minute, 30, Outcome::Ok);
    let mut kept = History::new();
    let mut publish = |at: i64, what: &str| {
        let store = Store::open_read_only(&config.store).unwrap();
        let warm = sonde::publish::Snapshot::load_with(config, &store, at, &mut kept).unwrap();
        let cold = sonde::publish::Snapshot::load(config, &store, at).unwrap();
        let (warm_site, cold_site) = (
            sonde::publish::build(config, &warm).unwrap(),
            sonde::publish::build(config, &cold).unwrap(),
        );
        assert!(warm_site == cold_site, "{what}: the sites differ");
        warm
    };
    let names = |snapshot: &sonde::publish::Snapshot| -> Vec<String> {
        let listed = snapshot.locations.iter().map(|l| l.location.clone());
        listed.collect()
    };
    let seen_from = |snapshot: &sonde::publish::Snapshot| -> Vec<String> {
        let stats = snapshot.stats_of(&config.targets[0].id).unwrap();
        stats.locations.iter().map(|l| l.location.clone()).collect()
    };
    let runs_counted = |snapshot: &sonde::publish::Snapshot| -> u64 {
        let stats = snapshot.stats_of(&config.targets[0].id).unwrap();
        let hour = stats.window(sonde::aggregate::Window::H1).unwrap();
        hour.outcomes.values().sum()
    };
    let before = publish(t, "both in service");
    assert_eq!(names(&before), ["a", "b"]);
    assert_eq!(seen_from(&before), ["a", "b"]);
    assert_eq!(runs_counted(&before), 60, "both locations' runs");
    assert_eq!(before.incidents.len(), 1, "{:?}", before.incidents);
    assert_eq!(before.incidents[0].end_ms, None);

    // Refused while b's prober runs: its writer holds b's lock.
    let mut running = Store::open(&config.store, "b").unwrap();
    running.write(&Batch::default()).unwrap();
    let refused = Store::open(&config.store, "b").and_then(|mut b| b.retire(t));
    assert!(
        matches!(refused, Err(StoreError::Locked { .. })),
        "{refused:?}"
    );
    drop(running);
    let mut nowhere = Store::open(&config.store, "nowhere").unwrap();
    assert_eq!(nowhere.retire(t).unwrap(), None, "no such location");
    drop(nowhere);
    let mut b = Store::open(&config.store, "b").unwrap();
    let retired = b.retire(t + minute).unwrap();
    assert_eq!(
        retired,
        Some(Retired {
            incidents_closed: 1,
            states_forgotten: 2
        })
    );
    drop(b);
    let after = publish(t + 2 * minute, "b retired");
    assert_eq!(names(&after), ["a"]);
    assert_eq!(seen_from(&after), ["a"]);
    assert_eq!(runs_counted(&after), 30, "a's runs only");
    assert_eq!(
        after.incidents[0].end_ms,
        Some(t + minute),
        "closed when retired"
    );

    // b's prober back in service.
    write("b", 1, t + 2 * minute, 3, Outcome::Ok);
    let back = publish(t + 5 * minute, "b back");
    assert_eq!(names(&back), ["a", "b"]);
    assert!(!back.locations[1].stale);
}

/// The incidents `kept` publishes at `at`, after checking that they and the whole site are
/// what a cold read of `config`'s store publishes then (`what` says which step failed).
pub fn incidents_kept_and_cold(
    config: &Config,
    kept: &mut sonde::publish::history::History,
    at: i64,
    what: &str,
) -> std::sync::Arc<Vec<sonde::store::Incident>> {
    use sonde::publish::{Snapshot, build};
    let store = sonde::store::Store::open_read_only(&config.store).unwrap();
    let warm = Snapshot::load_with(config, &store, at, kept).unwrap();
    let cold = Snapshot::load(config, &store, at).unwrap();
    assert_eq!(warm.incidents, cold.incidents, "{what}");
    assert!(
        build(config, &warm).unwrap() == build(config, &cold).unwrap(),
        "{what}: the sites differ"
    );
    warm.incidents
}

/// Starts the simulator with scenario text on a free loopback port.
pub async fn simulator(scenario: &str) -> RunningSimulator {
    let scenario = Scenario::parse(Path::new("scenario.toml"), scenario).expect("test scenario");
    Simulator::new(scenario, 42)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind simulator")
}

/// A config with one provider `sim` at `base_url` (extra provider keys in `provider_extra`)
/// serving `models`, each with every built-in probe.
pub fn config(base_url: &str, provider_extra: &str, models: &[&str]) -> Config {
    Config::parse(
        Path::new("test.toml"),
        &config_text(base_url, provider_extra, models),
    )
    .expect("test config")
}

/// The text of [`config`].
pub fn config_text(base_url: &str, provider_extra: &str, models: &[&str]) -> String {
    provider_text("sim", "openai", base_url, provider_extra, models)
}

/// The wire formats every behavioural test runs against.
pub const KINDS: [&str; 3] = ["openai", "anthropic", "gemini"];

/// The base URL under which the simulator serves `kind`.
pub fn base_url(sim: &RunningSimulator, kind: &str) -> String {
    if kind == "gemini" {
        sim.gemini_base_url()
    } else {
        sim.base_url()
    }
}

/// Like [`config`], for a provider of `kind` served by `sim`.
pub fn kind_config(
    sim: &RunningSimulator,
    kind: &str,
    provider_extra: &str,
    models: &[&str],
) -> Config {
    let text = provider_text("sim", kind, &base_url(sim, kind), provider_extra, models);
    Config::parse(Path::new("test.toml"), &text).expect("test config")
}

/// A `[[providers]]` table named `name` of `kind` serving `models` with `ping` and `stream`.
pub fn provider_text(
    name: &str,
    kind: &str,
    base_url: &str,
    provider_extra: &str,
    models: &[&str],
) -> String {
    let mut text = format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\n{provider_extra}\n"
    );
    for model in models {
        text.push_str(&format!(
            "[[providers.models]]\nid = \"{model}\"\ninput_price = 1.0\noutput_price = 2.0\nprobes = [\"ping\", \"stream\"]\n"
        ));
    }
    text
}

/// Runs `probe` once against `sim/model`.
pub async fn run(config: &Config, model: &str, probe: &str) -> ResultRecord {
    let probe = config.probes.get(probe).expect("probe");
    run_probe(config, model, probe).await
}

/// One step of a raw response: wait `delay_ms` after the previous step, then write `bytes`.
pub type Step = (u64, Vec<u8>);

/// What the raw server does after its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Close the connection.
    Close,
    /// Keep it open, silent, for a minute.
    Hold,
}

/// Serves the same scripted bytes to every connection, after reading the request.
pub async fn raw_server(script: Vec<Step>, after: After) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            tokio::spawn(serve_script(stream, script, after));
        }
    });
    addr
}

async fn serve_script(mut stream: TcpStream, script: Vec<Step>, after: After) {
    let _ = stream.set_nodelay(true);
    read_request(&mut stream).await;
    for (delay_ms, bytes) in script {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
    if after == After::Hold {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Writes `bytes` to every connection as soon as it is accepted, without reading, then
/// closes it: a server that does not speak the protocol the client expects.
pub async fn greeting_server(bytes: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(bytes).await;
        }
    });
    addr
}

/// Reads request headers and a Content-Length body, so the client is done writing.
async fn read_request(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A response head for a body that ends when the connection closes.
pub fn head(status: &str, content_type: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// An OpenAI streaming chunk carrying `delta`.
pub fn chunk(delta: &str) -> String {
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}]}}\n\n"
    )
}

/// An OpenAI finish chunk.
pub fn finish(reason: &str) -> String {
    format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"{reason}\"}}]}}\n\n"
    )
}

/// The usage tail with empty `choices`.
pub fn usage(prompt: u32, completion: u32) -> String {
    format!(
        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n\n",
        prompt + completion
    )
}

/// The terminal event.
pub const DONE: &str = "data: [DONE]\n\n";

/// A config for a raw server at `addr` with model `m` and the `ping` probe.
pub fn raw_config(addr: SocketAddr, provider_extra: &str) -> Config {
    config(&format!("http://{addr}/v1"), provider_extra, &["m"])
}

/// Runs `probe` once against `sim/model`, as given (a built-in probe changed by the test).
pub async fn run_probe(config: &Config, model: &str, probe: &sonde::probe::Probe) -> ResultRecord {
    let runner = Runner::new(config).expect("runner");
    let target = config
        .targets
        .iter()
        .find(|target| target.model.id == model)
        .expect("target in config");
    runner.run(target, probe, Scheduled::now()).await
}

/// The scenario the integration tests serve (`tests/common/scenario.toml`).
pub const SCENARIO: &str = include_str!("scenario.toml");

/// Stops `child` with SIGTERM, as a service manager would, and waits for its exit.
pub async fn terminate(child: std::process::Child) -> std::process::Output {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("waiting task")
}

/// Checks that a second `sonde run` on a store in use exited 1 saying so; its stderr.
pub fn refused_as_second_daemon(output: &std::process::Output) -> String {
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        message.contains("in use by another sonde daemon"),
        "{message}"
    );
    message
}

/// A loopback port nothing listens on now, for a server a test starts by its address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP client for talking to servers under test.
/// Serves `site` on a free port of 127.0.0.1 until the returned token is cancelled.
pub async fn serve_site(
    site: std::sync::Arc<sonde::server::Site>,
) -> (SocketAddr, tokio_util::sync::CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sonde::server::serve(listener, site, shutdown.clone()));
    (addr, shutdown)
}

pub fn http() -> reqwest::Client {
    sonde::runner::transport::install_crypto();
    reqwest::Client::new()
}

/// The value of the unlabelled sample `name` in a Prometheus exposition `text`.
pub fn metric<T: std::str::FromStr>(text: &str, name: &str) -> T {
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name}: {text}"));
    let value = line.rsplit(' ').next().unwrap();
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {line}"))
}

/// GETs `url` and returns its body as text.
pub async fn get_text(url: &str) -> String {
    http()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// GETs `url` and parses its body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let body = http
        .get(url)
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    serde_json::from_slice(&body).expect("a JSON body")
}

/// A scripted `stream` run of target `index` of `config` at unix ms `at`: `outcome`, and
/// when ok a streamed answer with TTFT `ttft` ms.
pub fn scripted(
    config: &Config,
    index: usize,
    at: i64,
    outcome: Outcome,
    ttft: f64,
) -> ResultRecord {
    let scheduled = Scheduled {
        at: std::time::Instant::now(),
        wall: UNIX_EPOCH + Duration::from_millis(at as u64),
    };
    let probe = config.probes.get("stream").unwrap();
    let mut r = not_sent(
        &config.targets[index],
        probe,
        scheduled,
        outcome,
        String::new(),
    );
    if outcome == Outcome::Ok {
        r.error = None;
        r.ttft_ms = Some(ttft);
        r.e2e_ms = Some(ttft + 300.0);
        r.tokens_per_s = Some(80.0);
        r.streamed = true;
        r.cap_streaming = Some(true);
    } else {
        r.error = Some(format!("scripted {outcome}"));
    }
    r
}

/// How a target behaves in a scripted history.
#[derive(Debug, Clone, Copy)]
pub enum Plays {
    /// Always up, with this TTFT in ms.
    Up(f64),
    /// Failing every run (a server error).
    Down,
    /// Up and fast, but answering with another model (`tiny`).
    Substitutes,
}

/// Twenty `stream` runs of each target of `config` over the last ten minutes, target `i`
/// as `plays[i]` says, stored in `config`'s store.
pub fn play(config: &Config, plays: &[Plays]) {
    let now = sonde::units::now_ms();
    let mut history = Vec::new();
    for i in 0..20 {
        let at = now - 600_000 + i * 20_000;
        for (index, plays) in plays.iter().enumerate() {
            history.push(match *plays {
                Plays::Up(ttft) => scripted(config, index, at, Outcome::Ok, ttft),
                Plays::Down => scripted(config, index, at, Outcome::ServerError, 0.0),
                Plays::Substitutes => {
                    let mut swapped = scripted(config, index, at, Outcome::Ok, 50.0);
                    swapped.served_model = Some("tiny".into());
                    swapped.model_substituted = true;
                    swapped
                }
            });
        }
    }
    let store = sonde::store::Store::open(&config.store, &config.prober.location).unwrap();
    sonde::store::writer::import(store, config, history).unwrap();
}

/// Waits until `url` answers 2xx; panics with `log()` when `child` (the server) exits first or
/// `limit` passes. Returns how long it took.
pub async fn wait_until_up(
    url: &str,
    child: &mut std::process::Child,
    limit: std::time::Duration,
    log: impl Fn() -> String,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    let http = http();
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return started.elapsed();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{url}: the server exited ({status}): {}", log());
        }
        assert!(
            started.elapsed() < limit,
            "{url} is not up within {limit:?}: {}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A server process a test started, on `port`, writing to `log`; killed when dropped.
pub struct Spawned {
    /// The process.
    pub child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its stdout and stderr.
    pub log: std::path::PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `n` chat requests for `group` to a LiteLLM router's `/chat/completions` at `base`
/// with `key`; how many each deployment served (by `x-litellm-model-id`). Every request
/// must succeed.
pub async fn litellm_split(
    base: &str,
    key: &str,
    group: &str,
    n: usize,
) -> std::collections::BTreeMap<String, u32> {
    let http = http();
    let body = serde_json::json!({
        "model": group,
        "messages": [{"role": "user", "content": "Reply with the single word: pong"}],
    })
    .to_string();
    let mut served = std::collections::BTreeMap::new();
    for _ in 0..n {
        let response = http
            .post(format!("{base}/chat/completions"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let id = response
            .headers()
            .get("x-litellm-model-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{status}: {text}");
        *served.entry(id.unwrap_or_default()).or_default() += 1;
    }
    served
}
