//! One log line per call (Go: `grpclog.CombinedLog` and `httplog.CombinedLog`, one entry per
//! call).
//!
//! The line, target [`TARGET`] (`cluster_pipeline::log`), at INFO unless set otherwise:
//!
//! | field | what |
//! |---|---|
//! | `endpoint` | the [`EndpointSource`]'s (gRPC: `proxy_method_name`; HTTP: the matched route, else the path); a response's [`EndpointName`] extension wins |
//! | `method` | the HTTP method; for gRPC the RPC's path (`/isp.BackendService/Request`) |
//! | `status` | the HTTP status; for gRPC the `grpc-status` code as a number: of a trailers-only answer (every error of an isp-kit server), else of the trailers as they pass; `1` (`CANCELLED`) when the response body is dropped before them (the client went away), `0` (OK) when it ends without them |
//! | `duration_ms` | from the request to the end of the response body, in milliseconds with microseconds (`0.231`) |
//! | `request_id` | the [`RequestId`] extension, else the `x-request-id` header |
//! | `request_body`, `response_body` | only when DEBUG is enabled for the target: see below |
//!
//! The message is `grpc handler: log` or `http handler: log`, isp-kit's. No header value is
//! ever logged (tokens travel there), but for the request id and the endpoint.
//!
//! **Bodies**, when DEBUG is enabled for [`TARGET`] (e.g. `RUST_LOG=info,cluster_pipeline=debug`,
//! or the bootstrap's `logLevel: debug`): as they stream through (what the handler read of
//! the request, what was sent of the response), up to [`DEFAULT_MAX_BODY`] (16 KiB) each,
//! decoded by the layer's [`BodyDecoder`] (gRPC: the transport gives one that takes the JSON
//! out of its message), parsed as JSON and masked by `cluster-proto`'s
//! [`SecretMasker`]: every value under a key holding `password`, `secret`, `token`, … is
//! `"***"`. A body over the bound is logged as `<N bytes, over the 16384 logged>`, one that
//! is not JSON as `<N bytes, not JSON>` (never raw: it could not be masked), an empty one as
//! nothing (`response_body=`). Unlike isp-kit's, bodies of any content type are considered:
//! what is not JSON is only sized.
//!
//! The line is written when the response body ends (or is dropped, when the client goes
//! away first), outside the request's span: it carries its own `endpoint` and `request_id`,
//! and a formatter printing span fields does not print them twice.

use crate::endpoint::{EndpointName, EndpointSource, Protocol};
use crate::request_id::RequestId;
use bytes::Buf;
use cluster_proto::secrets::SecretMasker;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Level;

/// The log line's target: `cluster_pipeline::log`.
pub const TARGET: &str = "cluster_pipeline::log";

/// How much of each body a line holds at most: 16 KiB (a longer body is logged as its size;
/// 16 KiB is also where Docker's log driver splits a line).
pub const DEFAULT_MAX_BODY: usize = 16 * 1024;

/// Turns a body's bytes, as they came over HTTP, into the JSON to log; `None` when there is
/// no JSON in them. HTTP's is the identity; gRPC's default strips the 5-byte message
/// prefix (cluster-grpc gives one that reads `isp.Message`'s `BytesBody`).
pub type BodyDecoder = fn(&[u8]) -> Option<Cow<'_, [u8]>>;

/// The identity: HTTP bodies are the JSON.
fn identity(bytes: &[u8]) -> Option<Cow<'_, [u8]>> {
    Some(Cow::Borrowed(bytes))
}

/// gRPC: the payload of one uncompressed length-prefixed message.
fn grpc_payload(bytes: &[u8]) -> Option<Cow<'_, [u8]>> {
    grpc_message(bytes).map(Cow::Borrowed)
}

/// The payload of a body holding exactly one uncompressed gRPC message (the 5-byte prefix:
/// a compression flag of 0, a big-endian length); `None` otherwise.
#[must_use]
pub fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&[0, a, b, c, d], payload) = body.split_first_chunk::<5>()? else {
        return None;
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    (usize::try_from(len).ok()? == payload.len()).then_some(payload)
}

/// `grpc-status` of a call whose response ended before its trailers: `CANCELLED`.
const GRPC_CANCELLED: u16 = 1;

/// The `grpc-status` of a header map (a trailers-only answer's headers, or trailers).
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

#[derive(Clone)]
struct LogConfig {
    protocol: Protocol,
    endpoint: EndpointSource,
    level: Level,
    max_body: usize,
    masker: Arc<SecretMasker>,
    decoder: BodyDecoder,
}

