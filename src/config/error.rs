//! Config errors that name the file, the line and the key, and the one parsing helper that
//! produces them for every TOML file sonde reads (`sonde.toml`, probe files, scenarios).
//!
//! Errors never quote the offending line: a user who pasted a key into the wrong field would
//! see it echoed.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

/// A config file that could not be read or is not valid.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read and something in it is wrong.
    #[error("{}:{line}: {}{message}", file.display(), key_prefix(key))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// Dotted path of the key (`providers[0].timeout`); empty for a syntax error.
        key: String,
        /// What is wrong and, where it helps, what to do.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

impl ConfigError {
    /// The key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    /// The line the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Where in one file's text an error points.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The file, as given by the user.
    pub file: &'a Path,
    /// Its text.
    pub text: &'a str,
}

impl Source<'_> {
    /// Builds an error at the byte `span` of the text.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let offset = span.map_or(0, |span| span.start.min(self.text.len()));
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.text[..offset].matches('\n').count() + 1,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Parses the text as TOML into `T`. Syntax errors, unknown keys, missing keys and wrong
    /// types all come back as [`ConfigError::Invalid`] naming the key's dotted path.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let de = toml::Deserializer::parse(self.text).map_err(|err| {
            self.error(err.span(), "", format!("invalid TOML: {}", err.message()))
        })?;
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.message().trim_end().to_owned();
            let key = key_of(&path, &message);
            let message = hint(&key, message);
            self.error(inner.span(), key, message)
        })
    }
}

/// Reads a file for [`Source`], mapping the I/O error.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The full key path: serde names the table for a missing field, so append the field; the
/// private field of `toml::Spanned` is not the user's business, so drop it.
fn key_of(path: &str, message: &str) -> String {
    let cleaned: Vec<&str> = path
        .split('.')
        .filter(|segment| !segment.starts_with("$__"))
        .collect();
    let cleaned = cleaned.join(".");
    let path = if cleaned.is_empty() || cleaned == "." {
        ""
    } else {
        cleaned.as_str()
    };
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match field {
        Some(field) if !path.ends_with(field) => {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        }
        _ => path.to_owned(),
    }
}

/// Adds what to do where the bare serde message would leave the user guessing.
fn hint(key: &str, message: String) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if message.starts_with("unknown field") && matches!(leaf, "api_key" | "key" | "token") {
        format!(
            "{message}. API keys are never written in the config: put the key in an \
             environment variable and give its name as `api_key_env`"
        )
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_field_names_the_field() {
        assert_eq!(
            key_of("providers[0]", "missing field `base_url`"),
            "providers[0].base_url"
        );
        assert_eq!(key_of(".", "missing field `name`"), "name");
        assert_eq!(
            key_of(
                "providers[0].api_key",
                "unknown field `api_key`, expected one of"
            ),
            "providers[0].api_key"
        );
        assert_eq!(
            key_of("providers[0].timeout", "invalid type"),
            "providers[0].timeout"
        );
    }
}
