//! The server's request deadline (`--request-timeout-ms`), answered as gRPC's
//! `DEADLINE_EXCEEDED`. tonic's own server timeout answers `CANCELLED`, which clients and
//! proxies read as "the caller gave up" and do not treat as a deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;

/// Wraps every gRPC call in the server's deadline.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    after: Duration,
}

impl DeadlineLayer {
    pub fn new(after: Duration) -> Self {
        Self { after }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            after: self.after,
        }
    }
}

/// A service answering `DEADLINE_EXCEEDED` when the inner call has not produced its response
/// (for a unary call: read the request, decided and encoded the answer) within `after`. A
/// streaming response that has started is not cut.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    after: Duration,
}

impl<S, Req, B> tower::Service<Req> for Deadline<S>
where
    S: tower::Service<Req, Response = ::http::Response<B>>,
    S::Future: Send + 'static,
    B: Default,
{
    type Response = ::http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let call = self.inner.call(req);
        let after = self.after;
        Box::pin(async move {
            match tokio::time::timeout(after, call).await {
                Ok(answer) => answer,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the request took longer than the server's deadline of {} ms",
                    after.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    /// A service that answers at once (`Some`) or never (`None`).
    #[derive(Clone)]
    struct Answers(Option<&'static str>);

    impl Service<()> for Answers {
        type Response = ::http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            let answer = self.0;
            Box::pin(async move {
                match answer {
                    Some(text) => Ok(::http::Response::new(text.to_owned())),
                    None => std::future::pending().await,
                }
            })
        }
    }

    #[tokio::test]
    async fn a_call_past_the_deadline_is_deadline_exceeded_and_others_pass() {
        let layer = DeadlineLayer::new(Duration::from_millis(20));
        let late = layer.layer(Answers(None)).call(()).await.unwrap();
        let status = Status::from_header_map(late.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("20 ms"), "{}", status.message());
        let in_time = layer.layer(Answers(Some("answer"))).call(()).await.unwrap();
        assert_eq!(in_time.body(), "answer");
        assert!(in_time.headers().get("grpc-status").is_none());
    }
}
