//! The admin HTTP API of the fake config service (axum): look at what the service knows and
//! change it from outside the process, e.g. with `curl` while developing a Go service
//! against `fake-config-service`.
//!
//! [`router`] builds the routes over a [`FakeConfigService`] handle; [`serve`] runs them on a
//! listener until a shutdown signal. Every route uses only the public API of the service.
//!
//! # Our routes (JSON unless said otherwise)
//! | route | answer |
//! |---|---|
//! | `GET /modules` | `[{"name", "connections", "instances", "configVersion", "config", "schema", "moduleVersion"}]`, sorted by name |
//! | `GET /modules/{name}/config` | the active config, raw, byte for byte as modules get it |
//! | `PUT /modules/{name}/config[?version=N][&unsafe=true]` | body: the raw config; `200 {"version", "changed", "notified"}` |
//! | `POST /modules/{name}/error?event=ERROR_CONFIG\|ERROR_CONNECTION` | body: the text; `200 {"sent": N}` |
//! | `POST /modules/{name}/disconnect` | `200 {"closed": N}` (close code 1000) |
//! | `GET /routes` | the routing table, byte for byte as `CONFIG:SEND_ROUTES_*` carries it |
//!
//! - In `GET /modules`, `connections` is the list of open connections
//!   (`{"id", "peer", "ready", "requiredModules", "requireRoutes", "configSubscribed"}`),
//!   `instances` the ready instances' `BackendDeclaration`s as on the wire (newest first),
//!   `config` and `schema` the raw JSON (`null` when there is none; a default config that is
//!   not JSON, which only a misbehaving module can send, appears as a JSON string).
//! - `PUT …/config`: `version` is the version the update is based on (optimistic locking; `0`
//!   means "the module has no config yet"); without it there is no check. The config is
//!   validated against the module's stored schema unless `unsafe=true` (also `unsafe`,
//!   `unsafe=1`). Unknown query parameters are refused, so a typo cannot silently skip the
//!   version check. Statuses: `400 {"error", "issues": [{"instancePath", "message"}]}` for a
//!   config the schema refuses, `400 {"error"}` for a body that is not a JSON object or a
//!   module without a usable schema, `409 {"error", "activeVersion"}` for a stale version,
//!   `404` for an unknown module — except with `unsafe=true`, which creates the module with
//!   that config (as [`FakeConfigService::set_config_unsafe`]), so a developer can give a
//!   module its config before it first connects.
//! - `POST …/error` and `POST …/disconnect` answer `404` for a module that never connected;
//!   a known module without open connections gives `{"sent": 0}` / `{"closed": 0}`.
//! - Every error is `{"error": "<message>"}` with a 4xx or 5xx status and is logged (tracing,
//!   info): unknown paths get 404, known paths with another method 405, a path that does not
//!   decode (`%FF`) or names a module that cannot exist (`x||y`, `__ack_x`: see
//!   [`cluster_proto::event::check_module_name`]) 400, a body over the limit 413, a body that
//!   does not arrive in time 408, a connection over the cap 503. Error texts name what is
//!   wrong, never a config value. (What is not HTTP at all — a request line that does not
//!   parse, a head over hyper's 400 KiB buffer — is answered by hyper itself, with a bare
//!   status and no body, or by closing the connection.)
//!
//! # Limits (the server holds against slow or hostile clients)
//! [`serve_with`] takes an [`AdminConfig`]; [`serve`] uses its defaults:
//!
//! | limit | default | what happens |
//! |---|---|---|
//! | [`AdminConfig::header_timeout`] | 10 s | a request head (or the next one on a kept-alive connection) not complete in time: the connection is closed |
//! | [`AdminConfig::body_timeout`] | 10 s | a body not complete in time after its head: `408 {"error"}`, connection closed |
//! | [`AdminConfig::max_body_size`] | 4 MiB (the largest config the service can send) | `413 {"error"}` |
//! | [`AdminConfig::write_timeout`] | 10 s | a response write that makes no progress this long (the client stopped reading): the connection is closed |
//! | [`AdminConfig::max_connections`] | 256 | a connection over the cap is answered `503 {"error"}` and closed at once, so slow clients cannot use up the process's descriptors |
//! | [`AdminConfig::shutdown_timeout`] | 5 s | after the shutdown signal, requests in flight get this long; then their connections are dropped and [`serve_with`] returns anyway |
//!
//! # The isp-config-service paths
//! The same request and response shapes as isp-config-service v3 (`routes/routes.go`,
//! `controller/api/{config,module}.go`, `domain/{request,response}.go`, `domain/errors.go`),
//! all `POST`, names encoded as isp-kit does (Go field name, first letter lower-cased) and
//! decoded in lowerCamel or PascalCase:
//! - `/config/config/get_active_config_by_module_name` `{"moduleName"}` → `Config`
//!   `{"id", "name", "moduleId", "valid", "data", "version", "active", "createdAt", "updatedAt"}`;
//! - `/config/config/create_update_config` `{"id", "name", "moduleId", "version", "data",
//!   "unsafe"}` → the same `Config` plus `"isChanged"`;
//! - `/config/module/get_modules_info` → `[ModuleInfo]` `{"id", "name", "active",
//!   "lastConnectedAt", "lastDisconnectedAt", "configSchema", "status", "createdAt"}` where
//!   `status` is the `[Connection]` of its ready instances (`null` when none, as Go encodes a
//!   nil slice);
//! - `/config/routing/get_routes` → `[Connection]` of every ready instance: `{"id",
//!   "moduleName", "libVersion", "version", "address": {"ip", "port"}, "endpoints": [{"path",
//!   "inner"}] (sorted by path), "establishedAt"}`.
//!
//! Errors are isp-kit's `apierrors.Error`, `{"errorCode", "errorMessage", "details"?}`, with
//! HTTP 400 as the gateway maps the gRPC `InvalidArgument` of a business error: `2001` module
//! not found, `2002` config not found, `2003` invalid config (`details`: instance path →
//! message, as gojsonschema's field → description), `2004` version conflict, `2005` schema not
//! found; a body that does not decode or lacks a required field gives `errorCode` 400 with
//! `details` naming the field.
//!
//! What the fake does differently, by necessity: it keeps **one** config per module, which is
//! always active. Module ids and config ids are the module name, and so is the config name.
//! `create_update_config` with a non-empty `id` is an update checked against `version`, as in
//! the real service (`2002` if the id is not the module name); with an empty `id` (a "create"
//! in the real service, which makes a new inactive config) it replaces the module's config
//! without a version check. The fake records no times: every time field is Go's zero time
//! `0001-01-01T00:00:00Z` (`lastConnectedAt`/`lastDisconnectedAt`, pointers in Go, are
//! `null`); connection ids are the service's [`ConnId`] numbers as strings.

