//! The quality canary: prompts whose right answer sonde knows, generated per run, and the
//! classification of each answer.
//!
//! Two families, one built-in probe each: `quality` asks exact-answer items (several-step
//! arithmetic, string and list manipulation, unit conversion, date arithmetic, sorting) and
//! `quality-tools` tool-call items (several tools with JSON Schemas offered at once; prompts
//! that must call one, with the arguments spelled out, and prompts that must not call any).
//! An item is a pure function of its family and the run's nonce ([`Item::for_run`]): no data
//! set ships, every target sees a fresh item each run, and anyone holding a run's id can
//! regenerate the item it was asked (the simulator does, to answer right or wrong on purpose).
//!
//! A run's outcome still judges availability: a whole, non-empty answer is `ok` even when it
//! is wrong. Whether it was right is the record's `quality` ([`Judgement`]), counted apart
//! (`aggregate::quality`), so a quantized model is shown as worse, not as down.

mod exact;
mod judge;
mod tools;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use crate::probe::{Message, Role, Tool};

/// Which kind of items a quality probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Items with one exact answer.
    Exact,
    /// Items offering tools: call the right one with the right arguments, or none.
    Tools,
}

impl Family {
    /// Both families.
    pub const ALL: [Family; 2] = [Family::Exact, Family::Tools];

    /// Its name in the config, the feed and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Exact => "exact",
            Family::Tools => "tools",
        }
    }
}

/// What an item asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `(a + b) × c − d`.
    Arithmetic,
    /// A word reversed or its letters sorted.
    String,
    /// Picking items of a list by position.
    List,
    /// Kilometres to metres, hours and minutes to minutes, kilograms to grams.
    Units,
    /// A date some days after another.
    Date,
    /// Numbers sorted ascending.
    Sorting,
    /// A request one offered tool answers: the call and its arguments are checked.
    ToolCall,
    /// A request no offered tool answers: any call is wrong.
    NoToolCall,
}

impl Kind {
    /// Every kind, exact ones first.
    pub const ALL: [Kind; 8] = [
        Kind::Arithmetic,
        Kind::String,
        Kind::List,
        Kind::Units,
        Kind::Date,
        Kind::Sorting,
        Kind::ToolCall,
        Kind::NoToolCall,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Arithmetic => "arithmetic",
            Kind::String => "string",
            Kind::List => "list",
            Kind::Units => "units",
            Kind::Date => "date",
            Kind::Sorting => "sorting",
            Kind::ToolCall => "tool_call",
            Kind::NoToolCall => "no_tool_call",
        }
    }

    /// The family it belongs to.
    pub fn family(self) -> Family {
        match self {
            Kind::ToolCall | Kind::NoToolCall => Family::Tools,
            _ => Family::Exact,
        }
    }
}

/// How one answer to an item was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    /// The expected answer, call or abstention.
    Correct,
    /// An exact item answered with something else.
    WrongAnswer,
    /// No call when a tool was due.
    NoCall,
    /// A call when no tool was due.
    UnexpectedCall,
    /// Arguments that are not a JSON object.
    InvalidJson,
    /// A call to a tool that was not offered.
    UnknownName,
    /// Arguments that break the tool's JSON Schema.
    SchemaMismatch,
    /// A valid call, but to another tool or with other values than the prompt asked for.
    WrongCall,
}

impl Judgement {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Judgement::Correct => "correct",
            Judgement::WrongAnswer => "wrong_answer",
            Judgement::NoCall => "no_call",
            Judgement::UnexpectedCall => "unexpected_call",
            Judgement::InvalidJson => "invalid_json",
            Judgement::UnknownName => "unknown_name",
            Judgement::SchemaMismatch => "schema_mismatch",
            Judgement::WrongCall => "wrong_call",
        }
    }
}

/// What a right answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// This text, compared without case, spaces, a final full stop or quoting.
    Text(String),
    /// A call to this tool with these argument values.
    Call {
        /// The tool.
        name: String,
        /// The values the prompt spelled out.
        arguments: serde_json::Map<String, serde_json::Value>,
    },
    /// An answer in text, no call.
    NoCall,
}

