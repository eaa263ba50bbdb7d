//! Routing a request to its endpoint as Go's `httprouter` does, and running the endpoint as
//! isp-kit's default wrapper does (request id, errors, panics, metrics).

use crate::ApiError;
use crate::context::{CallContext, REQUEST_ID_HEADER, request_id_of};
use crate::error::{HandlerError, INTERNAL_SERVICE_ERROR};
use crate::json::Decode;
use crate::router::{Route, Router};
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use cluster_metrics::http::HttpServerMetrics;
use cluster_pipeline::{
    EndpointName, EndpointSource, LogFuture, LogLayer, Panic, RecoverFuture, RequestId,
    RequestIdFuture, ServerLayer, TraceFuture, TraceLayer,
};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use pin_project_lite::pin_project;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::Layer as _;

/// A route as served: the route, and the request pipeline around it when on.
struct Routed {
    route: Route,
    pipeline: Option<ServerLayer<PanicAnswer>>,
}

/// The routes, indexed as `httprouter` looks them up.
struct Table {
    /// Served path → its routes, one per method.
    exact: HashMap<String, Vec<Routed>>,
    /// Lower-cased served path → `(method, served path)`, for the case-fixing redirect.
    folded: HashMap<String, Vec<(Method, String)>>,
    /// The methods that have a route (`httprouter`'s trees).
    methods: Vec<Method>,
}

/// Where a request goes.
enum Lookup<'a> {
    Found(&'a Routed),
    /// Another path has the route: a redirect there (`301` for `GET`, else `307`).
    Redirect(String),
    /// `OPTIONS` of a path routed for other methods: `200` with `Allow`.
    Options(String),
    /// A path routed for other methods only: `405` with `Allow`.
    NotAllowed(String),
    NotFound,
}

impl Table {
    fn new(routes: &[Route], pipeline: bool) -> Self {
        let mut table = Self {
            exact: HashMap::new(),
            folded: HashMap::new(),
            methods: Vec::new(),
        };
        for route in routes {
            let endpoint = &route.endpoint;
            let path = endpoint.route_path().to_owned();
            table
                .folded
                .entry(path.to_lowercase())
                .or_default()
                .push((endpoint.method().clone(), path.clone()));
            table.exact.entry(path).or_default().push(Routed {
                route: route.clone(),
                pipeline: pipeline.then(|| self::pipeline(&route.name)),
            });
            if !table.methods.contains(endpoint.method()) {
                table.methods.push(endpoint.method().clone());
            }
        }
        table
    }

    fn route(&self, method: &Method, path: &str) -> Option<&Routed> {
        self.exact
            .get(path)?
            .iter()
            .find(|r| r.route.endpoint.method() == method)
    }

    fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        if let Some(route) = self.route(method, path) {
            return Lookup::Found(route);
        }
        if self.methods.contains(method) && method != Method::CONNECT && path != "/" {
            // The same path with its trailing slash toggled.
            let toggled = toggle_slash(path);
            if self.route(method, &toggled).is_some() {
                return Lookup::Redirect(toggled);
            }
            // The cleaned path, ignoring case (and again with the slash toggled).
            let clean = clean_path(path);
            for candidate in [clean.clone(), toggle_slash(&clean)] {
                let fixed = self
                    .folded
                    .get(&candidate.to_lowercase())
                    .and_then(|paths| paths.iter().find(|(m, _)| m == method));
                if let Some((_, fixed)) = fixed {
                    return Lookup::Redirect(fixed.clone());
                }
            }
        }
        let mut allowed: Vec<&str> = self
            .exact
            .get(path)
            .into_iter()
            .flatten()
            .map(|r| r.route.endpoint.method())
            .filter(|m| *m != method && *m != Method::OPTIONS)
            .map(Method::as_str)
            .collect();
        if allowed.is_empty() {
            return Lookup::NotFound;
        }
        allowed.push(Method::OPTIONS.as_str());
        allowed.sort_unstable();
        let allow = allowed.join(", ");
        if method == Method::OPTIONS {
            Lookup::Options(allow)
        } else {
            Lookup::NotAllowed(allow)
        }
    }
}

