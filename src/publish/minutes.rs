//! The last hour's runs folded per key and minute: what the `5m` and `1h` windows are summed
//! from. Both windows begin at a minute's start (the current minute and the 4 or 59 before
//! it, as `24h` is the current hour and the 23 before it), so a publisher keeps each
//! minute's runs of a target, location and probe as one sparse rollup instead of the
//! records: 500 targets probed every 10 s put 180,000 runs (~180 MB of records) in an hour,
//! and 30,000 minute rollups. A cold read folds the runs it reads the same way, one at a
//! time, so a kept publisher and a cold one sum the same minutes.

use std::collections::{BTreeMap, HashMap};

use super::window_cache::Key;
use crate::aggregate::sparse::SparseRollup;
use crate::aggregate::{Window, minute_of};
use crate::result::ResultRecord;

/// Per key, each minute's runs as one rollup, minutes ascending.
#[derive(Debug, Default)]
pub struct Minutes {
    by_key: HashMap<Key, BTreeMap<i64, SparseRollup>>,
}

impl Minutes {
    /// Counts `record` into its key's minute (runs are added in time order, as the store
    /// returns them, by a cold read and a kept publisher alike).
    pub fn add(&mut self, record: &ResultRecord) {
        let at = record.ts.ms();
        let minutes = self.by_key.entry(Key::of_record(record)).or_default();
        minutes
            .entry(minute_of(at))
            .or_default()
            .add_run(record, at);
    }

    /// Forgets the minutes before `start`.
    pub fn drop_before(&mut self, start: i64) {
        self.by_key.retain(|_, minutes| {
            while minutes
                .first_key_value()
                .is_some_and(|(&minute, _)| minute < start)
            {
                minutes.pop_first();
            }
            !minutes.is_empty()
        });
    }

    /// Per key at `now_ms`: the `1h` window's runs, and the `5m` window's when it has any.
    pub fn windows(&self, now_ms: i64) -> impl Iterator<Item = (&Key, WindowPair)> {
        let (hour_start, minutes_start) = (Window::H1.start(now_ms), Window::M5.start(now_ms));
        self.by_key.iter().filter_map(move |(key, minutes)| {
            let (mut before, mut recent): (Option<SparseRollup>, Option<SparseRollup>) =
                (None, None);
            for (&minute, rollup) in minutes.range(hour_start..) {
                let sum = if minute >= minutes_start {
                    &mut recent
                } else {
                    &mut before
                };
                sum.get_or_insert_default().add(rollup);
            }
            if before.is_none() && recent.is_none() {
                return None;
            }
            let mut hour = before.unwrap_or_default();
            if let Some(recent) = &recent {
                hour.add(recent);
            }
            Some((key, (hour, recent)))
        })
    }
}

/// A key's `1h` window and, when it has runs, its `5m` window.
pub type WindowPair = (SparseRollup, Option<SparseRollup>);

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
    fn the_windows_begin_at_a_minutes_start_and_hold_each_run_once() {
        let now = 1_800_000_000_000 + 30_000;
        let (hour, five) = (Window::H1.start(now), Window::M5.start(now));
        assert_eq!(
            (now - hour, now - five),
            (59 * 60_000 + 30_000, 4 * 60_000 + 30_000)
        );
        let mut minutes = Minutes::default();
        // Just before the hour, its first ms, just before the five minutes, their first
        // ms, and now; five runs in one minute; another probe.
        for (at, ttft) in [
            (hour - 1, 1.0),
            (hour, 2.0),
            (five - 1, 3.0),
            (five, 4.0),
            (now, 5.0),
        ] {
            minutes.add(&run(at, "ping", ttft));
        }
        for i in 0..5 {
            minutes.add(&run(five + 1_000 * i, "stream", 10.0 + i as f64));
        }
        let windows: HashMap<String, WindowPair> = minutes
            .windows(now)
            .map(|(key, pair)| (key.probe.clone(), pair))
            .collect();
        let (h1, m5) = &windows["ping"];
        let m5 = m5.as_ref().unwrap();
        assert_eq!((h1.scalars.attempts(), m5.scalars.attempts()), (4, 2));
        let lowest = |ms: u64| Some(highest_equivalent(ms * 1000));
        assert_eq!(h1.ttft_us.value_at_quantile(0.0), lowest(2));
        assert_eq!(m5.ttft_us.value_at_quantile(0.0), lowest(4));
        let (h1, m5) = &windows["stream"];
        assert_eq!(h1.scalars.attempts(), 5);
        assert_eq!(m5.as_ref().unwrap().ttft_us.len(), 5);

        // 59 minutes later only the newest minute's run is left, a minute more none.
        let later = now + 59 * 60_000;
        minutes.drop_before(Window::H1.start(later));
        let left: Vec<u64> = minutes
            .windows(later)
            .map(|(_, (h1, _))| h1.scalars.attempts())
            .collect();
        assert_eq!(left, [1]);
        minutes.drop_before(Window::H1.start(later + 60_000));
        assert_eq!(minutes.windows(later + 60_000).count(), 0);
    }
}
