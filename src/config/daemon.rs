//! The daemon's part of `sonde.toml`: schedules, per-provider rate limits and budgets, the
//! store and the health thresholds. Read by [`super::Config::parse`]; every check names the
//! file, line and key like the rest of the config.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{Errors, Source};
use crate::capability::Capability;
use crate::owned_dir::{self, OwnedDirError, Protected, SITE_MARKER};
use crate::probe::ProbeSet;
use crate::scheduler::Schedule;

/// A duration as written (`"30s"`, `"5m"`), with where it was written.
pub(super) type RawDuration = Spanned<humantime_serde::Serde<Duration>>;

/// What a run's deadline and stall timeout may be.
pub(super) const TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);
/// What a rate window may be: a second to a day.
const RATE_WINDOW_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86_400);
/// How often the daemon may publish: every second to once a day.
const PUBLISH_EVERY_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86_400);
/// How often a page may ask to be reloaded: every 5 s to once a day.
const REFRESH_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(5)..=Duration::from_secs(86_400);
/// How often the publisher may save its checkpoint: never (zero) to once a day.
const CHECKPOINT_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(86_400);
/// How often the publisher saves its checkpoint by default.
const DEFAULT_CHECKPOINT: Duration = Duration::from_secs(300);
/// What the health timers (hold, relapse window) may be: zero to a day.
const HEALTH_TIMER_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(86_400);
/// Longest retention: a century of days.
const MAX_RETENTION_DAYS: u32 = 36_500;

/// Requests per minute when a provider sets none: the low end of free tiers (10–30 rpm).
pub const DEFAULT_RPM: u32 = 10;
/// Runs in flight at once per provider when the config sets none.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 2;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    url_env: Option<Spanned<String>>,
    #[serde(default)]
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    buffer: Option<Spanned<u32>>,
    #[serde(default)]
    retention_days: Option<Spanned<u32>>,
    #[serde(default)]
    rollup_retention_days: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    #[serde(default)]
    down_after: Option<Spanned<u32>>,
    #[serde(default)]
    healthy_after: Option<Spanned<u32>>,
    #[serde(default)]
    degraded_below: Option<Spanned<f64>>,
    #[serde(default)]
    min_samples: Option<u32>,
    #[serde(default)]
    hold: Option<RawDuration>,
    #[serde(default)]
    relapse_window: Option<RawDuration>,
    #[serde(default)]
    max_hold: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    out: Option<Spanned<String>>,
    #[serde(default)]
    every: Option<RawDuration>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    weights: Option<Spanned<WeightParams>>,
    #[serde(default)]
    refresh: Option<RawDuration>,
    #[serde(default)]
    checkpoint: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default)]
    listen: Option<Spanned<String>>,
}

/// The routing-weight formula's parameters (see `publish::feed` and the README): weight ∝
/// availability^a × (fastest TTFT / TTFT)^l × (cheapest price / price)^p × (1 − rate-limited
/// share)^r × max(streamed share, 0.1)^s × (substitution factor when it substituted) ×
/// (quality relative to the group's reference, when flagged below)^q.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeightParams {
    /// Exponent of availability.
    pub availability: f64,
    /// Exponent of relative speed (TTFT p50).
    pub latency: f64,
    /// Exponent of relative cheapness.
    pub price: f64,
    /// Exponent of the share of runs not rate limited.
    pub rate_limit: f64,
    /// Exponent of the share of stream answers that really streamed (floored at 0.1): a fake
    /// streamer's score is multiplied by 0.1^streaming.
    pub streaming: f64,
    /// What a target that answered with another model in the window has its score
    /// multiplied by, 0 to 1: 0 (the default) takes it out of routing.
    pub substitution: f64,
    /// Exponent of a target's quality relative to its group's reference, applied only when
    /// the canary flags it `below` (0 ignores quality).
    pub quality: f64,
}

impl Default for WeightParams {
    fn default() -> Self {
        WeightParams {
            availability: 4.0,
            latency: 1.0,
            price: 0.5,
            rate_limit: 1.0,
            streaming: 1.0,
            substitution: 0.0,
            quality: 4.0,
        }
    }
}

