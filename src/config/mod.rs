//! `sonde.toml`: providers, their models, and which probes run on them.
//!
//! Loading is two steps: serde reads the file into raw structs (unknown keys, missing keys and
//! wrong types are errors with file, line and key), then [`Config::load`] checks what serde
//! cannot (URLs, duplicate targets, probe names, header names, bounds of every number and
//! duration, the output folder) and builds the validated types the rest of sonde uses. Every
//! error of a file is reported at once. API keys appear only as the names of environment
//! variables: a credential in a header, a URL or `extra_body` is refused.

mod alerts;
mod daemon;
pub mod error;
mod prober;
mod quality;
mod slo;
mod sync;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

pub use alerts::{Alert, AlertKind, PAGERDUTY_EVENTS};
pub use daemon::{
    Budget, GroupConfig, HealthConfig, PublishConfig, RateLimit, ServerConfig, StoreBackend,
    StoreConfig, WeightParams,
};
use daemon::{RawDuration, TIMEOUT_RANGE};
pub use error::ConfigError;
use error::{Errors, Source};
pub use prober::{ProberConfig, is_location};
pub use quality::QualityConfig;
pub use slo::{LATENCY_BUDGET, Slo};
pub use sync::{DEFAULT_MIN_CHANGE, OnDown, SyncConfig, SyncKind};

use crate::probe::ProbeSet;
use crate::scheduler::Schedule;

/// Default deadline for a whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest silence once a response has begun.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Default cap on a response body: probe answers are a few KiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Probes run on a model when neither it nor its provider lists any.
pub const DEFAULT_PROBES: &[&str] = &["ping", "stream", "models"];

/// Header names that carry credentials: those come from `api_key_env`, never from the file.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "ocp-apim-subscription-key",
    "x-auth-token",
    "x-access-token",
];

/// Body field names (lower case, without `_` and `-`) that carry credentials: refused in
/// `extra_body` at any depth, since the body is logged by many gateways.
const CREDENTIAL_FIELDS: &[&str] = &[
    "apikey",
    "key",
    "token",
    "accesstoken",
    "authtoken",
    "authorization",
    "password",
    "secret",
    "secretkey",
    "clientsecret",
    "bearer",
];

/// The largest `max_body_bytes`: a probe answer is a few KiB, and the cap bounds memory.
const MAX_BODY_CAP: u64 = 1 << 30;

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible `/chat/completions` (OpenAI, OpenRouter, vLLM, LiteLLM, DeepSeek, …).
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Google Gemini (`models/{model}:streamGenerateContent`).
    Gemini,
}

impl ProviderKind {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

/// The request field that carries the token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// `max_tokens`: what most OpenAI-compatible servers read.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: required by OpenAI's reasoning models.
    MaxCompletionTokens,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    probes_dir: Option<Spanned<String>>,
    #[serde(default)]
    store: daemon::RawStore,
    #[serde(default)]
    health: daemon::RawHealth,
    #[serde(default)]
    prober: prober::RawProber,
    #[serde(default)]
    quality: quality::RawQuality,
    #[serde(default)]
    alerts: Vec<alerts::RawAlert>,
    #[serde(default)]
    sync: Vec<sync::RawSync>,
    #[serde(default)]
    publish: daemon::RawPublish,
    #[serde(default)]
    server: daemon::RawServer,
    #[serde(default)]
    schedules: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<daemon::RawGroup>>,
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: Spanned<String>,
    kind: ProviderKind,
    base_url: Spanned<String>,
    #[serde(default)]
    api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    timeout: Option<RawDuration>,
    #[serde(default)]
    stall_timeout: Option<RawDuration>,
    #[serde(default)]
    max_body_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    probes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    extra_body: Option<Spanned<toml::Table>>,
    #[serde(default)]
    rpm: Option<Spanned<u32>>,
    #[serde(default)]
    rate_window: Option<RawDuration>,
    #[serde(default)]
    max_concurrency: Option<Spanned<u32>>,
    #[serde(default)]
    budget: daemon::RawBudget,
    #[serde(default)]
    schedules: BTreeMap<String, Spanned<String>>,
    models: Vec<RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: Spanned<String>,
    #[serde(default)]
    group: Option<Spanned<String>>,
    #[serde(default)]
    input_price: Option<Spanned<f64>>,
    #[serde(default)]
    output_price: Option<Spanned<f64>>,
    #[serde(default)]
    reasoning_budget: u32,
    #[serde(default)]
    max_tokens_field: MaxTokensField,
    #[serde(default)]
    probes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    extra_body: Option<Spanned<toml::Table>>,
    #[serde(default)]
    openrouter: Option<RawOpenRouter>,
    #[serde(default)]
    reference: bool,
    #[serde(default)]
    slo: Option<Spanned<slo::RawSlo>>,
}

