//! `[quality]`: how the quality canary's answers are judged — against the group's reference
//! (`aggregate::quality`) and against the target's own past (`aggregate::drift`).

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::daemon::{RawDuration, duration};
use super::error::{Errors, Source};

/// Windows the comparison may use: enough runs to tell, at a few quality runs an hour.
const WINDOWS: [&str; 3] = ["24h", "7d", "30d"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuality {
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    margin: Option<Spanned<f64>>,
    #[serde(default)]
    alpha: Option<Spanned<f64>>,
    #[serde(default)]
    drift_shift: Option<Spanned<f64>>,
    #[serde(default)]
    drift_threshold: Option<Spanned<f64>>,
    #[serde(default)]
    drift_accept: Option<RawDuration>,
}

/// How quality is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityConfig {
    /// The window whose answers are compared (`24h`, `7d` or `30d`).
    pub window: String,
    /// How far below its reference a target may be and still be `ok` (a share, 0.05 = five
    /// percentage points).
    pub margin: f64,
    /// The family-wise error rate of the `below` flags of one group (Holm across the group).
    pub alpha: f64,
    /// The rise of the share of wrong answers, over the target's own past, the drift
    /// detector is tuned to catch (a share).
    pub drift_shift: f64,
    /// The CUSUM's decision threshold (log-likelihood units): higher is slower and rarer.
    pub drift_threshold: f64,
    /// How long a lasting drift stays an open incident before its rate becomes the target's
    /// new baseline.
    pub drift_accept: Duration,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            window: "7d".to_owned(),
            margin: 0.05,
            alpha: 0.01,
            drift_shift: 0.1,
            drift_threshold: 5.0,
            drift_accept: Duration::from_secs(7 * 86_400),
        }
    }
}

/// A share within `range` (exclusive of 0), or `default`.
fn share(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    value: Option<Spanned<f64>>,
    range: RangeInclusive<f64>,
    default: f64,
) -> f64 {
    match value {
        Some(value) if value.get_ref() > range.start() && range.contains(value.get_ref()) => {
            value.into_inner()
        }
        Some(value) => {
            errors.push(source.error(
                Some(value.span()),
                key,
                format!(
                    "must be above {} and at most {}",
                    range.start(),
                    range.end()
                ),
            ));
            default
        }
        None => default,
    }
}

pub(super) fn quality(source: &Source<'_>, errors: &mut Errors, raw: RawQuality) -> QualityConfig {
    let default = QualityConfig::default();
    let window = match raw.window {
        Some(window) if !WINDOWS.contains(&window.get_ref().as_str()) => {
            errors.push(source.error(Some(window.span()), "quality.window", "one of 24h, 7d, 30d"));
            default.window.clone()
        }
        Some(window) => window.into_inner(),
        None => default.window.clone(),
    };
    QualityConfig {
        window,
        margin: share(
            source,
            errors,
            "quality.margin",
            raw.margin,
            0.0..=0.5,
            default.margin,
        ),
        alpha: share(
            source,
            errors,
            "quality.alpha",
            raw.alpha,
            0.0..=0.2,
            default.alpha,
        ),
        drift_shift: share(
            source,
            errors,
            "quality.drift_shift",
            raw.drift_shift,
            0.0..=0.9,
            default.drift_shift,
        ),
        drift_threshold: share(
            source,
            errors,
            "quality.drift_threshold",
            raw.drift_threshold,
            0.0..=100.0,
            default.drift_threshold,
        ),
        drift_accept: duration(
            source,
            errors,
            "quality.drift_accept",
            raw.drift_accept,
            Duration::from_secs(3600)..=Duration::from_secs(90 * 86_400),
            default.drift_accept,
        ),
    }
}
