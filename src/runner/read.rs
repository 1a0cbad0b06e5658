//! Reading a response body: an event stream event by event, each stamped with the arrival
//! of its last chunk, or a whole capped body; every way it ends is classified.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sse_stream::SseByteStream;

use super::body::{ArrivalClock, BodyError, TimedBody};
use crate::measurement::Recorder;
use crate::provider::Adapter;
use crate::result::Outcome;

/// How long to wait for the end of a body after its terminal event.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// How reading a body ended: at its end, or with a classified failure and its description.
pub type ReadResult = Result<(), (Outcome, String)>;

/// Reads an SSE body event by event, each stamped with the arrival of its last chunk, until
/// the terminal event, an error event, the end of the body or `deadline`. The measurement
/// hot path: `benches/measurement.rs` drives it with recorded streams.
pub async fn read_sse<S, E>(
    body: TimedBody<S>,
    clock: &ArrivalClock,
    adapter: &dyn Adapter,
    recorder: &mut Recorder,
    deadline: Instant,
) -> ReadResult
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut events = SseByteStream::new(body);
    // One timer for the whole stream (a timeout per event made and dropped one each time).
    let expiry = tokio::time::sleep_until(deadline.into());
    tokio::pin!(expiry);
    loop {
        let next = tokio::select! {
            biased;
            next = events.next() => next,
            () = &mut expiry => {
                return Err((
                    Outcome::Timeout,
                    "the run's deadline passed mid-stream (timeout)".to_owned(),
                ));
            }
        };
        match next {
            None => return Ok(()),
            Some(Ok(event)) => {
                let at = clock.latest_us();
                adapter
                    .decode_event(&event, &mut |decoded| recorder.event_us(at, decoded))
                    .map_err(|err| (Outcome::Malformed, err.0))?;
                if recorder.is_finished() {
                    drain(&mut events, deadline).await;
                    return Ok(());
                }
            }
            Some(Err(sse_stream::Error::Body(source))) => {
                return Err(match source.downcast::<BodyError>() {
                    Ok(body_error) => body_failure(*body_error),
                    Err(other) => (Outcome::Truncated, other.to_string()),
                });
            }
            Some(Err(other)) => {
                return Err((
                    Outcome::Malformed,
                    format!("not a valid SSE stream: {other}"),
                ));
            }
        }
    }
}

/// Reads what follows the terminal event (the chunked-encoding end, usually already in
/// flight) so the connection goes back to the pool instead of being closed. Bounded by
/// [`DRAIN_GRACE`], the deadline and the body cap; whatever it finds is ignored.
async fn drain<S: Stream + Unpin>(events: &mut S, deadline: Instant) {
    let until = deadline.min(Instant::now() + DRAIN_GRACE);
    while let Ok(Some(_)) = tokio::time::timeout_at(until.into(), events.next()).await {}
}

/// Reads a whole JSON body (stamped chunk by chunk as it arrives), then decodes it.
pub(super) async fn read_whole<S>(
    body: TimedBody<S>,
    clock: &ArrivalClock,
    adapter: &dyn Adapter,
    recorder: &mut Recorder,
    deadline: Instant,
) -> ReadResult
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    let (bytes, failure) = collect(body, deadline).await;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let at = clock.latest_us();
    adapter
        .decode_body(&bytes, &mut |decoded| recorder.event_us(at, decoded))
        .map_err(|err| (Outcome::Malformed, err.0))
}

/// Collects a capped body; on failure, what arrived and why it stopped.
pub(super) async fn collect<S>(
    mut body: TimedBody<S>,
    deadline: Instant,
) -> (Vec<u8>, Option<(Outcome, String)>)
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    let mut bytes = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline.into(), body.next()).await {
            Err(_) => {
                let message = format!(
                    "the run's deadline passed after {} body bytes (timeout)",
                    bytes.len()
                );
                return (bytes, Some((Outcome::Timeout, message)));
            }
            Ok(None) => return (bytes, None),
            Ok(Some(Ok(chunk))) => bytes.extend_from_slice(&chunk),
            Ok(Some(Err(err))) => return (bytes, Some(body_failure(err))),
        }
    }
}

fn body_failure(err: BodyError) -> (Outcome, String) {
    let outcome = match err {
        BodyError::TooLarge { .. } => Outcome::TooLarge,
        BodyError::Stalled { .. } => Outcome::Stalled,
        BodyError::Transport { .. } => Outcome::Truncated,
    };
    (outcome, err.to_string())
}