/// What `sonde publish` and the daemon write.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishConfig {
    /// The page title.
    pub title: String,
    /// Where the daemon writes the site: absolute, checked to be a folder sonde may replace
    /// (see `owned_dir`); none when absent.
    pub out: Option<PathBuf>,
    /// How often the daemon publishes.
    pub every: Duration,
    /// The window the feed's weights and figures use (`5m`, `1h`, `24h`, `7d`, `30d`).
    pub window: String,
    /// The weight formula's exponents.
    pub weights: WeightParams,
    /// When set, every page asks the browser to reload it this often (a wall display).
    pub refresh: Option<Duration>,
    /// How often the daemon holding the publisher lock saves its checkpoint
    /// (`publish::checkpoint`); `None` (`checkpoint = "0s"`): never.
    pub checkpoint: Option<Duration>,
}

/// The live server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where it listens; none: no server.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    #[serde(default)]
    require: Vec<Capability>,
    #[serde(default)]
    slo: Option<Spanned<super::slo::RawSlo>>,
}

/// What a route group asks of every target it routes to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupConfig {
    /// Capabilities a target must not have refused to get traffic (`require = ["tools"]`).
    pub require: Vec<Capability>,
    /// The objective of its targets that have none of their own.
    pub slo: Option<super::Slo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    #[serde(default)]
    monthly_usd: Option<Spanned<f64>>,
    #[serde(default)]
    monthly_tokens: Option<u64>,
}

/// A GCRA rate limit: at most `requests` per `per`, evenly spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per window.
    pub requests: u32,
    /// The window (60 s for `rpm`).
    pub per: Duration,
}

/// Monthly spending caps of one provider (calendar month, UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    /// USD per month.
    pub monthly_usd: Option<f64>,
    /// Tokens (input + output) per month.
    pub monthly_tokens: Option<u64>,
}

/// Where and for how long results are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Which database holds the store.
    pub backend: StoreBackend,
    /// Runs the writer holds while the database is unreachable; past it the oldest unwritten
    /// runs are dropped, counted and logged.
    pub buffer: u32,
    /// Days raw results are kept.
    pub retention_days: u32,
    /// Days hourly rollups are kept.
    pub rollup_retention_days: u32,
}

/// The database behind the store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreBackend {
    /// An embedded SQLite file (relative paths are relative to the config file).
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A PostgreSQL server, its `postgres://` URL read from an environment variable so that
    /// neither the URL nor its password is ever in the file.
    Postgres {
        /// The variable's name.
        url_env: String,
        /// PEM certificates trusted for TLS besides the system's roots (a private CA).
        ca_file: Option<PathBuf>,
    },
}

impl StoreConfig {
    /// The SQLite file, when the store is one.
    pub fn file(&self) -> Option<&Path> {
        match &self.backend {
            StoreBackend::Sqlite { path } => Some(path),
            StoreBackend::Postgres { .. } => None,
        }
    }

    /// A SQLite store at `path` with the default retention and buffer.
    pub fn sqlite(path: PathBuf) -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Sqlite { path },
            ..StoreConfig::default()
        }
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Sqlite {
                path: PathBuf::from("sonde.db"),
            },
            buffer: DEFAULT_STORE_BUFFER,
            retention_days: 30,
            rollup_retention_days: 400,
        }
    }
}

/// Runs held while the database is away, by default: an hour of 100 targets probed every
/// 30 s, a few MB.
const DEFAULT_STORE_BUFFER: u32 = 20_000;
/// The most runs the writer may be told to hold (a record is about 1 KB in memory).
const MAX_STORE_BUFFER: u32 = 1_000_000;

/// How a target's state is decided: hysteresis, so one failure does not flap it, and flap
/// damping, so a target that keeps relapsing is held down longer each time (fast to fall,
/// slow to recover; see `aggregate::health`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    /// Consecutive failures that make a target down.
    pub down_after: u32,
    /// Consecutive successes that bring a down target back.
    pub healthy_after: u32,
    /// Availability over the last hour below which an up target is degraded.
    pub degraded_below: f64,
    /// Results needed before a target has a state other than unknown.
    pub min_samples: u32,
    /// Least time a target stays down or degraded before it may improve.
    pub hold: Duration,
    /// A target that falls again within this of recovering continues its incident, and its
    /// hold doubles for each such relapse.
    pub relapse_window: Duration,
    /// Longest hold, however often the target relapsed.
    pub max_hold: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            down_after: 3,
            healthy_after: 2,
            degraded_below: 0.95,
            min_samples: 3,
            hold: Duration::from_secs(120),
            relapse_window: Duration::from_secs(900),
            max_hold: Duration::from_secs(3600),
        }
    }
}