use crate::service::FakeConfigService;
use crate::state::{ConfigUpdateError, ConnId, ConnectionInfo, ErrorEvent, ReadyInstance};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cluster_proto::event;
use cluster_proto::payload::{self, BackendDeclaration};
use cluster_transport::log_limit::LogLimiter;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The default of [`AdminConfig::max_connections`]: 256.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The default of [`AdminConfig::header_timeout`]: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`AdminConfig::body_timeout`]: 10 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`AdminConfig::write_timeout`]: 10 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`AdminConfig::max_body_size`]: 4 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 4 << 20;
/// The default of [`AdminConfig::shutdown_timeout`]: 5 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits of the admin server (see the [module docs](self#limits-the-server-holds-against-slow-or-hostile-clients)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// The most connections served at once (default [`DEFAULT_MAX_CONNECTIONS`], 256); one
    /// more is answered `503` and closed. `0` is taken as `1`.
    pub max_connections: usize,
    /// How long a request head may take to arrive, from the connection's start or the end of
    /// the previous response (default [`DEFAULT_HEADER_TIMEOUT`], 10 s). An idle kept-alive
    /// connection is closed after it too.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive after its head (default
    /// [`DEFAULT_BODY_TIMEOUT`], 10 s): `408` after it.
    pub body_timeout: Duration,
    /// The largest request body (default [`DEFAULT_MAX_BODY_SIZE`], 4 MiB): `413` over it.
    pub max_body_size: usize,
    /// How long a write to the client may make no progress (default
    /// [`DEFAULT_WRITE_TIMEOUT`], 10 s): a client that stops reading its response is
    /// dropped after it, instead of holding its connection slot forever. A slow client that
    /// keeps reading is not affected.
    pub write_timeout: Duration,
    /// How long the requests in flight may take once the shutdown signal came (default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`], 5 s); then their connections are dropped.
    pub shutdown_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Go's zero `time.Time` as isp-kit encodes it: the fake records no times.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The admin routes over `service` (see the [module docs](self)).
