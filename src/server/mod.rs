//! The live server (axum): the published site from memory (gzip-compressed, `kept`; the
//! targets' pages rendered when asked for, from the figures kept in their place: one set
//! at a time, replaced by each publish and each computation of the fresh bodies),
//! `/feed.json` and `/metrics` fresh from the store (bodies older than a second are
//! recomputed before one is served, by one computation however many clients ask at once,
//! and both from it: a client polling both costs one reading of the store a second; a
//! publish's own figures serve while as fresh, and no computation runs beside a publish),
//! `/results.csv` read from the store when asked for, `/healthz` (the process answers) and
//! `/readyz` (its site is fresh: `ready.rs`). Read-only: it opens the store read-only and
//! never writes.
//!
//! [`publish_loop`] re-renders the site every `publish.every` (and writes it to
//! `publish.out` when set), for the daemon, `sonde serve` and `sonde demo` alike.

mod bridge;
mod kept;
mod ready;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    RETRY_AFTER, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::aggregate::TargetStats;
use crate::config::Config;
use crate::counters::{PublishCounts, RunCounters};
use crate::notify;
use crate::publish::feed::Feed;
use crate::publish::history::History;
use crate::publish::{self, PublishError, Snapshot, checkpoint, metrics, results_csv};
use crate::store::{Store, StoreError};
use crate::sync::Gateways;
use crate::units::now_ms;
use bridge::Bridge;
use kept::{KeptFile, KeptWriter, accepts_gzip};
use ready::Readiness;

/// How long `/feed.json` and `/metrics` may be reused, at least.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// How long the bodies may be reused, in computations of them: pollers asking every second
/// of a fleet whose bodies take longer than a second to compute would otherwise keep a core
/// computing them, against the publishes and the pages.
const FRESH_FOR_COMPUTATIONS: u32 = 2;

/// How long bodies that took `took` to produce (a wait for a publish holding the store's
/// reader included: a busy server reuses them longer) may be reused.
fn reuse_for(took: Duration) -> Duration {
    FRESH_FOR.max(took * FRESH_FOR_COMPUTATIONS)
}

/// `/feed.json` and `/metrics` as computed together from one reading of the store, kept
/// gzip-compressed as the site's files are (at 5,000 targets they are 33 MB plain, a
/// tenth of that compressed; a response shares the bytes, no copy).
struct Bodies {
    /// When they were computed.
    at: Instant,
    /// How long they may be reused: [`FRESH_FOR`], or [`FRESH_FOR_COMPUTATIONS`] times
    /// what computing them took.
    fresh_for: Duration,
    /// `/feed.json`.
    feed: KeptFile,
    /// `/metrics`.
    metrics: KeptFile,
}

impl Bodies {
    /// The body of `which`.
    fn of(&self, which: Fresh) -> KeptFile {
        match which {
            Fresh::Feed => self.feed.clone(),
            Fresh::Metrics => self.metrics.clone(),
        }
    }
}

/// The site as last rendered.
struct Published {
    /// Every file but the targets' pages (and `results.csv`, read when asked for).
    files: BTreeMap<String, KeptFile>,
    /// What the targets' pages and `/metrics` are rendered from, when asked for: kept
    /// instead of the pages, which are most of a site's bytes and seldom read. Set aside
    /// when a publish or a computation of the fresh bodies begins (`None` until it ends),
    /// so a server never holds two sets of every target's figures: about 35 MB at 5,000
    /// targets.
    figures: RwLock<Option<Arc<Figures>>>,
    /// When the publish ended.
    at: Instant,
    /// How long its figures may serve as the fresh bodies, as computed ones may.
    fresh_for: Duration,
}

/// A publish's figures: its snapshot and the feed made from it.
struct Figures {
    /// Every target's windows, states, points and last runs.
    snapshot: Snapshot,
    /// The feed of `snapshot`.
    feed: Feed,
}

impl Published {
    /// Its figures, unless newer ones are being made.
    fn figures(&self) -> Option<Arc<Figures>> {
        read(&self.figures).clone()
    }

