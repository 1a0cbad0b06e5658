//! Turns timestamped events into the timings of one run.
//!
//! This module knows clocks and nothing about providers: adapters turn wire formats into
//! [`Event`]s, the runner stamps each with the arrival [`Instant`] of the bytes that completed
//! it, and the [`Recorder`] applies docs/design.md's measurement rules. Times are kept as whole
//! microseconds since `t0`.
//!
//! Events that arrive in the same read share one instant. Such a batch is one *arrival*: ITL
//! gaps are measured between arrivals, so a provider (or a socket) that coalesces three
//! tokens into one read shows one gap, not two zero gaps that would flatter the median.

use std::time::Instant;

use crate::result::Outcome;

/// The median gap between content arrivals must reach this for a stream to count as
/// streamed. The median, not any one gap: a gateway relaying a finished answer (LiteLLM's
/// `mock_response`, a proxy that buffers upstream) sends its pieces ~0.5 ms apart with the odd
/// longer gap of its own jitter, which is not generation.
const STREAM_MIN_GAP_US: u64 = 1_000;

/// What kind of generated content an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// Visible answer text.
    Answer,
    /// Reasoning ("thinking") text.
    Reasoning,
    /// Tool-call name or arguments.
    ToolCall,
}

/// Token counts a provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: Option<u32>,
    /// Completion tokens, reasoning included.
    pub output_tokens: Option<u32>,
    /// Reasoning tokens, a part of `output_tokens`.
    pub reasoning_tokens: Option<u32>,
}

