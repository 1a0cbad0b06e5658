//! Waiting until an exact instant.
//!
//! tokio's timer works in 1 ms ticks and rounds every deadline up to the next one, so a
//! `sleep_until` wakes 0–1 ms late. That is fine for schedules, not for the simulator's
//! injected delays or a bench's send times, where a late wake-up is added to every figure
//! measured against them. [`until`] hands the deadline to one dedicated thread that keeps the
//! pending deadlines in a heap and sleeps on the OS clock to the earliest (a futex wait: tens
//! of µs late on Linux), then wakes the task. A deadline already passed returns at once
//! without touching the thread. The cost is one cross-thread wake per wait, no spinning.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::oneshot;

/// A pending wait, ordered by deadline (then arrival, so equal deadlines need no order on
/// the sender). Dropping it wakes its waiter: a dropped oneshot sender ends the receive, so
/// popping it off the heap — or the thread ending — releases the task.
struct Pending {
    at: Instant,
    seq: u64,
    _waiter: oneshot::Sender<()>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

fn thread() -> &'static mpsc::Sender<(Instant, oneshot::Sender<()>)> {
    static SENDER: OnceLock<mpsc::Sender<(Instant, oneshot::Sender<()>)>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<(Instant, oneshot::Sender<()>)>();
        let spawned = std::thread::Builder::new()
            .name("sonde-timer".into())
            .spawn(move || {
                let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
                let mut seq = 0u64;
                loop {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|Reverse(next)| next.at <= now) {
                        heap.pop();
                    }
                    let next = match heap.peek() {
                        Some(Reverse(next)) => receiver.recv_timeout(next.at - now),
                        None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match next {
                        Ok((at, waiter)) => {
                            seq += 1;
                            heap.push(Reverse(Pending {
                                at,
                                seq,
                                _waiter: waiter,
                            }));
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start the precise timer thread; waits fall back to tokio's 1 ms ticks");
        }
        sender
    })
}

/// Returns at `deadline`, within tens of µs; at once when it has passed.
pub async fn until(deadline: Instant) {
    if deadline <= Instant::now() {
        return;
    }
    let (waiter, woken) = oneshot::channel();
    if thread().send((deadline, waiter)).is_err() {
        tokio::time::sleep_until(deadline.into()).await;
        return;
    }
    let _ = woken.await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_on_time_in_order_and_at_once_when_past() {
        let start = Instant::now();
        let waits = [7u64, 3, 12, 3].map(|ms| {
            tokio::spawn(async move {
                let deadline = start + Duration::from_millis(ms);
                until(deadline).await;
                let now = Instant::now();
                (ms, now >= deadline, now.saturating_duration_since(deadline))
            })
        });
        for wait in waits {
            let (ms, on_time, late) = wait.await.unwrap();
            assert!(on_time, "{ms} ms wait woke early");
            assert!(
                late < Duration::from_millis(20),
                "{ms} ms wait late by {late:?}"
            );
        }
        let past = Instant::now();
        until(past - Duration::from_millis(5)).await;
        assert!(past.elapsed() < Duration::from_millis(5));
    }
}
