//! Capability flags: what a run shows a target can do, and what a target can do over its runs.
//!
//! A probe names the capabilities it establishes (`capabilities = ["tools"]` in its file);
//! its run then says yes, no, or nothing about each. Nothing is the honest answer when the
//! run failed for another reason (a 500 says nothing about tool calling), so one outage does
//! not erase what a target is known to do.

use serde::{Deserialize, Serialize};

use crate::result::{Outcome, ResultRecord};

/// A capability a probe's results establish for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Content really streams (the `streamed` rule).
    Streaming,
    /// Token usage arrives inside a stream.
    UsageInStream,
    /// Function calling: a well-formed call with the expected arguments.
    Tools,
    /// JSON mode: the answer parses and has the requested keys.
    Json,
}

impl Capability {
    /// Every capability, in display order.
    pub const ALL: [Capability; 4] = [
        Capability::Streaming,
        Capability::UsageInStream,
        Capability::Tools,
        Capability::Json,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Streaming => "streaming",
            Capability::UsageInStream => "usage_in_stream",
            Capability::Tools => "tools",
            Capability::Json => "json",
        }
    }
}

/// What one run showed, the facts [`observe`] needs.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    /// The run's outcome.
    pub outcome: Outcome,
    /// The `streamed` rule held.
    pub streamed: bool,
    /// The answer came as an event stream (not one JSON body).
    pub sse: bool,
    /// The provider reported token usage.
    pub usage_reported: bool,
}

impl Evidence {
    /// The whole answer arrived, whether or not it passed validation.
    fn answered(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Ok | Outcome::ContentMismatch | Outcome::CutOff
        )
    }
}

/// Yes / no / unknown for each capability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Content really streams.
    pub streaming: Option<bool>,
    /// Usage arrives inside a stream.
    pub usage_in_stream: Option<bool>,
    /// Function calling works.
    pub tools: Option<bool>,
    /// JSON mode works.
    pub json: Option<bool>,
}

impl Capabilities {
    /// The flag of `capability`.
    pub fn get(&self, capability: Capability) -> Option<bool> {
        match capability {
            Capability::Streaming => self.streaming,
            Capability::UsageInStream => self.usage_in_stream,
            Capability::Tools => self.tools,
            Capability::Json => self.json,
        }
    }

    fn slot(&mut self, capability: Capability) -> &mut Option<bool> {
        match capability {
            Capability::Streaming => &mut self.streaming,
            Capability::UsageInStream => &mut self.usage_in_stream,
            Capability::Tools => &mut self.tools,
            Capability::Json => &mut self.json,
        }
    }

    /// The flags a record carries.
    pub fn of(record: &ResultRecord) -> Capabilities {
        Capabilities {
            streaming: record.cap_streaming,
            usage_in_stream: record.cap_usage_in_stream,
            tools: record.cap_tools,
            json: record.cap_json,
        }
    }

    /// Takes every flag `newer` has an answer for: the latest evidence wins, silence keeps
    /// the older answer.
    pub fn update(&mut self, newer: Capabilities) {
        for capability in Capability::ALL {
            if let Some(value) = newer.get(capability) {
                *self.slot(capability) = Some(value);
            }
        }
    }

    /// The target's flags over `records`, oldest first.
    pub fn over<'a>(records: impl IntoIterator<Item = &'a ResultRecord>) -> Capabilities {
        let mut flags = Capabilities::default();
        for record in records {
            flags.update(Capabilities::of(record));
        }
        flags
    }

    /// `streaming yes  usage_in_stream no  tools -  json -`.
    pub fn describe(&self) -> String {
        Capability::ALL
            .iter()
            .map(|&capability| {
                let value = match self.get(capability) {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                format!("{} {value}", capability.as_str())
            })
            .collect::<Vec<_>>()
            .join("  ")
    }

    /// True when no flag has an answer.
    pub fn is_unknown(&self) -> bool {
        Capability::ALL.iter().all(|&c| self.get(c).is_none())
    }
}

/// A run's evidence about one capability as a table cell: `yes`, `no`, or `–` when the run
/// says nothing (its probe does not check it).
pub fn word(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    }
}

/// What a run of a probe claiming `claims` says about each of them.
///
/// `tools` and `json` hold when the run passed its check; they fail when the answer arrived
/// and did not pass (no call, wrong arguments, not JSON), or when the provider refused the
/// request with a 4xx other than auth, not-found or rate-limit (`tools` not supported). An
/// answer cut off by the token limit proves nothing either way: that is the probe's sizing.
pub fn observe(claims: &[Capability], evidence: Evidence) -> Capabilities {
    let mut flags = Capabilities::default();
    for &capability in claims {
        let value = match capability {
            Capability::Streaming => evidence.answered().then_some(evidence.streamed),
            Capability::UsageInStream => evidence
                .answered()
                .then_some(evidence.sse && evidence.usage_reported),
            Capability::Tools | Capability::Json => match evidence.outcome {
                Outcome::Ok => Some(true),
                Outcome::ContentMismatch | Outcome::ClientError => Some(false),
                _ => None,
            },
        };
        *flags.slot(capability) = value;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(outcome: Outcome) -> Evidence {
        Evidence {
            outcome,
            streamed: true,
            sse: true,
            usage_reported: true,
        }
    }

    #[test]
    fn a_passing_run_shows_what_it_claims_and_nothing_else() {
        let flags = observe(&[Capability::Tools], evidence(Outcome::Ok));
        assert_eq!(flags.tools, Some(true));
        assert_eq!(flags.streaming, None);
        assert_eq!(flags.json, None);
    }

    #[test]
    fn failures_refute_only_when_they_are_about_the_capability() {
        let claims = [Capability::Json];
        assert_eq!(
            observe(&claims, evidence(Outcome::ContentMismatch)).json,
            Some(false)
        );
        assert_eq!(
            observe(&claims, evidence(Outcome::ClientError)).json,
            Some(false)
        );
        for silent in [Outcome::ServerError, Outcome::RateLimited, Outcome::CutOff] {
            assert_eq!(observe(&claims, evidence(silent)).json, None, "{silent}");
        }
    }

    #[test]
    fn usage_in_stream_needs_a_stream_with_reported_usage() {
        let claims = [Capability::Streaming, Capability::UsageInStream];
        let whole_json = Evidence {
            sse: false,
            streamed: false,
            ..evidence(Outcome::Ok)
        };
        let flags = observe(&claims, whole_json);
        assert_eq!(
            (flags.streaming, flags.usage_in_stream),
            (Some(false), Some(false))
        );
        let estimated = Evidence {
            usage_reported: false,
            ..evidence(Outcome::Ok)
        };
        assert_eq!(observe(&claims, estimated).usage_in_stream, Some(false));
        assert_eq!(
            observe(&claims, evidence(Outcome::Timeout)),
            Capabilities::default()
        );
    }

    #[test]
    fn the_latest_answer_wins_and_silence_keeps_the_older() {
        let mut flags = Capabilities {
            tools: Some(true),
            json: Some(false),
            ..Capabilities::default()
        };
        flags.update(Capabilities {
            tools: Some(false),
            ..Capabilities::default()
        });
        assert_eq!((flags.tools, flags.json), (Some(false), Some(false)));
        assert_eq!(
            flags.describe(),
            "streaming -  usage_in_stream -  tools no  json no"
        );
    }
}
