//! The figures of the uptime bar, the daily table, the TTFT chart and the heatmap: one
//! point per target and bucket (an hour of the heatmap's 28 days, a day of the bar's 90),
//! folded from every probe's and location's rollup of that bucket.
//!
//! A publisher keeps the closed buckets' points, and the rows of the open buckets (the
//! current and previous hour or day: a run may still land in the previous bucket just after
//! it closed) one per probe and location, and at each publish reads only the rows written
//! since its last read ([`Seen`]). A row written into an open bucket replaces its own; a
//! bucket that closes is folded from its rows; a row written late into a closed bucket makes
//! that bucket be read again. So the bar and heatmap are at every publish what a cold read
//! gives, a late run included, and a periodic publish reads the rows that changed, not two
//! days of every target's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::aggregate::quality::Quality;
use crate::aggregate::rollup::{PointScalars, Span};
use crate::store::{RollupHead, Seen, Store, StoreError};

/// One hour of a target on the TTFT chart and heatmap: its busiest probe's figures, in 8
/// bytes (a publisher keeps a month of them per target; the charts draw them to a pixel,
/// and a TTFT in milliseconds keeps 7 significant digits in an `f32`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HourPoint {
    /// TTFT median, ms.
    ttft_p50_ms: f32,
    /// TTFT 95th percentile, ms; NaN when the hour had too few runs for one.
    ttft_p95_ms: f32,
}

impl HourPoint {
    /// TTFT median, ms.
    pub fn ttft_p50_ms(&self) -> f64 {
        f64::from(self.ttft_p50_ms)
    }

    /// TTFT 95th percentile, ms, when the hour had one.
    pub fn ttft_p95_ms(&self) -> Option<f64> {
        Some(f64::from(self.ttft_p95_ms)).filter(|ms| !ms.is_nan())
    }
}

/// One day of a target on the uptime bar, the daily table and the quality trend: what they
/// show of every probe's and location's runs that day. A publisher keeps the bar's 90 days
/// per target; the day's whole scalars (outcome map, latest error and served model) took
/// ten times the room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayPoint {
    /// Runs of every outcome.
    attempts: u64,
    /// `ok` runs.
    ok: u64,
    /// Provider faults.
    pub failures: u64,
    /// The quality canary's judgements.
    pub quality: Quality,
}

impl DayPoint {
    /// Counts another point's runs in.
    fn merge(&mut self, other: &DayPoint) {
        self.attempts += other.attempts;
        self.ok += other.ok;
        self.failures += other.failures;
        self.quality.merge(&other.quality);
    }

    /// Counts a rollup's runs in.
    fn add(&mut self, scalars: &PointScalars) {
        self.attempts += scalars.attempts;
        self.ok += scalars.ok;
        self.failures += scalars.failures;
        self.quality.merge(&scalars.quality);
    }

    /// Runs counted, of every outcome.
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// ok ÷ (ok + provider faults), as
    /// [`Scalars::availability`](crate::aggregate::rollup::Scalars::availability); `None`
    /// without either.
    pub fn availability(&self) -> Option<f64> {
        let counted = self.ok + self.failures;
        (counted > 0).then(|| self.ok as f64 / counted as f64)
    }
}

/// A bucket's start in whole hours since the epoch (hours and days both begin on one): half
/// the bytes of unix ms, beside each of a month of points per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Hour(u32);

impl Hour {
    /// The hour `ms` (a bucket's start) begins.
    fn of(ms: i64) -> Hour {
        Hour(u32::try_from(ms.div_euclid(Span::Hour.ms())).unwrap_or(0))
    }

    /// Its start, unix ms.
    fn ms(self) -> i64 {
        i64::from(self.0) * Span::Hour.ms()
    }
}

/// Per target, per bucket, oldest first.
type ByBucket<T> = HashMap<String, Vec<(Hour, T)>>;

/// A target's closed buckets' points, one slot per bucket from the first (a slot of a
/// bucket without a point holds [`Point::none`]): a month of hours in 8 bytes an hour, not
/// 12 with its hour beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dense<T> {
    /// The first slot's bucket.
    first: Hour,
    /// Hours from one slot's bucket to the next's.
    step: u32,
    slots: Vec<T>,
}