pub(super) fn store(
    source: &Source<'_>,
    errors: &mut Errors,
    file: &Path,
    raw: RawStore,
) -> StoreConfig {
    let base = file.parent().unwrap_or(Path::new("."));
    let backend = match (raw.path, raw.url_env) {
        (Some(path), Some(url_env)) => {
            errors.push(source.error(
                Some(url_env.span()),
                "store.url_env",
                format!(
                    "a store is either a SQLite file (`path`, here {:?}) or a PostgreSQL \
                     server (`url_env`), not both: remove one",
                    path.get_ref()
                ),
            ));
            StoreBackend::Sqlite {
                path: base.join(path.into_inner()),
            }
        }
        (_, Some(url_env)) => {
            if !super::is_env_name(url_env.get_ref()) {
                errors.push(source.error(
                    Some(url_env.span()),
                    "store.url_env",
                    "this must be the NAME of an environment variable holding the \
                     postgres:// URL (e.g. \"SONDE_DATABASE_URL\"), never the URL itself",
                ));
            }
            StoreBackend::Postgres {
                url_env: url_env.into_inner(),
                ca_file: raw.ca_file.map(|file| base.join(file.into_inner())),
            }
        }
        (Some(path), None) if path.get_ref().trim().is_empty() => {
            errors.push(source.error(
                Some(path.span()),
                "store.path",
                "the store needs a file name, e.g. \"sonde.db\"",
            ));
            StoreBackend::Sqlite {
                path: base.join("sonde.db"),
            }
        }
        (path, None) => {
            if let Some(ca_file) = &raw.ca_file {
                errors.push(source.error(
                    Some(ca_file.span()),
                    "store.ca_file",
                    "`ca_file` is for a PostgreSQL store (`url_env`); a SQLite file needs none",
                ));
            }
            StoreBackend::Sqlite {
                path: base.join(path.map_or_else(|| "sonde.db".into(), Spanned::into_inner)),
            }
        }
    };
    let days = |errors: &mut Errors, key: &str, value: Option<Spanned<u32>>, default: u32| {
        bounded(source, errors, key, value, 1..=MAX_RETENTION_DAYS, default)
    };
    StoreConfig {
        backend,
        buffer: bounded(
            source,
            errors,
            "store.buffer",
            raw.buffer,
            1..=MAX_STORE_BUFFER,
            DEFAULT_STORE_BUFFER,
        ),
        retention_days: days(errors, "store.retention_days", raw.retention_days, 30),
        rollup_retention_days: days(
            errors,
            "store.rollup_retention_days",
            raw.rollup_retention_days,
            400,
        ),
    }
}

pub(super) fn health(source: &Source<'_>, errors: &mut Errors, raw: RawHealth) -> HealthConfig {
    let default = HealthConfig::default();
    let degraded_below = match raw.degraded_below {
        Some(value) if !(0.0..=1.0).contains(value.get_ref()) => {
            errors.push(source.error(
                Some(value.span()),
                "health.degraded_below",
                "an availability between 0 and 1",
            ));
            default.degraded_below
        }
        Some(value) => value.into_inner(),
        None => default.degraded_below,
    };
    let timer = |errors: &mut Errors, key: &str, raw: Option<RawDuration>, default: Duration| {
        duration(source, errors, key, raw, HEALTH_TIMER_RANGE, default)
    };
    let hold = timer(errors, "health.hold", raw.hold, default.hold);
    let relapse_window = timer(
        errors,
        "health.relapse_window",
        raw.relapse_window,
        default.relapse_window,
    );
    let max_hold_span = raw.max_hold.as_ref().map(Spanned::span);
    let mut max_hold = timer(errors, "health.max_hold", raw.max_hold, default.max_hold);
    if max_hold < hold {
        match max_hold_span {
            Some(span) => errors.push(source.error(
                Some(span),
                "health.max_hold",
                "the longest hold cannot be shorter than `hold`",
            )),
            None => max_hold = hold,
        }
    }
    HealthConfig {
        down_after: bounded(
            source,
            errors,
            "health.down_after",
            raw.down_after,
            1..=u32::MAX,
            default.down_after,
        ),
        healthy_after: bounded(
            source,
            errors,
            "health.healthy_after",
            raw.healthy_after,
            1..=u32::MAX,
            default.healthy_after,
        ),
        degraded_below,
        min_samples: raw.min_samples.unwrap_or(default.min_samples),
        hold,
        relapse_window,
        max_hold,
    }
}

