//! The markup built in Rust rather than in templates: the 90-day uptime bar, the TTFT chart,
//! the weekday × hour heatmap and a route group's comparison charts. Each holds nothing but
//! dates, numbers and classes — except the comparison's target names, which are escaped here —
//! so the templates may insert it unescaped.
//!
//! Charts are inline SVG sized by CSS; their axis text is set in user units that the CSS
//! enlarges on narrow screens (`.axis` in `templates/base.html`), so it stays no larger than
//! body text on a desktop and readable on a phone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike};

use super::points::{DayPoint, Series};
use super::text::{Ms, Tenths, When, day, ms, percent};
use super::{BAR_DAYS, HEATMAP_DAYS, Snapshot};
use crate::aggregate::rollup::Span;

/// 90 days, one cell per day (`i` up, `b` degraded, `s` down, `u` no data), each titled with
/// the day, its availability and its runs; runs of days without data share one cell, which
/// keeps the index small.
pub fn uptime_bar(snapshot: &Snapshot, target: &str) -> String {
    let span = Span::Day;
    let first = span.bucket_of(snapshot.now_ms) - (BAR_DAYS - 1) * span.ms();
    let days: BTreeMap<i64, &DayPoint> = snapshot
        .daily
        .get(target)
        .map(|days| days.iter().collect())
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
            Some((availability, scalars)) => {
                if let Some(from) = empty_from.take() {
                    flush(&mut out, from, bucket - span.ms());
                }
                let _ = write!(
                    out,
                    "<{tag} title=\"{} {} {} runs\"></{tag}>",
                    &day(bucket)[5..],
                    percent(Some(availability)),
                    scalars.attempts(),
                    tag = bar_tag(availability)
                );
            }
        }
    }
    if let Some(from) = empty_from {
        flush(&mut out, from, first + (BAR_DAYS - 1) * span.ms());
    }
    out
}

/// The cell of a day's availability: up from 99.9 %, degraded from 95 %, else down.
fn bar_tag(availability: f64) -> char {
    if availability >= 0.999 {
        'i'
    } else if availability >= 0.95 {
        'b'
    } else {
        's'
    }
}

/// The last 90 days of a target as table rows (newest first): day, availability, runs and
/// failures — what the bar's cells say, for a reader who cannot hover.
pub fn daily_rows(snapshot: &Snapshot, target: &str) -> Vec<(String, String, u64, u64)> {
    let mut rows: Vec<_> = snapshot
        .daily
        .get(target)
        .into_iter()
        .flat_map(Series::iter)
        .filter(|(_, s)| s.attempts() > 0)
        .map(|(bucket, s)| {
            (
                day(bucket),
                percent(s.availability()),
                s.attempts(),
                s.failures,
            )
        })
        .collect();
    rows.reverse();
    rows
}

