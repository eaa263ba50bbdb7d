//! The gRPC server: `isp.BackendService` on tonic, dispatching to a [`Router`].

use crate::authority::AuthorityFilter;
use crate::error::{HandlerError, INTERNAL_SERVICE_ERROR};
use crate::message::{Body, Message};
use crate::metadata::{CallContext, PROXY_METHOD_NAME};
use crate::router::{BoxHandler, Router};
use cluster_client::{AddressConfiguration, Client, ClientState};
use cluster_metrics::grpc::GrpcServerMetrics;
use cluster_pipeline::{Echo, LogLayer, Panic, RequestIdLayer, ServerLayer};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::{Request, Response, Status};
use tower::Layer as _;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "isp.BackendService";
/// The path of the unary method.
pub const REQUEST_PATH: &str = "/isp.BackendService/Request";
/// The path of the streaming method (answered `Unimplemented`, as isp-kit's mux does).
pub const REQUEST_STREAM_PATH: &str = "/isp.BackendService/RequestStream";
/// The default limit of a message, each way: 64 MiB (Go: `grpc.DefaultMaxSizeByte`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// How long a graceful shutdown waits for calls in progress and for clients to acknowledge
/// it before the remaining connections are cut: 10 s.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `isp.BackendService` over a [`Router`], as a tower service for tonic. [`Server`] runs it;
/// use it directly to mount it in a tonic server of your own (then an empty `:authority`
/// from isp-kit clients is refused by h2 unless you wrap connections in
/// [`AuthorityFilter`](crate::authority::AuthorityFilter), and calls go through no request
/// pipeline unless you wrap it in [`pipeline()`]: `pipeline().layer(BackendService::new(router))`).
#[derive(Clone)]
pub struct BackendService {
    routes: Arc<HashMap<String, BoxHandler>>,
    max_message_size: usize,
    /// isp-kit's `grpc_*` server metrics of the routed endpoints; `None`: off.
    metrics: Option<Arc<GrpcServerMetrics>>,
}

