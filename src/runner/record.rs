//! The result record of a run: measurements, tokens (reported or estimated), speed, cost,
//! substitution, capability evidence, and every provider-derived text made safe.

use super::attempt::Attempt;
use crate::capability::{self, Evidence};
use crate::measurement::{Measured, Recorder, estimate_tokens, tokens_per_second};
use crate::result::{Outcome, ResultRecord};
use crate::sanitize::provider_text;
use crate::units::{Timestamp, micros, round3, us_to_ms};

impl Attempt<'_> {
    /// A record for a run that ended before any measurement worth keeping.
    pub(super) fn failed(
        self,
        recorder: Recorder,
        outcome: Outcome,
        error: String,
    ) -> ResultRecord {
        let measured = recorder.finish(self.probe.stream, None);
        self.record(measured, outcome, Some(error))
    }

    pub(super) fn record(
        self,
        measured: Measured,
        outcome: Outcome,
        error: Option<String>,
    ) -> ResultRecord {
        let model = &self.target.model;
        let reported = measured.usage.output_tokens.is_some();
        let (input_tokens, output_tokens, tokens_estimated) = if reported {
            (
                measured.usage.input_tokens,
                measured.usage.output_tokens,
                false,
            )
        } else if measured.chunks > 0 {
            (
                Some(
                    measured
                        .usage
                        .input_tokens
                        .unwrap_or_else(|| estimate_tokens(self.prompt_chars)),
                ),
                Some(estimate_tokens(measured.content_chars)),
                true,
            )
        } else {
            (measured.usage.input_tokens, None, false)
        };
        let tokens_per_s = match (
            measured.streamed,
            output_tokens,
            measured.ttft_us,
            measured.e2e_us,
        ) {
            (true, Some(tokens), Some(ttft), Some(e2e)) => {
                tokens_per_second(tokens, ttft, e2e).map(round3)
            }
            _ => None,
        };
        let cost_usd = cost(
            model.input_price,
            model.output_price,
            input_tokens,
            output_tokens,
        );
        let gateway_alias = self.gateway.alias.is_some()
            && measured.served_model.as_deref() == self.gateway.alias.as_deref();
        let model_substituted = !gateway_alias
            && measured
                .served_model
                .as_deref()
                .is_some_and(|served| !same_model(&model.id, served));
        let ms = |us: Option<u64>| us.map(us_to_ms);
        let flags = capability::observe(
            &self.probe.capabilities,
            Evidence {
                outcome,
                streamed: measured.streamed,
                sse: self.sse,
                usage_reported: reported,
            },
        );
        ResultRecord {
            ts: Timestamp::from(self.scheduled.wall),
            target: self.target.id.clone(),
            provider: self.target.provider.name.clone(),
            model: model.id.clone(),
            group: model.group.clone(),
            probe: self.probe.name.clone(),
            outcome,
            http_status: self.http_status,
            queue_lag_ms: us_to_ms(micros(
                self.started.saturating_duration_since(self.scheduled.at),
            )),
            ttfb_ms: ms(measured.ttfb_us),
            ttft_ms: ms(measured.ttft_us),
            ttfat_ms: ms(measured.ttfat_us),
            e2e_ms: ms(measured.e2e_us),
            itl_p50_ms: ms(measured.itl_p50_us),
            itl_max_ms: ms(measured.itl_max_us),
            input_tokens,
            output_tokens,
            reasoning_tokens: measured.usage.reasoning_tokens,
            tokens_estimated,
            tokens_per_s,
            chunks: measured.chunks,
            streamed: measured.streamed,
            served_model: measured
                .served_model
                .map(|served| provider_text(self.key, &served)),
            cost_usd,
            retry_after_s: self.retry_after_s,
            error: error.map(|text| provider_text(self.key, &text)),
            connect_ms: ms(self.connect_us),
            close_ms: ms(measured.close_us),
            finish_reason: measured
                .finish_reason
                .map(|reason| provider_text(self.key, &reason)),
            ratelimit_remaining_requests: self.rate_limits.remaining_requests,
            ratelimit_remaining_tokens: self.rate_limits.remaining_tokens,
            model_substituted,
            upstream: measured
                .upstream
                .or(self.gateway.model)
                .map(|upstream| provider_text(self.key, &upstream)),
            cap_streaming: flags.streaming,
            cap_usage_in_stream: flags.usage_in_stream,
            cap_tools: flags.tools,
            cap_json: flags.json,
            run_id: self.run_id.to_owned(),
            gateway_alias,
            location: String::new(),
            quality_item: self.item.map(|item| item.kind),
            quality: self.quality.as_ref().map(|(judgement, _)| *judgement),
            quality_detail: self
                .quality
                .and_then(|(_, detail)| detail)
                .map(|detail| provider_text(self.key, &detail)),
            itl_gaps_us: measured.gaps_us,
        }
    }
}

/// Whether `served` is the model asked for: the same id, or a dated version or alias of it
/// (`gpt-4o` answered as `gpt-4o-2024-08-06`), ignoring case, a `models/` prefix and an
/// `org/` namespace. Anything else is a substitution.
pub fn same_model(requested: &str, served: &str) -> bool {
    let bare = |id: &str| {
        let id = id.strip_prefix("models/").unwrap_or(id);
        id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase()
    };
    let (requested, served) = (bare(requested), bare(served));
    served.starts_with(&requested) || requested.starts_with(&served)
}

/// Tokens × prices per million; `None` when the model has no price.
fn cost(
    input_price: Option<f64>,
    output_price: Option<f64>,
    input: Option<u32>,
    output: Option<u32>,
) -> Option<f64> {
    if (input_price.is_none() && output_price.is_none()) || (input.is_none() && output.is_none()) {
        return None;
    }
    let part = |price: Option<f64>, tokens: Option<u32>| {
        price.unwrap_or(0.0) * f64::from(tokens.unwrap_or(0))
    };
    Some((part(input_price, input) + part(output_price, output)) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_ignores_versions_and_namespaces() {
        assert!(same_model("gpt-4o", "gpt-4o-2024-08-06"));
        assert!(same_model("openai/gpt-4o", "gpt-4o"));
        assert!(same_model("gemini-2.5-flash", "models/gemini-2.5-flash"));
        assert!(same_model(
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929"
        ));
        assert!(!same_model("llama-3.3-70b", "llama-3.1-8b"));
        assert!(!same_model("deepseek-chat", "deepseek-reasoner"));
    }

    #[test]
    fn cost_needs_a_price() {
        assert_eq!(cost(None, None, Some(10), Some(10)), None);
        assert_eq!(
            cost(Some(1.0), Some(2.0), Some(1_000_000), Some(500_000)),
            Some(2.0)
        );
        assert_eq!(cost(Some(0.0), Some(0.0), Some(5), None), Some(0.0));
        assert_eq!(
            cost(Some(1.0), Some(1.0), None, None),
            None,
            "no tokens, no cost"
        );
    }
}