///
/// # Examples
/// ```
/// use cluster_testkit::FakeConfigService;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let service = FakeConfigService::new();
/// let app = cluster_testkit::admin::router(service.clone());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(cluster_testkit::admin::serve(listener, service, async {
///     let _ = stopped.await;
/// }));
/// # drop(app);
/// stop.send(()).unwrap();
/// server.await.unwrap().unwrap();
/// # });
/// ```
pub fn router(service: FakeConfigService) -> Router {
    router_with(service, &AdminConfig::default())
}

/// [`router`] with the body limits of `config` ([`AdminConfig::body_timeout`],
/// [`AdminConfig::max_body_size`]); the connection limits are [`serve_with`]'s.
pub fn router_with(service: FakeConfigService, config: &AdminConfig) -> Router {
    let limits = BodyLimits {
        timeout: config.body_timeout,
        max: config.max_body_size,
    };
    Router::new()
        .route("/modules", get(list_modules))
        .route("/modules/{name}/config", get(get_config).put(put_config))
        .route("/modules/{name}/error", post(send_error))
        .route("/modules/{name}/disconnect", post(disconnect))
        .route("/routes", get(routes))
        .route(
            "/config/config/get_active_config_by_module_name",
            post(isp_get_active_config),
        )
        .route(
            "/config/config/create_update_config",
            post(isp_create_update_config),
        )
        .route("/config/module/get_modules_info", post(isp_modules_info))
        .route("/config/routing/get_routes", post(isp_routes))
        .fallback(|| async { AdminError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            AdminError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .with_state(service)
        // Our own limit, with a JSON answer, replaces axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(limits, bounded_body))
}

#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    timeout: Duration,
    max: usize,
}

/// Reads the whole body, within the time and size limits, before the route runs.
async fn bounded_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max as u64) {
        return too_large(limits.max);
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, limits.max).collect();
    match tokio::time::timeout(limits.timeout, read).await {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(request).await
        }
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => too_large(limits.max),
        Ok(Err(_)) => closing(AdminError::new(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )),
        Err(_) => closing(AdminError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms",
                limits.timeout.as_millis()
            ),
        )),
    }
}

fn too_large(max: usize) -> Response {
    closing(AdminError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {max} bytes"),
    ))
}

/// The error, with `Connection: close`: the rest of the request is not read.
fn closing(error: AdminError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A module name from the path: decoded, and one a module could have.
struct ModuleName(String);

impl<S: Send + Sync> FromRequestParts<S> for ModuleName {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, format!("bad path: {e}")))?;
        event::check_module_name(&name).map_err(|reason| {
            AdminError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid module name: {reason}"),
            )
        })?;
        Ok(Self(name))
    }
}

/// Serves [`router`] on `listener` until `shutdown` resolves, with the default
/// [`AdminConfig`]; see [`serve_with`].
///
/// # Errors
/// None so far: accept errors are logged and retried. (The `Result` leaves room for errors
/// that must end the server.)
pub async fn serve<F>(
    listener: TcpListener,
    service: FakeConfigService,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(listener, service, AdminConfig::default(), shutdown).await
}