impl std::fmt::Debug for BackendService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendService")
            .field("endpoints", &self.routes.len())
            .field("max_message_size", &self.max_message_size)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl BackendService {
    /// The service for `router`, with the default 64 MiB message limit each way and the
    /// metrics on.
    #[must_use]
    pub fn new(router: Router) -> Self {
        let metrics = Self::metrics_of(&router.routes);
        Self {
            routes: Arc::new(router.routes),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            metrics: Some(metrics),
        }
    }

    fn metrics_of(routes: &HashMap<String, BoxHandler>) -> Arc<GrpcServerMetrics> {
        Arc::new(GrpcServerMetrics::with_endpoints(routes.keys().cloned()))
    }

    /// Sets the message limit, each way.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Whether each call that reaches a routed endpoint is recorded in isp-kit's server
    /// metrics (default `true`): `grpc_request_duration_ms`, `grpc_request_body_size`,
    /// `grpc_response_body_size` and `grpc_status_code_count`, by endpoint (see the crate
    /// docs).
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = match (on, self.metrics) {
            (false, _) => None,
            (true, Some(metrics)) => Some(metrics),
            (true, None) => Some(Self::metrics_of(&self.routes)),
        };
        self
    }

    /// Runs in the request's span (`grpc_call`, with `endpoint` and `request_id`), made by
    /// the pipeline's [`TraceLayer`](cluster_pipeline::TraceLayer) around this service.
    async fn dispatch(&self, request: Request<Message>) -> Result<Response<Message>, Status> {
        let remote_addr = request.remote_addr();
        let (metadata, _, message) = request.into_parts();
        let Some(endpoint) = metadata.get(PROXY_METHOD_NAME) else {
            tracing::debug!("grpc call without proxy_method_name");
            return Err(Status::unknown(format!(
                "'{PROXY_METHOD_NAME}' is expected id metadata"
            )));
        };
        let endpoint = String::from_utf8_lossy(endpoint.as_bytes()).into_owned();
        let Some(handler) = self.routes.get(&endpoint) else {
            tracing::debug!("grpc call to an unknown endpoint");
            return Err(Status::not_found(format!(
                "handler not found for endpoint {endpoint}"
            )));
        };
        let handler = Arc::clone(handler);
        // Taken before the endpoint moves into the context (a routed endpoint is always
        // cached: the metrics are made with the routes).
        let metrics = self.metrics.as_deref().and_then(|m| m.endpoint(&endpoint));
        let recording = metrics.map(|m| (m, bytes_body_len(&message), Instant::now()));
        let ctx = CallContext {
            endpoint,
            metadata,
            remote_addr,
        };
        // The handler is called inside the future so that a panic in its synchronous part is
        // caught as well. Caught here, at the handler, and not only by the pipeline's
        // `RecoverLayer`: the metrics below count it as `Internal`, as isp-kit's `Metrics`
        // middleware sees the error of its `Recovery`.
        let call = async move { handler(ctx, message).await };
        let outcome = AssertUnwindSafe(call).catch_unwind().await;
        let result = Self::answer(outcome);
        // As isp-kit's `Metrics` middleware, which sees the status after its error handler
        // and panic recovery: the handler's duration, the code answered, the body sizes.
        if let Some((metrics, request_bytes, started)) = recording {
            let (code, response_bytes) = match &result {
                Ok(response) => (tonic::Code::Ok, Some(bytes_body_len(response.get_ref()))),
                Err(status) => (status.code(), None),
            };
            metrics.observe(
                request_bytes,
                started.elapsed(),
                code as i32,
                response_bytes,
            );
        }
        result
    }

    /// The handler's outcome as the call's answer: errors and panics become statuses, logged.
    fn answer(
        outcome: std::thread::Result<Result<Message, HandlerError>>,
    ) -> Result<Response<Message>, Status> {
        match outcome {
            Ok(Ok(response)) => Ok(Response::new(response)),
            Ok(Err(HandlerError::Api(error))) => {
                if error.grpc_code == tonic::Code::InvalidArgument {
                    tracing::warn!(error_code = error.error_code, error_message = %error.error_message, "grpc call: business error");
                } else {
                    tracing::error!(error_code = error.error_code, error_message = %error.error_message, grpc_code = ?error.grpc_code, "grpc call: api error");
                }
                Err(error.to_status())
            }
            Ok(Err(HandlerError::Status(status))) => {
                tracing::warn!(grpc_code = ?status.code(), message = status.message(), "grpc call: status");
                Err(status)
            }
            Ok(Err(HandlerError::Other(error))) => {
                tracing::error!(error = %error, "grpc call: handler error");
                Err(Status::internal(INTERNAL_SERVICE_ERROR))
            }
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %text, "grpc call: handler panicked");
                Err(Status::internal(INTERNAL_SERVICE_ERROR))
            }
        }
    }
}

/// The length of a message's `BytesBody`, 0 for any other arm (Go: `len(GetBytesBody())`).
fn bytes_body_len(message: &Message) -> usize {
    match &message.body {
        Some(Body::BytesBody(bytes)) => bytes.len(),
        _ => 0,
    }
}

struct Unary(BackendService);

impl tonic::server::UnaryService<Message> for Unary {
    type Response = Message;
    type Future = BoxFuture<'static, Result<Response<Message>, Status>>;

    fn call(&mut self, request: Request<Message>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.dispatch(request).await })
    }
}

