//! A publisher's checkpoint: its [`History`] saved in the store every `publish.checkpoint`
//! by the daemon holding the publisher lock, so that a publisher starting afresh — a
//! restarted daemon, another daemon of a fleet taking the lock over, `sonde publish`,
//! `sonde serve` — reads what was written since instead of a month of rollups.
//!
//! It holds exactly what the publisher kept, with the store's own record of what each part
//! had read ([`Seen`](crate::store::Seen): SQLite's write counter or PostgreSQL's snapshot,
//! which mean the same to any reader of the store), so the publishes after it are those the
//! publisher would have made: the same bytes as a cold read's. A config with other targets
//! keeps it: a target that joined has its last runs read then, alone (a history keeps each
//! target's; the windows, points and hour's runs are the store's whatever the config). One
//! saved by another version of sonde in this layout is marked ([`OtherVersion`]): a server
//! publishes from it while it reads the store whole, `sonde publish` leaves it. One that
//! does not fit is left and the store read whole: another layout of the checkpoint, or a
//! header or array of parts that does not decode. Its runs (the last hour's, per minute)
//! are left when it is older than 15 minutes, since the runs written since would be read
//! in one piece, while the hour's read whole are folded one at a time.
//!
//! The history's parts (the rollup windows, the hours' and days' points, the runs, the
//! incidents) are deflated apart and inflated and decoded on every core at once: a restore
//! was most of a restarted publisher's first second. Each part has a layout of its own
//! ([`PARTS`]): an upgrade that changed what a publisher keeps in one part leaves that
//! part, which the next publish reads whole, and restores the others. A part whose bytes
//! are damaged is left the same way, and so is one a checkpoint saved before the part was
//! added lacks: each part holds what it read to, so the others stand alone.

use std::io::{BufWriter, Read};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::history::History;
use super::joined;
use crate::config::PublishConfig;
use crate::store::{Store, StoreError};

/// The layout of a checkpoint this build writes and reads: the [`Header`] and the array of
/// the parts ([`History::parts`]), each deflated; raised when either changes. What is in
/// each part has a layout of its own ([`PARTS`]).
const FORMAT: u32 = 3;

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
    /// The header or the array of parts did not decode: left by another build, damaged or
    /// cut. (A part that does not is left alone: [`PartError`].)
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
    /// The history was restored from another version's checkpoint: saving it would label
    /// that version's sums as this one's.
    #[error(
        "the history is sonde {sonde}'s checkpoint, published from until the store is read \
         whole; it is not saved as this version's"
    )]
    Bridged {
        /// The version that saved it.
        sonde: String,
    },
    /// The history has read nothing yet: there is nothing to save.
    #[error("nothing to save: no publish has read the store yet")]
    Unread,
}

/// Each part of a history ([`History::parts`], in its order): its name in the log, and its
/// layout, raised whenever a field in its tree is added, removed, moved or retyped:
/// structs are written as arrays of their fields, so a moved field of the same type would
/// decode as the other one. A test fingerprints each tree as serde sees it and fails until
/// a changed one has a number of its own. A checkpoint's part in another layout is left
/// and read whole, the other parts restored: an upgrade that changed one part reads only it
/// again.
const PARTS: [(&str, u32); 5] = [
    ("window sums", 1),
    ("hours' points", 1),
    ("days' points", 1),
    ("runs", 1),
    ("incidents", 1),
];

