//! The incidents of the uptime bar's days that a publisher keeps between publishes: read
//! whole at its first read, then only those opened or changed since (a flapping fleet
//! writes hundreds of thousands in 90 days: at 10 locations × 1,000 targets, 200,000 read
//! whole took 0.32–0.43 s of every publish, those written since about 1 ms), kept in the
//! one order a whole read returns, so that what is published is a cold read's.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::interned::Names;
use crate::store::{Incident, Seen, Store, StoreError};

/// The incidents kept, newest first in the store's one order (`Backend::incidents`); a
/// part of the publisher's checkpoint, so that a restarted publisher reads only those
/// written since it was saved.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct KeptIncidents {
    /// The incidents, shared with the snapshots while they do not change, so a publish does
    /// not hold a second copy beside its predecessor's.
    list: Arc<Vec<Incident>>,
    /// Each one's row id, in the same order: what an incident changed since is found by.
    ids: Vec<i64>,
    /// What the last read saw; `None`: the next read is whole.
    seen: Option<Seen>,
}

/// How `a` (row id `a_id`) and `b` (row id `b_id`) are ordered in the store's one order:
/// newest start first, then target, location, kind and id, each descending (text byte by
/// byte, as both stores compare it).
fn order((a, a_id): (&Incident, i64), (b, b_id): (&Incident, i64)) -> Ordering {
    fn key(i: &Incident, id: i64) -> (i64, &[u8], &[u8], &str, i64) {
        let (target, location) = (i.target.as_bytes(), i.location.as_bytes());
        (i.start_ms, target, location, i.kind.as_str(), id)
    }
    key(b, b_id).cmp(&key(a, a_id))
}

impl KeptIncidents {
    /// The incidents open at or after `since_ms` as the store holds them now: those written
    /// since the last read put in their place (or all of them read, at the first read and
    /// after a failed one), then those that ended before `since_ms` forgotten.
    pub(super) fn read(
        &mut self,
        store: &Store,
        since_ms: i64,
    ) -> Result<Arc<Vec<Incident>>, StoreError> {
        // Taken before the read: a failed read leaves the next to read whole.
        match self.seen.take() {
            None => {
                let (mut list, mut ids) = (Vec::new(), Vec::new());
                let seen = store.each_incident_written(since_ms, None, &mut |id, incident| {
                    ids.push(id);
                    list.push(incident);
                })?;
                // Kept until the next read: in the room they take, not a doubling list's.
                list.shrink_to_fit();
                ids.shrink_to_fit();
                (self.list, self.ids, self.seen) = (Arc::new(list), ids, Some(seen));
            }
            Some(after) => {
                let mut written = Vec::new();
                let seen = store.each_incident_written(since_ms, Some(&after), &mut |id, i| {
                    written.push((id, i));
                })?;
                for (id, incident) in written {
                    self.put(id, incident);
                }
                self.seen = Some(seen);
            }
        }
        self.forget_ended_before(since_ms);
        Ok(Arc::clone(&self.list))
    }

    /// Puts incident `id` in its place: replacing what was kept of it, or added. Its start,
    /// target, location and kind never change, so its place is found by them.
    fn put(&mut self, id: i64, incident: Incident) {
        // The first kept that does not come before it.
        let (mut at, mut end) = (0, self.ids.len());
        while at < end {
            let mid = at + (end - at) / 2;
            if order((&self.list[mid], self.ids[mid]), (&incident, id)) == Ordering::Less {
                at = mid + 1;
            } else {
                end = mid;
            }
        }
        if self.ids.get(at) == Some(&id) {
            if self.list[at] != incident {
                Arc::make_mut(&mut self.list)[at] = incident;
            }
        } else {
            Arc::make_mut(&mut self.list).insert(at, incident);
            self.ids.insert(at, id);
        }
    }

    /// Makes the kept incidents' names `names`' shared copies (a checkpoint restores one
    /// copy of each per incident).
    pub(super) fn share_names(&mut self, names: &mut Names) {
        for incident in Arc::make_mut(&mut self.list) {
            incident.target = names.get(&incident.target);
            incident.location = names.get(&incident.location);
            incident.cause = names.get(&incident.cause);
        }
    }

    /// Forgets the incidents that ended before `since_ms`: off the bar's days.
    fn forget_ended_before(&mut self, since_ms: i64) {
        let ended = |incident: &Incident| incident.end_ms.is_some_and(|end| end < since_ms);
        if !self.list.iter().any(ended) {
            return;
        }
        let list = Arc::make_mut(&mut self.list);
        let mut ended_at = list.iter().map(ended).collect::<Vec<_>>().into_iter();
        self.ids.retain(|_| ended_at.next() == Some(false));
        list.retain(|incident| !ended(incident));
    }
}
