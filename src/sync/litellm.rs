//! The LiteLLM proxy's model management API, as far as a sync needs it: `GET /model/info`
//! (every deployment), `POST /model/new`, `POST /model/update` (merges the `litellm_params`
//! it is given into the stored ones, and renames on a new `model_name`) and
//! `POST /model/delete`. These need the proxy's models in its database
//! (`STORE_MODEL_IN_DB=True`) and its master key (or an admin's).
//!
//! `POST /model/update` is used rather than `PATCH /model/{id}/update`: target ids hold a
//! `/`, which no path parameter of the proxy's router matches.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::SyncError;
use super::plan::{Change, Listed};
use crate::publish::gateway::Deployment;
use crate::redact::Secret;
use crate::sanitize;

/// How long the proxy has to answer one request.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a `/model/info` body read: about 30,000 deployments.
const MAX_LIST_BYTES: usize = 64 << 20;
/// The most of an answer to a change kept for the log.
const MAX_ANSWER_BYTES: usize = 64 << 10;
/// The most of an answer's text logged.
const ANSWER_CHARS: usize = 300;

/// A LiteLLM proxy's admin API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    key: Secret,
}

/// The proxy's answer to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its HTTP status.
    pub status: u16,
    /// The start of its body, on one line, the key masked.
    pub text: String,
}

impl Answer {
    /// Whether the proxy made the change.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, Deserialize)]
struct InfoBody {
    data: Vec<InfoEntry>,
}

#[derive(Debug, Deserialize)]
struct InfoEntry {
    model_name: String,
    #[serde(default)]
    litellm_params: serde_json::Map<String, Value>,
    #[serde(default)]
    model_info: serde_json::Map<String, Value>,
}

impl Client {
    /// A client of the proxy at `base` (`http://litellm:4000`) with the admin key `key`.
    pub fn new(base: reqwest::Url, key: Secret) -> Result<Client, SyncError> {
        let http = crate::runner::transport::plain_client(TIMEOUT)
            .map_err(|err| SyncError::Client(sanitize::with_causes(&err.without_url())))?;
        Ok(Client { http, base, key })
    }

    /// Every deployment the proxy routes to, sonde's and others'.
    pub async fn list(&self) -> Result<Vec<Listed>, SyncError> {
        let url = self.url("model/info");
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(self.key.expose())
            .send()
            .await
            .map_err(|err| self.unreachable(&url, err))?;
        let status = response.status().as_u16();
        let body = self.read(response, MAX_LIST_BYTES, &url).await?;
        if !(200..300).contains(&status) {
            return Err(SyncError::Refused {
                url: url.to_string(),
                status,
                text: self.text(&body),
            });
        }
        let info: InfoBody = serde_json::from_slice(&body).map_err(|err| SyncError::Malformed {
            url: url.to_string(),
            why: err.to_string(),
        })?;
        Ok(info.data.into_iter().filter_map(listed).collect())
    }

    /// Makes `change` on the proxy and returns its answer (an error answer included); `Err`
    /// only when the proxy could not be asked or its answer not read.
    pub async fn apply(&self, change: &Change) -> Result<Answer, SyncError> {
        let (path, body) = match change {
            Change::Create(deployment) => ("model/new", created(deployment)),
            Change::Update { deployment, .. } => ("model/update", updated(deployment)),
            Change::Delete { id, .. } => ("model/delete", json!({ "id": id })),
        };
        let url = self.url(path);
        let response = self
            .http
            .post(url.clone())
            .bearer_auth(self.key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|err| self.unreachable(&url, err))?;
        let status = response.status().as_u16();
        let body = self.read(response, MAX_ANSWER_BYTES, &url).await?;
        Ok(Answer {
            status,
            text: self.text(&body),
        })
    }

    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{path}"));
        url
    }

    /// At most `cap` bytes of `response`'s body: a list past it is an error, an answer past
    /// it is cut (only its start is logged).
    async fn read(
        &self,
        mut response: reqwest::Response,
        cap: usize,
        url: &reqwest::Url,
    ) -> Result<Vec<u8>, SyncError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.unreachable(url, err))?
        {
            let room = cap - body.len();
            if chunk.len() > room {
                if cap == MAX_LIST_BYTES {
                    return Err(SyncError::TooLarge {
                        url: url.to_string(),
                        cap,
                    });
                }
                body.extend_from_slice(&chunk[..room]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The start of `body` as one line of text, the key masked.
    fn text(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let line = sanitize::one_line(&text);
        let cut: String = line.chars().take(ANSWER_CHARS).collect();
        sanitize::provider_text(Some(&self.key), &cut)
    }

    fn unreachable(&self, url: &reqwest::Url, err: reqwest::Error) -> SyncError {
        SyncError::Unreachable {
            url: url.to_string(),
            why: sanitize::provider_text(
                Some(&self.key),
                &sanitize::with_causes(&err.without_url()),
            ),
        }
    }
}

/// `entry` as a sync sees it; `None` without an id (nothing a sync could change).
fn listed(entry: InfoEntry) -> Option<Listed> {
    let id = entry.model_info.get("id")?.as_str()?.to_owned();
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let weight = match entry.litellm_params.get("weight") {
        Some(Value::Number(number)) => number.as_f64(),
        Some(Value::String(text)) => text.trim().parse().ok(),
        _ => None,
    };
    Some(Listed {
        id,
        group: entry.model_name,
        model: text(entry.litellm_params.get("model")),
        api_base: text(entry.litellm_params.get("api_base")),
        weight,
        managed: entry.model_info.get("sonde_managed") == Some(&Value::Bool(true)),
    })
}

/// The `litellm_params` sonde sets: model, base, the key's variable, weight.
fn params(deployment: &Deployment) -> Value {
    let mut params = json!({
        "model": deployment.model,
        "weight": deployment.weight,
    });
    if let Some(base) = &deployment.api_base {
        params["api_base"] = json!(base);
    }
    if let Some(key) = &deployment.api_key {
        params["api_key"] = json!(key);
    }
    params
}

/// The body of `/model/new`: the deployment, tagged as sonde's.
fn created(deployment: &Deployment) -> Value {
    json!({
        "model_name": deployment.group,
        "litellm_params": params(deployment),
        "model_info": {
            "id": deployment.id,
            "sonde_managed": true,
            "sonde_target": deployment.id,
        },
    })
}

/// The body of `/model/update`.
fn updated(deployment: &Deployment) -> Value {
    json!({
        "model_name": deployment.group,
        "litellm_params": params(deployment),
        "model_info": { "id": deployment.id },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_deployment_is_sondes_only_when_tagged() {
        let body = json!({"data": [
            {"model_name": "chat", "litellm_params": {"model": "openai/a", "weight": 0.5},
             "model_info": {"id": "sim/a", "sonde_managed": true}},
            {"model_name": "chat", "litellm_params": {"model": "openai/m", "weight": "2"},
             "model_info": {"id": "manual", "sonde_managed": "yes"}},
            {"model_name": "chat", "litellm_params": {"model": "openai/n"}, "model_info": {}},
        ]});
        let info: InfoBody = serde_json::from_value(body).unwrap();
        let listed: Vec<Listed> = info.data.into_iter().filter_map(listed).collect();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].managed);
        assert_eq!(listed[0].weight, Some(0.5));
        assert!(!listed[1].managed);
        assert_eq!(listed[1].weight, Some(2.0));
    }
}
