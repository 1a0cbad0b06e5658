//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Distributions are the 30-day window's (from the daily rollups), exposed as histograms with
//! a `window="30d"` label: they grow as runs are recorded and shrink when a day leaves the
//! window, which Prometheus treats as a counter reset. Run counts per outcome are the same
//! window's. States, weights and availability are gauges of the feed's window.

use std::fmt::Write as _;

use super::feed::{Feed, FeedTarget};
use crate::aggregate::health::State;
use crate::aggregate::{Percentiles, TargetStats, Window};
use crate::result::Outcome;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A per-target gauge read off the feed (`None`: no sample).
type Gauge = fn(&FeedTarget) -> Option<f64>;

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    per_unit: f64,
    rows: &[(&str, &Percentiles)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (target, p) in rows {
        let labels = format!("target=\"{}\",window=\"30d\"", label(target));
        for (bound, count) in &p.buckets {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{}\"}} {count}",
                bound / per_unit
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", p.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", p.sum / per_unit);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", p.count);
    }
}

/// The exposition for `stats` and `feed`.
pub fn render(stats: &[TargetStats], feed: &Feed) -> String {
    let mut out = String::new();
    let month: Vec<(&str, &crate::aggregate::WindowStats)> = stats
        .iter()
        .filter_map(|s| s.window(Window::D30).map(|w| (s.target.as_str(), w)))
        .collect();
    let ttft: Vec<_> = month
        .iter()
        .map(|(t, w)| (*t, &w.latency.ttft_ms))
        .collect();
    histogram(
        &mut out,
        "sonde_ttft_seconds",
        "Time to first token of successful streamed runs.",
        1000.0,
        &ttft,
    );
    let e2e: Vec<_> = month
        .iter()
        .filter_map(|(t, w)| {
            w.by_probe
                .values()
                .max_by_key(|l| l.e2e_ms.count)
                .map(|l| (*t, &l.e2e_ms))
        })
        .collect();
    histogram(
        &mut out,
        "sonde_e2e_seconds",
        "End-to-end time of successful runs of each target's most frequent probe.",
        1000.0,
        &e2e,
    );
    let speed: Vec<_> = month
        .iter()
        .map(|(t, w)| (*t, &w.latency.tokens_per_s))
        .collect();
    histogram(
        &mut out,
        "sonde_output_tokens_per_second",
        "Decode speed of successful streamed runs.",
        1.0,
        &speed,
    );
    let _ = writeln!(
        out,
        "# HELP sonde_runs_total Runs per outcome in the last 30 days.\n# TYPE sonde_runs_total counter"
    );
    for (target, window) in &month {
        for outcome in Outcome::ALL {
            let count = window.outcomes.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sonde_runs_total{{target=\"{}\",outcome=\"{outcome}\",window=\"30d\"}} {count}",
                label(target)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sonde_spend_usd USD spent in the last 30 days.\n# TYPE sonde_spend_usd gauge"
    );
    for (target, window) in &month {
        let _ = writeln!(
            out,
            "sonde_spend_usd{{target=\"{}\",window=\"30d\"}} {}",
            label(target),
            window.cost_usd
        );
    }
    let _ = writeln!(
        out,
        "# HELP sonde_target_state 1 for the target's current state.\n# TYPE sonde_target_state gauge"
    );
    for s in stats {
        for state in [State::Healthy, State::Degraded, State::Down, State::Unknown] {
            let _ = writeln!(
                out,
                "sonde_target_state{{target=\"{}\",state=\"{}\"}} {}",
                label(&s.target),
                state.as_str(),
                u8::from(s.state == state)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sonde_target_weight Routing weight within the route group (feed.json).\n# TYPE sonde_target_weight gauge"
    );
    for t in &feed.targets {
        let _ = writeln!(
            out,
            "sonde_target_weight{{target=\"{}\",group=\"{}\"}} {}",
            label(&t.id),
            label(&t.group),
            t.weight
        );
    }
    let _ = writeln!(
        out,
        "# HELP sonde_target_availability ok / (ok + provider faults) over the feed's window.\n# TYPE sonde_target_availability gauge"
    );
    for t in &feed.targets {
        if let Some(availability) = t.availability {
            let _ = writeln!(
                out,
                "sonde_target_availability{{target=\"{}\",window=\"{}\"}} {availability}",
                label(&t.id),
                feed.window
            );
        }
    }
    let flags: [(&str, &str, Gauge); 3] = [
        (
            "sonde_target_routable",
            "1 when the feed routes traffic to the target (not down, no required capability refused, no excluded substitution).",
            |t| Some(f64::from(u8::from(t.routable))),
        ),
        (
            "sonde_target_model_substituted",
            "1 when an answer in the feed's window came from another model than the one asked for.",
            |t| Some(f64::from(u8::from(t.model_substituted))),
        ),
        (
            "sonde_target_streamed_ratio",
            "Stream answers that really streamed / stream answers, over the feed's window.",
            |t| t.streamed_rate,
        ),
    ];
    for (name, help, value) in flags {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for t in &feed.targets {
            if let Some(value) = value(t) {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{}\",window=\"{}\"}} {value}",
                    label(&t.id),
                    feed.window
                );
            }
        }
    }
    out
}
