//! A sparse HdrHistogram: only the counters that are not zero, in index order, each read as
//! the highest equivalent value of its counter at the rollups' precision (3 significant
//! digits) and its count. It holds exactly what the dense histogram holds — recording its
//! values into a dense histogram gives back the same counters — in the space of the values
//! seen rather than the range they span, which is what lets the publisher keep every
//! target's windows in memory between publishes (a 30-day TTFT window holds a few thousand
//! counters out of tens of thousands) and the writer every target's current buckets.
//!
//! The counters are packed as varints — each the distance of its index from the one after
//! the counter before, then its count — about 2 bytes a counter where a (value, count)
//! pair took 16 and a packed `u64` 8; those bytes are most of what a publisher keeps.
//! Every reading walks them in order, which is all a histogram's readings need: adding and
//! subtracting are merges of two such walks, percentiles one walk. It is read from and
//! written to the V2 blobs the store holds without the dense histogram ever being built.

use std::sync::LazyLock;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::rollup::{self, Count, DecodeError, Rollup, Scalars, each_value};
use crate::result::ResultRecord;

/// The shape every rollup histogram shares (3 significant digits from 1): its equivalence
/// ranges are what the sparse form's values and the percentiles' bounds are computed with.
static SHAPE: LazyLock<Histogram<Count>> =
    LazyLock::new(|| Histogram::new(3).expect("3 significant digits is a valid histogram"));

/// The non-zero counters of a histogram, by value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sparse {
    /// The counters, indexes ascending, counts above zero, packed (see [`Packer`]): one
    /// encoding per histogram, so equal histograms have equal bytes.
    #[serde(with = "serde_bytes")]
    packed: Box<[u8]>,
    /// Total count.
    len: u64,
}

/// One non-zero counter, as a walk over a [`Sparse`] reads it (a rollup histogram has
/// 55,296 counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    /// Its index.
    index: u64,
    /// Its count.
    count: u64,
}

impl Counter {
    /// The most one counter counts: 2.8 × 10¹⁴ samples, past any window's runs; sums
    /// beyond it stay at it.
    const MAX_COUNT: u64 = (1 << 48) - 1;

    /// Counter `index` holding `count` (at most [`Counter::MAX_COUNT`]).
    fn new(index: u64, count: u64) -> Counter {
        debug_assert!(index <= MAX_INDEX);
        Counter {
            index,
            count: count.min(Counter::MAX_COUNT),
        }
    }

    /// Its index.
    fn index(self) -> u64 {
        self.index
    }

    /// Its count.
    fn count(self) -> u64 {
        self.count
    }

    /// The highest value it counts.
    fn value(self) -> u64 {
        highest_equivalent(value_at(self.index()).unwrap_or(MAX_VALUE))
    }

    /// This counter with `count` more.
    fn plus(self, count: u64) -> Counter {
        Counter::new(self.index(), self.count().saturating_add(count))
    }
}

/// Subtracting more than a histogram holds: the subtrahend was not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotContained;

impl Sparse {
    /// The histogram of `values` (each at most [`MAX_VALUE`], in any order).
    fn from_values(values: Vec<u64>) -> Sparse {
        let mut indexes: Vec<u64> = values.into_iter().map(index_of).collect();
        indexes.sort_unstable();
        let mut packer = Packer::with_capacity(2 * indexes.len());
        let mut run: Option<Counter> = None;
        for index in indexes {
            run = match run {
                Some(counter) if counter.index() == index => Some(counter.plus(1)),
                Some(counter) => {
                    packer.push(counter);
                    Some(Counter::new(index, 1))
                }
                None => Some(Counter::new(index, 1)),
            };
        }
        packer.extend(run);
        packer.finish()
    }

    /// The non-zero counters of `histogram`.
    pub fn of(histogram: &Histogram<Count>) -> Sparse {
        let mut packer = Packer::with_capacity(0);
        packer.extend(histogram.iter_recorded().map(|v| {
            let index = index_of(v.value_iterated_to().min(MAX_VALUE));
            Counter::new(index, u64::from(v.count_at_value()))
        }));
        packer.finish()
    }