/// "Nice" axis ticks for values from 0 to `max`: a step of 1, 2 or 5 × 10^k giving at most
/// five intervals; returns the step and the top of the axis (a multiple of it).
fn ticks(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

/// TTFT p50 and p95 per hour over the last 7 days, as an inline SVG: round-number ticks,
/// every point marked (so a single hour still shows), day labels inside the frame.
pub fn latency_chart(snapshot: &Snapshot, target: &str) -> String {
    let (width, height, left, right, top, bottom) = (720.0, 230.0, 100.0, 14.0, 12.0, 40.0);
    let hour = Span::Hour.ms();
    let end = Span::Hour.bucket_of(snapshot.now_ms);
    let start = end - 7 * 24 * hour;
    let points: Vec<(i64, f64, f64)> = snapshot
        .hourly
        .get(target)
        .into_iter()
        .flat_map(Series::iter)
        .filter(|(b, _)| *b >= start)
        .map(|(b, p)| {
            (
                b,
                p.ttft_p50_ms(),
                p.ttft_p95_ms().unwrap_or(p.ttft_p50_ms()),
            )
        })
        .collect();
    if points.is_empty() {
        return "<p class=\"muted\">No successful streamed runs in the last 7 days.</p>".into();
    }
    let (step, axis_top) = ticks(points.iter().map(|p| p.2).fold(0.0, f64::max));
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let x = |b: i64| left + (b - start) as f64 / (end - start).max(1) as f64 * plot_w;
    let y = |v: f64| top + plot_h - v / axis_top * plot_h;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"TTFT p50 and p95 per hour, last 7 days\">"
    );
    let mut tick = 0.0;
    while tick <= axis_top + step / 2.0 {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - right,
            left - 6.0,
            y(tick) + 4.0,
            ms(Some(tick)),
            y = y(tick)
        );
        tick += step;
    }
    for d in 0..=7 {
        let b = start + d * 24 * hour;
        let anchor = match d {
            0 => "start",
            7 => "end",
            _ => "middle",
        };
        // On a phone only days 0, 2, 4 and 7, where eight labels would collide.
        let class = if matches!(d, 1 | 3 | 5 | 6) {
            "axis alt"
        } else {
            "axis"
        };
        let _ = write!(
            svg,
            "<text class=\"{class}\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            x(b),
            height - 10.0,
            &day(b)[5..]
        );
    }
    for (class, p95) in [("p95", true), ("p50", false)] {
        let _ = write!(svg, "<polyline class=\"{class}\" points=\"");
        for (i, p) in points.iter().enumerate() {
            let value = if p95 { p.2 } else { p.1 };
            let gap = if i == 0 { "" } else { " " };
            let _ = write!(svg, "{gap}{},{}", Tenths(x(p.0)), Tenths(y(value)));
        }
        svg.push_str("\"/>");
    }
    // One title per hour, on a group of its two marks: hovering either shows it, and the
    // page carries each hour's text once (it was most of a target page).
    for p in &points {
        let _ = write!(
            svg,
            "<g><title>{} p50 {} · p95 {}</title><circle class=\"p95\" cx=\"{x}\" cy=\"{}\" r=\"3\"/><circle class=\"p50\" cx=\"{x}\" cy=\"{}\" r=\"3\"/></g>",
            When(p.0),
            Ms(Some(p.1)),
            Ms(Some(p.2)),
            Tenths(y(p.2)),
            Tenths(y(p.1)),
            x = Tenths(x(p.0)),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Median hourly TTFT p50 by weekday × hour of day (UTC) over the last 28 days, with a
/// legend of its five shades and the values they stand for.
pub fn heatmap(snapshot: &Snapshot, target: &str) -> String {
    let mut cells: BTreeMap<(u32, u32), Vec<f64>> = BTreeMap::new();
    for (bucket, point) in snapshot
        .hourly
        .get(target)
        .into_iter()
        .flat_map(Series::iter)
    {
        let Some(t) = DateTime::from_timestamp_millis(bucket) else {
            continue;
        };
        let p50 = point.ttft_p50_ms();
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
    let level = |v: f64| {
        if high > low {
            (((v - low) / (high - low)) * 4.0).round() as u32
        } else {
            0
        }
    };
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
                    let _ = write!(
                        html,
                        "<td class=\"h{}\" title=\"{name} {h:02}:00 UTC: TTFT p50 {} ({n} h)\"></td>",
                        level(*v),
                        Ms(Some(*v))
                    );
                }
                None => html.push_str("<td></td>"),
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</table><p class=\"legend\">TTFT p50: ");
    for shade in 0..=4u32 {
        let value = low + (high - low) * f64::from(shade) / 4.0;
        let _ = write!(
            html,
            "<span><i class=\"sw h{shade}\"></i>{}</span>",
            ms(Some(value))
        );
    }
    html.push_str("<span><i class=\"sw\"></i>no runs</span></p>");
    html
}

/// One target in a group's comparison.
#[derive(Debug, Clone)]
pub struct Compared {
    /// Target id (escaped here).
    pub id: String,
    /// TTFT p50 and p95, ms.
    pub ttft: (Option<f64>, Option<f64>),
    /// Output speed p50, tokens/s.
    pub speed: Option<f64>,
    /// Availability, 0 to 1.
    pub availability: Option<f64>,
    /// Blended price, USD per million tokens.
    pub price: Option<f64>,
}

/// One comparison chart: its title, the value (and tick) of a target, how a value is written.
type Chart = (
    &'static str,
    fn(&Compared) -> (Option<f64>, Option<f64>),
    fn(f64) -> String,
);

/// A route group's targets side by side: four small bar charts (TTFT p50 with its p95,
/// output speed, availability, price), one bar per target, each with its value written out.
pub fn comparison(targets: &[Compared]) -> String {
    let mut html = String::new();
    let charts: [Chart; 4] = [
        (
            "TTFT p50 (bar) and p95 (tick), lower is better",
            |t| t.ttft,
            |v| ms(Some(v)),
        ),
        (
            "Output speed p50, tokens/s, higher is better",
            |t| (t.speed, None),
            |v| format!("{v:.0}"),
        ),
        (
            "Availability, higher is better",
            |t| (t.availability, None),
            |v| percent(Some(v)),
        ),
        (
            "Price, USD per million tokens (3 in : 1 out), lower is better",
            |t| (t.price, None),
            |v| format!("${v:.2}"),
        ),
    ];
    for (title, pick, label) in charts {
        let _ = write!(
            html,
            "<figure class=\"cmp\"><figcaption>{title}</figcaption>"
        );
        html.push_str(&bars(targets, pick, label));
        html.push_str("</figure>");
    }
    html
}

/// One horizontal bar chart: a row per target, the bar's length its value over the largest.
fn bars(
    targets: &[Compared],
    pick: fn(&Compared) -> (Option<f64>, Option<f64>),
    label: fn(f64) -> String,
) -> String {
    let (width, row, name_w, value_w) = (720.0, 26.0, 250.0, 90.0);
    let max = targets
        .iter()
        .flat_map(|t| {
            let (a, b) = pick(t);
            [a, b]
        })
        .flatten()
        .fold(0.0, f64::max);
    let plot = width - name_w - value_w;
    let height = row * targets.len() as f64 + 4.0;
    let mut svg = format!("<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\">");
    for (i, target) in targets.iter().enumerate() {
        let y = 2.0 + row * i as f64;
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            name_w - 8.0,
            y + row * 0.65,
            escape(&target.id)
        );
        let (value, tick) = pick(target);
        let Some(value) = value else {
            let _ = write!(
                svg,
                "<text class=\"axis\" x=\"{name_w}\" y=\"{:.1}\">–</text>",
                y + row * 0.65
            );
            continue;
        };
        let length = if max > 0.0 { value / max * plot } else { 0.0 };
        let _ = write!(
            svg,
            "<rect class=\"barv\" x=\"{name_w}\" y=\"{:.1}\" width=\"{length:.1}\" height=\"{:.1}\"/>",
            y + 4.0,
            row - 8.0
        );
        if let Some(tick) = tick {
            let at = name_w + if max > 0.0 { tick / max * plot } else { 0.0 };
            let _ = write!(
                svg,
                "<line class=\"tick\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
                y + 2.0,
                y + row - 2.0
            );
        }
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            name_w
                + length.max(tick.map_or(0.0, |t| if max > 0.0 { t / max * plot } else { 0.0 }))
                + 6.0,
            y + row * 0.65,
            label(value)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Text for SVG: the five characters XML gives meaning to, escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_covering_the_maximum() {
        assert_eq!(ticks(287.0), (100.0, 300.0));
        assert_eq!(ticks(1234.0), (500.0, 1500.0));
        assert_eq!(ticks(9.0), (2.0, 10.0));
        assert_eq!(ticks(0.0), (0.2, 1.0));
        let (step, top) = ticks(61_000.0);
        assert_eq!((step, top), (20_000.0, 80_000.0));
    }

    #[test]
    fn comparison_names_are_escaped() {
        let html = comparison(&[Compared {
            id: "<b>&".into(),
            ttft: (Some(100.0), Some(150.0)),
            speed: None,
            availability: Some(0.99),
            price: None,
        }]);
        assert!(html.contains("&lt;b&gt;&amp;"));
        assert!(!html.contains("<b>&"));
    }
}
