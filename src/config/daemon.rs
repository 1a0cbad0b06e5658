//! The daemon's part of `sonde.toml`: schedules, per-provider rate limits and budgets, the
//! store and the health thresholds. Read by [`super::Config::parse`]; every check names the
//! file, line and key like the rest of the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Source};
use crate::probe::ProbeSet;
use crate::scheduler::Schedule;

/// Requests per minute when a provider sets none: the low end of free tiers (10–30 rpm).
pub const DEFAULT_RPM: u32 = 10;
/// Runs in flight at once per provider when the config sets none.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 2;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    path: Option<String>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    out: Option<String>,
    #[serde(default, with = "humantime_serde")]
    every: Option<Duration>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    weights: Option<WeightParams>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default)]
    listen: Option<Spanned<String>>,
}

/// The routing-weight formula's exponents (see the README): weight ∝ availability^a ×
/// (fastest TTFT / TTFT)^l × (cheapest price / price)^p × (1 − rate-limited share)^r.
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
}

impl Default for WeightParams {
    fn default() -> Self {
        WeightParams {
            availability: 4.0,
            latency: 1.0,
            price: 0.5,
            rate_limit: 1.0,
        }
    }
}

/// What `sonde publish` and the daemon write.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishConfig {
    /// The page title.
    pub title: String,
    /// Where the daemon writes the site (relative to the config file); none when absent.
    pub out: Option<PathBuf>,
    /// How often the daemon publishes.
    pub every: Duration,
    /// The window the feed's weights and figures use (`5m`, `1h`, `24h`, `7d`, `30d`).
    pub window: String,
    /// The weight formula's exponents.
    pub weights: WeightParams,
}

/// The live server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where it listens; none: no server.
    pub listen: Option<std::net::SocketAddr>,
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
    /// The SQLite file (relative paths are relative to the config file).
    pub path: PathBuf,
    /// Days raw results are kept.
    pub retention_days: u32,
    /// Days hourly rollups are kept.
    pub rollup_retention_days: u32,
}

/// How a target's state is decided (hysteresis, so one failure does not flap it).
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
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            down_after: 3,
            healthy_after: 2,
            degraded_below: 0.95,
            min_samples: 3,
        }
    }
}

pub(super) fn store(
    source: &Source<'_>,
    file: &Path,
    raw: RawStore,
) -> Result<StoreConfig, ConfigError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let retention_days = positive(source, "store.retention_days", raw.retention_days, 30)?;
    let rollup_retention_days = positive(
        source,
        "store.rollup_retention_days",
        raw.rollup_retention_days,
        400,
    )?;
    Ok(StoreConfig {
        path: base.join(raw.path.as_deref().unwrap_or("sonde.db")),
        retention_days,
        rollup_retention_days,
    })
}

pub(super) fn health(source: &Source<'_>, raw: RawHealth) -> Result<HealthConfig, ConfigError> {
    let default = HealthConfig::default();
    let degraded_below = match raw.degraded_below {
        Some(value) if !(0.0..=1.0).contains(value.get_ref()) => {
            return Err(source.error(
                Some(value.span()),
                "health.degraded_below",
                "an availability between 0 and 1",
            ));
        }
        Some(value) => value.into_inner(),
        None => default.degraded_below,
    };
    Ok(HealthConfig {
        down_after: positive(
            source,
            "health.down_after",
            raw.down_after,
            default.down_after,
        )?,
        healthy_after: positive(
            source,
            "health.healthy_after",
            raw.healthy_after,
            default.healthy_after,
        )?,
        degraded_below,
        min_samples: raw.min_samples.unwrap_or(default.min_samples),
    })
}