    /// Takes its figures away: newer ones are being made.
    fn take_figures(&self) -> Option<Arc<Figures>> {
        write(&self.figures).take()
    }

    /// Serves `figures` from now on: fresher ones than its publish's.
    fn set_figures(&self, figures: Figures) {
        *write(&self.figures) = Some(Arc::new(figures));
    }

    /// The fresh bodies from this publish: its `feed.json`, and `/metrics` from its
    /// figures, with no read of the store. Blocking: 35 MB of text at 5,000 targets.
    fn bodies(&self, counters: Option<&RunCounters>, publishes: &PublishCounts) -> Option<Bodies> {
        let figures = self.figures()?;
        Some(Bodies {
            at: self.at,
            fresh_for: self.fresh_for,
            feed: self.files.get(publish::FEED_PATH)?.clone(),
            metrics: metrics_body(&figures.snapshot.stats, &figures.feed, counters, publishes),
        })
    }
}

/// Returns the allocator's free pages to the system. A publish allocates and frees about a
/// third of what a publisher keeps (a new snapshot beside the served one, pages rendered),
/// and glibc returns only the free memory at its heap's top: what a publish freed below a
/// block still in use stayed resident until the next publish reused it.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory the allocator holds; it takes the
    // allocator's own lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `lock` held for reading. A panic while it was held (a request's) leaves its value
/// whole: each change to what the server guards so is one assignment or take.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// `lock` held for writing (see [`read`]).
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// `mutex` held (see [`read`]).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Logs that this daemon holds the `name` lock and so does `work`, or that another does
/// and this one does `meanwhile`, when `held` changed since `last`.
fn announce(last: &Mutex<Option<bool>>, held: bool, name: &str, work: &str, meanwhile: &str) {
    let mut last = lock(last);
    if *last == Some(held) {
        return;
    }
    *last = Some(held);
    if held {
        tracing::info!("this daemon holds the {name} lock: it {work}");
    } else {
        tracing::info!("another daemon holds the {name} lock and {work}; this one {meanwhile}");
    }
}

/// `/metrics` compressed as it is written.
fn metrics_body(
    stats: &[TargetStats],
    feed: &Feed,
    counters: Option<&RunCounters>,
    publishes: &PublishCounts,
) -> KeptFile {
    let mut body = KeptWriter::new();
    metrics::render_into(&mut body, stats, feed, counters, Some(publishes));
    body.finish()
}

/// What the server serves.
pub struct Site {
    config: Arc<Config>,
    /// Whether a server serves it: a daemon that only writes `[publish] out` keeps nothing
    /// of a publish once written.
    served: bool,
    /// Whether each publish hands its feed to the config's `[[sync]]` gateways (the daemon
    /// with gateways to drive; never `sonde serve`).
    syncing: bool,
    /// `None` before the first refresh.
    published: RwLock<Option<Arc<Published>>>,
    /// The fresh bodies as last computed (`None` before the first request).
    bodies: Mutex<Option<Bodies>>,
    /// One computation at a time, however many requests find the body stale; held by a
    /// publish too, whose figures then serve as the bodies (computing them beside it would
    /// hold a third copy of every target's figures).
    computing: tokio::sync::Mutex<()>,
    /// Held while `results.csv` is read: a few MB each, so one at a time.
    reading_csv: tokio::sync::Mutex<()>,
    /// The daemon's run counters for `/metrics`; none for `sonde serve`, which records nothing.
    counters: Option<Arc<RunCounters>>,
    /// The store, opened for reading at the first need and kept (a pool for PostgreSQL);
    /// dropped after an error, so the next read opens it afresh.
    reader: Mutex<Option<Store>>,
    /// Whether this daemon held the publisher lock at the last refresh (`None` before the
    /// first), to log only changes.
    publisher: Mutex<Option<bool>>,
    /// The same of the checkpoint lock.
    checkpointer: Mutex<Option<bool>>,
    /// What is kept of the store between publishes and feed computations, so each reads
    /// only what changed (`publish::history`).
    history: Mutex<History>,
    /// The store read whole behind a history restored from another version's checkpoint.
    bridge: Bridge,
    /// When this daemon began its last save of the history as the store's checkpoint.
    checkpointed: Mutex<Option<Instant>>,
    /// What the publishes have done, for `/readyz`.
    readiness: Mutex<Readiness>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").finish_non_exhaustive()
    }
}

