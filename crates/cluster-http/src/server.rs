//! The HTTP server: a [`Router`] on `cluster-serve`'s bounded HTTP/1.1 serving.

use crate::dispatch::Dispatch;
use crate::router::Router;
use axum::response::IntoResponse;
use axum::routing::Route;
use cluster_client::{AddressConfiguration, Client, ClientState};
use cluster_serve::ServeConfig;
use futures_util::future::BoxFuture;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::{Layer, Service};

/// The default limit of a request body: 64 MiB (Go: the default wrapper's
/// `MaxRequestBodySize`).
pub const DEFAULT_MAX_BODY_SIZE: usize = 64 * 1024 * 1024;
/// How long a graceful shutdown lets the calls in progress run before their connections are
/// dropped: 10 s (as `cluster-grpc`'s server).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why serving stopped (`cluster-serve` returns no error of its own so far).
pub type ServeError = io::Error;

type ApplyLayer = Box<dyn FnOnce(axum::Router) -> axum::Router + Send>;

/// Configures and starts a [`Server`].
pub struct ServerBuilder {
    router: Router,
    config: ServeConfig,
    metrics: bool,
    pipeline: bool,
    layers: Vec<ApplyLayer>,
    shutdown: Vec<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("router", &self.router)
            .field("config", &self.config)
            .field("metrics", &self.metrics)
            .field("pipeline", &self.pipeline)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The largest request body (default [`DEFAULT_MAX_BODY_SIZE`], 64 MiB); a larger one is
    /// answered `413` by `cluster-serve` (see the crate docs).
    #[must_use]
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config.max_body_size = bytes;
        self
    }

    /// The bounds of the serving (connections, head, body and write timeouts, shutdown
    /// deadline; see [`ServeConfig`]). The defaults are `cluster-serve`'s, named `http`, with
    /// [`DEFAULT_MAX_BODY_SIZE`] and [`DEFAULT_SHUTDOWN_GRACE`]. This replaces all of them,
    /// the body limit included.
    #[must_use]
    pub fn serve_config(mut self, config: ServeConfig) -> Self {
        self.config = config;
        self
    }

    /// Whether each call to a routed endpoint is recorded in isp-kit's server metrics
    /// (default `true`): `http_request_duration_ms`, `http_request_body_size`,
    /// `http_response_body_size` and `http_status_code_count`, by method and endpoint
    /// (see the crate docs).
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Whether each call to a routed endpoint goes through the request pipeline (default
    /// `true`): `cluster-pipeline`'s request id, log line, `http_call` span with trace
    /// context, and panic recovery, in isp-kit's order, around the route (see the crate
    /// docs). Without it the handlers run in no span, nothing is logged per call, and the
    /// request id is the request's `x-request-id` or a new one, echoed, but not passed on
    /// by the calls the handler makes; turn it off only to measure its cost (the `echo`
    /// bench's rows "pipeline off").
    #[must_use]
    pub fn pipeline(mut self, on: bool) -> Self {
        self.pipeline = on;
        self
    }

    /// Wraps the server in a tower layer of your own. Layers see every request, unknown
    /// paths included, before the router (and so before the request pipeline, which wraps
    /// each routed call); the one added last is the outermost. A layer that sets
    /// `x-request-id` on the request makes that the call's id.
    ///
    /// The bounds are those of [`axum::Router::layer`].
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<axum::extract::Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<axum::extract::Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<axum::extract::Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<axum::extract::Request>>::Future: Send + 'static,
    {
        self.layers
            .push(Box::new(move |router| router.layer(layer)));
        self
    }

    /// How long a graceful shutdown lets calls run (default [`DEFAULT_SHUTDOWN_GRACE`],
    /// 10 s): after it, connections still open are dropped.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_timeout = grace;
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

    /// The router with its layers, as an axum router (without `cluster-serve`'s bounds).
    fn app(&mut self) -> axum::Router {
        let dispatch = Dispatch::new(&self.router, self.metrics, self.pipeline);
        let app = axum::Router::new().fallback_service(dispatch);
        self.layers.drain(..).fold(app, |app, apply| apply(app))
    }

    /// The server as an axum router, with its layers and body limits
    /// ([`cluster_serve::with_body_limits`]), to serve some other way or call in a test
    /// (`tower::ServiceExt::oneshot`). The connection bounds and the shutdown signals are
    /// [`ServerBuilder::serve`]'s and do not apply.
    pub fn into_axum(mut self) -> axum::Router {
        let app = self.app();
        cluster_serve::with_body_limits(app, &self.config)
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
    pub fn serve(mut self, listener: TcpListener) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let mut signals = std::mem::take(&mut self.shutdown);
        let grace = self.config.shutdown_timeout;
        let signal = async move {
            let stop = async move {
                // A dropped `Server` (the sender gone) does not stop the serving.
                if stopped.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            if signals.is_empty() {
                stop.await;
            } else {
                let any = futures_util::future::select_all(signals.drain(..));
                tokio::select! {
                    () = stop => {}
                    _ = any => {}
                }
            }
            tracing::info!(grace = ?grace, "http server: shutting down");
        };
        let app = self.app();
        let task = tokio::spawn(cluster_serve::serve(listener, app, self.config, signal));
        tracing::info!(addr = %local_addr, "http server: serving");
        Ok(Server {
            local_addr,
            stop,
            task,
        })
    }
}

/// A running server: a [`Router`] over HTTP/1.1, within `cluster-serve`'s bounds.
///
/// Dropping it does not stop it; call [`Server::shutdown`] (or wire it to the cluster client
/// with [`ServerBuilder::shutdown_with`] and await [`Server::wait`]).
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

impl Server {
    /// A builder for `router` (64 MiB bodies, 10 s shutdown grace, metrics and request
    /// pipeline on, otherwise `cluster-serve`'s defaults).
    #[must_use]
    pub fn builder(router: Router) -> ServerBuilder {
        ServerBuilder {
            router,
            config: ServeConfig::new("http")
                .with_max_body_size(DEFAULT_MAX_BODY_SIZE)
                .with_shutdown_timeout(DEFAULT_SHUTDOWN_GRACE),
            metrics: true,
            pipeline: true,
            layers: Vec::new(),
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
    /// needs the address before the server exists: bind a `TcpListener` first, declare its
    /// address, build the client, then [`ServerBuilder::serve`] the listener.
    #[must_use]
    pub fn outer_address(&self) -> AddressConfiguration {
        AddressConfiguration::new(
            self.local_addr.ip().to_string(),
            self.local_addr.port().to_string(),
        )
    }

    /// Starts a graceful shutdown without waiting.
    pub fn start_shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Stops accepting connections, lets the calls in progress finish (for the shutdown
    /// grace at most), and returns when the server has stopped.
    ///
    /// # Errors
    /// What stopped the server, if it failed.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.start_shutdown();
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
