//! A run as a target's page lists it: the fields of the runs table and no more. A publisher
//! keeps each target's last [`super::LAST_RUNS`] between publishes; whole records (prompt
//! hashes, token counts, capability evidence, quality detail) were three times the size,
//! and its names (probe, location, served model) are shared ([`crate::interned`]).

use std::sync::Arc;

use crate::interned::Names;
use crate::result::{Outcome, ResultRecord};
use crate::units::Timestamp;

/// What the runs table shows of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestRun {
    /// When it was scheduled.
    pub ts: Timestamp,
    /// Its id: runs of one instant are ordered by it, as the store orders them.
    pub run_id: Box<str>,
    /// Probe name.
    pub probe: Arc<str>,
    /// Its outcome.
    pub outcome: Outcome,
    /// HTTP status, when there was a response.
    pub http_status: Option<u16>,
    /// TTFT, ms.
    pub ttft_ms: Option<f64>,
    /// E2E, ms.
    pub e2e_ms: Option<f64>,
    /// Output speed, tokens/s.
    pub tokens_per_s: Option<f64>,
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

impl LatestRun {
    /// What the table shows of `r`, its names from `names`.
    pub fn of(r: &ResultRecord, names: &mut Names) -> LatestRun {
        LatestRun {
            ts: r.ts,
            run_id: r.run_id.as_str().into(),
            probe: names.get(&r.probe),
            outcome: r.outcome,
            http_status: r.http_status,
            ttft_ms: r.ttft_ms,
            e2e_ms: r.e2e_ms,
            tokens_per_s: r.tokens_per_s,
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
}