impl fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogConfig")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("level", &self.level)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// One log line per call: see the [module docs](self) for what it holds.
///
/// Defaults: INFO; bodies at DEBUG, 16 KiB each at most, masked with a
/// [`SecretMasker::new`]'s default words.
///
/// Cost: when the line's level is not enabled, one check of it (an atomic load when no
/// subscriber wants it) and a pass-through wrapper around each body. When it is: the
/// endpoint, method and request id copied (a few small allocations), a clock read at each
/// end, and the line itself; with bodies, a copy of up to the bound of each and their JSON
/// parsed, masked and printed again.
#[derive(Debug, Clone)]
pub struct LogLayer {
    config: Arc<LogConfig>,
}

impl LogLayer {
    /// For isp-kit's gRPC convention: endpoint from `proxy_method_name`, status from
    /// `grpc-status`, bodies taken out of the gRPC message prefix.
    #[must_use]
    pub fn grpc() -> Self {
        Self::new(Protocol::Grpc)
    }

    /// For HTTP: endpoint from the [`EndpointName`] extension, else the path; the HTTP
    /// status; bodies as they are.
    #[must_use]
    pub fn http() -> Self {
        Self::new(Protocol::Http)
    }

    /// For `protocol`, with its defaults.
    #[must_use]
    pub fn new(protocol: Protocol) -> Self {
        Self {
            config: Arc::new(LogConfig {
                protocol,
                endpoint: EndpointSource::of(protocol),
                level: Level::INFO,
                max_body: DEFAULT_MAX_BODY,
                masker: Arc::new(SecretMasker::new()),
                decoder: match protocol {
                    Protocol::Grpc => grpc_payload,
                    Protocol::Http => identity,
                },
            }),
        }
    }

    fn config(&mut self) -> &mut LogConfig {
        Arc::make_mut(&mut self.config)
    }

    /// The line's level (default INFO).
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.config().level = level;
        self
    }

    /// Where the endpoint comes from.
    #[must_use]
    pub fn endpoint(mut self, source: EndpointSource) -> Self {
        self.config().endpoint = source;
        self
    }

    /// How much of each body is logged at most (default [`DEFAULT_MAX_BODY`], 16 KiB).
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config().max_body = bytes;
        self
    }

    /// The masker of the bodies (default: a [`SecretMasker::new`]); share the one your
    /// configs are masked with to mask the same words.
    #[must_use]
    pub fn masker(mut self, masker: Arc<SecretMasker>) -> Self {
        self.config().masker = masker;
        self
    }

    /// How bodies become JSON (see [`BodyDecoder`]).
    #[must_use]
    pub fn body_decoder(mut self, decoder: BodyDecoder) -> Self {
        self.config().decoder = decoder;
        self
    }
}

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Log {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service of [`LogLayer`].
#[derive(Debug, Clone)]
pub struct Log<S> {
    inner: S,
    config: Arc<LogConfig>,
}

/// Emits an event at a level chosen at run time (tracing's macros want a constant).
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {{
        let level = $level;
        if level == Level::ERROR {
            tracing::event!(target: TARGET, Level::ERROR, $($rest)+);
        } else if level == Level::WARN {
            tracing::event!(target: TARGET, Level::WARN, $($rest)+);
        } else if level == Level::INFO {
            tracing::event!(target: TARGET, Level::INFO, $($rest)+);
        } else if level == Level::DEBUG {
            tracing::event!(target: TARGET, Level::DEBUG, $($rest)+);
        } else {
            tracing::event!(target: TARGET, Level::TRACE, $($rest)+);
        }
    }};
}

/// Whether events of `level` are enabled for [`TARGET`].
fn enabled(level: Level) -> bool {
    if level == Level::ERROR {
        tracing::enabled!(target: TARGET, Level::ERROR)
    } else if level == Level::WARN {
        tracing::enabled!(target: TARGET, Level::WARN)
    } else if level == Level::INFO {
        tracing::enabled!(target: TARGET, Level::INFO)
    } else if level == Level::DEBUG {
        tracing::enabled!(target: TARGET, Level::DEBUG)
    } else {
        tracing::enabled!(target: TARGET, Level::TRACE)
    }
}

