//! The outcome of a run whose response was a success status: an error inside the stream, a
//! broken read, a missing terminal event, a token limit, or the probe's own check — and, for
//! a quality item, whether the answer was right.

use super::read::ReadResult;
use crate::measurement::{Measured, finish_is_token_limit};
use crate::probe::{Answer, Probe};
use crate::provider;
use crate::quality::{Item, Judgement};
use crate::result::Outcome;

/// What a run with a success status came to.
pub(super) struct Judged {
    /// The run's outcome: availability's verdict.
    pub outcome: Outcome,
    /// What went wrong, when it did.
    pub error: Option<String>,
    /// A quality item's judgement and what was wrong with the answer; `None` unless a whole
    /// answer to an item arrived.
    pub quality: Option<(Judgement, Option<String>)>,
}

impl Judged {
    fn failed(outcome: Outcome, error: String) -> Judged {
        Judged {
            outcome,
            error: Some(error),
            quality: None,
        }
    }
}

/// The outcome of a run whose response was a success status. A quality item's wrong answer
/// is still `ok` (the provider answered): its judgement is apart, unless the token limit cut
/// the answer, which says nothing of the model.
pub(super) fn judge(
    read: ReadResult,
    measured: &Measured,
    probe: &Probe,
    item: Option<&Item>,
) -> Judged {
    if let Some((outcome, message)) = &measured.error {
        return Judged::failed(*outcome, format!("error inside the response: {message}"));
    }
    if let Err((outcome, message)) = read {
        return Judged::failed(outcome, message);
    }
    if !measured.done {
        let finish = measured
            .finish_reason
            .as_deref()
            .map_or(String::new(), |reason| {
                format!(" (finish_reason {reason} was seen)")
            });
        return Judged::failed(
            Outcome::Truncated,
            format!("the stream ended without its terminal event{finish}"),
        );
    }
    let cut_off = measured
        .finish_reason
        .as_deref()
        .is_some_and(finish_is_token_limit);
    let answer = Answer {
        text: &measured.answer,
        tool_name: measured.tool_name.as_deref(),
        tool_arguments: &measured.tool_arguments,
    };
    let quality = item.map(|item| item.judge(&answer));
    let verdict =
        if answer.text.is_empty() && answer.tool_name.is_none() && answer.tool_arguments.is_empty()
        {
            Err("the answer is empty".to_owned())
        } else {
            match &quality {
                Some((judgement, detail)) if *judgement != Judgement::Correct && cut_off => {
                    Err(detail.clone().unwrap_or_default())
                }
                _ => probe.check(&answer),
            }
        };
    let (outcome, error) = match verdict {
        Ok(()) => (Outcome::Ok, None),
        Err(why) if cut_off => (
            Outcome::CutOff,
            Some(format!(
                "{why}: the token limit ended it (finish_reason {}){}; raise the probe's \
                 max_tokens or the model's reasoning_budget",
                measured.finish_reason.as_deref().unwrap_or_default(),
                measured
                    .usage
                    .reasoning_tokens
                    .map_or(String::new(), |tokens| format!(
                        " after {tokens} reasoning tokens"
                    ))
            )),
        ),
        Err(why) => (Outcome::ContentMismatch, Some(why)),
    };
    Judged {
        outcome,
        error,
        quality: quality.filter(|_| outcome == Outcome::Ok),
    }
}

/// The outcome of a model-list run: ok when the target's model is listed.
pub(super) fn judge_model_list(
    models: Result<Vec<String>, provider::DecodeError>,
    model: &str,
) -> (Outcome, Option<String>) {
    match models {
        Err(err) => (Outcome::Malformed, Some(err.0)),
        Ok(models) if models.iter().any(|listed| listed == model) => (Outcome::Ok, None),
        Ok(models) => (
            Outcome::NotFound,
            Some(format!(
                "model {model} is not in the provider's model list ({} models listed)",
                models.len()
            )),
        ),
    }
}
