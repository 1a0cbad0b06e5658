//! Publishing: the static status site, the routing feed and the gateway exports, built from
//! the store, and written so that a reader never sees half a site.
//!
//! Besides the pages and the feed, the site holds `badge/` (an SVG and a shields.io endpoint
//! per target and group), a `favicon.svg` in the worst current state, and the incidents of
//! every target as a page (`incidents.html`) and an Atom feed (`incidents.xml`).
//!
//! [`Snapshot::load`] reads everything once (windows, daily and hourly rollup scalars,
//! incidents, the latest runs); [`build`] renders every file in memory; [`write_site`]
//! writes them into a fresh folder next to the target and swaps it in with renames — only
//! over a folder sonde wrote before (its marker file) or an empty one (`owned_dir`).

mod atom;
mod badge;
pub mod feed;
pub mod gateway;
pub mod history;
mod markup;
pub mod metrics;
mod page;
pub mod quality;
mod quality_page;
mod text;
pub mod window_cache;
pub mod windows;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use crate::aggregate::TargetStats;
use crate::aggregate::quorum::LocationStatus;
use crate::aggregate::rollup::Scalars;
use crate::aggregate::rollup::Span;
use crate::config::Config;
use crate::owned_dir::{self, OwnedDirError, SITE_MARKER};
use crate::result::ResultRecord;
use crate::store::{Incident, Store, StoreError};
use history::{History, HourPoint};

/// Days the uptime bar covers.
pub const BAR_DAYS: i64 = 90;
/// Days the hourly charts and the heatmap cover.
pub const HEATMAP_DAYS: i64 = 28;
/// Runs listed on a target's page.
pub const LAST_RUNS: usize = 50;
/// Runs in the site's `results.csv`: the newest of the last 24 hours, at most this many (a
/// few MB), whatever the number of targets; `sonde export` has them all.
pub const CSV_RUNS: usize = 10_000;

/// Why publishing failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A template failed to render.
    #[error("rendering {page}: {source}")]
    Render {
        /// The page.
        page: String,
        /// The cause.
        source: askama::Error,
    },
    /// A file did not serialize.
    #[error("serializing {file}: {source}")]
    Serialize {
        /// The file.
        file: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
    /// The task computing it failed (it panicked or was cancelled).
    #[error("the publishing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The folder is not sonde's to replace.
    #[error(transparent)]
    Owned(#[from] OwnedDirError),
    /// Writing the site failed.
    #[error("writing the site to {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Everything the site is made from, read from the store at one instant.
#[derive(Debug)]
pub struct Snapshot {
    /// When it was read (unix ms).
    pub now_ms: i64,
    /// Windows and states of every configured target.
    pub stats: Vec<TargetStats>,
    /// The fleet's locations, fresh and stale.
    pub locations: Vec<LocationStatus>,
    /// Per target: daily scalars merged over probes, oldest first.
    pub daily: HashMap<String, Vec<(i64, Scalars)>>,
    /// Per target: its busiest probe's TTFT per hour (hours with a streamed run), oldest
    /// first.
    pub hourly: HashMap<String, Vec<(i64, HourPoint)>>,
    /// Incidents of the bar's period, newest first.
    pub incidents: Vec<Incident>,
    /// Per target: its latest runs, newest first.
    pub latest: Arc<HashMap<String, Arc<Vec<ResultRecord>>>>,
    /// The newest runs of the last 24 hours, oldest first: `results.csv` has the newest
    /// [`CSV_RUNS`] of them.
    pub recent: Arc<Vec<ResultRecord>>,
    /// Each target's index in `stats`.
    by_target: HashMap<String, usize>,
}

impl Snapshot {
    /// Reads what the site needs for every target of `config`.
    pub fn load(config: &Config, store: &Store, now_ms: i64) -> Result<Snapshot, StoreError> {
        Snapshot::load_with(config, store, now_ms, &mut History::new())
    }

    /// [`Snapshot::load`] reading only what changed since `history` last read the store
    /// (all of it the first time).
    pub fn load_with(
        config: &Config,
        store: &Store,
        now_ms: i64,
        history: &mut History,
    ) -> Result<Snapshot, StoreError> {
        let stats = history.stats(config, store, now_ms)?;
        Ok(Snapshot {
            now_ms,
            by_target: stats
                .iter()
                .enumerate()
                .map(|(i, s)| (s.target.clone(), i))
                .collect(),
            stats,
            locations: windows::locations(store, now_ms)?,
            daily: history.daily(store, now_ms)?,
            hourly: history.hourly(store, now_ms)?,
            incidents: store.incidents(now_ms - BAR_DAYS * Span::Day.ms())?,
            latest: history.latest(),
            recent: history.recent(),
        })
    }

    /// The stats of `target`.
    pub fn stats_of(&self, target: &str) -> Option<&TargetStats> {
        self.stats.get(*self.by_target.get(target)?)
    }
}

/// The published files: relative path → bytes.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Renders the whole site (pages, `feed.json`, `results.csv`) from `snapshot`.
pub fn build(config: &Config, snapshot: &Snapshot) -> Result<Files, PublishError> {
    let feed = feed::build(
        config,
        &snapshot.stats,
        &snapshot.locations,
        snapshot.now_ms,
    );
    let mut files = page::render(config, snapshot, &feed)?;
    files.extend(badge::files(&feed)?);
    files.insert("incidents.xml".into(), atom::incidents(config, snapshot));
    files.insert("feed.json".into(), feed_json(&feed)?);
    let mut csv = Vec::new();
    let newest = &snapshot.recent[snapshot.recent.len().saturating_sub(CSV_RUNS)..];
    crate::printer::write(&mut csv, crate::printer::Format::Csv, newest).map_err(|source| {
        PublishError::Io {
            path: "results.csv".into(),
            source,
        }
    })?;
    files.insert("results.csv".into(), csv);
    Ok(files)
}

/// `feed.json`'s bytes; a feed that does not serialize is an error, never an empty feed.
pub fn feed_json(feed: &feed::Feed) -> Result<Vec<u8>, PublishError> {
    serde_json::to_vec_pretty(feed).map_err(|source| PublishError::Serialize {
        file: "feed.json",
        source,
    })
}

/// Writes `files` as the folder `out`, atomically: into `.NAME.tmp-PID` beside it (with
/// sonde's marker file), then `out` is moved aside, the new folder renamed into place and the
/// old one removed. Refused when `out` exists, is not empty and has no marker: sonde replaces
/// only what it wrote. `out` should be a path checked by `owned_dir::Protected`.
pub fn write_site(out: &Path, files: &Files) -> Result<(), PublishError> {
    owned_dir::check_owned(out, SITE_MARKER)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PublishError::Io { path, source }
    };
    let name = out
        .file_name()
        .map_or_else(|| "site".into(), |n| n.to_string_lossy().into_owned());
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let fresh = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh);
    let written = write_tree(&fresh, files).and_then(|()| {
        let _ = std::fs::remove_dir_all(&old);
        if out.exists() {
            std::fs::rename(out, &old).map_err(io(out))?;
        }
        std::fs::rename(&fresh, out).map_err(io(out))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&fresh);
    }
    written?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Writes `files` and the marker into the new folder `root`.
fn write_tree(root: &Path, files: &Files) -> Result<(), PublishError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PublishError::Io { path, source }
    };
    std::fs::create_dir_all(root).map_err(io(root))?;
    let marker = root.join(SITE_MARKER);
    std::fs::write(&marker, owned_dir::marker_text()).map_err(io(&marker))?;
    for (relative, bytes) in files {
        let path = root.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok(())
}
