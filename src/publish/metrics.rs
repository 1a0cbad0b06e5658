//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Two kinds of figures, named so they cannot be confused:
//! - **Counters** that only grow for the life of the process: `sonde_runs_total` (runs this
//!   daemon recorded, by target, provider, group, probe and outcome), and what befell runs
//!   that left no record: `sonde_runs_lost_total` (the writer had stopped, or the store was
//!   away longer than `[store] buffer` runs), `sonde_runs_abandoned_total` (at shutdown),
//!   `sonde_ticks_skipped_total` (the job's previous run still going), with
//!   `sonde_rate_limit_pauses_total` and `sonde_writer_waits_total`. `sonde serve` records
//!   nothing and has none.
//! - **Gauges of a window**, named for it: the 30-day quantiles of TTFT, E2E and speed
//!   (`sonde_ttft_seconds_30d{quantile}`, with `_samples`; a quantile the samples cannot support
//!   is left out), runs per outcome and spend over 30 days; states, weights, availability and
//!   fidelity over the feed's window. They drop as runs leave the window, as gauges may.
//!
//! Plus `sonde_build_info` and each target's `sonde_last_run_timestamp_seconds`; with
//! `[[sync]]`, each gateway's syncs by `sync` name: `sonde_sync_runs_total`,
//! `_failures_total`, `_refused_total`, `_changes_total{action}`, and the gauges
//! `sonde_sync_held_groups` and `sonde_sync_last_success_timestamp_seconds`; from a server,
//! its publishes of the site: `sonde_publish_failures_total` and
//! `sonde_publish_last_success_timestamp_seconds`.
//!
//! A fleet: the target gauges above are global (every counted location merged, the state by
//! quorum); the same figures as each location sees them carry a `location` label under
//! names of their own (`sonde_target_state_by_location`, `…_availability_by_location`,
//! `…_weight_by_location`), so a sum over a metric never counts a run twice; each location's
//! staleness and last heartbeat are `sonde_location_stale` and
//! `sonde_location_last_seen_timestamp_seconds`; `sonde_runs_total` carries the `location`
//! of the daemon that counted.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::feed::{Feed, FeedTarget};
use crate::aggregate::health::State;
use crate::aggregate::{Percentiles, TargetStats, Window};
use std::collections::BTreeMap;

use crate::counters::{DaemonCounts, PublishCounts, RunCounters, SyncCounts};
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

