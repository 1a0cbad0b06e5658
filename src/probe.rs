//! Probes: synthetic request definitions, one TOML file each.
//!
//! The probes under `probes/` are built into the binary, so `sonde` works from any directory;
//! a config's `probes_dir` adds probes and replaces built-in ones of the same name.
//!
//! Every run renders the probe with a fresh nonce so no provider's prompt cache can flatter
//! its TTFT: `{nonce}` in a message is replaced, and a probe that has no `{nonce}` gets one
//! prepended to its first message (a unique prefix defeats prefix caches best).

use std::collections::BTreeMap;
use std::path::Path;

use rand::RngExt;
use regex::Regex;
use serde::Deserialize;

use crate::config::error::{ConfigError, Source, read};

/// The probes shipped in `probes/`, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("ping", include_str!("../probes/ping.toml")),
    ("stream", include_str!("../probes/stream.toml")),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    description: String,
    #[serde(default = "default_stream")]
    stream: bool,
    max_tokens: u32,
    #[serde(default)]
    temperature: Option<f64>,
    messages: Vec<Message>,
    #[serde(default)]
    expect_contains: Option<OneOrMany>,
    #[serde(default)]
    expect_regex: Option<toml::Spanned<String>>,
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
    /// Whether to ask for a streamed answer.
    pub stream: bool,
    /// Token limit for the answer (a model's `reasoning_budget` is added).
    pub max_tokens: u32,
    /// Sampling temperature; the provider's default when absent.
    pub temperature: Option<f64>,
    /// The conversation sent.
    pub messages: Vec<Message>,
    /// Substrings the answer must contain, all of them.
    pub expect_contains: Vec<String>,
    /// A pattern the answer must match.
    pub expect_regex: Option<Regex>,
}

impl Probe {
    /// Parses a probe file's text.
    pub fn parse(name: &str, source: Source<'_>) -> Result<Probe, ConfigError> {
        let raw: RawProbe = source.parse()?;
        if raw.messages.is_empty() {
            return Err(source.error(None, "messages", "a probe needs at least one message"));
        }
        if raw.max_tokens == 0 {
            return Err(source.error(None, "max_tokens", "must be at least 1"));
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
        Ok(Probe {
            name: name.to_owned(),
            description: raw.description,
            stream: raw.stream,
            max_tokens: raw.max_tokens,
            temperature: raw.temperature,
            messages: raw.messages,
            expect_contains,
            expect_regex,
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

    /// Checks an answer against the probe's expectations; the error says what was missing.
    pub fn check(&self, answer: &str) -> Result<(), String> {
        if let Some(missing) = self
            .expect_contains
            .iter()
            .find(|needle| !answer.contains(needle.as_str()))
        {
            return Err(format!("answer lacks {missing:?}"));
        }
        match &self.expect_regex {
            Some(regex) if !regex.is_match(answer) => {
                Err(format!("answer does not match /{}/", regex.as_str()))
            }
            _ => Ok(()),
        }
    }
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
        let ping = set.get("ping").unwrap();
        assert!(ping.check("Pong.").is_ok());
        assert!(ping.check("ping").is_err());
        let stream = set.get("stream").unwrap();
        let counted: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
        assert!(stream.check(&counted.join(" ")).is_ok());
        assert!(stream.check("1 2 3").is_err());
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
