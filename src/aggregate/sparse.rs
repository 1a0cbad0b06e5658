//! A sparse HdrHistogram: only the counters that are not zero, as (value, count) pairs in
//! value order, each value the highest equivalent of its counter at the rollups' precision
//! (3 significant digits). It holds exactly what the dense histogram holds — recording
//! its values into a dense histogram gives back the same counters — in the space of the
//! values seen rather than the range they span, which is what lets the publisher keep every
//! target's windows in memory between publishes (a 30-day TTFT window holds a few thousand
//! counters out of tens of thousands). Adding and subtracting are merges of two sorted
//! lists.

use std::sync::LazyLock;

use hdrhistogram::Histogram;

use super::rollup::{self, Count, DecodeError, Rollup, Scalars, each_value};
use crate::result::ResultRecord;

/// The shape every rollup histogram shares (3 significant digits from 1): its equivalence
/// ranges are what the sparse form's values and the percentiles' bounds are computed with.
static SHAPE: LazyLock<Histogram<Count>> =
    LazyLock::new(|| Histogram::new(3).expect("3 significant digits is a valid histogram"));

/// The non-zero counters of a histogram, by value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sparse {
    /// (highest equivalent value, count), values ascending, counts above zero.
    counts: Vec<(u64, u64)>,
    /// Total count.
    len: u64,
}

/// Subtracting more than a histogram holds: the subtrahend was not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotContained;

impl Sparse {
    /// The histogram of `counts` (values ascending, counts above zero).
    fn from_counts(counts: Vec<(u64, u64)>) -> Sparse {
        Sparse {
            len: counts.iter().map(|c| c.1).sum(),
            counts,
        }
    }

    /// The non-zero counters of `histogram`.
    pub fn of(histogram: &Histogram<Count>) -> Sparse {
        Sparse::from_counts(
            histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), u64::from(v.count_at_value())))
                .collect(),
        )
    }

    /// The non-zero counters of a stored V2 blob (see `rollup::encode`), read straight from
    /// its encoding — runs of zeros are skipped without building the dense histogram, which
    /// is most of the cost of reading a rollup. A blob of another shape goes through the
    /// dense decoder.
    pub fn decode(bytes: &[u8]) -> Result<Sparse, DecodeError> {
        match v2_counts(bytes) {
            Some(sparse) => Ok(sparse),
            None => Ok(Sparse::of(&rollup::decode(bytes)?)),
        }
    }

    /// Samples held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counters held (the memory it takes is 16 bytes each).
    pub fn counters(&self) -> usize {
        self.counts.len()
    }

    /// (highest equivalent value, count) of each non-zero counter, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().copied()
    }

    /// The largest sample's highest equivalent value (what `Histogram::max` gives).
    pub fn max(&self) -> Option<u64> {
        self.counts.last().map(|c| c.0)
    }

    /// Samples at or below `value`'s counter (what `Histogram::count_between(0, value)`
    /// gives).
    pub fn count_up_to(&self, value: u64) -> u64 {
        let top = highest_equivalent(value);
        self.counts
            .iter()
            .take_while(|c| c.0 <= top)
            .map(|c| c.1)
            .sum()
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Sparse) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other.clone();
            return;
        }
        let mut merged = Vec::with_capacity(self.counts.len() + other.counts.len());
        let (mut mine, mut theirs) = (self.counts.iter().peekable(), other.counts.iter());
        for &(value, count) in &mut theirs {
            while let Some(&&(v, c)) = mine.peek() {
                if v >= value {
                    break;
                }
                merged.push((v, c));
                mine.next();
            }
            match mine.peek() {
                Some(&&(v, c)) if v == value => {
                    merged.push((v, c + count));
                    mine.next();
                }
                _ => merged.push((value, count)),
            }
        }
        merged.extend(mine);
        self.counts = merged;
        self.len += other.len;
    }

    /// Takes `other`'s counts away; when `other` holds a count this does not, nothing is
    /// changed and the error says so.
    pub fn subtract(&mut self, other: &Sparse) -> Result<(), NotContained> {
        *self = self.minus(other)?;
        Ok(())
    }

    /// This histogram less `other`'s counts, unless `other` holds a count this does not.
    fn minus(&self, other: &Sparse) -> Result<Sparse, NotContained> {
        let mut left = self.counts.clone();
        let mut at = 0;
        for &(value, count) in &other.counts {
            while at < left.len() && left[at].0 < value {
                at += 1;
            }
            match left.get_mut(at) {
                Some(slot) if slot.0 == value && slot.1 >= count => slot.1 -= count,
                _ => return Err(NotContained),
            }
        }
        left.retain(|c| c.1 > 0);
        Ok(Sparse::from_counts(left))
    }
}