    /// Its counters, indexes ascending.
    fn counters_iter(&self) -> Counters<'_> {
        Counters {
            packed: &self.packed,
            at: 0,
            next: 0,
        }
    }

    /// The non-zero counters of a stored V2 blob, plain (what [`Sparse::encode`] writes) or
    /// deflate (what stores written before held, and `rollup::encode` writes), read straight
    /// from its encoding — runs of zeros are skipped without building the dense histogram,
    /// which is most of the cost of reading a rollup. A blob of another shape goes through
    /// the dense decoder.
    pub fn decode(bytes: &[u8]) -> Result<Sparse, DecodeError> {
        match v2_counts(bytes) {
            Some(sparse) => Ok(sparse),
            None => Ok(Sparse::of(&rollup::decode(bytes)?)),
        }
    }

    /// This histogram as a plain V2 blob, the format every HdrHistogram implementation
    /// reads: written from the counters, so the dense histogram is never built. Its header
    /// says the histogram tracks up to its largest value; the blob is byte for byte what
    /// HdrHistogram's `V2Serializer` writes for a dense histogram of the same counters and
    /// that bound. Not deflated: a rollup's blob is a few hundred bytes, and inflating one
    /// (its Huffman tables built anew) cost more than the rest of reading it.
    pub fn encode(&self) -> Vec<u8> {
        let high = self.max().unwrap_or(0).max(2);
        let mut plain = Vec::with_capacity(V2_HEADER + 2 * self.packed.len() + 9);
        plain.extend(V2_PLAIN.to_be_bytes());
        plain.extend([0; 4]); // the payload's length, known at the end
        plain.extend(0u32.to_be_bytes()); // normalizing offset
        plain.extend(3u32.to_be_bytes()); // significant digits
        plain.extend(1u64.to_be_bytes()); // lowest discernible value
        plain.extend(high.to_be_bytes());
        plain.extend(1.0f64.to_be_bytes()); // integer to double ratio
        // Counters from the first to the largest value's: a count each, and a run of more
        // than one zero as its negated length (one zero is written as a count).
        let mut next = 0;
        for (index, count) in self.counters_iter().map(|c| (c.index(), c.count())) {
            match index - next {
                0 => {}
                1 => put_varint(&mut plain, 0),
                zeros => put_varint(&mut plain, zig_zag(-(zeros as i64))),
            }
            put_varint(
                &mut plain,
                zig_zag(i64::try_from(count).unwrap_or(i64::MAX)),
            );
            next = index + 1;
        }
        if self.packed.is_empty() {
            put_varint(&mut plain, 0);
        }
        let payload = (plain.len() - V2_HEADER) as u32;
        plain[4..8].copy_from_slice(&payload.to_be_bytes());
        plain
    }

    /// The highest equivalent value at quantile `q` (what `Histogram::value_at_quantile`
    /// gives); `None` when empty.
    pub fn value_at_quantile(&self, q: f64) -> Option<u64> {
        let rank = rank_of(q, self.len);
        let mut cumulative = 0;
        self.counters_iter().find_map(|counter| {
            cumulative += counter.count();
            (cumulative >= rank).then(|| counter.value())
        })
    }

    /// Samples held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counters held.
    pub fn counters(&self) -> usize {
        self.counters_iter().count()
    }

    /// The bytes its counters take.
    pub fn bytes(&self) -> usize {
        self.packed.len()
    }

    /// (highest equivalent value, count) of each non-zero counter, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counters_iter().map(|c| (c.value(), c.count()))
    }

    /// The largest sample's highest equivalent value (what `Histogram::max` gives).
    pub fn max(&self) -> Option<u64> {
        self.counters_iter().last().map(|c| c.value())
    }

    /// Samples at or below `value`'s counter (what `Histogram::count_between(0, value)`
    /// gives).
    pub fn count_up_to(&self, value: u64) -> u64 {
        let top = index_of(value.min(MAX_VALUE));
        self.counters_iter()
            .take_while(|c| c.index() <= top)
            .map(|c| c.count())
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
        // A merged counter's distance and count take no more bytes than the two inputs'.
        let mut merged = Packer::with_capacity(self.packed.len() + other.packed.len());
        let mut mine = self.counters_iter().peekable();
        for theirs in other.counters_iter() {
            while let Some(counter) = mine.next_if(|c| c.index() < theirs.index()) {
                merged.push(counter);
            }
            match mine.next_if(|c| c.index() == theirs.index()) {
                Some(counter) => merged.push(counter.plus(theirs.count())),
                None => merged.push(theirs),
            }
        }
        merged.extend(mine);
        *self = merged.finish();
    }

    /// Takes `other`'s counts away; when `other` holds a count this does not, nothing is
    /// changed and the error says so.
    pub fn subtract(&mut self, other: &Sparse) -> Result<(), NotContained> {
        *self = self.minus(other)?;
        Ok(())
    }

    /// This histogram less `other`'s counts, unless `other` holds a count this does not.
    fn minus(&self, other: &Sparse) -> Result<Sparse, NotContained> {
        let mut left = Packer::with_capacity(self.packed.len());
        let mut mine = self.counters_iter().peekable();
        for theirs in other.counters_iter() {
            while let Some(counter) = mine.next_if(|c| c.index() < theirs.index()) {
                left.push(counter);
            }
            match mine.next_if(|c| c.index() == theirs.index()) {
                Some(counter) if counter.count() >= theirs.count() => {
                    let count = counter.count() - theirs.count();
                    if count > 0 {
                        left.push(Counter::new(counter.index(), count));
                    }
                }
                _ => return Err(NotContained),
            }
        }
        left.extend(mine);
        Ok(left.finish())
    }
}

