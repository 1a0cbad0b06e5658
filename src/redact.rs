//! API keys and their removal from every text sonde writes.
//!
//! A key lives in a [`Secret`], whose `Debug` shows nothing, and leaves it only as a sensitive
//! HTTP header value. Any text that came from a provider (error messages, model ids, finish
//! reasons) or from an error chain passes through [`Secret::redact`] before it is stored:
//! providers do echo keys back ("Incorrect API key provided: sk-…"), whole, cut short
//! (`sk-abc…`), or escaped inside a JSON, HTML or URL-encoded body.
//!
//! The rule: the whole key, and any run of at least [`MIN_RUN`] consecutive characters of it,
//! raw or escaped (JSON, HTML entities, percent-encoding), is masked. Shorter runs are not:
//! too short to identify a key and common enough to mangle ordinary text.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// Replaces a key wherever it appears.
const MASK: &str = "[REDACTED]";

/// The shortest run of a key's characters that is masked on its own.
pub const MIN_RUN: usize = 12;

/// An API key read from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// Every run of [`MIN_RUN`] bytes of the key and of its escaped forms.
    windows: Arc<HashSet<[u8; MIN_RUN]>>,
    /// The key's escaped forms, masked whole (keys shorter than a run).
    forms: Arc<Vec<String>>,
}

impl Secret {
    /// Reads the key from the environment variable `name`. `None` when unset or empty.
    pub fn from_env(name: &str) -> Option<Secret> {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(|value| Secret::new(value.trim()))
    }

    /// Wraps a key given by other means (tests, the simulator's expected key).
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        let forms = escaped_forms(&value);
        let mut windows = HashSet::new();
        for form in &forms {
            for window in form.as_bytes().windows(MIN_RUN) {
                if let Ok(window) = <[u8; MIN_RUN]>::try_from(window) {
                    windows.insert(window);
                }
            }
        }
        Secret {
            value,
            windows: Arc::new(windows),
            forms: Arc::new(forms),
        }
    }

    /// The key itself, for the one place that needs it: the request header.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Removes the key from `text`: the whole key in any of its forms, and every run of at
    /// least [`MIN_RUN`] of its characters.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.value.is_empty() {
            return Cow::Borrowed(text);
        }
        let bytes = text.as_bytes();
        let mut masked = vec![false; bytes.len()];
        let mut any = false;
        for (start, window) in bytes.windows(MIN_RUN).enumerate() {
            if <[u8; MIN_RUN]>::try_from(window).is_ok_and(|w| self.windows.contains(&w)) {
                masked[start..start + MIN_RUN].fill(true);
                any = true;
            }
        }
        for form in self.forms.iter().filter(|form| !form.is_empty()) {
            for (start, _) in text.match_indices(form.as_str()) {
                masked[start..start + form.len()].fill(true);
                any = true;
            }
        }
        if !any {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut in_mask = false;
        for (index, c) in text.char_indices() {
            // A character is masked when any of its bytes is: runs end on byte boundaries.
            if masked[index..index + c.len_utf8()].iter().any(|&m| m) {
                if !in_mask {
                    out.push_str(MASK);
                    in_mask = true;
                }
            } else {
                in_mask = false;
                out.push(c);
            }
        }
        Cow::Owned(out)
    }
}

/// The key as a provider may echo it: raw, JSON-escaped (with and without `\/`), as HTML
/// entities, and percent-encoded in upper and lower case hex.
fn escaped_forms(key: &str) -> Vec<String> {
    let json = serde_json::to_string(key)
        .map(|quoted| quoted[1..quoted.len() - 1].to_owned())
        .unwrap_or_else(|_| key.to_owned());
    let html = key
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let percent = |upper: bool| {
        key.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect::<String>()
    };
    let mut forms = vec![
        key.to_owned(),
        json.replace('/', "\\/"),
        json,
        html.replace('\'', "&#39;"),
        html.replace('\'', "&#x27;"),
        percent(true),
        percent(false),
    ];
    forms.sort_unstable();
    forms.dedup();
    forms
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_key_and_long_runs_are_masked() {
        let key = Secret::new("sk-test-0123456789abcdefghij");
        assert_eq!(
            key.redact("Incorrect API key provided: sk-test-0123456789abcdefghij."),
            "Incorrect API key provided: [REDACTED]."
        );
        let masked = key.redact("key sk-test-012345****cdefghij is wrong");
        assert!(!masked.contains("sk-test-012345"), "{masked}");
        let partial = key.redact("first 20: sk-test-0123456789a (truncated)");
        assert_eq!(partial, "first 20: [REDACTED] (truncated)");
        assert_eq!(
            key.redact("eleven: 23456789abc"),
            "eleven: 23456789abc",
            "a run shorter than 12 characters is not telling"
        );
        assert_eq!(key.redact("nothing here"), "nothing here");
        assert_eq!(format!("{key:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn escaped_echoes_are_masked() {
        let key = Secret::new("AbC/dEf+GhI=jKl/MnO+pQr<sT>u&v'w\"x");
        for echo in [
            r#"{"error":"bad key AbC\/dEf+GhI=jKl\/MnO+pQr<sT>u&v'w\"x"}"#,
            "bad key AbC%2FdEf%2BGhI%3DjKl%2FMnO%2BpQr",
            "bad key abc AbC%2fdEf%2bGhI%3djKl%2f",
            "<p>bad key jKl/MnO+pQr&lt;sT&gt;u&amp;v&#39;w&quot;x</p>",
        ] {
            let masked = key.redact(echo);
            assert!(masked.contains(MASK), "{echo} → {masked}");
            for run in ["GhI=jKl", "GhI%3DjKl", "GhI%3djKl", "pQr&lt;sT"] {
                assert!(!masked.contains(run), "{echo} → {masked}");
            }
        }
    }

    #[test]
    fn short_keys_mask_only_whole() {
        let key = Secret::new("abc");
        assert_eq!(key.redact("abcabc ab"), "[REDACTED] ab");
        let unicode = Secret::new("ключ-секрет-очень-длинный");
        assert_eq!(
            unicode.redact("x секрет-очень-длинн y"),
            "x [REDACTED] y",
            "runs in multi-byte text end on character boundaries"
        );
    }
}
