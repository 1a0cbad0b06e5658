//! Publishing: the static status site, the routing feed and the gateway exports, built from
//! the store, and written so that a reader never sees half a site.
//!
//! Besides the pages and the feed, the site holds `badge/` (an SVG and a shields.io endpoint
//! per target and group), a `favicon.svg` in the worst current state, and the incidents of
//! every target as a page (`incidents.html`) and an Atom feed (`incidents.xml`).
//!
//! [`Snapshot::load`] reads everything once (windows, daily and hourly rollup scalars,
//! incidents, the latest runs); [`build`] renders every file in memory but `results.csv`,
//! which [`results_csv::render`] streams from the store; [`write_site`]
//! writes them into a fresh folder next to the target and swaps it in with renames — only
//! over a folder sonde wrote before (its marker file) or an empty one (`owned_dir`). A
//! server keeps the snapshot instead of the targets' pages, most of a site's bytes:
//! [`each_shared_file`] renders the rest one file at a time, [`target_page`] one page when
//! it is asked for, and [`write_site_from`] writes each file as it is rendered.

mod atom;
mod badge;
pub mod checkpoint;
pub mod feed;
pub mod gateway;
pub mod history;
mod incidents;
pub mod latest;
mod markup;
pub mod metrics;
pub mod minutes;
mod page;
pub mod points;
pub mod quality;
mod quality_page;
pub mod results_csv;
mod text;
pub mod window_cache;
pub mod windows;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;

use crate::aggregate::TargetStats;
use crate::aggregate::quorum::LocationStatus;
use crate::config::Config;
use crate::owned_dir::{self, OwnedDirError, SITE_MARKER};
use crate::store::{Incident, Store, StoreError};
use history::History;
use latest::LatestRun;
pub use page::{Page, each_target_page, target_page};
use points::{DayPoint, HourPoint, Series};

/// Days the uptime bar covers.
pub const BAR_DAYS: i64 = 90;
// The store prunes an ended incident only once it is off every publisher's bar.
const _: () = assert!(crate::store::INCIDENTS_KEPT_DAYS > BAR_DAYS);
/// Days the hourly charts and the heatmap cover.
pub const HEATMAP_DAYS: i64 = 28;
/// Where the routing feed is in the site.
pub const FEED_PATH: &str = "feed.json";
/// Runs listed on a target's page.
pub const LAST_RUNS: usize = 50;
/// Incidents listed on `incidents.html`, the newest of the bar's days: a flapping fleet
/// can open tens of thousands in 90 days, and a page of them all helps no reader (and cost
/// 20 MB to render at 500 targets). Each target's page lists all of its own.
pub const INCIDENTS_LISTED: usize = 1_000;

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
    /// The fleet's locations, fresh and stale (not the retired).
    pub locations: Vec<LocationStatus>,
    /// Per target: daily scalars merged over probes, oldest first.
    pub daily: HashMap<String, Series<DayPoint>>,
    /// Per target: its busiest probe's TTFT per hour (hours with a streamed run), oldest
    /// first.
    pub hourly: HashMap<String, Series<HourPoint>>,
    /// Incidents of the bar's period, newest first.
    pub incidents: Arc<Vec<Incident>>,
    /// Per target: its latest runs, newest first.
    pub latest: Arc<HashMap<String, Arc<Vec<LatestRun>>>>,
    /// Each target's index in `stats`.
    by_target: HashMap<String, usize>,
}

impl Snapshot {
    /// Reads what the site needs for every target of `config`.
    pub fn load(config: &Config, store: &Store, now_ms: i64) -> Result<Snapshot, StoreError> {
        Snapshot::load_with(config, store, now_ms, &mut History::new())
    }

    /// [`Snapshot::load_with`], a new `history` first restored from the store's checkpoint
    /// when it has one that fits ([`checkpoint`]; one of another version as `other` says):
    /// what was written since it is read, not the whole store.
    pub fn load_restoring(
        config: &Config,
        store: &Store,
        now_ms: i64,
        history: &mut History,
        other: checkpoint::OtherVersion,
    ) -> Result<Snapshot, StoreError> {
        checkpoint::restore_into(store, now_ms, history, other);
        Snapshot::load_with(config, store, now_ms, history)
    }

