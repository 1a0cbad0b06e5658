//! Config errors that name the file, the line and the key, and the one parsing helper that
//! produces them for every TOML file sonde reads (`sonde.toml`, probe files, scenarios).
//!
//! Errors never quote the offending line: a user who pasted a key into the wrong field would
//! see it echoed. A file's errors are reported together ([`Errors`]): every unknown key, and
//! every value the checks after parsing refuse, in one run of `sonde check`.

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
    /// Several errors of one file, in line order, one per line of the message.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

impl ConfigError {
    /// The key the error is about, if any (the first error's, for several).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } if !key.is_empty() => Some(key),
            ConfigError::Several(errors) => errors.first().and_then(ConfigError::key),
            _ => None,
        }
    }

    /// The line the error is about, if any (the first error's, for several).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Several(errors) => errors.first().and_then(ConfigError::line),
            ConfigError::Read { .. } => None,
        }
    }

    /// Every single error this one stands for.
    pub fn all(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Several(errors) => errors.iter().collect(),
            single => vec![single],
        }
    }
}

/// The errors found in one file so far: checks push what they find and go on, so that one
/// run reports every error instead of the first.
#[derive(Debug, Default)]
pub struct Errors(Vec<ConfigError>);

impl Errors {
    /// Adds an error (the parts of a [`ConfigError::Several`] one by one).
    pub fn push(&mut self, error: ConfigError) {
        match error {
            ConfigError::Several(errors) => self.0.extend(errors),
            single => self.0.push(single),
        }
    }

    /// The value of `result`, or `None` after keeping its error.
    pub fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|err| self.push(err)).ok()
    }

    /// How many errors were found (a check compares it before and after).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// `value` when no error was found; else the error, or all of them in line order.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        match self.into_error() {
            None => Ok(value),
            Some(error) => Err(error),
        }
    }

    /// The errors found as one error (all of them in line order); `None` when there are none.
    pub fn into_error(self) -> Option<ConfigError> {
        let mut errors = self.0;
        match errors.len() {
            0 => None,
            1 => Some(errors.remove(0)),
            _ => {
                errors.sort_by_key(|err| err.line().unwrap_or(0));
                Some(ConfigError::Several(errors))
            }
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
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.line(span.map_or(0, |span| span.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// The 1-based line of byte `offset` (a scan of the text before it: look lines up when
    /// reporting, not for every key read).
    pub fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// Parses the text as TOML into `T`. Syntax errors, unknown keys (all of them, as
    /// [`ConfigError::Several`]), missing keys and wrong types come back naming the key's
    /// dotted path.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut errors = Errors::default();
        let value = self.parse_collecting(&mut errors);
        match (value, errors.into_error()) {
            (Some(value), None) => Ok(value),
            (_, Some(error)) => Err(error),
            (None, None) => Err(self.error(None, "", "the file could not be read")),
        }
    }

    /// Parses the text as TOML into `T` like [`Source::parse`], but keeps going past unknown
    /// keys: each one is recorded in `errors` and left out, until the rest deserializes or
    /// another kind of error (syntax, type, missing key) stops it. `None` when it stopped.
    pub fn parse_collecting<T: DeserializeOwned>(&self, errors: &mut Errors) -> Option<T> {
        /// More unknown keys than this in one file is not a config with typos.
        const MAX_UNKNOWN: usize = 100;
        let mut document = match toml::de::DeTable::parse(self.text) {
            Ok(document) => document,
            Err(err) => {
                errors.push(self.error(err.span(), "", format!("invalid TOML: {}", err.message())));
                return None;
            }
        };
        for _ in 0..MAX_UNKNOWN {
            let de = toml::de::Deserializer::from(document.clone());
            let err = match serde_path_to_error::deserialize(de) {
                Ok(value) => return Some(value),
                Err(err) => err,
            };
            let mut path = segments(err.path());
            let inner = err.into_inner();
            let message = inner.message().trim_end().to_owned();
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned);
            if let Some(field) = &unknown
                && path.last() != Some(field)
            {
                path.push(field.clone());
            }
            let key = key_of(&dotted(&path), &message);
            let message = hint(&key, message);
            errors.push(self.error(inner.span(), key, message));
            if unknown.is_none() || !remove(document.get_mut(), &path) {
                return None;
            }
        }
        None
    }
}

/// The path's segments a user sees: table keys and `[index]`, without `Spanned`'s private
/// field.
fn segments(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } if !key.starts_with("$__") => Some(key.clone()),
            Segment::Seq { index } => Some(format!("[{index}]")),
            _ => None,
        })
        .collect()
}

/// `providers[0].timeout` from its segments.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() && !segment.starts_with('[') {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

/// Removes the entry at `path` (whose last segment is a table key) from `table`; false when
/// the path leads nowhere.
fn remove(table: &mut toml::de::DeTable<'_>, path: &[String]) -> bool {
    use toml::de::DeValue;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = table;
    let mut parents = parents.iter().peekable();
    while let Some(segment) = parents.next() {
        let Some(value) = current.get_mut(segment.as_str()) else {
            return false;
        };
        let mut value = value.get_mut();
        while let Some(index) = parents.peek().and_then(|next| {
            next.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<usize>()
                .ok()
        }) {
            parents.next();
            let DeValue::Array(items) = value else {
                return false;
            };
            let Some(item) = items.get_mut(index) else {
                return false;
            };
            value = item.get_mut();
        }
        let DeValue::Table(inner) = value else {
            return false;
        };
        current = inner;
    }
    current.remove(last.as_str()).is_some()
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