impl Site {
    /// An empty site for `config` (pages appear at the first [`Site::refresh`]).
    pub fn new(config: Arc<Config>) -> Arc<Site> {
        Site::with(config, true, None)
    }

    /// [`Site::new`] for the daemon, whose `/metrics` also shows `counters`; served only
    /// when its config has `[server] listen`.
    pub fn counting(config: Arc<Config>, counters: Arc<RunCounters>) -> Arc<Site> {
        let served = config.server.listen.is_some();
        Site::with(config, served, Some(counters))
    }

    fn with(config: Arc<Config>, served: bool, counters: Option<Arc<RunCounters>>) -> Arc<Site> {
        let syncing = counters.is_some() && !config.sync.is_empty();
        Arc::new(Site {
            config,
            served,
            syncing,
            published: RwLock::new(None),
            bodies: Mutex::new(None),
            computing: tokio::sync::Mutex::new(()),
            reading_csv: tokio::sync::Mutex::new(()),
            counters,
            reader: Mutex::new(None),
            publisher: Mutex::new(None),
            checkpointer: Mutex::new(None),
            history: Mutex::new(History::new()),
            bridge: Bridge::default(),
            checkpointed: Mutex::new(None),
            readiness: Mutex::new(Readiness::new()),
        })
    }

    /// Renders the site from the store and swaps it in when served; writes it to
    /// `publish.out` too when this daemon holds the store's publisher lock (one daemon of a
    /// fleet writes the site; every one serves it). Returns the feed when this daemon holds
    /// the lock and has gateways to sync: the lock's holder alone drives them.
    pub async fn refresh(self: &Arc<Site>) -> Result<Option<Feed>, PublishError> {
        lock(&self.readiness).publish_began();
        let published = self.publish().await;
        lock(&self.readiness).publish_ended(Instant::now(), published.is_ok());
        published
    }

    /// `Ok` with what makes this server ready for traffic, or `Err` with why not: its
    /// first publish has not ended, or no publish has succeeded for three intervals.
    pub fn readiness(&self) -> Result<String, String> {
        lock(&self.readiness).at(Instant::now(), self.config.publish.every)
    }

