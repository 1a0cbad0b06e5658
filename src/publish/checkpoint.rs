//! A publisher's checkpoint: its [`History`] saved in the store every `publish.checkpoint`
//! by the daemon holding the publisher lock, so that a publisher starting afresh — a
//! restarted daemon, another daemon of a fleet taking the lock over, `sonde publish`,
//! `sonde serve` — reads what was written since instead of a month of rollups.
//!
//! It holds exactly what the publisher kept, with the store's own record of what each part
//! had read ([`Seen`](crate::store::Seen): SQLite's write counter or PostgreSQL's snapshot,
//! which mean the same to any reader of the store), so the publishes after it are those the
//! publisher would have made: the same bytes as a cold read's. One that does not fit is
//! left and the store read whole: another format or version of sonde, other targets in the
//! config, or bytes that do not decode. Its runs (the last hour's, per minute) are left
//! when it is older than 15 minutes, since the runs written since would be read in one
//! piece, while the hour's read whole are folded one at a time.

use std::io::{BufWriter, Read};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize};

use super::history::History;
use crate::config::Config;
use crate::scheduler::stable_hash;
use crate::store::{Store, StoreError};

/// The layout of [`History`] this build writes and reads; raised whenever a field in its
/// tree is added, removed, moved or retyped: structs are written as arrays of their fields,
/// so a moved field of the same type would decode as the other one.
const FORMAT: u32 = 1;

/// How old a checkpoint's runs may be and still be restored: a fleet of 10,000 targets
/// probed once a minute writes 150,000 runs in that time.
const RUNS_FOR_MS: i64 = 15 * 60_000;

/// Why a checkpoint was not saved or not restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The history did not encode (a bug: every field of it does).
    #[error("encoding the checkpoint: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The history did not inflate: damaged or cut bytes.
    #[error("the checkpoint does not inflate ({0}); the store is read whole")]
    Inflate(std::io::Error),
    /// The bytes did not decode: left by another build, or damaged.
    #[error("the checkpoint does not decode ({0}); the store is read whole")]
    Decode(#[from] rmp_serde::decode::Error),
    /// It was saved by another version of sonde, or in another layout.
    #[error(
        "the checkpoint was saved by sonde {sonde} (layout {format}), this is {} (layout \
         {FORMAT}); the store is read whole",
        env!("CARGO_PKG_VERSION")
    )]
    Version {
        /// Its sonde version.
        sonde: String,
        /// Its layout.
        format: u32,
    },
    /// It was saved for other targets than the config's.
    #[error(
        "the checkpoint was saved for other targets than the config's; the store is read whole"
    )]
    Targets,
    /// The history has read nothing yet: there is nothing to save.
    #[error("nothing to save: no publish has read the store yet")]
    Unread,
}

/// What a checkpoint says of itself, before the history.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// [`FORMAT`] when saved.
    format: u32,
    /// The sonde version that saved it.
    sonde: String,
    /// [`targets`] of the config it was saved with.
    targets: u64,
    /// The history's last snapshot, unix ms.
    at_ms: i64,
}

/// A fingerprint of the config's targets: a history keeps each one's last runs, so one
/// saved for other targets is left.
fn targets(config: &Config) -> u64 {
    let mut ids: Vec<&str> = config.targets.iter().map(|t| t.id.as_str()).collect();
    ids.sort_unstable();
    stable_hash(&ids.join("\n"))
}

/// A history encoded as a checkpoint, to be saved.
#[derive(Debug)]
pub struct Encoded {
    /// The history's last snapshot, unix ms.
    pub at_ms: i64,
    /// The checkpoint's bytes.
    pub bytes: Vec<u8>,
}

impl Encoded {
    /// Saves it as the store's checkpoint (no lock on the history is needed any more);
    /// returns its size in bytes.
    pub fn save(&self, store: &Store) -> Result<usize, StoreError> {
        store.save_checkpoint(self.at_ms, &self.bytes)?;
        Ok(self.bytes.len())
    }
}

