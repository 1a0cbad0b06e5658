//! A fleet's judgement: which locations still report, and a target's global state from the
//! states its locations see.
//!
//! A location is *stale* once silent (no heartbeat) for three of its shortest schedules; it
//! is shown, but left out of the quorum and of the global figures. When every location is
//! stale (a fleet stopped, or an old store published), all of them count, as a single
//! daemon's last figures do after it stops. A *retired* location (`sonde store retire`: a
//! prober taken out of service) is neither shown nor counted.
//!
//! The global state is the `quorum`-th worst state among the counted locations: down only
//! when at least `quorum` of them see the target down; `partial` when some, but fewer, do (a
//! regional outage); otherwise degraded when `quorum` of them see it degraded or worse, and
//! healthy when `quorum` of them know it healthy. With one location it is that location's
//! state.

use super::health::State;

/// Silent schedules after which a location is stale.
pub const STALE_AFTER_SCHEDULES: i64 = 3;

/// One location of the fleet at publish time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationStatus {
    /// Its name.
    pub location: String,
    /// Unix ms of its last heartbeat.
    pub seen_ms: i64,
    /// Its shortest schedule, ms.
    pub shortest_ms: i64,
    /// Silent for longer than [`STALE_AFTER_SCHEDULES`] shortest schedules.
    pub stale: bool,
    /// Whether it counts in the quorum and the global figures.
    pub counted: bool,
    /// Taken out of service: left out of every list, and never counted.
    pub retired: bool,
}

/// Every location's status at `now_ms` from `(location, seen_ms, shortest_ms, retired)`.
pub fn statuses(heartbeats: &[(String, i64, i64, bool)], now_ms: i64) -> Vec<LocationStatus> {
    let mut out: Vec<LocationStatus> = heartbeats
        .iter()
        .map(|(location, seen_ms, shortest_ms, retired)| LocationStatus {
            location: location.clone(),
            seen_ms: *seen_ms,
            shortest_ms: *shortest_ms,
            stale: *retired || now_ms - seen_ms > STALE_AFTER_SCHEDULES * shortest_ms.max(&1),
            counted: false,
            retired: *retired,
        })
        .collect();
    let any_fresh = out.iter().any(|status| !status.stale);
    for status in &mut out {
        status.counted = !status.retired && (!status.stale || !any_fresh);
    }
    out.sort_by(|a, b| a.location.cmp(&b.location));
    out
}

/// Order for "k-th worst": down, degraded, healthy, then unknown (knows nothing).
fn severity(state: State) -> u8 {
    match state {
        State::Down => 0,
        State::Partial | State::Degraded => 1,
        State::Healthy => 2,
        State::Unknown => 3,
    }
}

/// The global state from the counted locations' `(state, since_ms)`, and since when: the
/// earliest `since_ms` among the locations in that state (for `partial`, those down).
pub fn global_state(states: &[(State, i64)], quorum: usize) -> (State, i64) {
    if states.is_empty() {
        return (State::Unknown, 0);
    }
    let mut sorted: Vec<State> = states.iter().map(|(state, _)| *state).collect();
    sorted.sort_by_key(|state| severity(*state));
    let kth = sorted[quorum.clamp(1, sorted.len()) - 1];
    let state = if kth != State::Down && sorted[0] == State::Down {
        State::Partial
    } else {
        kth
    };
    let in_state = if state == State::Partial {
        State::Down
    } else {
        state
    };
    let since = states
        .iter()
        .filter(|(s, _)| *s == in_state)
        .map(|(_, since)| *since)
        .min()
        .unwrap_or(0);
    (state, since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::{Degraded, Down, Healthy, Partial, Unknown};

    #[test]
    fn down_needs_a_quorum_and_fewer_are_partial() {
        assert_eq!(global_state(&[(Down, 5)], 1), (Down, 5));
        assert_eq!(
            global_state(&[(Down, 5), (Healthy, 1), (Healthy, 2)], 2),
            (Partial, 5)
        );
        assert_eq!(
            global_state(&[(Down, 5), (Down, 3), (Healthy, 2)], 2),
            (Down, 3)
        );
        assert_eq!(
            global_state(&[(Down, 5), (Down, 3), (Down, 9)], 2),
            (Down, 3)
        );
        assert_eq!(
            global_state(&[(Degraded, 5), (Degraded, 3), (Healthy, 2)], 2),
            (Degraded, 3)
        );
        assert_eq!(
            global_state(&[(Degraded, 5), (Healthy, 3), (Healthy, 2)], 2),
            (Healthy, 2)
        );
        assert_eq!(
            global_state(&[(Unknown, 5), (Healthy, 3), (Unknown, 2)], 2),
            (Unknown, 2)
        );
        assert_eq!(global_state(&[], 1), (Unknown, 0));
    }

    #[test]
    fn a_silent_location_is_stale_and_counts_only_when_all_are() {
        let beats = [
            ("a".to_owned(), 10_000, 1_000, false),
            ("b".to_owned(), 2_000, 1_000, false),
        ];
        let now = statuses(&beats, 10_500);
        assert_eq!(
            now.iter().map(|s| (s.stale, s.counted)).collect::<Vec<_>>(),
            [(false, true), (true, false)]
        );
        let later = statuses(&beats, 100_000);
        assert!(later.iter().all(|s| s.stale && s.counted));
    }

    #[test]
    fn a_retired_location_never_counts_even_when_all_are_stale() {
        let beats = [
            ("a".to_owned(), 10_000, 1_000, false),
            ("b".to_owned(), 10_000, 1_000, true),
        ];
        let now = statuses(&beats, 10_500);
        let judged = |at: &[LocationStatus]| -> Vec<(bool, bool, bool)> {
            at.iter().map(|s| (s.stale, s.counted, s.retired)).collect()
        };
        assert_eq!(judged(&now), [(false, true, false), (true, false, true)]);
        let later = statuses(&beats, 100_000);
        assert_eq!(judged(&later), [(true, true, false), (true, false, true)]);
    }
}