    /// [`Site::refresh`]'s work.
    async fn publish(self: &Arc<Site>) -> Result<Option<Feed>, PublishError> {
        let _computing = self.computing.lock().await;
        let started = Instant::now();
        let site = Arc::clone(self);
        let published = tokio::task::spawn_blocking(move || -> Result<_, PublishError> {
            site.set_figures_aside();
            let (snapshot, publisher, checkpointer, csv) = site.read(|store| {
                let snapshot = site.snapshot(store, now_ms())?;
                let publisher = site.takes_publisher_lock() && store.publisher_lock()?;
                // Holding the checkpoint lock: whether the store's checkpoint is gone.
                let checkpointer = if site.checkpointing() && store.checkpoint_lock()? {
                    Some(store.checkpoint_saved_ms()?.is_none())
                } else {
                    None
                };
                let csv = (publisher && site.config.publish.out.is_some())
                    .then(|| results_csv::render(store, snapshot.now_ms))
                    .transpose()?;
                Ok::<_, PublishError>((snapshot, publisher, checkpointer, csv))
            })?;
            let feed = snapshot.feed(&site.config);
            // Each file is compressed as it comes: the plain site is never held whole.
            let mut files = BTreeMap::new();
            let keep = &mut |path: String, file: publish::SiteFile<'_>| {
                if site.served {
                    let mut kept = KeptWriter::new();
                    file.write_into(&path, &mut kept)?;
                    files.insert(path, kept.finish());
                }
                Ok(())
            };
            match (site.config.publish.out.as_ref(), csv) {
                (Some(out), Some(csv)) => {
                    publish::write_site_from(out, &site.config, &snapshot, &feed, &csv, keep)?;
                }
                _ => publish::each_shared_file(&site.config, &snapshot, &feed, keep)?,
            }
            site.announce_publisher(publisher);
            site.announce_checkpointer(checkpointer.is_some());
            let for_sync = (publisher && site.syncing).then(|| feed.clone());
            let checkpoint_due = checkpointer.is_some_and(|gone| site.checkpoint_due(gone));
            let published = site.served.then(|| Published {
                files,
                figures: RwLock::new(Some(Arc::new(Figures { snapshot, feed }))),
                at: Instant::now(),
                fresh_for: reuse_for(started.elapsed()),
            });
            Ok((published, for_sync, checkpoint_due))
        })
        .await??;
        let (published, for_sync, checkpoint_due) = published;
        let replaced = match (published, self.published.write()) {
            (Some(published), Ok(mut current)) => current.replace(Arc::new(published)),
            _ => None,
        };
        // The last publish's figures go (unless a request still renders from them), and
        // with them the publish's own scratch: the pages they held go back to the system.
        drop(replaced);
        tokio::task::spawn_blocking(give_back_free_memory).await?;
        if checkpoint_due {
            // Not waited for: pollers and the next publish need not wait for the write.
            let site = Arc::clone(self);
            tokio::task::spawn_blocking(move || site.save_checkpoint());
        }
        Ok(for_sync)
    }

    /// The snapshot at `now_ms` from the kept history, which a new one first restores from
    /// the store's checkpoint (`publish::checkpoint`). One restored from another version's
    /// checkpoint is published from while the store is read whole in the background, and
    /// replaced by what was read once it is ([`Bridge`]).
    fn snapshot(&self, store: &Store, now_ms: i64) -> Result<Snapshot, StoreError> {
        let mut history = self.history();
        if let Some(read) = self.bridge.take() {
            *history = read;
        }
        let other = checkpoint::OtherVersion::Bridge;
        let snapshot = Snapshot::load_restoring(&self.config, store, now_ms, &mut history, other)?;
        if history.other_version().is_some() {
            self.bridge.begin(&self.config, store);
        }
        Ok(snapshot)
    }

    /// Whether this is a daemon that saves the checkpoint when it holds the checkpoint
    /// lock: `sonde serve` saves none, and `publish.checkpoint = "0s"` turns it off.
    fn checkpointing(&self) -> bool {
        self.counters.is_some() && self.config.publish.checkpoint.is_some()
    }

    /// Whether this daemon asks for the publisher lock: to write `[publish] out` or sync
    /// gateways. A fleet daemon that only serves never takes the lock from one that
    /// writes the site (the checkpoint has a lock of its own).
    fn takes_publisher_lock(&self) -> bool {
        self.config.publish.out.is_some() || self.syncing
    }

    /// Whether the daemon, holding the checkpoint lock, saves its checkpoint after this
    /// publish: it began none yet, or `publish.checkpoint` has passed since it began the
    /// last, or the store's is `gone` (a database crash empties PostgreSQL's, and a
    /// publisher starting before the next save would read the store whole) and a publish
    /// interval has passed since it began the last (which a save still under way has not
    /// written yet). Marks it begun, so that a slow save is not begun again meanwhile.
    fn checkpoint_due(&self, gone: bool) -> bool {
        let Some(every) = self
            .config
            .publish
            .checkpoint
            .filter(|_| self.checkpointing())
        else {
            return false;
        };
        // A history restored from another version's checkpoint is not saved as this one's.
        if self.history().other_version().is_some() {
            return false;
        }
        let mut begun = lock(&self.checkpointed);
        let again_after = if gone {
            every.min(self.config.publish.every)
        } else {
            every
        };
        let due = begun.is_none_or(|at| at.elapsed() >= again_after);
        if due {
            *begun = Some(Instant::now());
        }
        due
    }

    /// Saves the kept history as the store's checkpoint, the history locked only while it
    /// is encoded; after a failure, logged, the next publish tries again.
    fn save_checkpoint(&self) {
        let started = Instant::now();
        let saved = checkpoint::encode(&self.history())
            .and_then(|encoded| Ok(self.read(|store| encoded.save(store))?));
        match saved {
            Ok(bytes) => {
                tracing::debug!(bytes, took = ?started.elapsed(), "saved the publisher's checkpoint");
            }
            Err(err) => {
                *lock(&self.checkpointed) = None;
                tracing::warn!(error = %err, "saving the publisher's checkpoint failed");
            }
        }
    }

    /// The site as last published, if it was.
    fn current(&self) -> Option<Arc<Published>> {
        read(&self.published).clone()
    }

    /// Lets the served figures go before newer ones are made (once no page renders from
    /// them any more): a target's page asked for meanwhile waits for the new ones. Returns
    /// the site as last published.
    fn set_figures_aside(&self) -> Option<Arc<Published>> {
        let served = self.current();
        drop(served.as_ref().and_then(|served| served.take_figures()));
        served
    }

    /// The history kept between publishes; one left by a panicked computation may be half
    /// updated, so it is emptied (the next read reads the store whole).
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|poisoned| {
            let mut history = poisoned.into_inner();
            *history = History::new();
            history
        })
    }

    /// Logs when this daemon takes or loses the publisher lock, with what it does then.
    fn announce_publisher(&self, publisher: bool) {
        let duties = [
            (self.config.publish.out.is_some(), "writes [publish] out"),
            (self.syncing, "syncs the gateways"),
        ];
        let duties: Vec<&str> = duties.iter().filter(|d| d.0).map(|d| d.1).collect();
        let work = match duties.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, others)) => format!("{} and {last}", others.join(", ")),
            None => return,
        };
        let meanwhile = "serves what it can and stands by";
        announce(&self.publisher, publisher, "publisher", &work, meanwhile);
    }

    /// Logs when this daemon takes or loses the checkpoint lock.
    fn announce_checkpointer(&self, checkpointer: bool) {
        if self.checkpointing() {
            let work = "saves the publisher's checkpoint";
            let meanwhile = "stands by to take it over";
            announce(
                &self.checkpointer,
                checkpointer,
                "checkpoint",
                work,
                meanwhile,
            );
        }
    }

    /// Runs `read` on the kept reader, opening it first when there is none. Blocking: call
    /// it from a blocking task.
    fn read<T, E: From<StoreError>>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut reader = lock(&self.reader);
        let store = match reader.take() {
            Some(store) => store,
            None => Store::open_read_only(&self.config.store)?,
        };
        let read = read(&store);
        if read.is_ok() {
            *reader = Some(store);
        }
        read
    }

    /// The file at `path`: from memory, or a target's page rendered from the kept
    /// figures (on a blocking thread: a page takes a fraction of a millisecond). A page
    /// asked for while newer figures are made waits for them.
    async fn file(&self, path: &str) -> Result<KeptFile, Unserved> {
        let published = self.current().ok_or(Unserved::NotYet)?;
        if let Some(file) = published.files.get(path) {
            return Ok(file.clone());
        }
        if !path.starts_with("t/") {
            return Err(Unserved::NotFound);
        }
        let figures = match published.figures() {
            Some(figures) => figures,
            None => {
                drop(self.computing.lock().await);
                self.current()
                    .and_then(|published| published.figures())
                    .ok_or(Unserved::Unpublished)?
            }
        };
        let config = Arc::clone(&self.config);
        let path = path.to_owned();
        let rendered = tokio::task::spawn_blocking(move || {
            publish::target_page(&config, &figures.snapshot, &figures.feed, &path)
        })
        .await
        .map_err(|err| Unserved::Failed(err.into()))?;
        match rendered {
            Some(Ok(page)) => Ok(KeptFile::plain(page)),
            Some(Err(err)) => Err(Unserved::Failed(err)),
            None => Err(Unserved::NotFound),
        }
    }

    /// The cached body of `which` while it may be reused.
    fn cached(&self, which: Fresh) -> Option<KeptFile> {
        let bodies = self.bodies.lock().ok()?;
        let bodies = bodies.as_ref()?;
        (bodies.at.elapsed() < bodies.fresh_for).then(|| bodies.of(which))
    }

    /// `/feed.json` or `/metrics`: the cached body while it may be reused (a second, or
    /// twice what computing it took when that is longer); else the last publish's figures
    /// while they may be reused so; else a fresh one. Single flight: the first request to
    /// find the bodies stale computes them while the others wait for that computation (or
    /// a publish) and share its bodies, so a burst of pollers costs one computation and no
    /// poller gets a body older than that reuse plus one computation.
    async fn fresh(self: &Arc<Site>, which: Fresh) -> Result<KeptFile, PublishError> {
        if let Some(body) = self.cached(which) {
            return Ok(body);
        }
        let _computing = self.computing.lock().await;
        if let Some(body) = self.cached(which) {
            return Ok(body);
        }
        let published = self.current();
        if let Some(published) = published.filter(|p| p.at.elapsed() < p.fresh_for) {
            let (counters, publishes) = (self.counters.clone(), lock(&self.readiness).counts());
            let bodies = tokio::task::spawn_blocking(move || {
                published.bodies(counters.as_deref(), &publishes)
            })
            .await?;
            if let Some(bodies) = bodies {
                return Ok(self.keep(bodies, which));
            }
        }
        self.compute(which).await
    }

    /// `results.csv` read from the store now; never kept.
    async fn results_csv(self: &Arc<Site>) -> Result<Bytes, PublishError> {
        let _one = self.reading_csv.lock().await;
        let site = Arc::clone(self);
        let body = tokio::task::spawn_blocking(move || {
            site.read(|store| results_csv::render(store, now_ms()))
        })
        .await??;
        Ok(Bytes::from(body))
    }

    /// Computes both bodies from the store, caches them and gives `which`'s. Their figures
    /// replace the served ones (the targets' pages are rendered from them from then on):
    /// set aside first, so that the server never holds two sets of every target's figures
    /// (a page asked for meanwhile waits, as during a publish).
    async fn compute(self: &Arc<Site>, which: Fresh) -> Result<KeptFile, PublishError> {
        // The stale bodies are of no further use: not kept while the new ones are made.
        if let Ok(mut cached) = self.bodies.lock() {
            *cached = None;
        }
        let site = Arc::clone(self);
        let bodies = tokio::task::spawn_blocking(move || -> Result<Bodies, PublishError> {
            let (started, now) = (Instant::now(), now_ms());
            let served = site.set_figures_aside();
            let snapshot = site.read(|store| site.snapshot(store, now))?;
            let feed = snapshot.feed(&site.config);
            let mut feed_body = KeptWriter::new();
            publish::write_feed_json(&feed, &mut feed_body)?;
            let bodies = Bodies {
                feed: feed_body.finish(),
                metrics: metrics_body(
                    &snapshot.stats,
                    &feed,
                    site.counters.as_deref(),
                    &lock(&site.readiness).counts(),
                ),
                at: Instant::now(),
                fresh_for: reuse_for(started.elapsed()),
            };
            if let Some(served) = served {
                served.set_figures(Figures { snapshot, feed });
            }
            Ok(bodies)
        })
        .await??;
        Ok(self.keep(bodies, which))
    }

    /// Caches `bodies` and gives `which`'s.
    fn keep(&self, bodies: Bodies, which: Fresh) -> KeptFile {
        let body = bodies.of(which);
        if let Ok(mut cached) = self.bodies.lock() {
            *cached = Some(bodies);
        }
        body
    }
}

