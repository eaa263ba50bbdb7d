//! Request ids, as isp-kit's `requestid` package and its `RequestId` middlewares: the
//! `x-request-id` header, 32 lowercase hex digits when made here.
//!
//! - Server side, [`RequestIdLayer`]: the request's id is its `x-request-id`, or a new one
//!   when it has none (or an empty or non-ASCII one); it goes into the request's extensions
//!   (a [`RequestId`], read with [`RequestId::from_extensions`]), becomes the current id
//!   ([`RequestId::current`]) while the call is served, and is echoed on the response.
//! - Client side, [`PropagateRequestIdLayer`]: an outgoing request gets the id the caller
//!   put in its extensions, else the current one (the call being served, as Go's
//!   `requestid.FromContext(ctx)`), else a new one; an `x-request-id` already set is kept.

use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

/// The request id header (Go: `requestid.Header`).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The id of the call being served, while its future is polled.
    static CURRENT: RequestId;
}

/// A request id: the value of an `x-request-id` header, printable ASCII, not empty.
///
/// Cheap to clone (the header value's bytes are shared). Made by [`RequestId::new`] it is 16
/// random bytes as 32 lowercase hex digits, as isp-kit's `requestid.Next`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A new id: 16 random bytes (the thread's CSPRNG) as 32 lowercase hex digits.
    #[must_use]
    pub fn new() -> Self {
        // One allocation, which owns the digits and counts the clones: an id is cloned into
        // the extensions, the header, the task-local and the echo (bytes copied into a `Vec`
        // would take a second allocation at the first clone, to share them).
        let hex = bytes::Bytes::from_owner(request_id_bytes());
        // Hex digits are a valid header value.
        let mut value = HeaderValue::from_maybe_shared(hex).unwrap_or_else(|_| unreachable!());
        // A value that never repeats is not worth an HPACK table entry (RFC 7541 §7.1.3).
        value.set_sensitive(true);
        Self(value)
    }

    /// The id a header value holds: `None` when it is empty or not printable ASCII.
    #[must_use]
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        (!value.is_empty() && value.to_str().is_ok()).then(|| Self(value.clone()))
    }

    /// An id from text: `None` when it is empty or not printable ASCII.
    #[must_use]
    pub fn parse(id: &str) -> Option<Self> {
        Self::from_header(&HeaderValue::from_str(id).ok()?)
    }

    /// The id of a request whose headers are given: its first `x-request-id`, if that is an
    /// id.
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers.get(REQUEST_ID_HEADER).and_then(Self::from_header)
    }

    /// The id [`RequestIdLayer`] put in a request's extensions (or a caller put in an
    /// outgoing request's, for [`PropagateRequestIdLayer`]).
    #[must_use]
    pub fn from_extensions(extensions: &Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    /// The id of the call being served by this task: set by [`RequestIdLayer`] while the
    /// call's future (the inner service's) is polled, or by [`RequestId::scope`]. `None`
    /// elsewhere, including in tasks the handler spawns: pass it on with
    /// [`scope`](Self::scope).
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The current id ([`current`](Self::current)), or a new one.
    #[must_use]
    pub fn current_or_new() -> Self {
        Self::current().unwrap_or_default()
    }

    /// Runs `future` with this id as the [`current`](Self::current) one (for a task a
    /// handler spawns, say).
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Checked when made.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value, marked sensitive (sent as a never-indexed HPACK literal).
    #[must_use]
    pub fn to_header_value(&self) -> HeaderValue {
        let mut value = self.0.clone();
        value.set_sensitive(true);
        value
    }
}

impl Default for RequestId {
    /// A new id, as [`RequestId::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

/// A new request id as isp-kit makes one (`requestid.Next`): 16 random bytes as 32 lowercase
/// hex digits.
#[must_use]
pub fn new_request_id() -> String {
    request_id_bytes().iter().map(|&c| char::from(c)).collect()
}

/// A new request id's 32 lowercase hex digits, without a `String` (16 bytes from the thread's
/// CSPRNG, `rand::random`).
#[must_use]
pub fn request_id_bytes() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::random();
    let mut hex = [0; 32];
    for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    hex
}

/// Which responses [`RequestIdLayer`] sets the id on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Echo {
    /// Every response (isp-kit's HTTP error handler sets it on error responses; a browser or
    /// `curl` user sees which id the server logged under).
    #[default]
    Always,
    /// Only when the request had none and the server made it: a caller that sent one knows
    /// it. What cluster-grpc does (isp-kit's gRPC server sets none; an echo costs an HPACK
    /// literal each way on every call).
    WhenNew,
    /// None.
    Never,
}