/// `history` as a checkpoint's bytes: a [`Header`], then the history deflated as it is
/// encoded (never held whole plain). Both are MessagePack, each struct as an array of its
/// fields: names were half the bytes, since a fleet's history holds millions of small
/// structs. A field left out when empty is the last of its struct and has a default, so
/// the shorter array still decodes.
pub fn encode(config: &Config, history: &History) -> Result<Encoded, CheckpointError> {
    let at_ms = history.at_ms().ok_or(CheckpointError::Unread)?;
    let header = Header {
        format: FORMAT,
        sonde: env!("CARGO_PKG_VERSION").to_owned(),
        targets: targets(config),
        at_ms,
    };
    let deflated = DeflateEncoder::new(rmp_serde::to_vec(&header)?, Compression::fast());
    // The encoder writes a value at a time, a few bytes each: deflated a buffer at a time.
    let mut buffered = BufWriter::with_capacity(1 << 16, deflated);
    rmp_serde::encode::write(&mut buffered, history)?;
    // Deflating into memory: the only error is the allocator's, which aborts first.
    let finished = buffered
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .and_then(DeflateEncoder::finish);
    let bytes = finished.map_err(|err| rmp_serde::encode::Error::Syntax(err.to_string()))?;
    Ok(Encoded { at_ms, bytes })
}

/// The history saved in `bytes`, for `config` at `now_ms`; its runs left when older than
/// [`RUNS_FOR_MS`].
pub fn decode(config: &Config, bytes: &[u8], now_ms: i64) -> Result<History, CheckpointError> {
    let mut reader = rmp_serde::Deserializer::new(bytes);
    let header = Header::deserialize(&mut reader)?;
    let deflated = reader.into_inner();
    if header.format != FORMAT || header.sonde != env!("CARGO_PKG_VERSION") {
        return Err(CheckpointError::Version {
            sonde: header.sonde,
            format: header.format,
        });
    }
    if header.targets != targets(config) {
        return Err(CheckpointError::Targets);
    }
    let mut plain = Vec::new();
    DeflateDecoder::new(deflated)
        .read_to_end(&mut plain)
        .map_err(CheckpointError::Inflate)?;
    let mut history: History = rmp_serde::from_slice(&plain)?;
    if now_ms - header.at_ms > RUNS_FOR_MS {
        history.forget_runs();
    }
    history.share_names();
    Ok(history)
}

/// Saves `history` as the store's checkpoint ([`encode`], then [`Encoded::save`]). Returns
/// its size in bytes.
pub fn save(config: &Config, store: &Store, history: &History) -> Result<usize, CheckpointError> {
    Ok(encode(config, history)?.save(store)?)
}

/// The history of the store's checkpoint, when it has one that fits `config`; `Ok(None)`
/// when it has none.
pub fn restore(
    config: &Config,
    store: &Store,
    now_ms: i64,
) -> Result<Option<History>, CheckpointError> {
    match store.checkpoint()? {
        Some(bytes) => decode(config, &bytes, now_ms).map(Some),
        None => Ok(None),
    }
}

/// [`restore`] into `history` when it is new (it has read nothing), logging why a
/// checkpoint was left; a history that has read keeps what it read.
pub fn restore_into(config: &Config, store: &Store, now_ms: i64, history: &mut History) {
    if history.at_ms().is_some() {
        return;
    }
    let started = std::time::Instant::now();
    match restore(config, store, now_ms) {
        Ok(Some(restored)) => {
            tracing::info!(
                took = ?started.elapsed(),
                saved_at = restored.at_ms().unwrap_or_default(),
                "restored the publisher's checkpoint: reading what was written since"
            );
            *history = restored;
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(error = %err, "the publisher's checkpoint was left"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_with_their_last_field_left_out_decode() {
        use crate::aggregate::rollup::Scalars;
        let mut scalars = Scalars {
            cost_usd: 0.25,
            last_ok_ms: Some(7),
            ..Scalars::default()
        };
        assert!(scalars.quality.is_empty());
        let bytes = rmp_serde::to_vec(&scalars).unwrap();
        let back: Scalars = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{scalars:?}"));
        scalars.failures = 3;
        let back: Scalars = rmp_serde::from_slice(&rmp_serde::to_vec(&scalars).unwrap()).unwrap();
        assert_eq!(back.failures, 3);
    }

    #[test]
    fn a_history_that_read_nothing_is_not_saved() {
        let config = Config::parse(std::path::Path::new("sonde.toml"), "").unwrap();
        assert!(matches!(
            encode(&config, &History::new()),
            Err(CheckpointError::Unread)
        ));
    }
}
