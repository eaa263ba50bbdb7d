//! Trace context: the request's span, made a child of the caller's W3C trace context, and
//! that context passed on to the calls it makes (Go: `observability/tracing/{grpc,http}`'s
//! `server_tracing` and `client_tracing`).
//!
//! The propagator is OpenTelemetry's global one (`opentelemetry::global`), which the
//! bootstrap sets to W3C Trace Context when `observability.tracing.enable` is on; the spans
//! are `tracing` spans, which tracing-opentelemetry's layer turns into OpenTelemetry spans.
//! Without a propagator (the global default is a no-op) nothing is extracted or injected;
//! without the OpenTelemetry layer in the subscriber, the request's span is a plain `tracing`
//! span.

use crate::endpoint::{EndpointSource, Protocol};
use crate::request_id::{REQUEST_ID_HEADER, RequestId};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Status, TraceContextExt as _};
use pin_project_lite::pin_project;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing::instrument::{Instrument as _, Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span attribute holding the request id (Go: `tracing.RequestId`).
pub const REQUEST_ID_ATTRIBUTE: &str = "app.request_id";

/// Reads a header map for the propagator.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes into a header map for the propagator.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) else {
            return;
        };
        // A new span id on every call: not worth an HPACK table entry on either end.
        value.set_sensitive(true);
        self.0.insert(name, value);
    }
}

/// Whether a propagator is set: OpenTelemetry's global one reads or writes some header
/// (the default no-op propagator has none). One read of the global propagator's lock.
#[must_use]
pub fn propagation_enabled() -> bool {
    opentelemetry::global::get_text_map_propagator(|p| p.fields().next().is_some())
}

/// The trace context the headers carry, through the global propagator: `None` when no
/// propagator is set or none of the headers it reads is there (for W3C, `traceparent` and
/// `tracestate`).
#[must_use]
pub fn extract(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    opentelemetry::global::get_text_map_propagator(|p| {
        let mut fields = p.fields();
        fields
            .any(|field| headers.contains_key(field))
            .then(|| p.extract(&HeaderExtractor(headers)))
    })
}

/// Writes `cx` into `headers` through the global propagator (nothing without one, nor when
/// `cx` has no valid span).
pub fn inject_context(cx: &opentelemetry::Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(headers));
    });
}

/// Writes the current trace context into `headers` (for W3C: `traceparent`, and
/// `tracestate` when there is one): the current `tracing` span's OpenTelemetry context, or
/// else OpenTelemetry's current context. Without a propagator it only reads the global
/// propagator's lock.
pub fn inject_current(headers: &mut HeaderMap) {
    if !propagation_enabled() {
        return;
    }
    let span = Span::current();
    let cx = if span.is_disabled() {
        None
    } else {
        Some(span.context()).filter(|cx| cx.has_active_span())
    };
    let cx = cx.unwrap_or_else(opentelemetry::Context::current);
    inject_context(&cx, headers);
}

/// Server side: each request runs in a span, a child of the trace context its headers carry
/// (Go: `server_tracing.Config.Middleware`).
///
/// The span is a `tracing` span at INFO, `grpc_call` or `http_call`, with the fields
/// `endpoint` (from the [`EndpointSource`]) and `request_id` (the
/// [`RequestId`] extension that [`RequestIdLayer`](crate::RequestIdLayer), placed outside this
/// layer, puts there; else the header). The inner service's `call` and its future run in it,
/// so every event they log carries both fields.
///
/// When the subscriber has tracing-opentelemetry's layer, the span also becomes an
/// OpenTelemetry server span as isp-kit's:
/// - its parent is the context the global propagator extracts from the headers (W3C
///   `traceparent`/`tracestate`), else the current one (a new trace for a server);
/// - its name is the endpoint for gRPC (as Go, `proxy_method_name`; the path without it),
///   for HTTP the route (the [`EndpointName`](crate::EndpointName), e.g. cluster-http's
///   `POST /orders/api/create`), else `METHOD path` (recorded as the fields `otel.name` and
///   `otel.kind`, tracing-opentelemetry's way; log formatters print them as well);
/// - attributes: `app.request_id`; for HTTP `http.method`, `http.target`, `http.route`
///   (the route; of an endpoint named `METHOD /path`, the path),
///   `http.flavor`, `http.user_agent` and `http.status_code`; for gRPC
///   `rpc.grpc.status_code` of a trailers-only answer;
/// - status error for an HTTP 5xx, or a gRPC `Unknown`, `DeadlineExceeded`,
///   `Unimplemented`, `Internal`, `Unavailable` or `DataLoss` answered trailers-only.
///
/// Cost: with no subscriber, or one that does not enable the span, a disabled span (an
/// atomic load) and nothing else: no header is read, no propagator is asked. With a
/// subscriber and no OpenTelemetry layer: the span, and a lookup of the propagator's
/// headers. With both: what tracing-opentelemetry costs per span.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    protocol: Protocol,
    endpoint: EndpointSource,
}

impl TraceLayer {
    /// For isp-kit's gRPC convention: span `grpc_call`, endpoint from `proxy_method_name`.
    #[must_use]
    pub fn grpc() -> Self {
        Self::new(Protocol::Grpc)
    }

    /// For HTTP: span `http_call`, endpoint from the [`EndpointName`](crate::EndpointName)
    /// extension, else the path.
    #[must_use]
    pub fn http() -> Self {
        Self::new(Protocol::Http)
    }