/// One typed event decoded from a response, the interface between adapters and measurement.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// Generated content. Empty text is not content and is ignored.
    Content {
        /// Answer, reasoning or tool call.
        kind: ContentKind,
        /// The text carried.
        text: &'a str,
    },
    /// Token usage (the last report wins).
    Usage(Usage),
    /// The provider's finish reason.
    Finish(&'a str),
    /// The model id the provider says is answering.
    Model(&'a str),
    /// The name of a called tool (its arguments come as [`ContentKind::ToolCall`] content).
    ToolName(&'a str),
    /// The upstream a gateway says served the request (OpenRouter's `provider`).
    Upstream(&'a str),
    /// An error reported inside an otherwise successful response.
    Error {
        /// The class the adapter gave it.
        outcome: Outcome,
        /// The provider's message.
        message: String,
    },
    /// The format's terminal event (`[DONE]`, `message_stop`, the end of a JSON body).
    Done,
}

/// Accumulates one run's events. Cheap per event: no allocation except answer text and the
/// gap list, both bounded by the body cap.
#[derive(Debug)]
pub struct Recorder {
    t0: Instant,
    ttfb_us: Option<u64>,
    first_content_us: Option<u64>,
    first_answer_us: Option<u64>,
    last_content_us: Option<u64>,
    close_us: Option<u64>,
    gaps_us: Vec<u32>,
    content_events: u32,
    answer: String,
    tool_name: Option<String>,
    tool_arguments: String,
    content_chars: usize,
    usage: Usage,
    finish_reason: Option<String>,
    served_model: Option<String>,
    upstream: Option<String>,
    error: Option<(Outcome, String)>,
}

/// What a run measured, ready to be turned into a result record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// `t0` → response headers.
    pub ttfb_us: Option<u64>,
    /// `t0` → first content of any kind; `None` for a non-streamed request.
    pub ttft_us: Option<u64>,
    /// `t0` → first answer content; `None` for a non-streamed request.
    pub ttfat_us: Option<u64>,
    /// `t0` → last content event.
    pub e2e_us: Option<u64>,
    /// `t0` → terminal event.
    pub close_us: Option<u64>,
    /// Median gap between arrivals.
    pub itl_p50_us: Option<u64>,
    /// Longest gap between arrivals.
    pub itl_max_us: Option<u64>,
    /// Every gap between arrivals.
    pub gaps_us: Vec<u32>,
    /// Content events received.
    pub chunks: u32,
    /// Whether content really streamed.
    pub streamed: bool,
    /// Visible answer text, for validation.
    pub answer: String,
    /// Name of the first tool called, for validation.
    pub tool_name: Option<String>,
    /// Tool-call arguments as streamed (JSON text), for validation.
    pub tool_arguments: String,
    /// Characters of content of every kind, for token estimates.
    pub content_chars: usize,
    /// Reported usage.
    pub usage: Usage,
    /// Finish reason.
    pub finish_reason: Option<String>,
    /// Model id the provider reported.
    pub served_model: Option<String>,
    /// Upstream a gateway reported.
    pub upstream: Option<String>,
    /// Whether the terminal event arrived.
    pub done: bool,
    /// The first error reported inside the response.
    pub error: Option<(Outcome, String)>,
}

impl Recorder {
    /// Starts a run whose `t0` is the given instant.
    pub fn new(t0: Instant) -> Self {
        Recorder {
            t0,
            ttfb_us: None,
            first_content_us: None,
            first_answer_us: None,
            last_content_us: None,
            close_us: None,
            gaps_us: Vec::new(),
            content_events: 0,
            answer: String::new(),
            tool_name: None,
            tool_arguments: String::new(),
            content_chars: 0,
            usage: Usage::default(),
            finish_reason: None,
            served_model: None,
            upstream: None,
            error: None,
        }
    }

    /// Microseconds from `t0` to `at` (zero if `at` is earlier).
    pub fn since_t0(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_micros()).unwrap_or(u64::MAX)
    }

    /// Marks the arrival of the response headers.
    pub fn headers(&mut self, at: Instant) {
        self.ttfb_us = Some(self.since_t0(at));
    }

    /// Whether the terminal event or an error has been seen: nothing after it counts.
    pub fn is_finished(&self) -> bool {
        self.close_us.is_some() || self.error.is_some()
    }

    /// Records one event that arrived at `at`.
    pub fn event(&mut self, at: Instant, event: Event<'_>) {
        self.event_us(self.since_t0(at), event);
    }

    /// Records one event that arrived `us` microseconds after t0 (an arrival clock's stamp,
    /// already counted from the same t0).
    pub fn event_us(&mut self, us: u64, event: Event<'_>) {
        match event {
            Event::Content { kind, text } => self.content(us, kind, text),
            Event::Usage(usage) => merge_usage(&mut self.usage, usage),
            Event::Finish(reason) => {
                if self.finish_reason.as_deref() != Some(reason) {
                    self.finish_reason = Some(reason.to_owned());
                }
            }
            Event::Model(model) => set_once(&mut self.served_model, model),
            Event::ToolName(name) => set_once(&mut self.tool_name, name),
            Event::Upstream(upstream) => set_once(&mut self.upstream, upstream),
            Event::Error { outcome, message } => {
                self.error.get_or_insert((outcome, message));
            }
            Event::Done => {
                self.close_us.get_or_insert(us);
            }
        }
    }

    fn content(&mut self, us: u64, kind: ContentKind, text: &str) {
        if text.is_empty() {
            return;
        }
        self.content_events += 1;
        self.content_chars += text.chars().count();
        match kind {
            ContentKind::Answer => {
                self.answer.push_str(text);
                self.first_answer_us.get_or_insert(us);
            }
            ContentKind::Reasoning => {}
            ContentKind::ToolCall => self.tool_arguments.push_str(text),
        }
        self.first_content_us.get_or_insert(us);
        if let Some(prev) = self.last_content_us
            && us > prev
        {
            let gap = us - prev;
            self.gaps_us.push(u32::try_from(gap).unwrap_or(u32::MAX));
        }
        self.last_content_us = Some(us);
    }

    /// Ends the run. `streaming_request` says whether the request asked for a stream: a
    /// non-streamed answer has no TTFT. `end` is when the body ended, the close time when no
    /// terminal event was seen.
    pub fn finish(self, streaming_request: bool, end: Option<Instant>) -> Measured {
        let end_us = end.map(|at| self.since_t0(at));
        self.finish_us(streaming_request, end_us)
    }

    /// [`Recorder::finish`] with the end in microseconds after t0.
    pub fn finish_us(self, streaming_request: bool, end_us: Option<u64>) -> Measured {
        let (itl_p50_us, itl_max_us) = gap_stats(&self.gaps_us);
        let done = self.close_us.is_some();
        Measured {
            ttfb_us: self.ttfb_us,
            ttft_us: self.first_content_us.filter(|_| streaming_request),
            ttfat_us: self.first_answer_us.filter(|_| streaming_request),
            e2e_us: self.last_content_us,
            close_us: self.close_us.or(end_us),
            itl_p50_us,
            itl_max_us,
            gaps_us: self.gaps_us,
            chunks: self.content_events,
            streamed: itl_p50_us.is_some_and(|median| median >= STREAM_MIN_GAP_US),
            answer: self.answer,
            tool_name: self.tool_name,
            tool_arguments: self.tool_arguments,
            content_chars: self.content_chars,
            usage: self.usage,
            finish_reason: self.finish_reason,
            served_model: self.served_model,
            upstream: self.upstream,
            done,
            error: self.error,
        }
    }
}

/// Keeps the first non-empty value a response reports.
fn set_once(slot: &mut Option<String>, value: &str) {
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value.to_owned());
    }
}

