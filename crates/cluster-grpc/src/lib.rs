//! Serve and call isp module endpoints the way isp-kit modules do: one gRPC service,
//! `isp.BackendService`, whose unary `Request(isp.Message) returns (isp.Message)` carries JSON
//! in `BytesBody`, the endpoint in the `proxy_method_name` header, and API errors as a status
//! whose detail holds `{"errorCode":…,"errorMessage":…,"details":…}`.
//!
//! - [`Router`]: a module's endpoints (typed JSON handlers, raw message handlers); its
//!   [`Router::descriptors`] are the endpoints the module declares to the cluster.
//! - [`Server`]: the router on tonic, on a listener you give or `127.0.0.1:0`, accepting the
//!   empty `:authority` every isp-kit client sends (see [`authority`]), with graceful shutdown
//!   tied to the cluster client's close.
//! - [`GrpcClient`]: calls the modules you require; a [`HostsUpgrader`](cluster_client::HostsUpgrader)
//!   for `require_module`, round-robin over live instances.
//! - [`testing`]: a router on loopback in a test, in one line.
//!
//! # Example
//! ```
//! use cluster_grpc::{ApiError, CallContext, GrpcClient, Router, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Login { user: String }
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Token { token: String }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let router = Router::new()
//!     .handle("auth/api/login", |_ctx: CallContext, req: Login| async move {
//!         if req.user.is_empty() {
//!             return Err(ApiError::business(1001, "empty user").with_detail("field", "user"));
//!         }
//!         Ok(Token { token: format!("t-{}", req.user) })
//!     })
//!     .unwrap();
//! // The module declares what it serves: `ModuleInfo { endpoints: router.descriptors(), .. }`.
//! assert_eq!(router.descriptors()[0].path, "auth/api/login");
//!
//! let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
//! // Usually the cluster fills the hosts: `.require_module("auth", client.clone())`.
//! let client = GrpcClient::new([server.local_addr().to_string()]);
//! let token: Token = client
//!     .invoke("auth/api/login")
//!     .json_body(&serde_json::json!({"user": "ann"}))
//!     .application_id(7)
//!     .json()
//!     .await
//!     .unwrap();
//! assert_eq!(token.token, "t-ann");
//!
//! let err = client.invoke("auth/api/login").json_body(&serde_json::json!({"user": ""}))
//!     .json::<Token>().await.unwrap_err();
//! assert_eq!(err.api_error().unwrap().error_code, 1001);
//! server.shutdown().await.unwrap();
//! # });
//! ```
//!
//! # Defaults and limits
//! - Messages: 64 MiB each way, server and client ([`DEFAULT_MAX_MESSAGE_SIZE`]).
//! - Call timeout: 15 s ([`DEFAULT_TIMEOUT`]), sent as `grpc-timeout`; zero means none.
//! - Connect timeout per host: 5 s ([`DEFAULT_CONNECT_TIMEOUT`]).
//! - Request id: the client sends the caller's `x-request-id`, else the one of the call
//!   being served (a call made inside a handler), else a new one, as a never-indexed HPACK
//!   literal (a value that never repeats is not worth a table entry); the server takes the
//!   caller's, or makes one and echoes it on the response.
//! - Header block from a client: 1 MiB ([`authority::MAX_HEADER_BLOCK`]).
//!
//! # Behaviour, as isp-kit's server shows it (see `fixtures/grpc/`)
//! - No `proxy_method_name`: `Unknown` "'proxy_method_name' is expected id metadata".
//! - Unknown endpoint: `NotFound` "handler not found for endpoint E", no detail.
//! - Body that does not decode (typed handlers): `InvalidArgument` with errorCode 400, message
//!   `unmarshal json request body: …`. Only `BytesBody` is read; any other arm reads as empty.
//! - [`ApiError`]: its code (`InvalidArgument` for business, `Internal` + 900 for internal)
//!   with the detail; a [`tonic::Status`] passes through; any other error or a panic:
//!   `Internal` "internal service error" without a detail, logged.
//! - Streaming method: `Unimplemented` "service is not support stream rpc".
//!
//! # Metrics
//! isp-kit's, through the `metrics` facade (the `cluster-metrics` crate has the names):
//! - The server records each call that reaches a routed endpoint (an unknown endpoint is
//!   answered before, as isp-kit's mux does): `grpc_request_duration_ms`,
//!   `grpc_request_body_size` (the request's `BytesBody`), `grpc_response_body_size` (the
//!   response's, when there is one) and `grpc_status_code_count{endpoint,code}`, whose code is
//!   the one answered, after errors and panics became statuses (`OK`, `InvalidArgument`,
//!   `Internal`, …). Off with [`ServerBuilder::metrics`]`(false)` or
//!   [`BackendService::metrics`].
//! - The client records the duration of every call it sends, errors and timeouts included:
//!   `grpc_client_request_duration_ms{endpoint}`. Off with [`GrpcClientBuilder::metrics`].
//!
//! They go to the global recorder (`cluster_metrics::prometheus::install`): install it before
//! building servers and clients. Each endpoint's handles are taken from the recorder at its
//! first call and kept, so a call costs no lookup in the recorder and no allocation.
//!
//! # The request pipeline, logs and traces
//! [`Server`] wraps [`BackendService`] in [`pipeline()`] (`cluster-pipeline`'s layers, in
//! isp-kit's order; [`ServerBuilder::pipeline`]`(false)` leaves them out):
//! - request id: the caller's `x-request-id`, or a new one set on the request and echoed on
//!   the response ([`CallContext::request_id`] reads it), current while the handler runs (a
//!   [`GrpcClient`] call made inside it sends it on);
//! - one log line per call, target `cluster_pipeline::log`, INFO, `grpc handler: log`:
//!   `endpoint`, `method` (the RPC path), `status` (the `grpc-status` code: every error is
//!   answered trailers-only, so the line has it), `duration_ms`, `request_id`; at DEBUG
//!   also `request_body` and `response_body`, the `BytesBody` JSON with secrets masked
//!   (`cluster_proto::SecretMasker`), 16 KiB each at most. Metadata values (tokens) are
//!   never logged;
//! - a `grpc_call` span per call with `endpoint` and `request_id`, in which the handler
//!   runs; with OpenTelemetry set up (the bootstrap's `observability.tracing`), a server
//!   span named after the endpoint, child of the caller's W3C `traceparent`, with
//!   `app.request_id`;
//! - a panic outside the handlers answered `Internal` (a handler's own panic is caught at
//!   the handler, where the metrics count it).
//!
//! The client sends the trace context of the span it is called in (`traceparent`,
//! `tracestate`) when OpenTelemetry's propagator is set, so the callee's span joins the
//! caller's trace; the caller's own metadata win over it.

pub mod authority;
mod client;
mod error;
mod hpack;
pub mod message;
pub mod metadata;
mod router;
mod server;
pub mod testing;

pub use client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, GrpcClient, GrpcClientBuilder, HOST_PAUSE, Invoke,
};
pub use error::{
    ApiError, BoxError, CallError, ERROR_CODE_BAD_REQUEST, ERROR_CODE_INTERNAL, HandlerError,
    INTERNAL_SERVICE_ERROR,
};
pub use message::{Body, Message};
pub use metadata::CallContext;
pub use router::{DuplicateEndpoint, Endpoint, Router};
pub use server::{
    BackendService, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SHUTDOWN_GRACE, PanicAnswer, REQUEST_PATH,
    REQUEST_STREAM_PATH, SERVICE_NAME, ServeError, Server, ServerBuilder, pipeline,
};
/// tonic, for [`tonic::Status`], [`tonic::Code`] and metadata types.
pub use tonic;
