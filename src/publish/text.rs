//! How figures, times and states are written on the pages: one place, so every page and chart
//! says the same thing the same way. `–` stands for a figure that does not exist.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike};

use crate::aggregate::health::State;
use crate::scheduler::stable_hash;

/// The file name of a page about `id` (a target or a group): its id made safe for any file
/// system, plus a hash so that two ids never share a page.
pub fn slug(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{safe}-{:08x}", stable_hash(id) as u32)
}

/// The path of `id`'s page in the site.
pub fn target_path(id: &str) -> String {
    format!("t/{}.html", slug(id))
}

/// The calendar fields of unix ms `ms` (UTC): written with integer formatting, which is
/// several times cheaper than a strftime pattern, and a site writes thousands of dates.
fn fields(ms: i64) -> Option<(i32, u32, u32, u32, u32)> {
    let t = DateTime::from_timestamp_millis(ms)?;
    Some((t.year(), t.month(), t.day(), t.hour(), t.minute()))
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn when(ms: i64) -> String {
    When(ms).to_string()
}

/// [`when`] written in place (a chart writes one per hour).
pub struct When(pub i64);

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match fields(self.0) {
            Some((y, mo, d, h, mi)) => write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC"),
            None => Ok(()),
        }
    }
}

/// `MM-DD HH:MM` (the page says times are UTC).
pub fn short_when(ms: i64) -> String {
    fields(ms)
        .map(|(_, mo, d, h, mi)| format!("{mo:02}-{d:02} {h:02}:{mi:02}"))
        .unwrap_or_default()
}

/// `YYYY-MM-DD`.
pub fn day(ms: i64) -> String {
    fields(ms)
        .map(|(y, mo, d, _, _)| format!("{y:04}-{mo:02}-{d:02}"))
        .unwrap_or_default()
}

/// A number written with one decimal by integer arithmetic: a chart writes thousands of
/// coordinates, and exact float formatting was most of a site's rendering time. Rounds half
/// away from zero (`{:.1}` rounds the exact binary value half to even: they may differ in
/// the last digit of a coordinate, never visibly).
pub struct Tenths(pub f64);

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 * 10.0).round();
        if !tenths.is_finite() || tenths.abs() >= 1e15 {
            return write!(f, "{:.1}", self.0);
        }
        let tenths = tenths as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        let abs = tenths.unsigned_abs();
        write!(f, "{sign}{}.{}", abs / 10, abs % 10)
    }
}

/// An availability: `100%`, `99.9%` from 99.95 % up (never rounded up to 100), else one
/// decimal.
pub fn percent(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| {
        if v >= 1.0 {
            "100%".into()
        } else if v >= 0.9995 {
            "99.9%".into()
        } else {
            format!("{:.1}%", v * 100.0)
        }
    })
}

/// A latency: whole milliseconds, or seconds with one decimal from 10 s.
pub fn ms(value: Option<f64>) -> String {
    Ms(value).to_string()
}

/// [`ms`] written in place (a chart writes two per hour).
pub struct Ms(pub Option<f64>);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("–"),
            Some(v) if v >= 10_000.0 => write!(f, "{:.1} s", v / 1000.0),
            Some(v) => write!(f, "{v:.0} ms"),
        }
    }
}

/// A whole number.
pub fn number(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.0}"))
}

/// The CSS class and the words of a state.
pub fn state_text(state: State) -> (&'static str, &'static str) {
    match state {
        State::Healthy => ("ok", "Operational"),
        State::Degraded => ("warn", "Degraded"),
        State::Down => ("down", "Down"),
        State::Partial => ("warn", "Partial outage"),
        State::Unknown => ("unknown", "No data yet"),
    }
}