/// Builds a [`Sparse`] from counters pushed in ascending index order: each is written as
/// the varint of its index less the index after the counter before (0 for neighbours), then
/// the varint of its count.
struct Packer {
    /// The bytes so far.
    packed: Vec<u8>,
    /// The index after the last counter pushed.
    next: u64,
    /// Their counts summed.
    len: u64,
}

impl Packer {
    /// An empty packer with room for `bytes`.
    fn with_capacity(bytes: usize) -> Packer {
        Packer {
            packed: Vec::with_capacity(bytes),
            next: 0,
            len: 0,
        }
    }

    /// Appends `counter` (its index past every one pushed before, its count above zero).
    fn push(&mut self, counter: Counter) {
        debug_assert!(counter.index() >= self.next && counter.count() > 0);
        put_varint(&mut self.packed, counter.index() - self.next);
        put_varint(&mut self.packed, counter.count());
        self.next = counter.index() + 1;
        self.len = self.len.saturating_add(counter.count());
    }

    /// The histogram of the counters pushed, in exactly its bytes.
    fn finish(self) -> Sparse {
        Sparse {
            packed: self.packed.into_boxed_slice(),
            len: self.len,
        }
    }
}

impl Extend<Counter> for Packer {
    fn extend<I: IntoIterator<Item = Counter>>(&mut self, counters: I) {
        for counter in counters {
            self.push(counter);
        }
    }
}

/// A walk over a [`Sparse`]'s counters.
struct Counters<'a> {
    /// The packed counters.
    packed: &'a [u8],
    /// Where the next counter's bytes begin.
    at: usize,
    /// The index after the counter read last.
    next: u64,
}

impl Iterator for Counters<'_> {
    type Item = Counter;

    fn next(&mut self) -> Option<Counter> {
        let distance = get_varint(self.packed, &mut self.at)?;
        let count = get_varint(self.packed, &mut self.at)?;
        let index = self.next + distance;
        self.next = index + 1;
        Some(Counter::new(index, count))
    }
}

/// A rollup in sparse form: its scalars and its four distributions' non-zero counters. What
/// windows are summed in (see the module's text).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

    /// Its four distributions: TTFT, E2E, ITL, tokens/s.
    pub fn distributions(&self) -> [&Sparse; 4] {
        [&self.ttft_us, &self.e2e_us, &self.itl_us, &self.tps]
    }

    /// Counts one run, finished at unix ms `at_ms`: what the writer folds into a bucket.
    pub fn add_run(&mut self, record: &ResultRecord, at_ms: i64) {
        self.scalars.add(record, at_ms);
        let mut values: [Vec<u64>; 4] = Default::default();
        push_values(record, &mut values);
        for (mine, values) in self.parts().into_iter().zip(values) {
            if !values.is_empty() {
                mine.add(&Sparse::from_values(values));
            }
        }
    }

    /// The scalar part for storage, with the TTFT percentiles charts read.
    pub fn stored_scalars(&self) -> Scalars {
        let ms = |q| {
            self.ttft_us
                .value_at_quantile(q)
                .map(|us| us as f64 / 1000.0)
        };
        Scalars {
            ttft_p50_ms: ms(0.5),
            ttft_p95_ms: ms(0.95),
            ..self.scalars.clone()
        }
    }

    /// The four distributions as V2 deflate blobs (TTFT, E2E, ITL, tokens/s).
    pub fn blobs(&self) -> [Vec<u8>; 4] {
        self.distributions().map(Sparse::encode)
    }

    /// Adds another bucket's (or location's) runs.
    pub fn add(&mut self, other: &SparseRollup) {
        self.scalars.merge(&other.scalars);
        self.add_distributions(other);
    }

    /// Adds `other`'s distributions only (a window summing its buckets' scalars apart).
    pub fn add_distributions(&mut self, other: &SparseRollup) {
        for (mine, theirs) in self.parts().into_iter().zip(other.distributions()) {
            mine.add(theirs);
        }
    }

    /// Takes `other`'s distributions away (the scalars' counts subtract apart,
    /// `Scalars::subtract_counts`); all four or, when one does not hold `other`'s counts,
    /// none.
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
        self.distributions().iter().map(|s| s.counters()).sum()
    }

    /// The bytes the four distributions' counters take.
    pub fn bytes(&self) -> usize {
        self.distributions().iter().map(|s| s.bytes()).sum()
    }
}