/// Whether a finish reason says the token limit ended the answer, in any format's words
/// (`length`, Anthropic's `max_tokens`, Gemini's `MAX_TOKENS`).
pub fn finish_is_token_limit(reason: &str) -> bool {
    reason.eq_ignore_ascii_case("length") || reason.eq_ignore_ascii_case("max_tokens")
}

/// Keeps each count a later report gives; a usage tail may carry only part of them.
fn merge_usage(into: &mut Usage, from: Usage) {
    into.input_tokens = from.input_tokens.or(into.input_tokens);
    into.output_tokens = from.output_tokens.or(into.output_tokens);
    into.reasoning_tokens = from.reasoning_tokens.or(into.reasoning_tokens);
}

/// Median (nearest rank) and maximum of a run's gaps.
fn gap_stats(gaps: &[u32]) -> (Option<u64>, Option<u64>) {
    if gaps.is_empty() {
        return (None, None);
    }
    let mut sorted = gaps.to_vec();
    sorted.sort_unstable();
    let median = sorted[(sorted.len() - 1) / 2];
    let max = sorted[sorted.len() - 1];
    (Some(u64::from(median)), Some(u64::from(max)))
}

/// Decode speed in tokens per second: (tokens − 1) / (E2E − TTFT), the rate after the first
/// token. Undefined for fewer than two tokens or content that did not stream.
pub fn tokens_per_second(output_tokens: u32, ttft_us: u64, e2e_us: u64) -> Option<f64> {
    if output_tokens < 2 || e2e_us <= ttft_us {
        return None;
    }
    Some(f64::from(output_tokens - 1) / ((e2e_us - ttft_us) as f64 / 1e6))
}

