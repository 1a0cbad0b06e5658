//! Time and units: the wall clock in unix milliseconds, the record's timestamp, durations in
//! microseconds, and the rounding every published figure gets. One place, so that every stage
//! converts the same way.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in whole ms, saturating (for comparing with unix-ms differences).
pub fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds now (wall clock).
pub fn now_ms() -> i64 {
    ms_of(SystemTime::now())
}

/// Unix milliseconds of `at` (negative before 1970).
pub fn ms_of(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A duration in whole microseconds, saturating.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds as milliseconds with microsecond resolution.
pub fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Rounds to three decimals (µs for figures in ms).
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// RFC 3339 (ms, UTC) of unix ms.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `YYYY-MM` (UTC) of unix ms `at`.
pub fn month_of(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .format("%Y-%m")
        .to_string()
}

/// When a run was scheduled, kept as unix milliseconds from the runner to the store and
/// written as RFC 3339 (ms, UTC) only at the edges: JSON, CSV and the store's `ts` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp of unix milliseconds `ms`.
    pub fn from_ms(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Its unix milliseconds.
    pub fn ms(self) -> i64 {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(at: SystemTime) -> Timestamp {
        Timestamp(ms_of(at))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&rfc3339(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|at| Timestamp(at.timestamp_millis()))
            .map_err(|err| serde::de::Error::custom(format!("{text:?} is not RFC 3339: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_is_rfc_3339_at_the_edges_and_ms_inside() {
        let at = Timestamp::from(UNIX_EPOCH + Duration::from_millis(1_767_225_600_123));
        assert_eq!(at.ms(), 1_767_225_600_123);
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(json, "\"2026-01-01T00:00:00.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), at);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert_eq!(month_of(at.ms()), "2026-01");
        assert_eq!(round3(1.23456), 1.235);
        assert_eq!(us_to_ms(1500), 1.5);
    }
}