/// Pushes each value `record` adds to the distributions (see [`each_value`]), at most
/// [`MAX_VALUE`], onto that distribution's list.
fn push_values(record: &ResultRecord, values: &mut [Vec<u64>; 4]) {
    each_value(record, |distribution, value| {
        values[distribution as usize].push(value.min(MAX_VALUE));
    });
}

/// The largest value a rollup histogram tracks (a dense one cannot grow past it); larger
/// ones are counted as it.
const MAX_VALUE: u64 = i64::MAX as u64;

/// The index of the counter of [`MAX_VALUE`], the last a rollup histogram has.
const MAX_INDEX: u64 = 55_295;

/// The count a quantile `q` of `len` samples reaches (at least the first sample), as
/// `Histogram::value_at_quantile` counts.
pub(super) fn rank_of(q: f64, len: u64) -> u64 {
    ((q.min(1.0) * len as f64).ceil() as u64).max(1)
}

/// The compressed and plain V2 cookies (HdrHistogram's serialization format), and the plain
/// header's length.
const V2_DEFLATE: u32 = 0x1c84_9314;
const V2_PLAIN: u32 = 0x1c84_9313;
const V2_HEADER: usize = 40;

/// HdrHistogram's zig-zag of a count or a negated run of zeros.
fn zig_zag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// HdrHistogram's varint (LEB128 whose ninth byte carries all its 8 bits): what the V2
/// blobs hold and a [`Sparse`] packs its counters in.
#[inline]
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    for _ in 0..8 {
        if value < 0x80 {
            out.push(value as u8);
            return;
        }
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The varint [`put_varint`] wrote at `*at` in `bytes`, `*at` moved past it; `None` when
/// the bytes end first.
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    // Most distances and counts of a histogram are below 128: one byte, read first.
    let first = *bytes.get(*at)?;
    *at += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    let mut value = u64::from(first & 0x7f);
    for shift in (7..56).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    let byte = *bytes.get(*at)?;
    *at += 1;
    Some(value | u64::from(byte) << 56)
}

/// The counters of a plain or deflate V2 blob of the rollups' shape (3 digits from 1), or
/// `None` for any other blob (read by the dense decoder, which also says what is wrong
/// with it).
fn v2_counts(bytes: &[u8]) -> Option<Sparse> {
    match u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) {
        V2_PLAIN => plain_counts(bytes),
        V2_DEFLATE => inflated(bytes.get(8..)?, plain_counts)?,
        _ => None,
    }
}

/// The most a rollup's blob inflates to: its counters to the largest trackable value, nine
/// bytes each, are far less; a blob inflating past it is not a rollup's.
const MAX_PLAIN: usize = 4 << 20;

