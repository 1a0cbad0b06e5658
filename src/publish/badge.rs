//! Status at a glance, for embedding elsewhere: an SVG badge per target and per route group
//! (`badge/<page name>.svg`), the same as a shields.io endpoint (`badge/<page name>.json`,
//! for `https://img.shields.io/endpoint?url=…`), the favicon in the worst current state
//! (`favicon.svg`) and the index's headline.

use askama::Template;
use serde_json::json;

use super::feed::{Feed, FeedTarget};
use super::text::slug;
use super::{PublishError, Sink, SiteFile};
use crate::aggregate::health::State;

/// Pixels per character of the badge's 11 px Verdana, on average, and the padding.
const CHAR_PX: f64 = 6.8;
const PAD_PX: f64 = 10.0;

#[derive(Template)]
#[template(path = "badge.svg", escape = "html")]
struct Badge<'a> {
    label: &'a str,
    message: &'a str,
    color: &'static str,
    width: u32,
    left: u32,
    right: u32,
    left_mid: f64,
    right_mid: f64,
}

/// How bad a state is, for the worst of several: down, then partial and degraded, then
/// healthy, then no data.
fn severity(state: State) -> u8 {
    match state {
        State::Down => 3,
        State::Partial | State::Degraded => 2,
        State::Healthy => 1,
        State::Unknown => 0,
    }
}

/// The badge colour (a hex for the SVG, a shields.io name for the endpoint) of a state.
fn colors(state: State) -> (&'static str, &'static str) {
    match state {
        State::Healthy => ("#1f883d", "brightgreen"),
        State::Degraded | State::Partial => ("#bf8700", "yellow"),
        State::Down => ("#cf222e", "red"),
        State::Unknown => ("#8c959f", "lightgrey"),
    }
}

fn words(state: State) -> &'static str {
    match state {
        State::Healthy => "operational",
        State::Degraded => "degraded",
        State::Partial => "partial outage",
        State::Down => "down",
        State::Unknown => "no data",
    }
}

fn render(label: &str, message: &str, state: State) -> Result<(Vec<u8>, Vec<u8>), PublishError> {
    let px = |text: &str| (text.chars().count() as f64 * CHAR_PX + PAD_PX).round() as u32;
    let (left, right) = (px(label), px(message));
    let (hex, name) = colors(state);
    let svg = Badge {
        label,
        message,
        color: hex,
        width: left + right,
        left,
        right,
        left_mid: f64::from(left) / 2.0,
        right_mid: f64::from(left) + f64::from(right) / 2.0,
    }
    .render()
    .map_err(|source| PublishError::Render {
        page: format!("the badge of {label}"),
        source,
    })?;
    let endpoint = json!({"schemaVersion": 1, "label": label, "message": message, "color": name});
    Ok((svg.into_bytes(), endpoint.to_string().into_bytes()))
}

/// The worst state among `targets` (no data when there is none).
pub fn worst<'a>(targets: impl IntoIterator<Item = &'a FeedTarget>) -> State {
    targets
        .into_iter()
        .map(|t| t.state)
        .max_by_key(|state| severity(*state))
        .unwrap_or(State::Unknown)
}

/// The index's headline: the overall state in words, and its state.
pub fn headline(feed: &Feed) -> (String, State) {
    let total = feed.targets.len();
    let count = |state: State| feed.targets.iter().filter(|t| t.state == state).count();
    let state = worst(&feed.targets);
    let text = match state {
        State::Down => format!("Outage: {} of {total} targets down", count(State::Down)),
        State::Partial | State::Degraded => format!(
            "Degraded: {} of {total} targets degraded or down in some locations",
            count(State::Degraded) + count(State::Partial)
        ),
        State::Healthy => "All systems operational".to_owned(),
        State::Unknown => "Waiting for the first runs".to_owned(),
    };
    (text, state)
}

/// Every badge, its endpoint JSON and the favicon, each handed to `sink`.
pub fn files(feed: &Feed, sink: &mut Sink<'_>) -> Result<(), PublishError> {
    for target in &feed.targets {
        let (svg, endpoint) = render(&target.id, words(target.state), target.state)?;
        sink(
            format!("badge/{}.svg", slug(&target.id)),
            SiteFile::Bytes(svg),
        )?;
        sink(
            format!("badge/{}.json", slug(&target.id)),
            SiteFile::Bytes(endpoint),
        )?;
    }
    for group in feed.groups.keys() {
        let members: Vec<&FeedTarget> = feed.targets.iter().filter(|t| &t.group == group).collect();
        let up = members.iter().filter(|t| t.state != State::Down).count();
        let state = match (up, members.len()) {
            (0, _) => State::Down,
            (up, all) if up < all => State::Partial,
            _ => worst(members.iter().copied()),
        };
        let message = format!("{up} of {} up", members.len());
        let (svg, endpoint) = render(group, &message, state)?;
        sink(format!("badge/g/{}.svg", slug(group)), SiteFile::Bytes(svg))?;
        sink(
            format!("badge/g/{}.json", slug(group)),
            SiteFile::Bytes(endpoint),
        )?;
    }
    let (fill, _) = colors(worst(&feed.targets));
    sink(
        "favicon.svg".into(),
        SiteFile::Bytes(
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><circle cx=\"8\" cy=\"8\" r=\"7\" fill=\"{fill}\"/></svg>"
            )
            .into_bytes(),
        ),
    )
}