#[derive(Debug, Clone, Copy)]
enum Fresh {
    Feed,
    Metrics,
}

/// The routes.
pub fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/feed.json", get(feed_json))
        .route("/metrics", get(metrics_text))
        .route("/results.csv", get(results_csv_file))
        .route("/{*path}", get(static_file))
        .with_state(site)
}

/// `Retry-After` for an answer that the next publish may change.
fn retry_after(site: &Site) -> [(axum::http::HeaderName, String); 1] {
    [(
        RETRY_AFTER,
        site.config.publish.every.as_secs().max(1).to_string(),
    )]
}

/// 200 while the site is fresh, else 503 with `Retry-After: publish.every` and why.
async fn readyz(State(site): State<Arc<Site>>) -> Response {
    match site.readiness() {
        Ok(ready) => ready.into_response(),
        Err(not) => (StatusCode::SERVICE_UNAVAILABLE, retry_after(&site), not).into_response(),
    }
}

async fn index(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    serve_file(&site, "index.html", &headers).await
}

async fn static_file(
    State(site): State<Arc<Site>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve_file(&site, &path, &headers).await
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("xml") => "application/atom+xml",
        _ => "application/octet-stream",
    }
}

/// A static file with an ETag (304 when the client has it) and a short max-age; gzip to a
/// client that accepts it.
async fn serve_file(site: &Site, path: &str, headers: &HeaderMap) -> Response {
    let failed = |err: &dyn std::fmt::Display| {
        tracing::warn!(error = %err, path, "rendering a page failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering {path} failed: {err}"),
        )
            .into_response()
    };
    let file = match site.file(path).await {
        Ok(file) => file,
        Err(Unserved::Failed(err)) => return failed(&err),
        Err(Unserved::NotFound) => return (StatusCode::NOT_FOUND, "not found").into_response(),
        Err(Unserved::NotYet) => return not_yet(site),
        Err(Unserved::Unpublished) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                retry_after(site),
                "the figures could not be made (the store could not be read, or the site \
                 written): this page returns with the next publish",
            )
                .into_response();
        }
    };
    kept_response(&file, content_type(path), "public, max-age=30", headers)
}

