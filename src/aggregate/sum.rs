//! Rollups read as their sum without building it. A window of a fleet's target is its
//! locations' kept closed buckets, merged, and each location's current bucket: adding those
//! together copied and re-packed the whole month's counters for every window at every
//! publish, only for the sum to be walked once for its percentiles and dropped. Held apart
//! instead, the parts are walked together: the same counts (they are integers, so any order
//! gives the same sum), one pass, nothing built.

use std::sync::Arc;

use super::rollup::Scalars;
use super::sparse::{Sparse, SparseRollup};

/// Histograms read as one, their counts added: the counters of their sum, walked in one
/// pass over all of theirs.
#[derive(Debug, Clone, Default)]
pub struct SparseSum<'a> {
    /// The histograms summed, none empty.
    parts: Vec<&'a Sparse>,
}

impl<'a> SparseSum<'a> {
    /// The sum of `parts`.
    pub fn new(parts: impl IntoIterator<Item = &'a Sparse>) -> SparseSum<'a> {
        SparseSum {
            parts: parts.into_iter().filter(|part| !part.is_empty()).collect(),
        }
    }

    /// Samples held.
    pub fn len(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |len, part| len.saturating_add(part.len()))
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Samples at or below `value`'s counter (see [`Sparse::count_up_to`]).
    pub fn count_up_to(&self, value: u64) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |n, part| n.saturating_add(part.count_up_to(value)))
    }

    /// (highest equivalent value, count) of each non-zero counter of the sum, ascending:
    /// the counters of the parts with the same value added. A counter's value names its
    /// counter, so the parts are merged by value.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut heads: Vec<_> = self
            .parts
            .iter()
            .filter_map(|part| {
                let mut walk = part.iter();
                Some((walk.next()?, walk))
            })
            .collect();
        std::iter::from_fn(move || {
            // A window sums a few parts (its kept sum and a current bucket per location),
            // so the smallest head is found by a scan.
            let value = heads.iter().map(|((value, _), _)| *value).min()?;
            let mut count = 0u64;
            heads.retain_mut(|(head, walk)| {
                if head.0 != value {
                    return true;
                }
                count = count.saturating_add(head.1);
                match walk.next() {
                    Some(next) => {
                        *head = next;
                        true
                    }
                    None => false,
                }
            });
            Some((value, count))
        })
    }
}

/// Rollups read as one: a window's parts (kept sums and current buckets, shared with the
/// cache that keeps them), their scalars merged and their distributions walked together
/// when read.
#[derive(Debug, Clone, Default)]
pub struct RollupSum {
    /// The rollups summed, in the order their scalars merge.
    parts: Vec<Arc<SparseRollup>>,
}

impl RollupSum {
    /// The sum of `rollup` alone.
    pub fn of(rollup: Arc<SparseRollup>) -> RollupSum {
        RollupSum {
            parts: vec![rollup],
        }
    }

    /// Adds `rollup` to the sum.
    pub fn push(&mut self, rollup: Arc<SparseRollup>) {
        self.parts.push(rollup);
    }

    /// Adds `other`'s parts to the sum.
    pub fn append(&mut self, other: &RollupSum) {
        self.parts.extend(other.parts.iter().cloned());
    }

    /// No parts.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The parts' scalars merged, in their order.
    pub fn scalars(&self) -> Scalars {
        let mut parts = self.parts.iter();
        let mut scalars = parts
            .next()
            .map(|first| first.scalars.clone())
            .unwrap_or_default();
        for part in parts {
            scalars.merge(&part.scalars);
        }
        scalars
    }

    /// The sum's four distributions: TTFT, E2E, ITL, tokens/s.
    pub fn distributions(&self) -> [SparseSum<'_>; 4] {
        let parts = || self.parts.iter().map(|part| part.distributions());
        [0, 1, 2, 3].map(|at| SparseSum::new(parts().map(|d| d[at])))
    }

    /// The TTFT distribution of the sum.
    pub fn ttft_us(&self) -> SparseSum<'_> {
        SparseSum::new(self.parts.iter().map(|part| &part.ttft_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Percentiles;
    use crate::result::{Outcome, ResultRecord, sample};

    /// A run with a TTFT of `ms`, the rest from it.
    fn run(ms: u64) -> ResultRecord {
        let mut record = sample(Outcome::Ok);
        record.ttft_ms = Some(ms as f64);
        record.e2e_ms = Some(ms as f64 * 3.0);
        record.itl_gaps_us = vec![(ms as u32) * 10, 7, (ms as u32) % 13];
        record.tokens_per_s = Some(1e6 / ms as f64);
        record.cost_usd = Some(ms as f64 * 1e-7);
        record
    }

    /// Rollups of overlapping and apart runs, one of them empty.
    fn parts() -> Vec<SparseRollup> {
        let mut parts = vec![SparseRollup::default(); 4];
        for ms in 1..400u64 {
            parts[(ms % 3) as usize].add_run(&run(ms * 37 % 1_000 + 1), ms as i64);
        }
        parts[1].add_run(&run(5_000_000), 1);
        parts
    }

    #[test]
    fn a_sum_walks_the_counters_of_the_sum_built() {
        let parts = parts();
        let mut built = SparseRollup::default();
        let mut sum = RollupSum::default();
        for part in &parts {
            built.add(part);
            sum.push(Arc::new(part.clone()));
        }
        for (held, whole) in sum.distributions().iter().zip(built.distributions()) {
            assert_eq!(
                held.iter().collect::<Vec<_>>(),
                whole.iter().collect::<Vec<_>>()
            );
            assert_eq!(held.len(), whole.len());
            assert!(!held.is_empty());
            for bound in [0, 1_000, 300_000, u64::MAX] {
                assert_eq!(held.count_up_to(bound), whole.count_up_to(bound));
            }
            assert_eq!(
                Percentiles::of_sum(held, 1000.0),
                Percentiles::of(whole, 1000.0)
            );
        }
        let json = |scalars: &Scalars| serde_json::to_value(scalars).expect("scalars");
        assert_eq!(json(&sum.scalars()), json(&built.scalars));
        assert!(SparseSum::new([&SparseRollup::default().ttft_us]).is_empty());
    }
}
