//! The HTML pages: view models built from a [`Snapshot`], rendered by askama templates
//! (`templates/`), which escape every text. The markup built in Rust (uptime bar, charts,
//! heatmap) is in [`super::markup`]; how figures are written, in [`super::text`].

use std::collections::{BTreeMap, HashMap};

use askama::Template;

use super::feed::{Feed, FeedTarget, blended_price};
use super::latest::LatestRun;
use super::markup::{self, Compared};
use super::quality_page;
use super::text::{ms, number, percent, short_when, slug, state_text, target_path, when};
use super::{INCIDENTS_LISTED, PublishError, Sink, SiteFile, Snapshot};
use crate::aggregate::Window;
use crate::aggregate::health::IncidentKind;
use crate::aggregate::slo::SloStatus;
use crate::capability::Capabilities;
use crate::config::{Config, Target};
use crate::store::Incident;
use crate::units::rfc3339;

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
    /// Its page's table of the last 90 days: the bar's days for a reader who cannot hover.
    days_href: String,
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
    /// For a partial outage: where it is down (`down in eu-west`).
    down_in: String,
    /// The quality canary's verdict.
    quality: quality_page::Cell,
    /// Its SLO in short (`SLO met · budget 60 % left`), empty without one.
    slo: String,
    /// The SLO's state class.
    slo_class: &'static str,
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
        .map_or("never".into(), |r| short_when(r.ts.ms()));
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
        href: format!("{prefix}{}", target_path(&target.id)),
        days_href: format!("{prefix}{}#days", target_path(&target.id)),
        provider: target.provider.name.clone(),
        model: target.model.id.clone(),
        state_class,
        state_text,
        up24: percent(day_stats.and_then(|w| w.availability)),
        up7: percent(window(Window::D7).and_then(|w| w.availability)),
        up30: percent(window(Window::D30).and_then(|w| w.availability)),
        bar: markup::uptime_bar(snapshot, &target.id),
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
        down_in: stats
            .filter(|s| s.state == crate::aggregate::health::State::Partial)
            .map_or(String::new(), |s| {
                format!("down in {}", s.down_in().join(", "))
            }),
        quality: quality_page::cell(&entry.quality),
        slo: entry.slo.as_ref().map_or(String::new(), slo_text),
        slo_class: match &entry.slo {
            Some(slo) if !slo.met() => "down",
            Some(_) => "ok",
            None => "unknown",
        },
    }
}

/// A target's SLO in short: met or missed, and the least error budget left.
fn slo_text(slo: &SloStatus) -> String {
    let left = [slo.availability, slo.ttft]
        .iter()
        .flatten()
        .filter_map(|o| o.budget_left)
        .fold(f64::INFINITY, f64::min);
    let verdict = if slo.met() { "met" } else { "missed" };
    if left.is_finite() {
        format!(
            "SLO {verdict} ({}) · budget {:.0} % left",
            slo.window,
            left.max(0.0) * 100.0
        )
    } else {
        format!("SLO ({}): no runs yet", slo.window)
    }
}

/// One line of the target page's SLO table: objective, required, attained, good of
/// counted, budget left.
type SloRow = (String, String, String, String, String);

/// The target page's SLO table.
fn slo_rows(slo: &SloStatus) -> Vec<SloRow> {
    let row = |name: String, o: &crate::aggregate::slo::Objective| {
        (
            name,
            format!("{:.2} %", o.objective * 100.0),
            o.attained
                .map_or("–".to_owned(), |a| format!("{:.3} %", a * 100.0)),
            format!("{} of {}", o.good, o.total),
            o.budget_left.map_or("–".to_owned(), |b| {
                if b < 0.0 {
                    format!("exhausted ({:.0} % over)", -b * 100.0)
                } else {
                    format!("{:.1} %", b * 100.0)
                }
            }),
        )
    };
    let mut rows = Vec::new();
    if let Some(o) = &slo.availability {
        rows.push(row("availability".to_owned(), o));
    }
    if let (Some(o), Some(bound)) = (&slo.ttft, slo.ttft_p95_ms) {
        rows.push(row(format!("TTFT within {bound} ms"), o));
    }
    rows
}

/// One location's view of a target, on its page.
struct LocationRow {
    name: String,
    state_class: &'static str,
    state_text: &'static str,
    stale: bool,
    availability: String,
    ttft50: String,
    runs: u64,
    weight: String,
}