/// A rollup in sparse form: its scalars and its four distributions' non-zero counters. What
/// windows are summed in (see the module's text).
#[derive(Debug, Clone, Default)]
pub struct SparseRollup {
    /// Counts, spend, capabilities, last ok and last error.
    pub scalars: Scalars,
    /// TTFT in µs.
    pub ttft_us: Sparse,
    /// E2E in µs.
    pub e2e_us: Sparse,
    /// Gaps between content arrivals in µs.
    pub itl_us: Sparse,
    /// Output speed in hundredths of a token per second.
    pub tps: Sparse,
}

impl SparseRollup {
    /// The sparse form of `rollup`.
    pub fn of(rollup: &Rollup) -> SparseRollup {
        let h = &rollup.histograms;
        SparseRollup {
            scalars: rollup.scalars.clone(),
            ttft_us: Sparse::of(&h.ttft_us),
            e2e_us: Sparse::of(&h.e2e_us),
            itl_us: Sparse::of(&h.itl_us),
            tps: Sparse::of(&h.tps),
        }
    }

    /// A stored rollup's parts (see `Rollup::from_parts`), read sparse.
    pub fn from_parts(scalars: Scalars, blobs: [&[u8]; 4]) -> Result<SparseRollup, DecodeError> {
        let [ttft, e2e, itl, tps] = blobs.map(Sparse::decode);
        Ok(SparseRollup {
            scalars,
            ttft_us: ttft?,
            e2e_us: e2e?,
            itl_us: itl?,
            tps: tps?,
        })
    }

    fn parts(&mut self) -> [&mut Sparse; 4] {
        [
            &mut self.ttft_us,
            &mut self.e2e_us,
            &mut self.itl_us,
            &mut self.tps,
        ]
    }

    fn parts_of(other: &SparseRollup) -> [&Sparse; 4] {
        [&other.ttft_us, &other.e2e_us, &other.itl_us, &other.tps]
    }

    /// Adds another bucket's (or location's) runs.
    pub fn add(&mut self, other: &SparseRollup) {
        self.scalars.merge(&other.scalars);
        self.add_distributions(other);
    }

    /// Adds `other`'s distributions only (a window summing its buckets' scalars apart).
    pub fn add_distributions(&mut self, other: &SparseRollup) {
        for (mine, theirs) in self.parts().into_iter().zip(Self::parts_of(other)) {
            mine.add(theirs);
        }
    }

    /// Takes `other`'s distributions away (scalars do not subtract: a window keeps its
    /// buckets' scalars apart and merges them); all four or, when one does not hold
    /// `other`'s counts, none.
    pub fn subtract_distributions(&mut self, other: &SparseRollup) -> Result<(), NotContained> {
        let (ttft, e2e) = (
            self.ttft_us.minus(&other.ttft_us)?,
            self.e2e_us.minus(&other.e2e_us)?,
        );
        let (itl, tps) = (
            self.itl_us.minus(&other.itl_us)?,
            self.tps.minus(&other.tps)?,
        );
        (self.ttft_us, self.e2e_us, self.itl_us, self.tps) = (ttft, e2e, itl, tps);
        Ok(())
    }

    /// Counters held in all four distributions.
    pub fn counters(&self) -> usize {
        Self::parts_of(self).iter().map(|s| s.counters()).sum()
    }
}

/// Runs gathered into a [`SparseRollup`]: their values collected, then sorted once (adding
/// a run's values one at a time to a sorted list would move it for each).
#[derive(Debug, Default)]
pub struct SparseBuilder {
    scalars: Scalars,
    values: [Vec<u64>; 4],
}

impl SparseBuilder {
    /// Counts one run, finished at unix ms `at_ms`, as [`Rollup::add`] does.
    pub fn add(&mut self, record: &ResultRecord, at_ms: i64) {
        self.scalars.add(record, at_ms);
        each_value(record, |distribution, value| {
            self.values[distribution as usize].push(highest_equivalent(value));
        });
    }