/// Serves [`router_with`] on `listener` (HTTP/1.1) within the limits of `config` until
/// `shutdown` resolves. Then it stops accepting, lets the requests in flight finish for at
/// most [`AdminConfig::shutdown_timeout`], drops the connections still open, and returns.
///
/// # Errors
/// None so far: accept errors (out of descriptors, a connection reset before it was
/// accepted) are logged and retried after 50 ms.
pub async fn serve_with<F>(
    listener: TcpListener,
    service: FakeConfigService,
    config: AdminConfig,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let app = router_with(service, &config);
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    // Refusals and accept errors are caused by clients: bounded like a module connection's.
    let warnings = LogLimiter::default();
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                if warnings.admit(0, "admin") {
                    tracing::warn!(error = %err, "admin API: accept failed");
                }
                // Out of descriptors, most likely: give the connections time to end.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if warnings.admit(0, "admin") {
                tracing::warn!(%peer, max = config.max_connections, "admin API: too many connections; refusing one");
            }
            refuse_busy(&stream);
            continue;
        };
        let stream = WriteDeadline {
            stream,
            timeout: config.write_timeout,
            stalled: None,
        };
        conns.spawn(serve_connection(
            stream,
            app.clone(),
            config.header_timeout,
            stopping.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    let finished = tokio::time::timeout(config.shutdown_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            open = conns.len(),
            "admin API: connections still open at the shutdown deadline; dropping them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    warnings.flush(0, "admin");
    Ok(())
}

/// One HTTP/1.1 connection, until it ends or, after `stopping`, its request in flight is done.
async fn serve_connection(
    stream: WriteDeadline,
    app: Router,
    header_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(app),
        );
    tokio::pin!(connection);
    // Declared after the connection, so dropped before it: the slot is free by the time the
    // client sees the socket close.
    let _permit = permit;
    // The guard `wait_for` gives is dropped at once (it is not `Send`).
    let stop = async move {
        let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "admin connection ended with an error");
    }
}

/// An admin connection's socket, with a deadline on writes that make no progress.
struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Runs while writes are pending; reset by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    /// After a write returned `Pending`: `Ready(error)` once it has been pending too long.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        stalled.as_mut().poll(cx).map(|()| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client has not read its response in time",
            )
        })
    }

    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.guard(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        this.guard(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}

/// Answers a connection over the cap with `503 {"error"}` (as much as the socket takes at
/// once; it never waits) and closes it.
fn refuse_busy(stream: &TcpStream) {
    const BODY: &str = r#"{"error":"too many admin connections; try again later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

// ----- errors -----

/// An error answer: a status and a JSON body; logged when it is turned into a response.
struct AdminError {
    status: StatusCode,
    body: Value,
}

impl AdminError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    fn unknown_module(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("unknown module {name:?}: it never connected"),
        )
    }

    /// isp-kit's `apierrors.Error` of a business error (`InvalidArgument` → HTTP 400).
    fn isp(code: u32, message: &str, details: Option<Value>) -> Self {
        let mut body = Map::new();
        body.insert("errorCode".into(), code.into());
        body.insert("errorMessage".into(), message.into());
        if let Some(details) = details {
            body.insert("details".into(), details);
        }
        Self {
            status: StatusCode::BAD_REQUEST,
            body: Value::Object(body),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status.as_u16(), body = %self.body, "admin request refused");
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// isp-config-service's error codes (`domain/errors.go`).
mod isp_code {
    pub(super) const BAD_REQUEST: u32 = 400;
    pub(super) const MODULE_NOT_FOUND: u32 = 2001;
    pub(super) const CONFIG_NOT_FOUND: u32 = 2002;
    pub(super) const INVALID_CONFIG: u32 = 2003;
    pub(super) const VERSION_CONFLICT: u32 = 2004;
    pub(super) const SCHEMA_NOT_FOUND: u32 = 2005;
}

// ----- helpers -----

/// `bytes` as a raw JSON value: as they are when they are JSON, else as a JSON string.
fn raw_json(bytes: &[u8]) -> Box<RawValue> {
    let as_is = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_owned()).ok());
    as_is.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(bytes);
        // Serialising a string cannot fail, and its output is valid JSON.
        let quoted = serde_json::to_string(&text).unwrap_or_else(|_| "null".to_owned());
        RawValue::from_string(quoted).unwrap_or_else(|_| null_raw())
    })
}

