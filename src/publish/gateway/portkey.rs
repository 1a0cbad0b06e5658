//! Portkey's AI gateway (`--format portkey`): per route group, a gateway config with
//! `strategy.mode = "loadbalance"` and one target per sonde target with a weight above 0:
//! `provider` (`openai`, `anthropic`, `google`), `custom_host` (the provider's base URL as
//! Portkey joins it: Gemini's without the `/v1beta` Portkey adds, left out for Google's own
//! endpoint), `override_params.model` and `weight`. Portkey takes a config per request (the
//! `x-portkey-config` header) and wants each target's key in it; the export names the key's
//! variable as `${VAR}` — never its value — for the caller to fill in (`envsubst`) where the
//! config is used. A group with no routable target has no config (Portkey refuses an empty
//! `targets`) and is listed in `unroutable`.

use serde_json::{Value, json};

use super::{GEMINI_DEFAULT_BASE, by_group, round6};
use crate::config::{Config, ProviderKind};
use crate::publish::feed::Feed;

/// The key of a target for an endpoint that takes none: Portkey requires one.
const NO_KEY: &str = "none";

/// The export as a JSON value.
pub fn portkey(config: &Config, feed: &Feed) -> Value {
    let mut configs = serde_json::Map::new();
    let mut unroutable = Vec::new();
    for (group, targets) in by_group(config, feed) {
        let routed: Vec<Value> = targets
            .iter()
            .filter(|(entry, _)| entry.weight > 0.0)
            .filter_map(|(entry, target)| {
                let target = (*target)?;
                let provider = &target.provider;
                let base = provider.base_url.as_str().trim_end_matches('/');
                let (kind, host) = match provider.kind {
                    ProviderKind::OpenAi => ("openai", Some(base)),
                    ProviderKind::Anthropic => ("anthropic", Some(base)),
                    ProviderKind::Gemini if base == GEMINI_DEFAULT_BASE => ("google", None),
                    ProviderKind::Gemini => ("google", Some(base.trim_end_matches("/v1beta"))),
                };
                let key = provider
                    .api_key_env
                    .as_ref()
                    .map_or_else(|| NO_KEY.to_owned(), |var| format!("${{{var}}}"));
                let mut out = json!({
                    "provider": kind,
                    "api_key": key,
                    "override_params": {"model": target.model.id},
                    "weight": round6(entry.weight),
                });
                if let Some(host) = host {
                    out["custom_host"] = json!(host);
                }
                Some(out)
            })
            .collect();
        if routed.is_empty() {
            unroutable.push(group);
        } else {
            configs.insert(
                group.to_owned(),
                json!({"strategy": {"mode": "loadbalance"}, "targets": routed}),
            );
        }
    }
    json!({
        "generator": "sonde",
        "version": feed.version,
        "generated_at": feed.generated_at,
        "configs": configs,
        "unroutable": unroutable,
    })
}

/// The export as pretty JSON text.
pub fn portkey_text(config: &Config, feed: &Feed) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string_pretty(&portkey(config, feed))? + "\n")
}