    /// No run was added.
    pub fn is_empty(&self) -> bool {
        self.scalars.attempts() == 0
    }

    /// The runs' rollup.
    pub fn finish(self) -> SparseRollup {
        let [ttft, e2e, itl, tps] = self.values.map(|mut values| {
            values.sort_unstable();
            let mut counts: Vec<(u64, u64)> = Vec::new();
            for value in values {
                match counts.last_mut() {
                    Some(last) if last.0 == value => last.1 += 1,
                    _ => counts.push((value, 1)),
                }
            }
            Sparse::from_counts(counts)
        });
        SparseRollup {
            scalars: self.scalars,
            ttft_us: ttft,
            e2e_us: e2e,
            itl_us: itl,
            tps,
        }
    }
}

/// The compressed and plain V2 cookies (HdrHistogram's serialization format).
const V2_DEFLATE: u32 = 0x1c84_9314;
const V2_PLAIN: u32 = 0x1c84_9313;

/// The counters of a deflate V2 blob of the rollups' shape (3 digits from 1), or `None` for
/// any other blob (read by the dense decoder, which also says what is wrong with it).
fn v2_counts(bytes: &[u8]) -> Option<Sparse> {
    use std::io::Read as _;
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    if word(bytes, 0)? != V2_DEFLATE {
        return None;
    }
    let mut plain = Vec::new();
    flate2::read::ZlibDecoder::new(bytes.get(8..)?)
        .read_to_end(&mut plain)
        .ok()?;
    let long = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(plain.get(at..at + 8)?.try_into().ok()?))
    };
    // Header: cookie, payload length, normalizing offset, digits, lowest, highest, ratio.
    let shape = (
        word(&plain, 0)?,
        word(&plain, 8)?,
        word(&plain, 12)?,
        long(16)?,
    );
    if shape != (V2_PLAIN, 0, 3, 1) {
        return None;
    }
    let payload = plain.get(40..40 + word(&plain, 4)? as usize)?;
    let (mut index, mut at) = (0u64, 0usize);
    let mut counts = Vec::new();
    while at < payload.len() {
        let (mut raw, mut shift) = (0u64, 0u32);
        loop {
            let byte = *payload.get(at)?;
            at += 1;
            // The ninth byte of HdrHistogram's varint carries 8 bits.
            if shift == 56 {
                raw |= u64::from(byte) << 56;
                break;
            }
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let count = (raw >> 1) as i64 ^ -((raw & 1) as i64);
        if count < 0 {
            index = index.checked_add(count.unsigned_abs())?;
        } else {
            if count > 0 {
                counts.push((highest_equivalent(value_at(index)?), count as u64));
            }
            index += 1;
        }
    }
    Some(Sparse::from_counts(counts))
}

/// The lowest value of counter `index` at 3 significant digits from 1 (2,048 sub-buckets,
/// the lower half of each bucket after the first shared with the one before).
fn value_at(index: u64) -> Option<u64> {
    const HALF_MAGNITUDE: u32 = 10;
    const HALF: u64 = 1 << HALF_MAGNITUDE;
    let bucket = (index >> HALF_MAGNITUDE).checked_sub(1);
    let sub = (index & (HALF - 1)) + HALF;
    match bucket {
        None => Some(sub - HALF),
        Some(bucket) => sub.checked_shl(u32::try_from(bucket).ok()?),
    }
}

/// The highest value counted with `value` at the rollups' precision.
pub fn highest_equivalent(value: u64) -> u64 {
    SHAPE.highest_equivalent(value)
}