/// `openrouter = { model = "...", provider = "..." }` on a model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenRouter {
    #[serde(default)]
    model: Option<Spanned<String>>,
    #[serde(default)]
    provider: Option<Spanned<String>>,
}

/// One API endpoint family with one credential.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Unique name.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL, ending in `/` so relative paths join under it.
    pub base_url: Url,
    /// Environment variable holding the API key; `None` for endpoints that need none.
    pub api_key_env: Option<String>,
    /// Extra headers sent with every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Deadline for a whole run.
    pub timeout: Duration,
    /// Longest silence once the response has begun.
    pub stall_timeout: Duration,
    /// Cap on a response body.
    pub max_body_bytes: u64,
    /// Requests allowed per window, shared by every probe on this provider.
    pub rate: RateLimit,
    /// Runs in flight at once on this provider.
    pub max_concurrency: u32,
    /// Monthly spending caps.
    pub budget: Budget,
}

/// A model id served by a provider.
#[derive(Debug, Clone)]
pub struct Model {
    /// The id sent in requests.
    pub id: String,
    /// The route group (logical model); the id when not given.
    pub group: String,
    /// USD per million input tokens.
    pub input_price: Option<f64>,
    /// USD per million output tokens.
    pub output_price: Option<f64>,
    /// Tokens added to every probe's `max_tokens`, for reasoning models that think first.
    pub reasoning_budget: u32,
    /// Which field carries the token limit.
    pub max_tokens_field: MaxTokensField,
    /// JSON merged into every request body (provider's, then the model's).
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// How OpenRouter names this target, for its export.
    pub openrouter: OpenRouterName,
    /// The group's quality reference: the host known to serve the model faithfully, which
    /// every other target of the group is compared with (`aggregate::quality`).
    pub reference: bool,
    /// Its service-level objective: its own, else its route group's.
    pub slo: Option<Slo>,
}

/// A target's names on OpenRouter: the model slug requests name, and the upstream provider
/// that `provider.order` lists (by default the model id and sonde's provider name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRouterName {
    /// The model slug, e.g. `meta-llama/llama-3.3-70b-instruct`.
    pub model: String,
    /// The provider as OpenRouter names it, e.g. `DeepInfra`.
    pub provider: String,
}

/// Provider × model: the unit that is probed, scored and weighted.
#[derive(Debug, Clone)]
pub struct Target {
    /// `provider/model`.
    pub id: String,
    /// The provider.
    pub provider: Arc<Provider>,
    /// The model.
    pub model: Model,
    /// Probes that run on this target.
    pub probes: Vec<String>,
    /// When each of `probes` runs, by probe name (the daemon's schedule).
    pub schedules: BTreeMap<String, Schedule>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Providers, in file order.
    pub providers: Vec<Arc<Provider>>,
    /// Targets, in file order.
    pub targets: Vec<Target>,
    /// The probes targets may name.
    pub probes: ProbeSet,
    /// Where results are kept.
    pub store: StoreConfig,
    /// How target states are decided.
    pub health: HealthConfig,
    /// Where this daemon probes from, and the fleet's quorum.
    pub prober: ProberConfig,
    /// How quality canary answers are judged.
    pub quality: QualityConfig,
    /// Who is told about incidents, and how.
    pub alerts: Vec<Alert>,
    /// The gateways kept at the feed's weights after each publish.
    pub sync: Vec<SyncConfig>,
    /// What is published, where and how often.
    pub publish: PublishConfig,
    /// The live server.
    pub server: ServerConfig,
    /// What each route group requires of its targets (groups without a table require
    /// nothing).
    pub groups: BTreeMap<String, GroupConfig>,
}