impl<T: Point> Dense<T> {
    /// No buckets yet, a slot every `step` hours.
    fn new(step: u32) -> Dense<T> {
        Dense {
            first: Hour(0),
            step,
            slots: Vec::new(),
        }
    }

    /// The slot of `hour`, before the first when it is earlier (then `Err` with how many
    /// slots earlier).
    fn slot(&self, hour: Hour) -> Result<usize, usize> {
        let from = |a: u32, b: u32| ((a - b) / self.step) as usize;
        if hour >= self.first {
            Ok(from(hour.0, self.first.0))
        } else {
            Err(from(self.first.0, hour.0))
        }
    }

    /// Puts `point` in `hour`'s slot, growing the slots to fit, never doubling them: an
    /// hour is appended to every target's month of hours each hour.
    fn put(&mut self, hour: Hour, point: T) {
        if self.slots.is_empty() {
            self.first = hour;
        }
        let at = match self.slot(hour) {
            Ok(at) => at,
            Err(earlier) => {
                self.slots
                    .splice(0..0, std::iter::repeat_n(T::none(), earlier));
                self.first = hour;
                0
            }
        };
        if at >= self.slots.len() {
            self.slots.reserve_exact(at + 1 - self.slots.len());
            self.slots.resize(at + 1, T::none());
        }
        self.slots[at] = point;
    }

    /// Empties the slot of `hour`, when it has one.
    fn clear(&mut self, hour: Hour) {
        if let Ok(at) = self.slot(hour)
            && let Some(slot) = self.slots.get_mut(at)
        {
            *slot = T::none();
        }
    }

    /// Drops the slots of buckets that begin before `first` (unix ms), and the empty ones
    /// that then lead.
    fn drop_before(&mut self, first: i64) {
        let step_ms = i64::from(self.step) * Span::Hour.ms();
        let old = usize::try_from((first - self.first.ms() + step_ms - 1).div_euclid(step_ms))
            .unwrap_or(0)
            .min(self.slots.len());
        let leading = self.slots[old..]
            .iter()
            .take_while(|point| point.is_none())
            .count();
        self.slots.drain(..old + leading);
        self.first = Hour(self.first.0 + self.step * (old + leading) as u32);
    }

    /// Its buckets with a point, oldest first.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (Hour, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, point)| !point.is_none())
            .map(|(i, point)| (Hour(self.first.0 + self.step * i as u32), point))
    }
}

/// Per target, its closed buckets' figures (shared with the snapshots published from them,
/// not copied).
type Kept<T> = HashMap<String, Arc<Dense<T>>>;

/// One target's figures per bucket, oldest first: the closed buckets' as a [`History`]
/// keeps them (shared), then the open ones' read at the publish.
#[derive(Debug, Clone)]
pub struct Series<T> {
    closed: Option<Arc<Dense<T>>>,
    open: Vec<(Hour, T)>,
}

impl<T: Point> Series<T> {
    /// Every bucket's start (unix ms) and its figures, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (i64, &T)> {
        self.closed
            .iter()
            .flat_map(|closed| closed.iter())
            .chain(self.open.iter().map(|(hour, figures)| (*hour, figures)))
            .map(|(hour, figures)| (hour.ms(), figures))
    }
}

impl<T> Default for Series<T> {
    fn default() -> Self {
        Series {
            closed: None,
            open: Vec::new(),
        }
    }
}

/// Per target its series: the closed buckets of `kept` followed by those of `open` (all
/// later).
fn series<T: Clone>(kept: &Kept<T>, open: ByBucket<T>) -> HashMap<String, Series<T>> {
    let mut out: HashMap<String, Series<T>> = kept
        .iter()
        .map(|(target, closed)| {
            let series = Series {
                closed: Some(Arc::clone(closed)),
                open: Vec::new(),
            };
            (target.clone(), series)
        })
        .collect();
    for (target, buckets) in open {
        out.entry(target).or_default().open = buckets;
    }
    out
}

/// Puts each target's buckets of `new` among its kept ones, a slot every `step` hours.
fn put<T: Point>(kept: &mut Kept<T>, new: ByBucket<T>, step: u32) {
    for (target, buckets) in new {
        let kept = kept
            .entry(target)
            .or_insert_with(|| Arc::new(Dense::new(step)));
        let kept = Arc::make_mut(kept);
        for (hour, point) in buckets {
            kept.put(hour, point);
        }
    }
}

