//! The last hour's runs folded per key into minutes and five minutes: what the `5m` and
//! `1h` windows are summed from. `5m` is the current minute and the 4 before it, `1h` the
//! current five minutes and the 11 before them (as `24h` is the current hour and the 23
//! before it), so a publisher keeps a target's, location's and probe's runs as one sparse
//! rollup per minute while they are in the `5m` window and per five minutes after, never as
//! records: 500 targets probed every 10 s put 180,000 runs (~180 MB of records) in an hour,
//! and 8,500 rollups; a fleet of 10 × 1,000 targets probed once a minute 600,000 runs and
//! 170,000 rollups. A cold read folds the runs it reads the same way, one at a time, so a
//! kept publisher and a cold one sum the same buckets in the same order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::window_cache::Key;
use crate::aggregate::sparse::SparseRollup;
use crate::aggregate::sum::RollupSum;
use crate::aggregate::{FIVE_MINUTES_MS, Window, minute_of};
use crate::result::ResultRecord;

/// One key's runs: by minute while in the `5m` window, then by five minutes. Each bucket
/// is shared with the windows read from it until they are dropped (a publish's).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Buckets {
    /// Each minute's runs, by the minute's start.
    minutes: BTreeMap<i64, Arc<SparseRollup>>,
    /// Each five minutes' runs that left the `5m` window, by their start.
    fives: BTreeMap<i64, Arc<SparseRollup>>,
    /// `fives` but the last, added in order, and the start of that last five minutes: the
    /// `1h` window is this, the last five minutes and the `5m` window's minutes, read
    /// together. It changes only when a five minutes closes or leaves the hour, so a minute
    /// folded into the last five minutes costs one addition, and publishes in between none.
    /// `None` when it must be added up again (a five minutes left the hour, or a minute came
    /// into an earlier one).
    prefix: Option<(Option<Arc<SparseRollup>>, i64)>,
    /// Unix ms of the newest run added.
    newest: i64,
}

impl Buckets {
    /// Adds up `prefix` again after `fives` changed (`refold`: not only at their end), as
    /// the left fold over `fives` in order it always is.
    fn fold(&mut self, refold: bool) {
        let Some(&last) = self.fives.keys().next_back() else {
            self.prefix = None;
            return;
        };
        let (mut prefix, from) = match self.prefix.take() {
            Some((prefix, to)) if !refold && to <= last => (prefix, to),
            _ => (None, i64::MIN),
        };
        for rollup in self.fives.range(from..last).map(|(_, r)| r) {
            match &mut prefix {
                Some(prefix) => Arc::make_mut(prefix).add(rollup),
                None => prefix = Some(Arc::clone(rollup)),
            }
        }
        self.prefix = Some((prefix, last));
    }
}

/// Per key, its runs of the last hour in buckets.
#[derive(Debug, Serialize, Deserialize)]
pub struct Minutes {
    by_key: HashMap<Key, Buckets>,
    /// Minutes before this were folded into their five minutes at the last settle.
    settled_from: i64,
}

impl Default for Minutes {
    fn default() -> Minutes {
        Minutes {
            by_key: HashMap::new(),
            settled_from: i64::MIN,
        }
    }
}

impl Minutes {
    /// Counts `record` into its key's minute (runs are added in time order, as the store
    /// returns them, by a cold read and a kept publisher alike); [`Minutes::settle`] then
    /// moves it on.
    pub fn add(&mut self, record: &ResultRecord) {
        let at = record.ts.ms();
        let buckets = self.by_key.entry(Key::of_record(record)).or_default();
        buckets.newest = buckets.newest.max(at);
        let minute = buckets.minutes.entry(minute_of(at)).or_default();
        Arc::make_mut(minute).add_run(record, at);
    }

    /// Whether `record`, added now, is summed as a cold read sums it — floating-point sums
    /// depend on their order —: it is newer than every run of its key kept, and its minute
    /// is not folded into its five minutes yet (or its key has nothing kept). A writer
    /// stores each key's runs in order, so only a run written late is not.
    pub fn takes_in_order(&self, record: &ResultRecord) -> bool {
        let at = record.ts.ms();
        self.by_key
            .get(&Key::of_record(record))
            .is_none_or(|buckets| at > buckets.newest && minute_of(at) >= self.settled_from)
    }

