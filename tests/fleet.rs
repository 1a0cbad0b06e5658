//! A fleet on one real PostgreSQL server (started per test by `common::postgres`): probers in
//! three locations as separate `sonde run` processes. One location that sees a target fail
//! makes it `partial`, all three make it `down`; a prober killed with `kill -9` goes `stale`
//! and stops counting; when the publishing daemon is killed another publishes within two
//! intervals; daemons that only serve keep a checkpoint; three probers sharing a provider never pass its rate limit or its budget
//! together.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use sonde::aggregate::health::State;
use sonde::config::Config;
use sonde::publish::{self, Snapshot, feed, metrics};
use sonde::result::Outcome;
use sonde::store::Store;
use sonde::units::now_ms;

/// The variable holding the fleet's database URL in a test's probers' environment: one per
/// test, since tests share this process's environment.
fn url_var(test: &str) -> String {
    format!("SONDE_TEST_FLEET_{}_URL", test.to_uppercase())
}
/// An address nothing listens on: every request to it fails to connect.
const DEAD: &str = "http://127.0.0.1:9/v1";
const SCENARIO: &str = "[default]\ntoken_ms = 1\n";

/// One test's fleet: its database and its folder of prober configs.
struct Fleet {
    url: String,
    var: String,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new(cluster: &common::postgres::Cluster, test: &str) -> Fleet {
        let var = url_var(test);
        let url = cluster.database(test);
        // SAFETY: the variable is this test's own, set before any store reads it.
        unsafe { std::env::set_var(&var, &url) };
        Fleet {
            url,
            var,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `<dir>/<location>/sonde.toml`: `[prober] location`, the fleet's store and
    /// `body`.
    fn config(&self, location: &str, body: &str) -> PathBuf {
        let folder = self.dir.path().join(location);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join("sonde.toml"),
            format!(
                "[prober]\nlocation = \"{location}\"\n\n[store]\nurl_env = \"{}\"\n\n{body}",
                self.var
            ),
        )
        .unwrap();
        folder
    }

    /// Starts the prober of `folder`.
    fn start(&self, folder: &Path) -> Daemon {
        Daemon::start(folder, &[(self.var.as_str(), self.url.as_str())])
    }
}

/// The config of `folder`.
fn load(folder: &Path) -> Config {
    Config::load(&folder.join("sonde.toml")).unwrap()
}

/// Polls `check` on the published view (a snapshot of the store and its feed) every 250 ms
/// until it returns `Some`, for at most `limit`.
fn published<T>(
    config: &Config,
    limit: Duration,
    what: &str,
    check: impl Fn(&Snapshot, &feed::Feed) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    let store = loop {
        // The first prober creates the store.
        match Store::open_read_only(&config.store) {
            Ok(store) => break store,
            Err(err) => assert!(Instant::now() < deadline, "no store: {err}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    loop {
        let snapshot = Snapshot::load(config, &store, now_ms()).unwrap();
        let feed = feed::build(config, &snapshot.stats, &snapshot.locations, now_ms());
        if let Some(found) = check(&snapshot, &feed) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            String::from_utf8_lossy(&publish::feed_json(&feed).unwrap())
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn target<'a>(feed: &'a feed::Feed, id: &str) -> &'a feed::FeedTarget {
    feed.targets.iter().find(|t| t.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_down_in_one_location_is_partial_in_all_down_and_a_silent_location_goes_stale() {
    let Some(cluster) = common::postgres::start("fleet_quorum") else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let fleet = Fleet::new(&cluster, "quorum");
    // `sim` answers from b and c; from a its address is unreachable (a regional outage).
    // `gone` is unreachable from everywhere. A one-second window keeps the shared rate
    // leases' wait (two renewals and a window) short.
    let body = |sim_url: &str| {
        format!(
            "[schedules]\nping = \"every 1s\"\n\n\
             [[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{sim_url}\"\n\
             rpm = 100\nrate_window = \"1s\"\nmax_concurrency = 4\n\
             [[providers.models]]\nid = \"x\"\nprobes = [\"ping\"]\n\n\
             [[providers]]\nname = \"gone\"\nkind = \"openai\"\nbase_url = \"{DEAD}\"\n\
             rpm = 100\nrate_window = \"1s\"\nmax_concurrency = 4\n\
             [[providers.models]]\nid = \"y\"\nprobes = [\"ping\"]\n"
        )
    };
    let a = fleet.config("a", &body(DEAD));
    let b = fleet.config("b", &body(&sim.base_url()));
    let c = fleet.config("c", &body(&sim.base_url()));
    let mut probers: Vec<Daemon> = [&a, &b, &c].iter().map(|f| fleet.start(f)).collect();
    let config = load(&b);

    tokio::task::block_in_place(|| {
        let stats = published(
            &config,
            Duration::from_secs(60),
            "partial and down",
            |s, f| {
                let x = s.stats_of("sim/x")?;
                let fresh = f.locations.iter().filter(|l| !l.stale).count();
                // b and c judge it healthy only after a few runs: wait for their verdict.
                let healthy = |loc: &str| {
                    x.locations
                        .iter()
                        .any(|l| l.location == loc && l.state == State::Healthy)
                };
                (fresh == 3
                    && x.state == State::Partial
                    && x.down_in() == ["a"]
                    && healthy("b")
                    && healthy("c")
                    && s.stats_of("gone/y")?.state == State::Down)
                    .then(|| x.clone())
            },
        );
        // Each location's view is its own runs; the global view merges the counted ones.
        let runs = |loc: &str| {
            stats
                .locations
                .iter()
                .find(|l| l.location == loc)
                .map_or(0, |l| l.window.attempts)
        };
        let global = stats.window(sonde::aggregate::Window::H1).unwrap();
        assert!(runs("a") > 0 && runs("b") > 0 && runs("c") > 0);
        assert_eq!(global.attempts, runs("a") + runs("b") + runs("c"));
        let ok_b = stats.locations.iter().find(|l| l.location == "b").unwrap();
        assert_eq!(ok_b.state, State::Healthy);

        // What a user sees: the feed keeps the partial target routable at a lower score,
        // the page says where it is down, /metrics has each location's state.
        let store = Store::open_read_only(&config.store).unwrap();
        let snapshot = Snapshot::load(&config, &store, now_ms()).unwrap();
        let feed = feed::build(&config, &snapshot.stats, &snapshot.locations, now_ms());
        let x = target(&feed, "sim/x");
        assert_eq!(x.state, State::Partial);
        assert!(x.routable, "a regional outage is not a global one");
        assert!(
            x.notes
                .iter()
                .any(|n| n.contains("down in 1 of the 3 locations")),
            "{:?}",
            x.notes
        );
        let files = publish::build(&config, &snapshot).unwrap();
        let (_, page) = files
            .iter()
            .find(|(name, _)| name.starts_with("t/sim_x-"))
            .unwrap();
        let page = String::from_utf8_lossy(page);
        assert!(page.contains("Partial outage") && page.contains("down in a"));
        assert!(page.contains("By location"));
        assert!(!target(&feed, "gone/y").routable);
        let json: serde_json::Value =
            serde_json::from_slice(&publish::feed_json(&feed).unwrap()).unwrap();
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../schemas/feed.v1.json")).unwrap();
        assert!(jsonschema::is_valid(&schema, &json), "{json:#}");
        let text = metrics::render(&snapshot.stats, &feed, None);
        assert!(text.contains(
            "sonde_target_state_by_location{target=\"gone/y\",location=\"c\",state=\"down\"} 1"
        ));
        assert!(text.contains("sonde_location_stale{location=\"a\"} 0"));

        // kill -9 the prober in a: after three of its shortest schedules (3 s) it is stale,
        // and without it nobody sees sim/x down.
        let mut killed = probers.remove(0).process();
        killed.kill().unwrap();
        killed.wait().unwrap();
        published(
            &config,
            Duration::from_secs(30),
            "a stale, x healthy",
            |s, f| {
                let a = f.locations.iter().find(|l| l.location == "a")?;
                (a.stale
                    && !a.counted
                    && s.stats_of("sim/x")?.state == State::Healthy
                    && s.stats_of("gone/y")?.state == State::Down)
                    .then_some(())
            },
        );
    });
    for mut prober in probers {
        common::terminate(prober.process()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_publishing_daemon_dies_another_publishes_within_two_intervals() {
    let Some(cluster) = common::postgres::start("fleet_failover") else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let fleet = Fleet::new(&cluster, "failover");
    let site = fleet.dir.path().join("site");
    let every = Duration::from_secs(2);
    let body = format!(
        "[publish]\nout = \"{}\"\nevery = \"2s\"\n\n[schedules]\nping = \"every 1s\"\n\n\
         [[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         rpm = 100\nrate_window = \"1s\"\n[[providers.models]]\nid = \"x\"\nprobes = [\"ping\"]\n",
        site.display(),
        sim.base_url()
    );
    let folders = ["p1", "p2"].map(|location| fleet.config(location, &body));
    let mut daemons: Vec<Daemon> = folders.iter().map(|f| fleet.start(f)).collect();
    let generated = |site: &Path| -> Option<i64> {
        let text = std::fs::read_to_string(site.join("feed.json")).ok()?;
        let feed: serde_json::Value = serde_json::from_str(&text).ok()?;
        chrono::DateTime::parse_from_rfc3339(feed["generated_at"].as_str()?)
            .ok()
            .map(|at| at.timestamp_millis())
    };
    tokio::task::block_in_place(|| {
        let holds = |d: &Daemon| !d.lines("this daemon holds the publisher lock").is_empty();
        let stands_by = |d: &Daemon| {
            !d.lines("another daemon holds the publisher lock")
                .is_empty()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(daemons.iter().any(holds) && daemons.iter().any(stands_by)) {
            assert!(Instant::now() < deadline, "no publisher and stand-by");
            std::thread::sleep(Duration::from_millis(100));
        }
        let publisher = daemons.iter().position(holds).unwrap();
        assert_eq!(
            daemons.iter().filter(|d| holds(d)).count(),
            1,
            "one publisher at a time"
        );
        assert!(generated(&site).is_some(), "the publisher wrote the site");

        let mut dead = daemons.remove(publisher).process();
        dead.kill().unwrap();
        let killed_at = now_ms();
        let killed = Instant::now();
        dead.wait().unwrap();
        let survivor = &daemons[0];
        while !(holds(survivor) && generated(&site).is_some_and(|at| at > killed_at)) {
            assert!(
                killed.elapsed() < 2 * every,
                "no daemon published within 2 × publish.every of the kill: {}",
                survivor.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("took over in {} ms", killed.elapsed().as_millis());

        // A daemon started now starts from the publishers' checkpoint, not a cold read.
        daemons.push(fleet.start(&fleet.config("p3", &body)));
        let started = Instant::now();
        while daemons[1]
            .lines("restored the publisher's checkpoint")
            .is_empty()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the new daemon restored no checkpoint: {}",
                daemons[1].text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for mut daemon in daemons {
        common::terminate(daemon.process()).await;
    }
}

/// Daemons that only serve (no `[publish] out`, no gateways) never take the publisher lock,
/// but one of them holds the checkpoint lock and saves the checkpoint; when it is killed,
/// another takes the lock over and saves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_daemons_that_only_serve_keeps_a_checkpoint() {
    let Some(cluster) = common::postgres::start("fleet_serving") else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let fleet = Fleet::new(&cluster, "serving");
    let body = |port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[publish]\nevery = \"1s\"\n\n\
             [schedules]\nping = \"every 1s\"\n\n\
             [[providers]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             rpm = 100\nrate_window = \"1s\"\n[[providers.models]]\nid = \"x\"\nprobes = [\"ping\"]\n",
            sim.base_url()
        )
    };
    let folders = ["s1", "s2"].map(|location| fleet.config(location, &body(common::free_port())));
    let config = load(&folders[0]);
    let mut daemons: Vec<Daemon> = folders.iter().map(|f| fleet.start(f)).collect();
    tokio::task::block_in_place(|| {
        let holds = |d: &Daemon| !d.lines("this daemon holds the checkpoint lock").is_empty();
        let stands_by = |d: &Daemon| {
            !d.lines("another daemon holds the checkpoint lock")
                .is_empty()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(daemons.iter().any(holds) && daemons.iter().any(stands_by)) {
            assert!(
                Instant::now() < deadline,
                "no daemon took the checkpoint lock"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The store exists once a daemon published from it.
        let store = Store::open_read_only(&config.store).unwrap();
        while store.checkpoint().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "no checkpoint saved by a serving fleet"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(daemons.iter().filter(|d| holds(d)).count(), 1);
        for daemon in &daemons {
            assert!(
                daemon.lines("publisher lock").is_empty(),
                "a daemon that only serves asked for the publisher lock: {}",
                daemon.text()
            );
        }
        let saver = daemons.iter().position(holds).unwrap();
        let mut dead = daemons.remove(saver).process();
        dead.kill().unwrap();
        dead.wait().unwrap();
        let killed = Instant::now();
        while !holds(&daemons[0]) {
            assert!(
                killed.elapsed() < Duration::from_secs(20),
                "no daemon took the checkpoint lock over: {}",
                daemons[0].text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for mut daemon in daemons {
        common::terminate(daemon.process()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probers_sharing_a_provider_share_its_rate_limit_and_its_budget() {
    let Some(cluster) = common::postgres::start("fleet_limits") else {
        return;
    };
    let sim = common::simulator(SCENARIO).await;
    let fleet = Fleet::new(&cluster, "limits");
    // `shared`: 12 requests a minute for the whole fleet, asked for 4 times a second by each
    // prober. `paid`: a token budget some twenty runs deep, asked for every second by each.
    let body = |budget: u64| {
        format!(
            "[schedules]\nping = \"every 1s\"\n\n\
             [[providers]]\nname = \"shared\"\nkind = \"openai\"\nbase_url = \"{0}\"\n\
             rpm = 12\nmax_concurrency = 4\n\
             [[providers.models]]\nid = \"m1\"\nprobes = [\"ping\"]\n\
             [[providers.models]]\nid = \"m2\"\nprobes = [\"ping\"]\n\
             [[providers.models]]\nid = \"m3\"\nprobes = [\"ping\"]\n\
             [[providers.models]]\nid = \"m4\"\nprobes = [\"ping\"]\n\n\
             [[providers]]\nname = \"paid\"\nkind = \"openai\"\nbase_url = \"{0}\"\n\
             rpm = 100\nrate_window = \"1s\"\nmax_concurrency = 4\n\
             budget = {{ monthly_tokens = {budget} }}\n\
             [[providers.models]]\nid = \"metered\"\nprobes = [\"ping\"]\n",
            sim.base_url()
        )
    };
    let probe_config = load(&fleet.config("probe", &body(1)));
    let metered = probe_config
        .targets
        .iter()
        .find(|t| t.id == "paid/metered")
        .unwrap();
    let (_, worst) = sonde::budget::worst_case(metered, probe_config.probes.get("ping").unwrap());
    // Deep enough that a alone does not spend it before b and c join.
    let budget = 20 * worst;
    let folders = ["a", "b", "c"].map(|location| fleet.config(location, &body(budget)));
    let config = load(&folders[0]);
    // a starts alone and takes the whole limit; b and c join 15 s later. A newcomer waits
    // two renewals and a window (70 s) before its first request on `shared`, so that what a
    // sent at its whole share has left the window: watch until both have sent.
    let mut probers = vec![fleet.start(&folders[0])];
    tokio::time::sleep(Duration::from_secs(15)).await;
    probers.extend(folders[1..].iter().map(|f| fleet.start(f)));
    tokio::time::sleep(Duration::from_secs(95)).await;
    for mut prober in probers {
        common::terminate(prober.process()).await;
    }

    let arrivals: Vec<Instant> = sim
        .requests()
        .into_iter()
        .filter(|r| r.model.starts_with('m') && r.model.len() == 2)
        .map(|r| r.at)
        .collect();
    let busiest = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|at| **at >= *start && **at < *start + Duration::from_secs(60))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= 12,
        "{busiest} requests to the shared provider in one minute"
    );
    assert!(arrivals.len() >= 10, "{} requests in all", arrivals.len());

    let store = Store::open_read_only(&config.store).unwrap();
    let results = store.results_since(0, None).unwrap();
    let sent_from = |provider: &str| {
        let mut locations: Vec<&str> = results
            .iter()
            .filter(|(r, _)| r.provider == provider && r.http_status.is_some())
            .map(|(r, _)| r.location.as_str())
            .collect();
        locations.sort_unstable();
        locations.dedup();
        locations
    };
    assert_eq!(
        sent_from("shared"),
        ["a", "b", "c"],
        "the limit was re-divided among all three"
    );
    let spent: u64 = store
        .spend()
        .unwrap()
        .iter()
        .filter(|row| row.provider == "paid")
        .map(|row| row.tokens)
        .sum();
    assert!(spent > 0 && spent <= budget, "spent {spent} of {budget}");
    let skipped: Vec<&str> = results
        .iter()
        .filter(|(r, _)| r.provider == "paid" && r.outcome == Outcome::SkippedBudget)
        .filter_map(|(r, _)| r.error.as_deref())
        .collect();
    assert!(skipped.len() > 10, "the budget stopped the fleet");
    assert!(
        skipped.iter().any(|e| e.contains("across the fleet")),
        "a prober was stopped by what the others spent: {:?}",
        &skipped[..3]
    );
}
