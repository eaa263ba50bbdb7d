//! The request pipeline isp-kit gives every endpoint, as tower layers over
//! `http::Request<B>` / `http::Response<B>`: one layer serves an axum or hyper HTTP server and
//! a tonic gRPC server alike (gRPC metadata are HTTP/2 headers).
//!
//! ```
//! use bytes::Bytes;
//! use cluster_pipeline::{LogBody, Panic, RequestId, ServerLayer};
//! use http_body_util::Full;
//! use std::convert::Infallible;
//! use tower::{Layer as _, ServiceExt as _, service_fn};
//!
//! // A handler: any tower service over `http` types (here, one that panics on `/boom`).
//! let handler = service_fn(|request: http::Request<LogBody<Full<Bytes>>>| async move {
//!     assert!(request.uri().path() != "/boom", "on purpose");
//!     // The request's id, from the extensions (or `RequestId::current()` anywhere in the call).
//!     let id = RequestId::from_extensions(request.extensions()).cloned();
//!     assert_eq!(id, RequestId::current());
//!     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! // Request id, log line, trace context and panic recovery, in isp-kit's order; the transport
//! // says what a panic is answered with.
//! let service = ServerLayer::http(|_: &Panic| {
//!     let body = Full::new(Bytes::from_static(br#"{"errorMessage":"internal server error"}"#));
//!     let mut response = http::Response::new(body);
//!     *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
//!     response
//! })
//! .layer(handler);
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let request = http::Request::builder()
//!     .uri("/api/hello")
//!     .header("x-request-id", "abc")
//!     .body(Full::new(Bytes::new()))
//!     .unwrap();
//! let response = service.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["x-request-id"], "abc"); // echoed
//!
//! let boom = http::Request::builder().uri("/boom").body(Full::new(Bytes::new())).unwrap();
//! let response = service.oneshot(boom).await.unwrap();
//! assert_eq!(response.status(), 500);
//! assert_eq!(response.headers()["x-request-id"].len(), 32); // a new id: 32 hex digits
//! # });
//! ```
//!
//! # The pipeline, against isp-kit's
//!
//! isp-kit's default wrappers (`grpc/endpoint.DefaultWrapper`, `http/endpoint.DefaultWrapper`)
//! chain, outermost first: request id, log, metrics, tracing, error handler, recovery, then
//! the handler (with its parameter mapping and validation). Here:
//!
//! | isp-kit | here | where |
//! |---|---|---|
//! | `MaxRequestBodySize` (HTTP) | the transport's body limit | `cluster-http`; gRPC: `max_message_size` |
//! | `RequestId` | [`RequestIdLayer`] | this crate |
//! | `Log` / `CombinedLog` (`grpclog`, `httplog`) | [`LogLayer`]: one line per call | this crate |
//! | `Metrics` | isp-kit's metric names, recorded by each transport at the handler level: their labels need the endpoint as routed and the final status | `cluster-metrics`, called by `cluster-grpc` and `cluster-http` |
//! | `server_tracing` | [`TraceLayer`] | this crate |
//! | `ErrorHandler` | the transports' handlers turn errors into statuses or bodies | `cluster-grpc`, `cluster-http` |
//! | `Recovery` | [`RecoverLayer`], with the transport's answer | this crate (cluster-grpc also catches a handler's panic at the handler, so that its metrics count it, as isp-kit's `Metrics` sees `Recovery`'s error) |
//! | validation (`validator.Default`) | the transports' typed handlers | `cluster-grpc`, `cluster-http` |
//! | client `RequestId`, `client_tracing` | [`PropagateRequestIdLayer`], [`InjectTraceContextLayer`] ([`ClientLayer`] stacks both) | this crate; `GrpcClient` calls [`RequestId::current`] and [`trace::inject_current`] itself |
//!
//! [`ServerLayer`] stacks the four server layers in that order: [`RequestIdLayer`] →
//! [`LogLayer`] → [`TraceLayer`] → [`RecoverLayer`] → your service. Each layer also works
//! alone, over any tower service whose requests and responses are `http` types.
//!
//! # What a call costs
//!
//! With nothing to write to, the pipeline is the request id (an extension, a task-local, the
//! echoed header) and a few checks of atomics; the log line and the spans cost what the
//! subscriber makes of them (formatting a line, building a span).
//! `cargo bench -p cluster-pipeline --bench layers` measures the layers alone, and
//! cluster-grpc's `unary` bench a whole call with the pipeline on against off; the figures are
//! in the repository's `docs/performance.md`.