/// Why one part of a checkpoint was not restored: it is left, read whole at the next
/// publish, and the other parts restored (each has its own `Seen`).
#[derive(Debug, thiserror::Error)]
enum PartError {
    /// Saved in another layout of the part (an upgrade changed what it keeps).
    #[error("it was saved in layout {saved} of it, this build's is {this}")]
    Layout {
        /// Its layout when saved.
        saved: u32,
        /// This build's ([`PARTS`]).
        this: u32,
    },
    /// The checkpoint has no such part: a build before the part was added saved it.
    #[error("the checkpoint has none: it was saved by a build before the part")]
    Absent,
    /// Its bytes do not inflate: damaged.
    #[error("it does not inflate ({0})")]
    Inflate(std::io::Error),
    /// Its bytes inflate but do not decode: damaged.
    #[error("it does not decode ({0})")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// What a checkpoint says of itself, before the history. Its layout and version come
/// first in every layout, so a checkpoint of any layout is told apart by them; the fields
/// after are this layout's (`at_ms` is 0 and `parts` empty in another's).
#[derive(Debug, Serialize)]
struct Header {
    /// [`FORMAT`] when saved.
    format: u32,
    /// The sonde version that saved it.
    sonde: String,
    /// The history's last snapshot, unix ms.
    at_ms: i64,
    /// Each part's layout ([`PARTS`]) when saved.
    parts: Vec<u32>,
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Header, D::Error> {
        /// Reads the layout and version, then this layout's fields or, in another, passes
        /// over whatever follows.
        struct Fields;

        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Header;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a checkpoint's header: its layout, version and fields")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Header, A::Error> {
                use serde::de::{Error, IgnoredAny};
                let missing = |field| A::Error::custom(format!("the header has no {field}"));
                let format: u32 = seq.next_element()?.ok_or_else(|| missing("layout"))?;
                let sonde: String = seq.next_element()?.ok_or_else(|| missing("version"))?;
                let (at_ms, parts) = if format == FORMAT {
                    let at_ms = seq.next_element()?.ok_or_else(|| missing("time"))?;
                    let parts = seq
                        .next_element()?
                        .ok_or_else(|| missing("parts' layouts"))?;
                    (at_ms, parts)
                } else {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    (0, Vec::new())
                };
                Ok(Header {
                    format,
                    sonde,
                    at_ms,
                    parts,
                })
            }
        }

        deserializer.deserialize_seq(Fields)
    }
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

/// What a publisher does with a checkpoint saved by another version of sonde in this
/// build's layout (one in another layout is always left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherVersion {
    /// Leaves it and reads the store whole: `sonde publish`, whose one publish must be
    /// this version's own.
    Leave,
    /// Publishes from it while the store is read whole in the background, then from what
    /// was read (a server: ready within seconds after an upgrade instead of after a
    /// month's cold read). It is never saved again as this version's.
    Bridge,
}

/// `history` as a checkpoint's bytes: a [`Header`], then an array of the history's parts
/// ([`History::parts`]), each deflated as it is encoded (never held whole plain), all at
/// once: a part is inflated and decoded apart too, on every core (a restore in 0.6× the
/// time on two). All of it is MessagePack, each struct as an array of its fields: names were
/// half the bytes, since a fleet's history holds millions of small structs. A field left
/// out when empty is the last of its struct and has a default, so the shorter array still
/// decodes. A history restored from another version's checkpoint is not encoded: it would
/// be saved as this version's.
pub fn encode(history: &History) -> Result<Encoded, CheckpointError> {
    if let Some(sonde) = history.other_version() {
        return Err(CheckpointError::Bridged {
            sonde: sonde.to_owned(),
        });
    }
    encode_as(history, env!("CARGO_PKG_VERSION"))
}

/// [`encode`] with `sonde` as the version that saved it.
fn encode_as(history: &History, sonde: &str) -> Result<Encoded, CheckpointError> {
    let at_ms = history.at_ms().ok_or(CheckpointError::Unread)?;
    let header = Header {
        format: FORMAT,
        sonde: sonde.to_owned(),
        at_ms,
        parts: PARTS.iter().map(|(_, layout)| *layout).collect(),
    };
    let (windows, hours, days, runs, incidents) = history.parts();
    let parts = std::thread::scope(|scope| {
        let windows = scope.spawn(|| deflated(windows));
        let hours = scope.spawn(|| deflated(hours));
        let days = scope.spawn(|| deflated(days));
        let incidents = scope.spawn(|| deflated(incidents));
        let runs = deflated(runs);
        [
            joined(windows),
            joined(hours),
            joined(days),
            runs,
            joined(incidents),
        ]
    });
    let parts: Vec<ByteBuf> = parts
        .into_iter()
        .map(|part| part.map(ByteBuf::from))
        .collect::<Result<_, _>>()?;
    let mut bytes = rmp_serde::to_vec(&header)?;
    rmp_serde::encode::write(&mut bytes, &parts)?;
    Ok(Encoded { at_ms, bytes })
}

/// `part` encoded and deflated as it is (never held whole plain).
fn deflated<T: Serialize>(part: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let deflated = DeflateEncoder::new(Vec::new(), Compression::fast());
    // The encoder writes a value at a time, a few bytes each: deflated a buffer at a time.
    let mut buffered = BufWriter::with_capacity(1 << 16, deflated);
    rmp_serde::encode::write(&mut buffered, part)?;
    // Deflating into memory: the only error is the allocator's, which aborts first.
    let finished = buffered
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .and_then(DeflateEncoder::finish);
    finished.map_err(|err| rmp_serde::encode::Error::Syntax(err.to_string()))
}