/// The lowest value counted with `value` at the rollups' precision.
pub fn lowest_equivalent(value: u64) -> u64 {
    SHAPE.lowest_equivalent(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::rollup::Histograms;

    fn dense(values: impl IntoIterator<Item = u64>) -> Histogram<Count> {
        let mut h = Histograms::default().ttft_us;
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn it_holds_what_the_dense_histogram_holds_and_adds_and_subtracts_like_it() {
        let a = dense((1..=3000u64).map(|v| v * 331 % 2_000_000 + 1));
        let b = dense((1..=2000u64).map(|v| v * 7919 % 90_000_000 + 1));
        let mut both = a.clone();
        both.add(&b).unwrap();
        let mut sum = Sparse::of(&a);
        sum.add(&Sparse::of(&b));
        assert_eq!(sum, Sparse::of(&both));
        assert_eq!(sum.len(), 5000);
        assert_eq!(sum.max(), Some(both.max()));
        for bound in [1, 1000, 250_000, 1_000_000, 5_000_000, u64::MAX / 4] {
            assert_eq!(
                sum.count_up_to(bound),
                both.count_between(0, bound),
                "{bound}"
            );
        }
        sum.subtract(&Sparse::of(&b)).unwrap();
        assert_eq!(sum, Sparse::of(&a));
        let before = sum.clone();
        assert_eq!(sum.subtract(&Sparse::of(&b)), Err(NotContained));
        assert_eq!(sum, before, "a failed subtraction changes nothing");
    }

    #[test]
    fn a_stored_blob_reads_sparse_as_the_dense_decoder_reads_it() {
        let shapes: [Vec<u64>; 4] = [
            vec![],
            vec![1, 1, 2, 1023, 1024, 2047, 2048, 2049, 4095, 4096],
            (1..=5000u64).map(|v| v * 7919 % 3_000_000 + 1).collect(),
            (1..=300u64)
                .map(|v| v * v * v * 977 % (1 << 45) + 1)
                .collect(),
        ];
        for values in shapes {
            let histogram = dense(values.iter().copied());
            let blob = rollup::encode(&histogram);
            assert!(v2_counts(&blob).is_some() || values.is_empty());
            assert_eq!(Sparse::decode(&blob).unwrap(), Sparse::of(&histogram));
        }
        assert!(Sparse::decode(b"not a histogram").is_err());
    }

    #[test]
    fn percentiles_of_the_sparse_form_are_the_dense_histograms_to_the_last_bit() {
        use crate::aggregate::{LATENCY_BOUNDS_MS, Percentiles};
        let histogram = dense((1..=20_000u64).map(|v| (v * 104_729) % 4_000_000 + 500));
        let figures = Percentiles::of(&Sparse::of(&histogram), 1000.0, &LATENCY_BOUNDS_MS);
        let at = |q: f64| crate::units::round3(histogram.value_at_quantile(q) as f64 / 1000.0);
        assert_eq!(figures.p50, Some(at(0.5)));
        assert_eq!(figures.p90, Some(at(0.9)));
        assert_eq!(figures.p95, Some(at(0.95)));
        assert_eq!(figures.p99, Some(at(0.99)));
        assert_eq!(
            figures.max,
            Some(crate::units::round3(histogram.max() as f64 / 1000.0))
        );
        assert_eq!(figures.count, 20_000);
        assert_eq!(figures.sum, histogram.mean() * 20_000.0 / 1000.0);
        for (bound, below) in &figures.buckets {
            let want: u64 = histogram
                .iter_recorded()
                .filter(|v| {
                    histogram.lowest_equivalent(v.value_iterated_to()) as f64 <= bound * 1000.0
                })
                .map(|v| u64::from(v.count_at_value()))
                .sum();
            assert_eq!(*below, want, "{bound}");
        }
    }

    #[test]
    fn runs_gathered_sparse_equal_the_dense_rollup_of_the_same_runs() {
        let mut dense = Rollup::default();
        let mut sparse = SparseBuilder::default();
        for i in 0..500u32 {
            let mut record = crate::result::sample(crate::result::Outcome::Ok);
            record.ttft_ms = Some(f64::from(i * 37 % 900) + 0.4);
            record.e2e_ms = Some(f64::from(i * 91 % 5000) + 100.0);
            record.itl_gaps_us = vec![i * 13 % 40_000, 7, 0];
            record.tokens_per_s = Some(f64::from(i % 97) * 1.37);
            dense.add(&record, i64::from(i));
            sparse.add(&record, i64::from(i));
        }
        let sparse = sparse.finish();
        let of_dense = SparseRollup::of(&dense);
        assert_eq!(sparse.ttft_us, of_dense.ttft_us);
        assert_eq!(sparse.e2e_us, of_dense.e2e_us);
        assert_eq!(sparse.itl_us, of_dense.itl_us);
        assert_eq!(sparse.tps, of_dense.tps);
        assert_eq!(sparse.scalars.attempts(), 500);
    }
}
