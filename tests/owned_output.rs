//! sonde never deletes or overwrites what it did not create: every place a site, an export
//! or a bench report could land on a user's files is refused (exit 2, the file, line and key
//! named where a config said it), and the user's files survive each attempt.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PROVIDER: &str = "[[providers]]\nname = \"p\"\nkind = \"openai\"\n\
                        base_url = \"http://127.0.0.1:9/v1\"\n\
                        [[providers.models]]\nid = \"m\"\nprobes = [\"ping\"]\n";

/// A user's folder: a config (whose `[publish]` table is `publish`), a store and a notes
/// file of the user's own.
struct Folder {
    _temp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
}

impl Folder {
    fn new(publish: &str) -> Folder {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("project");
        let home = temp.path().join("home");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(root.join("notes.txt"), "the user's own file").unwrap();
        std::fs::write(home.join(".profile"), "the user's profile").unwrap();
        let folder = Folder {
            _temp: temp,
            root,
            home,
        };
        folder.config(publish);
        sonde::store::Store::open(
            &sonde::config::StoreConfig::sqlite(folder.root.join("sonde.db")),
            "here",
        )
        .unwrap();
        folder
    }

    fn config(&self, publish: &str) {
        std::fs::write(
            self.root.join("sonde.toml"),
            format!("[publish]\n{publish}\n\n{PROVIDER}"),
        )
        .unwrap();
    }

    fn sonde(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(args)
            .current_dir(&self.root)
            .env("HOME", &self.home)
            .output()
            .expect("run sonde")
    }

    /// Everything the user had is still there, unchanged, and nothing sonde half-wrote is
    /// left beside it.
    fn assert_intact(&self) {
        for (path, text) in [
            (self.root.join("notes.txt"), "the user's own file"),
            (self.home.join(".profile"), "the user's profile"),
        ] {
            assert_eq!(
                std::fs::read_to_string(&path).ok().as_deref(),
                Some(text),
                "{}",
                path.display()
            );
        }
        assert!(self.root.join("sonde.toml").is_file());
        assert!(self.root.join("sonde.db").is_file());
        for dir in [&self.root, self.root.parent().unwrap()] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!name.contains(".tmp-"), "left behind: {name}");
                assert!(!name.contains(".old-"), "left behind: {name}");
            }
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_config_that_points_publishing_at_user_files_is_refused_at_check() {
    for (out, says) in [
        ("\"\"", "empty path"),
        ("\".\"", "the config's folder"),
        ("\"..\"", "the config's folder or holds it"),
        ("\"/\"", "or holds it"),
        ("\"data\"", "the store's folder"),
        ("\"HOME\"", "the home folder"),
        ("\"mine\"", "not written by sonde"),
    ] {
        let folder = Folder::new("");
        std::fs::create_dir_all(folder.root.join("mine")).unwrap();
        std::fs::write(folder.root.join("mine/page.html"), "the user's page").unwrap();
        let out = out.replace("HOME", &folder.home.display().to_string());
        let store = if out == "\"data\"" {
            "[store]\npath = \"data/sonde.db\"\n"
        } else {
            ""
        };
        std::fs::write(
            folder.root.join("sonde.toml"),
            format!("{store}[publish]\nout = {out}\n\n{PROVIDER}"),
        )
        .unwrap();
        for command in ["check", "run", "publish"] {
            let output = folder.sonde(&[command]);
            let err = stderr(&output);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} with out = {out}: {err}"
            );
            let line = if store.is_empty() { 2 } else { 4 };
            assert!(
                err.contains(&format!("sonde.toml:{line}: key `publish.out`: ")),
                "{command}: {err}"
            );
            assert!(err.contains(says), "out = {out} should say {says:?}: {err}");
        }
        folder.assert_intact();
        assert_eq!(
            std::fs::read_to_string(folder.root.join("mine/page.html")).unwrap(),
            "the user's page"
        );
    }
}