    /// At `now_ms`: folds each minute that left the `5m` window into its five minutes, and
    /// forgets the buckets before the `1h` window.
    pub fn settle(&mut self, now_ms: i64) {
        let (hour_start, minutes_start) = (Window::H1.start(now_ms), Window::M5.start(now_ms));
        self.settled_from = self.settled_from.max(minutes_start);
        self.by_key.retain(|_, buckets| {
            let recent = buckets.minutes.split_off(&minutes_start);
            let (mut changed, mut refold) = (false, false);
            for (minute, rollup) in std::mem::replace(&mut buckets.minutes, recent) {
                if minute >= hour_start {
                    let five = minute - minute.rem_euclid(FIVE_MINUTES_MS);
                    refold |= buckets
                        .fives
                        .last_key_value()
                        .is_some_and(|(&l, _)| five < l);
                    match buckets.fives.entry(five) {
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(rollup);
                        }
                        std::collections::btree_map::Entry::Occupied(mut slot) => {
                            Arc::make_mut(slot.get_mut()).add(&rollup);
                        }
                    }
                    changed = true;
                }
            }
            while buckets
                .fives
                .first_key_value()
                .is_some_and(|(&five, _)| five < hour_start)
            {
                buckets.fives.pop_first();
                (changed, refold) = (true, true);
            }
            if changed {
                buckets.fold(refold);
            }
            !buckets.minutes.is_empty() || !buckets.fives.is_empty()
        });
    }

    /// Per key at `now_ms` (settled at it): the `1h` window's runs, and the `5m` window's
    /// when it has any, as the buckets they sum.
    pub fn windows(&self, now_ms: i64) -> impl Iterator<Item = (&Key, WindowPair)> {
        let minutes_start = Window::M5.start(now_ms);
        self.by_key.iter().filter_map(move |(key, buckets)| {
            debug_assert!(
                buckets
                    .fives
                    .keys()
                    .all(|&five| five >= Window::H1.start(now_ms)),
                "settled at now_ms"
            );
            let mut recent = RollupSum::default();
            for rollup in buckets.minutes.range(minutes_start..).map(|(_, r)| r) {
                recent.push(Arc::clone(rollup));
            }
            let mut hour = RollupSum::default();
            if let Some((Some(prefix), _)) = &buckets.prefix {
                hour.push(Arc::clone(prefix));
            }
            if let Some(last) = buckets.fives.values().next_back() {
                hour.push(Arc::clone(last));
            }
            hour.append(&recent);
            if hour.is_empty() {
                return None;
            }
            Some((key, (hour, (!recent.is_empty()).then_some(recent))))
        })
    }
}