/// Any request body tonic can decode: tonic's own, or one a layer wrapped (the pipeline's
/// log line wraps it to see it pass).
impl<B> tonic::codegen::Service<http::Request<B>> for BackendService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match request.uri().path() {
            REQUEST_PATH => {
                let service = self.clone();
                Box::pin(async move {
                    let max = service.max_message_size;
                    let codec = tonic_prost::ProstCodec::<Message, Message>::default();
                    let mut grpc = tonic::server::Grpc::new(codec)
                        .apply_max_message_size_config(Some(max), Some(max));
                    Ok(grpc.unary(Unary(service), request).await)
                })
            }
            REQUEST_STREAM_PATH => Box::pin(async {
                Ok(Status::unimplemented("service is not support stream rpc").into_http())
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

impl tonic::server::NamedService for BackendService {
    const NAME: &'static str = SERVICE_NAME;
}

/// The answer to a panic the pipeline catches outside the handlers (the handlers' own are
/// caught at the handler): `Internal` "internal service error", as isp-kit's `Recovery`
/// and error handler answer it.
fn panic_answer(_panic: &Panic) -> http::Response<tonic::body::Body> {
    Status::internal(INTERNAL_SERVICE_ERROR).into_http()
}

/// The log line's bodies: the JSON in the `BytesBody` of the one `isp.Message` a gRPC body
/// holds (`None`, logged as not JSON, for any other arm, a compressed or truncated message).
fn isp_message_json(body: &[u8]) -> Option<Cow<'_, [u8]>> {
    let payload = cluster_pipeline::log::grpc_message(body)?;
    match prost::Message::decode(payload).ok()? {
        Message {
            body: Some(Body::BytesBody(json)),
        } => Some(Cow::Owned(json.to_vec())),
        Message { body: None } => Some(Cow::Borrowed(&[])),
        _ => None,
    }
}

/// The type of the answer to a panic in [`pipeline`]'s stack.
pub type PanicAnswer = fn(&Panic) -> http::Response<tonic::body::Body>;

/// The request pipeline [`Server`] puts around [`BackendService`] (unless
/// [`ServerBuilder::pipeline`]`(false)`), for a tonic server of your own:
/// `pipeline().layer(BackendService::new(router))`.
///
/// isp-kit's order, outermost first (see `cluster_pipeline`):
/// - request id: `x-request-id`, or a new one (32 lowercase hex) set on the request and
///   echoed on the response (an id the caller sent is not echoed: isp-kit's gRPC server
///   echoes none, and it would cost an HPACK literal each way on every call);
///   [`CallContext::request_id`] reads it, calls the handler makes with a [`GrpcClient`]
///   send it on;
/// - one log line per call (target `cluster_pipeline::log`, INFO): `endpoint`, `method`,
///   `status` (the `grpc-status` code), `duration_ms`, `request_id`; at DEBUG also the
///   request's and response's `BytesBody` JSON, secrets masked, 16 KiB each at most;
/// - the `grpc_call` span, with `endpoint` and `request_id`: with OpenTelemetry set up (the
///   bootstrap's `observability.tracing`), a server span named after the endpoint, child of
///   the caller's W3C `traceparent`;
/// - panic recovery: a panic outside the handlers is answered `Internal`.
///
/// [`GrpcClient`]: crate::GrpcClient
#[must_use]
pub fn pipeline() -> ServerLayer<PanicAnswer> {
    ServerLayer::grpc(panic_answer as PanicAnswer)
        .request_id(RequestIdLayer::new().echo(Echo::WhenNew))
        .log(LogLayer::grpc().body_decoder(isp_message_json))
}

/// Why serving stopped.
pub type ServeError = tonic::transport::Error;

/// Configures and starts a [`Server`].
pub struct ServerBuilder {
    service: BackendService,
    pipeline: bool,
    accept_empty_authority: bool,
    shutdown_grace: Duration,
    shutdown: Vec<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("service", &self.service)
            .field("pipeline", &self.pipeline)
            .field("accept_empty_authority", &self.accept_empty_authority)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The message limit, each way (default [`DEFAULT_MAX_MESSAGE_SIZE`], 64 MiB).
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.service = self.service.max_message_size(bytes);
        self
    }

    /// Whether calls are recorded in isp-kit's server metrics (default `true`); see
    /// [`BackendService::metrics`].
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.service = self.service.metrics(on);
        self
    }

    /// Whether calls go through the request pipeline, [`pipeline`] (default `true`): request
    /// id, log line, `grpc_call` span and trace context, panic recovery. Without it the
    /// handlers run in no span and nothing is logged per call; turn it off only to measure
    /// its cost (the `unary` bench's row "pipeline off").
    #[must_use]
    pub fn pipeline(mut self, on: bool) -> Self {
        self.pipeline = on;
        self
    }

    /// Whether requests with an empty `:authority` (every isp-kit client's) are accepted, by
    /// filtering each connection's header frames (see [`crate::authority`]). Default `true`;
    /// turn it off only to measure its cost.
    #[must_use]
    pub fn accept_empty_authority(mut self, on: bool) -> Self {
        self.accept_empty_authority = on;
        self
    }

    /// How long a graceful shutdown waits (default [`DEFAULT_SHUTDOWN_GRACE`], 10 s): after
    /// it, connections still open are closed, calls still running are dropped.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Shuts the server down gracefully when `signal` completes (may be given several times:
    /// the first to complete wins).
    #[must_use]
    pub fn shutdown_on(
        mut self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown.push(Box::pin(signal));
        self
    }