impl<S, B, ResB> Service<Request<B>> for Log<S>
where
    S: Service<Request<LogBody<B>>, Response = Response<ResB>>,
{
    type Response = Response<LogBody<ResB>>;
    type Error = S::Error;
    type Future = LogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let config = &self.config;
        if !enabled(config.level) {
            return LogFuture {
                inner: self.inner.call(request.map(LogBody::passthrough)),
                line: None,
            };
        }
        let start = Instant::now();
        let endpoint = config
            .endpoint
            .resolve(&request)
            .map(Cow::into_owned)
            .unwrap_or_default();
        let method = match config.protocol {
            Protocol::Grpc => request.uri().path().to_owned(),
            Protocol::Http => request.method().as_str().to_owned(),
        };
        let request_id = RequestId::from_extensions(request.extensions())
            .cloned()
            .or_else(|| RequestId::from_headers(request.headers()))
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let bodies = enabled(Level::DEBUG).then(|| Bodies {
            request: Arc::new(Mutex::new(Captured::default())),
            response: Captured::default(),
        });
        let tap = bodies.as_ref().map_or(Tap::None, |b| {
            Tap::Request(Arc::clone(&b.request), config.max_body)
        });
        let line = Line {
            config: Arc::clone(config),
            start,
            endpoint,
            method,
            request_id,
            status: None,
            bodies,
        };
        LogFuture {
            inner: self.inner.call(request.map(|body| LogBody::new(body, tap))),
            line: Some(Box::new(line)),
        }
    }
}

pin_project! {
    /// The future of [`Log`].
    pub struct LogFuture<F> {
        #[pin]
        inner: F,
        line: Option<Box<Line>>,
    }
}

impl<F, ResB, E> Future for LogFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<LogBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut line) = this.line.take() else {
            return Poll::Ready(result.map(|response| response.map(LogBody::passthrough)));
        };
        Poll::Ready(match result {
            Ok(response) => {
                line.status = match line.config.protocol {
                    Protocol::Grpc => grpc_status(response.headers()),
                    Protocol::Http => Some(response.status().as_u16()),
                };
                if let Some(name) = response.extensions().get::<EndpointName>() {
                    line.endpoint = name.as_str().to_owned();
                }
                Ok(response.map(|body| LogBody::new(body, Tap::Response(line))))
            }
            Err(error) => {
                line.emit_failed();
                Err(error)
            }
        })
    }
}

/// What was seen of a body.
#[derive(Debug, Default)]
struct Captured {
    /// The first bytes, up to the bound.
    bytes: Vec<u8>,
    /// How many there were in all.
    total: usize,
}

impl Captured {
    fn push(&mut self, data: &impl Buf, max: usize) {
        let len = data.remaining();
        self.total = self.total.saturating_add(len);
        if self.total > max {
            // Over the bound: only the size is logged.
            self.bytes = Vec::new();
            return;
        }
        let mut slices = [IoSlice::new(&[]); 16];
        let n = data.chunks_vectored(&mut slices);
        let mut copied = 0;
        for slice in &slices[..n] {
            self.bytes.extend_from_slice(slice);
            copied += slice.len();
        }
        if copied < len {
            // More chunks than one look shows: the body cannot be logged whole.
            self.total = usize::MAX;
            self.bytes = Vec::new();
        }
    }

    fn render(&self, config: &LogConfig) -> String {
        if self.total == 0 {
            return String::new();
        }
        if self.total > config.max_body {
            if self.total == usize::MAX {
                return "<not logged: a body in too many pieces>".to_owned();
            }
            return format!(
                "<{} bytes, over the {} logged>",
                self.total, config.max_body
            );
        }
        let not_json = || format!("<{} bytes, not JSON>", self.total);
        let Some(json) = (config.decoder)(&self.bytes) else {
            return not_json();
        };
        if json.is_empty() {
            return String::new();
        }
        match serde_json::from_slice::<serde_json::Value>(&json) {
            Ok(mut value) => {
                config.masker.mask_value(&mut value);
                value.to_string()
            }
            Err(_) => not_json(),
        }
    }
}

struct Bodies {
    request: Arc<Mutex<Captured>>,
    response: Captured,
}