impl Config {
    /// The shortest schedule of any job (a minute when there is none): how often this
    /// prober shows it is alive, and a third of how long it may be silent before the
    /// fleet calls its location stale.
    pub fn shortest_schedule(&self) -> Duration {
        self.targets
            .iter()
            .flat_map(|target| target.schedules.values())
            .map(Schedule::period)
            .min()
            .unwrap_or(Duration::from_secs(60))
    }

    /// The targets by id, for a pass over many of them (a scan per lookup is quadratic
    /// at thousands of targets).
    pub fn targets_by_id(&self) -> HashMap<&str, &Target> {
        self.targets.iter().map(|t| (t.id.as_str(), t)).collect()
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = error::read(path)?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `file` (relative paths resolve against its folder).
    /// Every error of the file comes back at once.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let source = Source { file, text };
        let mut errors = Errors::default();
        let raw: Option<RawConfig> = source.parse_collecting(&mut errors);
        let stopped = |errors: Errors| {
            errors
                .into_error()
                .unwrap_or_else(|| source.error(None, "", "the file could not be read"))
        };
        let Some(raw) = raw else {
            return Err(stopped(errors));
        };
        let mut probes = ProbeSet::builtin();
        if let Some(dir) = &raw.probes_dir {
            let base = file.parent().unwrap_or(Path::new("."));
            let dir_path = base.join(dir.get_ref());
            // Every probe name would be in doubt without the folder: stop at what is certain.
            if !dir_path.is_dir() {
                errors.push(source.error(
                    Some(dir.span()),
                    "probes_dir",
                    format!("{} is not a directory", dir_path.display()),
                ));
                return Err(stopped(errors));
            }
            if let Err(err) = probes.load_dir(&dir_path) {
                errors.push(err);
                return Err(stopped(errors));
            }
        }
        let e = &mut errors;
        let global_schedules = daemon::schedules(&source, e, "schedules", &raw.schedules, &probes);
        let store = daemon::store(&source, e, file, raw.store);
        let health = daemon::health(&source, e, raw.health);
        let prober = prober::prober(&source, e, raw.prober);
        let quality = quality::quality(&source, e, raw.quality);
        let alerts = alerts::alerts(&source, e, raw.alerts);
        let sync = sync::syncs(&source, e, raw.sync);
        let publish = daemon::publish(&source, e, file, store.file(), raw.publish);
        let server = daemon::server(&source, e, raw.server);
        let mut providers = Vec::new();
        let mut targets = Vec::new();
        let mut provider_names: HashMap<String, usize> = HashMap::new();
        for (p, raw_provider) in raw.providers.into_iter().enumerate() {
            let key = format!("providers[{p}]");
            let name = &raw_provider.name;
            if let Some(&first) = provider_names.get(name.get_ref()) {
                e.push(source.error(
                    Some(name.span()),
                    format!("{key}.name"),
                    format!(
                        "provider {:?} is already defined on line {}",
                        name.get_ref(),
                        source.line(first)
                    ),
                ));
                continue;
            }
            provider_names.insert(name.get_ref().clone(), name.span().start);
            let provider_schedules = daemon::schedules(
                &source,
                e,
                &format!("{key}.schedules"),
                &raw_provider.schedules,
                &probes,
            );
            let Some((provider, models)) = build_provider(&source, e, &key, raw_provider, &probes)
            else {
                continue;
            };
            let provider = Arc::new(provider);
            // Where each model was first defined (a byte offset: its line is looked up only
            // for an error, so a file of 10,000 models is not scanned 10,000 times).
            let mut model_starts: HashMap<String, usize> = HashMap::new();
            for (m, model) in models {
                if let Some(&first) = model_starts.get(&model.model.id) {
                    e.push(source.error(
                        Some(model.span),
                        format!("{key}.models[{m}].id"),
                        format!(
                            "duplicate target {}/{}: already defined on line {}",
                            provider.name,
                            model.model.id,
                            source.line(first)
                        ),
                    ));
                    continue;
                }
                model_starts.insert(model.model.id.clone(), model.span.start);
                let schedules = model
                    .probes
                    .iter()
                    .map(|probe| {
                        let schedule = provider_schedules
                            .get(probe)
                            .or_else(|| global_schedules.get(probe))
                            .cloned()
                            .unwrap_or_else(|| crate::scheduler::default_for(probe));
                        (probe.clone(), schedule)
                    })
                    .collect();
                targets.push(Target {
                    id: format!("{}/{}", provider.name, model.model.id),
                    provider: Arc::clone(&provider),
                    model: model.model,
                    probes: model.probes,
                    schedules,
                });
            }
            providers.push(provider);
        }
        let mut known_groups: Vec<&str> = targets.iter().map(|t| t.model.group.as_str()).collect();
        known_groups.sort_unstable();
        known_groups.dedup();
        let groups = daemon::groups(&source, e, raw.groups, &known_groups);
        for target in &mut targets {
            if target.model.slo.is_none() {
                target.model.slo = groups
                    .get(&target.model.group)
                    .and_then(|group| group.slo.clone());
            }
        }
        errors.finish(Config {
            file: file.to_path_buf(),
            providers,
            targets,
            probes,
            store,
            health,
            prober,
            quality,
            alerts,
            sync,
            publish,
            server,
            groups,
        })
    }
}

