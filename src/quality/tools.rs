//! Tool-call items: three of four tools, each with a strict JSON Schema, offered together;
//! three items in four ask for a call whose arguments the prompt spells out, the fourth asks
//! something none of the tools answers.

use rand::RngExt;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};

use super::{Expected, Kind};
use crate::probe::Tool;

const CITIES: &[&str] = &[
    "Lisbon", "Osaka", "Nairobi", "Montreal", "Lima", "Oslo", "Hanoi", "Perth", "Dakar", "Quito",
];
const CURRENCIES: &[&str] = &["EUR", "USD", "JPY", "GBP", "CHF", "CAD", "INR", "BRL"];
const AIRPORTS: &[&str] = &[
    "LHR", "JFK", "NRT", "CDG", "SIN", "GRU", "SYD", "JNB", "YVR",
];
const EVENTS: &[&str] = &[
    "Team sync",
    "Dentist",
    "Quarterly review",
    "Yoga class",
    "Budget planning",
    "Call with Ana",
];

/// A generated tool item, before its system message.
pub(super) struct ToolItem {
    pub kind: Kind,
    pub prompt: String,
    pub tools: Vec<Tool>,
    pub expected: Expected,
}

fn tool(name: &str, description: &str, parameters: Value) -> Tool {
    Tool {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters,
        expect_arguments: Map::new(),
    }
}

/// The catalogue: every schema closed (`additionalProperties: false`), every field required.
fn catalogue() -> [Tool; 4] {
    let code = json!({"type": "string", "pattern": "^[A-Z]{3}$"});
    [
        tool(
            "get_weather",
            "Current weather in a city.",
            json!({"type": "object", "additionalProperties": false,
                "required": ["city", "unit"],
                "properties": {
                    "city": {"type": "string", "minLength": 1},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}),
        ),
        tool(
            "convert_currency",
            "Convert an amount of money between currencies (ISO 4217 codes).",
            json!({"type": "object", "additionalProperties": false,
                "required": ["amount", "from", "to"],
                "properties": {"amount": {"type": "number", "exclusiveMinimum": 0},
                    "from": code, "to": code}}),
        ),
        tool(
            "create_event",
            "Add an event to the user's calendar.",
            json!({"type": "object", "additionalProperties": false,
                "required": ["title", "date", "duration_minutes"],
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                    "duration_minutes": {"type": "integer", "minimum": 1}}}),
        ),
        tool(
            "search_flights",
            "Search flights between two airports (IATA codes).",
            json!({"type": "object", "additionalProperties": false,
                "required": ["origin", "destination", "passengers"],
                "properties": {"origin": code, "destination": code,
                    "passengers": {"type": "integer", "minimum": 1, "maximum": 9}}}),
        ),
    ]
}

fn pick<'a>(rng: &mut SmallRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// Two different entries of `from`.
fn pair<'a>(rng: &mut SmallRng, from: &[&'a str]) -> (&'a str, &'a str) {
    let first = rng.random_range(0..from.len());
    let second = (first + rng.random_range(1..from.len())) % from.len();
    (from[first], from[second])
}

/// The request for `name` and the arguments it spells out.
fn request(rng: &mut SmallRng, name: &str) -> (String, Map<String, Value>) {
    let (prompt, arguments) = match name {
        "get_weather" => {
            let (city, unit) = (pick(rng, CITIES), pick(rng, &["celsius", "fahrenheit"]));
            (
                format!("What is the weather in {city} right now? Give the temperature in {unit}."),
                json!({"city": city, "unit": unit}),
            )
        }
        "convert_currency" => {
            let amount = rng.random_range(5..5000u32);
            let (from, to) = pair(rng, CURRENCIES);
            (
                format!("How much is {amount} {from} in {to} today?"),
                json!({"amount": amount, "from": from, "to": to}),
            )
        }
        "create_event" => {
            let title = pick(rng, EVENTS);
            let (month, day) = (rng.random_range(1..13u32), rng.random_range(1..29u32));
            let minutes = 15 * rng.random_range(1..9u32);
            let date = format!("2027-{month:02}-{day:02}");
            (
                format!("Put \"{title}\" in my calendar on {date} for {minutes} minutes."),
                json!({"title": title, "date": date, "duration_minutes": minutes}),
            )
        }
        _ => {
            let (origin, destination) = pair(rng, AIRPORTS);
            let passengers = rng.random_range(1..5u32);
            (
                format!("Find flights from {origin} to {destination} for {passengers} passengers."),
                json!({"origin": origin, "destination": destination, "passengers": passengers}),
            )
        }
    };
    match arguments {
        Value::Object(arguments) => (prompt, arguments),
        _ => (prompt, Map::new()),
    }
}

/// Requests none of the catalogue answers.
const NO_TOOL: &[&str] = &[
    "What is the capital of Canada? Answer in one word.",
    "Translate \"good morning\" into French.",
    "How many legs does a spider have? Answer with the number.",
    "Name the largest planet of the solar system.",
    "What is 17 plus 25?",
    "Spell the word \"necessary\" letter by letter.",
];

/// One tool item.
pub(super) fn generate(rng: &mut SmallRng) -> ToolItem {
    let mut tools: Vec<Tool> = catalogue().into();
    tools.shuffle(rng);
    tools.truncate(3);
    if rng.random_range(0..4) == 0 {
        return ToolItem {
            kind: Kind::NoToolCall,
            prompt: pick(rng, NO_TOOL).to_owned(),
            tools,
            expected: Expected::NoCall,
        };
    }
    let name = tools[rng.random_range(0..tools.len())].name.clone();
    let (prompt, arguments) = request(rng, &name);
    ToolItem {
        kind: Kind::ToolCall,
        prompt,
        tools,
        expected: Expected::Call { name, arguments },
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn every_expected_call_is_valid_under_its_schema() {
        for seed in 0..200 {
            let item = generate(&mut SmallRng::seed_from_u64(seed));
            assert_eq!(item.tools.len(), 3);
            if let Expected::Call { name, arguments } = &item.expected {
                let tool = item.tools.iter().find(|t| &t.name == name).unwrap();
                let validator = jsonschema::validator_for(&tool.parameters).unwrap();
                let arguments = Value::Object(arguments.clone());
                assert!(validator.is_valid(&arguments), "{arguments} for {name}");
            }
        }
    }
}