    /// Shuts the server down gracefully once the cluster client is closed
    /// ([`Client::close`]): the module leaves the cluster first, then stops serving.
    #[must_use]
    pub fn shutdown_with(self, client: &Client) -> Self {
        let mut state = client.state();
        self.shutdown_on(async move {
            // A dropped client (the sender gone) counts as closed too.
            let _ = state.wait_for(|s| matches!(s, ClientState::Closed)).await;
        })
    }

    /// Listens on `addr` (`127.0.0.1:0` for any free loopback port) and starts serving.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(self, addr: &str) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener)
    }

    /// Serves on a listener you bound; spawns the server on the current tokio runtime.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn serve(self, listener: TcpListener) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let filter = self.accept_empty_authority;
        let cut = CancellationToken::new();
        let cut_connections = cut.clone();
        let incoming = futures_util::stream::unfold(listener, move |listener| {
            let cut = cut_connections.clone();
            async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let io = if filter {
                                AuthorityFilter::new(stream)
                            } else {
                                AuthorityFilter::passthrough(stream)
                            };
                            return Some((Ok::<_, io::Error>(io.abort_on(cut)), listener));
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: wait a little, do not spin.
                            tracing::warn!(error = %e, "grpc server: accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        });
        let stop = token.clone();
        let mut signals = self.shutdown;
        let grace = self.shutdown_grace;
        let signal = async move {
            if signals.is_empty() {
                stop.cancelled().await;
            } else {
                let any = futures_util::future::select_all(signals.drain(..));
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = any => {}
                }
            }
            tracing::info!(grace = ?grace, "grpc server: shutting down");
            // Past the grace period, cut whatever is still open.
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                cut.cancel();
            });
        };
        let service = self.service;
        let task = if self.pipeline {
            tokio::spawn(run(pipeline().layer(service), incoming, signal))
        } else {
            tokio::spawn(run(service, incoming, signal))
        };
        tracing::info!(addr = %local_addr, "grpc server: serving");
        Ok(Server {
            local_addr,
            token,
            task,
        })
    }
}

/// Serves `service` on tonic until `signal`.
async fn run<S, ResBody, I, IO, F>(service: S, incoming: I, signal: F) -> Result<(), ServeError>
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<ResBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
    I: futures_util::Stream<Item = Result<IO, io::Error>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    F: std::future::Future<Output = ()>,
{
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(service, incoming, signal)
        .await
}

/// A running server: `isp.BackendService` over a [`Router`], on tonic.
///
/// Dropping it does not stop it; call [`Server::shutdown`] (or wire it to the cluster client
/// with [`ServerBuilder::shutdown_with`] and await [`Server::wait`]).
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    token: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// A builder for `router` (64 MiB limits, the pipeline on, empty `:authority` accepted).
    #[must_use]
    pub fn builder(router: Router) -> ServerBuilder {
        ServerBuilder {
            service: BackendService::new(router),
            pipeline: true,
            accept_empty_authority: true,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            shutdown: Vec::new(),
        }
    }

    /// Serves `router` on `addr` with the defaults.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(router: Router, addr: &str) -> io::Result<Self> {
        Self::builder(router).bind(addr).await
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listening address as an `AddressConfiguration` (behind NAT or in a container,
    /// declare the reachable one instead). A module whose server follows its cluster client
    /// ([`ServerBuilder::shutdown_with`]) needs the address before the server exists: bind a
    /// `TcpListener` first, declare its address in `ModuleInfo::grpc_outer_address`, build the
    /// client, then [`ServerBuilder::serve`] the listener (the repository's `docs/grpc.md` shows
    /// the order).
    #[must_use]
    pub fn outer_address(&self) -> AddressConfiguration {
        AddressConfiguration::new(
            self.local_addr.ip().to_string(),
            self.local_addr.port().to_string(),
        )
    }

    /// Starts a graceful shutdown without waiting.
    pub fn start_shutdown(&self) {
        self.token.cancel();
    }

    /// Stops accepting connections, lets the calls in progress finish, and returns when the
    /// server has stopped.
    ///
    /// # Errors
    /// What stopped the server, if it failed.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.token.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after a shutdown signal).
    ///
    /// # Errors
    /// What stopped the server, if it failed.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Ok(()),
        }
    }
}