/// Why a file was not served.
enum Unserved {
    /// No such file.
    NotFound,
    /// No publish has succeeded yet.
    NotYet,
    /// A target's page, whose figures the last publish or computation set aside and then
    /// failed to replace.
    Unpublished,
    /// Rendering it failed.
    Failed(PublishError),
}

/// `file` with its ETag (304 when the client has it) and `cache_control`; gzip to a client
/// that accepts it, inflated as it is sent to one that does not.
fn kept_response(
    file: &KeptFile,
    content_type: &'static str,
    cache_control: &'static str,
    headers: &HeaderMap,
) -> Response {
    let body = file.body(accepts_gzip(headers));
    let cache = [(CACHE_CONTROL, cache_control), (VARY, "accept-encoding")];
    if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == body.etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(ETAG, body.etag.clone())], cache).into_response();
    }
    let encoding = body.gzipped.then_some([(CONTENT_ENCODING, "gzip")]);
    (
        [(CONTENT_TYPE, content_type)],
        [(ETAG, body.etag.clone())],
        [(CONTENT_LENGTH, body.len.to_string())],
        cache,
        encoding,
        body.into_http(),
    )
        .into_response()
}

async fn feed_json(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    fresh_response(&site, Fresh::Feed, "application/json", &headers).await
}