/// Server side: every request gets a request id (Go: the `RequestId` middleware of
/// `grpc/endpoint` and `http/endpoint`).
///
/// - The id is the request's `x-request-id` when it has a non-empty, printable ASCII one;
///   otherwise a new one ([`RequestId::new`]), which is also set as the request's
///   `x-request-id` so that code reading the header sees the same id.
/// - It goes into the request's extensions ([`RequestId::from_extensions`]); the request's
///   span made by [`TraceLayer`](crate::TraceLayer) (placed inside this layer) and the log
///   line of [`LogLayer`](crate::LogLayer) carry it as `request_id`.
/// - It is [`RequestId::current`] while the inner service's `call` runs and its future is
///   polled, so that calls made meanwhile pass it on (see [`PropagateRequestIdLayer`]).
/// - It is echoed as the response's `x-request-id` (unless the inner service set one), sent
///   as a never-indexed HPACK literal on HTTP/2: on every response by default, see
///   [`echo`](Self::echo).
///
/// Cost (`cargo bench -p cluster-pipeline --bench layers`): a header lookup, an extension
/// (one small allocation), the header value's bytes shared (one allocation the first time),
/// a task-local set around `call` and each poll of the inner future; with the echo, one
/// header more on the response (on HTTP/2 about 45 bytes Huffman-coded by the server and
/// decoded by the client). A new id costs 16 random bytes and one allocation more.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer {
    echo: Echo,
}

impl RequestIdLayer {
    /// The layer, echoing the id on every response.
    #[must_use]
    pub const fn new() -> Self {
        Self { echo: Echo::Always }
    }

    /// Which responses get the id (default [`Echo::Always`]).
    #[must_use]
    pub const fn echo(mut self, echo: Echo) -> Self {
        self.echo = echo;
        self
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService {
            inner,
            echo: self.echo,
        }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
    echo: Echo,
}

impl<S, B, ResB> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let (id, new) = match RequestId::from_headers(request.headers()) {
            Some(id) => (id, false),
            None => {
                let id = RequestId::new();
                request
                    .headers_mut()
                    .insert(REQUEST_ID_HEADER, id.0.clone());
                (id, true)
            }
        };
        request.extensions_mut().insert(id.clone());
        let echo = match self.echo {
            Echo::Always => true,
            Echo::WhenNew => new,
            Echo::Never => false,
        };
        let echo = echo.then(|| id.clone());
        let inner = &mut self.inner;
        let future = CURRENT.sync_scope(id.clone(), || inner.call(request));
        RequestIdFuture {
            inner: CURRENT.scope(id, future),
            echo,
        }
    }
}

pin_project! {
    /// The future of [`RequestIdService`].
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: TaskLocalFuture<RequestId, F>,
        echo: Option<RequestId>,
    }
}

impl<F, ResB, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut result, this.echo.take()) {
            response
                .headers_mut()
                .entry(REQUEST_ID_HEADER)
                .or_insert_with(|| id.to_header_value());
        }
        Poll::Ready(result)
    }
}

/// Client side: every outgoing request carries a request id (Go: the `RequestId` middleware
/// of `grpc/client` and `http/httpcli`).
///
/// An `x-request-id` already on the request is kept; otherwise the id is the [`RequestId`]
/// the caller put in the request's extensions (`request.extensions_mut().insert(id)`, the id
/// of the context it works for), else [`RequestId::current`] (the call being served), else a
/// new one. It is sent as a never-indexed HPACK literal on HTTP/2.
///
/// Cost: a header lookup and insert, a task-local read; a new id costs as on the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateRequestIdLayer;

impl<S> Layer<S> for PropagateRequestIdLayer {
    type Service = PropagateRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateRequestId { inner }
    }
}

/// The service of [`PropagateRequestIdLayer`].
#[derive(Debug, Clone)]
pub struct PropagateRequestId<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for PropagateRequestId<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if RequestId::from_headers(request.headers()).is_none() {
            let id = RequestId::from_extensions(request.extensions())
                .cloned()
                .unwrap_or_else(RequestId::current_or_new);
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, id.to_header_value());
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_and_new_each_time() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
        let id = RequestId::new();
        assert_eq!(id.as_str().len(), 32);
        assert!(id.to_header_value().is_sensitive());
    }

    #[test]
    fn only_printable_ascii_makes_an_id() {
        assert_eq!(RequestId::parse("abc").unwrap().as_str(), "abc");
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("ид").is_none());
        assert!(RequestId::from_header(&HeaderValue::from_bytes(b"a\xffb").unwrap()).is_none());
        assert_eq!(RequestId::parse("x").unwrap().to_string(), "x");
    }

    #[tokio::test]
    async fn the_current_id_is_the_scopes() {
        assert!(RequestId::current().is_none());
        let id = RequestId::parse("outer").unwrap();
        let seen = id.clone().scope(async { RequestId::current() }).await;
        assert_eq!(seen, Some(id));
        assert!(RequestId::current().is_none());
    }
}
