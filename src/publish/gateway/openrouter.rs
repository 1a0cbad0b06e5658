//! OpenRouter (`--format openrouter`): per route group, what a request for the group carries
//! so OpenRouter routes it as the feed says. `model` is the OpenRouter slug of the group's
//! routed targets (`models`, best weight first, when they map to several slugs, which
//! OpenRouter tries in order; every slug of the group when none is routed); `provider.order` lists the OpenRouter provider names of the targets with
//! a weight above 0, highest first; `provider.ignore` the group's other providers (down,
//! substituting, refusing a requirement, or weight 0 for another reason), never one that is
//! also in `order`. With `only` (`--openrouter-only`), `provider.only` is `order` and
//! fallbacks are off, so OpenRouter sends nowhere sonde has not measured; a group with no
//! routable target then keeps fallbacks on, rather than fail every request.
//!
//! Names come from each model's `openrouter = { model, provider }` in the config (by
//! default the model id and sonde's provider name).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::by_group;
use crate::config::Config;
use crate::publish::feed::Feed;

/// The export as a JSON value.
pub fn openrouter(config: &Config, feed: &Feed, only: bool) -> Value {
    let mut models = BTreeMap::new();
    for (group, targets) in by_group(config, feed) {
        // The slugs of the routed targets; a group with none names every slug it has.
        let mut slugs: Vec<&str> = Vec::new();
        let mut fallback_slugs: Vec<&str> = Vec::new();
        let mut order: Vec<&str> = Vec::new();
        let mut ignore: Vec<&str> = Vec::new();
        for (entry, target) in &targets {
            let (slug, provider) = match target {
                Some(target) => (
                    target.model.openrouter.model.as_str(),
                    target.model.openrouter.provider.as_str(),
                ),
                None => (entry.model.as_str(), entry.provider.as_str()),
            };
            if entry.weight > 0.0 && !slugs.contains(&slug) {
                slugs.push(slug);
            }
            if !fallback_slugs.contains(&slug) {
                fallback_slugs.push(slug);
            }
            let list = if entry.weight > 0.0 {
                &mut order
            } else {
                &mut ignore
            };
            if !list.contains(&provider) {
                list.push(provider);
            }
        }
        if slugs.is_empty() {
            slugs = fallback_slugs;
        }
        // A provider routed for one of the group's models is not ignored for the group.
        ignore.retain(|provider| !order.contains(provider));
        let fallbacks = !only || order.is_empty();
        let mut preferences =
            json!({"order": order, "ignore": ignore, "allow_fallbacks": fallbacks});
        if only && !order.is_empty() {
            preferences["only"] = json!(order);
        }
        let mut request = json!({"provider": preferences});
        match slugs.as_slice() {
            [slug] => request["model"] = json!(slug),
            _ => request["models"] = json!(slugs),
        }
        models.insert(group, request);
    }
    json!({
        "generator": "sonde",
        "version": feed.version,
        "generated_at": feed.generated_at,
        "models": models,
    })
}

/// The export as pretty JSON text.
pub fn openrouter_text(
    config: &Config,
    feed: &Feed,
    only: bool,
) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string_pretty(&openrouter(config, feed, only))? + "\n")
}
