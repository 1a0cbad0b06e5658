//! `results.csv`: the newest runs of the last 24 hours, at most [`CSV_RUNS`], streamed from
//! the store into CSV when the file is written or asked for. Never kept as records between
//! publishes: ten thousand records took 10 MB of a publisher's memory for a file seldom
//! downloaded.

use super::PublishError;
use crate::aggregate::rollup::Span;
use crate::store::Store;

/// Runs in the site's `results.csv`: the newest of the last 24 hours, at most this many (a
/// few MB), whatever the number of targets; `sonde export` has them all.
pub const CSV_RUNS: usize = 10_000;

/// The file's path in the site.
pub const PATH: &str = "results.csv";

/// `results.csv` of `store` at `now_ms`: a header and the newest [`CSV_RUNS`] runs of the
/// last 24 hours, oldest first, with the columns of `sonde probe --format csv`; empty when
/// there are none.
pub fn render(store: &Store, now_ms: i64) -> Result<Vec<u8>, PublishError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut failed = None;
    store.each_newest_since(now_ms - Span::Day.ms(), CSV_RUNS, &mut |record| {
        if failed.is_none() {
            failed = writer.serialize(&record).err();
        }
    })?;
    let written = match failed {
        Some(err) => Err(err.into()),
        None => writer.into_inner().map_err(|err| err.into_error()),
    };
    written.map_err(|source| PublishError::Io {
        path: PATH.into(),
        source,
    })
}