pub(super) fn rate(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    rpm: Option<Spanned<u32>>,
    window: Option<RawDuration>,
) -> RateLimit {
    RateLimit {
        requests: bounded(
            source,
            errors,
            &format!("{key}.rpm"),
            rpm,
            1..=u32::MAX,
            DEFAULT_RPM,
        ),
        per: duration(
            source,
            errors,
            &format!("{key}.rate_window"),
            window,
            RATE_WINDOW_RANGE,
            Duration::from_secs(60),
        ),
    }
}

pub(super) fn concurrency(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    value: Option<Spanned<u32>>,
) -> u32 {
    bounded(
        source,
        errors,
        &format!("{key}.max_concurrency"),
        value,
        1..=10_000,
        DEFAULT_MAX_CONCURRENCY,
    )
}

pub(super) fn budget(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    raw: RawBudget,
) -> Budget {
    let monthly_usd = non_negative(
        source,
        errors,
        &format!("{key}.budget.monthly_usd"),
        raw.monthly_usd,
        "a budget is a finite number of USD, zero or more",
    );
    Budget {
        monthly_usd,
        monthly_tokens: raw.monthly_tokens,
    }
}

/// Parses a `[schedules]` table (probe name → schedule), checking the probe names and that
/// every schedule fires.
pub(super) fn schedules(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    raw: &BTreeMap<String, Spanned<String>>,
    probes: &ProbeSet,
) -> BTreeMap<String, Schedule> {
    let mut schedules = BTreeMap::new();
    for (probe, text) in raw {
        let entry_key = format!("{key}.{probe}");
        if probes.get(probe).is_none() {
            let known: Vec<_> = probes.names().collect();
            errors.push(source.error(
                Some(text.span()),
                entry_key,
                format!("no probe named {probe:?} (probes: {})", known.join(", ")),
            ));
            continue;
        }
        match Schedule::parse(text.get_ref()) {
            Ok(schedule) => {
                schedules.insert(probe.clone(), schedule);
            }
            Err(message) => errors.push(source.error(Some(text.span()), &entry_key, message)),
        }
    }
    schedules
}

/// A finite amount of zero or more (a price, a budget); `None` when absent or refused with
/// `message`.
pub(super) fn non_negative(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    value: Option<Spanned<f64>>,
    message: &str,
) -> Option<f64> {
    let value = value?;
    if value.get_ref().is_finite() && *value.get_ref() >= 0.0 {
        return Some(value.into_inner());
    }
    errors.push(source.error(Some(value.span()), key, message));
    None
}

/// A number within `range`, or `default` when absent; out of range is an error naming the
/// range.
pub(super) fn bounded(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    value: Option<Spanned<u32>>,
    range: RangeInclusive<u32>,
    default: u32,
) -> u32 {
    match value {
        Some(value) if !range.contains(value.get_ref()) => {
            let message = if *range.end() == u32::MAX {
                format!("must be at least {}", range.start())
            } else {
                format!("must be between {} and {}", range.start(), range.end())
            };
            errors.push(source.error(Some(value.span()), key, message));
            default
        }
        Some(value) => value.into_inner(),
        None => default,
    }
}

/// A duration within `range`, or `default` when absent; out of range is an error naming the
/// range at the value's own line.
pub(super) fn duration(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    value: Option<RawDuration>,
    range: RangeInclusive<Duration>,
    default: Duration,
) -> Duration {
    let Some(value) = value else {
        return default;
    };
    let span = value.span();
    let duration = value.into_inner().into_inner();
    if range.contains(&duration) {
        return duration;
    }
    let shown = |d: &Duration| humantime::format_duration(*d).to_string();
    let message = if range.start().is_zero() {
        format!("must be at most {}", shown(range.end()))
    } else {
        format!(
            "must be between {} and {}",
            shown(range.start()),
            shown(range.end())
        )
    };
    errors.push(source.error(Some(span), key, message));
    default
}

