//! What a simulated model says: enough understanding of a prompt to pass sonde's own probes
//! and users' simple ones, and a token plan with the time each token is due.
//!
//! The answer is chosen, in order: the behaviour's fixed `reply`; the numbers of a prompt
//! that asks to "count from A to B"; the word of a prompt that asks to "reply with the single
//! word: W" (or "reply with exactly: W"); otherwise `output_tokens` words of filler. A token
//! is a word with its leading space, as real tokenizers mostly split English.

use std::sync::LazyLock;
use std::time::Duration;

use rand::rngs::SmallRng;
use regex::Regex;

use super::scenario::Behaviour;

/// Longest count the simulator will produce, to bound a runaway prompt.
const MAX_COUNT: u64 = 10_000;

static COUNT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)count from (\d+) to (\d+)").expect("valid regex"));
static WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)reply with (?:the single word|exactly)\s*:?\s*"?([^\s".]+)"#)
        .expect("valid regex")
});
static PIECE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s*\S+").expect("valid regex"));

const FILLER: &[&str] = &[
    "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "probe",
    "measures", "every", "token", "as", "it", "arrives.",
];

/// The tokens of a whole answer, before any token limit.
pub fn answer_tokens(behaviour: &Behaviour, prompt: &str) -> Vec<String> {
    if let Some(reply) = &behaviour.reply {
        return split(reply);
    }
    if let Some(caps) = COUNT.captures(prompt) {
        let from: u64 = caps[1].parse().unwrap_or(1);
        let to: u64 = caps[2].parse().unwrap_or(from);
        let to = to.min(from.saturating_add(MAX_COUNT));
        return (from..=to)
            .enumerate()
            .map(|(i, n)| {
                if i == 0 {
                    n.to_string()
                } else {
                    format!(" {n}")
                }
            })
            .collect();
    }
    if let Some(caps) = WORD.captures(prompt) {
        return vec![caps[1].to_owned()];
    }
    filler(behaviour.output_tokens as usize, 0)
}

/// `count` words of reasoning.
pub fn reasoning_tokens(count: u32) -> Vec<String> {
    filler(count as usize, 5)
}

fn filler(count: usize, offset: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let word = FILLER[(i + offset) % FILLER.len()];
            if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

fn split(text: &str) -> Vec<String> {
    PIECE
        .find_iter(text)
        .map(|piece| piece.as_str().to_owned())
        .collect()
}

/// One answer's tokens and when each is due, as offsets from the request's arrival.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Reasoning tokens, sent first.
    pub reasoning: Vec<String>,
    /// Answer tokens.
    pub answer: Vec<String>,
    /// Due time of every token, reasoning then answer.
    pub due: Vec<Duration>,
    /// `stop`, or `length` when the token limit cut the answer.
    pub finish_reason: &'static str,
}

impl Plan {
    /// Plans the answer to `prompt` under the limit `max_tokens`, drawing delays from `rng`.
    pub fn new(
        behaviour: &Behaviour,
        prompt: &str,
        max_tokens: Option<u32>,
        rng: &mut SmallRng,
    ) -> Plan {
        let mut reasoning = reasoning_tokens(behaviour.reasoning_tokens);
        let mut answer = answer_tokens(behaviour, prompt);
        let limit = max_tokens.map_or(usize::MAX, |limit| limit as usize);
        let mut finish_reason = "stop";
        if reasoning.len() + answer.len() > limit {
            finish_reason = "length";
            reasoning.truncate(limit);
            answer.truncate(limit - reasoning.len());
        }
        let mut at = ms(behaviour.ttft_ms.sample(rng));
        let mut due = Vec::with_capacity(reasoning.len() + answer.len());
        for i in 0..reasoning.len() + answer.len() {
            if i > 0 {
                at += ms(behaviour.token_ms.sample(rng));
            }
            due.push(at);
        }
        Plan {
            reasoning,
            answer,
            due,
            finish_reason,
        }
    }

    /// Number of tokens in the plan.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// When the last token is due (the first token's time when there is none).
    pub fn end(&self) -> Duration {
        self.due.last().copied().unwrap_or_default()
    }

    /// The whole answer text.
    pub fn answer_text(&self) -> String {
        self.answer.concat()
    }

    /// The whole reasoning text.
    pub fn reasoning_text(&self) -> String {
        self.reasoning.concat()
    }
}

fn ms(value: f64) -> Duration {
    Duration::from_secs_f64(value / 1000.0)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::simulator::scenario::Dist;

    #[test]
    fn answers_the_builtin_probes() {
        let behaviour = Behaviour::default();
        let tokens = answer_tokens(&behaviour, "Count from 1 to 40, separated by spaces.");
        assert_eq!(tokens.len(), 40);
        assert_eq!(
            tokens.concat(),
            (1..=40)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(
            answer_tokens(&behaviour, "Reply with the single word: pong"),
            vec!["pong"]
        );
        assert_eq!(answer_tokens(&behaviour, "Tell me a story").len(), 16);
    }

    #[test]
    fn plan_spaces_tokens_and_honours_the_limit() {
        let behaviour = Behaviour {
            ttft_ms: Dist::Fixed(200.0),
            token_ms: Dist::Fixed(20.0),
            reasoning_tokens: 3,
            ..Behaviour::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let plan = Plan::new(&behaviour, "count from 1 to 5", None, &mut rng);
        assert_eq!(plan.len(), 8);
        assert_eq!(plan.due[0], Duration::from_millis(200));
        assert_eq!(plan.end(), Duration::from_millis(340));
        assert_eq!(plan.finish_reason, "stop");
        let cut = Plan::new(&behaviour, "count from 1 to 5", Some(3), &mut rng);
        assert_eq!(cut.reasoning.len(), 3);
        assert!(cut.answer.is_empty());
        assert_eq!(cut.finish_reason, "length");
    }
}
