//! Serves an [`axum::Router`] over HTTP/1.1 within bounds, for the small HTTP servers of a
//! cluster process: the fake config service's admin API, a module's infra server
//! (`/internal/health`, `/internal/metrics`), an HTTP transport.
//!
//! `axum::serve` has no read timeouts, no connection cap and no shutdown deadline: one client
//! that sends half a request, or stops reading its answer, holds a connection (and a file
//! descriptor) forever, and a graceful shutdown waits for it. [`serve`] runs hyper's HTTP/1
//! connections itself, with these bounds:
//!
//! | limit | default | what happens |
//! |---|---|---|
//! | [`ServeConfig::header_timeout`] | 10 s | a request head (or the next one on a kept-alive connection) not complete in time: the connection is closed |
//! | [`ServeConfig::body_timeout`] | 10 s | a body not complete in time after its head: `408 {"error"}`, connection closed |
//! | [`ServeConfig::max_body_size`] | 4 MiB | `413 {"error"}`, connection closed |
//! | [`ServeConfig::write_timeout`] | 10 s | a response write that makes no progress this long (the client stopped reading): the connection is closed |
//! | [`ServeConfig::max_connections`] | 256 | a connection over the cap is answered `503 {"error": "too many <name> connections; try again later"}` and closed at once, so slow clients cannot use up the process's descriptors |
//! | [`ServeConfig::shutdown_timeout`] | 5 s | after the shutdown signal, requests in flight get this long; then their connections are dropped and [`serve`] returns anyway |
//!
//! [`serve`] reads each request's whole body, within the body limits, before the router sees
//! the request (these servers take small JSON bodies), so routes see a complete body and
//! extractors such as `Bytes` or `Json` never wait on the network. A router served some
//! other way (in a test, through `tower::ServiceExt::oneshot`) can take the same limits as a
//! middleware, [`with_body_limits`].
//!
//! Each request also carries the peer's address as axum's `ConnectInfo<SocketAddr>`
//! extension (what `Router::into_make_service_with_connect_info` gives under
//! `axum::serve`): the `ConnectInfo` extractor works in routes served here.
//!
//! # What it costs a request
//!
//! Against `axum::serve` (`cargo bench -p cluster-http --bench echo`, the row "axum on
//! cluster-serve"): the `ConnectInfo` extension (the request's extension map and one box),
//! and the body read whole in the connection's service (a body that arrives with its head
//! is taken as hyper hands it over: no buffer, no timer; a body still on its way gets its
//! timer then). The header timeout is one timer per connection, set again only when it
//! fires (at most once per [`ServeConfig::header_timeout`] on a busy connection), where
//! hyper's own makes and drops one per request; the write timeout's timer is made at the
//! first write that waits and reused for every later stall.
//!
//! What is not HTTP at all (a request line that does not parse, a head over hyper's 400 KiB
//! buffer) is answered by hyper itself, with a bare status and no body, or by closing the
//! connection. Every answer of this crate is JSON, `{"error": "<message>"}`, and is logged at
//! INFO; refused connections and accept errors are logged at WARN, at most 5 lines per 10 s
//! per server (then one line with the count), since clients cause them. Every line carries
//! the field `server` = [`ServeConfig::name`].
//!
//! # Example
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use cluster_serve::{ServeConfig, serve};
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let router = Router::new().route("/internal/health", get(|| async { "ok" }));
//! let config = ServeConfig::new("infra")
//!     .with_max_connections(64)
//!     .with_shutdown_timeout(Duration::from_secs(2));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, router, config, async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client
//!     .write_all(b"GET /internal/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
//!     .await?;
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("\r\n\r\nok"));
//!
//! // Stop it: requests in flight get `shutdown_timeout`, then it returns.
//! stop.send(()).unwrap();
//! server.await.unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

mod body;
mod conn;

pub use body::with_body_limits;