pub(super) fn rate(
    source: &Source<'_>,
    key: &str,
    rpm: Option<Spanned<u32>>,
    window: Option<Duration>,
    provider_span: std::ops::Range<usize>,
) -> Result<RateLimit, ConfigError> {
    let requests = positive(source, &format!("{key}.rpm"), rpm, DEFAULT_RPM)?;
    let per = window.unwrap_or(Duration::from_secs(60));
    if per.is_zero() {
        return Err(source.error(
            Some(provider_span),
            format!("{key}.rate_window"),
            "the rate window must be longer than zero",
        ));
    }
    Ok(RateLimit { requests, per })
}

pub(super) fn concurrency(
    source: &Source<'_>,
    key: &str,
    value: Option<Spanned<u32>>,
) -> Result<u32, ConfigError> {
    positive(
        source,
        &format!("{key}.max_concurrency"),
        value,
        DEFAULT_MAX_CONCURRENCY,
    )
}

pub(super) fn budget(
    source: &Source<'_>,
    key: &str,
    raw: RawBudget,
) -> Result<Budget, ConfigError> {
    let monthly_usd = match raw.monthly_usd {
        Some(usd) if !usd.get_ref().is_finite() || *usd.get_ref() < 0.0 => {
            return Err(source.error(
                Some(usd.span()),
                format!("{key}.budget.monthly_usd"),
                "a budget is a finite number of USD, zero or more",
            ));
        }
        Some(usd) => Some(usd.into_inner()),
        None => None,
    };
    Ok(Budget {
        monthly_usd,
        monthly_tokens: raw.monthly_tokens,
    })
}

/// Parses a `[schedules]` table (probe name → schedule), checking the probe names.
pub(super) fn schedules(
    source: &Source<'_>,
    key: &str,
    raw: &BTreeMap<String, Spanned<String>>,
    probes: &ProbeSet,
) -> Result<BTreeMap<String, Schedule>, ConfigError> {
    let mut schedules = BTreeMap::new();
    for (probe, text) in raw {
        let entry_key = format!("{key}.{probe}");
        if probes.get(probe).is_none() {
            let known: Vec<_> = probes.names().collect();
            return Err(source.error(
                Some(text.span()),
                entry_key,
                format!("no probe named {probe:?} (probes: {})", known.join(", ")),
            ));
        }
        let schedule = Schedule::parse(text.get_ref())
            .map_err(|message| source.error(Some(text.span()), &entry_key, message))?;
        schedules.insert(probe.clone(), schedule);
    }
    Ok(schedules)
}

fn positive(
    source: &Source<'_>,
    key: &str,
    value: Option<Spanned<u32>>,
    default: u32,
) -> Result<u32, ConfigError> {
    match value {
        Some(value) if *value.get_ref() == 0 => {
            Err(source.error(Some(value.span()), key, "must be at least 1"))
        }
        Some(value) => Ok(value.into_inner()),
        None => Ok(default),
    }
}

pub(super) fn publish(
    source: &Source<'_>,
    file: &Path,
    raw: RawPublish,
) -> Result<PublishConfig, ConfigError> {
    let window = match raw.window {
        Some(window) if !["5m", "1h", "24h", "7d", "30d"].contains(&window.get_ref().as_str()) => {
            return Err(source.error(
                Some(window.span()),
                "publish.window",
                "one of 5m, 1h, 24h, 7d, 30d",
            ));
        }
        Some(window) => window.into_inner(),
        None => "1h".to_owned(),
    };
    let base = file.parent().unwrap_or(Path::new("."));
    Ok(PublishConfig {
        title: raw
            .title
            .unwrap_or_else(|| "LLM provider status".to_owned()),
        out: raw.out.map(|out| base.join(out)),
        every: raw
            .every
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_secs(1)),
        window,
        weights: raw.weights.unwrap_or_default(),
    })
}

pub(super) fn server(source: &Source<'_>, raw: RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = match raw.listen {
        Some(listen) => Some(listen.get_ref().parse().map_err(|_| {
            source.error(
                Some(listen.span()),
                "server.listen",
                "an address with a port, e.g. \"127.0.0.1:8080\"",
            )
        })?),
        None => None,
    };
    Ok(ServerConfig { listen })
}