/// Hands `read` the inflated bytes of a zlib stream (`None` when it does not inflate
/// whole within [`MAX_PLAIN`]). One decompressor and buffer per thread are reset and
/// reused: making a decompressor allocates and fills its tables, which cost more than
/// inflating a rollup's few hundred bytes.
fn inflated<R>(compressed: &[u8], read: impl FnOnce(&[u8]) -> R) -> Option<R> {
    use flate2::{Decompress, FlushDecompress, Status};
    thread_local! {
        static INFLATER: std::cell::RefCell<(Decompress, Vec<u8>)> =
            std::cell::RefCell::new((Decompress::new(true), Vec::new()));
    }
    INFLATER.with_borrow_mut(|(inflater, plain)| {
        inflater.reset(true);
        plain.clear();
        loop {
            plain.reserve(compressed.len() * 4 + 64);
            let taken = inflater.total_in() as usize;
            let before = (taken, plain.len());
            // Not `Finish`: with it, a first call short of room fails for good (miniz).
            match inflater.decompress_vec(&compressed[taken..], plain, FlushDecompress::None) {
                Ok(Status::StreamEnd) => return Some(read(plain)),
                Ok(_) if (inflater.total_in() as usize, plain.len()) == before => return None,
                Ok(_) if plain.len() > MAX_PLAIN => return None,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
}

/// The counters of a plain V2 blob of the rollups' shape, or `None`.
fn plain_counts(plain: &[u8]) -> Option<Sparse> {
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let long = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(plain.get(at..at + 8)?.try_into().ok()?))
    };
    // Header: cookie, payload length, normalizing offset, digits, lowest, highest, ratio.
    let shape = (
        word(plain, 0)?,
        word(plain, 8)?,
        word(plain, 12)?,
        long(16)?,
    );
    if shape != (V2_PLAIN, 0, 3, 1) {
        return None;
    }
    let payload = plain.get(40..40 + word(plain, 4)? as usize)?;
    let (mut index, mut at) = (0u64, 0usize);
    let mut packer = Packer::with_capacity(payload.len());
    while at < payload.len() {
        let raw = get_varint(payload, &mut at)?;
        let count = (raw >> 1) as i64 ^ -((raw & 1) as i64);
        if count < 0 {
            index = index.checked_add(count.unsigned_abs())?;
        } else {
            if count > 0 {
                if index > MAX_INDEX || count as u64 > Counter::MAX_COUNT {
                    return None;
                }
                packer.push(Counter::new(index, count as u64));
            }
            index += 1;
        }
    }
    Some(packer.finish())
}

/// The index of the counter holding `value` at 3 significant digits from 1: the inverse of
/// [`value_at`].
fn index_of(value: u64) -> u64 {
    // Bucket 0 counts 0..2048 one by one; bucket b ≥ 1 the upper half of 2,048 sub-buckets
    // of 2^b each.
    let bucket = (64 - (value | 2047).leading_zeros()).saturating_sub(11);
    ((u64::from(bucket) + 1) << 10) + (value >> bucket) - 1024
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::rollup::Histograms;
    use hdrhistogram::serialization::{Serializer as _, V2Serializer};

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

    /// Value sets of every shape: empty, one, the first buckets' edges, dense, far apart.
    fn shapes() -> [Vec<u64>; 5] {
        [
            vec![],
            vec![7],
            vec![1, 1, 2, 1023, 1024, 2047, 2048, 2049, 4095, 4096],
            (1..=5000u64).map(|v| v * 7919 % 3_000_000 + 1).collect(),
            (1..=300u64)
                .map(|v| v * v * v * 977 % (1 << 45) + 1)
                .collect(),
        ]
    }

    #[test]
    fn a_stored_blob_reads_sparse_as_the_dense_decoder_reads_it() {
        for values in shapes() {
            let histogram = dense(values.iter().copied());
            let blob = rollup::encode(&histogram);
            assert!(v2_counts(&blob).is_some() || values.is_empty());
            assert_eq!(Sparse::decode(&blob).unwrap(), Sparse::of(&histogram));
        }
        assert!(Sparse::decode(b"not a histogram").is_err());
        // A cut or damaged stream is not read (the dense decoder then has its say), and the
        // reused decompressor reads the next blob whole all the same.
        let blob = rollup::encode(&dense([5_000, 5_000, 90_000]));
        for cut in 9..blob.len() {
            assert!(v2_counts(&blob[..cut]).is_none(), "cut at {cut}");
        }
        let mut damaged = blob.clone();
        damaged[12] ^= 0xff;
        assert!(v2_counts(&damaged).is_none());
        assert_eq!(
            Sparse::decode(&blob).unwrap(),
            Sparse::of(&dense([5_000, 5_000, 90_000]))
        );
    }

    #[test]
    fn a_counter_keeps_its_index_and_stops_at_its_largest_count() {
        let counter = Counter::new(MAX_INDEX, 7);
        assert_eq!((counter.index(), counter.count()), (MAX_INDEX, 7));
        assert_eq!(counter.value(), highest_equivalent(MAX_VALUE));
        let full = Counter::new(3, Counter::MAX_COUNT).plus(10);
        assert_eq!((full.index(), full.count()), (3, Counter::MAX_COUNT));
    }

    #[test]
    fn counters_pack_in_a_few_bytes_and_saturate_when_added() {
        let spread = Sparse::of(&dense(
            (1..=20_000u64).map(|v| v * 104_729 % 4_000_000 + 500),
        ));
        assert!(spread.counters() > 5_000);
        assert!(
            spread.bytes() <= 3 * spread.counters(),
            "{} bytes for {} counters",
            spread.bytes(),
            spread.counters()
        );
        let mut packer = Packer::with_capacity(0);
        packer.push(Counter::new(3, Counter::MAX_COUNT));
        let mut full = packer.finish();
        full.add(&Sparse::from_values(vec![3, 3, 9_000]));
        let counts: Vec<u64> = full.iter().map(|(_, count)| count).collect();
        assert_eq!(counts, [Counter::MAX_COUNT, 1]);
        assert_eq!(
            full.subtract(&Sparse::from_values(vec![9_000, 9_000])),
            Err(NotContained)
        );
    }

    #[test]
    fn counter_indexes_invert_their_lowest_values() {
        for index in (0..4096).chain((4096..=index_of(MAX_VALUE)).step_by(97)) {
            let value = value_at(index).unwrap();
            assert_eq!(index_of(value), index, "{value}");
            assert_eq!(index_of(highest_equivalent(value)), index, "{value}");
        }
        assert_eq!(index_of(MAX_VALUE), index_of(highest_equivalent(MAX_VALUE)));
        assert_eq!(index_of(MAX_VALUE), MAX_INDEX);
    }

    #[test]
    fn a_sparse_blob_is_byte_for_byte_the_dense_serializers() {
        for values in shapes() {
            let sparse =
                Sparse::from_values(values.iter().map(|&v| highest_equivalent(v)).collect());
            // The dense histogram the blob describes: tracking up to its largest value.
            let high = sparse.max().unwrap_or(0).max(2);
            let mut histogram = Histogram::<Count>::new_with_bounds(1, high, 3).unwrap();
            for &v in &values {
                histogram.record(v).unwrap();
            }
            let blob = sparse.encode();
            let mut plain = Vec::new();
            V2Serializer::new()
                .serialize(&histogram, &mut plain)
                .unwrap();
            assert_eq!(blob, plain, "{values:?}");
            assert_eq!(Sparse::decode(&blob).unwrap(), sparse);
            assert_eq!(Sparse::of(&rollup::decode(&blob).unwrap()), sparse);
        }
    }

    #[test]
    fn runs_folded_sparse_count_what_the_dense_rollup_counts() {
        let mut dense = Rollup::default();
        let mut folded = SparseRollup::default();
        for i in 0..300u32 {
            let mut record = crate::result::sample(crate::result::Outcome::Ok);
            record.ttft_ms = Some(f64::from(i * 37 % 900) + 0.4);
            record.e2e_ms = Some(f64::from(i * 91 % 5000) + 100.0);
            record.itl_gaps_us = vec![i * 13 % 40_000, 7, 0, 7];
            record.tokens_per_s = Some(f64::from(i % 97) * 1.37);
            dense.add(&record, i64::from(i));
            folded.add_run(&record, i64::from(i));
        }
        let of_dense = SparseRollup::of(&dense);
        for (sparse, want) in folded
            .distributions()
            .into_iter()
            .zip(of_dense.distributions())
        {
            assert_eq!(sparse, want);
        }
        let scalars = folded.stored_scalars();
        let at = |q| Some(dense.histograms.ttft_us.value_at_quantile(q) as f64 / 1000.0);
        assert_eq!(scalars.ttft_p50_ms, at(0.5));
        assert_eq!(scalars.ttft_p95_ms, at(0.95));
        assert_eq!(scalars.attempts(), 300);
        // A value past what any histogram tracks is counted at the top, not lost.
        let mut huge = crate::result::sample(crate::result::Outcome::Ok);
        huge.ttft_ms = Some(f64::MAX);
        folded.add_run(&huge, 0);
        assert_eq!(folded.ttft_us.len(), 301);
        assert_eq!(folded.ttft_us.max(), Some(highest_equivalent(MAX_VALUE)));
        assert_eq!(
            Sparse::decode(&folded.ttft_us.encode()).unwrap(),
            folded.ttft_us
        );
    }

    #[test]
    fn percentiles_of_the_sparse_form_are_the_dense_histograms_to_the_last_bit() {
        use crate::aggregate::Percentiles;
        let histogram = dense((1..=20_000u64).map(|v| (v * 104_729) % 4_000_000 + 500));
        let figures = Percentiles::of(&Sparse::of(&histogram), 1000.0);
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
    }
}