    /// The snapshot at `now_ms` as a one-shot command reads it (`sonde publish`, its
    /// exports, `sonde sync`): from the store's checkpoint when it has one of this version
    /// that fits, reading only what was written since, else from the store whole; then
    /// saved as the store's checkpoint when no daemon keeps one
    /// ([`checkpoint::save_unkept`]). A site or an export regenerated every few minutes
    /// then costs what a periodic publish does, not a month's cold read each time.
    pub fn load_one_shot(
        config: &Config,
        store: &Store,
        now_ms: i64,
    ) -> Result<Snapshot, StoreError> {
        let mut history = History::new();
        let other = checkpoint::OtherVersion::Leave;
        let snapshot = Snapshot::load_restoring(config, store, now_ms, &mut history, other)?;
        match checkpoint::save_unkept(store, &history, &config.publish, now_ms) {
            Ok(Some(bytes)) => {
                tracing::info!(
                    bytes,
                    "saved the publisher's checkpoint: no daemon keeps one"
                );
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "saving the publisher's checkpoint failed"),
        }
        Ok(snapshot)
    }

    /// [`Snapshot::load`] reading only what changed since `history` last read the store
    /// (all of it the first time).
    pub fn load_with(
        config: &Config,
        store: &Store,
        now_ms: i64,
        history: &mut History,
    ) -> Result<Snapshot, StoreError> {
        history.snapshot(config, store, now_ms)
    }

    /// The routing feed of this snapshot.
    pub fn feed(&self, config: &Config) -> feed::Feed {
        feed::build(config, &self.stats, &self.locations, self.now_ms)
    }

    /// The stats of `target`.
    pub fn stats_of(&self, target: &str) -> Option<&TargetStats> {
        self.stats.get(*self.by_target.get(target)?)
    }
}

/// The published files: relative path → bytes.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Renders the whole site (pages, `feed.json`) from `snapshot`, in memory: what the tests
/// read. `results.csv` is not in it: it is read from the store ([`results_csv::render`]).
pub fn build(config: &Config, snapshot: &Snapshot) -> Result<Files, PublishError> {
    let feed = snapshot.feed(config);
    let mut files = build_shared(config, snapshot, &feed)?;
    let pages = std::sync::Mutex::new(Vec::new());
    page::each_target_page(config, snapshot, &feed, &|page| {
        pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(page);
        Ok(())
    })?;
    files.extend(
        pages
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(files)
}

/// Takes each file of a site as it is rendered: its path in the site and the file.
pub type Sink<'a> = dyn FnMut(String, SiteFile<'_>) -> Result<(), PublishError> + 'a;

/// One file of the site as a [`Sink`] takes it.
pub enum SiteFile<'a> {
    /// Its bytes.
    Bytes(Vec<u8>),
    /// A page not yet rendered: a sink that compresses what it keeps renders it straight
    /// into its compressed form, so the plain page is never held whole (`index.html` of
    /// 5,000 targets is 16 MB).
    Page(&'a dyn askama::DynTemplate),
    /// The routing feed, serialized where it goes, as a page is rendered (13 MB at 5,000
    /// targets).
    Feed(&'a feed::Feed),
}

impl SiteFile<'_> {
    /// Its bytes, a page rendered whole; `path` names it in an error.
    pub fn into_bytes(self, path: &str) -> Result<Vec<u8>, PublishError> {
        match self {
            SiteFile::Bytes(bytes) => Ok(bytes),
            SiteFile::Page(page) => page
                .dyn_render()
                .map(String::into_bytes)
                .map_err(|source| rendering(path, source)),
            SiteFile::Feed(feed) => feed_json(feed),
        }
    }

    /// Written into `out`, a page as it is rendered; `path` names it in an error.
    pub fn write_into<W: std::fmt::Write + std::io::Write>(
        self,
        path: &str,
        out: &mut W,
    ) -> Result<(), PublishError> {
        match self {
            SiteFile::Bytes(bytes) => out.write_all(&bytes).map_err(|source| PublishError::Io {
                path: path.into(),
                source,
            }),
            SiteFile::Page(page) => page
                .dyn_render_into(out)
                .map_err(|source| rendering(path, source)),
            SiteFile::Feed(feed) => write_feed_json(feed, out),
        }
    }
}