/// sonde's token estimate when a provider reports none: one token per four characters,
/// rounded up, the rule of thumb OpenAI documents for English text.
pub fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn answer(text: &str) -> Event<'_> {
        Event::Content {
            kind: ContentKind::Answer,
            text,
        }
    }

    #[test]
    fn ttft_counts_reasoning_but_ttfat_waits_for_the_answer() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0);
        rec.headers(at(t0, 5));
        rec.event(at(t0, 10), answer(""));
        rec.event(
            at(t0, 100),
            Event::Content {
                kind: ContentKind::Reasoning,
                text: "hmm",
            },
        );
        rec.event(at(t0, 150), answer("pong"));
        rec.event(at(t0, 151), Event::Done);
        let m = rec.finish(true, None);
        assert_eq!(m.ttfb_us, Some(5_000));
        assert_eq!(m.ttft_us, Some(100_000));
        assert_eq!(m.ttfat_us, Some(150_000));
        assert_eq!(m.e2e_us, Some(150_000));
        assert_eq!(m.close_us, Some(151_000));
        assert_eq!(m.chunks, 2);
        assert_eq!(m.gaps_us, vec![50_000]);
        assert!(m.streamed);
        assert_eq!(m.answer, "pong");
    }

    #[test]
    fn events_of_one_read_are_one_arrival() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0);
        for ms in [100, 100, 100, 120, 120, 160] {
            rec.event(at(t0, ms), answer("x"));
        }
        let m = rec.finish(true, None);
        assert_eq!(m.chunks, 6);
        assert_eq!(m.gaps_us, vec![20_000, 40_000]);
        assert_eq!(m.itl_p50_us, Some(20_000));
        assert_eq!(m.itl_max_us, Some(40_000));
    }

    #[test]
    fn one_burst_is_not_streaming() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0);
        rec.event(at(t0, 300), answer("1 2 3"));
        let m = rec.finish(true, None);
        assert!(!m.streamed);
        assert_eq!(m.ttft_us, m.e2e_us);
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0);
        rec.event(t0 + Duration::from_micros(300), answer("1"));
        rec.event(t0 + Duration::from_micros(900), answer("2"));
        assert!(
            !rec.finish(true, None).streamed,
            "600 µs apart is one burst"
        );
    }

    #[test]
    fn a_relayed_finished_answer_is_not_streaming_despite_its_jitter() {
        // LiteLLM relaying a mock_response: pieces ~0.45 ms apart, two of its own hiccups.
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0);
        let mut us = 170_000;
        for piece in 0..37 {
            us += if piece == 10 || piece == 30 {
                2_500
            } else {
                450
            };
            rec.event(t0 + Duration::from_micros(us), answer("1 "));
        }
        let m = rec.finish(true, None);
        assert!(!m.streamed, "median gap {:?}", m.itl_p50_us);
        // A fast provider at ~500 tok/s, one token per event: streamed.
        let mut rec = Recorder::new(t0);
        for token in 0..40u64 {
            rec.event(
                t0 + Duration::from_micros(100_000 + token * 2_000),
                answer("1 "),
            );
        }
        assert!(rec.finish(true, None).streamed);
    }

    #[test]
    fn non_streamed_requests_have_no_ttft() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0);
        rec.event(at(t0, 40), answer("pong"));
        let m = rec.finish(false, Some(at(t0, 41)));
        assert_eq!(m.ttft_us, None);
        assert_eq!(m.ttfat_us, None);
        assert_eq!(m.e2e_us, Some(40_000));
        assert_eq!(m.close_us, Some(41_000));
        assert!(!m.done);
    }

    #[test]
    fn usage_tail_merges_and_first_error_wins() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0);
        rec.event(
            t0,
            Event::Usage(Usage {
                input_tokens: Some(12),
                output_tokens: None,
                reasoning_tokens: None,
            }),
        );
        rec.event(
            t0,
            Event::Usage(Usage {
                input_tokens: None,
                output_tokens: Some(40),
                reasoning_tokens: Some(3),
            }),
        );
        rec.event(
            t0,
            Event::Error {
                outcome: Outcome::RateLimited,
                message: "slow down".into(),
            },
        );
        rec.event(
            t0,
            Event::Error {
                outcome: Outcome::ServerError,
                message: "later".into(),
            },
        );
        assert!(rec.is_finished());
        let m = rec.finish(true, None);
        assert_eq!(
            m.usage,
            Usage {
                input_tokens: Some(12),
                output_tokens: Some(40),
                reasoning_tokens: Some(3)
            }
        );
        assert_eq!(m.error, Some((Outcome::RateLimited, "slow down".into())));
    }

    #[test]
    fn speed_is_the_decode_rate_after_the_first_token() {
        assert_eq!(tokens_per_second(40, 200_000, 980_000), Some(50.0));
        assert_eq!(tokens_per_second(1, 200_000, 980_000), None);
        assert_eq!(tokens_per_second(40, 200_000, 200_000), None);
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(9), 3);
    }
}