fn toggle_slash(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        _ => format!("{path}/"),
    }
}

/// `httprouter.CleanPath`: one leading `/`, no `.`, `..` or empty segments, the trailing
/// slash kept.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let mut clean = String::with_capacity(path.len() + 1);
    for part in &parts {
        clean.push('/');
        clean.push_str(part);
    }
    if clean.is_empty() || (path.ends_with('/') && !clean.ends_with('/')) {
        clean.push('/');
    }
    clean
}

/// The path as Go's `URL.Path` has it: percent-escapes decoded (as is, when they do not
/// decode to UTF-8).
fn decoded_path(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('%') {
        return raw.into();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                // Two hex digits: at most 255.
                let byte = (hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8;
                out.push(byte);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_or_else(|_| raw.into(), Into::into)
}

/// The answer to a panic the pipeline catches outside the handlers (a handler's own panic is
/// caught at the handler, where the metrics count it): isp-kit's `500`, errorCode 900,
/// `internal service error`.
pub(crate) type PanicAnswer = fn(&Panic) -> http::Response<Full<Bytes>>;

fn panic_answer(_panic: &Panic) -> http::Response<Full<Bytes>> {
    ApiError::internal().to_response().map(Full::new)
}

/// The request pipeline around the calls of the route `name`: `cluster-pipeline`'s HTTP
/// layers, in isp-kit's order (request id, log line, span and trace context, panic
/// recovery). One per route, whose log line and span take the route's name from the layers
/// (no request extension made for it on every call).
pub(crate) fn pipeline(name: &EndpointName) -> ServerLayer<PanicAnswer> {
    let endpoint = EndpointSource::Name(name.clone());
    ServerLayer::http(panic_answer as PanicAnswer)
        .log(LogLayer::http().endpoint(endpoint.clone()))
        .trace(TraceLayer::http().endpoint(endpoint))
}

/// The router as a tower service: what [`Server`](crate::Server) serves.
///
/// A request is routed first (as Go's router does, before the endpoint's middlewares: an
/// unknown path, a redirect, a `405` get no request id and no log line), then goes through
/// the pipeline, when on, to its [`Handler`].
#[derive(Clone)]
pub(crate) struct Dispatch {
    inner: Arc<Inner>,
}

struct Inner {
    table: Table,
    decode: Decode,
    /// isp-kit's `http_*` server metrics; `None`: off.
    metrics: Option<HttpServerMetrics>,
}

impl Dispatch {
    pub(crate) fn new(router: &Router, metrics: bool, pipeline: bool) -> Self {
        let metrics = metrics.then(|| {
            let metrics = HttpServerMetrics::new();
            for route in &router.routes {
                let endpoint = &route.endpoint;
                let _ = metrics.endpoint(endpoint.method().as_str(), endpoint.metric_label());
            }
            metrics
        });
        Self {
            inner: Arc::new(Inner {
                table: Table::new(&router.routes, pipeline),
                decode: router.decode,
                metrics,
            }),
        }
    }

    /// The answer to a request no route takes.
    fn unrouted(lookup: Lookup<'_>, method: &Method, path: &str, query: Option<&str>) -> Response {
        match lookup {
            Lookup::Found(_) => unreachable!("routed"),
            Lookup::Redirect(to) => redirect(method, &to, query),
            Lookup::Options(allow) => {
                let mut response = Response::new(Body::empty());
                set_allow(&mut response, &allow);
                response
            }
            Lookup::NotAllowed(allow) => {
                let mut response = plain_error(StatusCode::METHOD_NOT_ALLOWED);
                set_allow(&mut response, &allow);
                response
            }
            Lookup::NotFound => {
                tracing::debug!(method = %method, path = %path, "http call to an unknown endpoint");
                plain_error(StatusCode::NOT_FOUND)
            }
        }
    }
}

/// An axum response.
type Response = axum::response::Response;

/// The future of a [`Handler`].
type HandlerFuture = BoxFuture<'static, Result<http::Response<Full<Bytes>>, Infallible>>;

/// The future of a [`Handler`] in the pipeline.
type PipelineFuture =
    RequestIdFuture<LogFuture<TraceFuture<RecoverFuture<HandlerFuture, PanicAnswer>>>>;

pin_project! {
    /// The future of [`Dispatch`].
    #[project = DispatchProj]
    pub(crate) enum DispatchFuture {
        /// Answered by the router.
        Ready { response: Option<Response> },
        /// A handler, without the pipeline.
        Bare { #[pin] future: HandlerFuture },
        /// A handler in the pipeline.
        Pipeline { #[pin] future: PipelineFuture },
    }
}

impl Future for DispatchFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| unreachable!("polled after it completed")))),
            DispatchProj::Bare { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Body::new))),
            DispatchProj::Pipeline { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Body::new))),
        }
    }
}