fn null_raw() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

fn json_response(body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// Whether `name` ever connected (or was given a config). Looks at the module names only:
/// [`FakeConfigService::module`] would copy every ready instance of the module.
fn is_known(service: &FakeConfigService, name: &str) -> bool {
    service
        .modules()
        .binary_search_by(|known| known.as_str().cmp(name))
        .is_ok()
}

/// The query parameters, refusing any not in `allowed`.
fn query_params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, AdminError> {
    let Query(params) = query
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, format!("bad query string: {e}")))?;
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown query parameter {unknown:?} (known: {allowed:?})"),
        ));
    }
    Ok(params)
}

fn parse_flag(name: &str, value: Option<&String>) -> Result<bool, AdminError> {
    match value.map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("" | "true" | "1") => Ok(true),
        Some(other) => Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} must be true or false, not {other:?}"),
        )),
    }
}

// ----- our routes -----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModuleView {
    name: String,
    connections: Vec<ConnectionView>,
    instances: Vec<BackendDeclaration>,
    config_version: Option<u64>,
    config: Option<Box<RawValue>>,
    schema: Option<Box<RawValue>>,
    module_version: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionView {
    id: u64,
    peer: String,
    ready: bool,
    required_modules: Vec<String>,
    require_routes: bool,
    config_subscribed: bool,
}

impl From<ConnectionInfo> for ConnectionView {
    fn from(info: ConnectionInfo) -> Self {
        Self {
            id: info.id.0,
            peer: info.peer,
            ready: info.ready.is_some(),
            required_modules: info.required_modules,
            require_routes: info.wants_routes,
            config_subscribed: info.config_subscribed,
        }
    }
}

async fn list_modules(State(service): State<FakeConfigService>) -> axum::Json<Vec<ModuleView>> {
    let views = service
        .modules()
        .into_iter()
        .filter_map(|name| {
            let snapshot = service.module(&name)?;
            let connections = snapshot
                .connections
                .iter()
                .filter_map(|id| service.connection(*id))
                .map(ConnectionView::from)
                .collect();
            Some(ModuleView {
                connections,
                instances: snapshot.ready.into_iter().map(|i| i.declaration).collect(),
                config_version: snapshot.config.as_ref().map(|c| c.version),
                config: snapshot.config.as_ref().map(|c| raw_json(&c.data)),
                schema: snapshot.schema.as_ref().map(|s| raw_json(&s.schema)),
                module_version: snapshot.schema.map(|s| s.module_version),
                name,
            })
        })
        .collect();
    axum::Json(views)
}

async fn get_config(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
) -> Result<Response, AdminError> {
    match service.active_config(&name) {
        Some(config) => Ok(json_response(config.data)),
        None if is_known(&service, &name) => Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("module {name:?} has no config yet"),
        )),
        None => Err(AdminError::unknown_module(&name)),
    }
}

async fn put_config(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let params = query_params(query, &["version", "unsafe"])?;
    let version = params
        .get("version")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                AdminError::new(
                    StatusCode::BAD_REQUEST,
                    format!("version must be a non-negative integer, not {v:?}"),
                )
            })
        })
        .transpose()?;
    let unsafe_update = parse_flag("unsafe", params.get("unsafe"))?;
    if !unsafe_update && !is_known(&service, &name) {
        return Err(AdminError::unknown_module(&name));
    }
    let result = if unsafe_update {
        service.set_config_unsafe(&name, body, version)
    } else {
        service.set_config(&name, body, version)
    };
    match result {
        Ok(change) => Ok(axum::Json(json!({
            "version": change.version,
            "changed": change.changed,
            "notified": change.notified,
        }))
        .into_response()),
        Err(err) => Err(config_error(&err)),
    }
}