pub(super) fn publish(
    source: &Source<'_>,
    errors: &mut Errors,
    file: &Path,
    store: Option<&Path>,
    raw: RawPublish,
) -> PublishConfig {
    let window = match raw.window {
        Some(window) if !["5m", "1h", "24h", "7d", "30d"].contains(&window.get_ref().as_str()) => {
            errors.push(source.error(
                Some(window.span()),
                "publish.window",
                "one of 5m, 1h, 24h, 7d, 30d",
            ));
            "1h".to_owned()
        }
        Some(window) => window.into_inner(),
        None => "1h".to_owned(),
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let out = raw.out.and_then(|out| {
        let checked = if out.get_ref().trim().is_empty() {
            Err(OwnedDirError::Empty)
        } else {
            Protected::new(file, store)
                .check(&base.join(out.get_ref()))
                .and_then(|path| owned_dir::check_owned(&path, SITE_MARKER).map(|()| path))
        };
        checked
            .map_err(|err| {
                errors.push(source.error(Some(out.span()), "publish.out", err.to_string()));
            })
            .ok()
    });
    let weights = match raw.weights {
        Some(weights) => {
            let span = weights.span();
            let weights = weights.into_inner();
            match weights.problem() {
                Some(problem) => {
                    errors.push(source.error(Some(span), "publish.weights", problem));
                    WeightParams::default()
                }
                None => weights,
            }
        }
        None => WeightParams::default(),
    };
    PublishConfig {
        title: raw
            .title
            .unwrap_or_else(|| "LLM provider status".to_owned()),
        out,
        every: duration(
            source,
            errors,
            "publish.every",
            raw.every,
            PUBLISH_EVERY_RANGE,
            Duration::from_secs(60),
        ),
        window,
        weights,
        refresh: raw.refresh.map(|every| {
            duration(
                source,
                errors,
                "publish.refresh",
                Some(every),
                REFRESH_RANGE,
                Duration::from_secs(60),
            )
        }),
        checkpoint: Some(duration(
            source,
            errors,
            "publish.checkpoint",
            raw.checkpoint,
            CHECKPOINT_RANGE,
            DEFAULT_CHECKPOINT,
        ))
        .filter(|every| !every.is_zero()),
    }
}

impl WeightParams {
    /// What is wrong with these parameters, if anything.
    fn problem(&self) -> Option<&'static str> {
        let exponents = [
            self.availability,
            self.latency,
            self.price,
            self.rate_limit,
            self.streaming,
            self.quality,
        ];
        if exponents.iter().any(|e| !e.is_finite() || *e < 0.0) {
            Some("every exponent is a finite number, zero or more")
        } else if !(0.0..=1.0).contains(&self.substitution) {
            Some(
                "`substitution` is the factor a substituting target's score is multiplied by: between 0 and 1",
            )
        } else {
            None
        }
    }
}

/// The `[groups."name"]` tables, each naming a group some target belongs to.
pub(super) fn groups(
    source: &Source<'_>,
    errors: &mut Errors,
    raw: BTreeMap<String, Spanned<RawGroup>>,
    known: &[&str],
) -> BTreeMap<String, GroupConfig> {
    let mut groups = BTreeMap::new();
    for (name, group) in raw {
        if !known.contains(&name.as_str()) {
            errors.push(source.error(
                Some(group.span()),
                format!("groups.{name}"),
                format!(
                    "no target is in route group {name:?} (groups: {})",
                    known.join(", ")
                ),
            ));
            continue;
        }
        let group = group.into_inner();
        let mut require = group.require;
        require.sort_unstable();
        require.dedup();
        let slo = group
            .slo
            .and_then(|raw| super::slo::slo(source, errors, &format!("groups.{name}.slo"), raw));
        groups.insert(name, GroupConfig { require, slo });
    }
    groups
}

pub(super) fn server(source: &Source<'_>, errors: &mut Errors, raw: RawServer) -> ServerConfig {
    let listen = raw.listen.and_then(|listen| {
        listen
            .get_ref()
            .parse()
            .map_err(|_| {
                errors.push(source.error(
                    Some(listen.span()),
                    "server.listen",
                    "an address with a port, e.g. \"127.0.0.1:8080\"",
                ))
            })
            .ok()
    });
    ServerConfig { listen }
}