/// A model with the span of its id, for duplicate errors.
struct PendingModel {
    model: Model,
    probes: Vec<String>,
    span: std::ops::Range<usize>,
}

/// Validates one provider and its models; `None` when it has errors (all of them pushed).
fn build_provider(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    raw: RawProvider,
    probes: &ProbeSet,
) -> Option<(Provider, Vec<(usize, PendingModel)>)> {
    let before = errors.len();
    let name = raw.name.get_ref();
    if name.is_empty()
        || name.contains('/')
        || name.chars().any(char::is_whitespace)
        || has_control(name)
    {
        errors.push(source.error(
            Some(raw.name.span()),
            format!("{key}.name"),
            "a provider name must be non-empty, without spaces, control characters or `/` (it \
             forms target ids)",
        ));
    }
    let base_url = parse_base_url(raw.base_url.get_ref())
        .map_err(|message| {
            errors.push(source.error(
                Some(raw.base_url.span()),
                format!("{key}.base_url"),
                message,
            ));
        })
        .ok();
    let api_key_env = match raw.api_key_env {
        Some(var) if is_env_name(var.get_ref()) => Some(var.into_inner()),
        Some(var) => {
            errors.push(source.error(
                Some(var.span()),
                format!("{key}.api_key_env"),
                "this must be the NAME of an environment variable (letters, digits, `_`), \
                 not the key itself",
            ));
            None
        }
        None => None,
    };
    let mut headers = Vec::new();
    for (header, value) in &raw.headers {
        let header_key = format!("{key}.headers.{header}");
        let Ok(header_name) = HeaderName::from_bytes(header.as_bytes()) else {
            errors.push(source.error(
                Some(value.span()),
                &header_key,
                "not a valid HTTP header name",
            ));
            continue;
        };
        if CREDENTIAL_HEADERS.contains(&header_name.as_str()) {
            errors.push(source.error(
                Some(value.span()),
                &header_key,
                "credentials are never written in the config: set `api_key_env` instead",
            ));
            continue;
        }
        match HeaderValue::from_str(value.get_ref()) {
            Ok(header_value) => headers.push((header_name, header_value)),
            Err(_) => errors.push(source.error(
                Some(value.span()),
                &header_key,
                "not a valid HTTP header value",
            )),
        }
    }
    let provider_probes =
        check_probes(source, errors, &format!("{key}.probes"), raw.probes, probes);
    let provider_extra = extra_body(source, errors, &format!("{key}.extra_body"), raw.extra_body);
    if raw.models.is_empty() {
        errors.push(source.error(
            Some(raw.name.span()),
            format!("{key}.models"),
            "a provider needs at least one [[providers.models]] entry",
        ));
    }
    let mut models = Vec::new();
    for (m, raw_model) in raw.models.into_iter().enumerate() {
        let model_key = format!("{key}.models[{m}]");
        let id = raw_model.id.get_ref();
        if id.trim().is_empty() || has_control(id) {
            errors.push(source.error(
                Some(raw_model.id.span()),
                format!("{model_key}.id"),
                "a model id must not be empty nor hold control characters",
            ));
        }
        if let Some(group) = &raw_model.group
            && (group.get_ref().trim().is_empty() || has_control(group.get_ref()))
        {
            errors.push(source.error(
                Some(group.span()),
                format!("{model_key}.group"),
                "a route group must not be empty nor hold control characters",
            ));
        }
        let price = |errors: &mut Errors, field: &str, value| {
            daemon::non_negative(
                source,
                errors,
                &format!("{model_key}.{field}"),
                value,
                "a price is USD per million tokens: a finite number, zero or more",
            )
        };
        let input_price = price(errors, "input_price", raw_model.input_price);
        let output_price = price(errors, "output_price", raw_model.output_price);
        let model_probes = check_probes(
            source,
            errors,
            &format!("{model_key}.probes"),
            raw_model.probes,
            probes,
        );
        let mut extra = provider_extra.clone();
        extra.extend(extra_body(
            source,
            errors,
            &format!("{model_key}.extra_body"),
            raw_model.extra_body,
        ));
        let openrouter = raw_model.openrouter.map_or((None, None), |raw| {
            let mut name = |field: &str, value: Option<Spanned<String>>| {
                let value = value?;
                if value.get_ref().trim().is_empty() || has_control(value.get_ref()) {
                    errors.push(source.error(
                        Some(value.span()),
                        format!("{model_key}.openrouter.{field}"),
                        "an OpenRouter name must not be empty nor hold control characters",
                    ));
                }
                Some(value.into_inner())
            };
            (name("model", raw.model), name("provider", raw.provider))
        });
        let span = raw_model.id.span();
        let id = raw_model.id.into_inner();
        let openrouter = OpenRouterName {
            model: openrouter.0.unwrap_or_else(|| id.clone()),
            provider: openrouter.1.unwrap_or_else(|| name.to_owned()),
        };
        models.push((
            m,
            PendingModel {
                model: Model {
                    group: raw_model
                        .group
                        .map_or_else(|| id.clone(), Spanned::into_inner),
                    id,
                    input_price,
                    output_price,
                    reasoning_budget: raw_model.reasoning_budget,
                    max_tokens_field: raw_model.max_tokens_field,
                    extra_body: extra,
                    openrouter,
                    reference: raw_model.reference,
                    slo: raw_model
                        .slo
                        .and_then(|raw| slo::slo(source, errors, &format!("{model_key}.slo"), raw)),
                },
                probes: model_probes
                    .or_else(|| provider_probes.clone())
                    .unwrap_or_else(|| DEFAULT_PROBES.iter().map(|p| p.to_string()).collect()),
                span,
            },
        ));
    }
    let rate = daemon::rate(source, errors, key, raw.rpm, raw.rate_window);
    let max_concurrency = daemon::concurrency(source, errors, key, raw.max_concurrency);
    let budget = daemon::budget(source, errors, key, raw.budget);
    let timeout = daemon::duration(
        source,
        errors,
        &format!("{key}.timeout"),
        raw.timeout,
        TIMEOUT_RANGE,
        DEFAULT_TIMEOUT,
    );
    let stall_timeout = daemon::duration(
        source,
        errors,
        &format!("{key}.stall_timeout"),
        raw.stall_timeout,
        TIMEOUT_RANGE,
        DEFAULT_STALL_TIMEOUT,
    );
    let max_body_bytes = match raw.max_body_bytes {
        Some(cap) if !(1024..=MAX_BODY_CAP).contains(cap.get_ref()) => {
            errors.push(source.error(
                Some(cap.span()),
                format!("{key}.max_body_bytes"),
                format!("must be between 1024 and {MAX_BODY_CAP} bytes"),
            ));
            DEFAULT_MAX_BODY_BYTES
        }
        Some(cap) => cap.into_inner(),
        None => DEFAULT_MAX_BODY_BYTES,
    };
    if errors.len() > before {
        return None;
    }
    let provider = Provider {
        name: raw.name.into_inner(),
        kind: raw.kind,
        base_url: base_url?,
        api_key_env,
        headers,
        timeout,
        stall_timeout,
        max_body_bytes,
        rate,
        max_concurrency,
        budget,
    };
    Some((provider, models))
}