impl tower::Service<axum::extract::Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let inner = &self.inner;
        let path = decoded_path(request.uri().path());
        let routed = match inner.table.lookup(request.method(), &path) {
            Lookup::Found(routed) => routed,
            other => {
                let response =
                    Self::unrouted(other, request.method(), &path, request.uri().query());
                return DispatchFuture::Ready {
                    response: Some(response),
                };
            }
        };
        drop(path);
        let route = routed.route.clone();
        match &routed.pipeline {
            Some(pipeline) => {
                let handler = Handler::new(Arc::clone(inner), route);
                // The pipeline's services and the handler are always ready: no `poll_ready`.
                let future = pipeline.layer(handler).call(request);
                DispatchFuture::Pipeline { future }
            }
            None => DispatchFuture::Bare {
                future: Box::pin(serve(Arc::clone(inner), route, request)),
            },
        }
    }
}

/// One routed call as a tower service, for the pipeline's layers: made for the call, called
/// once.
struct Handler {
    call: Option<(Arc<Inner>, Route)>,
}

impl Handler {
    fn new(inner: Arc<Inner>, route: Route) -> Self {
        Self {
            call: Some((inner, route)),
        }
    }
}

impl<B> tower::Service<http::Request<B>> for Handler
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (inner, route) = self
            .call
            .take()
            .unwrap_or_else(|| unreachable!("a handler is called once"));
        Box::pin(serve(inner, route, request))
    }
}

/// Runs a routed call as isp-kit's default wrapper runs an endpoint, inside the pipeline
/// when it is on (request id, log line and span are then the pipeline's): the body, the
/// handler, errors and panics into isp-kit's answers, the metrics.
async fn serve<B>(
    inner: Arc<Inner>,
    route: Route,
    request: http::Request<B>,
) -> Result<http::Response<Full<Bytes>>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, body) = request.into_parts();
    // The pipeline's id, which it echoes; without the pipeline, the header's or a new one,
    // echoed here.
    let (request_id, echo) = match RequestId::from_extensions(&parts.extensions) {
        Some(id) => (id.clone(), None),
        None => {
            let id = request_id_of(&parts.headers);
            (id.clone(), Some(id))
        }
    };
    let started = inner.metrics.as_ref().map(|_| Instant::now());
    let body = whole(body)
        .await
        .map_err(|e| ApiError::bad_request(format!("unmarshal json request body: {e}")));
    let request_len = body.as_ref().map_or(0, Bytes::len);
    let remote_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let Route {
        endpoint, handler, ..
    } = route;
    let ctx = CallContext {
        endpoint: Arc::clone(&endpoint),
        request_id,
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        remote_addr,
    };
    let decode = inner.decode;
    // Called inside the future, so that a panic in its synchronous part is caught too.
    let call = async move { handler(ctx, body?, decode).await };
    let outcome = AssertUnwindSafe(call).catch_unwind().await;
    let mut response = answer(outcome);
    if let Some(id) = echo {
        response
            .headers_mut()
            .entry(REQUEST_ID_HEADER)
            .or_insert_with(|| id.to_header_value());
    }
    // As isp-kit's `Metrics` middleware, which sees the status after its error handler
    // and panic recovery.
    if let (Some(metrics), Some(started)) = (&inner.metrics, started) {
        metrics.observe(
            endpoint.method().as_str(),
            endpoint.metric_label(),
            started.elapsed(),
            response.status().as_u16(),
            Some((request_len, response.body().len())),
        );
    }
    Ok(response.map(Full::new))
}