/// Drops the kept buckets before `first` (copying a target's only when a snapshot still
/// shares it and it has some to drop).
fn drop_before<T: Point>(kept: &mut Kept<T>, first: i64) {
    for buckets in kept.values_mut() {
        if buckets.first.ms() < first {
            Arc::make_mut(buckets).drop_before(first);
        }
    }
    kept.retain(|_, buckets| !buckets.slots.is_empty());
}

/// A target's figure of one bucket, folded from the bucket's rows in the store's order (by
/// probe, then location).
pub trait Point: Clone + Serialize + DeserializeOwned {
    /// What one row gives, and what a bucket's rows fold into.
    type Part: Clone + Default + Serialize + DeserializeOwned;
    /// The part of a row with these scalars.
    fn part(scalars: &PointScalars) -> Self::Part;
    /// Folds the next row's `part` into `into`.
    fn fold(into: &mut Self::Part, part: &Self::Part);
    /// The point of a bucket's folded parts; `None`: the bucket shows none.
    fn of(folded: Self::Part) -> Option<Self>;
    /// What a kept bucket without a point holds.
    fn none() -> Self;
    /// Whether this is [`Point::none`].
    fn is_none(&self) -> bool;
}

impl Point for DayPoint {
    type Part = DayPoint;

    fn none() -> DayPoint {
        DayPoint::default()
    }

    /// A day with a point counted runs.
    fn is_none(&self) -> bool {
        *self == DayPoint::default()
    }

    fn part(scalars: &PointScalars) -> DayPoint {
        let mut point = DayPoint::default();
        point.add(scalars);
        point
    }

    fn fold(into: &mut DayPoint, part: &DayPoint) {
        into.merge(part);
    }

    fn of(folded: DayPoint) -> Option<DayPoint> {
        Some(folded)
    }
}

impl Point for HourPoint {
    /// The row's `ok` runs and figures; `None` without a streamed run.
    type Part = Option<(u32, HourPoint)>;

    fn part(scalars: &PointScalars) -> Self::Part {
        let p50 = scalars.ttft_p50_ms?;
        let ok = u32::try_from(scalars.ok).unwrap_or(u32::MAX);
        let point = HourPoint {
            ttft_p50_ms: p50 as f32,
            ttft_p95_ms: scalars.ttft_p95_ms.map_or(f32::NAN, |ms| ms as f32),
        };
        Some((ok, point))
    }

    /// The busier of two probes (or locations), by ok runs; on a tie, the later row.
    fn fold(into: &mut Self::Part, part: &Self::Part) {
        if let Some((ok, point)) = part
            && into.is_none_or(|(busiest, _)| *ok >= busiest)
        {
            *into = Some((*ok, *point));
        }
    }

    fn of(folded: Self::Part) -> Option<HourPoint> {
        folded.map(|(_, point)| point)
    }

    fn none() -> HourPoint {
        HourPoint {
            ttft_p50_ms: f32::NAN,
            ttft_p95_ms: f32::NAN,
        }
    }

    /// A point's median is never NaN: it is a measured TTFT.
    fn is_none(&self) -> bool {
        self.ttft_p50_ms.is_nan()
    }
}

/// A row's bucket, target, probe and location: its place in the store's order.
type RowKey = (i64, String, String, String);

/// The key of the row `head` is the head of.
fn row_key(head: &RollupHead<'_>) -> RowKey {
    (
        head.bucket,
        head.target.to_owned(),
        head.probe.to_owned(),
        head.location.to_owned(),
    )
}

/// Rows (in the store's order) being folded into each target's point of each bucket: a
/// list in bucket order, which the store's order appends to (a month of hours of 5,000
/// targets is 3.4 million buckets: a map of them took several times the room).
struct Folding<P: Point>(HashMap<String, Vec<(Hour, P::Part)>>);

impl<P: Point> Folding<P> {
    /// Nothing folded yet.
    fn new() -> Folding<P> {
        Folding(HashMap::new())
    }

