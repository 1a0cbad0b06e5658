//! When each (target, probe) runs: schedules, their stable per-target jitter, and the rule
//! that a run never overlaps the previous run of the same job.
//!
//! Fire times are computed from the wall clock each time, never accumulated: a daemon that
//! was down, or a host that slept, resumes at the next fire time after *now* and does not
//! replay what it missed.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The longest period a schedule may have.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 86_400);

/// How often a probe runs on a target.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Every period (`every = "5m"`, or a bare duration).
    Every(Duration),
    /// A cron expression (5 fields, or 6–7 with seconds and year), in UTC.
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Parses `"5m"`, `"every 5m"` or a cron expression (`"*/5 * * * *"`). A period must be
    /// between a second and a year, and a cron expression must fire at least once from now
    /// (`0 0 30 2 *`, February 30th, never does).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        let duration = trimmed.strip_prefix("every").unwrap_or(trimmed).trim();
        if let Ok(period) = humantime::parse_duration(duration) {
            if !(Duration::from_secs(1)..=MAX_PERIOD).contains(&period) {
                return Err("a schedule's period must be between 1s and 366 days".to_owned());
            }
            return Ok(Schedule::Every(period));
        }
        let fields = trimmed.split_whitespace().count();
        let expression = if fields == 5 {
            format!("0 {trimmed}")
        } else {
            trimmed.to_owned()
        };
        let schedule = cron::Schedule::from_str(&expression).map_err(|err| {
            format!(
                "not a duration (\"5m\", \"every 30s\") or a cron expression \
                 (\"*/5 * * * *\"): {err}"
            )
        })?;
        if schedule.after(&Utc::now()).next().is_none() {
            return Err(format!(
                "the cron expression {trimmed:?} never fires from now on (a date that does not \
                 exist, or a year gone by): the probe would never run"
            ));
        }
        Ok(Schedule::Cron(Box::new(schedule)))
    }

    /// The time between two fire times: the period, or for a cron expression the gap
    /// between its next two ticks (a minute when it has no second).
    pub fn period(&self) -> Duration {
        match self {
            Schedule::Every(period) => *period,
            Schedule::Cron(schedule) => {
                let mut ticks = schedule.after(&Utc::now());
                match (ticks.next(), ticks.next()) {
                    (Some(first), Some(second)) => {
                        (second - first).to_std().unwrap_or(Duration::from_secs(60))
                    }
                    _ => Duration::from_secs(60),
                }
            }
        }
    }

    /// The next fire time strictly after `after` for the job named `key`.
    ///
    /// Each job is shifted by a stable offset within its period (a hash of `key`), so 100
    /// targets on `every = "1m"` spread over the minute instead of firing in the same second,
    /// and the same target fires at the same offset after every restart.
    pub fn next_after(&self, after: DateTime<Utc>, key: &str) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                let period_ms = i64::try_from(period.as_millis()).ok()?.max(1);
                let offset = (stable_hash(key) % period_ms as u64) as i64;
                let now_ms = after.timestamp_millis();
                let slots = (now_ms - offset).div_euclid(period_ms) + 1;
                DateTime::from_timestamp_millis(slots * period_ms + offset)
            }
            Schedule::Cron(schedule) => {
                let mut ticks = schedule.after(&after);
                let first = ticks.next()?;
                let spacing = ticks
                    .next()
                    .map_or(TimeDelta::minutes(1), |second| second - first);
                // Jitter within the tick spacing, but never more than a minute, so
                // `0 9 * * *` still means "shortly after nine".
                let spread = spacing.num_milliseconds().clamp(1, 60_000) as u64;
                let offset = TimeDelta::milliseconds((stable_hash(key) % spread) as i64);
                schedule.after(&(after - offset)).next().map(|t| t + offset)
            }
        }
    }
}

/// FNV-1a: stable across builds and platforms (std's hasher is not), so a target keeps its
/// offset across restarts and upgrades.
pub fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The schedule a probe gets when the config names none: frequent for the cheap liveness
/// check, rarer for what costs tokens or rarely changes.
pub fn default_for(probe: &str) -> Schedule {
    let minutes = match probe {
        "ping" => 1,
        "stream" => 5,
        "models" => 60,
        "tools" | "json" => 360,
        "quality" | "quality-tools" => 15,
        _ => 5,
    };
    Schedule::Every(Duration::from_secs(minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn forms_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            Schedule::parse("every 5m").unwrap(),
            Schedule::Every(Duration::from_secs(300))
        );
        assert_eq!(
            Schedule::parse("30s").unwrap(),
            Schedule::Every(Duration::from_secs(30))
        );
        assert!(matches!(
            Schedule::parse("*/5 * * * *").unwrap(),
            Schedule::Cron(_)
        ));
        assert!(matches!(
            Schedule::parse("0 */5 * * * *").unwrap(),
            Schedule::Cron(_)
        ));
        let err = Schedule::parse("every tuesday").unwrap_err();
        assert!(err.contains("cron expression"), "{err}");
        assert!(Schedule::parse("100ms").is_err());
        assert!(Schedule::parse("every 99999999999999d").is_err());
        let never = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(never.contains("never fires"), "{never}");
        assert!(Schedule::parse("0 0 1 1 * 2001").is_err(), "a year gone by");
    }

    #[test]
    fn intervals_spread_targets_stably_and_never_replay() {
        let every = Schedule::Every(Duration::from_secs(60));
        let now = at("2026-01-01T00:00:30Z");
        let mut seconds = std::collections::BTreeSet::new();
        for target in 0..100 {
            let key = format!("p/model-{target}#ping");
            let next = every.next_after(now, &key).unwrap();
            assert!(next > now && next <= now + TimeDelta::seconds(60), "{next}");
            assert_eq!(every.next_after(now, &key), Some(next), "stable");
            let after_next = every.next_after(next, &key).unwrap();
            assert_eq!(after_next - next, TimeDelta::seconds(60));
            seconds.insert(next.timestamp() % 60);
            // A daemon down for a day resumes at the next slot, once.
            let late = every.next_after(now + TimeDelta::days(1), &key).unwrap();
            assert!(late - (now + TimeDelta::days(1)) <= TimeDelta::seconds(60));
        }
        assert!(seconds.len() > 40, "spread over the minute: {seconds:?}");
    }

    #[test]
    fn cron_ticks_get_jitter_within_their_spacing() {
        let cron = Schedule::parse("*/5 * * * *").unwrap();
        let now = at("2026-01-01T00:01:00Z");
        let next = cron.next_after(now, "a#ping").unwrap();
        assert!(next >= at("2026-01-01T00:05:00Z") && next < at("2026-01-01T00:06:00Z"));
        let again = cron.next_after(next, "a#ping").unwrap();
        assert_eq!(again - next, TimeDelta::minutes(5));
    }
}
