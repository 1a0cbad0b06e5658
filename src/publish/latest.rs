//! A run as a target's page lists it: the fields of the runs table and no more. A publisher
//! keeps each target's last [`super::LAST_RUNS`] between publishes; whole records (prompt
//! hashes, token counts, capability evidence, quality detail) were three times the size,
//! and its names (probe, location, served model) are shared ([`crate::interned`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::interned::Names;
use crate::result::{Outcome, ResultRecord};
use crate::units::Timestamp;

/// What the runs table shows of one run, in 128 bytes with its id (176 with a boxed id and
/// optional figures of 16 bytes each; a publisher keeps 250,000 of them at 5,000 targets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatestRun {
    /// When it was scheduled.
    pub ts: Timestamp,
    /// Its id: runs of one instant are ordered by it, as the store orders them.
    pub run_id: RunId,
    /// Probe name.
    pub probe: Arc<str>,
    /// Its outcome.
    pub outcome: Outcome,
    /// HTTP status, when there was a response.
    pub http_status: Option<u16>,
    /// TTFT, ms.
    ttft_ms: Figure,
    /// E2E, ms.
    e2e_ms: Figure,
    /// Output speed, tokens/s.
    tokens_per_s: Figure,
    /// Whether a stream really streamed, from a probe that checks it.
    pub cap_streaming: Option<bool>,
    /// The model that answered, as the provider named it.
    pub served_model: Option<Arc<str>>,
    /// The answer came from another model than the one asked for.
    pub model_substituted: bool,
    /// Its error, or the quality canary's verdict when the answer was wrong
    /// ([`ResultRecord::problem`]), cut to [`PROBLEM_CHARS`].
    pub problem: Option<Box<str>>,
    /// The location that ran it.
    pub location: Arc<str>,
}

/// Characters of a run's problem the table shows (the last one an ellipsis when cut).
pub const PROBLEM_CHARS: usize = 120;

/// A run's id in 24 bytes: one of up to 16 bytes (sonde's own ids are 16 hex digits) kept
/// inline, a longer one boxed; a boxed id took 48.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunId {
    /// Its bytes, the first `len` of them.
    Inline {
        /// How many.
        len: u8,
        /// The id, then zeros.
        bytes: [u8; 16],
    },
    /// A longer id.
    Boxed(Box<str>),
}

impl RunId {
    /// `id`, kept inline when it fits.
    pub fn of(id: &str) -> RunId {
        let mut bytes = [0; 16];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(id.as_bytes());
                RunId::Inline { len, bytes }
            }
            _ => RunId::Boxed(id.into()),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        match self {
            // A whole `&str` was copied in: always UTF-8.
            RunId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            RunId::Boxed(id) => id,
        }
    }
}

/// An optional figure in 8 bytes instead of 16: NaN stands for none (a measured figure is
/// never NaN: the store keeps none).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Figure(f64);

impl Figure {
    fn of(figure: Option<f64>) -> Figure {
        Figure(figure.unwrap_or(f64::NAN))
    }

    fn get(self) -> Option<f64> {
        Some(self.0).filter(|figure| !figure.is_nan())
    }
}

impl PartialEq for Figure {
    fn eq(&self, other: &Figure) -> bool {
        self.get() == other.get()
    }
}

impl LatestRun {
    /// What the table shows of `r`, its names from `names`.
    pub fn of(r: &ResultRecord, names: &mut Names) -> LatestRun {
        LatestRun {
            ts: r.ts,
            run_id: RunId::of(&r.run_id),
            probe: names.get(&r.probe),
            outcome: r.outcome,
            http_status: r.http_status,
            ttft_ms: Figure::of(r.ttft_ms),
            e2e_ms: Figure::of(r.e2e_ms),
            tokens_per_s: Figure::of(r.tokens_per_s),
            cap_streaming: r.cap_streaming,
            served_model: r.served_model.as_deref().map(|model| names.get(model)),
            model_substituted: r.model_substituted,
            problem: r.problem().map(|text| {
                if text.chars().count() > PROBLEM_CHARS {
                    text.chars().take(PROBLEM_CHARS - 1).collect::<String>() + "…"
                } else {
                    text
                }
                .into_boxed_str()
            }),
            location: names.get(&r.location),
        }
    }

    /// TTFT, ms.
    pub fn ttft_ms(&self) -> Option<f64> {
        self.ttft_ms.get()
    }

    /// E2E, ms.
    pub fn e2e_ms(&self) -> Option<f64> {
        self.e2e_ms.get()
    }

    /// Output speed, tokens/s.
    pub fn tokens_per_s(&self) -> Option<f64> {
        self.tokens_per_s.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::Judgement;
    use crate::result::sample;

    #[test]
    fn a_long_problem_is_cut_and_a_wrong_answer_is_one() {
        let mut failed = sample(Outcome::ServerError);
        failed.error = Some("é".repeat(300));
        let names = &mut Names::new();
        let run = LatestRun::of(&failed, names);
        let problem = run.problem.unwrap();
        assert_eq!(problem.chars().count(), PROBLEM_CHARS);
        assert!(problem.ends_with('…') && problem.starts_with("éé"));

        let mut wrong = sample(Outcome::Ok);
        wrong.error = None;
        wrong.quality = Some(Judgement::WrongAnswer);
        wrong.quality_detail = Some("said 41".into());
        assert_eq!(
            LatestRun::of(&wrong, names).problem.as_deref(),
            Some("wrong_answer: said 41")
        );
        wrong.quality = None;
        assert_eq!(LatestRun::of(&wrong, names).problem, None);
    }

    #[test]
    fn a_run_keeps_its_id_and_figures_in_fewer_bytes() {
        assert_eq!(std::mem::size_of::<LatestRun>(), 128);
        for id in [
            "",
            "r1",
            "0123456789abcdef",
            "0001-02-00000001",
            "é-0123456789abc",
        ] {
            let run_id = RunId::of(id);
            assert!(matches!(run_id, RunId::Inline { .. }), "{id}");
            assert_eq!(run_id.as_str(), id);
        }
        let long = "0123456789abcdef0";
        assert_eq!(RunId::of(long), RunId::Boxed(long.into()));
        assert_eq!(RunId::of(long).as_str(), long);

        let mut run = sample(Outcome::Ok);
        (run.ttft_ms, run.e2e_ms, run.tokens_per_s) = (Some(0.0), None, Some(81.25));
        let kept = LatestRun::of(&run, &mut Names::new());
        assert_eq!(
            (kept.ttft_ms(), kept.e2e_ms(), kept.tokens_per_s()),
            (Some(0.0), None, Some(81.25))
        );
    }
}