/// A distribution as quantile gauges named for its window, with its sample count.
fn quantiles(
    out: &mut dyn Write,
    name: &str,
    help: &str,
    per_unit: f64,
    rows: &[(&str, &Percentiles)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (target, p) in rows {
        for (quantile, value) in [
            ("0.5", p.p50),
            ("0.9", p.p90),
            ("0.95", p.p95),
            ("0.99", p.p99),
        ] {
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{}\",quantile=\"{quantile}\"}} {}",
                    label(target),
                    value / per_unit
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP {name}_samples Samples behind {name}.\n# TYPE {name}_samples gauge"
    );
    for (target, p) in rows {
        let _ = writeln!(
            out,
            "{name}_samples{{target=\"{}\"}} {}",
            label(target),
            p.count
        );
    }
}

/// The daemon's counters of runs that left no record, and of pauses and waits.
fn daemon_counts(out: &mut dyn Write, counts: &DaemonCounts) {
    for (name, help, count) in [
        (
            "sonde_runs_lost_total",
            "Runs not recorded: the store's writer had stopped, or the store was unreachable for longer than [store] buffer runs.",
            &counts.lost,
        ),
        (
            "sonde_runs_abandoned_total",
            "Runs abandoned at shutdown, waiting for admission or past the grace period.",
            &counts.abandoned,
        ),
        (
            "sonde_ticks_skipped_total",
            "Schedule ticks skipped because the job's previous run was still going.",
            &counts.skipped_overlap,
        ),
        (
            "sonde_rate_limit_pauses_total",
            "Pauses of a provider's probes imposed by a 429 or a Retry-After.",
            &counts.rate_limit_pauses,
        ),
        (
            "sonde_writer_waits_total",
            "Runs that waited for room in the store writer's queue.",
            &counts.writer_waits,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            count.load(Ordering::Relaxed)
        );
    }
}

/// What the serving process's publishes did.
fn publish_counts(out: &mut dyn Write, counts: &PublishCounts) {
    let _ = writeln!(
        out,
        "# HELP sonde_publish_failures_total Publishes of the site that failed, since the process started.\n\
         # TYPE sonde_publish_failures_total counter\nsonde_publish_failures_total {}",
        counts.failures
    );
    if counts.last_success_ms > 0 {
        let _ = writeln!(
            out,
            "# HELP sonde_publish_last_success_timestamp_seconds When a publish of the site last succeeded.\n\
             # TYPE sonde_publish_last_success_timestamp_seconds gauge\n\
             sonde_publish_last_success_timestamp_seconds {:.3}",
            counts.last_success_ms as f64 / 1000.0
        );
    }
}

/// What each `[[sync]]` gateway's syncs did; nothing without one.
fn sync_counts(out: &mut dyn Write, syncs: &BTreeMap<String, SyncCounts>) {
    if syncs.is_empty() {
        return;
    }
    let family = |out: &mut dyn Write,
                  name: &str,
                  kind: &str,
                  help: &str,
                  value: &dyn Fn(&SyncCounts) -> Option<String>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (sync, counts) in syncs {
            if let Some(value) = value(counts) {
                let _ = writeln!(out, "{name}{{sync=\"{}\"}} {value}", label(sync));
            }
        }
    };
    family(
        out,
        "sonde_sync_runs_total",
        "counter",
        "Syncs that read the gateway and went through their changes.",
        &|c| Some(c.syncs.to_string()),
    );
    family(
        out,
        "sonde_sync_failures_total",
        "counter",
        "Syncs that could not read the gateway (unreachable, a refused key, not a model list).",
        &|c| Some(c.failures.to_string()),
    );
    family(
        out,
        "sonde_sync_refused_total",
        "counter",
        "Changes the gateway refused or that could not be made.",
        &|c| Some(c.refused.to_string()),
    );
    family(
        out,
        "sonde_sync_held_groups",
        "gauge",
        "Route groups the last sync held at their last weights, since every deployment would have been at 0.",
        &|c| Some(c.held.to_string()),
    );
    family(
        out,
        "sonde_sync_last_success_timestamp_seconds",
        "gauge",
        "When a sync last read the gateway and had every change made.",
        &|c| (c.last_success_ms > 0).then(|| format!("{:.3}", c.last_success_ms as f64 / 1000.0)),
    );
    let _ = writeln!(
        out,
        "# HELP sonde_sync_changes_total Changes the gateway made, by action.\n# TYPE sonde_sync_changes_total counter"
    );
    for (sync, counts) in syncs {
        for (action, n) in &counts.changes {
            let _ = writeln!(
                out,
                "sonde_sync_changes_total{{sync=\"{}\",action=\"{action}\"}} {n}",
                label(sync)
            );
        }
    }
}

/// The exposition for `stats` and `feed`, with the daemon's `counters` when it has them.
pub fn render(stats: &[TargetStats], feed: &Feed, counters: Option<&RunCounters>) -> String {
    let mut out = String::new();
    render_into(&mut out, stats, feed, counters, None);
    out
}

/// [`render`] written into `out` as it goes (a server compresses it as it comes: 35 MB
/// plain at 5,000 targets).
pub fn render_into(
    out: &mut dyn Write,
    stats: &[TargetStats],
    feed: &Feed,
    counters: Option<&RunCounters>,
    publishes: Option<&PublishCounts>,
) {
    let _ = writeln!(
        out,
        "# HELP sonde_build_info The sonde that serves these metrics.\n# TYPE sonde_build_info gauge\nsonde_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(publishes) = publishes {
        publish_counts(out, publishes);
    }
    let last_runs = counters.map(|c| c.snapshot());
    if let Some((runs, _)) = &last_runs {
        let _ = writeln!(
            out,
            "# HELP sonde_runs_total Runs this process recorded, since it started.\n# TYPE sonde_runs_total counter"
        );
        for (key, count) in runs {
            let _ = writeln!(
                out,
                "sonde_runs_total{{target=\"{}\",provider=\"{}\",group=\"{}\",probe=\"{}\",outcome=\"{}\",location=\"{}\"}} {count}",
                label(&key.target),
                label(&key.provider),
                label(&key.group),
                label(&key.probe),
                key.outcome,
                label(&key.location)
            );
        }
    }
    if let Some(counters) = counters {
        daemon_counts(out, &counters.daemon);
        sync_counts(out, &counters.syncs());
    }
    let month: Vec<(&str, &crate::aggregate::WindowStats)> = stats
        .iter()
        .filter_map(|s| s.window(Window::D30).map(|w| (s.target.as_str(), w)))
        .collect();
    let _ = writeln!(
        out,
        "# HELP sonde_last_run_timestamp_seconds When the target's latest run was scheduled (unix seconds).\n# TYPE sonde_last_run_timestamp_seconds gauge"
    );
    for (target, window) in &month {
        let from_store = window
            .last_ok_ms
            .max(window.last_error.as_ref().map(|(at, _)| *at));
        let from_process = last_runs
            .as_ref()
            .and_then(|(_, last)| last.get(*target).copied());
        if let Some(ms) = from_store.max(from_process) {
            let _ = writeln!(
                out,
                "sonde_last_run_timestamp_seconds{{target=\"{}\"}} {}",
                label(target),
                ms as f64 / 1000.0
            );
        }
    }
    let ttft: Vec<_> = month
        .iter()
        .map(|(t, w)| (*t, &w.latency.ttft_ms))
        .collect();
    quantiles(
        out,
        "sonde_ttft_seconds_30d",
        "Time to first token of successful streamed runs over 30 days, by quantile.",
        1000.0,
        &ttft,
    );
    let e2e: Vec<_> = month
        .iter()
        .filter_map(|(t, w)| w.busiest_probe().map(|l| (*t, &l.e2e_ms)))
        .collect();
    quantiles(
        out,
        "sonde_e2e_seconds_30d",
        "End-to-end time of successful runs of each target's most frequent probe over 30 days.",
        1000.0,
        &e2e,
    );
    let speed: Vec<_> = month
        .iter()
        .map(|(t, w)| (*t, &w.latency.tokens_per_s))
        .collect();
    quantiles(
        out,
        "sonde_output_tokens_per_second_30d",
        "Decode speed of successful streamed runs over 30 days.",
        1.0,
        &speed,
    );
    let _ = writeln!(
        out,
        "# HELP sonde_runs_30d Runs per outcome in the last 30 days.\n# TYPE sonde_runs_30d gauge"
    );
    for (target, window) in &month {
        for outcome in Outcome::ALL {
            let count = window.outcomes.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sonde_runs_30d{{target=\"{}\",outcome=\"{outcome}\"}} {count}",
                label(target)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sonde_spend_usd_30d USD spent in the last 30 days.\n# TYPE sonde_spend_usd_30d gauge"
    );
    for (target, window) in &month {
        let _ = writeln!(
            out,
            "sonde_spend_usd_30d{{target=\"{}\"}} {}",
            label(target),
            window.cost_usd
        );
    }
    let _ = writeln!(
        out,
        "# HELP sonde_target_state 1 for the target's current state.\n# TYPE sonde_target_state gauge"
    );
    const STATES: [State; 5] = [
        State::Healthy,
        State::Degraded,
        State::Partial,
        State::Down,
        State::Unknown,
    ];
    for s in stats {
        for state in STATES {
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
        "# HELP sonde_target_state_by_location 1 for the target's current state as one location sees it.\n# TYPE sonde_target_state_by_location gauge"
    );
    for s in stats {
        for seen in &s.locations {
            for state in STATES.into_iter().filter(|s| *s != State::Partial) {
                let _ = writeln!(
                    out,
                    "sonde_target_state_by_location{{target=\"{}\",location=\"{}\",state=\"{}\"}} {}",
                    label(&s.target),
                    label(&seen.location),
                    state.as_str(),
                    u8::from(seen.state == state)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP sonde_location_stale 1 when the location has not reported for three of its shortest schedules.\n# TYPE sonde_location_stale gauge"
    );
    for l in &feed.locations {
        let _ = writeln!(
            out,
            "sonde_location_stale{{location=\"{}\"}} {}",
            label(&l.location),
            u8::from(l.stale)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sonde_location_last_seen_timestamp_seconds The location's last heartbeat (unix seconds).\n# TYPE sonde_location_last_seen_timestamp_seconds gauge"
    );
    for l in &feed.locations {
        let _ = writeln!(
            out,
            "sonde_location_last_seen_timestamp_seconds{{location=\"{}\"}} {}",
            label(&l.location),
            l.last_seen_ms as f64 / 1000.0
        );
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
        "# HELP sonde_target_weight_by_location Routing weight within the route group by one location's figures alone.\n# TYPE sonde_target_weight_by_location gauge"
    );
    for t in &feed.targets {
        for seen in &t.locations {
            let _ = writeln!(
                out,
                "sonde_target_weight_by_location{{target=\"{}\",group=\"{}\",location=\"{}\"}} {}",
                label(&t.id),
                label(&t.group),
                label(&seen.location),
                seen.weight
            );
        }
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
    let _ = writeln!(
        out,
        "# HELP sonde_target_availability_by_location ok / (ok + provider faults) over the feed's window, as one location sees it.\n# TYPE sonde_target_availability_by_location gauge"
    );
    for t in &feed.targets {
        for seen in &t.locations {
            if let Some(availability) = seen.availability {
                let _ = writeln!(
                    out,
                    "sonde_target_availability_by_location{{target=\"{}\",location=\"{}\",window=\"{}\"}} {availability}",
                    label(&t.id),
                    label(&seen.location),
                    feed.window
                );
            }
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
    target_gauges(out, feed, &flags, |_| &feed.window);
    quality(out, feed);
    slo(out, feed);
}

/// Each SLO's attained share and error budget left, over the SLO's own window.
fn slo(out: &mut dyn Write, feed: &Feed) {
    let objectives = |t: &FeedTarget| {
        let slo = t.slo.as_ref()?;
        Some(
            [("availability", slo.availability), ("ttft", slo.ttft)]
                .into_iter()
                .filter_map(|(name, o)| o.map(|o| (name, o, slo.window.clone())))
                .collect::<Vec<_>>(),
        )
    };
    for (name, help, value) in [
        (
            "sonde_slo_attained_ratio",
            "The share of good runs over the SLO's window (availability: ok of ok and faults; ttft: within the bound).",
            (|o: &crate::aggregate::slo::Objective| o.attained) as fn(&_) -> Option<f64>,
        ),
        (
            "sonde_slo_objective_ratio",
            "The share the SLO requires.",
            |o| Some(o.objective),
        ),
        (
            "sonde_slo_error_budget_remaining_ratio",
            "The share of the SLO's error budget not yet spent over its window (below 0 when overspent).",
            |o| o.budget_left,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for t in &feed.targets {
            for (objective, o, window) in objectives(t).unwrap_or_default() {
                if let Some(value) = value(&o) {
                    let _ = writeln!(
                        out,
                        "{name}{{target=\"{}\",objective=\"{objective}\",window=\"{window}\"}} {value}",
                        label(&t.id)
                    );
                }
            }
        }
    }
}

/// One gauge per target for each of `gauges` (name, help, value), labelled with the target
/// and the window its value covers.
fn target_gauges<'a>(
    out: &mut dyn Write,
    feed: &'a Feed,
    gauges: &[(&str, &str, Gauge)],
    window: impl Fn(&'a FeedTarget) -> &'a str,
) {
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for t in &feed.targets {
            if let Some(value) = value(t) {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{}\",window=\"{}\"}} {value}",
                    label(&t.id),
                    window(t)
                );
            }
        }
    }
}

/// The quality canary's gauges, over `[quality] window` (each target's `quality.window`).
fn quality(out: &mut dyn Write, feed: &Feed) {
    let _ = writeln!(
        out,
        "# HELP sonde_quality_right_ratio Quality canary answers right / answers, by family (exact, tools).\n# TYPE sonde_quality_right_ratio gauge"
    );
    for t in &feed.targets {
        for (family, rate) in [("exact", &t.quality.exact), ("tools", &t.quality.tools)] {
            if let Some(value) = rate.rate {
                let _ = writeln!(
                    out,
                    "sonde_quality_right_ratio{{target=\"{}\",group=\"{}\",family=\"{family}\",window=\"{}\"}} {value}",
                    label(&t.id),
                    label(&t.group),
                    t.quality.window
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP sonde_quality_answers Quality canary answers judged, by family.\n# TYPE sonde_quality_answers gauge"
    );
    for t in &feed.targets {
        for (family, rate) in [("exact", &t.quality.exact), ("tools", &t.quality.tools)] {
            let _ = writeln!(
                out,
                "sonde_quality_answers{{target=\"{}\",family=\"{family}\",window=\"{}\"}} {}",
                label(&t.id),
                t.quality.window,
                rate.answers
            );
        }
    }
    let scores: [(&str, &str, Gauge); 3] = [
        (
            "sonde_quality_schema_accuracy_ratio",
            "Tool calls due whose arguments were valid under the tool's schema / calls due that were made.",
            |t| t.quality.schema_accuracy.rate,
        ),
        (
            "sonde_quality_trigger_f1",
            "F1 of calling a tool exactly when one is due.",
            |t| t.quality.trigger_f1,
        ),
        (
            "sonde_quality_factor",
            "What the routing score is multiplied by for quality (1 unless flagged below).",
            |t| Some(t.quality.factor),
        ),
    ];
    target_gauges(out, feed, &scores, |t| &t.quality.window);
    let _ = writeln!(
        out,
        "# HELP sonde_quality_standing 1 for the target's standing against its group's quality reference (reference, ok, below, insufficient, unmeasured).\n# TYPE sonde_quality_standing gauge"
    );
    for t in &feed.targets {
        let _ = writeln!(
            out,
            "sonde_quality_standing{{target=\"{}\",standing=\"{}\"}} 1",
            label(&t.id),
            t.quality.standing.as_str()
        );
    }
}