fn config_error(err: &ConfigUpdateError) -> AdminError {
    match err {
        ConfigUpdateError::Invalid { issues, .. } => AdminError {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "error": err.to_string(),
                "issues": issues
                    .iter()
                    .map(|i| json!({ "instancePath": i.instance_path, "message": i.message }))
                    .collect::<Vec<_>>(),
            }),
        },
        ConfigUpdateError::VersionConflict { active, .. } => AdminError {
            status: StatusCode::CONFLICT,
            body: json!({ "error": err.to_string(), "activeVersion": active }),
        },
        ConfigUpdateError::TooLarge { .. } => {
            AdminError::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())
        }
        // NotAnObject, NoSchema, InvalidSchema and whatever comes later: the request cannot
        // succeed as it is.
        _ => AdminError::new(StatusCode::BAD_REQUEST, err.to_string()),
    }
}

async fn send_error(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Result<axum::Json<Value>, AdminError> {
    let params = query_params(query, &["event"])?;
    let kind = match params.get("event").map(String::as_str) {
        Some("ERROR_CONFIG") => ErrorEvent::Config,
        Some("ERROR_CONNECTION") => ErrorEvent::Connection,
        Some(other) => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                format!("event must be ERROR_CONFIG or ERROR_CONNECTION, not {other:?}"),
            ));
        }
        None => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "the event query parameter is required: ERROR_CONFIG or ERROR_CONNECTION",
            ));
        }
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| AdminError::new(StatusCode::BAD_REQUEST, "the error text must be UTF-8"))?;
    let max = service.limits().max_frame_len;
    if crate::state::frame_len(kind.name(), text.len()) > max {
        return Err(AdminError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the error text would make a frame over the outgoing limit of {max} bytes"),
        ));
    }
    if !is_known(&service, &name) {
        return Err(AdminError::unknown_module(&name));
    }
    let sent = service.send_error(&name, kind, text);
    Ok(axum::Json(json!({ "sent": sent })))
}

async fn disconnect(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
) -> Result<axum::Json<Value>, AdminError> {
    if !is_known(&service, &name) {
        return Err(AdminError::unknown_module(&name));
    }
    let closed = service.disconnect_module(&name).await;
    Ok(axum::Json(json!({ "closed": closed })))
}

async fn routes(State(service): State<FakeConfigService>) -> Response {
    let table: Vec<BackendDeclaration> = service
        .routing_table()
        .into_iter()
        .map(|i| i.declaration)
        .collect();
    json_response(payload::encode_routing_config(&table))
}

// ----- the isp-config-service paths -----

/// `domain.Config` (plus `isChanged` for `CreateUpdateConfigResponse`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspConfig {
    id: String,
    name: String,
    module_id: String,
    valid: bool,
    data: Box<RawValue>,
    version: u64,
    active: bool,
    created_at: &'static str,
    updated_at: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_changed: Option<bool>,
}

impl IspConfig {
    fn new(module: &str, data: &[u8], version: u64) -> Self {
        Self {
            id: module.to_owned(),
            name: module.to_owned(),
            module_id: module.to_owned(),
            // Go validates only when listing a module's configs; these two paths say `true`.
            valid: true,
            data: raw_json(data),
            version,
            active: true,
            created_at: GO_ZERO_TIME,
            updated_at: GO_ZERO_TIME,
            is_changed: None,
        }
    }
}

/// `domain.Connection`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspConnection {
    id: String,
    module_name: String,
    lib_version: String,
    version: String,
    address: IspAddress,
    endpoints: Vec<IspEndpoint>,
    established_at: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspAddress {
    ip: String,
    port: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspEndpoint {
    path: String,
    inner: bool,
}

impl IspConnection {
    fn new(conn: ConnId, declaration: BackendDeclaration) -> Self {
        let mut endpoints: Vec<IspEndpoint> = declaration
            .endpoints
            .into_iter()
            .map(|e| IspEndpoint {
                path: e.path,
                inner: e.inner,
            })
            .collect();
        endpoints.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            id: conn.0.to_string(),
            module_name: declaration.module_name,
            lib_version: declaration.lib_version,
            version: declaration.version,
            address: IspAddress {
                ip: declaration.address.ip,
                port: declaration.address.port,
            },
            endpoints,
            established_at: GO_ZERO_TIME,
        }
    }

    fn from_ready(instance: ReadyInstance) -> Self {
        Self::new(instance.conn, instance.declaration)
    }
}

