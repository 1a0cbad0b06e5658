//! The outcome of a run whose response was a success status: an error inside the stream, a
//! broken read, a missing terminal event, a token limit, or the probe's own check.

use super::read::ReadResult;
use crate::measurement::{Measured, finish_is_token_limit};
use crate::probe::{Answer, Probe};
use crate::provider;
use crate::result::Outcome;

/// The outcome of a run whose response was a success status.
pub(super) fn judge(
    read: ReadResult,
    measured: &Measured,
    probe: &Probe,
) -> (Outcome, Option<String>) {
    if let Some((outcome, message)) = &measured.error {
        return (
            *outcome,
            Some(format!("error inside the response: {message}")),
        );
    }
    if let Err((outcome, message)) = read {
        return (outcome, Some(message));
    }
    if !measured.done {
        let finish = measured
            .finish_reason
            .as_deref()
            .map_or(String::new(), |reason| {
                format!(" (finish_reason {reason} was seen)")
            });
        return (
            Outcome::Truncated,
            Some(format!(
                "the stream ended without its terminal event{finish}"
            )),
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
    let verdict =
        if answer.text.is_empty() && answer.tool_name.is_none() && answer.tool_arguments.is_empty()
        {
            Err("the answer is empty".to_owned())
        } else {
            probe.check(&answer)
        };
    match verdict {
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
