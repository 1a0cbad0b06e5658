//! The HTML pages: view models built from a [`Snapshot`], rendered by askama templates
//! (`templates/`), which escape every text. The only markup built here is the uptime bar,
//! the latency chart and the heatmap, and they contain nothing but dates and numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use askama::Template;
use chrono::{DateTime, Datelike, Timelike};

use super::feed::{Feed, FeedTarget};
use super::{BAR_DAYS, Files, HEATMAP_DAYS, PublishError, Snapshot};
use crate::aggregate::Window;
use crate::aggregate::health::State;
use crate::capability::Capabilities;
use crate::config::{Config, Target};
use crate::result::ResultRecord;
use crate::scheduler::stable_hash;
use crate::store::Span;

/// The file name of a target's page: its id made safe for any file system, plus a hash so
/// that two ids never share a page.
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

fn when(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// `MM-DD HH:MM` (the page says times are UTC).
fn short_when(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn day(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn percent(value: Option<f64>) -> String {
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

fn ms(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| {
        if v >= 10_000.0 {
            format!("{:.1} s", v / 1000.0)
        } else {
            format!("{v:.0} ms")
        }
    })
}

fn number(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.0}"))
}

fn state_text(state: State) -> (&'static str, &'static str) {
    match state {
        State::Healthy => ("ok", "Operational"),
        State::Degraded => ("warn", "Degraded"),
        State::Down => ("down", "Down"),
        State::Unknown => ("unknown", "No data yet"),
    }
}

/// A capability badge: green when supported, struck through when not, grey when untested
/// (the legend is on the page).
struct Badge {
    name: &'static str,
    class: &'static str,
}

fn badges(flags: &Capabilities) -> Vec<Badge> {
    let badge = |name: &'static str, value: Option<bool>| Badge {
        name,
        class: match value {
            Some(true) => "y",
            Some(false) => "n",
            None => "u",
        },
    };
    vec![
        badge("stream", flags.streaming),
        badge("tools", flags.tools),
        badge("JSON", flags.json),
        badge("usage", flags.usage_in_stream),
    ]
}

/// One target's row on the index (and header of its page).
struct Row {
    id: String,
    href: String,
    provider: String,
    model: String,
    state_class: &'static str,
    state_text: &'static str,
    up24: String,
    up7: String,
    up30: String,
    bar: String,
    ttft50: String,
    ttft95: String,
    speed50: String,
    badges: Vec<Badge>,
    price: String,
    last_error: String,
    last_checked: String,
    weight: String,
    /// Who answers: the served model (when it is not the one asked for) and the upstream.
    served: String,
    /// Some answer in the feed's window came from another model.
    substituted: bool,
    /// Stream answers arrive whole.
    fake_stream: bool,
    /// `yes`, `no (3 of 4 whole)` or `–` when no stream probe says.
    streamed: String,
    /// Whether the feed routes traffic here.
    routable: bool,
    /// What lowered or zeroed the weight.
    notes: String,
}

fn row(target: &Target, entry: &FeedTarget, snapshot: &Snapshot, prefix: &str) -> Row {
    let stats = snapshot.stats_of(&target.id);
    let window = |w: Window| stats.and_then(|s| s.window(w));
    let day_stats = window(Window::H24);
    let latency = day_stats.map(|w| &w.latency);
    let (state_class, state_text) = state_text(entry.state);
    let price = match (target.model.input_price, target.model.output_price) {
        (None, None) => "–".to_owned(),
        (input, output) => format!(
            "${} / ${}",
            input.map_or("–".into(), |p| format!("{p}")),
            output.map_or("–".into(), |p| format!("{p}"))
        ),
    };
    let last_checked = snapshot
        .latest
        .get(&target.id)
        .and_then(|runs| runs.first())
        .map_or("never".into(), |r| short_when(crate::store::ts_ms(r)));
    let mut last_error = window(Window::D30)
        .and_then(|w| w.last_error.as_ref())
        .map_or(String::new(), |(at, text)| {
            format!("{} — {text}", when(*at))
        });
    if last_error.chars().count() > 140 {
        last_error = last_error.chars().take(139).collect::<String>() + "…";
    }
    let mut served = Vec::new();
    if let Some(model) = entry
        .served_model
        .as_deref()
        .filter(|_| entry.model_substituted)
    {
        served.push(format!("answers as {model}"));
    }
    if let Some(upstream) = &entry.upstream {
        served.push(format!("via {upstream}"));
    }
    let streamed = match entry.streamed_rate {
        None => "–".to_owned(),
        Some(rate) if rate >= 1.0 => "yes".to_owned(),
        Some(rate) if rate <= 0.0 => "no".to_owned(),
        Some(rate) => format!("{:.0}% of answers", rate * 100.0),
    };
    Row {
        id: target.id.clone(),
        href: format!("{prefix}t/{}.html", slug(&target.id)),
        provider: target.provider.name.clone(),
        model: target.model.id.clone(),
        state_class,
        state_text,
        up24: percent(day_stats.and_then(|w| w.availability)),
        up7: percent(window(Window::D7).and_then(|w| w.availability)),
        up30: percent(window(Window::D30).and_then(|w| w.availability)),
        bar: uptime_bar(snapshot, &target.id),
        ttft50: ms(latency.and_then(|l| l.ttft_ms.p50)),
        ttft95: ms(latency.and_then(|l| l.ttft_ms.p95)),
        speed50: number(latency.and_then(|l| l.tokens_per_s.p50)),
        badges: badges(&entry.capabilities),
        price,
        last_error,
        last_checked,
        weight: format!("{:.2}", entry.weight),
        served: served.join(" "),
        substituted: entry.model_substituted,
        fake_stream: entry.streamed_rate.is_some_and(|rate| rate < 0.5),
        streamed,
        routable: entry.routable,
        notes: entry.notes.join("; "),
    }
}

/// 90 days, one cell per day (`i` up, `b` degraded, `s` down, `u` no data); runs of days
/// without data share one cell, which keeps the index small.
fn uptime_bar(snapshot: &Snapshot, target: &str) -> String {
    let span = Span::Day;
    let first = span.bucket_of(snapshot.now_ms) - (BAR_DAYS - 1) * span.ms();
    let days: BTreeMap<i64, &crate::aggregate::rollup::Scalars> = snapshot
        .daily
        .get(target)
        .map(|days| days.iter().map(|(b, s)| (*b, s)).collect())
        .unwrap_or_default();
    let mut out = String::new();
    let mut empty_from: Option<i64> = None;
    let flush = |out: &mut String, from: i64, to: i64| {
        let n = (to - from) / span.ms() + 1;
        let _ = write!(
            out,
            "<u style=\"flex:{n}\" title=\"{}–{}: no data\"></u>",
            &day(from)[5..],
            &day(to)[5..]
        );
    };
    for i in 0..BAR_DAYS {
        let bucket = first + i * span.ms();
        match days
            .get(&bucket)
            .and_then(|s| s.availability().map(|a| (a, *s)))
        {
            None => {
                empty_from.get_or_insert(bucket);
            }
            Some((availability, _)) => {
                if let Some(from) = empty_from.take() {
                    flush(&mut out, from, bucket - span.ms());
                }
                let tag = if availability >= 0.999 {
                    'i'
                } else if availability >= 0.95 {
                    'b'
                } else {
                    's'
                };
                // Unquoted and without spaces: 25 bytes a day keeps 200 targets under 300 KB.
                let _ = write!(
                    out,
                    "<{tag} title={}:{}></{tag}>",
                    &day(bucket)[5..],
                    percent(Some(availability))
                );
            }
        }
    }
    if let Some(from) = empty_from {
        flush(&mut out, from, first + (BAR_DAYS - 1) * span.ms());
    }
    out
}

/// TTFT p50 and p95 per hour over the last 7 days, as an inline SVG.
fn latency_chart(snapshot: &Snapshot, target: &str) -> String {
    let (width, height, pad) = (720.0, 200.0, 60.0);
    let hour = Span::Hour.ms();
    let end = Span::Hour.bucket_of(snapshot.now_ms);
    let start = end - 7 * 24 * hour;
    let points: Vec<(i64, f64, f64)> = snapshot
        .hourly
        .get(target)
        .into_iter()
        .flatten()
        .filter(|(b, _)| *b >= start)
        .filter_map(|(b, s)| Some((*b, s.ttft_p50_ms?, s.ttft_p95_ms.or(s.ttft_p50_ms)?)))
        .collect();
    if points.is_empty() {
        return "<p class=\"muted\">No successful streamed runs in the last 7 days.</p>".into();
    }
    let top = points.iter().map(|p| p.2).fold(1.0, f64::max) * 1.1;
    let x = |b: i64| pad + (b - start) as f64 / (end - start).max(1) as f64 * (width - pad - 10.0);
    let y = |v: f64| height - 25.0 - v / top * (height - 35.0);
    let line = |pick: fn(&(i64, f64, f64)) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"TTFT p50 and p95 per hour, last 7 days\">"
    );
    for k in 0..=4 {
        let v = top * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{pad}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            width - 10.0,
            pad - 4.0,
            y(v) + 4.0,
            ms(Some(v)),
            y = y(v)
        );
    }
    for d in 0..=7 {
        let b = start + d * 24 * hour;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            x(b),
            height - 8.0,
            &day(b)[5..]
        );
    }
    let _ = write!(
        svg,
        "<polyline class=\"p95\" points=\"{}\"/><polyline class=\"p50\" points=\"{}\"/>",
        line(|p| p.2),
        line(|p| p.1)
    );
    for p in &points {
        let _ = write!(
            svg,
            "<circle class=\"p50\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\"><title>{} p50 {} · p95 {}</title></circle>",
            x(p.0),
            y(p.1),
            when(p.0),
            ms(Some(p.1)),
            ms(Some(p.2))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Median hourly TTFT p50 by weekday × hour of day (UTC) over the last 28 days.
fn heatmap(snapshot: &Snapshot, target: &str) -> String {
    let mut cells: BTreeMap<(u32, u32), Vec<f64>> = BTreeMap::new();
    for (bucket, scalars) in snapshot.hourly.get(target).into_iter().flatten() {
        let (Some(p50), Some(t)) = (
            scalars.ttft_p50_ms,
            DateTime::from_timestamp_millis(*bucket),
        ) else {
            continue;
        };
        cells
            .entry((t.weekday().num_days_from_monday(), t.hour()))
            .or_default()
            .push(p50);
    }
    if cells.is_empty() {
        return format!(
            "<p class=\"muted\">No successful streamed runs in the last {HEATMAP_DAYS} days.</p>"
        );
    }
    let medians: BTreeMap<(u32, u32), (f64, usize)> = cells
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, (v[v.len() / 2], v.len()))
        })
        .collect();
    let low = medians.values().map(|m| m.0).fold(f64::INFINITY, f64::min);
    let high = medians.values().map(|m| m.0).fold(0.0, f64::max);
    let mut html = String::from("<table class=\"heat\"><tr><th></th>");
    for h in 0..24 {
        let _ = write!(html, "<th>{h:02}</th>");
    }
    html.push_str("</tr>");
    for (d, name) in ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .enumerate()
    {
        let _ = write!(html, "<tr><th>{name}</th>");
        for h in 0..24u32 {
            match medians.get(&(d as u32, h)) {
                Some((v, n)) => {
                    let level = if high > low {
                        (((v - low) / (high - low)) * 4.0).round() as u32
                    } else {
                        0
                    };
                    let _ = write!(
                        html,
                        "<td class=\"h{level}\" title=\"{name} {h:02}:00 UTC: TTFT p50 {} ({n} h)\"></td>",
                        ms(Some(*v))
                    );
                }
                None => html.push_str("<td></td>"),
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

/// A group of targets on the index.
struct Group {
    name: String,
    rows: Vec<Row>,
}

/// An incident, for display.
struct IncidentView {
    target: String,
    href: String,
    state_class: &'static str,
    state_text: &'static str,
    cause: String,
    start: String,
    end: String,
}

fn incident_views(
    snapshot: &Snapshot,
    prefix: &str,
    only: Option<&str>,
    open: bool,
) -> Vec<IncidentView> {
    snapshot
        .incidents
        .iter()
        .filter(|i| only.is_none_or(|t| t == i.target))
        .filter(|i| !open || i.end_ms.is_none())
        .map(|i| {
            let (state_class, state_text) = state_text(i.state);
            IncidentView {
                target: i.target.clone(),
                href: format!("{prefix}t/{}.html", slug(&i.target)),
                state_class,
                state_text,
                cause: i.cause.clone(),
                start: when(i.start_ms),
                end: i.end_ms.map_or("ongoing".into(), when),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    title: String,
    generated: String,
    generated_iso: String,
    window: String,
    open_incidents: Vec<IncidentView>,
    groups: Vec<Group>,
    summary: String,
}

/// One window's figures on a target page.
struct WindowRow {
    name: &'static str,
    runs: u64,
    availability: String,
    ttft50: String,
    ttft95: String,
    ttft99: String,
    speed50: String,
    rate_limited: u64,
    cost: String,
}

/// One of the latest runs.
struct RunRow {
    ts: String,
    probe: String,
    outcome: String,
    ok: bool,
    http: String,
    ttft: String,
    e2e: String,
    speed: String,
    /// `yes`/`no` from a probe that checks streaming, `–` from one that says nothing.
    streamed: &'static str,
    /// The served model, marked when it is another model.
    served: String,
    error: String,
}

fn run_row(r: &ResultRecord) -> RunRow {
    let mut error = r.error.clone().unwrap_or_default();
    if error.chars().count() > 120 {
        error = error.chars().take(119).collect::<String>() + "…";
    }
    RunRow {
        ts: r.ts.replace('T', " "),
        probe: r.probe.clone(),
        outcome: r.outcome.to_string(),
        ok: r.outcome == crate::result::Outcome::Ok,
        http: r.http_status.map_or("–".into(), |s| s.to_string()),
        ttft: ms(r.ttft_ms),
        e2e: ms(r.e2e_ms),
        speed: number(r.tokens_per_s),
        streamed: match r.cap_streaming {
            Some(true) => "yes",
            Some(false) => "no",
            None => "–",
        },
        served: match (&r.served_model, r.model_substituted) {
            (Some(model), true) => format!("≠ {model}"),
            (Some(model), false) => model.clone(),
            (None, _) => "–".to_owned(),
        },
        error,
    }
}

#[derive(Template)]
#[template(path = "target.html")]
struct TargetPage {
    title: String,
    generated: String,
    row: Row,
    group: String,
    weight: String,
    rank: u32,
    windows: Vec<WindowRow>,
    chart: String,
    heatmap: String,
    errors: Vec<(String, u64, String)>,
    incidents: Vec<IncidentView>,
    runs: Vec<RunRow>,
}

/// Renders `index.html` and one page per target.
pub fn render(config: &Config, snapshot: &Snapshot, feed: &Feed) -> Result<Files, PublishError> {
    let mut files = Files::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &feed.targets {
        let Some(target) = config.targets.iter().find(|t| t.id == entry.id) else {
            continue;
        };
        *counts.entry(state_text(entry.state).1).or_default() += 1;
        let index_row = row(target, entry, snapshot, "");
        match groups.iter_mut().find(|g| g.name == entry.group) {
            Some(group) => group.rows.push(index_row),
            None => groups.push(Group {
                name: entry.group.clone(),
                rows: vec![index_row],
            }),
        }
        let stats = snapshot.stats_of(&target.id);
        let windows = Window::ALL
            .iter()
            .filter_map(|&w| {
                let s = stats?.window(w)?;
                Some(WindowRow {
                    name: w.as_str(),
                    runs: s.attempts,
                    availability: percent(s.availability),
                    ttft50: ms(s.latency.ttft_ms.p50),
                    ttft95: ms(s.latency.ttft_ms.p95),
                    ttft99: ms(s.latency.ttft_ms.p99),
                    speed50: number(s.latency.tokens_per_s.p50),
                    rate_limited: s.rate_limited,
                    cost: format!("${:.4}", s.cost_usd),
                })
            })
            .collect();
        let month = stats.and_then(|s| s.window(Window::D30));
        let total = month.map_or(0, |m| m.attempts).max(1);
        let errors = month
            .map(|m| {
                m.outcomes
                    .iter()
                    .map(|(o, n)| {
                        (
                            o.to_string(),
                            *n,
                            format!("{:.1}%", *n as f64 * 100.0 / total as f64),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let page = TargetPage {
            title: config.publish.title.clone(),
            generated: when(snapshot.now_ms),
            row: row(target, entry, snapshot, "../"),
            group: entry.group.clone(),
            weight: format!("{:.3}", entry.weight),
            rank: entry.rank,
            windows,
            chart: latency_chart(snapshot, &target.id),
            heatmap: heatmap(snapshot, &target.id),
            errors,
            incidents: incident_views(snapshot, "../", Some(&target.id), false),
            runs: snapshot
                .latest
                .get(&target.id)
                .map(|runs| runs.iter().map(run_row).collect())
                .unwrap_or_default(),
        };
        let html = page.render().map_err(|source| PublishError::Render {
            page: target.id.clone(),
            source,
        })?;
        files.insert(format!("t/{}.html", slug(&target.id)), html.into_bytes());
    }
    let summary = counts
        .iter()
        .map(|(state, n)| format!("{n} {}", state.to_lowercase()))
        .collect::<Vec<_>>()
        .join(" · ");
    let index = IndexPage {
        title: config.publish.title.clone(),
        generated: when(snapshot.now_ms),
        generated_iso: super::feed::rfc3339(snapshot.now_ms),
        window: feed.window.clone(),
        open_incidents: incident_views(snapshot, "", None, true),
        groups,
        summary,
    };
    let html = index.render().map_err(|source| PublishError::Render {
        page: "index".into(),
        source,
    })?;
    files.insert("index.html".into(), html.into_bytes());
    Ok(files)
}