use axum::Router;
use cluster_transport::log_limit::LogLimiter;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The default of [`ServeConfig::max_connections`]: 256.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The default of [`ServeConfig::header_timeout`]: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`ServeConfig::body_timeout`]: 10 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`ServeConfig::write_timeout`]: 10 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`ServeConfig::max_body_size`]: 4 MiB (the largest config a config service
/// sends a module).
pub const DEFAULT_MAX_BODY_SIZE: usize = 4 << 20;
/// The default of [`ServeConfig::shutdown_timeout`]: 5 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The default of [`ServeConfig::name`]: `http`.
pub const DEFAULT_NAME: &str = "http";

/// How long [`serve`] waits after a failed accept (out of descriptors, most likely) before
/// the next one, so that connections get the time to end.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The bounds of one server (see the [crate docs](crate)), and its name.
///
/// Start from [`ServeConfig::new`] (or [`Default`]) and change what you need with the `with_*`
/// setters; the fields can be read, and set on a value you own.
///
/// ```
/// use cluster_serve::ServeConfig;
/// use std::time::Duration;
///
/// let config = ServeConfig::new("admin")
///     .with_header_timeout(Duration::from_secs(2))
///     .with_max_body_size(64 << 10);
/// assert_eq!(config.name, "admin");
/// assert_eq!(config.max_connections, cluster_serve::DEFAULT_MAX_CONNECTIONS);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeConfig {
    /// What the server is, in its log lines (the field `server`) and in the `503` answer to a
    /// connection over the cap: `too many <name> connections; try again later` (default
    /// [`DEFAULT_NAME`], `http`). E.g. `admin`, `infra`.
    pub name: Cow<'static, str>,
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

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            name: Cow::Borrowed(DEFAULT_NAME),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

impl ServeConfig {
    /// The defaults, for a server called `name` (see [`ServeConfig::name`]).
    #[must_use]
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets [`ServeConfig::name`].
    #[must_use]
    pub fn with_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`ServeConfig::max_connections`].
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`ServeConfig::header_timeout`].
    #[must_use]
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets [`ServeConfig::body_timeout`].
    #[must_use]
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Sets [`ServeConfig::max_body_size`].
    #[must_use]
    pub fn with_max_body_size(mut self, max: usize) -> Self {
        self.max_body_size = max;
        self
    }

    /// Sets [`ServeConfig::write_timeout`].
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`ServeConfig::shutdown_timeout`].
    #[must_use]
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}

/// Serves `router` on `listener` (HTTP/1.1) within the bounds of `config` until `shutdown`
/// resolves. Then it stops accepting (the listener is closed), lets the requests in flight
/// finish for at most [`ServeConfig::shutdown_timeout`] (idle kept-alive connections are
/// closed at once), drops the connections still open, and returns.
///
/// Each request's body is read whole within the body limits of `config` before the router
/// runs (as [`with_body_limits`] does, but in the connection's service, without a
/// middleware), and each request carries the peer's address, axum's
/// `ConnectInfo<SocketAddr>`. A router that has [`with_body_limits`] already (with the same
/// or other limits) keeps working: its own limits then apply on top, to a body that is
/// already read.
///
/// # Errors
/// None so far: accept errors (out of descriptors, a connection reset before it was
/// accepted) are logged and retried after 50 ms. (The `Result` leaves room for errors that
/// must end the server.)
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()>,
{
    let limits = Arc::new(body::Limits::new(&config));
    let name: Arc<str> = Arc::from(config.name.as_ref());
    let refusal = conn::busy_response(&name);
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
                if warnings.admit(0, &name) {
                    tracing::warn!(server = %name, error = %err, "accept failed");
                }
                // Out of descriptors, most likely: give the connections time to end.
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if warnings.admit(0, &name) {
                tracing::warn!(
                    server = %name,
                    %peer,
                    max = config.max_connections,
                    "too many connections; refusing one"
                );
            }
            conn::refuse(&stream, &refusal);
            continue;
        };
        conns.spawn(conn::serve_connection(
            conn::WriteDeadline::new(stream, config.write_timeout),
            conn::ConnService::new(router.clone(), peer, Arc::clone(&limits)),
            conn::ConnLimits {
                header_timeout: config.header_timeout,
                name: Arc::clone(&name),
            },
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
            server = %name,
            open = conns.len(),
            "connections still open at the shutdown deadline; dropping them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    warnings.flush(0, &name);
    Ok(())
}
