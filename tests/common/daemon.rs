//! A `sonde run` process for the daemon, fleet and PostgreSQL tests: started in its own
//! folder, its JSON log collected line by line, waited on by what it logs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `sonde run` started in a folder holding its `sonde.toml`, its JSON log lines collected
/// as they come.
pub struct Daemon {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts the daemon of `dir` with `env` set (the store's URL variable, keys).
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(["run", "--log-format", "json"])
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// The daemon's process, once.
    pub fn process(&mut self) -> Child {
        self.child.take().expect("the daemon is still ours")
    }

    /// Log lines whose message is `message`, as JSON.
    pub fn lines(&self, message: &str) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| {
                line["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .collect()
    }

    pub fn ids(&self, message: &str) -> Vec<String> {
        self.lines(message)
            .iter()
            .filter_map(|line| line["run_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits (at most 30 s) until `ready` holds.
    pub fn wait_for(&self, what: &str, ready: impl Fn(&Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}