mod endpoint;
pub mod log;
mod recover;
pub mod request_id;
pub mod trace;

pub use endpoint::{
    EndpointFn, EndpointName, EndpointSource, PROXY_METHOD_NAME, Protocol, RequestHead,
};
pub use log::{BodyDecoder, DEFAULT_MAX_BODY, Log, LogBody, LogFuture, LogLayer};
pub use recover::{Panic, Recover, RecoverFuture, RecoverLayer};
pub use request_id::{
    Echo, PropagateRequestId, PropagateRequestIdLayer, REQUEST_ID_HEADER, RequestId,
    RequestIdFuture, RequestIdLayer, RequestIdService, new_request_id, request_id_bytes,
};
pub use trace::{InjectTraceContext, InjectTraceContextLayer, Trace, TraceFuture, TraceLayer};

use tower::Layer;

/// The server pipeline: [`RequestIdLayer`] → [`LogLayer`] → [`TraceLayer`] →
/// [`RecoverLayer`] → the service, isp-kit's order (see the [crate docs](crate)).
///
/// `respond` is the transport's answer to a panic ([`RecoverLayer`]); each layer can be
/// replaced by one configured otherwise.
#[derive(Debug, Clone)]
pub struct ServerLayer<F> {
    request_id: RequestIdLayer,
    log: LogLayer,
    trace: TraceLayer,
    recover: RecoverLayer<F>,
}

impl<F> ServerLayer<F> {
    /// For isp-kit's gRPC convention ([`LogLayer::grpc`], [`TraceLayer::grpc`]).
    pub fn grpc(respond: F) -> Self {
        Self::new(Protocol::Grpc, respond)
    }

    /// For HTTP ([`LogLayer::http`], [`TraceLayer::http`]).
    pub fn http(respond: F) -> Self {
        Self::new(Protocol::Http, respond)
    }

    /// For `protocol`, each layer with its defaults.
    pub fn new(protocol: Protocol, respond: F) -> Self {
        Self {
            request_id: RequestIdLayer::new(),
            log: LogLayer::new(protocol),
            trace: TraceLayer::new(protocol),
            recover: RecoverLayer::new(respond),
        }
    }

    /// The request id layer.
    #[must_use]
    pub fn request_id(mut self, layer: RequestIdLayer) -> Self {
        self.request_id = layer;
        self
    }

    /// The log layer.
    #[must_use]
    pub fn log(mut self, layer: LogLayer) -> Self {
        self.log = layer;
        self
    }

    /// The trace layer.
    #[must_use]
    pub fn trace(mut self, layer: TraceLayer) -> Self {
        self.trace = layer;
        self
    }
}

impl<S, F: Clone> Layer<S> for ServerLayer<F> {
    type Service = RequestIdService<Log<Trace<Recover<S, F>>>>;

    fn layer(&self, inner: S) -> Self::Service {
        self.request_id
            .layer(self.log.layer(self.trace.layer(self.recover.layer(inner))))
    }
}

/// The client pipeline: [`PropagateRequestIdLayer`] → [`InjectTraceContextLayer`] → the
/// service (Go: the default client's `RequestId` and `client_tracing`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientLayer;

impl<S> Layer<S> for ClientLayer {
    type Service = PropagateRequestId<InjectTraceContext<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateRequestIdLayer.layer(InjectTraceContextLayer.layer(inner))
    }
}
