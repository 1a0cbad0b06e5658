//! API keys and their removal from every text sonde writes.
//!
//! A key lives in a [`Secret`], whose `Debug` shows nothing, and leaves it only as a sensitive
//! HTTP header value. Any text that came from a provider (error messages, model ids) or from
//! an error chain passes through [`Secret::redact`] before it is stored: providers do echo keys
//! back ("Incorrect API key provided: sk-…").

use std::borrow::Cow;
use std::fmt;

/// Replaces a key wherever it appears.
const MASK: &str = "[REDACTED]";

/// Fragments shorter than this are not masked on their own: too short to identify a key, and
/// common enough to mangle ordinary text.
const MIN_FRAGMENT: usize = 8;

/// An API key read from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Reads the key from the environment variable `name`. `None` when unset or empty.
    pub fn from_env(name: &str) -> Option<Secret> {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(|value| Secret(value.trim().to_owned()))
    }

    /// Wraps a key given by other means (tests, the simulator's expected key).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The key itself, for the one place that needs it: the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Removes the key from `text`: the whole key, and the head or tail of it that a provider
    /// may echo in a masked form such as `sk-abc1…wxyz` when that part is long enough to be
    /// telling.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let key = self.0.as_str();
        if key.is_empty() || !self.appears_in(text) {
            return Cow::Borrowed(text);
        }
        let mut out = text.replace(key, MASK);
        if key.len() >= 2 * MIN_FRAGMENT {
            let half = key.len() / 2;
            for fragment in [head(key, half), tail(key, half)] {
                if fragment.len() >= MIN_FRAGMENT {
                    out = out.replace(fragment, MASK);
                }
            }
        }
        Cow::Owned(out)
    }

    fn appears_in(&self, text: &str) -> bool {
        let key = self.0.as_str();
        if text.contains(key) {
            return true;
        }
        if key.len() < 2 * MIN_FRAGMENT {
            return false;
        }
        let half = key.len() / 2;
        [head(key, half), tail(key, half)]
            .iter()
            .any(|fragment| fragment.len() >= MIN_FRAGMENT && text.contains(fragment))
    }
}

/// The longest prefix of at most `len` bytes that ends on a character boundary.
fn head(key: &str, len: usize) -> &str {
    let mut end = len.min(key.len());
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// The longest suffix of at most `len` bytes that starts on a character boundary.
fn tail(key: &str, len: usize) -> &str {
    let mut start = key.len().saturating_sub(len);
    while !key.is_char_boundary(start) {
        start += 1;
    }
    &key[start..]
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Redacts `text` with an optional key: the common case in the runner.
pub fn redact_opt<'a>(secret: Option<&Secret>, text: &'a str) -> Cow<'a, str> {
    match secret {
        Some(secret) => secret.redact(text),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_key_and_telling_fragments_are_masked() {
        let key = Secret::new("sk-test-0123456789abcdefghij");
        assert_eq!(
            key.redact("Incorrect API key provided: sk-test-0123456789abcdefghij."),
            "Incorrect API key provided: [REDACTED]."
        );
        let masked = key.redact("key sk-test-012345****cdefghij is wrong");
        assert!(!masked.contains("sk-test-012345"), "{masked}");
        assert_eq!(key.redact("nothing here"), "nothing here");
        assert_eq!(format!("{key:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn short_keys_mask_only_whole() {
        let key = Secret::new("abc");
        assert_eq!(key.redact("abcabc ab"), "[REDACTED][REDACTED] ab");
    }
}
