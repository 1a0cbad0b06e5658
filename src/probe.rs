//! Probes: synthetic request definitions, one TOML file each.
//!
//! The probes under `probes/` are built into the binary, so `sonde` works from any directory;
//! a config's `probes_dir` adds probes and replaces built-in ones of the same name.
//!
//! Every run renders the probe with a fresh nonce so no provider's prompt cache can flatter
//! its TTFT: `{nonce}` in a message is replaced, and a probe that has no `{nonce}` gets one
//! prepended to its first message (a unique prefix defeats prefix caches best).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use rand::RngExt;
use regex::Regex;
use serde::Deserialize;

use crate::capability::Capability;
use crate::config::error::{ConfigError, Source, read};
use crate::quality::{self, Family, Item};

/// The probes shipped in `probes/`, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("ping", include_str!("../probes/ping.toml")),
    ("stream", include_str!("../probes/stream.toml")),
    ("tools", include_str!("../probes/tools.toml")),
    ("json", include_str!("../probes/json.toml")),
    ("models", include_str!("../probes/models.toml")),
    ("quality", include_str!("../probes/quality.toml")),
    (
        "quality-tools",
        include_str!("../probes/quality-tools.toml"),
    ),
];

/// The placeholder replaced by each run's nonce.
pub const NONCE_PLACEHOLDER: &str = "{nonce}";

/// One chat message of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: Role,
    /// The text; may contain `{nonce}`.
    pub content: String,
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user's turn.
    User,
    /// A prior answer (few-shot).
    Assistant,
}

impl Role {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// What a probe asks of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// A chat completion in the provider's format.
    #[default]
    Chat,
    /// The provider's model list (`GET …/models`): costs no tokens; `not_found` when the
    /// target's model is not listed.
    Models,
    /// A quality canary item of the probe's `family`, generated per run (see [`quality`]):
    /// the messages and tools come from the item, not the file.
    Quality,
}

/// A function the model is asked to call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Function name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
    /// Arguments the call must carry (strings compared without case or surrounding space).
    pub expect_arguments: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    #[serde(default)]
    description: String,
    parameters: toml::Table,
    #[serde(default)]
    expect_arguments: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    description: String,
    #[serde(default)]
    kind: ProbeKind,
    #[serde(default)]
    family: Option<toml::Spanned<Family>>,
    #[serde(default)]
    capabilities: Vec<Capability>,
    #[serde(default = "default_stream")]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    json_mode: bool,
    #[serde(default)]
    tool: Option<RawTool>,
    #[serde(default)]
    expect_contains: Option<OneOrMany>,
    #[serde(default)]
    expect_regex: Option<toml::Spanned<String>>,
    #[serde(default)]
    expect_json_keys: Vec<String>,
}

fn default_stream() -> bool {
    true
}

/// A probe, validated.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The probe's name: its file name without `.toml`.
    pub name: String,
    /// One line on what it measures.
    pub description: String,
    /// A chat completion, the model list or a quality item.
    pub kind: ProbeKind,
    /// The family of a quality probe's items.
    pub family: Option<Family>,
    /// Capabilities its results establish.
    pub capabilities: Vec<Capability>,
    /// Whether to ask for a streamed answer.
    pub stream: bool,
    /// Token limit for the answer (a model's `reasoning_budget` is added).
    pub max_tokens: u32,
    /// Sampling temperature; the provider's default when absent.
    pub temperature: Option<f64>,
    /// The conversation sent.
    pub messages: Vec<Message>,
    /// Ask for JSON output (the format's JSON mode).
    pub json_mode: bool,
    /// A function the model must call.
    pub tool: Option<Tool>,
    /// Substrings the answer must contain, all of them.
    pub expect_contains: Vec<String>,
    /// A pattern the answer must match.
    pub expect_regex: Option<Regex>,
    /// Keys the answer, parsed as a JSON object, must have.
    pub expect_json_keys: Vec<String>,
}

/// What a run's answer was, for validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answer<'a> {
    /// The visible answer text.
    pub text: &'a str,
    /// The tool called, if any.
    pub tool_name: Option<&'a str>,
    /// The call's arguments (JSON text).
    pub tool_arguments: &'a str,
}

