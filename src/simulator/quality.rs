//! How a simulated model answers sonde's quality items: it regenerates the item from the run
//! id in the prompt (as any holder of the id can) and answers right, or wrong on purpose at
//! the scenario's rates — `accuracy` for exact items, `tool_error_rate` and
//! `tool_error_kind` for tool items — so that a degraded host can be staged.

use rand::RngExt;
use rand::rngs::SmallRng;
use serde_json::{Map, Value};

use super::answer::Ask;
use super::scenario::{Behaviour, ToolErrorKind};
use crate::quality::{Expected, Family, Item};

/// A simulated answer: text, or a call and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Answer {
    /// The tool called, when the answer is a call.
    pub tool: Option<String>,
    /// The answer text, or the call's arguments.
    pub text: String,
}

impl Answer {
    fn text(text: impl Into<String>) -> Answer {
        Answer {
            tool: None,
            text: text.into(),
        }
    }
}

/// The answer to the quality item in `ask`, if it asks one.
pub(super) fn answer(behaviour: &Behaviour, ask: &Ask, rng: &mut SmallRng) -> Option<Answer> {
    let run_id = Item::run_id_in(&ask.prompt)?;
    let family = if ask.tools.is_empty() {
        Family::Exact
    } else {
        Family::Tools
    };
    let item = Item::for_run(family, run_id);
    let draw = |rng: &mut SmallRng, rate: f64| rate > 0.0 && rng.random_bool(rate.min(1.0));
    Some(match &item.expected {
        Expected::Text(expected) => {
            if draw(rng, 1.0 - behaviour.accuracy) {
                Answer::text(wrong(expected))
            } else {
                Answer::text(expected.clone())
            }
        }
        Expected::NoCall => {
            if behaviour.tool_error_kind == ToolErrorKind::UnexpectedCall
                && draw(rng, behaviour.tool_error_rate)
            {
                Answer {
                    tool: item.tools.first().map(|tool| tool.name.clone()),
                    text: "{}".to_owned(),
                }
            } else {
                Answer::text("I can answer that directly: no tool is needed.")
            }
        }
        Expected::Call { name, arguments } => {
            let kind = behaviour.tool_error_kind;
            if kind != ToolErrorKind::UnexpectedCall && draw(rng, behaviour.tool_error_rate) {
                mistaken_call(kind, name, arguments)
            } else {
                Answer {
                    tool: Some(name.clone()),
                    text: Value::Object(arguments.clone()).to_string(),
                }
            }
        }
    })
}

fn mistaken_call(kind: ToolErrorKind, name: &str, arguments: &Map<String, Value>) -> Answer {
    let call = |tool: String, arguments: Map<String, Value>| Answer {
        tool: Some(tool),
        text: Value::Object(arguments).to_string(),
    };
    match kind {
        ToolErrorKind::NoCall => Answer::text("I do not have access to that information."),
        ToolErrorKind::UnknownName => call(format!("{name}_v2"), arguments.clone()),
        ToolErrorKind::InvalidJson => {
            let text = Value::Object(arguments.clone()).to_string();
            Answer {
                tool: Some(name.to_owned()),
                text: text[..text.len() / 2].to_owned(),
            }
        }
        ToolErrorKind::SchemaMismatch | ToolErrorKind::UnexpectedCall => {
            let mut missing = arguments.clone();
            if let Some(first) = missing.keys().next().cloned() {
                missing.remove(&first);
            }
            call(name.to_owned(), missing)
        }
        ToolErrorKind::WrongCall => {
            let mut changed = arguments.clone();
            let number = changed
                .iter()
                .find_map(|(key, value)| value.as_u64().map(|n| (key.clone(), Value::from(n + 1))));
            match number {
                Some((key, value)) => {
                    changed.insert(key, value);
                }
                None => {
                    if let Some(Value::String(city)) = changed.get_mut("city") {
                        city.push_str(" Heights");
                    }
                }
            }
            call(name.to_owned(), changed)
        }
    }
}

/// A plausible wrong answer: a number off by one, a list with its first two items swapped,
/// a word reversed.
fn wrong(expected: &str) -> String {
    if let Ok(number) = expected.parse::<i64>() {
        return (number + 1).to_string();
    }
    let mut parts: Vec<&str> = expected.split(", ").collect();
    if parts.len() > 1 {
        parts.swap(0, 1);
        return parts.join(", ");
    }
    let reversed: String = expected.chars().rev().collect();
    if reversed == expected {
        format!("{expected}s")
    } else {
        reversed
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::probe::Answer as Given;
    use crate::quality::{Judgement, Kind};

    fn ask(family: Family, id: &str) -> Ask {
        let item = Item::for_run(family, id);
        Ask {
            prompt: item
                .messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            tools: item.tools.iter().map(|t| t.name.clone()).collect(),
            ..Ask::default()
        }
    }

    fn judged(behaviour: &Behaviour, family: Family, id: &str, rng: &mut SmallRng) -> Judgement {
        let answer = answer(behaviour, &ask(family, id), rng).unwrap();
        let given = Given {
            text: if answer.tool.is_some() {
                ""
            } else {
                &answer.text
            },
            tool_name: answer.tool.as_deref(),
            tool_arguments: if answer.tool.is_some() {
                &answer.text
            } else {
                ""
            },
        };
        Item::for_run(family, id).judge(&given).0
    }

    #[test]
    fn each_knob_makes_its_mistake_at_its_rate() {
        let mut rng = SmallRng::seed_from_u64(7);
        let ids: Vec<String> = (0..400u64)
            .map(|n| format!("{:016x}", n * 104_729))
            .collect();
        let faithful = Behaviour::default();
        for id in &ids {
            for family in Family::ALL {
                assert_eq!(
                    judged(&faithful, family, id, &mut rng),
                    Judgement::Correct,
                    "{id}"
                );
            }
        }
        let sloppy = Behaviour {
            accuracy: 0.7,
            ..Behaviour::default()
        };
        let right = ids
            .iter()
            .filter(|id| judged(&sloppy, Family::Exact, id, &mut rng) == Judgement::Correct)
            .count();
        assert!((240..=320).contains(&right), "{right} of 400 right at 0.7");
        for (kind, expected) in [
            (ToolErrorKind::SchemaMismatch, Judgement::SchemaMismatch),
            (ToolErrorKind::InvalidJson, Judgement::InvalidJson),
            (ToolErrorKind::UnknownName, Judgement::UnknownName),
            (ToolErrorKind::NoCall, Judgement::NoCall),
            (ToolErrorKind::WrongCall, Judgement::WrongCall),
            (ToolErrorKind::UnexpectedCall, Judgement::UnexpectedCall),
        ] {
            let broken = Behaviour {
                tool_error_rate: 1.0,
                tool_error_kind: kind,
                ..Behaviour::default()
            };
            let applies = |id: &&String| {
                let call_item = Item::for_run(Family::Tools, id).kind == Kind::ToolCall;
                call_item != (kind == ToolErrorKind::UnexpectedCall)
            };
            for id in ids.iter().filter(applies).take(30) {
                assert_eq!(
                    judged(&broken, Family::Tools, id, &mut rng),
                    expected,
                    "{id}"
                );
            }
        }
        assert_eq!(wrong("1250"), "1251");
        assert_eq!(wrong("3, 8, 12"), "8, 3, 12");
        assert_eq!(wrong("anchor"), "rohcna");
    }
}
