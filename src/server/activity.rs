//! The gRPC port's idle timeout: a connection with no request in flight for
//! `--grpc-idle-timeout-ms` is closed, however many PINGs it answers (HTTP/2 keepalive
//! and `--max-connection-age-seconds` do not cover a connection that only answers PINGs
//! and opens no stream). Each connection carries an [`Activity`] (through its connect
//! info, see `Severable`); [`ActivityLayer`] counts every request from its arrival until
//! its response body is done or dropped, so a long stream (health `Watch`) keeps its
//! connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Requests in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    born: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `born` to the end of the last request (0: none yet).
    quiet_since_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        Self {
            born: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
        }
    }

    /// When the connection turns idle for `timeout` if nothing changes: `None` while a
    /// request is in flight.
    pub fn idle_at(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| {
            self.born + Duration::from_millis(self.quiet_since_ms.load(Ordering::Acquire)) + timeout
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight; its drop ends it.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let since = u64::try_from(self.0.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.quiet_since_ms.fetch_max(since, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a gRPC connection tells its requests: the connect info of the socket below, and
/// its [`Activity`].
#[derive(Debug, Clone)]
pub struct ConnInfo<I> {
    pub inner: I,
    pub activity: Option<Arc<Activity>>,
}

/// Counts each request on its connection's [`Activity`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ActivityLayer;

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
}

/// The connection's activity, from the connect info tonic put in the request (plain or
/// under TLS).
fn activity_of<B>(req: &http::Request<B>) -> Option<Arc<Activity>> {
    type Plain = ConnInfo<tonic::transport::server::TcpConnectInfo>;
    let ext = req.extensions();
    ext.get::<Plain>()
        .or_else(|| {
            ext.get::<tonic::transport::server::TlsConnectInfo<Plain>>()
                .map(tonic::transport::server::TlsConnectInfo::get_ref)
        })
        .and_then(|c| c.activity.clone())
}

impl<S, B> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let in_flight = activity_of(&req).map(|a| a.begin());
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            Ok(match in_flight {
                // The request lasts until its body is done (or dropped).
                Some(in_flight) => response.map(|body| {
                    tonic::body::Body::new(CountedBody {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }),
                None => response,
            })
        })
    }
}

/// A response body that holds its request's [`InFlight`] until it is dropped.
struct CountedBody {
    inner: tonic::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for CountedBody {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The idle check of one connection's reads: an error once it has had no request in
/// flight for `timeout`; otherwise the timer is armed (with the reader's waker) for the
/// earliest moment it could be.
pub struct IdleCheck {
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleCheck {
    pub fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(timeout)),
            activity,
            timeout,
        }
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    pub fn check(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            match self.activity.idle_at(self.timeout) {
                Some(at) if now >= at => {
                    return Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the connection had no request in flight for the idle timeout",
                    ));
                }
                Some(at) => self.timer.as_mut().reset(at),
                // Busy: look again a timeout from now, the earliest it could have been
                // idle that long.
                None => self.timer.as_mut().reset(now + self.timeout),
            }
        }
        None
    }
}