async fn metrics_text(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    fresh_response(&site, Fresh::Metrics, metrics::CONTENT_TYPE, &headers).await
}

async fn results_csv_file(State(site): State<Arc<Site>>) -> Response {
    body_response(site.results_csv().await, content_type(results_csv::PATH))
}

/// A fresh body, not to be kept by clients without asking again (`no-cache`: a poller
/// sending its ETag back gets a 304 while the figures are unchanged); 503 while the first
/// publish reads and when the store cannot be read.
async fn fresh_response(
    site: &Arc<Site>,
    which: Fresh,
    content_type: &'static str,
    headers: &HeaderMap,
) -> Response {
    if lock(&site.readiness).first_under_way() {
        // A poller would otherwise wait on the first publish, a cold read of the store
        // that takes 40–50 s at 10 locations × 1,000 targets.
        return not_yet(site);
    }
    match site.fresh(which).await {
        Ok(file) => kept_response(&file, content_type, "no-cache", headers),
        Err(err) => unreadable(&err),
    }
}

/// 503 before the first publish has succeeded, with `Retry-After` and why (as `/readyz`).
fn not_yet(site: &Site) -> Response {
    let why = site
        .readiness()
        .err()
        .unwrap_or_else(|| "not published yet".into());
    (StatusCode::SERVICE_UNAVAILABLE, retry_after(site), why).into_response()
}