/// A key's `1h` window and, when it has runs, its `5m` window.
pub type WindowPair = (RollupSum, Option<RollupSum>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::sparse::highest_equivalent;
    use crate::result::{Outcome, sample};
    use crate::units::Timestamp;

    fn run(at_ms: i64, probe: &str, ttft_ms: f64) -> ResultRecord {
        let mut record = sample(Outcome::Ok);
        record.ts = Timestamp::from_ms(at_ms);
        record.probe = probe.into();
        record.ttft_ms = Some(ttft_ms);
        record.run_id = format!("{probe}-{at_ms}");
        record
    }

    #[test]
    fn the_windows_begin_at_a_buckets_start_and_hold_each_run_once() {
        // 2 min 30 s into a five minutes.
        let now = 1_800_000_000_000 + 150_000;
        assert_eq!(now % FIVE_MINUTES_MS, 150_000);
        let (hour, five) = (Window::H1.start(now), Window::M5.start(now));
        assert_eq!(now - hour, 11 * FIVE_MINUTES_MS + 150_000);
        assert_eq!(now - five, 4 * 60_000 + 30_000);
        // Just before the hour, its first ms, just before the five minutes, their first
        // ms, and now; five runs in one minute of another probe.
        let runs = [
            (hour - 1, 1.0),
            (hour, 2.0),
            (five - 1, 3.0),
            (five, 4.0),
            (now, 5.0),
        ];
        let fold = |settle_each: bool| {
            let mut minutes = Minutes::default();
            for (at, ttft) in runs {
                minutes.add(&run(at, "ping", ttft));
                if settle_each {
                    minutes.settle(at.max(hour + 1));
                }
            }
            for i in 0..5 {
                minutes.add(&run(five + 1_000 * i, "stream", 10.0 + i as f64));
            }
            minutes.settle(now);
            minutes
        };
        let minutes = fold(false);
        let windows: HashMap<String, WindowPair> = minutes
            .windows(now)
            .map(|(key, pair)| (key.probe.clone(), pair))
            .collect();
        let (h1, m5) = &windows["ping"];
        let m5 = m5.as_ref().unwrap();
        assert_eq!((h1.scalars().attempts(), m5.scalars().attempts()), (4, 2));
        let lowest = |ms: u64| Some(highest_equivalent(ms * 1000));
        let first = |sum: &RollupSum| sum.ttft_us().iter().next().map(|(value, _)| value);
        assert_eq!(first(h1), lowest(2));
        assert_eq!(first(m5), lowest(4));
        let (h1, m5) = &windows["stream"];
        assert_eq!(h1.scalars().attempts(), 5);
        assert_eq!(m5.as_ref().unwrap().ttft_us().len(), 5);
        // Minutes that left the five minutes are kept by five minutes, whenever settled.
        let settled = fold(true);
        let counts = |m: &Minutes| {
            let mut counts: Vec<(String, u64, Option<u64>)> = m
                .windows(now)
                .map(|(k, (h1, m5))| {
                    let m5 = m5.map(|m5| m5.scalars().attempts());
                    (k.probe.clone(), h1.scalars().attempts(), m5)
                })
                .collect();
            counts.sort();
            counts
        };
        assert_eq!(counts(&settled), counts(&minutes));
        let buckets = &minutes.by_key.values().find(|b| !b.fives.is_empty());
        assert!(buckets.is_some_and(|b| b.minutes.keys().all(|&m| m >= five)));

        // 55 minutes later only the newest five minutes' run is left, five more none.
        let mut minutes = minutes;
        let later = now + 55 * 60_000;
        minutes.settle(later);
        let left: Vec<u64> = minutes
            .windows(later)
            .map(|(_, (h1, _))| h1.scalars().attempts())
            .collect();
        assert_eq!(left, [1]);
        minutes.settle(later + FIVE_MINUTES_MS);
        assert_eq!(minutes.windows(later + FIVE_MINUTES_MS).count(), 0);
    }

    #[test]
    fn settled_every_minute_the_windows_are_a_cold_folds_to_the_bit() {
        let start = 1_800_000_000_000 + 7_000;
        let with_cost = |at: i64, i: i64| {
            let mut record = run(at, "stream", 100.0 + (i % 37) as f64);
            // Sums of these differ in their last bits when added in another order.
            record.cost_usd = Some(0.1 + i as f64 * 1e-7 + 1.0 / (i as f64 + 3.0));
            record
        };
        let runs: Vec<ResultRecord> = (0..400).map(|i| with_cost(start + i * 20_000, i)).collect();
        let pairs = |minutes: &Minutes, now: i64| {
            minutes
                .windows(now)
                .map(|(_, (h1, m5))| {
                    let m5 = m5.map(|m5| (m5.scalars().cost_usd.to_bits(), m5.ttft_us().len()));
                    (h1.scalars().cost_usd.to_bits(), h1.ttft_us().len(), m5)
                })
                .collect::<Vec<_>>()
        };
        let mut kept = Minutes::default();
        let mut added = 0;
        for minute in 1..=133 {
            let now = start + minute * 60_000;
            while added < runs.len() && runs[added].ts.ms() <= now {
                kept.add(&runs[added]);
                added += 1;
            }
            kept.settle(now);
            let mut cold = Minutes::default();
            for record in runs[..added]
                .iter()
                .filter(|r| r.ts.ms() >= Window::H1.start(now))
            {
                cold.add(record);
            }
            cold.settle(now);
            assert_eq!(pairs(&kept, now), pairs(&cold, now), "minute {minute}");
        }
    }
}
