//! Serve and call isp module endpoints over HTTP, isp-kit's `http` transport: each endpoint
//! is a method and a path (`POST /orders/api/create`), JSON in and out, API errors as
//! `{"errorCode":…,"errorMessage":…,"details":…}` with an HTTP status.
//!
//! ```
//! use cluster_http::validator::Validate;
//! use cluster_http::{ApiError, CallContext, Endpoint, HttpClient, Router, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Validate)]
//! #[validate(crate = "cluster_http::validator")] // or depend on `validator` yourself
//! struct Login {
//!     #[validate(length(min = 1))]
//!     user: String,
//! }
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Token {
//!     token: String,
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let router = Router::new()
//!     .handle_validated(Endpoint::post("auth/api/login"), |_ctx: CallContext, req: Login| async move {
//!         if req.user == "nobody" {
//!             return Err(ApiError::business(1001, "unknown user").with_detail("user", req.user));
//!         }
//!         Ok(Token { token: format!("t-{}", req.user) })
//!     })
//!     .unwrap();
//! // The module declares what it serves: `ModuleInfo { endpoints: router.descriptors(), .. }`.
//! assert_eq!(router.descriptors()[0].http_method, "POST");
//!
//! let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
//! // Usually the cluster fills the hosts: `.require_module("auth", client.clone())`.
//! let client = HttpClient::new([server.local_addr().to_string()]);
//! let token: Token = client
//!     .post("auth/api/login")
//!     .json_body(&serde_json::json!({"user": "ann"}))
//!     .json()
//!     .await
//!     .unwrap();
//! assert_eq!(token.token, "t-ann");
//!
//! let err = client.post("auth/api/login").json_body(&serde_json::json!({"user": ""}))
//!     .json::<Token>().await.unwrap_err();
//! let error = err.api_error().unwrap();
//! assert_eq!((error.status.as_u16(), error.error_code), (400, 400));
//! assert_eq!(error.details["user"], "User must be at least 1 character in length");
//! server.shutdown().await.unwrap();
//! # });
//! ```
//!
//! - [`Router`]: a module's endpoints (typed JSON handlers, validated or not, without a body,
//!   raw); its [`Router::descriptors`] are what the module declares to the cluster, each with
//!   its `httpMethod`. Declare the module with `transport: HTTP_TRANSPORT` (`"http"`).
//! - [`Server`]: the router on `cluster-serve`'s bounded HTTP/1.1 serving, with graceful
//!   shutdown tied to the cluster client's close ([`ServerBuilder::shutdown_with`]).
//! - [`HttpClient`]: calls the HTTP modules you require; a
//!   [`HostsUpgrader`](cluster_client::HostsUpgrader) for `require_module`, round-robin over
//!   live instances, on to the next one when connecting fails.
//! - [`json`]: how bodies are read and written; [`validation`]: validation details;
//!   [`testing`]: a router on loopback in one line.
//!
//! In a module, bind the listener first, then build `ModuleInfo` (its address comes from the
//! listener) and the cluster client, then serve, so that the server stops after the module
//! left the cluster:
//!
//! ```no_run
//! use cluster_client::{AddressConfiguration, Client, ConfigData, EventHandler, HTTP_TRANSPORT, ModuleInfo};
//! use cluster_http::{HttpClient, Router, Server};
//!
//! # async fn module(router: Router) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9000").await?;
//! let module = ModuleInfo {
//!     module_name: "orders".into(),
//!     module_version: "1.0.0".into(),
//!     transport: HTTP_TRANSPORT.into(),
//!     endpoints: router.descriptors(),
//!     grpc_outer_address: AddressConfiguration::new("10.0.0.5", "9000"), // what others dial
//!     ..ModuleInfo::default()
//! };
//! let client = Client::new(module, ConfigData::from_json("1.0.0", "{}", "{}")?, ["10.0.0.1:9001"])?;
//! let server = Server::builder(router).shutdown_with(&client).serve(listener)?;
//! let auth = HttpClient::default(); // follows the `auth` module's instances
//! let handler = EventHandler::new().require_module("auth", auth.clone());
//! client.run_until(handler, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! server.wait().await?;
//! # Ok(()) }
//! ```
//!
//! # Behaviour, as isp-kit's server has it
//! Routing is Go's `httprouter` (what isp-kit's `http/router` wraps); each endpoint is run
//! as by isp-kit's `endpoint.DefaultWrapper`:
//! - **Paths**: an endpoint declared `orders/api/create` (or `/orders/api/create`) is served
//!   at `/orders/api/create`, where isp-kit's gateway sends it (it adds the `/`). Paths match
//!   exactly, after percent-decoding; no `:param` patterns.
//! - **Unknown path**: `404`, `404 page not found\n`, `text/plain; charset=utf-8` (Go's
//!   `http.NotFound`). **Known path, other method**: `405`, `Method Not Allowed\n`, with
//!   `Allow` (the path's methods and `OPTIONS`, sorted); `OPTIONS` of such a path: `200` with
//!   `Allow`. **A path off by a trailing slash, by case or by `.`/`//`**: redirected to the
//!   routed one, `301` for `GET` (with Go's short HTML body), `307` otherwise, as
//!   `httprouter`'s `RedirectTrailingSlash` and `RedirectFixedPath` do. None of these is
//!   recorded in the metrics, gets a request id or a log line (Go's router answers them
//!   before the endpoint's middlewares).
//! - **Request id**: the request's `x-request-id`, or 32 new lowercase hex digits; on every
//!   answer of a routed endpoint (Go sets it on answers with a body and on errors only);
//!   [`CallContext::request_id`]; passed on by the [`HttpClient`] calls the handler makes
//!   (see [the request pipeline](#the-request-pipeline)).
//! - **Body**: decoded from the first JSON value (see [`json`]; keys match fields ignoring
//!   case, as Go's decoder does). A body that does not decode: `400` with errorCode 400 and
//!   `unmarshal json request body: <serde's message>` (`EOF` for an empty body, as Go); the
//!   wording of other messages is serde's, not jsoniter's.
//! - **Validation** ([`Router::handle_validated`], the `validator` crate): `400`, errorCode
//!   400, `invalid request body`, details per field as isp-kit writes them
//!   ([`validation`]: `{"items[0].count": "Count must be 1 or greater"}`).
//! - **Answer**: the handler's value as JSON and a newline (Go's encoder; `<`, `>`, `&`
//!   escaped), `application/json`, `200`; `()` answers `200` without a body.
//! - **Errors**: an [`ApiError`] with its status and isp-kit's body (`details` left out when
//!   empty; detail keys sorted, where Go's order is random); any other error and a panic:
//!   `500` with errorCode 900 `internal service error`, the cause logged and hidden. The
//!   server lives on after a panic.
//! - **Body limit**: 64 MiB ([`DEFAULT_MAX_BODY_SIZE`]), enforced by `cluster-serve` before
//!   the route runs: a larger body is answered `413` with `cluster-serve`'s
//!   `{"error":"the request body is larger than N bytes"}` and `Connection: close`, for every
//!   endpoint. Go wraps the body in `MaxBytesReader`, so that the decoder fails and the
//!   endpoint answers `400` `unmarshal json request body: http: request body too large`
//!   (and a handler that does not read the body never notices); `cluster-serve` reads whole
//!   bodies first and answers the limit itself, and we keep its answer rather than accept
//!   unbounded bodies to mimic Go's.
//! - **Caller's address**: [`CallContext::remote_addr`], axum's `ConnectInfo<SocketAddr>`,
//!   which `cluster-serve` sets on every request (served some other way, through
//!   [`ServerBuilder::into_axum`], it is there when that server sets it: axum's
//!   `into_make_service_with_connect_info`).
//!
//! # Defaults and limits
//! - Server: `cluster-serve`'s bounds (256 connections, 10 s to receive a head and, after
//!   it, a body, 10 s for a stalled write; an idle kept-alive connection closes after 10 s),
//!   bodies up to 64 MiB, 10 s for calls in flight at shutdown
//!   ([`DEFAULT_SHUTDOWN_GRACE`]); all in [`ServerBuilder::serve_config`].
//! - Client: call timeout 15 s ([`DEFAULT_TIMEOUT`], the whole call; zero: none), connect
//!   timeout 5 s per host, idle connections kept 5 s ([`DEFAULT_POOL_IDLE_TIMEOUT`], less
//!   than our servers keep them), responses up to 64 MiB; a request id on every call (the
//!   caller's, else the one of the call being served, else a new one) and the trace
//!   context; the next host only when connecting failed (an answer, any status, is the
//!   call's answer), a failed host passed over for 1 s ([`HOST_PAUSE`]).
//!
//! # Metrics
//! isp-kit's `http_metrics`, through the `metrics` facade (`cluster_metrics::http` has the
//! names), on by default:
//! - The server records each call to a routed endpoint: `http_request_duration_ms`,
//!   `http_request_body_size`, `http_response_body_size` and
//!   `http_status_code_count{method,endpoint,code}`, the code being the one answered after
//!   errors and panics. The `endpoint` label is `METHOD /path`, as isp-kit's router sets it
//!   (`POST /orders/api/create`), `method` the method. Off with [`ServerBuilder::metrics`].
//! - The client records every call: `http_client_request_duration_ms{endpoint}` (errors and
//!   timeouts included), `http_client_status_code_count{endpoint,code}` when an answer came,
//!   `http_client_error_count{endpoint,error}` when none did, `http_client_connect_duration`
//!   for each connection made for a call, `http_client_dns_duration` when a host name had to
//!   be resolved, `http_client_response_read_duration` (from the head to the end of the
//!   body). The `endpoint` label is the path called with its leading `/`, without the query.
//!   (`http_client_request_write_duration` is not recorded: hyper does not say when a
//!   request is written.) Off with [`HttpClientBuilder::metrics`].
//!
//! They go to the recorder installed when the server or client is built
//! (`cluster_metrics::prometheus::install`): install it first.
//!
//! # The request pipeline
//! [`Server`] runs each routed call through `cluster-pipeline`'s HTTP layers, in isp-kit's
//! order (`http/endpoint.DefaultWrapper`), after routing ([`ServerBuilder::pipeline`]`(false)`
//! leaves them out):
//! - request id: the caller's `x-request-id`, or a new one set on the request and echoed on
//!   the response ([`CallContext::request_id`] reads it); it is the current id
//!   (`cluster_pipeline::RequestId::current`) while the handler runs, so that an
//!   [`HttpClient`] or `GrpcClient` call made inside it sends it on;
//! - one log line per call, target `cluster_pipeline::log`, INFO, `http handler: log`:
//!   `endpoint` (the route, `METHOD /path`, as the metrics' label), `method`, `status`,
//!   `duration_ms`, `request_id`; at DEBUG also `request_body` and `response_body`, the JSON
//!   with secrets masked (`cluster_proto::SecretMasker`), 16 KiB each at most. Header values
//!   (tokens) are never logged. Written when the response has been sent;
//! - an `http_call` span per call with `endpoint` and `request_id`, in which the handler
//!   runs (its errors are logged there: WARN for API errors below 500, ERROR otherwise);
//!   with OpenTelemetry set up (the bootstrap's `observability.tracing`), a server span
//!   named after the endpoint (`POST /orders/api/create`), child of the caller's W3C
//!   `traceparent`, with `app.request_id`, `http.route`, `http.method`,
//!   `http.status_code`…;
//! - a panic outside the handlers answered as a handler's: `500`, errorCode 900.
//!
//! The client ([`HttpClientBuilder::pipeline`], on by default) is `cluster-pipeline`'s
//! `ClientLayer`: the request id as above, and the trace context of the span the call is
//! made in (`traceparent`, `tracestate`) when OpenTelemetry's propagator is set, so that the
//! callee's span joins the caller's trace. An `x-request-id` the caller sets wins; a
//! `traceparent` the caller sets is sent only when the call is made outside any span.
//!
//! Layers of your own go to [`ServerBuilder::layer`] (they see each request before the
//! router, unknown paths included; a layer that sets `x-request-id` on the request makes it
//! the call's id) and to [`HttpClientBuilder::layer`] (it wraps each call once, before the
//! host is chosen, over a [`ClientService`]).

mod client;
mod connect;
mod context;
mod dispatch;
mod error;
pub mod json;
mod router;
mod server;
pub mod testing;
pub mod validation;

/// The `axum` this crate is built on: what [`ServerBuilder::layer`] takes and
/// [`ServerBuilder::into_axum`] gives, without a second dependency to keep in step.
pub use axum;
pub use client::{
    ClientService, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_IDLE_PER_HOST, DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_TIMEOUT, HOST_PAUSE, HttpClient, HttpClientBuilder, Invoke,
};
/// `cluster-serve`'s bounds, for [`ServerBuilder::serve_config`].
pub use cluster_serve::ServeConfig;
pub use context::{
    APPLICATION_ID, APPLICATION_NAME, CallContext, DEVICE_ID, DOMAIN_ID, REQUEST_ID, SERVICE_ID,
    SYSTEM_ID, USER_ID, new_request_id,
};
pub use error::{
    APPLICATION_JSON, ApiError, BoxError, CallError, ERROR_CODE_BAD_REQUEST, ERROR_CODE_INTERNAL,
    HandlerError, INTERNAL_SERVICE_ERROR, INVALID_REQUEST_BODY,
};
/// The `http` types this crate's API speaks (`Method`, `StatusCode`, `HeaderMap`,
/// `Response`).
pub use http;
pub use router::{DuplicateEndpoint, Endpoint, Response, Router};
pub use server::{
    DEFAULT_MAX_BODY_SIZE, DEFAULT_SHUTDOWN_GRACE, ServeError, Server, ServerBuilder,
};
/// The `validator` crate, for `#[derive(Validate)]` on request types.
pub use validator;
