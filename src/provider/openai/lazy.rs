//! The lazy read of an OpenAI stream chunk: the fields measurement reads (the model, the
//! upstream, one choice's answer and reasoning text and finish reason) found in one pass,
//! everything else skipped without being built.
//!
//! Almost every event of a stream is one content delta, and the full decode (serde's
//! visitors over the whole chunk) was 60 % of the client's per-event cost. This reader
//! takes only the plain shape and answers `None` for anything else — a string with an
//! escape, a usage object, a tool call, an error, several choices, a nested value it would
//! have to skip, a repeated key, anything not valid JSON — and the full decode reads that
//! chunk instead. So it never accepts what the full decode refuses, and what it reads is
//! what the full decode would read (`tests` check both on every prefix and mutation of
//! real providers' chunks).

use std::borrow::Cow;

use super::{Choice, Chunk, Delta};

/// Reads `text` when it is a plain chunk, into what the full decode would give; `None`
/// sends it to the full decode.
pub(super) fn read(text: &str) -> Option<Chunk<'_>> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut chunk = Chunk {
        model: None,
        provider: None,
        choices: None,
        usage: None,
        error: None,
    };
    let (mut model, mut provider, mut choices) = (false, false, false);
    reader.object(|reader, key| match key {
        "model" => reader.once(&mut model, &mut chunk.model),
        "provider" => reader.once(&mut provider, &mut chunk.provider),
        "choices" => {
            first(&mut choices)?;
            chunk.choices = Some(reader.choices()?);
            Some(())
        }
        // Present only as null in a plain chunk: a usage tail or an error goes in full.
        "usage" | "error" => reader.null(),
        _ => reader.skip_scalar(),
    })?;
    reader.space();
    (reader.at == reader.bytes.len()).then_some(chunk)
}

/// Marks a key read; `None` when it was read before (a repeated key is an error for the
/// full decode, so it goes there).
fn first(seen: &mut bool) -> Option<()> {
    (!std::mem::replace(seen, true)).then_some(())
}

/// The bytes that end a plain string: its closing quote, or what needs the full decode (an
/// escape, or a control character, which JSON forbids inside a string).
fn ends_plain_text(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// Where the first byte of `bytes` that [`ends_plain_text`] is, eight bytes at a time: the
/// keys and values of a chunk are most of its bytes, and a byte-at-a-time scan was the
/// largest part of reading it.
fn plain_text_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte's high bit is set where it is below `n` (for `n` <= 0x80). A borrow can also
    // mark bytes above a marked one, never below it, so the lowest mark is exact.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let marks = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if marks != 0 {
            return Some(at + marks.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&byte| ends_plain_text(byte))
        .map(|i| at + i)
}

