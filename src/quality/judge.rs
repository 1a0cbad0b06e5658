//! Judging one answer against its item: exact answers compared after normalising what
//! models vary in harmlessly (case, spaces, a final full stop, quotes or code ticks, digit
//! grouping); tool calls sorted into the classes OpenRouter's Exacto and Moonshot's K2 Vendor
//! Verifier use — no call, unexpected call, invalid JSON, unknown name, schema mismatch — plus
//! a valid call with other values than asked.

use serde_json::Value;

use super::{Expected, Item, Judgement};
use crate::probe::Answer;

/// Longest piece of an answer quoted in a judgement's detail.
const QUOTED: usize = 60;

impl Item {
    /// How `answer` fares; the detail says what was wrong.
    pub fn judge(&self, answer: &Answer<'_>) -> (Judgement, Option<String>) {
        match &self.expected {
            Expected::Text(expected) => match answer.tool_name {
                Some(name) => (
                    Judgement::WrongAnswer,
                    Some(format!("called {name:?} instead of answering {expected:?}")),
                ),
                None if normalise(answer.text, expected) == normalise(expected, expected) => {
                    (Judgement::Correct, None)
                }
                None => (
                    Judgement::WrongAnswer,
                    Some(format!(
                        "expected {expected:?}, answered {:?}",
                        clip(answer.text)
                    )),
                ),
            },
            Expected::NoCall => match answer.tool_name {
                Some(name) => (
                    Judgement::UnexpectedCall,
                    Some(format!("called {name:?} when no tool applies")),
                ),
                None => (Judgement::Correct, None),
            },
            Expected::Call { name, arguments } => self.judge_call(answer, name, arguments),
        }
    }

    fn judge_call(
        &self,
        answer: &Answer<'_>,
        name: &str,
        expected: &serde_json::Map<String, Value>,
    ) -> (Judgement, Option<String>) {
        let Some(called) = answer.tool_name else {
            return (
                Judgement::NoCall,
                Some(format!("answered in text instead of calling {name:?}")),
            );
        };
        let Some(tool) = self.tools.iter().find(|tool| tool.name == called) else {
            return (
                Judgement::UnknownName,
                Some(format!("called {:?}, which was not offered", clip(called))),
            );
        };
        // A call without arguments streams none: an empty object.
        let text = match answer.tool_arguments.trim() {
            "" => "{}",
            text => text,
        };
        let arguments = match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) => {
                return (
                    Judgement::InvalidJson,
                    Some("the arguments are JSON but not an object".to_owned()),
                );
            }
            Err(err) => {
                return (
                    Judgement::InvalidJson,
                    Some(format!("the arguments are not JSON ({err})")),
                );
            }
        };
        match jsonschema::validator_for(&tool.parameters) {
            Ok(validator) => {
                if let Some(error) = validator.iter_errors(&arguments).next() {
                    return (
                        Judgement::SchemaMismatch,
                        Some(format!("{called}: {}", clip(&error.to_string()))),
                    );
                }
            }
            Err(err) => {
                return (
                    Judgement::SchemaMismatch,
                    Some(format!("the schema of {called} does not compile: {err}")),
                );
            }
        }
        if called != name {
            return (
                Judgement::WrongCall,
                Some(format!("called {called:?}, the request needs {name:?}")),
            );
        }
        let differing = expected
            .iter()
            .find(|(key, want)| !same_value(arguments.get(key.as_str()), want));
        match differing {
            Some((key, want)) => (
                Judgement::WrongCall,
                Some(format!(
                    "{called}: {key} is {}, the request says {want}",
                    arguments.get(key.as_str()).unwrap_or(&Value::Null)
                )),
            ),
            None => (Judgement::Correct, None),
        }
    }
}

/// Strings equal without case or surrounding space; numbers equal as numbers.
fn same_value(actual: Option<&Value>, expected: &Value) -> bool {
    match (actual, expected) {
        (Some(Value::String(a)), Value::String(e)) => a.trim().eq_ignore_ascii_case(e.trim()),
        (Some(Value::Number(a)), Value::Number(e)) => a.as_f64() == e.as_f64(),
        (Some(actual), expected) => actual == expected,
        (None, _) => false,
    }
}