#[test]
fn publish_out_refuses_folders_it_did_not_create_and_replaces_its_own() {
    let folder = Folder::new("");
    let home = folder.home.display().to_string();
    for (out, says) in [
        (".", "the config's folder"),
        ("..", "or holds it"),
        ("/", "or holds it"),
        (home.as_str(), "the home folder"),
    ] {
        let output = folder.sonde(&["publish", "--out", out]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "--out {out}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "--out {out}: {}",
            stderr(&output)
        );
        folder.assert_intact();
    }
    let mine = folder.root.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("keep.txt"), "keep").unwrap();
    let output = folder.sonde(&["publish", "--out", "mine"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("has no .sonde-site file"));
    assert_eq!(
        std::fs::read_to_string(mine.join("keep.txt")).unwrap(),
        "keep"
    );

    // A new folder, then the same folder again: sonde's own, so it is replaced whole.
    for _ in 0..2 {
        let output = folder.sonde(&["publish", "--out", "site"]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let site = folder.root.join("site");
    assert!(site.join(".sonde-site").is_file());
    assert!(site.join("index.html").is_file());
    assert!(site.join("feed.json").is_file());
    // An empty folder the user made for it is taken.
    std::fs::create_dir(folder.root.join("empty")).unwrap();
    let output = folder.sonde(&["publish", "--out", "empty"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(folder.root.join("empty/.sonde-site").is_file());
    folder.assert_intact();
}

#[test]
fn exports_never_overwrite_a_file_sonde_did_not_write() {
    let folder = Folder::new("");
    std::fs::write(folder.root.join("proxy.yaml"), "model_list: []  # mine\n").unwrap();
    for (format, out) in [
        ("litellm", "proxy.yaml"),
        ("litellm", "sonde.toml"),
        ("openrouter", "notes.txt"),
        ("openrouter", "sonde.db"),
    ] {
        let output = folder.sonde(&["publish", "--format", format, "--out", out]);
        assert_eq!(output.status.code(), Some(2), "{out}: {}", stderr(&output));
        assert!(stderr(&output).contains("was not written by sonde"));
    }
    assert_eq!(
        std::fs::read_to_string(folder.root.join("proxy.yaml")).unwrap(),
        "model_list: []  # mine\n"
    );
    folder.assert_intact();
    for (format, out) in [
        ("litellm", "litellm.yaml"),
        ("openrouter", "openrouter.json"),
    ] {
        for _ in 0..2 {
            let output = folder.sonde(&["publish", "--format", format, "--out", out]);
            assert!(output.status.success(), "{out}: {}", stderr(&output));
        }
        assert!(folder.root.join(out).is_file());
    }
}

#[test]
fn a_bench_report_goes_only_into_a_folder_of_its_own() {
    let folder = Folder::new("");
    let mine = folder.root.join("reports");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("results.csv"), "the user's results").unwrap();
    let output = folder.sonde(&[
        "bench",
        "--probe",
        "ping",
        "--requests",
        "1",
        "--out",
        "reports",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("has no .sonde-report file"));
    assert_eq!(
        std::fs::read_to_string(mine.join("results.csv")).unwrap(),
        "the user's results"
    );
    let output = folder.sonde(&["bench", "--probe", "ping", "--requests", "1", "--out", "."]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    folder.assert_intact();
}

#[test]
fn the_daemon_publishes_only_into_its_own_folder() {
    let folder = Folder::new("out = \"site\"\nevery = \"1s\"");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(["run", "--grace", "1s"])
        .current_dir(&folder.root)
        .env("HOME", &folder.home)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let site = folder.root.join("site");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !site.join("index.html").is_file() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(site.join(".sonde-site").is_file(), "{}", site.display());
    assert!(site.join("index.html").is_file());
    folder.assert_intact();
    assert!(Path::new(&folder.root).join("notes.txt").is_file());
}
