//! Waiting until an exact instant.
//!
//! tokio's timer works in 1 ms ticks and rounds every deadline up to the next one, so a
//! `sleep_until` wakes 0–1 ms late. That is fine for schedules, not for the simulator's
//! injected delays or a bench's send times, where a late wake-up is added to every figure
//! measured against them. On Linux a [`Timer`] is a timerfd registered with the runtime's
//! reactor: the kernel wakes the very thread that polls the task's sockets, at the deadline,
//! with no timer slack (a futex or `epoll_wait` timeout is allowed to fire up to 50 µs late)
//! and no second thread to hand the wake-up over (each hand-over is a context switch, which
//! at thousands of sends a second costs more CPU than the sends). Elsewhere, or when the
//! kernel refuses a timerfd, it falls back to tokio's timer.

use std::time::Instant;

/// Successive precise waits of one task. Creating it costs nothing: the timerfd is opened on
/// the first wait that has to sleep and reused by the next ones, each costing two syscalls
/// (arm, read).
#[derive(Default)]
pub struct Timer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Timer {
    /// Returns at `deadline`, late by what waking a sleeping core costs (`cargo run --release
    /// --example wake_latency` measures it: 140 µs p50 on a 2-vCPU VM); at once when it has
    /// passed.
    pub async fn until(&mut self, deadline: Instant) {
        let now = Instant::now();
        if deadline <= now {
            return;
        }
        #[cfg(target_os = "linux")]
        if self.timerfd(deadline - now).await.is_ok() {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }

    /// Arms the timerfd `after` from now and waits for it to fire. An error (no timerfd, or
    /// no reactor) leaves the caller to fall back; a failed open is logged at debug level and
    /// tried again by the next wait.
    #[cfg(target_os = "linux")]
    async fn timerfd(&mut self, after: std::time::Duration) -> std::io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};

        let fd = match &mut self.fd {
            Some(fd) => fd,
            None => self.fd.insert(open().inspect_err(|err| {
                tracing::debug!(%err, "no timerfd; waits fall back to tokio's 1 ms ticks");
            })?),
        };
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: after.as_secs() as _,
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // Re-arming also clears an expiry a cancelled wait left unread.
        timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        loop {
            let mut ready = fd.readable().await?;
            // The 8 bytes count expiries; a read that would block was stale readiness.
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut [0u8; 8])?)) {
                Ok(read) => return read.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn open() -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};

    // CLOCK_MONOTONIC is the clock std's Instant reads on Linux.
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    // SAFETY: the OwnedFd is a valid open timerfd, owned by the AsyncFd for its whole life
    // and never replaced, so it keeps returning that same descriptor.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    Ok(registered?)
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
                Timer::default().until(deadline).await;
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
        Timer::default()
            .until(past - Duration::from_millis(5))
            .await;
        assert!(past.elapsed() < Duration::from_millis(5));
    }

    #[tokio::test]
    async fn one_timer_serves_successive_waits_and_survives_a_cancelled_one() {
        let mut timer = Timer::default();
        let start = Instant::now();
        // A wait dropped before its deadline leaves an armed fd behind; the next wait re-arms,
        // for an earlier deadline too. The dropped wait's deadline is far enough off that
        // the timeout comes first on a loaded machine.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(1),
            timer.until(start + Duration::from_millis(300)),
        )
        .await;
        assert!(cancelled.is_err());
        for ms in [8u64, 10, 14] {
            let deadline = start + Duration::from_millis(ms);
            timer.until(deadline).await;
            let now = Instant::now();
            assert!(now >= deadline, "{ms} ms wait woke early");
            assert!(now - deadline < Duration::from_millis(100));
        }
    }
}
