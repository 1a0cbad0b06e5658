//! `[[sync]]`: a running gateway the daemon brings to the feed's weights after each
//! publish (`sonde sync` does the same once). The gateway's admin key comes from an
//! environment variable named here, like every other secret: the file never holds it.

use serde::Deserialize;
use toml::Spanned;

use super::error::{Errors, Source};

/// The smallest weight change pushed, when `min_change` is not set: below it the proxy keeps
/// the weight it has, so the minute-to-minute jitter of latency does not rewrite it.
pub const DEFAULT_MIN_CHANGE: f64 = 0.05;

/// The gateways sonde can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncKind {
    /// A LiteLLM proxy with its models in its database (`STORE_MODEL_IN_DB=True`).
    Litellm,
}

/// What becomes of a target's deployment once the target is not routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// Kept, at weight 0: it comes back by a weight change.
    #[default]
    Zero,
    /// Deleted from the proxy; created again when the target is routable again.
    Remove,
}

impl OnDown {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDown::Zero => "zero",
            OnDown::Remove => "remove",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    #[serde(default)]
    name: Option<Spanned<String>>,
    kind: SyncKind,
    url: Spanned<String>,
    key_env: Spanned<String>,
    #[serde(default)]
    on_down: OnDown,
    #[serde(default)]
    min_change: Option<Spanned<f64>>,
}

/// One gateway to keep at the feed's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// Its name in logs and alerts (default: the kind's name).
    pub name: String,
    /// Which gateway.
    pub kind: SyncKind,
    /// The gateway's base URL (`http://litellm:4000`).
    pub url: reqwest::Url,
    /// The variable holding the gateway's admin (master) key.
    pub key_env: String,
    /// What a target that is not routable becomes.
    pub on_down: OnDown,
    /// Weight changes smaller than this are not pushed (a change to or from 0 always is).
    pub min_change: f64,
}

pub(super) fn syncs(
    source: &Source<'_>,
    errors: &mut Errors,
    raw: Vec<RawSync>,
) -> Vec<SyncConfig> {
    let mut syncs: Vec<SyncConfig> = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("sync[{i}].{field}");
        let name = match &raw.name {
            Some(name) => name.get_ref().clone(),
            None => "litellm".to_owned(),
        };
        if name.is_empty() || syncs.iter().any(|s| s.name == name) {
            let span = raw.name.as_ref().map_or(raw.url.span(), Spanned::span);
            errors.push(source.error(
                Some(span),
                key("name"),
                "every [[sync]] needs a name of its own (two gateways: name them)",
            ));
        }
        let url = match reqwest::Url::parse(raw.url.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.password().is_none() => {
                Some(url)
            }
            _ => {
                errors.push(source.error(
                    Some(raw.url.span()),
                    key("url"),
                    "must be the gateway's http:// or https:// base URL, without credentials \
                     (the key goes in the variable `key_env` names)",
                ));
                None
            }
        };
        if !super::is_env_name(raw.key_env.get_ref()) {
            errors.push(source.error(
                Some(raw.key_env.span()),
                key("key_env"),
                "this must be the NAME of an environment variable holding the gateway's admin \
                 key, never the key itself",
            ));
        }
        let min_change = match raw.min_change {
            Some(value) if !(0.0..1.0).contains(value.get_ref()) => {
                errors.push(source.error(
                    Some(value.span()),
                    key("min_change"),
                    "must be at least 0 and below 1 (a share of the group's traffic)",
                ));
                DEFAULT_MIN_CHANGE
            }
            Some(value) => value.into_inner(),
            None => DEFAULT_MIN_CHANGE,
        };
        if let Some(url) = url {
            syncs.push(SyncConfig {
                name,
                kind: raw.kind,
                url,
                key_env: raw.key_env.into_inner(),
                on_down: raw.on_down,
                min_change,
            });
        }
    }
    syncs
}