/// The error of the page at `path` failing to render.
fn rendering(path: &str, source: askama::Error) -> PublishError {
    PublishError::Render {
        page: path.to_owned(),
        source,
    }
}

/// Renders every file of the site but the targets' pages (`t/`), which are most of its
/// bytes (a server renders those when asked, [`target_page`]; a writer one by one,
/// [`each_target_page`]), and hands each to `sink` as it is rendered: a caller that
/// compresses or writes them holds one plain file at a time, not the site (at 5,000
/// targets `index.html` is 10 MB and `feed.json` 13 MB).
pub fn each_shared_file(
    config: &Config,
    snapshot: &Snapshot,
    feed: &feed::Feed,
    sink: &mut Sink<'_>,
) -> Result<(), PublishError> {
    page::shared_pages(config, snapshot, feed, sink)?;
    badge::files(feed, sink)?;
    sink(
        "incidents.xml".into(),
        SiteFile::Bytes(atom::incidents(config, snapshot)),
    )?;
    sink(FEED_PATH.into(), SiteFile::Feed(feed))
}

/// [`each_shared_file`]'s files, in memory.
pub fn build_shared(
    config: &Config,
    snapshot: &Snapshot,
    feed: &feed::Feed,
) -> Result<Files, PublishError> {
    let mut files = Files::new();
    each_shared_file(config, snapshot, feed, &mut |path, file| {
        let bytes = file.into_bytes(&path)?;
        files.insert(path, bytes);
        Ok(())
    })?;
    Ok(files)
}

/// Renders the whole site from `snapshot` and its `feed` into `out`, atomically (as
/// [`write_site`]), with `results_csv` (read from the store: [`results_csv::render`]):
/// each file written as soon as it is rendered, so the site is never held whole in memory.
/// Each shared file (all but the targets' pages) is then handed to `keep`.
pub fn write_site_from(
    out: &Path,
    config: &Config,
    snapshot: &Snapshot,
    feed: &feed::Feed,
    results_csv: &[u8],
    keep: &mut Sink<'_>,
) -> Result<Written, PublishError> {
    let writer = SiteWriter::begin(out)?;
    writer.file(results_csv::PATH, results_csv)?;
    each_shared_file(config, snapshot, feed, &mut |path, file| {
        let bytes = file.into_bytes(&path)?;
        writer.file(&path, &bytes)?;
        keep(path, SiteFile::Bytes(bytes))
    })?;
    page::each_target_page(config, snapshot, feed, &|(relative, bytes)| {
        writer.file(&relative, &bytes)
    })?;
    writer.finish()
}

/// `feed.json`'s bytes; a feed that does not serialize is an error, never an empty feed.
pub fn feed_json(feed: &feed::Feed) -> Result<Vec<u8>, PublishError> {
    let mut json = Vec::new();
    write_feed_json(feed, &mut json)?;
    Ok(json)
}

/// [`feed_json`] written into `out` as it goes.
pub fn write_feed_json(feed: &feed::Feed, out: impl std::io::Write) -> Result<(), PublishError> {
    serde_json::to_writer_pretty(out, feed).map_err(|source| PublishError::Serialize {
        file: FEED_PATH,
        source,
    })
}

/// Writes `files` as the folder `out`, atomically (see [`SiteWriter`]).
pub fn write_site(out: &Path, files: &Files) -> Result<Written, PublishError> {
    let writer = SiteWriter::begin(out)?;
    for (relative, bytes) in files {
        writer.file(relative, bytes)?;
    }
    writer.finish()
}