/// What one run of a probe sends, and the quality item it asks.
#[derive(Debug, Clone)]
pub struct Prompt<'a> {
    /// The conversation, carrying the run's nonce.
    pub messages: Vec<Message>,
    /// The tools offered.
    pub tools: Cow<'a, [Tool]>,
    /// Whether the model must call the (single) tool: the `tools` probe forces it, quality
    /// items leave the choice to the model.
    pub force_tool: bool,
    /// The quality item, for a quality probe.
    pub item: Option<Item>,
}

impl Probe {
    /// Parses a probe file's text.
    pub fn parse(name: &str, source: Source<'_>) -> Result<Probe, ConfigError> {
        let raw: RawProbe = source.parse()?;
        let max_tokens = match (raw.kind, raw.max_tokens) {
            (ProbeKind::Models, _) => 0,
            (ProbeKind::Chat | ProbeKind::Quality, Some(0)) => {
                return Err(source.error(None, "max_tokens", "must be at least 1"));
            }
            (ProbeKind::Chat | ProbeKind::Quality, Some(limit)) => limit,
            (ProbeKind::Chat | ProbeKind::Quality, None) => {
                return Err(source.error(None, "max_tokens", "missing field `max_tokens`"));
            }
        };
        if raw.kind == ProbeKind::Chat && raw.messages.is_empty() {
            return Err(source.error(None, "messages", "a probe needs at least one message"));
        }
        let family = match (raw.kind, raw.family) {
            (ProbeKind::Quality, Some(family)) => Some(*family.get_ref()),
            (ProbeKind::Quality, None) => {
                return Err(source.error(
                    None,
                    "family",
                    "a quality probe needs `family = \"exact\"` or `family = \"tools\"`",
                ));
            }
            (_, Some(family)) => {
                return Err(source.error(
                    Some(family.span()),
                    "family",
                    "only a probe of `kind = \"quality\"` has a family",
                ));
            }
            (_, None) => None,
        };
        if raw.kind == ProbeKind::Quality && (!raw.messages.is_empty() || raw.tool.is_some()) {
            return Err(source.error(
                None,
                "messages",
                "a quality probe's messages and tools come from its generated items: remove them",
            ));
        }
        let expect_regex = match raw.expect_regex {
            Some(pattern) => Some(Regex::new(pattern.get_ref()).map_err(|err| {
                source.error(Some(pattern.span()), "expect_regex", err.to_string())
            })?),
            None => None,
        };
        let expect_contains = match raw.expect_contains {
            None => Vec::new(),
            Some(OneOrMany::One(one)) => vec![one],
            Some(OneOrMany::Many(many)) => many,
        };
        let tool = raw.tool.map(|tool| Tool {
            name: tool.name,
            description: tool.description,
            parameters: toml_to_json(tool.parameters),
            expect_arguments: match toml_to_json(tool.expect_arguments) {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        });
        Ok(Probe {
            name: name.to_owned(),
            description: raw.description,
            kind: raw.kind,
            family,
            capabilities: raw.capabilities,
            stream: raw.stream && raw.kind != ProbeKind::Models,
            max_tokens,
            temperature: raw.temperature,
            messages: raw.messages,
            json_mode: raw.json_mode,
            tool,
            expect_contains,
            expect_regex,
            expect_json_keys: raw.expect_json_keys,
        })
    }

    /// What the run with id `nonce` sends: the probe's own messages and tool, or the quality
    /// item the nonce selects.
    pub fn prompt(&self, nonce: &str) -> Prompt<'_> {
        match self.family {
            Some(family) => {
                let item = Item::for_run(family, nonce);
                Prompt {
                    messages: item.messages.clone(),
                    tools: Cow::Owned(item.tools.clone()),
                    force_tool: false,
                    item: Some(item),
                }
            }
            None => Prompt {
                messages: self.render(nonce),
                tools: Cow::Borrowed(self.tool.as_slice()),
                force_tool: self.tool.is_some(),
                item: None,
            },
        }
    }