/// A line being made: what the request said, what the response says as it goes.
struct Line {
    config: Arc<LogConfig>,
    start: Instant,
    endpoint: String,
    method: String,
    request_id: String,
    status: Option<u16>,
    bodies: Option<Bodies>,
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Line")
            .field("endpoint", &self.endpoint)
            .field("method", &self.method)
            .field("request_id", &self.request_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Line {
    fn message(&self) -> &'static str {
        match self.config.protocol {
            Protocol::Grpc => "grpc handler: log",
            Protocol::Http => "http handler: log",
        }
    }

    fn duration_ms(&self) -> f64 {
        let micros = u32::try_from(self.start.elapsed().as_micros()).unwrap_or(u32::MAX);
        f64::from(micros) / 1e3
    }

    fn emit(self) {
        let duration_ms = self.duration_ms();
        let status = self.status.unwrap_or(match self.config.protocol {
            Protocol::Grpc => 0,
            Protocol::Http => 200,
        });
        let message = self.message();
        let (endpoint, method, request_id) = (&self.endpoint, &self.method, &self.request_id);
        match &self.bodies {
            None => event_at!(
                self.config.level,
                endpoint = %endpoint,
                method = %method,
                status,
                duration_ms,
                request_id = %request_id,
                "{message}"
            ),
            Some(bodies) => {
                let request_body = bodies
                    .request
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .render(&self.config);
                let response_body = bodies.response.render(&self.config);
                event_at!(
                    self.config.level,
                    endpoint = %endpoint,
                    method = %method,
                    status,
                    duration_ms,
                    request_id = %request_id,
                    request_body = %request_body,
                    response_body = %response_body,
                    "{message}"
                );
            }
        }
    }

    /// The inner service failed (no response; a server drops the connection).
    fn emit_failed(&self) {
        let duration_ms = self.duration_ms();
        let message = self.message();
        event_at!(
            self.config.level,
            endpoint = %self.endpoint,
            method = %self.method,
            duration_ms,
            request_id = %self.request_id,
            "{message}: the service failed, no response"
        );
    }
}

/// What a [`LogBody`] does with the frames that pass.
enum Tap {
    /// Nothing.
    None,
    /// Copies the request's data, up to the bound.
    Request(Arc<Mutex<Captured>>, usize),
    /// Follows the response and writes the line when it ends.
    Response(Box<Line>),
}

pin_project! {
    /// A request or response body passing through [`LogLayer`]: frames as they come, seen on
    /// the way when the line wants them. Its `Data` and `Error` are the inner body's.
    pub struct LogBody<B> {
        #[pin]
        inner: B,
        tap: Tap,
    }

    impl<B> PinnedDrop for LogBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Tap::Response(mut line) = std::mem::replace(this.tap, Tap::None) {
                // Dropped before its end: the client went away (or the server cut the
                // stream). A gRPC call without a status by then was cancelled.
                if line.config.protocol == Protocol::Grpc && line.status.is_none() {
                    line.status = Some(GRPC_CANCELLED);
                }
                line.emit();
            }
        }
    }
}

impl<B> LogBody<B> {
    fn new(inner: B, tap: Tap) -> Self {
        Self { inner, tap }
    }

    /// `inner`, passed through untouched.
    pub fn passthrough(inner: B) -> Self {
        Self::new(inner, Tap::None)
    }
}

impl<B: fmt::Debug> fmt::Debug for LogBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B> Default for LogBody<B>
where
    B: Default,
{
    fn default() -> Self {
        Self::passthrough(B::default())
    }
}

impl<B: Body> Body for LogBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match (&mut *this.tap, &frame) {
            (Tap::None, _) => {}
            (Tap::Request(captured, max), Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    captured
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(data, *max);
                }
            }
            (Tap::Response(line), Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let max = line.config.max_body;
                    if let Some(bodies) = &mut line.bodies {
                        bodies.response.push(data, max);
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && line.config.protocol == Protocol::Grpc
                    && line.status.is_none()
                {
                    line.status = grpc_status(trailers);
                }
            }
            (Tap::Response(_), None) => {
                if let Tap::Response(line) = std::mem::replace(this.tap, Tap::None) {
                    line.emit();
                }
            }
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_read_from_their_prefix() {
        assert_eq!(grpc_message(&[0, 0, 0, 0, 2, b'{', b'}']), Some(&b"{}"[..]));
        assert_eq!(grpc_message(&[0, 0, 0, 0, 0]), Some(&b""[..]));
        // Compressed, short, or more than one message.
        assert_eq!(grpc_message(&[1, 0, 0, 0, 2, b'{', b'}']), None);
        assert_eq!(grpc_message(&[0, 0, 0]), None);
        assert_eq!(grpc_message(&[0, 0, 0, 0, 1, b'{', b'}']), None);
    }

    #[test]
    fn bodies_are_masked_bounded_and_never_raw() {
        let layer = LogLayer::http().max_body(64);
        let config = &layer.config;
        let render = |chunks: &[&[u8]]| {
            let mut c = Captured::default();
            for chunk in chunks {
                c.push(&bytes::Bytes::copy_from_slice(chunk), config.max_body);
            }
            c.render(config)
        };
        assert_eq!(
            render(&[br#"{"user":"ann","pass"#, br#"word":"p@ss"}"#]),
            r#"{"password":"***","user":"ann"}"#
        );
        assert_eq!(render(&[br#"[{"token":"t"}]"#]), r#"[{"token":"***"}]"#);
        assert_eq!(render(&[b"token=t"]), "<7 bytes, not JSON>");
        assert_eq!(render(&[]), "");
        assert_eq!(
            render(&[&[b'1'; 40], &[b'2'; 40]]),
            "<80 bytes, over the 64 logged>"
        );
    }
}