/// The whole body. `cluster-serve` has read it already and gives it as one frame: that frame
/// is taken as it is (no buffer list made to collect one piece).
async fn whole<B>(mut body: B) -> Result<Bytes, B::Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let first = match body.frame().await {
        None => return Ok(Bytes::new()),
        Some(frame) => frame?.into_data().unwrap_or_default(),
    };
    if body.is_end_stream() {
        return Ok(first);
    }
    let rest = body.collect().await?.to_bytes();
    let mut all = Vec::with_capacity(first.len() + rest.len());
    all.extend_from_slice(&first);
    all.extend_from_slice(&rest);
    Ok(Bytes::from(all))
}

/// The handler's outcome as the answer: errors and panics become isp-kit's error bodies,
/// logged.
fn answer(outcome: std::thread::Result<Result<crate::Response, HandlerError>>) -> crate::Response {
    match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(HandlerError::Api(error))) => {
            if error.status.is_server_error() {
                tracing::error!(status = error.status.as_u16(), error_code = error.error_code, error_message = %error.error_message, "http call: api error");
            } else {
                tracing::warn!(status = error.status.as_u16(), error_code = error.error_code, error_message = %error.error_message, "http call: business error");
            }
            error.to_response()
        }
        Ok(Err(HandlerError::Other(error))) => {
            tracing::error!(error = %error, "http call: handler error");
            ApiError::internal().to_response()
        }
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %text, error = INTERNAL_SERVICE_ERROR, "http call: handler panicked");
            ApiError::internal().to_response()
        }
    }
}

/// Go's `http.Error(w, http.StatusText(status), status)`: the status text and a newline,
/// `text/plain; charset=utf-8`, `X-Content-Type-Options: nosniff`.
fn plain_error(status: StatusCode) -> Response {
    let text = match status {
        StatusCode::NOT_FOUND => "404 page not found\n".to_owned(),
        other => format!("{}\n", other.canonical_reason().unwrap_or_default()),
    };
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn set_allow(response: &mut Response, allow: &str) {
    if let Ok(value) = HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
}

/// Go's `http.Redirect` to `path` (and the request's query): `301` for `GET`, else `307`;
/// `GET` gets the short HTML body, `GET` and `HEAD` its content type.
fn redirect(method: &Method, path: &str, query: Option<&str>) -> Response {
    let status = if method == Method::GET {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let location = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let body = if method == Method::GET {
        format!(
            "<a href=\"{}\">{}</a>.\n\n",
            html_escape(&location),
            status.canonical_reason().unwrap_or_default()
        )
    } else {
        String::new()
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    if method == Method::GET || method == Method::HEAD {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    response
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_as_httprouter_cleans_them() {
        assert_eq!(clean_path("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(clean_path("a/b"), "/a/b");
        assert_eq!(clean_path(""), "/");
        assert_eq!(clean_path("/.."), "/");
        assert_eq!(toggle_slash("/a/"), "/a");
        assert_eq!(toggle_slash("/a"), "/a/");
        assert_eq!(decoded_path("/a%20b"), "/a b");
        assert_eq!(decoded_path("/a%2"), "/a%2");
        assert_eq!(decoded_path("/%ff"), "/%ff");
    }

    #[tokio::test]
    async fn a_body_in_pieces_is_joined() {
        let pieces = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from_static(b"ab")),
            Ok(Bytes::from_static(b"cd")),
        ]);
        assert_eq!(whole(Body::from_stream(pieces)).await.unwrap(), "abcd");
        assert_eq!(whole(Body::from("one")).await.unwrap(), "one");
        assert_eq!(whole(Body::empty()).await.unwrap(), "");
    }
}