fn location_rows(entry: &FeedTarget) -> Vec<LocationRow> {
    entry
        .locations
        .iter()
        .map(|seen| {
            let (state_class, state_text) = state_text(seen.state);
            LocationRow {
                name: seen.location.clone(),
                state_class,
                state_text,
                stale: seen.stale,
                availability: percent(seen.availability),
                ttft50: ms(seen.ttft_p50_ms),
                runs: seen.samples,
                weight: format!("{:.3}", seen.weight),
            }
        })
        .collect()
}

/// A group of targets on the index.
struct Group<'a> {
    name: String,
    /// Its comparison page.
    href: String,
    /// Its targets and their feed entries, in the feed's order.
    members: Vec<(&'a Target, &'a FeedTarget)>,
    /// What their rows are made from.
    snapshot: &'a Snapshot,
    /// Its targets' figures, for the comparison page.
    compared: Vec<Compared>,
}

impl Group<'_> {
    /// Its targets' rows, each made as the page is rendered (one at a time, not 5,000 rows
    /// with their bars held together), their links prefixed with `prefix`.
    fn rows_at<'r>(&'r self, prefix: &'r str) -> impl Iterator<Item = Row> + 'r {
        self.members
            .iter()
            .map(move |(target, entry)| row(target, entry, self.snapshot, prefix))
    }

    /// Its rows as the index links them.
    fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.rows_at("")
    }
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage<'a> {
    title: String,
    refresh: String,
    generated: String,
    window: String,
    charts: String,
    group: &'a Group<'a>,
}

impl GroupPage<'_> {
    /// Its group's rows, linking up from `g/`.
    fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.group.rows_at("../")
    }
}

/// An incident, for display.
struct IncidentView {
    target: String,
    /// Where it was seen, when the store has more than one location.
    location: String,
    href: String,
    state_class: &'static str,
    state_text: &'static str,
    /// `quality` for a drift of the answers, empty for availability.
    kind: &'static str,
    cause: String,
    start: String,
    end: String,
}

