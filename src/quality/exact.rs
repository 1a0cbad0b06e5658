//! Exact-answer items: each kind draws its values from the run's seed and computes the one
//! right answer, so no data set is needed and no answer can be memorised.

use chrono::{Days, NaiveDate};
use rand::RngExt;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use super::Kind;

/// Words for the string and list items: common, lowercase, at least five letters, with no
/// letter order that reads as another word backwards.
const WORDS: &[&str] = &[
    "anchor", "basket", "candle", "dragon", "engine", "forest", "garden", "harbor", "island",
    "jacket", "kettle", "lantern", "marble", "needle", "orange", "pencil", "quartz", "rocket",
    "saddle", "timber", "umbrella", "velvet", "window", "yellow", "zipper", "bridge", "castle",
    "falcon", "glacier", "meadow",
];

/// One exact item: its kind, the question, the answer.
pub(super) fn generate(rng: &mut SmallRng) -> (Kind, String, String) {
    match rng.random_range(0..6) {
        0 => arithmetic(rng),
        1 => string(rng),
        2 => list(rng),
        3 => units(rng),
        4 => date(rng),
        _ => sorting(rng),
    }
}

fn arithmetic(rng: &mut SmallRng) -> (Kind, String, String) {
    let (a, b) = (rng.random_range(12..100i64), rng.random_range(12..100i64));
    let c = rng.random_range(2..10i64);
    let d = rng.random_range(1..50i64);
    (
        Kind::Arithmetic,
        format!("Compute ({a} + {b}) × {c} − {d}."),
        ((a + b) * c - d).to_string(),
    )
}

fn string(rng: &mut SmallRng) -> (Kind, String, String) {
    let word = WORDS[rng.random_range(0..WORDS.len())];
    if rng.random_bool(0.5) {
        (
            Kind::String,
            format!("Write the word \"{word}\" backwards."),
            word.chars().rev().collect(),
        )
    } else {
        let mut letters: Vec<char> = word.chars().collect();
        letters.sort_unstable();
        (
            Kind::String,
            format!("Write the letters of the word \"{word}\" in alphabetical order, as one word."),
            letters.into_iter().collect(),
        )
    }
}

fn list(rng: &mut SmallRng) -> (Kind, String, String) {
    let mut words: Vec<&str> = WORDS.to_vec();
    words.shuffle(rng);
    words.truncate(6);
    let pick = rng.random_range(1..5usize);
    const ORDINALS: [&str; 6] = ["first", "second", "third", "fourth", "fifth", "sixth"];
    (
        Kind::List,
        format!(
            "Give the {} word and the last word of this list, separated by a comma and a \
             space: {}.",
            ORDINALS[pick],
            words.join(", ")
        ),
        format!("{}, {}", words[pick], words[5]),
    )
}

fn units(rng: &mut SmallRng) -> (Kind, String, String) {
    match rng.random_range(0..3) {
        0 => {
            let tenths = rng.random_range(11..500u32);
            (
                Kind::Units,
                format!(
                    "Convert {}.{} km to metres. Give the number only.",
                    tenths / 10,
                    tenths % 10
                ),
                (tenths * 100).to_string(),
            )
        }
        1 => {
            let (hours, minutes) = (rng.random_range(1..12u32), rng.random_range(1..60u32));
            (
                Kind::Units,
                format!("How many minutes are {hours} h {minutes} min? Give the number only."),
                (hours * 60 + minutes).to_string(),
            )
        }
        _ => {
            let hundredths = rng.random_range(101..2000u32);
            (
                Kind::Units,
                format!(
                    "Convert {}.{:02} kg to grams. Give the number only.",
                    hundredths / 100,
                    hundredths % 100
                ),
                (hundredths * 10).to_string(),
            )
        }
    }
}

fn date(rng: &mut SmallRng) -> (Kind, String, String) {
    let base = NaiveDate::from_ymd_opt(2020, 1, 1).expect("a valid date")
        + Days::new(rng.random_range(0..4000u64));
    let later = rng.random_range(10..400u64);
    let answer = base + Days::new(later);
    (
        Kind::Date,
        format!(
            "What date is {later} days after {}? Answer as YYYY-MM-DD.",
            base.format("%Y-%m-%d")
        ),
        answer.format("%Y-%m-%d").to_string(),
    )
}

fn sorting(rng: &mut SmallRng) -> (Kind, String, String) {
    let mut numbers: Vec<u32> = Vec::with_capacity(6);
    while numbers.len() < 6 {
        let n = rng.random_range(1..1000u32);
        if !numbers.contains(&n) {
            numbers.push(n);
        }
    }
    let shown = join(&numbers);
    numbers.sort_unstable();
    (
        Kind::Sorting,
        format!(
            "Sort these numbers from smallest to largest, separated by a comma and a space: {shown}."
        ),
        join(&numbers),
    )
}

fn join(numbers: &[u32]) -> String {
    numbers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn item(f: fn(&mut SmallRng) -> (Kind, String, String), seed: u64) -> (String, String) {
        let (_, question, answer) = f(&mut SmallRng::seed_from_u64(seed));
        (question, answer)
    }

    #[test]
    fn every_answer_follows_from_its_question() {
        for seed in 0..50 {
            let (q, a) = item(arithmetic, seed);
            let n: Vec<i64> = q
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(a, ((n[0] + n[1]) * n[2] - n[3]).to_string(), "{q}");
            let (q, a) = item(date, seed);
            let base =
                NaiveDate::parse_from_str(&q.split("after ").nth(1).unwrap()[..10], "%Y-%m-%d")
                    .unwrap_or_else(|err| panic!("{q}: {err}"));
            let days: i64 = q.split(' ').nth(3).unwrap().parse().unwrap();
            let answer = NaiveDate::parse_from_str(&a, "%Y-%m-%d").unwrap();
            assert_eq!((answer - base).num_days(), days, "{q}");
            let (q, a) = item(sorting, seed);
            let mut shown: Vec<u32> = q
                .split(": ")
                .nth(1)
                .unwrap()
                .trim_end_matches('.')
                .split(", ")
                .map(|s| s.parse().unwrap())
                .collect();
            shown.sort_unstable();
            assert_eq!(a, join(&shown));
        }
        for seed in 0..20 {
            let (q, a) = item(units, seed);
            let value: f64 = q
                .split(' ')
                .find_map(|w| w.parse().ok())
                .unwrap_or_default();
            let expected = if q.contains(" h ") {
                let minutes: f64 = q
                    .split(' ')
                    .filter_map(|w| w.parse::<f64>().ok())
                    .nth(1)
                    .unwrap();
                value * 60.0 + minutes
            } else {
                value * 1000.0
            };
            assert_eq!(a, format!("{}", expected.round()), "{q}");
        }
    }
}
