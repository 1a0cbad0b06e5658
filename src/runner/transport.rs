//! The HTTP client of a provider: how it is built, how it times new connections, and how its
//! failures before a response are classified.
//!
//! Connection setup (DNS, TCP, TLS) is measured apart from the request: a tower layer around
//! reqwest's connector stamps the start and end of every new connection into a slot that the
//! run installs as a task-local. A run that reuses a pooled connection finds its slot empty.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};
use std::time::Instant;

use reqwest::header::{HeaderMap, USER_AGENT};
use tower::{Layer, Service};

use crate::config::Provider;
use crate::result::Outcome;

tokio::task_local! {
    /// The connection-timing slot of the run being polled.
    static CONNECT_SLOT: Arc<ConnectSlot>;
}

/// Where a run learns whether, and how long, it spent opening a connection.
#[derive(Debug, Default)]
pub struct ConnectSlot {
    span: Mutex<Option<(Instant, Instant)>>,
}

impl ConnectSlot {
    /// Start and end of the connection this run opened, if it opened one.
    pub fn get(&self) -> Option<(Instant, Instant)> {
        *self
            .span
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn set(&self, start: Instant, end: Instant) {
        *self
            .span
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some((start, end));
    }

    /// Runs `future` with this slot as the one new connections report to.
    pub async fn scope<F: Future>(self: &Arc<Self>, future: F) -> F::Output {
        CONNECT_SLOT.scope(Arc::clone(self), future).await
    }
}

/// Wraps the connector so each new connection reports its setup time.
#[derive(Debug, Clone, Copy)]
struct ConnectTimingLayer;

impl<S> Layer<S> for ConnectTimingLayer {
    type Service = ConnectTiming<S>;

    fn layer(&self, inner: S) -> ConnectTiming<S> {
        ConnectTiming { inner }
    }
}

#[derive(Debug, Clone)]
struct ConnectTiming<S> {
    inner: S,
}

impl<S, R> Service<R> for ConnectTiming<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // The pool races a new connection against a pooled one coming free. When the pooled
        // one wins, this future finishes later in a background task, and its span belongs to
        // no run: reported to the run, it would move the run's t0 after its request was sent.
        // So the span goes to the slot only when the run's own task completes the connect.
        let slot = CONNECT_SLOT.try_with(Arc::clone).ok();
        let start = Instant::now();
        let connecting = self.inner.call(request);
        Box::pin(async move {
            let connection = connecting.await;
            let polled_by_run = |slot: &Arc<ConnectSlot>| {
                CONNECT_SLOT
                    .try_with(|current| Arc::ptr_eq(current, slot))
                    .unwrap_or(false)
            };
            if let (Some(slot), Ok(_)) = (slot, &connection)
                && polled_by_run(&slot)
            {
                slot.set(start, Instant::now());
            }
            connection
        })
    }
}

/// Builds the HTTP client for one provider: its headers, no compression (it would delay
/// chunks), Nagle off, connection timing on, and no redirects: a redirect would carry the
/// key's header (`x-api-key`, `x-goog-api-key` are not stripped as `Authorization` is) to
/// wherever the provider, or whoever answers for it, points; a probe's redirect is a
/// `client_error` naming where it led ([`redirect_refusal`]).
pub fn client(provider: &Provider) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto();
    let mut headers = HeaderMap::new();
    headers.insert(
        USER_AGENT,
        concat!("sonde/", env!("CARGO_PKG_VERSION"))
            .parse()
            .expect("static user agent is a valid header"),
    );
    for (name, value) in &provider.headers {
        headers.insert(name.clone(), value.clone());
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .tcp_nodelay(true)
        .connect_timeout(provider.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .connector_layer(ConnectTimingLayer)
        .build()
}

/// A client for sonde's own calls out (alert receivers, gateways' admin APIs): no redirect
/// followed, sonde's user agent, `timeout` for each request.
pub fn plain_client(timeout: std::time::Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sonde/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The error text of a redirect sonde did not follow: the status and the origin it led to
/// (scheme, host, port: never the path or query, which may carry tokens).
pub fn redirect_refusal(response: &reqwest::Response) -> String {
    let target = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|location| location.to_str().ok())
        .and_then(|location| response.url().join(location).ok())
        .map_or_else(
            || "an address it did not give".to_owned(),
            |url| url.origin().ascii_serialization(),
        );
    format!(
        "redirected (HTTP {}) to {target}; sonde does not follow redirects, so the key never \
         goes where base_url does not say: set base_url to the address that answers",
        response.status().as_u16()
    )
}

/// rustls is built with ring (no C toolchain beyond cc); installs it as the process default
/// (once; any client built afterwards, sonde's or not, uses it).
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one first; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Classifies a failure to get response headers: DNS, TLS, or the connection.
pub fn classify(err: &reqwest::Error) -> Outcome {
    if err.is_timeout() {
        return Outcome::Timeout;
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(current) = source {
        if is_tls(current) {
            return Outcome::Tls;
        }
        if current.to_string().starts_with("dns error") {
            return Outcome::Dns;
        }
        source = current.source();
    }
    Outcome::Connect
}

/// Whether `err` is, or wraps, a rustls error. The TLS stream reports it inside an
/// `io::Error`, which hyper wraps in another; `io::Error::source` skips the wrapped error, so
/// unwrap by hand.
fn is_tls(err: &(dyn StdError + 'static)) -> bool {
    let mut current = err;
    loop {
        if current.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        match current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => current = inner,
            None => return false,
        }
    }
}

/// The whole error chain in one line, for the result's `error` field.
pub fn describe(err: &reqwest::Error) -> String {
    let text = crate::sanitize::with_causes(err);
    match err.url() {
        Some(url) => text.replace(&format!(" for url ({url})"), ""),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A connector whose connections are made at once.
    struct Instantly;

    impl Service<()> for Instantly {
        type Response = ();
        type Error = Infallible;
        type Future = std::future::Ready<Result<(), Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_connect_the_run_completes_is_its_own() {
        let slot = Arc::new(ConnectSlot::default());
        let mut service = ConnectTimingLayer.layer(Instantly);
        slot.scope(async { service.call(()).await.unwrap() }).await;
        let (start, end) = slot.get().expect("the run's own connect is reported");
        assert!(start <= end);
    }

    #[tokio::test]
    async fn a_connect_finished_in_the_background_is_nobodys() {
        let slot = Arc::new(ConnectSlot::default());
        let mut service = ConnectTimingLayer.layer(Instantly);
        // Started by the run, then finished by another task: what the pool does with the
        // losing connect when a pooled connection wins the race.
        let connecting = CONNECT_SLOT.sync_scope(Arc::clone(&slot), || service.call(()));
        tokio::spawn(connecting).await.unwrap().unwrap();
        assert_eq!(slot.get(), None);
    }
}
