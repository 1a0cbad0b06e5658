//! The response body as it arrives: stamped, capped and watched for stalls.
//!
//! [`TimedBody`] wraps the byte stream of a response. Each chunk is stamped with the
//! monotonic clock the moment it is handed over, before any parsing, and the stamp is left in
//! an [`ArrivalClock`] that the SSE reader consults for every event it completes. The body
//! cap and the stall timeout are enforced here, on bytes, so a server that streams a
//! keep-alive comment every few seconds is slow but not stalled, and an endless body stops
//! at the cap without being buffered.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use thiserror::Error;
use tokio::time::Sleep;

/// Why the body stopped before its end.
#[derive(Debug, Error)]
pub enum BodyError {
    /// More bytes than the cap.
    #[error("body passed the {cap}-byte cap (max_body_bytes); stopped reading")]
    TooLarge {
        /// The cap.
        cap: u64,
    },
    /// No byte for the stall timeout.
    #[error("no byte for {}s after {read} bytes (stall_timeout)", .after.as_secs_f64())]
    Stalled {
        /// The stall timeout.
        after: Duration,
        /// Bytes read before the silence.
        read: u64,
    },
    /// The connection broke.
    #[error("connection broke mid-body after {read} bytes: {message}")]
    Transport {
        /// Bytes read before it broke.
        read: u64,
        /// What the HTTP stack said.
        message: String,
    },
}

/// The arrival time of the latest chunk, shared between the body and its reader.
///
/// The SSE parser yields every event a chunk completes before it asks for the next chunk, so
/// when the reader gets an event, the latest stamp is the arrival of the bytes that completed
/// it. Stored as microseconds since the run's t0, which is what measurement counts in, so a
/// stamp goes to the recorder as it is.
#[derive(Debug)]
pub struct ArrivalClock {
    origin: Instant,
    latest_us: AtomicU64,
}

impl ArrivalClock {
    /// A clock whose stamps count from `origin` (the run's t0, the recorder's too).
    pub fn new(origin: Instant) -> Arc<ArrivalClock> {
        Arc::new(ArrivalClock {
            origin,
            latest_us: AtomicU64::new(0),
        })
    }

    fn stamp(&self, at: Instant) {
        let us = u64::try_from(at.saturating_duration_since(self.origin).as_micros())
            .unwrap_or(u64::MAX);
        self.latest_us.store(us, Ordering::Relaxed);
    }

    /// When the latest chunk arrived, in microseconds after the origin.
    pub fn latest_us(&self) -> u64 {
        self.latest_us.load(Ordering::Relaxed)
    }
}

/// A byte stream stamped on arrival, capped at `cap` bytes, failing after `stall` of silence.
pub struct TimedBody<S> {
    inner: S,
    clock: Arc<ArrivalClock>,
    cap: u64,
    read: u64,
    stall: Duration,
    stall_timer: Pin<Box<Sleep>>,
    failed: bool,
}

impl<S> TimedBody<S> {
    /// Wraps `inner`; the stall timer starts now (the response has begun).
    pub fn new(inner: S, clock: Arc<ArrivalClock>, cap: u64, stall: Duration) -> Self {
        TimedBody {
            inner,
            clock,
            cap,
            read: 0,
            stall,
            stall_timer: Box::pin(tokio::time::sleep(stall)),
            failed: false,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl<S, E> Stream for TimedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = Instant::now();
                this.clock.stamp(now);
                this.read += chunk.len() as u64;
                if this.read > this.cap {
                    this.failed = true;
                    return Poll::Ready(Some(Err(BodyError::TooLarge { cap: this.cap })));
                }
                this.stall_timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(now + this.stall));
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.failed = true;
                Poll::Ready(Some(Err(BodyError::Transport {
                    read: this.read,
                    message: err.to_string(),
                })))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.stall_timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.failed = true;
                    Poll::Ready(Some(Err(BodyError::Stalled {
                        after: this.stall,
                        read: this.read,
                    })))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S> Unpin for TimedBody<S> {}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use futures_util::stream;

    use super::*;

    #[tokio::test]
    async fn cap_stops_reading() {
        let chunks = stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 100]))),
        );
        let clock = ArrivalClock::new(Instant::now());
        let mut body = TimedBody::new(chunks, clock, 250, Duration::from_secs(5));
        let mut ok = 0;
        while let Some(item) = body.next().await {
            match item {
                Ok(_) => ok += 1,
                Err(err) => assert!(matches!(err, BodyError::TooLarge { cap: 250 })),
            }
        }
        assert_eq!(ok, 2);
        assert_eq!(body.bytes_read(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_a_stall() {
        let chunks = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"data: x\n\n"))])
            .chain(stream::pending());
        let clock = ArrivalClock::new(Instant::now());
        let mut body = TimedBody::new(chunks, clock, 1000, Duration::from_secs(3));
        assert!(body.next().await.unwrap().is_ok());
        let err = body.next().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::Stalled { read: 9, .. }), "{err}");
        assert!(body.next().await.is_none());
    }
}