/// The part at `at` of [`PARTS`], saved in `layout` (`None` for either: the checkpoint has
/// no such part): inflated and decoded when that is this build's layout of it and its
/// bytes are whole, else left (`None`, logged at WARN with why) to be read whole while the
/// other parts are restored.
fn inflated<T: DeserializeOwned>(
    (at, layout, part): (usize, Option<u32>, Option<&ByteBuf>),
) -> Option<T> {
    let (name, this) = PARTS[at];
    let decoded = match (layout, part) {
        (Some(layout), Some(part)) if layout == this => {
            let mut plain = Vec::new();
            DeflateDecoder::new(part.as_slice())
                .read_to_end(&mut plain)
                .map_err(PartError::Inflate)
                .and_then(|_| Ok(rmp_serde::from_slice(&plain)?))
        }
        (Some(saved), Some(_)) => Err(PartError::Layout { saved, this }),
        _ => Err(PartError::Absent),
    };
    decoded
        .inspect_err(|err| {
            tracing::warn!(
                part = name,
                reason = %err,
                "the checkpoint's part was left: it is read whole, the other parts restored"
            );
        })
        .ok()
}

/// The history saved in `bytes`, at `now_ms`; its runs left when older than
/// [`RUNS_FOR_MS`]. One saved by another version of sonde in this layout decodes, and
/// says so ([`History::other_version`]).
pub fn decode(bytes: &[u8], now_ms: i64) -> Result<History, CheckpointError> {
    let mut reader = rmp_serde::Deserializer::new(bytes);
    let header = Header::deserialize(&mut reader)?;
    if header.format != FORMAT {
        return Err(CheckpointError::Version {
            sonde: header.sonde,
            format: header.format,
        });
    }
    // A checkpoint saved before a part was added lacks it: that part is read whole.
    let parts: Vec<ByteBuf> = Deserialize::deserialize(&mut reader)?;
    let part = |at: usize| (at, header.parts.get(at).copied(), parts.get(at));
    let parts = std::thread::scope(|scope| {
        let windows = scope.spawn(|| inflated(part(0)));
        let hours = scope.spawn(|| inflated(part(1)));
        let days = scope.spawn(|| inflated(part(2)));
        let incidents = scope.spawn(|| inflated(part(4)));
        let runs = inflated(part(3));
        (
            joined(windows),
            joined(hours),
            joined(days),
            runs,
            joined(incidents),
        )
    });
    let mut history = History::from_parts(header.at_ms, parts);
    if now_ms - header.at_ms > RUNS_FOR_MS {
        history.forget_runs();
    }
    history.share_names();
    if header.sonde != env!("CARGO_PKG_VERSION") {
        history.set_other_version(header.sonde);
    }
    Ok(history)
}

/// Saves `history` as the store's checkpoint ([`encode`], then [`Encoded::save`]). Returns
/// its size in bytes.
pub fn save(store: &Store, history: &History) -> Result<usize, CheckpointError> {
    Ok(encode(history)?.save(store)?)
}

/// Saves `history`, a one-shot command's (`sonde publish`, its exports, `sonde sync`) just
/// read, as the store's checkpoint when no daemon keeps one: `publish.checkpoint` is on,
/// the store's is missing or older than that and a publish interval (a daemon keeping it
/// saves one every `publish.checkpoint`), and this process takes the checkpoint lock (a
/// fleet's daemon keeping it holds it). A fleet whose daemons only probe, its exports
/// regenerated on a schedule, would otherwise read the store whole each time. Returns the
/// size saved, or `None` when the store's was left as it is.
pub fn save_unkept(
    store: &Store,
    history: &History,
    publish: &PublishConfig,
    now_ms: i64,
) -> Result<Option<usize>, CheckpointError> {
    let Some(every) = publish.checkpoint else {
        return Ok(None);
    };
    let kept_for = crate::units::duration_ms(every + publish.every);
    let kept = store
        .checkpoint_saved_ms()?
        .is_some_and(|saved| now_ms - saved < kept_for);
    if kept || !store.checkpoint_lock()? {
        return Ok(None);
    }
    save(store, history).map(Some)
}

/// The history of the store's checkpoint ([`decode`]); `Ok(None)` when it has none.
pub fn restore(store: &Store, now_ms: i64) -> Result<Option<History>, CheckpointError> {
    match store.checkpoint()? {
        Some(bytes) => decode(&bytes, now_ms).map(Some),
        None => Ok(None),
    }
}

