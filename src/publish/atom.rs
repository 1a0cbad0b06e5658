//! `incidents.xml`: the newest [`ENTRIES`] incidents of the last 90 days as an Atom feed
//! (RFC 4287), newest first, for feed readers and chat integrations that follow a status
//! page (a reader polls for what is new; `incidents.html` lists them all). Each incident is
//! one entry whose id stays the same while it lasts and after it ends (its `updated` moves
//! to the end), so a reader shows it once and updates it.

use atom_syndication::{Category, Entry, Feed, FixedDateTime, Generator, Link, Person, Text};
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::Snapshot;
use super::text::{state_text, target_path, when};
use crate::aggregate::health::IncidentKind;
use crate::config::Config;
use crate::store::Incident;

/// Entries in the feed: a reader polling every few minutes needs only the newest, and a
/// flapping fleet would otherwise make the feed megabytes.
pub const ENTRIES: usize = 100;

fn at(ms: i64) -> FixedDateTime {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .fixed_offset()
}

fn urn_part(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

fn link(href: String, rel: &str, mime: &str) -> Link {
    Link {
        href,
        rel: rel.to_owned(),
        mime_type: Some(mime.to_owned()),
        ..Link::default()
    }
}

/// One incident's entry; `fleet`: several locations, so say which one saw it.
fn entry(incident: &Incident, fleet: bool) -> Entry {
    let kind = incident.kind.as_str();
    let what = match incident.kind {
        IncidentKind::Health => state_text(incident.state).1.to_lowercase(),
        IncidentKind::Quality => "quality drift".to_owned(),
    };
    let place = if incident.location.is_empty() || !fleet {
        String::new()
    } else {
        format!(" (seen from {})", incident.location)
    };
    let status = match incident.end_ms {
        Some(end) => format!("Ended {}.", when(end)),
        None => "Ongoing.".to_owned(),
    };
    Entry {
        title: Text::plain(format!("{}: {what}{place}", incident.target)),
        id: format!(
            "urn:sonde:incident:{kind}:{}:{}:{}",
            urn_part(&incident.target),
            urn_part(&incident.location),
            incident.start_ms
        ),
        updated: at(incident.end_ms.unwrap_or(incident.start_ms)),
        published: Some(at(incident.start_ms)),
        summary: Some(Text::plain(format!(
            "Since {}: {}. {status}",
            when(incident.start_ms),
            incident.cause.trim_end_matches('.')
        ))),
        categories: vec![Category {
            term: kind.to_owned(),
            ..Category::default()
        }],
        links: vec![link(
            target_path(&incident.target),
            "alternate",
            "text/html",
        )],
        ..Entry::default()
    }
}

/// The Atom document of the snapshot's incidents.
pub fn incidents(config: &Config, snapshot: &Snapshot) -> Vec<u8> {
    let fleet = snapshot.locations.len() > 1;
    let entries: Vec<Entry> = snapshot
        .incidents
        .iter()
        .take(ENTRIES)
        .map(|incident| entry(incident, fleet))
        .collect();
    let updated = entries
        .iter()
        .map(|e| e.updated)
        .max()
        .unwrap_or_else(|| at(snapshot.now_ms));
    let feed = Feed {
        title: Text::plain(format!("{}: incidents", config.publish.title)),
        id: format!("urn:sonde:incidents:{}", urn_part(&config.publish.title)),
        updated,
        authors: vec![Person {
            name: "sonde".to_owned(),
            ..Person::default()
        }],
        generator: Some(Generator {
            value: "sonde".to_owned(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            ..Generator::default()
        }),
        links: vec![
            link("incidents.xml".to_owned(), "self", "application/atom+xml"),
            link("incidents.html".to_owned(), "alternate", "text/html"),
        ],
        entries,
        ..Feed::default()
    };
    feed.to_string().into_bytes()
}
