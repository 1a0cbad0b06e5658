//! LiteLLM proxy (`--format litellm`): a `model_list` with one deployment per target whose
//! weight is above 0 (down, substituting and requirement-refusing targets are left out),
//! `model_name` = the route group, `litellm_params.weight` = the feed weight (read by
//! `routing_strategy: simple-shuffle`), `model_info.id` = the target id (LiteLLM returns it
//! in `x-litellm-model-id`), `api_base` for every format (for Gemini only when it is not
//! Google's own), and the key as `os.environ/<api_key_env>`, never its value.
//!
//! The YAML is written by hand for this one fixed shape; every scalar is a YAML 1.2
//! double-quoted string ([`super::yaml_quoted`]), so no id can break the document.

use std::fmt::Write as _;

use super::{GEMINI_DEFAULT_BASE, LITELLM_HEADER, round6, yaml_quoted};
use crate::config::{Config, ProviderKind};
use crate::publish::feed::Feed;

/// The LiteLLM `model_list` (YAML) for the feed's weights.
pub fn litellm(config: &Config, feed: &Feed) -> String {
    let mut out = format!(
        "{LITELLM_HEADER} from its routing feed: one deployment per target with a weight \
         above 0,\n# weighted for routing_strategy simple-shuffle. Regenerate, then reload the \
         proxy.\nmodel_list:\n"
    );
    let targets = config.targets_by_id();
    for entry in feed.targets.iter().filter(|t| t.weight > 0.0) {
        let Some(target) = targets.get(entry.id.as_str()) else {
            continue;
        };
        let provider = &target.provider;
        let prefix = match provider.kind {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        };
        let _ = writeln!(out, "  - model_name: {}", yaml_quoted(&entry.group));
        let _ = writeln!(out, "    litellm_params:");
        let _ = writeln!(
            out,
            "      model: {}",
            yaml_quoted(&format!("{prefix}/{}", target.model.id))
        );
        let base = provider.base_url.as_str().trim_end_matches('/');
        match provider.kind {
            ProviderKind::OpenAi => {
                let _ = writeln!(out, "      api_base: {}", yaml_quoted(base));
            }
            // LiteLLM appends /v1/messages itself.
            ProviderKind::Anthropic => {
                let _ = writeln!(
                    out,
                    "      api_base: {}",
                    yaml_quoted(base.trim_end_matches("/v1"))
                );
            }
            ProviderKind::Gemini if base == GEMINI_DEFAULT_BASE => {}
            // LiteLLM appends /models/{model}:{method} itself.
            ProviderKind::Gemini => {
                let _ = writeln!(out, "      api_base: {}", yaml_quoted(base));
            }
        }
        if let Some(var) = &provider.api_key_env {
            let _ = writeln!(
                out,
                "      api_key: {}",
                yaml_quoted(&format!("os.environ/{var}"))
            );
        }
        let _ = writeln!(out, "      weight: {}", round6(entry.weight));
        let _ = writeln!(out, "    model_info:");
        let _ = writeln!(out, "      id: {}", yaml_quoted(&entry.id));
    }
    out.push_str("router_settings:\n  routing_strategy: \"simple-shuffle\"\n");
    out
}