/// 503: the store cannot be read.
fn unreadable(err: &PublishError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the store cannot be read: {err}"),
    )
        .into_response()
}

/// `results.csv`, read from the store when asked for, not to be cached by clients; 503 when
/// the store cannot be read.
fn body_response(body: Result<Bytes, PublishError>, content_type: &'static str) -> Response {
    match body {
        Ok(body) => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            body,
        )
            .into_response(),
        Err(err) => unreadable(&err),
    }
}

/// Serves `site` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    site: Arc<Site>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(site))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Refreshes `site` now and every `publish.every` until `shutdown`, and hands each feed to
/// the `[[sync]]` gateways when this daemon holds the publisher lock (a sync at a time, on a
/// task of its own); failures are logged and retried at the next tick (the store may not
/// exist before the first run is recorded).
pub async fn publish_loop(site: Arc<Site>, shutdown: CancellationToken) {
    let every = site.config.publish.every;
    // One sync at a time, beside the publishes: a slow gateway never delays the site.
    let gateways = Arc::new(tokio::sync::Mutex::new(Gateways::new(
        &site.config,
        site.counters.clone(),
    )));
    let env = notify::process_env();
    let mut published_once = false;
    loop {
        let started = Instant::now();
        match site.refresh().await {
            Ok(for_sync) => {
                if published_once {
                    tracing::debug!(took = ?started.elapsed(), "published");
                } else {
                    // The first reads the store whole: what a restart costs before this
                    // server is ready, worth seeing in the log.
                    tracing::info!(
                        took = ?started.elapsed(),
                        "first publish done: the site is served and /readyz is ready"
                    );
                    published_once = true;
                }
                if let Some(feed) = for_sync {
                    match Arc::clone(&gateways).try_lock_owned() {
                        Ok(mut gateways) => {
                            let (config, env, stop) =
                                (Arc::clone(&site.config), env.clone(), shutdown.clone());
                            tokio::spawn(async move {
                                tokio::select! {
                                    () = stop.cancelled() => {}
                                    () = gateways.sync(&config, &feed, &env) => {}
                                }
                            });
                        }
                        Err(_) => tracing::warn!(
                            "the last gateway sync is still running; this publish's weights \
                             wait for the next"
                        ),
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "publishing failed; retrying next tick"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pollers_are_told_to_come_back_while_the_first_publish_reads() {
        let config = Config::parse(
            std::path::Path::new("sonde.toml"),
            "[publish]\nevery = \"7s\"\n[store]\npath = \"/nonexistent/sonde.db\"\n\
             [[providers]]\nname = \"p\"\nkind = \"openai\"\n\
             base_url = \"http://127.0.0.1:9/v1\"\n[[providers.models]]\nid = \"m\"\n",
        )
        .unwrap();
        let site = Site::new(Arc::new(config));
        lock(&site.readiness).publish_began();
        for which in [Fresh::Feed, Fresh::Metrics] {
            let answer = fresh_response(&site, which, "text/plain", &HeaderMap::new()).await;
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(answer.headers()[RETRY_AFTER], "7");
            let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
                .await
                .unwrap();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(
                body.starts_with("not ready: the first publish is still reading the store"),
                "{body}"
            );
        }
        // Once it has ended (here it failed: no store), a poller gets what reading the
        // store gives, not a wait or a refusal.
        lock(&site.readiness).publish_ended(Instant::now(), false);
        let answer = fresh_response(&site, Fresh::Feed, "text/plain", &HeaderMap::new()).await;
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).starts_with("the store cannot be read"));
    }

    #[test]
    fn bodies_are_reused_a_second_or_twice_their_computation() {
        assert_eq!(reuse_for(Duration::from_millis(80)), FRESH_FOR);
        assert_eq!(reuse_for(Duration::from_millis(500)), FRESH_FOR);
        assert_eq!(reuse_for(Duration::from_secs(3)), Duration::from_secs(6));
    }
}