/// `domain.ModuleInfo`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspModuleInfo {
    id: String,
    name: String,
    active: bool,
    last_connected_at: Option<&'static str>,
    last_disconnected_at: Option<&'static str>,
    config_schema: Option<Box<RawValue>>,
    status: Option<Vec<IspConnection>>,
    created_at: &'static str,
}

/// Decodes an isp request body, or answers as isp-kit does when it cannot.
fn isp_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| {
        AdminError::isp(
            isp_code::BAD_REQUEST,
            "invalid request body",
            Some(json!({ "body": e.to_string() })),
        )
    })
}

fn isp_required(field: &str) -> AdminError {
    AdminError::isp(
        isp_code::BAD_REQUEST,
        "invalid request body",
        Some(json!({ field: "required" })),
    )
}

/// `domain.GetByModuleNameRequest`.
#[derive(Deserialize)]
struct GetByModuleNameRequest {
    #[serde(rename = "moduleName", alias = "ModuleName", default)]
    module_name: Option<String>,
}

async fn isp_get_active_config(
    State(service): State<FakeConfigService>,
    body: Bytes,
) -> Result<axum::Json<IspConfig>, AdminError> {
    let request: GetByModuleNameRequest = isp_body(&body)?;
    let name = request
        .module_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| isp_required("moduleName"))?;
    if !is_known(&service, &name) {
        return Err(AdminError::isp(
            isp_code::MODULE_NOT_FOUND,
            "module not found",
            None,
        ));
    }
    let config = service.active_config(&name).ok_or_else(|| {
        AdminError::isp(isp_code::CONFIG_NOT_FOUND, "active config not found", None)
    })?;
    Ok(axum::Json(IspConfig::new(
        &name,
        &config.data,
        config.version,
    )))
}

/// `domain.CreateUpdateConfigRequest`.
#[derive(Deserialize)]
struct CreateUpdateConfigRequest {
    #[serde(rename = "id", alias = "Id", default)]
    id: Option<String>,
    #[serde(rename = "name", alias = "Name", default)]
    name: Option<String>,
    #[serde(rename = "moduleId", alias = "ModuleId", default)]
    module_id: Option<String>,
    #[serde(rename = "version", alias = "Version", default)]
    version: Option<u64>,
    #[serde(rename = "data", alias = "Data", default)]
    data: Option<Box<RawValue>>,
    #[serde(rename = "unsafe", alias = "Unsafe", default)]
    unsafe_update: Option<bool>,
}

async fn isp_create_update_config(
    State(service): State<FakeConfigService>,
    body: Bytes,
) -> Result<axum::Json<IspConfig>, AdminError> {
    let request: CreateUpdateConfigRequest = isp_body(&body)?;
    request
        .name
        .as_ref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| isp_required("name"))?;
    let module = request
        .module_id
        .filter(|m| !m.is_empty())
        .ok_or_else(|| isp_required("moduleId"))?;
    let id = request.id.unwrap_or_default();
    if !id.is_empty() && id != module {
        return Err(AdminError::isp(
            isp_code::CONFIG_NOT_FOUND,
            "config not found",
            None,
        ));
    }
    // The real service checks the version of an update (an `id` is given) only.
    let version = (!id.is_empty()).then(|| request.version.unwrap_or(0));
    let data = request.data.unwrap_or_else(null_raw);
    let data = Bytes::copy_from_slice(data.get().as_bytes());
    let unsafe_update = request.unsafe_update.unwrap_or(false);
    if !unsafe_update && !is_known(&service, &module) {
        return Err(AdminError::isp(
            isp_code::SCHEMA_NOT_FOUND,
            "config schema not found",
            None,
        ));
    }
    let result = if unsafe_update {
        service.set_config_unsafe(&module, data.clone(), version)
    } else {
        service.set_config(&module, data.clone(), version)
    };
    let change = result.map_err(|err| isp_config_error(&err))?;
    let data = if change.changed {
        data
    } else {
        service
            .active_config(&module)
            .map_or(data, |active| active.data)
    };
    let mut config = IspConfig::new(&module, &data, change.version);
    config.is_changed = Some(change.changed);
    Ok(axum::Json(config))
}