/// One generated item: what is sent and what a right answer is.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it asks.
    pub kind: Kind,
    /// The conversation, the run's nonce in its first message.
    pub messages: Vec<Message>,
    /// The tools offered (tool items only), none of them forced.
    pub tools: Vec<Tool>,
    /// The right answer.
    pub expected: Expected,
}

/// The most characters an item's prompt has, tool schemas included (checked over thousands
/// of items in the tests): what a budget reserves for a quality run.
pub const PROMPT_CHARS_MAX: usize = 2_000;

/// The words that open every quality prompt, before the run's nonce: the simulator finds
/// the item by them.
pub const MARKER: &str = "Quality check";

impl Item {
    /// The item of `family` that a run with id `run_id` asks. The id's 64 bits (a hex nonce;
    /// any other text is hashed) seed the choice of kind and every value in it.
    pub fn for_run(family: Family, run_id: &str) -> Item {
        let seed = u64::from_str_radix(run_id, 16)
            .unwrap_or_else(|_| crate::scheduler::stable_hash(run_id));
        let mut rng = SmallRng::seed_from_u64(seed);
        let (kind, system, user, tools, expected) = match family {
            Family::Exact => {
                let (kind, user, answer) = exact::generate(&mut rng);
                (
                    kind,
                    "Answer with the result only: no words, no explanation, no formatting.",
                    user,
                    Vec::new(),
                    Expected::Text(answer),
                )
            }
            Family::Tools => {
                let item = tools::generate(&mut rng);
                (
                    item.kind,
                    "Call one of the functions provided when the request needs one; otherwise \
                     answer directly in text.",
                    item.prompt,
                    item.tools,
                    item.expected,
                )
            }
        };
        Item {
            kind,
            messages: vec![
                Message {
                    role: Role::System,
                    content: format!("{MARKER} {run_id}. {system}"),
                },
                Message {
                    role: Role::User,
                    content: user,
                },
            ],
            tools,
            expected,
        }
    }

    /// The run id a quality prompt carries after [`MARKER`], if `prompt` is one.
    pub fn run_id_in(prompt: &str) -> Option<&str> {
        let start = prompt.find(MARKER)? + MARKER.len() + 1;
        let rest = prompt.get(start..)?;
        let end = rest.find('.')?;
        Some(&rest[..end])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn an_item_is_a_function_of_its_run_and_items_rotate() {
        let a = Item::for_run(Family::Exact, "00000000000000aa");
        assert_eq!(a, Item::for_run(Family::Exact, "00000000000000aa"));
        assert_eq!(
            Item::run_id_in(&a.messages[0].content),
            Some("00000000000000aa")
        );
        let kinds: BTreeSet<Kind> = (0..200u64)
            .flat_map(|n| {
                let id = format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                Family::ALL.map(|family| Item::for_run(family, &id).kind)
            })
            .collect();
        assert_eq!(kinds.len(), Kind::ALL.len(), "{kinds:?}");
        let prompts: BTreeSet<String> = (0..100u64)
            .map(|n| {
                Item::for_run(Family::Exact, &format!("{n:016x}")).messages[1]
                    .content
                    .clone()
            })
            .collect();
        assert!(prompts.len() >= 95, "{} distinct of 100", prompts.len());
    }

    #[test]
    fn no_prompt_is_longer_than_the_budgeted_maximum() {
        let longest = (0..5_000u64)
            .flat_map(|n| {
                Family::ALL.map(|family| {
                    let item = Item::for_run(family, &format!("{:016x}", n * 7919));
                    item.messages.iter().map(|m| m.content.len()).sum::<usize>()
                        + item
                            .tools
                            .iter()
                            .map(|t| t.parameters.to_string().len() + t.description.len())
                            .sum::<usize>()
                })
            })
            .max()
            .unwrap();
        assert!(longest <= PROMPT_CHARS_MAX, "{longest}");
        assert!(
            longest > PROMPT_CHARS_MAX / 2,
            "the bound is tight: {longest}"
        );
    }
}
