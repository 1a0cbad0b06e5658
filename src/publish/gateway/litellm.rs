//! LiteLLM proxy (`--format litellm`): a `model_list` with one deployment per target whose
//! weight is above 0 (down, substituting and requirement-refusing targets are left out),
//! `model_name` = the route group, `litellm_params.weight` = the feed weight (read by
//! `routing_strategy: simple-shuffle`), `model_info.id` = the target id (LiteLLM returns it
//! in `x-litellm-model-id`), `api_base` for every format (for Gemini only when it is not
//! Google's own), and the key as `os.environ/<api_key_env>`, never its value.
//!
//! [`deployments`] is that mapping, shared by the YAML export and `sonde sync litellm`,
//! which pushes the same deployments to a running proxy.
//!
//! The YAML is written by hand for this one fixed shape; every scalar is a YAML 1.2
//! double-quoted string ([`super::yaml_quoted`]), so no id can break the document.

use std::fmt::Write as _;

use super::{GEMINI_DEFAULT_BASE, LITELLM_HEADER, round6, yaml_quoted};
use crate::config::{Config, ProviderKind};
use crate::publish::feed::Feed;

/// One target as a LiteLLM deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// The target id: the deployment's `model_info.id`.
    pub id: String,
    /// The route group: the deployment's `model_name`.
    pub group: String,
    /// `litellm_params.model`: LiteLLM's provider prefix and the model id.
    pub model: String,
    /// `litellm_params.api_base`, where the proxy must be told it.
    pub api_base: Option<String>,
    /// `litellm_params.api_key`: `os.environ/<api_key_env>`, the variable's name only.
    pub api_key: Option<String>,
    /// The feed's weight, rounded to six decimals; 0 when the target is not routable.
    pub weight: f64,
}

/// Every feed target the config still has, as a deployment (weight 0 included), in the
/// feed's order.
pub fn deployments(config: &Config, feed: &Feed) -> Vec<Deployment> {
    let targets = config.targets_by_id();
    feed.targets
        .iter()
        .filter_map(|entry| {
            let target = targets.get(entry.id.as_str())?;
            let provider = &target.provider;
            let prefix = match provider.kind {
                ProviderKind::OpenAi => "openai",
                ProviderKind::Anthropic => "anthropic",
                ProviderKind::Gemini => "gemini",
            };
            let base = provider.base_url.as_str().trim_end_matches('/');
            let api_base = match provider.kind {
                ProviderKind::OpenAi => Some(base),
                // LiteLLM appends /v1/messages itself.
                ProviderKind::Anthropic => Some(base.trim_end_matches("/v1")),
                ProviderKind::Gemini if base == GEMINI_DEFAULT_BASE => None,
                // LiteLLM appends /models/{model}:{method} itself.
                ProviderKind::Gemini => Some(base),
            };
            Some(Deployment {
                id: entry.id.clone(),
                group: entry.group.clone(),
                model: format!("{prefix}/{}", target.model.id),
                api_base: api_base.map(str::to_owned),
                api_key: provider
                    .api_key_env
                    .as_ref()
                    .map(|var| format!("os.environ/{var}")),
                weight: round6(entry.weight),
            })
        })
        .collect()
}

/// The LiteLLM `model_list` (YAML) for the feed's weights.
pub fn litellm(config: &Config, feed: &Feed) -> String {
    let mut out = format!(
        "{LITELLM_HEADER} from its routing feed: one deployment per target with a weight \
         above 0,\n# weighted for routing_strategy simple-shuffle. Regenerate, then reload the \
         proxy.\nmodel_list:\n"
    );
    for deployment in deployments(config, feed).iter().filter(|d| d.weight > 0.0) {
        let _ = writeln!(out, "  - model_name: {}", yaml_quoted(&deployment.group));
        let _ = writeln!(out, "    litellm_params:");
        let _ = writeln!(out, "      model: {}", yaml_quoted(&deployment.model));
        if let Some(base) = &deployment.api_base {
            let _ = writeln!(out, "      api_base: {}", yaml_quoted(base));
        }
        if let Some(key) = &deployment.api_key {
            let _ = writeln!(out, "      api_key: {}", yaml_quoted(key));
        }
        let _ = writeln!(out, "      weight: {}", deployment.weight);
        let _ = writeln!(out, "    model_info:");
        let _ = writeln!(out, "      id: {}", yaml_quoted(&deployment.id));
    }
    out.push_str("router_settings:\n  routing_strategy: \"simple-shuffle\"\n");
    out
}
