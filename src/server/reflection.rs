//! Server reflection with bounded answers. Its requests are small (a symbol or file name and
//! a host): [`REQUEST_BYTES`] is the most decoded, so a huge name is refused undecoded. Its
//! errors quote the name asked for (`symbol '...' not found`): [`BoundedErrors`] rewrites
//! every `grpc-message` it answers, in the response head and in the trailers, to at most
//! [`MESSAGE_BYTES`], escaped with `syntax::escape`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Frame, SizeHint};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::server::NamedService;

use crate::policy::syntax;

/// The largest reflection request decoded (a symbol or file name and a host).
pub const REQUEST_BYTES: usize = 16 * 1024;

/// The longest `grpc-message` a reflection error carries, in bytes.
pub const MESSAGE_BYTES: usize = 256;

/// What gRPC asks to be percent-encoded in `grpc-message`: bytes outside 0x20 to 0x7e and
/// `%` (the escaped text has no others).
const MESSAGE_ENCODING: &AsciiSet = &CONTROLS.add(b'%');

/// A gRPC service whose status messages are bounded and escaped.
#[derive(Debug, Clone)]
pub struct BoundedErrors<S>(pub S);

impl<S: NamedService> NamedService for BoundedErrors<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for BoundedErrors<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = self.0.call(request);
        Box::pin(async move {
            let (mut head, body) = call.await?.into_parts();
            bound_message(&mut head.headers);
            Ok(http::Response::from_parts(
                head,
                Body::new(BoundedBody(body)),
            ))
        })
    }
}

/// A response body whose trailers get [`bound_message`].
struct BoundedBody(Body);

impl http_body::Body for BoundedBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.0).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|mut frame| {
                if let Some(trailers) = frame.trailers_mut() {
                    bound_message(trailers);
                }
                frame
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Rewrites `grpc-message`, if any, to its escaped text cut at [`MESSAGE_BYTES`].
fn bound_message(headers: &mut HeaderMap) {
    let Some(value) = headers.get("grpc-message") else {
        return;
    };
    let text = percent_decode(value.as_bytes()).decode_utf8_lossy();
    let bounded = bounded_text(&text);
    let encoded = utf8_percent_encode(&bounded, MESSAGE_ENCODING).to_string();
    match HeaderValue::try_from(encoded) {
        Ok(value) => {
            headers.insert("grpc-message", value);
        }
        Err(_) => {
            headers.remove("grpc-message");
        }
    }
}

/// `text` escaped (printable ASCII only) and cut at [`MESSAGE_BYTES`].
fn bounded_text(text: &str) -> String {
    let mut escaped = syntax::escape(text);
    if escaped.len() > MESSAGE_BYTES {
        // Printable ASCII: every byte is a character boundary.
        escaped.truncate(MESSAGE_BYTES - 3);
        escaped.push_str("...");
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped_and_cut() {
        let mut headers = HeaderMap::new();
        let long = format!("symbol '{}\u{202e}\n' not found", "x".repeat(10_000));
        let encoded = utf8_percent_encode(&long, MESSAGE_ENCODING).to_string();
        headers.insert("grpc-message", HeaderValue::try_from(encoded).unwrap());
        bound_message(&mut headers);
        let value = headers["grpc-message"].to_str().unwrap();
        assert!(value.len() <= MESSAGE_BYTES, "{value}");
        assert!(value.starts_with("symbol%20'xxx") || value.starts_with("symbol 'xxx"));
        assert!(value.ends_with("..."), "{value}");
        // Control and bidi characters are escaped before they are cut or encoded.
        assert_eq!(
            bounded_text("a\u{202e}b\nc%"),
            "a\\u{202e}b\\nc%".to_owned()
        );
        let mut short = HeaderMap::new();
        short.insert(
            "grpc-message",
            HeaderValue::from_static("file%20'a%25b'%20not%20found"),
        );
        bound_message(&mut short);
        assert_eq!(short["grpc-message"], "file 'a%25b' not found");
        let decoded = percent_decode(short["grpc-message"].as_bytes()).decode_utf8_lossy();
        assert_eq!(decoded, "file 'a%b' not found");
    }
}