    /// Folds in the next row: `target`'s of `bucket`.
    fn add(&mut self, bucket: i64, target: &str, part: &P::Part) {
        // The target's name is copied once, not per row.
        if !self.0.contains_key(target) {
            self.0.insert(target.to_owned(), Vec::new());
        }
        let buckets = self.0.get_mut(target).expect("just inserted");
        let hour = Hour::of(bucket);
        // Rows come bucket by bucket, so a new bucket is most often the last; one of an
        // earlier bucket still finds its place.
        let at = buckets.partition_point(|(b, _)| *b < hour);
        if buckets.get(at).is_none_or(|(b, _)| *b != hour) {
            buckets.insert(at, (hour, P::Part::default()));
        }
        P::fold(&mut buckets[at].1, part);
    }

    /// Folds in `rows` of a row map, in its (the store's) order.
    fn add_rows<'r>(mut self, rows: impl Iterator<Item = (&'r RowKey, &'r P::Part)>) -> Self
    where
        P::Part: 'r,
    {
        for ((bucket, target, ..), part) in rows {
            self.add(*bucket, target, part);
        }
        self
    }

    /// Each target's points, the buckets that show none left out.
    fn points(self) -> ByBucket<P> {
        self.0
            .into_iter()
            .map(|(target, buckets)| {
                let points = buckets
                    .into_iter()
                    .filter_map(|(hour, part)| Some((hour, P::of(part)?)));
                (target, points.collect())
            })
            .collect()
    }
}

/// One span's points: the closed buckets' kept, the open buckets' rows as last read.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Points<P: Point> {
    span: Span,
    /// What the last read saw; `None`: the next reads every row of the range.
    seen: Option<Seen>,
    /// Each target's points of the closed buckets, oldest first.
    closed: Kept<P>,
    /// The rows of the buckets from `open_from`.
    open: BTreeMap<RowKey, P::Part>,
    /// The previous bucket's start at the last read.
    open_from: i64,
}

impl<P: Point> Points<P> {
    /// No points of `span` yet: the first read reads every row of the range.
    pub fn new(span: Span) -> Points<P> {
        Points {
            span,
            seen: None,
            closed: HashMap::new(),
            open: BTreeMap::new(),
            open_from: i64::MIN,
        }
    }

    /// Each target's points of the buckets from `first` at `now_ms`, reading the rows
    /// written since the last call (every row of the range at the first).
    pub fn read(
        &mut self,
        store: &Store,
        first: i64,
        now_ms: i64,
    ) -> Result<HashMap<String, Series<P>>, StoreError> {
        let open_from = self.span.bucket_of(now_ms) - self.span.ms();
        let after = self.seen.take();
        // Rows of the buckets open now or at the last read are kept; other rows, read
        // whole the first time, are folded as they come; one written since into a closed
        // bucket makes that bucket be read again.
        let open_floor = match after {
            None => {
                (self.closed, self.open) = Default::default();
                open_from
            }
            Some(_) => open_from.min(self.open_from),
        };
        let (mut closed, mut late) = (Folding::<P>::new(), HashSet::new());
        let open = &mut self.open;
        let seen = store.each_rollup_point_written(
            self.span,
            first,
            after.as_ref(),
            &mut |head, scalars| {
                if head.bucket >= open_floor {
                    open.insert(row_key(&head), P::part(&scalars));
                } else if after.is_none() {
                    closed.add(head.bucket, head.target, &P::part(&scalars));
                } else {
                    late.insert(head.bucket);
                }
            },
        )?;
        let step = self.step();
        put(&mut self.closed, closed.points(), step);
        // The buckets that closed since the last read: folded from their rows.
        let from_now = (open_from, String::new(), String::new(), String::new());
        let still_open = self.open.split_off(&from_now);
        let closing = std::mem::replace(&mut self.open, still_open);
        put(
            &mut self.closed,
            Folding::new().add_rows(closing.iter()).points(),
            step,
        );
        self.open_from = open_from;
        if !late.is_empty() {
            self.read_again(store, &late, open_from)?;
        }
        let first = first.max(seen.rollups_pruned_before);
        drop_before(&mut self.closed, first);
        self.open.retain(|(bucket, ..), _| *bucket >= first);
        self.seen = Some(seen);
        let open = Folding::new().add_rows(self.open.iter()).points();
        Ok(series(&self.closed, open))
    }