/// A site being written: files go into `.NAME.tmp-PID` beside `out` (with sonde's marker
/// file); [`SiteWriter::finish`] moves `out` aside, renames the new folder into place and
/// removes the old one. Refused when `out` exists, is not empty and has no marker: sonde
/// replaces only what it wrote. `out` should be a path checked by `owned_dir::Protected`.
/// Dropped unfinished (an error, a panic), it removes its folder and leaves `out` as it was.
#[derive(Debug)]
pub struct SiteWriter {
    /// The site's folder, replaced at the end.
    out: PathBuf,
    /// The folder being written.
    fresh: PathBuf,
    /// Where the previous site goes during the swap.
    old: PathBuf,
    /// Files and bytes written so far.
    files: AtomicUsize,
    bytes: AtomicUsize,
    /// Set once the new folder is in place.
    done: bool,
}

/// What a [`SiteWriter`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Files, the marker left out.
    pub files: usize,
    /// Their bytes.
    pub bytes: usize,
}

impl SiteWriter {
    /// Checks that `out` is sonde's to replace and starts its new folder.
    pub fn begin(out: &Path) -> Result<SiteWriter, PublishError> {
        owned_dir::check_owned(out, SITE_MARKER)?;
        let name = out
            .file_name()
            .map_or_else(|| "site".into(), |n| n.to_string_lossy().into_owned());
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let fresh = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&fresh);
        let writer = SiteWriter {
            out: out.to_owned(),
            old: parent.join(format!(".{name}.old-{}", std::process::id())),
            fresh,
            files: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            done: false,
        };
        std::fs::create_dir_all(&writer.fresh).map_err(io(&writer.fresh))?;
        let marker = writer.fresh.join(SITE_MARKER);
        std::fs::write(&marker, owned_dir::marker_text()).map_err(io(&marker))?;
        Ok(writer)
    }

    /// Writes one file of the new site at `relative`; callable from several threads.
    pub fn file(&self, relative: &str, bytes: &[u8]) -> Result<(), PublishError> {
        let path = self.fresh.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Swaps the new site in place of the old; what it holds.
    pub fn finish(mut self) -> Result<Written, PublishError> {
        let _ = std::fs::remove_dir_all(&self.old);
        let moved = self.out.exists();
        if moved {
            std::fs::rename(&self.out, &self.old).map_err(io(&self.out))?;
        }
        if let Err(err) = std::fs::rename(&self.fresh, &self.out) {
            if moved {
                let _ = std::fs::rename(&self.old, &self.out);
            }
            return Err(io(&self.out)(err));
        }
        self.done = true;
        let _ = std::fs::remove_dir_all(&self.old);
        Ok(Written {
            files: *self.files.get_mut(),
            bytes: *self.bytes.get_mut(),
        })
    }
}

impl Drop for SiteWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.fresh);
        }
    }
}

/// An I/O error at `path`, as a [`PublishError`].
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + use<> {
    let path = path.to_owned();
    move |source| PublishError::Io { path, source }
}

/// What a scoped thread returned, or its panic resumed: the reads a publish runs at once
/// (`history`, `window_cache`) end as if they had run on the caller's thread.
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `each` of every item, on every core: each core a run of the items in order, the results
/// in the items' order. For what a publish does per target once its reads are done.
fn on_every_core<T: Send, R: Send>(items: Vec<T>, each: impl Fn(T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let share = items.len().div_ceil(cores).max(1);
    let mut items = items.into_iter().peekable();
    let mut shares: Vec<Vec<T>> = Vec::new();
    while items.peek().is_some() {
        shares.push(items.by_ref().take(share).collect());
    }
    let each = &each;
    std::thread::scope(|scope| {
        let threads: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || share.into_iter().map(each).collect::<Vec<R>>()))
            .collect();
        threads.into_iter().flat_map(joined).collect()
    })
}