fn incident_views<'a>(
    snapshot: &Snapshot,
    prefix: &str,
    incidents: impl IntoIterator<Item = &'a Incident>,
    open: bool,
) -> Vec<IncidentView> {
    incidents
        .into_iter()
        .filter(|i| !open || i.end_ms.is_none())
        .map(|i| {
            let (state_class, state_text) = state_text(i.state);
            IncidentView {
                target: i.target.to_string(),
                location: if snapshot.locations.len() > 1 {
                    i.location.to_string()
                } else {
                    String::new()
                },
                href: format!("{prefix}{}", target_path(&i.target)),
                state_class,
                state_text,
                kind: match i.kind {
                    IncidentKind::Health => "",
                    IncidentKind::Quality => "quality",
                },
                cause: i.cause.to_string(),
                start: when(i.start_ms),
                end: i.end_ms.map_or("ongoing".into(), when),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "incidents.html")]
struct IncidentsPage {
    title: String,
    refresh: String,
    generated: String,
    incidents: Vec<IncidentView>,
    /// Incidents of the bar's days past [`INCIDENTS_LISTED`], not listed.
    older: usize,
    /// The fleet has several locations: incidents say where.
    fleet: bool,
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    title: String,
    refresh: String,
    generated: String,
    generated_iso: String,
    window: String,
    open_incidents: Vec<IncidentView>,
    groups: Vec<Group<'a>>,
    summary: String,
    /// The overall state in words, and its state's class.
    banner: String,
    banner_class: &'static str,
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
    location: String,
}

fn run_row(r: &LatestRun) -> RunRow {
    RunRow {
        ts: r.ts.to_string().replace('T', " "),
        probe: r.probe.to_string(),
        outcome: r.outcome.to_string(),
        ok: r.outcome == crate::result::Outcome::Ok,
        http: r.http_status.map_or("–".into(), |s| s.to_string()),
        ttft: ms(r.ttft_ms()),
        e2e: ms(r.e2e_ms()),
        speed: number(r.tokens_per_s()),
        streamed: crate::capability::word(r.cap_streaming),
        served: match (&r.served_model, r.model_substituted) {
            (Some(model), true) => format!("≠ {model}"),
            (Some(model), false) => model.to_string(),
            (None, _) => "–".to_owned(),
        },
        error: r.problem.as_deref().unwrap_or_default().to_owned(),
        location: r.location.to_string(),
    }
}

#[derive(Template)]
#[template(path = "target.html")]
struct TargetPage {
    title: String,
    refresh: String,
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
    /// Day, availability, runs, failures: the last 90 days, newest first.
    days: Vec<(String, String, u64, u64)>,
    /// The target from each location, when more than one probes it.
    locations: Vec<LocationRow>,
    /// The fleet has several locations: runs and incidents say where.
    fleet: bool,
    /// The quality canary's section, when it has answers.
    quality: Option<quality_page::Section>,
    /// `[quality] alpha`, for the section's method.
    alpha: f64,
    /// Its SLO's window and objectives, when it has one.
    slo: Option<(String, Vec<SloRow>)>,
    /// `[quality] margin` in percentage points.
    margin: String,
}

/// `[publish] refresh` in seconds, as the pages' meta refresh; empty without one.
fn refresh(config: &Config) -> String {
    config
        .publish
        .refresh
        .map_or(String::new(), |every| every.as_secs().to_string())
}

/// Renders `index.html`, `incidents.html` and one comparison page per route group (every
/// page but the targets': [`each_target_page`], [`target_page`]), handing each to `sink`
/// as it is rendered.
pub fn shared_pages(
    config: &Config,
    snapshot: &Snapshot,
    feed: &Feed,
    sink: &mut Sink<'_>,
) -> Result<(), PublishError> {
    let refresh = refresh(config);
    let mut groups: Vec<Group> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let targets = config.targets_by_id();
    for entry in &feed.targets {
        let Some(&target) = targets.get(entry.id.as_str()) else {
            continue;
        };
        *counts.entry(state_text(entry.state).1).or_default() += 1;
        let compared = Compared {
            id: target.id.clone(),
            ttft: (entry.ttft_ms.p50, entry.ttft_ms.p95),
            speed: entry.tokens_per_s.p50,
            availability: entry.availability,
            price: blended_price(target),
        };
        match groups.iter_mut().find(|g| g.name == entry.group) {
            Some(group) => {
                group.members.push((target, entry));
                group.compared.push(compared);
            }
            None => groups.push(Group {
                name: entry.group.clone(),
                href: format!("g/{}.html", slug(&entry.group)),
                members: vec![(target, entry)],
                snapshot,
                compared: vec![compared],
            }),
        }
    }
    let summary = counts
        .iter()
        .map(|(state, n)| format!("{n} {}", state.to_lowercase()))
        .collect::<Vec<_>>()
        .join(" · ");
    for group in &groups {
        let page = GroupPage {
            title: config.publish.title.clone(),
            refresh: refresh.clone(),
            generated: when(snapshot.now_ms),
            window: feed.window.clone(),
            charts: markup::comparison(&group.compared),
            group,
        };
        sink(group.href.clone(), SiteFile::Page(&page))?;
    }
    let history = IncidentsPage {
        title: config.publish.title.clone(),
        refresh: refresh.clone(),
        generated: when(snapshot.now_ms),
        incidents: incident_views(
            snapshot,
            "",
            snapshot.incidents.iter().take(INCIDENTS_LISTED),
            false,
        ),
        older: snapshot.incidents.len().saturating_sub(INCIDENTS_LISTED),
        fleet: snapshot.locations.len() > 1,
    };
    sink("incidents.html".into(), SiteFile::Page(&history))?;
    let (banner, overall) = super::badge::headline(feed);
    let index = IndexPage {
        banner,
        banner_class: state_text(overall).0,
        title: config.publish.title.clone(),
        refresh,
        generated: when(snapshot.now_ms),
        generated_iso: rfc3339(snapshot.now_ms),
        window: feed.window.clone(),
        open_incidents: incident_views(snapshot, "", snapshot.incidents.iter(), true),
        groups,
        summary,
    };
    sink("index.html".into(), SiteFile::Page(&index))
}

/// Renders every target's page, one share of the targets per core, and hands each page to
/// `sink` as it is rendered (from the worker that rendered it), so a caller writing them
/// out never holds them all.
pub fn each_target_page(
    config: &Config,
    snapshot: &Snapshot,
    feed: &Feed,
    sink: &(dyn Fn(Page) -> Result<(), PublishError> + Sync),
) -> Result<(), PublishError> {
    let refresh = refresh(config);
    let targets = config.targets_by_id();
    let pages: Vec<(&Target, &FeedTarget)> = feed
        .targets
        .iter()
        .filter_map(|entry| Some((*targets.get(entry.id.as_str())?, entry)))
        .collect();
    let mut by_target: HashMap<&str, Vec<&Incident>> = HashMap::new();
    for incident in snapshot.incidents.iter() {
        by_target
            .entry(&incident.target)
            .or_default()
            .push(incident);
    }
    let page = |(target, entry): &(&Target, &FeedTarget)| {
        let incidents = by_target
            .get(target.id.as_str())
            .map_or(&[][..], Vec::as_slice);
        sink(render_target(
            config, snapshot, target, entry, &refresh, incidents,
        )?)
    };
    super::on_every_core(pages, |entry| page(&entry))
        .into_iter()
        .collect()
}

/// The page at `path` (`t/SLUG.html`) rendered alone, as [`each_target_page`] renders it;
/// `None` when no target of the feed has that path.
pub fn target_page(
    config: &Config,
    snapshot: &Snapshot,
    feed: &Feed,
    path: &str,
) -> Option<Result<Vec<u8>, PublishError>> {
    let entry = feed.targets.iter().find(|e| target_path(&e.id) == path)?;
    let target = config.targets.iter().find(|t| t.id == entry.id)?;
    let incidents: Vec<&Incident> = snapshot
        .incidents
        .iter()
        .filter(|i| *i.target == *target.id)
        .collect();
    Some(
        render_target(
            config,
            snapshot,
            target,
            entry,
            &refresh(config),
            &incidents,
        )
        .map(|(_, html)| html),
    )
}

/// A rendered page: its path in the site and its bytes.
pub type Page = (String, Vec<u8>);

/// The page of one target.
fn render_target(
    config: &Config,
    snapshot: &Snapshot,
    target: &Target,
    entry: &FeedTarget,
    refresh: &str,
    incidents: &[&Incident],
) -> Result<Page, PublishError> {
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
        refresh: refresh.to_owned(),
        generated: when(snapshot.now_ms),
        row: row(target, entry, snapshot, "../"),
        group: entry.group.clone(),
        weight: format!("{:.3}", entry.weight),
        rank: entry.rank,
        windows,
        chart: markup::latency_chart(snapshot, &target.id),
        heatmap: markup::heatmap(snapshot, &target.id),
        errors,
        incidents: incident_views(snapshot, "../", incidents.iter().copied(), false),
        runs: snapshot
            .latest
            .get(&target.id)
            .map(|runs| runs.iter().map(run_row).collect())
            .unwrap_or_default(),
        days: markup::daily_rows(snapshot, &target.id),
        locations: if entry.locations.len() > 1 {
            location_rows(entry)
        } else {
            Vec::new()
        },
        fleet: snapshot.locations.len() > 1,
        quality: quality_page::section(&entry.quality, snapshot, &target.id),
        alpha: config.quality.alpha,
        slo: entry
            .slo
            .as_ref()
            .map(|slo| (slo.window.clone(), slo_rows(slo))),
        margin: format!("{}", config.quality.margin * 100.0),
    };
    let html = page.render().map_err(|source| PublishError::Render {
        page: target.id.clone(),
        source,
    })?;
    Ok((target_path(&target.id), html.into_bytes()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::health::State;

    #[test]
    fn the_incidents_page_lists_the_newest_and_counts_the_rest() {
        let config = Config::parse(
            Path::new("sonde.toml"),
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             [[providers.models]]\nid = \"m\"\n",
        )
        .unwrap();
        let now = 1_780_000_000_000;
        // Newest first, as the store returns them.
        let incidents = (0..INCIDENTS_LISTED + 7)
            .map(|i| Incident {
                kind: IncidentKind::Health,
                target: "p/m".into(),
                location: "here".into(),
                state: State::Down,
                cause: format!("cause-{i}").into(),
                start_ms: now - i as i64 * 60_000,
                end_ms: Some(now - i as i64 * 60_000 + 30_000),
            })
            .collect::<Vec<_>>();
        let snapshot = Snapshot {
            now_ms: now,
            stats: Vec::new(),
            locations: Vec::new(),
            daily: HashMap::new(),
            hourly: HashMap::new(),
            incidents: Arc::new(incidents),
            latest: Arc::default(),
            by_target: HashMap::new(),
        };
        let feed = super::super::feed::build(&config, &[], &[], now);
        let files = super::super::build_shared(&config, &snapshot, &feed).unwrap();
        let page = String::from_utf8_lossy(&files["incidents.html"]);
        assert_eq!(
            page.matches("<tr><td class=\"nw\">").count(),
            INCIDENTS_LISTED
        );
        assert!(
            page.contains("cause-0<") && page.contains(&format!("cause-{}<", INCIDENTS_LISTED - 1))
        );
        assert!(!page.contains(&format!("cause-{}<", INCIDENTS_LISTED)));
        assert!(page.contains("7 older ones"), "the rest are counted");
    }
}
