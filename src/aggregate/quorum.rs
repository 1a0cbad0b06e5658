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

/// What a publisher knows of one location's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Its name.
    pub location: String,
    /// Unix ms of its last heartbeat, on its prober's clock.
    pub seen_ms: i64,
    /// How long it has been silent, ms: on one clock for the whole fleet where the store
    /// keeps one, else the publisher's now less `seen_ms`.
    pub silent_ms: i64,
    /// Its shortest schedule, ms.
    pub shortest_ms: i64,
    /// Taken out of service.
    pub retired: bool,
}

/// Every location's status from its last heartbeat.
pub fn statuses(heard: &[Heard]) -> Vec<LocationStatus> {
    let mut out: Vec<LocationStatus> = heard
        .iter()
        .map(|heard| LocationStatus {
            location: heard.location.clone(),
            seen_ms: heard.seen_ms,
            shortest_ms: heard.shortest_ms,
            stale: heard.retired
                || heard.silent_ms > STALE_AFTER_SCHEDULES * heard.shortest_ms.max(1),
            counted: false,
            retired: heard.retired,
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

    /// Locations heard at `seen` (with `retired`), every 1,000 ms, judged at `now_ms` on
    /// their own clock.
    fn heard(beats: &[(&str, i64, bool)], now_ms: i64) -> Vec<LocationStatus> {
        let heard: Vec<Heard> = beats
            .iter()
            .map(|&(location, seen_ms, retired)| Heard {
                location: location.to_owned(),
                seen_ms,
                silent_ms: now_ms - seen_ms,
                shortest_ms: 1_000,
                retired,
            })
            .collect();
        statuses(&heard)
    }

    #[test]
    fn a_silent_location_is_stale_and_counts_only_when_all_are() {
        let beats = [("a", 10_000, false), ("b", 2_000, false)];
        let statuses = |now_ms| heard(&beats, now_ms);
        let now = statuses(10_500);
        assert_eq!(
            now.iter().map(|s| (s.stale, s.counted)).collect::<Vec<_>>(),
            [(false, true), (true, false)]
        );
        let later = statuses(100_000);
        assert!(later.iter().all(|s| s.stale && s.counted));
        // Silence is what is judged, not the prober's clock: at 10,500 on the store's
        // clock, b's prober (its clock 8 s behind) was heard 500 ms ago.
        let at = |location: &str, seen_ms| Heard {
            location: location.into(),
            seen_ms,
            silent_ms: 500,
            shortest_ms: 1_000,
            retired: false,
        };
        let both = super::statuses(&[at("a", 10_000), at("b", 2_000)]);
        assert!(both.iter().all(|s| !s.stale && s.counted), "{both:?}");
        assert_eq!(both[1].seen_ms, 2_000, "shown as its prober stamped it");
    }

    #[test]
    fn a_retired_location_never_counts_even_when_all_are_stale() {
        let beats = [("a", 10_000, false), ("b", 10_000, true)];
        let now = heard(&beats, 10_500);
        let judged = |at: &[LocationStatus]| -> Vec<(bool, bool, bool)> {
            at.iter().map(|s| (s.stale, s.counted, s.retired)).collect()
        };
        assert_eq!(judged(&now), [(false, true, false), (true, false, true)]);
        let later = heard(&beats, 100_000);
        assert_eq!(judged(&later), [(true, true, false), (true, false, true)]);
    }
}