/// Whether `text` holds a character that has no place in a name: a control character (C0,
/// DEL, C1) or a bidirectional override that reorders what a reader sees.
fn has_control(text: &str) -> bool {
    text.chars().any(crate::sanitize::is_unsafe)
}

/// The `extra_body` table as JSON, after refusing any field that carries a credential.
fn extra_body(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    table: Option<Spanned<toml::Table>>,
) -> serde_json::Map<String, serde_json::Value> {
    let Some(table) = table else {
        return serde_json::Map::new();
    };
    let span = table.span();
    let json = to_json(table.into_inner());
    if let Some(path) = credential_field(&json, key) {
        errors.push(source.error(
            Some(span),
            path,
            "credentials are never written in the config: set `api_key_env` instead",
        ));
    }
    json
}

/// The dotted path of the first field of `body` (at any depth) whose name says it holds a
/// credential.
fn credential_field(body: &serde_json::Map<String, serde_json::Value>, at: &str) -> Option<String> {
    for (name, value) in body {
        let normalized: String = name
            .chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect();
        let path = format!("{at}.{name}");
        if CREDENTIAL_FIELDS.contains(&normalized.as_str()) {
            return Some(path);
        }
        let nested = match value {
            serde_json::Value::Object(inner) => credential_field(inner, &path),
            serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                item.as_object()
                    .and_then(|inner| credential_field(inner, &format!("{path}[{i}]")))
            }),
            _ => None,
        };
        if nested.is_some() {
            return nested;
        }
    }
    None
}

