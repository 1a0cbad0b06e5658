//! `[prober]`: where this daemon probes from, and how a fleet of them judges a target.
//!
//! Every result and rollup carries its prober's `location`, so probers in several places can
//! share one PostgreSQL store, each writing only its own rows; the publisher merges them and
//! decides each target's global state by `quorum` of the locations that still report.

use serde::Deserialize;
use toml::Spanned;

use super::error::{Errors, Source};

/// The longest location name: it is a label on every metric and a path on the page.
const MAX_LOCATION_LEN: usize = 64;
/// The location when the host has no usable name.
const FALLBACK_LOCATION: &str = "local";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProber {
    #[serde(default)]
    location: Option<Spanned<String>>,
    #[serde(default)]
    quorum: Option<Spanned<u32>>,
}

/// Where this prober is, and the fleet's quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProberConfig {
    /// This prober's location (`eu-west`): letters, digits, `.`, `_` and `-`; by default the
    /// host's name.
    pub location: String,
    /// Fresh locations that must see a target down for it to be down everywhere; `None`: a
    /// majority of the fresh locations.
    pub quorum: Option<u32>,
}

impl Default for ProberConfig {
    fn default() -> ProberConfig {
        ProberConfig {
            location: host_location(),
            quorum: None,
        }
    }
}

impl ProberConfig {
    /// The quorum among `fresh` locations: the configured one (at most `fresh`), else a
    /// majority; at least one.
    pub fn quorum_of(&self, fresh: usize) -> usize {
        let fresh = fresh.max(1);
        match self.quorum {
            Some(quorum) => (quorum as usize).clamp(1, fresh),
            None => fresh / 2 + 1,
        }
    }
}

/// Whether `name` may be a location.
pub fn is_location(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LOCATION_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The host's name as a location: its first label, with anything a location may not hold
/// replaced by `-`.
fn host_location() -> String {
    #[cfg(target_os = "linux")]
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    #[cfg(not(target_os = "linux"))]
    let name = String::new();
    let label: String = name
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LOCATION_LEN)
        .collect();
    if is_location(&label) {
        label
    } else {
        FALLBACK_LOCATION.to_owned()
    }
}

pub(super) fn prober(source: &Source<'_>, errors: &mut Errors, raw: RawProber) -> ProberConfig {
    let mut config = ProberConfig::default();
    if let Some(location) = raw.location {
        if is_location(location.get_ref()) {
            config.location = location.into_inner();
        } else {
            errors.push(source.error(
                Some(location.span()),
                "prober.location",
                format!(
                    "a location is 1 to {MAX_LOCATION_LEN} letters, digits, `.`, `_` or `-` \
                     (e.g. \"eu-west\")"
                ),
            ));
        }
    }
    if let Some(quorum) = raw.quorum {
        if *quorum.get_ref() == 0 {
            errors.push(source.error(
                Some(quorum.span()),
                "prober.quorum",
                "must be at least 1 (leave it out for a majority of the reporting locations)",
            ));
        } else {
            config.quorum = Some(quorum.into_inner());
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_is_a_majority_unless_set() {
        let majority = ProberConfig {
            location: "a".into(),
            quorum: None,
        };
        assert_eq!(
            [1, 2, 3, 4, 5].map(|n| majority.quorum_of(n)),
            [1, 2, 2, 3, 3]
        );
        let two = ProberConfig {
            quorum: Some(2),
            ..majority
        };
        assert_eq!([1, 2, 5].map(|n| two.quorum_of(n)), [1, 2, 2]);
    }

    #[test]
    fn the_host_name_is_a_valid_location() {
        assert!(is_location(&host_location()));
        assert!(!is_location("eu west"));
        assert!(!is_location(""));
    }
}
