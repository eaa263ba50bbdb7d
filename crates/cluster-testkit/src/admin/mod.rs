//! The admin HTTP API of the fake config service (axum): look at what the service knows and
//! change it from outside the process, e.g. with `curl` while developing a Go service
//! against `fake-config-service`.
//!
//! [`router`] builds the routes over a [`FakeConfigService`] handle; [`serve`] runs them on a
//! listener until a shutdown signal, through [`cluster_serve`]. Every route uses only the
//! public API of the service.
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
//!   `instances` the ready instances' `BackendDeclaration`s as on the wire (newest first;
//!   an instance that declared metrics autodiscovery has its `metricsAutodiscovery`
//!   `{"address", "labels"}` there, as `/internal/metrics/autodiscovery` lists it),
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
//! [`serve_with`] takes an [`AdminConfig`]; [`serve`] uses its defaults. The server is
//! [`cluster_serve::serve`], named `admin` (its log lines carry `server=admin`; a connection
//! over the cap is answered `503 {"error": "too many admin connections; try again later"}`):
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
//! `controller/api/{config,module}.go`, `controller/metrics.go`,
//! `domain/{request,response}.go`, `domain/errors.go`), names encoded as isp-kit does (Go
//! field name, first letter lower-cased) and decoded in lowerCamel or PascalCase; all `POST`
//! except the infra server's autodiscovery, which takes `GET` too:
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
//!   "inner"}] (sorted by path), "establishedAt"}`;
//! - `GET` or `POST /internal/metrics/autodiscovery` (the real service serves it on its infra
//!   server, `service/metrics/service.go`) → Prometheus' HTTP service discovery:
//!   `[{"targets": ["<address>"], "labels": {…}}]`, one entry per ready instance that
//!   declared `metricsAutodiscovery` in `MODULE:READY`, its `address` as the one target and
//!   its `labels` (`null` when it has none, as isp-kit's Go client sends and Go encodes a nil
//!   map); ordered by module name, then newest instance first (`AllMetricsAutodiscovery` in
//!   `repository/backend.go`). An instance leaves the list when it disconnects. The real
//!   service lists itself too (it is a module of its own cluster); the fake is not a module.
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
//! `null`); connection ids are the service's [`ConnId`](crate::ConnId) numbers as strings.
//!
//! # Layout
//! This module serves (the [`AdminConfig`] limits, [`router`], [`serve`]); `error` holds the
//! error answers, `native` our routes, `isp` the isp-config-service paths.

mod error;
mod isp;
mod native;

use crate::service::FakeConfigService;
use axum::Router;
use axum::http::StatusCode;
use cluster_serve::ServeConfig;
use error::AdminError;
use serde_json::value::RawValue;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

pub use cluster_serve::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};

/// The admin server's name in [`cluster_serve`]: its log lines, its `503` answer.
const SERVER_NAME: &str = "admin";

/// Limits of the admin server (see the [module docs](self#limits-the-server-holds-against-slow-or-hostile-clients)):
/// the bounds of [`cluster_serve::ServeConfig`], under the name `admin`
/// (`ServeConfig::from(config)`).
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

impl From<AdminConfig> for ServeConfig {
    fn from(config: AdminConfig) -> Self {
        Self::new(SERVER_NAME)
            .with_max_connections(config.max_connections)
            .with_header_timeout(config.header_timeout)
            .with_body_timeout(config.body_timeout)
            .with_max_body_size(config.max_body_size)
            .with_write_timeout(config.write_timeout)
            .with_shutdown_timeout(config.shutdown_timeout)
    }
}

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
/// [`AdminConfig::max_body_size`]: [`cluster_serve::with_body_limits`]); the connection
/// limits are [`serve_with`]'s.
pub fn router_with(service: FakeConfigService, config: &AdminConfig) -> Router {
    cluster_serve::with_body_limits(routes(service), &ServeConfig::from(*config))
}

/// The routes, without the body limits ([`cluster_serve::serve`] adds them).
fn routes(service: FakeConfigService) -> Router {
    isp::add_routes(native::add_routes(Router::new()))
        .fallback(|| async { AdminError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            AdminError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .with_state(service)
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
/// `shutdown` resolves ([`cluster_serve::serve`]). Then it stops accepting, lets the requests
/// in flight finish for at most [`AdminConfig::shutdown_timeout`], drops the connections
/// still open, and returns.
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
    cluster_serve::serve(listener, routes(service), config.into(), shutdown).await
}

// ----- helpers of both route sets -----

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

/// Whether `name` ever connected (or was given a config). Looks at the module names only:
/// [`FakeConfigService::module`] would copy every ready instance of the module.
fn is_known(service: &FakeConfigService, name: &str) -> bool {
    service
        .modules()
        .binary_search_by(|known| known.as_str().cmp(name))
        .is_ok()
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
}