fn check_probes(
    source: &Source<'_>,
    errors: &mut Errors,
    key: &str,
    names: Option<Vec<Spanned<String>>>,
    probes: &ProbeSet,
) -> Option<Vec<String>> {
    let names = names?;
    for (i, name) in names.iter().enumerate() {
        if probes.get(name.get_ref()).is_none() {
            let known: Vec<_> = probes.names().collect();
            errors.push(source.error(
                Some(name.span()),
                format!("{key}[{i}]"),
                format!(
                    "no probe named {:?} (known: {})",
                    name.get_ref(),
                    known.join(", ")
                ),
            ));
        }
    }
    Some(names.into_iter().map(Spanned::into_inner).collect())
}

/// Parses a base URL and makes it end in `/`, so `chat/completions` joins under its path.
fn parse_base_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|err| format!("not a valid URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL must not carry a query string or credentials: use `api_key_env`".into(),
        );
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

pub(super) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn to_json(table: toml::Table) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(table) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_gain_a_trailing_slash() {
        assert_eq!(
            parse_base_url("https://api.example.com/v1")
                .unwrap()
                .as_str(),
            "https://api.example.com/v1/"
        );
        assert!(parse_base_url("ftp://x/v1").is_err());
        assert!(parse_base_url("https://user:pw@x/v1").is_err());
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("OPENAI_API_KEY"));
        assert!(!is_env_name("sk-abc"));
        assert!(!is_env_name("1X"));
    }
}