/// [`restore`] into `history` when it is new (it has read nothing), one saved by another
/// version as `other` says; logs why a checkpoint was left. A history that has read keeps
/// what it read.
pub fn restore_into(store: &Store, now_ms: i64, history: &mut History, other: OtherVersion) {
    if history.at_ms().is_some() {
        return;
    }
    let started = std::time::Instant::now();
    let restored = restore(store, now_ms).and_then(|restored| {
        match restored.as_ref().and_then(History::other_version) {
            Some(sonde) if other == OtherVersion::Leave => Err(CheckpointError::Version {
                sonde: sonde.to_owned(),
                format: FORMAT,
            }),
            _ => Ok(restored),
        }
    });
    match restored {
        Ok(Some(restored)) => {
            let saved_at = restored.at_ms().unwrap_or_default();
            let took = started.elapsed();
            match restored.other_version() {
                None => tracing::info!(
                    ?took,
                    saved_at,
                    "restored the publisher's checkpoint: reading what was written since"
                ),
                Some(sonde) => tracing::info!(
                    ?took,
                    saved_at,
                    saved_by = sonde,
                    "restored the checkpoint of another sonde in this layout: publishing from \
                     it while the store is read whole"
                ),
            }
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

    /// The layouts of a history's parts as serde sees them, in [`PARTS`] order: every
    /// struct and enum in each part's tree with its fields' or variants' names and types.
    fn layouts() -> Vec<String> {
        use super::super::history::Runs;
        use super::super::incidents::KeptIncidents;
        use super::super::points::{DayPoint, HourPoint, Points};
        use super::super::window_cache::WindowCache;
        use serde_reflection::{Samples, Tracer, TracerConfig};
        // A time is read from RFC 3339 text: the text the tracer offers must be one.
        let epoch = "1970-01-01T00:00:00Z";
        let config = TracerConfig::default()
            .default_borrowed_str_value(epoch)
            .default_string_value(epoch.to_owned());
        let mut tracer = Tracer::new(config);
        let samples = Samples::new();
        // The tracer descends into a generic struct once, under its name: the days' points
        // are traced apart, or `DayPoint` would be left out.
        let parts = [
            tracer.trace_type::<WindowCache>(&samples).err(),
            tracer.trace_type::<Points<HourPoint>>(&samples).err(),
            tracer.trace_type::<Points<DayPoint>>(&samples).err(),
            tracer.trace_type::<DayPoint>(&samples).err(),
            tracer.trace_type::<Runs>(&samples).err(),
            tracer.trace_type::<KeptIncidents>(&samples).err(),
        ];
        assert!(parts.iter().all(Option::is_none), "{parts:?}");
        // Each enum is traced apart, so every variant is known.
        let traced = [
            tracer
                .trace_simple_type::<crate::quality::Judgement>()
                .err(),
            tracer.trace_simple_type::<crate::quality::Kind>().err(),
            tracer.trace_simple_type::<crate::result::Outcome>().err(),
            tracer
                .trace_simple_type::<super::super::latest::RunId>()
                .err(),
            tracer
                .trace_simple_type::<crate::aggregate::rollup::Span>()
                .err(),
            tracer.trace_simple_type::<crate::store::Upto>().err(),
            tracer.trace_simple_type::<crate::aggregate::Window>().err(),
            tracer
                .trace_simple_type::<crate::aggregate::health::IncidentKind>()
                .err(),
            tracer
                .trace_simple_type::<crate::aggregate::health::State>()
                .err(),
        ];
        assert!(traced.iter().all(Option::is_none), "{traced:?}");
        let registry = tracer.registry().expect("every type in the parts traced");
        let registry = serde_json::to_value(&registry).expect("a registry is JSON");
        let roots: [&[&str]; 5] = [
            &["WindowCache"],
            &["Points"],
            &["Points", "DayPoint"],
            &["Runs"],
            &["KeptIncidents"],
        ];
        roots
            .iter()
            .map(|roots| {
                let reached = reachable(&registry, roots);
                serde_json::to_string(&reached).expect("JSON")
            })
            .collect()
    }

    /// The containers of `registry` (by name) that `roots` name or reach.
    fn reachable(
        registry: &serde_json::Value,
        roots: &[&str],
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        /// Pushes every type name in `format` onto `names`.
        fn names_in(format: &serde_json::Value, names: &mut Vec<String>) {
            match format {
                serde_json::Value::Object(fields) => {
                    for (key, value) in fields {
                        match value.as_str() {
                            Some(name) if key == "TYPENAME" => names.push(name.to_owned()),
                            _ => names_in(value, names),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|f| names_in(f, names)),
                _ => {}
            }
        }
        let mut reached = std::collections::BTreeMap::new();
        let mut names: Vec<String> = roots.iter().map(|root| (*root).to_owned()).collect();
        while let Some(name) = names.pop() {
            if reached.contains_key(&name) {
                continue;
            }
            let format = registry.get(&name).expect("a traced name").clone();
            names_in(&format, &mut names);
            reached.insert(name, format);
        }
        reached
    }

    /// Every layout each part ([`PARTS`]) has had, with the fingerprint of its tree then,
    /// oldest first. Before parts (checkpoint layouts 1 and 2) the history was deflated
    /// whole, one stream, and one number named it all.
    const LAYOUTS: [&[(u32, u64)]; 5] = [
        &[(1, 0xc9fd_7659_3cd1_3022)],
        &[(1, 0x7cce_eff9_09c1_5156)],
        &[(1, 0x73bd_128d_aec4_1df2)],
        &[(1, 0x14a2_4926_cc2d_e01d)],
        &[(1, 0x77b9_41b1_4ba5_908d)],
    ];

    /// A change to a part's tree fails this until that part's layout in [`PARTS`] is raised
    /// and the new one added to [`LAYOUTS`]: a part in the layout this build names is
    /// decoded, so a layout changed under the same number would be misread.
    #[test]
    fn each_parts_layout_is_the_one_its_number_names() {
        for (((name, layout), fingerprints), tree) in PARTS.iter().zip(LAYOUTS).zip(layouts()) {
            let fingerprint = crate::scheduler::stable_hash(&tree);
            let (number, named) = fingerprints[fingerprints.len() - 1];
            assert!(
                fingerprints
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1)
            );
            assert_eq!(
                (*layout, fingerprint),
                (number, named),
                "the layout of the part {name:?} is not the one its number {layout} names: \
                 raise it in PARTS and add ({}, {fingerprint:#x}) to its LAYOUTS\n{tree}",
                layout + 1
            );
        }
    }

    #[test]
    fn a_history_that_read_nothing_is_not_saved() {
        assert!(matches!(
            encode(&History::new()),
            Err(CheckpointError::Unread)
        ));
    }

    /// A history of an empty SQLite store, read whole (it has read, so it is saved).
    fn read_history() -> History {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[store]\npath = \"{}\"\n",
            dir.path().join("sonde.db").display()
        );
        let config =
            crate::config::Config::parse(std::path::Path::new("sonde.toml"), &text).unwrap();
        let store = Store::open(&config.store, "here").unwrap();
        History::read_whole(&config, &store, 1_000_000).unwrap()
    }

    #[test]
    fn another_versions_checkpoint_in_this_layout_is_marked_and_never_saved_again() {
        let history = read_history();
        let bytes = encode_as(&history, "0.0.1").unwrap().bytes;
        let restored = decode(&bytes, 1_000_000).unwrap();
        assert_eq!(restored.other_version(), Some("0.0.1"));
        assert_eq!(restored.at_ms(), Some(1_000_000));
        let Err(CheckpointError::Bridged { sonde }) = encode(&restored) else {
            panic!("a bridged history was encoded");
        };
        assert_eq!(sonde, "0.0.1");
        let own = decode(&encode(&history).unwrap().bytes, 1_000_000).unwrap();
        assert_eq!(own.other_version(), None);
    }

    #[test]
    fn the_first_layouts_checkpoint_is_left_with_its_layout_named() {
        // Layout 1's header had the config's targets before the time.
        let bytes = rmp_serde::to_vec(&(1u32, "0.1.0", 77u64, 5i64)).unwrap();
        let Err(err) = decode(&bytes, 0) else {
            panic!("layout 1 decoded");
        };
        let text = err.to_string();
        assert!(text.contains("(layout 1)"), "{text}");
    }

    #[test]
    fn a_checkpoint_in_another_layout_is_left() {
        let header = Header {
            format: FORMAT + 1,
            sonde: "9.9.9".into(),
            at_ms: 0,
            parts: Vec::new(),
        };
        let bytes = rmp_serde::to_vec(&header).unwrap();
        let Err(err) = decode(&bytes, 0) else {
            panic!("another layout decoded");
        };
        let text = err.to_string();
        let saved = format!("sonde 9.9.9 (layout {})", FORMAT + 1);
        assert!(text.contains(&saved), "{text}");
        assert!(text.ends_with("the store is read whole"), "{text}");
    }
}
