//! What a simulated model says: enough understanding of a prompt to pass sonde's own probes
//! and users' simple ones, and a token plan with the time each token is due.
//!
//! The answer is chosen, in order: the answer to a quality item (right or wrong at the
//! scenario's rates, see [`quality`]); a call to the first offered tool, with the arguments the prompt
//! spells out (`city set to "Paris"`); a JSON object with the keys the prompt names, when
//! JSON mode is asked (in a code fence when the model "lacks" JSON mode); the behaviour's
//! fixed `reply`; the numbers of a prompt that asks to "count from A to B"; the word of a
//! prompt that asks to "reply with the single word: W"; otherwise `output_tokens` words of
//! filler. A token is a word with its leading space, as real tokenizers mostly split English;
//! tool arguments stream in pieces of four characters.

use std::sync::LazyLock;
use std::time::Duration;

use rand::rngs::SmallRng;
use regex::Regex;

use super::quality;
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
static ARGUMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(\w+) set to "([^"]*)""#).expect("valid regex"));
static KEYS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)keys?\s+((?:"\w+"[\s,]*(?:and\s+)?)+)"#).expect("valid regex")
});
static QUOTED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#""(\w+)""#).expect("valid regex"));

/// What a simulated model is asked, whatever the wire format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// The model asked for.
    pub model: String,
    /// All message text, system included.
    pub prompt: String,
    /// Whether a stream was asked for.
    pub stream: bool,
    /// Whether usage was asked for inside the stream (OpenAI's `include_usage`).
    pub include_usage: bool,
    /// The token limit.
    pub max_tokens: Option<u32>,
    /// The tools the model is offered, by name.
    pub tools: Vec<String>,
    /// Whether JSON mode was asked for.
    pub json_mode: bool,
}

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

/// The arguments a prompt spells out (`name set to "value"`), as JSON text.
fn tool_arguments(prompt: &str) -> String {
    let arguments: serde_json::Map<String, serde_json::Value> = ARGUMENT
        .captures_iter(prompt)
        .map(|caps| (caps[1].to_owned(), serde_json::Value::from(&caps[2])))
        .collect();
    serde_json::Value::Object(arguments).to_string()
}

/// A JSON object with the keys the prompt names, each with a placeholder value.
fn json_answer(prompt: &str) -> String {
    let object: serde_json::Map<String, serde_json::Value> = KEYS
        .captures(prompt)
        .map(|caps| {
            QUOTED
                .captures_iter(&caps[1])
                .map(|key| (key[1].to_owned(), serde_json::Value::from("sample")))
                .collect()
        })
        .unwrap_or_default();
    serde_json::Value::Object(object).to_string()
}

/// Text in pieces of at most four characters, as tool arguments stream.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(4)
        .map(|piece| piece.iter().collect())
        .collect()
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
    /// Answer tokens: text, or the pieces of a tool call's arguments.
    pub answer: Vec<String>,
    /// The tool called, when the answer is a tool call.
    pub tool_name: Option<String>,
    /// Due time of every token, reasoning then answer.
    pub due: Vec<Duration>,
    /// `stop`, or `length` when the token limit cut the answer.
    pub finish_reason: &'static str,
}

impl Plan {
    /// Multiplies every due time by `factor` (a model at its peak hour).
    pub fn stretch(&mut self, factor: f64) {
        if factor > 0.0 && factor != 1.0 {
            for due in &mut self.due {
                *due = due.mul_f64(factor);
            }
        }
    }

    /// Plans the answer to `ask` under its token limit, drawing delays from `rng`.
    pub fn new(behaviour: &Behaviour, ask: &Ask, rng: &mut SmallRng) -> Plan {
        let mut reasoning = reasoning_tokens(behaviour.reasoning_tokens);
        let (tool_name, mut answer) = if let Some(answer) = quality::answer(behaviour, ask, rng) {
            match answer.tool {
                Some(tool) => (Some(tool), pieces(&answer.text)),
                None => (None, split(&answer.text)),
            }
        } else if let Some(tool) = ask.tools.first().filter(|_| behaviour.tools) {
            (Some(tool.clone()), pieces(&tool_arguments(&ask.prompt)))
        } else if ask.json_mode {
            let json = json_answer(&ask.prompt);
            let text = if behaviour.json_mode {
                json
            } else {
                format!("```json\n{json}\n```")
            };
            (None, split(&text))
        } else {
            (None, answer_tokens(behaviour, &ask.prompt))
        };
        let limit = ask.max_tokens.map_or(usize::MAX, |limit| limit as usize);
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
            tool_name,
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
        let mut ask = Ask {
            prompt: "count from 1 to 5".into(),
            ..Ask::default()
        };
        let plan = Plan::new(&behaviour, &ask, &mut rng);
        assert_eq!(plan.len(), 8);
        assert_eq!(plan.due[0], Duration::from_millis(200));
        assert_eq!(plan.end(), Duration::from_millis(340));
        assert_eq!(plan.finish_reason, "stop");
        ask.max_tokens = Some(3);
        let cut = Plan::new(&behaviour, &ask, &mut rng);
        assert_eq!(cut.reasoning.len(), 3);
        assert!(cut.answer.is_empty());
        assert_eq!(cut.finish_reason, "length");
    }

    #[test]
    fn tool_calls_and_json_mode() {
        let mut rng = SmallRng::seed_from_u64(1);
        let ask = Ask {
            prompt: "Call get_weather with city set to \"Paris\".".into(),
            tools: vec!["get_weather".into()],
            ..Ask::default()
        };
        let plan = Plan::new(&Behaviour::default(), &ask, &mut rng);
        assert_eq!(plan.tool_name.as_deref(), Some("get_weather"));
        assert_eq!(plan.answer_text(), r#"{"city":"Paris"}"#);
        let without = Behaviour {
            tools: false,
            ..Behaviour::default()
        };
        assert_eq!(Plan::new(&without, &ask, &mut rng).tool_name, None);
        let ask = Ask {
            prompt: "Return a JSON object with the keys \"city\", \"country\" and \"population\"."
                .into(),
            json_mode: true,
            ..Ask::default()
        };
        let json = Plan::new(&Behaviour::default(), &ask, &mut rng).answer_text();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 3, "{json}");
        let fenced = Behaviour {
            json_mode: false,
            ..Behaviour::default()
        };
        assert!(
            Plan::new(&fenced, &ask, &mut rng)
                .answer_text()
                .starts_with("```json")
        );
    }
}
