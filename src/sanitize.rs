//! Text from outside made safe to store, print and publish.
//!
//! A provider's error message, model name or finish reason is the provider's to choose, and a
//! hostile or broken one can carry terminal escapes (`ESC [2J` clears a screen, OSC 52 writes
//! the clipboard, OSC 0 retitles the window) or bidirectional overrides that make text read
//! differently from what it says. Every provider-derived string passes [`provider_text`]
//! before it reaches a record: control characters out, then the key masked.

use std::borrow::Cow;

use crate::redact::Secret;

/// Whether `c` has no place in text sonde shows: a C0 control other than tab and newline,
/// DEL, a C1 control, or a bidirectional mark, embedding, override or isolate.
pub fn is_unsafe(c: char) -> bool {
    match c {
        '\t' | '\n' => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{061c}' | '\u{200e}' | '\u{200f}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `text` without the characters [`is_unsafe`] refuses.
pub fn strip(text: &str) -> Cow<'_, str> {
    if text.chars().any(is_unsafe) {
        Cow::Owned(text.chars().filter(|&c| !is_unsafe(c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// Provider-derived `text` as it may be stored: stripped of unsafe characters, then with
/// every trace of `key` masked. Stripping comes first so a key split by control characters
/// is whole again when it is looked for.
pub fn provider_text(key: Option<&Secret>, text: &str) -> String {
    let stripped = strip(text);
    match key {
        Some(key) => key.redact(&stripped).into_owned(),
        None => stripped.into_owned(),
    }
}

/// One line of `text` for a terminal table: unsafe characters out, line breaks and tabs as
/// spaces.
pub fn one_line(text: &str) -> String {
    strip(text)
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect()
}

/// An error and those of its causes it does not already quote, on one line: library errors
/// often carry their cause's text (tokio-postgres keeps the detail only in the cause).
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_overrides_go_and_text_stays() {
        let hostile = "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZXZpbA==\u{7}\u{9b}31m \u{202e}txt.exe\u{7f}\ttab\nline é 模型";
        let clean = strip(hostile);
        assert!(!clean.chars().any(is_unsafe), "{clean:?}");
        assert_eq!(
            clean,
            "ok[2J]0;pwned]52;c;ZXZpbA==31m txt.exe\ttab\nline é 模型"
        );
        assert!(matches!(strip("plain text"), Cow::Borrowed(_)));
        assert_eq!(one_line("a\nb\tc\u{1b}"), "a b c");
    }

    #[test]
    fn a_key_split_by_controls_is_still_masked() {
        let key = Secret::new("sk-live-0123456789abcdef0123");
        let text = "bad key sk-live-01234\u{1b}56789abcdef0123";
        let clean = provider_text(Some(&key), text);
        assert!(!clean.contains("0123456789"), "{clean}");
        assert!(clean.contains("[REDACTED]"), "{clean}");
    }
}