/// `text` in the form answers are compared in: lowercase, no whitespace, without wrapping
/// quotes, ticks or asterisks and a final full stop; digit-grouping commas dropped when the
/// expected answer is a number.
fn normalise(text: &str, expected: &str) -> String {
    let numeric = expected.chars().all(|c| c.is_ascii_digit() || c == '-');
    let mut text = text.trim();
    loop {
        let before = text;
        text = text.trim_end_matches('.').trim();
        for wrap in ['"', '\'', '`', '*'] {
            text = text.trim_matches(wrap).trim();
        }
        if text == before {
            break;
        }
    }
    text.chars()
        .filter(|c| !(c.is_whitespace() || numeric && *c == ','))
        .flat_map(char::to_lowercase)
        .collect()
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{Family, Kind};

    fn text(text: &str) -> Answer<'_> {
        Answer {
            text,
            ..Answer::default()
        }
    }

    fn call<'a>(name: &'a str, arguments: &'a str) -> Answer<'a> {
        Answer {
            text: "",
            tool_name: Some(name),
            tool_arguments: arguments,
        }
    }

    #[test]
    fn exact_answers_forgive_form_not_substance() {
        let item = Item {
            kind: Kind::Arithmetic,
            messages: Vec::new(),
            tools: Vec::new(),
            expected: Expected::Text("1250".into()),
        };
        for good in ["1250", " 1,250.", "**1250**", "`1250`", "\"1250\""] {
            assert_eq!(item.judge(&text(good)).0, Judgement::Correct, "{good}");
        }
        let (judgement, detail) = item.judge(&text("1205"));
        assert_eq!(judgement, Judgement::WrongAnswer);
        assert_eq!(detail.unwrap(), "expected \"1250\", answered \"1205\"");
        let list = Item {
            expected: Expected::Text("3, 8, 12".into()),
            ..item
        };
        assert_eq!(list.judge(&text("3,8,12")).0, Judgement::Correct);
        assert_eq!(list.judge(&text("3, 12, 8")).0, Judgement::WrongAnswer);
    }

    #[test]
    fn tool_answers_fall_in_one_class_each() {
        let id = (0..)
            .map(|n: u64| format!("{n:016x}"))
            .find(|id| Item::for_run(Family::Tools, id).kind == Kind::ToolCall)
            .unwrap();
        let item = Item::for_run(Family::Tools, &id);
        let Expected::Call { name, arguments } = &item.expected else {
            panic!("a tool call item")
        };
        let right = Value::Object(arguments.clone()).to_string();
        let judge = |answer: Answer<'_>| item.judge(&answer).0;
        assert_eq!(judge(call(name, &right)), Judgement::Correct);
        assert_eq!(judge(text("It is sunny.")), Judgement::NoCall);
        assert_eq!(judge(call("get_wether", &right)), Judgement::UnknownName);
        assert_eq!(
            judge(call(name, &right[..right.len() - 2])),
            Judgement::InvalidJson
        );
        assert_eq!(judge(call(name, "[1]")), Judgement::InvalidJson);
        let mut missing = arguments.clone();
        let first = missing.keys().next().unwrap().clone();
        missing.remove(&first);
        assert_eq!(
            judge(call(name, &Value::Object(missing).to_string())),
            Judgement::SchemaMismatch
        );
        let mut extra = arguments.clone();
        extra.insert("note".into(), Value::from("x"));
        assert_eq!(
            judge(call(name, &Value::Object(extra).to_string())),
            Judgement::SchemaMismatch
        );
        let other = item.tools.iter().find(|t| &t.name != name).unwrap();
        assert_eq!(
            judge(call(&other.name, "{}")),
            Judgement::SchemaMismatch,
            "a call to another offered tool is checked against that tool's schema"
        );
        let no_tool = (0..)
            .map(|n: u64| Item::for_run(Family::Tools, &format!("{n:016x}")))
            .find(|item| item.kind == Kind::NoToolCall)
            .unwrap();
        assert_eq!(no_tool.judge(&text("Ottawa")).0, Judgement::Correct);
        assert_eq!(
            no_tool.judge(&call(&no_tool.tools[0].name, "{}")).0,
            Judgement::UnexpectedCall
        );
    }
}