    /// The characters a run's prompt may have at most, tool schemas included: for budgets'
    /// worst cases.
    pub fn prompt_chars_max(&self) -> usize {
        if self.family.is_some() {
            return quality::PROMPT_CHARS_MAX;
        }
        self.messages.iter().map(|m| m.content.len()).sum::<usize>()
            + self.tool.as_ref().map_or(0, |tool| {
                tool.parameters.to_string().len() + tool.description.len()
            })
    }

    /// The messages of one run, carrying `nonce`.
    pub fn render(&self, nonce: &str) -> Vec<Message> {
        let has_placeholder = self
            .messages
            .iter()
            .any(|message| message.content.contains(NONCE_PLACEHOLDER));
        self.messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let content = if has_placeholder {
                    message.content.replace(NONCE_PLACEHOLDER, nonce)
                } else if index == 0 {
                    format!("Request {nonce}.\n{}", message.content)
                } else {
                    message.content.clone()
                };
                Message {
                    role: message.role,
                    content,
                }
            })
            .collect()
    }

    /// Checks an answer against the probe's expectations; the error says what was wrong.
    pub fn check(&self, answer: &Answer<'_>) -> Result<(), String> {
        if let Some(tool) = &self.tool {
            check_tool_call(tool, answer)?;
        }
        if self.json_mode || !self.expect_json_keys.is_empty() {
            check_json(answer.text, &self.expect_json_keys)?;
        }
        if let Some(missing) = self
            .expect_contains
            .iter()
            .find(|needle| !answer.text.contains(needle.as_str()))
        {
            return Err(format!("answer lacks {missing:?}"));
        }
        match &self.expect_regex {
            Some(regex) if !regex.is_match(answer.text) => {
                Err(format!("answer does not match /{}/", regex.as_str()))
            }
            _ => Ok(()),
        }
    }
}

fn check_tool_call(tool: &Tool, answer: &Answer<'_>) -> Result<(), String> {
    match answer.tool_name {
        None => {
            return Err(format!(
                "no call to tool {}: the model answered in text",
                tool.name
            ));
        }
        Some(name) if name != tool.name => {
            return Err(format!("called tool {name:?}, not {:?}", tool.name));
        }
        Some(_) => {}
    }
    let arguments: serde_json::Value = serde_json::from_str(answer.tool_arguments)
        .map_err(|err| format!("tool arguments are not valid JSON ({err})"))?;
    for (key, expected) in &tool.expect_arguments {
        let actual = arguments.get(key);
        let matches = match (actual, expected) {
            (Some(serde_json::Value::String(actual)), serde_json::Value::String(expected)) => {
                actual.trim().eq_ignore_ascii_case(expected.trim())
            }
            (Some(actual), expected) => actual == expected,
            (None, _) => false,
        };
        if !matches {
            return Err(format!(
                "tool argument {key:?} is {}, expected {expected}",
                actual.map_or("missing".to_owned(), ToString::to_string)
            ));
        }
    }
    Ok(())
}

