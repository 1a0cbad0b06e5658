//! The bridge over an upgrade: a server whose history was restored from the checkpoint of
//! another sonde version in this layout (`checkpoint::OtherVersion::Bridge`) publishes from
//! it at once, and reads the store whole on a thread of its own meanwhile; the history read
//! then replaces the restored one at the next publish. A fleet's daemons, upgraded one by
//! one, are so ready within seconds rather than after a month's cold read each, and the
//! figures they publish are this version's own once the read is done (a minute at 10
//! locations × 1,000 targets).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

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

/// `mutex` locked: a panicked read leaves it `Reading`, which only stops a second read.
fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
            Err(err) => {
                tracing::warn!(error = %err, "reading the store whole behind the restored checkpoint");
                return;
            }
        };
        *state = State::Reading;
        let (shared, config) = (Arc::clone(&self.state), Arc::clone(config));
        let spawned = std::thread::Builder::new()
            .name("sonde-read-whole".into())
            .spawn(move || {
                let started = Instant::now();
                let read = History::read_whole(&config, &store, now_ms());
                let mut state = lock(&shared);
                match read {
                    Ok(history) => {
                        tracing::info!(took = ?started.elapsed(), "read the store whole: the next publish is from this version's own history");
                        *state = State::Read(Box::new(history));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "reading the store whole behind the restored checkpoint failed; the next publish tries again");
                        *state = State::Idle;
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "reading the store whole behind the restored checkpoint");
            *state = State::Idle;
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