    /// Replaces every target's points of the closed buckets in `late` by those of their
    /// rows as stored now.
    fn read_again(
        &mut self,
        store: &Store,
        late: &HashSet<i64>,
        open_from: i64,
    ) -> Result<(), StoreError> {
        let from = late.iter().copied().min().unwrap_or(open_from);
        let mut rows = Folding::<P>::new();
        store.each_rollup_point_written(self.span, from, None, &mut |head, scalars| {
            if late.contains(&head.bucket) && head.bucket < open_from {
                rows.add(head.bucket, head.target, &P::part(&scalars));
            }
        })?;
        for kept in self.closed.values_mut() {
            if kept.iter().any(|(hour, _)| late.contains(&hour.ms())) {
                let kept = Arc::make_mut(kept);
                for &bucket in late {
                    kept.clear(Hour::of(bucket));
                }
            }
        }
        let step = self.step();
        put(&mut self.closed, rows.points(), step);
        Ok(())
    }

    /// Hours from one bucket to the next.
    fn step(&self) -> u32 {
        u32::try_from(self.span.ms() / Span::Hour.ms()).unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(ok: u32, p50: f32) -> Option<(u32, HourPoint)> {
        Some((
            ok,
            HourPoint {
                ttft_p50_ms: p50,
                ttft_p95_ms: f32::NAN,
            },
        ))
    }

    #[test]
    fn kept_points_take_a_slot_per_bucket_and_show_only_those_with_a_point() {
        let point = |p50: f32| part(1, p50).unwrap().1;
        let shown = |dense: &Dense<HourPoint>| -> Vec<(u32, f64)> {
            dense
                .iter()
                .map(|(hour, p)| (hour.0, p.ttft_p50_ms()))
                .collect()
        };
        let mut hours = Dense::new(1);
        hours.put(Hour(10), point(1.0));
        hours.put(Hour(13), point(2.0));
        hours.put(Hour(8), point(3.0));
        assert_eq!(shown(&hours), [(8, 3.0), (10, 1.0), (13, 2.0)]);
        assert_eq!(hours.slots.len(), 6, "a slot per hour from the first");
        hours.clear(Hour(10));
        hours.clear(Hour(40));
        assert_eq!(shown(&hours), [(8, 3.0), (13, 2.0)]);
        // A bound inside an hour drops that hour too (it began before), and the empty
        // slots that then lead.
        hours.drop_before(Hour(8).ms() + 1);
        assert_eq!((hours.first, hours.slots.len()), (Hour(13), 1));
        assert_eq!(shown(&hours), [(13, 2.0)]);

        let day = DayPoint {
            attempts: 2,
            ok: 1,
            failures: 1,
            quality: Quality::default(),
        };
        let mut days = Dense::new(24);
        days.put(Hour(48), day.clone());
        days.put(Hour(96), day.clone());
        assert_eq!(days.slots.len(), 3);
        let starts: Vec<u32> = days.iter().map(|(hour, _)| hour.0).collect();
        assert_eq!(starts, [48, 96], "the empty day between is not shown");
        days.drop_before(Hour(49).ms());
        assert_eq!(days.first, Hour(96));
    }

    #[test]
    fn rows_fold_into_their_bucket_in_whatever_order_they_come() {
        let hour = Span::Hour.ms();
        let mut folding = Folding::<HourPoint>::new();
        for (bucket, ok, p50) in [
            (5, 3, 10.0),
            (5, 4, 11.0),
            (6, 1, 12.0),
            (5, 9, 13.0),
            (3, 2, 14.0),
            (6, 1, 15.0),
        ] {
            folding.add(bucket * hour, "a", &part(ok, p50));
        }
        folding.add(6 * hour, "b", &None);
        let points = folding.points();
        let medians: Vec<(u32, f64)> = points["a"]
            .iter()
            .map(|(h, p)| (h.0, p.ttft_p50_ms()))
            .collect();
        // The busiest row of each bucket, the later on a tie; buckets oldest first.
        assert_eq!(medians, [(3, 14.0), (5, 13.0), (6, 15.0)]);
        assert!(
            points["b"].is_empty(),
            "a bucket without a point shows none"
        );
    }
}
