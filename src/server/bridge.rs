//! The bridge over an upgrade: a server whose history was restored from the checkpoint of
//! another sonde version in this layout (`checkpoint::OtherVersion::Bridge`) publishes from
//! it at once, and reads the store whole on a thread of its own meanwhile; the history read
//! then replaces the restored one at the next publish. A fleet's daemons, upgraded one by
//! one, are so ready within seconds rather than after a month's cold read each, and the
//! figures they publish are this version's own once the read is done (a minute at 10
//! locations × 1,000 targets).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::lock;

use crate::config::Config;
use crate::publish::history::History;
use crate::store::Store;
use crate::units::now_ms;

/// Where the read of the whole store stands.
#[derive(Debug, Default)]
enum State {
    /// None begun, or the last failed: the next publish from a bridged history begins one.
    #[default]
    Idle,
    /// Under way on its own thread.
    Reading,
    /// Done: the history read, to replace the bridged one.
    Read(Box<History>),
}

/// The read of the whole store behind a history restored from another version's checkpoint.
#[derive(Debug, Default)]
pub(super) struct Bridge {
    /// Shared with the reading thread, which sets it when done.
    state: Arc<Mutex<State>>,
}

/// Logs that the read could not begin (the next publish tries again).
fn not_begun(err: &dyn std::fmt::Display) {
    tracing::warn!(error = %err, "could not begin reading the store whole behind the restored checkpoint; the next publish tries again");
}

impl Bridge {
    /// Begins reading the store whole for `config` on a thread of its own, through a fork
    /// of `store`, unless a read is under way or done. A fork that cannot be made is logged
    /// and tried again at the next publish.
    pub(super) fn begin(&self, config: &Arc<Config>, store: &Store) {
        let mut state = lock(&self.state);
        if !matches!(*state, State::Idle) {
            return;
        }
        let store = match store.fork() {
            Ok(store) => store,
            Err(err) => return not_begun(&err),
        };
        *state = State::Reading;
        let (shared, config) = (Arc::clone(&self.state), Arc::clone(config));
        let spawned = std::thread::Builder::new()
            .name("sonde-read-whole".into())
            .spawn(move || {
                let started = Instant::now();
                // A panicking read (a bug) is one more failure, not a read forever under way.
                let read = catch_unwind(AssertUnwindSafe(|| {
                    History::read_whole(&config, &store, now_ms())
                }));
                let mut state = lock(&shared);
                match read {
                    Ok(Ok(history)) => {
                        tracing::info!(took = ?started.elapsed(), "read the store whole: the next publish is from this version's own history");
                        *state = State::Read(Box::new(history));
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "reading the store whole behind the restored checkpoint failed; the next publish tries again");
                        *state = State::Idle;
                    }
                    Err(_) => {
                        tracing::error!("reading the store whole behind the restored checkpoint panicked; the next publish tries again");
                        *state = State::Idle;
                    }
                }
            });
        if let Err(err) = spawned {
            *state = State::Idle;
            not_begun(&err);
        }
    }

    /// The history read whole, once the read is done; taken (a later restored history
    /// would begin another read).
    pub(super) fn take(&self) -> Option<History> {
        let mut state = lock(&self.state);
        match std::mem::take(&mut *state) {
            State::Read(history) => Some(*history),
            other => {
                *state = other;
                None
            }
        }
    }
}