fn isp_config_error(err: &ConfigUpdateError) -> AdminError {
    match err {
        ConfigUpdateError::Invalid { issues, .. } => {
            let details: Map<String, Value> = issues
                .iter()
                .map(|i| {
                    let field = if i.instance_path.is_empty() {
                        "(root)".to_owned()
                    } else {
                        i.instance_path.clone()
                    };
                    (field, Value::from(i.message.clone()))
                })
                .collect();
            AdminError::isp(
                isp_code::INVALID_CONFIG,
                "invalid config",
                Some(Value::Object(details)),
            )
        }
        ConfigUpdateError::VersionConflict { .. } => AdminError::isp(
            isp_code::VERSION_CONFLICT,
            "someone has updated the config",
            None,
        ),
        ConfigUpdateError::NoSchema { .. } => {
            AdminError::isp(isp_code::SCHEMA_NOT_FOUND, "config schema not found", None)
        }
        ConfigUpdateError::InvalidModuleName { reason, .. } => AdminError::isp(
            isp_code::BAD_REQUEST,
            "invalid request body",
            Some(json!({ "moduleId": reason.to_string() })),
        ),
        // NotAnObject, InvalidSchema, and whatever comes later: the config cannot be checked.
        _ => AdminError::isp(
            isp_code::INVALID_CONFIG,
            "invalid config",
            Some(json!({ "(root)": err.to_string() })),
        ),
    }
}

async fn isp_modules_info(
    State(service): State<FakeConfigService>,
) -> axum::Json<Vec<IspModuleInfo>> {
    let infos = service
        .modules()
        .into_iter()
        .filter_map(|name| {
            let snapshot = service.module(&name)?;
            let status: Vec<IspConnection> = snapshot
                .ready
                .into_iter()
                .map(IspConnection::from_ready)
                .collect();
            Some(IspModuleInfo {
                id: name.clone(),
                active: !status.is_empty(),
                last_connected_at: None,
                last_disconnected_at: None,
                config_schema: snapshot.schema.map(|s| raw_json(&s.schema)),
                status: (!status.is_empty()).then_some(status),
                created_at: GO_ZERO_TIME,
                name,
            })
        })
        .collect();
    axum::Json(infos)
}

async fn isp_routes(State(service): State<FakeConfigService>) -> axum::Json<Vec<IspConnection>> {
    axum::Json(
        service
            .routing_table()
            .into_iter()
            .map(IspConnection::from_ready)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_json_keeps_json_and_quotes_anything_else() {
        assert_eq!(raw_json(br#"{"b":1, "a":2}"#).get(), r#"{"b":1, "a":2}"#);
        assert_eq!(raw_json(b"not json").get(), r#""not json""#);
        assert_eq!(raw_json(b"\xff{").get(), "\"\u{fffd}{\"");
    }

    #[test]
    fn flags_parse_or_refuse() {
        let v = |s: &str| Some(s.to_owned());
        assert!(!parse_flag("unsafe", None).unwrap_or(true));
        assert!(parse_flag("unsafe", v("").as_ref()).unwrap_or(false));
        assert!(parse_flag("unsafe", v("true").as_ref()).unwrap_or(false));
        assert!(!parse_flag("unsafe", v("0").as_ref()).unwrap_or(true));
        let err = parse_flag("unsafe", v("yes").as_ref())
            .err()
            .map(|e| e.status);
        assert_eq!(err, Some(StatusCode::BAD_REQUEST));
    }
}