    /// For `protocol`, with its default endpoint source.
    #[must_use]
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            endpoint: EndpointSource::of(protocol),
        }
    }

    /// Where the endpoint comes from.
    #[must_use]
    pub fn endpoint(mut self, source: EndpointSource) -> Self {
        self.endpoint = source;
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S> Trace<S> {
    fn make_span<B>(&self, request: &Request<B>) -> (Span, bool) {
        // The fields' values are only looked up when the span is enabled (tracing's macros
        // evaluate them in that branch).
        let span = match self.layer.protocol {
            Protocol::Grpc => tracing::info_span!(
                "grpc_call",
                endpoint = self.layer.endpoint.resolve(request).as_deref(),
                request_id = request_id_of(request),
                otel.name = Empty,
                otel.kind = Empty,
            ),
            Protocol::Http => tracing::info_span!(
                "http_call",
                endpoint = self.layer.endpoint.resolve(request).as_deref(),
                request_id = request_id_of(request),
                otel.name = Empty,
                otel.kind = Empty,
            ),
        };
        if span.is_disabled() {
            return (span, false);
        }
        let otel = self.connect(
            &span,
            request,
            self.layer.endpoint.resolve(request),
            request_id_of(request),
        );
        (span, otel)
    }

    /// Makes `span` an OpenTelemetry server span, child of the headers' context; `false`
    /// when the subscriber has no OpenTelemetry layer.
    fn connect<B>(
        &self,
        span: &Span,
        request: &Request<B>,
        endpoint: Option<Cow<'_, str>>,
        request_id: Option<&str>,
    ) -> bool {
        let parent = extract(request.headers()).unwrap_or_else(opentelemetry::Context::current);
        if span.set_parent(parent).is_err() {
            return false;
        }
        match self.layer.protocol {
            Protocol::Grpc => {
                span.record(
                    "otel.name",
                    endpoint.as_deref().unwrap_or_else(|| request.uri().path()),
                );
            }
            Protocol::Http => {
                let uri = request.uri();
                // The route: the router's name for it; a path alone is no route.
                let route = match &self.layer.endpoint {
                    EndpointSource::Extension => request
                        .extensions()
                        .get::<crate::EndpointName>()
                        .map(|name| Cow::Borrowed(name.as_str())),
                    _ => endpoint,
                };
                match &route {
                    Some(route) => {
                        span.record("otel.name", route.as_ref());
                        // An endpoint named `METHOD /path` (isp-kit's HTTP endpoint names,
                        // cluster-http's): the route is the path.
                        let method = request.method().as_str();
                        let path = route
                            .strip_prefix(method)
                            .and_then(|rest| rest.strip_prefix(' '))
                            .unwrap_or(route);
                        span.set_attribute("http.route", path.to_owned());
                    }
                    None => {
                        span.record(
                            "otel.name",
                            format!("{} {}", request.method(), uri.path()).as_str(),
                        );
                    }
                }
                span.set_attribute("http.method", request.method().as_str().to_owned());
                span.set_attribute(
                    "http.target",
                    uri.path_and_query()
                        .map_or_else(|| uri.path().to_owned(), ToString::to_string),
                );
                span.set_attribute("http.flavor", flavor(request.version()));
                if let Some(agent) = request
                    .headers()
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                {
                    span.set_attribute("http.user_agent", agent.to_owned());
                }
            }
        }
        span.record("otel.kind", "server");
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id.unwrap_or("").to_owned());
        true
    }
}

/// The request id the [`RequestIdLayer`](crate::RequestIdLayer) put in the extensions, else
/// the header's.
fn request_id_of<B>(request: &Request<B>) -> Option<&str> {
    RequestId::from_extensions(request.extensions())
        .map(RequestId::as_str)
        .or_else(|| {
            request
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
        })
}

fn flavor(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2.0",
        http::Version::HTTP_3 => "3.0",
        _ => "1.1",
    }
}

impl<S, B, ResB> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (span, otel) = self.make_span(&request);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TraceFuture {
            inner: future.instrument(span),
            otel: otel.then_some(self.layer.protocol),
        }
    }
}

pin_project! {
    /// The future of [`Trace`]: the inner future in the request's span.
    pub struct TraceFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        otel: Option<Protocol>,
    }
}

impl<F, ResB, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll(cx));
        if let (Some(protocol), Ok(response)) = (this.otel.take(), &result) {
            record_response(this.inner.span(), protocol, response);
        }
        Poll::Ready(result)
    }
}

/// The response's status on the OpenTelemetry span.
fn record_response<B>(span: &Span, protocol: Protocol, response: &Response<B>) {
    match protocol {
        Protocol::Http => {
            let status = response.status();
            span.set_attribute("http.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.set_status(Status::error(""));
            }
        }
        Protocol::Grpc => {
            let Some(code) = crate::log::grpc_status(response.headers()) else {
                return;
            };
            span.set_attribute("rpc.grpc.status_code", i64::from(code));
            // OpenTelemetry's semantic conventions for gRPC servers.
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                span.set_status(Status::error(""));
            }
        }
    }
}

/// Client side: every outgoing request carries the current trace context (Go:
/// `client_tracing.Config.Middleware`'s injection), through the global propagator: see
/// [`inject_current`]. Sent as never-indexed HPACK literals on HTTP/2 (a new span id each
/// call).
///
/// Unlike isp-kit's client middleware it makes no client span of its own: the callee's
/// server span is a child of the span the call is made in (the caller's request span).
///
/// Cost without a propagator: one read of the global propagator's lock.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectTraceContextLayer;

impl<S> Layer<S> for InjectTraceContextLayer {
    type Service = InjectTraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InjectTraceContext { inner }
    }
}

/// The service of [`InjectTraceContextLayer`].
#[derive(Debug, Clone)]
pub struct InjectTraceContext<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for InjectTraceContext<S>
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
        inject_current(request.headers_mut());
        self.inner.call(request)
    }
}