/// A cursor over the chunk's bytes.
struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// Takes `byte` after any whitespace.
    fn take(&mut self, byte: u8) -> Option<()> {
        self.space();
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// Takes `word` (a literal) after any whitespace.
    fn word(&mut self, word: &[u8]) -> Option<()> {
        self.space();
        self.bytes[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// An object: `each` reads the value of every key.
    fn object(&mut self, mut each: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.take(b'{')?;
        if self.take(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.take(b':')?;
            each(self, key)?;
            if self.take(b',').is_none() {
                return self.take(b'}');
            }
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.take(b'"')?;
        let start = self.at;
        let end = start + plain_text_end(&self.bytes[start..])?;
        (self.bytes[end] == b'"').then_some(())?;
        self.at = end + 1;
        // Both ends are ASCII quotes, so the slice is on character boundaries.
        self.text.get(start..end)
    }

    /// `null`.
    fn null(&mut self) -> Option<()> {
        self.word(b"null")
    }

    /// A string or null.
    fn text_or_null(&mut self) -> Option<Option<&'a str>> {
        if self.null().is_some() {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// A string or null read into `into`, unless its key was read before.
    fn once(&mut self, seen: &mut bool, into: &mut Option<Cow<'a, str>>) -> Option<()> {
        first(seen)?;
        *into = self.text_or_null()?.map(Cow::Borrowed);
        Some(())
    }

    /// A value this reader skips: a string, a number, `true`, `false` or `null`.
    fn skip_scalar(&mut self) -> Option<()> {
        self.space();
        match self.bytes.get(self.at)? {
            b'"' => self.string().map(drop),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.null(),
            _ => self.number(),
        }
    }

    /// A number as JSON writes it: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |reader: &mut Self| {
            let start = reader.at;
            while reader.bytes.get(reader.at).is_some_and(u8::is_ascii_digit) {
                reader.at += 1;
            }
            (reader.at > start).then_some(())
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        if self.bytes.get(self.at) == Some(&b'0') {
            self.at += 1;
        } else {
            digits(self)?;
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            digits(self)?;
        }
        Some(())
    }

    /// `choices`: empty, or one choice whose delta holds text only.
    fn choices(&mut self) -> Option<Vec<Choice<'a>>> {
        self.take(b'[')?;
        if self.take(b']').is_some() {
            return Some(Vec::new());
        }
        let mut choice = Choice {
            delta: None,
            message: None,
            finish_reason: None,
        };
        let (mut delta, mut finish) = (false, false);
        self.object(|reader, key| match key {
            "delta" => {
                first(&mut delta)?;
                choice.delta = Some(reader.delta()?);
                Some(())
            }
            "finish_reason" => reader.once(&mut finish, &mut choice.finish_reason),
            // A whole message (not a stream's delta) goes in full.
            "message" => None,
            _ => reader.skip_scalar(),
        })?;
        self.take(b']')?;
        Some(vec![choice])
    }

    /// A choice's `delta` with text, or nulls, in the fields measurement reads.
    fn delta(&mut self) -> Option<Delta<'a>> {
        let mut delta = Delta {
            content: None,
            reasoning_content: None,
            reasoning: None,
            tool_calls: None,
        };
        let mut seen = [false; 4];
        let [content, reasoning_content, reasoning, tool_calls] = &mut seen;
        self.object(|reader, key| match key {
            "content" => reader.once(content, &mut delta.content),
            "reasoning_content" => reader.once(reasoning_content, &mut delta.reasoning_content),
            "reasoning" => reader.once(reasoning, &mut delta.reasoning),
            "tool_calls" => {
                first(tool_calls)?;
                reader.null()
            }
            _ => reader.skip_scalar(),
        })?;
        Some(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::openai::{emit_chunk, parse_chunk};

    /// The events of a chunk as the full decode reads it (`None`: it refuses it).
    fn full(text: &str) -> Option<Vec<String>> {
        let chunk = parse_chunk(text, "test").ok()?;
        Some(events(chunk))
    }

    fn events(chunk: Chunk<'_>) -> Vec<String> {
        let mut out = Vec::new();
        emit_chunk(chunk, &mut |event| out.push(format!("{event:?}")));
        out
    }

    /// Chunks as real providers send them.
    const REAL: [&str; 8] = [
        r#"{"id":"chatcmpl-9x8y7z","object":"chat.completion.chunk","created":1764000000,"model":"deepseek-chat","system_fingerprint":"fp_8802369eaa","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"{"id":"chatcmpl-9x8y7z","object":"chat.completion.chunk","created":1764000000,"model":"gpt-4o-mini","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" word","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"ab12"}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Let me think"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"gen-1","provider":"Together","model":"meta-llama/llama-3.1-8b-instruct","object":"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi","reasoning":null},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"qwen","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":25,"completion_tokens":256,"total_tokens":281}}"#,
        r#"{"id":"c","choices":[{"delta":{"content":"line\nbreak \u00e9"}}]}"#,
        r#"{"error":{"message":"Provider returned error","code":502}}"#,
    ];

    #[test]
    fn what_it_reads_is_what_the_full_decode_reads() {
        let mut read_lazily = 0;
        for text in REAL {
            if let Some(chunk) = read(text) {
                read_lazily += 1;
                assert_eq!(Some(events(chunk)), full(text), "{text}");
            }
        }
        // The plain ones: a role delta, content, reasoning, OpenRouter's, a finish.
        assert_eq!(read_lazily, 5);
    }

    #[test]
    fn it_never_accepts_what_the_full_decode_refuses_nor_reads_it_otherwise() {
        let noise = [
            b'"', b'\\', b',', b'{', b'}', b'[', b']', b':', b'0', b'-', b'.', b'e', b' ', b'n',
            0x01,
        ];
        for text in REAL {
            let bytes = text.as_bytes();
            let mut variants: Vec<Vec<u8>> =
                (0..bytes.len()).map(|cut| bytes[..cut].to_vec()).collect();
            for at in 0..bytes.len() {
                for &byte in &noise {
                    let mut changed = bytes.to_vec();
                    changed[at] = byte;
                    variants.push(changed.clone());
                    changed.insert(at, byte);
                    variants.push(changed);
                }
            }
            for variant in variants {
                let Ok(variant) = std::str::from_utf8(&variant) else {
                    continue;
                };
                if let Some(chunk) = read(variant) {
                    assert_eq!(Some(events(chunk)), full(variant), "{variant}");
                }
            }
        }
    }

    #[test]
    fn the_word_scan_finds_the_byte_a_scan_byte_by_byte_finds() {
        // Every byte value at every offset of strings long enough to span three words,
        // over a background of plain bytes, UTF-8 and the values next to the ones it seeks.
        for background in [b'a', 0xc3, 0x21, 0x23, 0x5b, 0x5d, 0x20, 0x7f, 0xff] {
            for len in 0..24 {
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let mut bytes = vec![background; len];
                        bytes[at] = byte;
                        let naive = bytes.iter().position(|&b| ends_plain_text(b));
                        assert_eq!(plain_text_end(&bytes), naive, "{bytes:?}");
                    }
                }
            }
        }
        // Two marks, where a borrow from the first could mark a byte after it.
        let edges = [
            0x00, 0x01, 0x1f, 0x20, 0x21, b'"', 0x23, b'\\', 0x5d, 0x80, 0xff,
        ];
        for len in 0..20 {
            for (first, second) in (0..len).flat_map(|a| (0..len).map(move |b| (a, b))) {
                for (x, y) in edges
                    .iter()
                    .flat_map(|&x| edges.iter().map(move |&y| (x, y)))
                {
                    let mut bytes = vec![b'a'; len];
                    (bytes[first], bytes[second]) = (x, y);
                    let naive = bytes.iter().position(|&b| ends_plain_text(b));
                    assert_eq!(plain_text_end(&bytes), naive, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn a_repeated_key_or_an_unexpected_value_goes_in_full() {
        for text in [
            r#"{"model":"m","model":"n","choices":[]}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"message":{"content":"whole"}}]}"#,
            r#"{"model":"m","x":{"nested":1},"choices":[]}"#,
            r#"{"model":"m","choices":[]} x"#,
            r#"{"created":01}"#,
            r#"{"model":"m",}"#,
        ] {
            assert!(read(text).is_none(), "{text}");
        }
    }
}