fn check_json(text: &str, keys: &[String]) -> Result<(), String> {
    let trimmed = text.trim();
    let value: serde_json::Value = serde_json::from_str(trimmed).map_err(|err| {
        if trimmed.starts_with("```") {
            "answer is JSON in a code fence, not JSON mode output".to_owned()
        } else {
            format!("answer is not JSON ({err})")
        }
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| "answer is JSON but not an object".to_owned())?;
    match keys.iter().find(|key| !object.contains_key(key.as_str())) {
        Some(key) => Err(format!("answer JSON lacks the key {key:?}")),
        None => Ok(()),
    }
}

fn toml_to_json(table: toml::Table) -> serde_json::Value {
    serde_json::to_value(table).unwrap_or(serde_json::Value::Null)
}

/// A fresh run nonce: 64 random bits in hex.
pub fn nonce() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// The probes a config can name.
#[derive(Debug, Clone)]
pub struct ProbeSet {
    probes: BTreeMap<String, Probe>,
}

impl ProbeSet {
    /// The built-in probes.
    pub fn builtin() -> ProbeSet {
        let probes = BUILTIN
            .iter()
            .map(|(name, text)| {
                let file = Path::new("probes").join(format!("{name}.toml"));
                let probe = Probe::parse(name, Source { file: &file, text })
                    .unwrap_or_else(|err| panic!("built-in probe is invalid: {err}"));
                (name.to_string(), probe)
            })
            .collect();
        ProbeSet { probes }
    }

    /// Adds every `*.toml` in `dir`, replacing built-in probes of the same name.
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        for file in files {
            let Some(name) = file.file_stem().and_then(|stem| stem.to_str()) else {
                continue;
            };
            let text = read(&file)?;
            let probe = Probe::parse(
                name,
                Source {
                    file: &file,
                    text: &text,
                },
            )?;
            self.probes.insert(name.to_owned(), probe);
        }
        Ok(())
    }

    /// The probe called `name`.
    pub fn get(&self, name: &str) -> Option<&Probe> {
        self.probes.get(name)
    }

    /// Every probe name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.probes.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_probes_parse_and_accept_their_own_answers() {
        let set = ProbeSet::builtin();
        fn text(text: &str) -> Answer<'_> {
            Answer {
                text,
                ..Answer::default()
            }
        }
        let ping = set.get("ping").unwrap();
        assert!(ping.check(&text("Pong.")).is_ok());
        assert!(ping.check(&text("ping")).is_err());
        let stream = set.get("stream").unwrap();
        let counted: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
        let counted = counted.join(" ");
        assert!(stream.check(&text(&counted)).is_ok());
        assert!(stream.check(&text("1 2 3")).is_err());
        let json = set.get("json").unwrap();
        assert!(json.json_mode);
        assert!(
            json.check(&text(
                r#"{"city":"Paris","country":"France","population":2100000}"#
            ))
            .is_ok()
        );
        assert_eq!(
            json.check(&text("```json\n{}\n```")).unwrap_err(),
            "answer is JSON in a code fence, not JSON mode output"
        );
        assert!(
            json.check(&text(r#"{"city":"Paris"}"#))
                .unwrap_err()
                .contains("country")
        );
        let tools = set.get("tools").unwrap();
        let call = |name, arguments| Answer {
            text: "",
            tool_name: Some(name),
            tool_arguments: arguments,
        };
        assert!(
            tools
                .check(&call("get_weather", r#"{"city": " paris "}"#))
                .is_ok()
        );
        assert!(
            tools
                .check(&call("get_weather", r#"{"city": "Lyon"}"#))
                .is_err()
        );
        assert!(
            tools
                .check(&call("get_time", r#"{"city": "Paris"}"#))
                .is_err()
        );
        assert!(
            tools
                .check(&call("get_weather", r#"{"city": "Par"#))
                .is_err()
        );
        assert!(
            tools
                .check(&text("It is sunny in Paris."))
                .unwrap_err()
                .contains("no call")
        );
        assert_eq!(set.get("models").unwrap().kind, ProbeKind::Models);
    }

    #[test]
    fn every_render_carries_the_nonce() {
        let set = ProbeSet::builtin();
        let messages = set.get("ping").unwrap().render("abc123");
        assert!(messages[0].content.contains("abc123"));
        assert!(!messages[0].content.contains(NONCE_PLACEHOLDER));
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn a_probe_without_placeholder_gets_a_prefix() {
        let file = Path::new("p.toml");
        let text = "max_tokens = 5\n[[messages]]\nrole = \"user\"\ncontent = \"hi\"\n";
        let probe = Probe::parse("p", Source { file, text }).unwrap();
        assert_eq!(probe.render("n1")[0].content, "Request n1.\nhi");
    }

    #[test]
    fn bad_regex_names_line_and_key() {
        let file = Path::new("p.toml");
        let text = "max_tokens = 5\nexpect_regex = \"(\"\n[[messages]]\nrole = \"user\"\ncontent = \"hi\"\n";
        let err = Probe::parse("p", Source { file, text }).unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert_eq!(err.key(), Some("expect_regex"));
    }
}
