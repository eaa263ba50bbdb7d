//! [`HttpClient`]: calls the HTTP modules a module requires, round-robin over their live
//! instances.

use crate::connect::{CALL_ENDPOINT, Connector};
use crate::context::{APPLICATION_ID, REQUEST_ID};
use crate::error::{APPLICATION_JSON, CallError};
use crate::json::{self, Decode, DecodeError};
use bytes::Bytes;
use cluster_client::HostsUpgrader;
use cluster_metrics::cache::LabelCache;
use cluster_metrics::http::HttpClientMetrics;
use cluster_pipeline::ClientLayer;
use futures_util::future::{BoxFuture, Either};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt as _};

/// The default call timeout: 15 s (Go: `httpcli`'s `defaultTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The default connect timeout of one host: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection stays in the pool: 5 s, below the 10 s after which our
/// servers (`cluster-serve`'s head timeout) close an idle connection, so that the client
/// lets go first.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many idle connections per host the pool keeps: 256 (our servers' connection cap).
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 256;
/// The largest response body: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 64 * 1024 * 1024;
/// How long a host that could not be connected to is passed over while others are
/// available: 1 s.
pub const HOST_PAUSE: Duration = Duration::from_secs(1);
/// How many paths a client keeps parsed, with their metrics label (paths with a query are
/// not kept): a module calls the same few endpoints over and over.
const PATH_CACHE_CAPACITY: usize = 256;
/// The longest path kept parsed.
const PATH_CACHE_MAX_LEN: usize = 256;

/// The service a client [`layer`](HttpClientBuilder::layer) wraps: one call, whose request
/// has the path (and query) as its URI, and whose response has its whole body; it picks the
/// host and moves to the next one when connecting fails.
pub type ClientService =
    BoxCloneSyncService<http::Request<Bytes>, http::Response<Bytes>, CallError>;

type ApplyLayer = Arc<dyn Fn(ClientService) -> ClientService + Send + Sync>;

struct Host {
    addr: String,
    /// `None` when the address is not `host:port` (or `http://host:port`).
    authority: Option<Authority>,
    /// Whether `failed_at` is set: calls to a host that answers read this flag only.
    failed: AtomicBool,
    /// When connecting to it failed last (see [`HOST_PAUSE`]).
    failed_at: Mutex<Option<tokio::time::Instant>>,
}

impl Host {
    fn new(addr: String) -> Self {
        let bare = addr.strip_prefix("http://").unwrap_or(&addr);
        let authority = (!bare.contains("://"))
            .then(|| bare.trim_end_matches('/').parse::<Authority>().ok())
            .flatten()
            .filter(|a| a.port_u16().is_some());
        if authority.is_none() {
            tracing::warn!(host = %addr, "http client: bad host address (want ip:port)");
        }
        Self {
            addr,
            authority,
            failed: AtomicBool::new(false),
            failed_at: Mutex::new(None),
        }
    }

    /// Whether connecting failed before `now` and less than [`HOST_PAUSE`] before (`now`:
    /// `None` when no host has failed).
    fn paused(&self, now: Option<tokio::time::Instant>) -> bool {
        let Some(now) = now else {
            return false;
        };
        if !self.failed.load(Ordering::Acquire) {
            return false;
        }
        self.failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at < now && now - at < HOST_PAUSE)
    }

    fn set_failed(&self, failed: bool) {
        if !failed && !self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut at = self
            .failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *at = failed.then(tokio::time::Instant::now);
        self.failed.store(failed, Ordering::Release);
    }
}

/// What the calls share: the hosts and the connection pool.
struct Shared {
    hosts: RwLock<Arc<[Arc<Host>]>>,
    next: AtomicUsize,
    pool: Pool<Connector, Full<Bytes>>,
    max_response_size: usize,
    metrics: Option<Arc<HttpClientMetrics>>,
    /// The paths called, as given, parsed (no allocation for a path called before).
    paths: LabelCache<Result<CallPath, String>>,
}

/// A call's path and query, with its leading `/`, and its metrics label (the path).
#[derive(Clone)]
struct CallPath {
    path: PathAndQuery,
    endpoint: Arc<str>,
}

impl CallPath {
    fn parse(path: &str) -> Result<Self, String> {
        path_and_query(path).map(|path| Self {
            endpoint: path.path().into(),
            path,
        })
    }
}

impl Shared {
    /// `path` parsed, from the cache when it was called before.
    fn call_path(&self, path: &str) -> Result<CallPath, String> {
        if path.len() > PATH_CACHE_MAX_LEN || path.contains('?') {
            return CallPath::parse(path);
        }
        self.paths
            .get_or_insert_with(&[path], || CallPath::parse(path))
            .map_or_else(|| CallPath::parse(path), Clone::clone)
    }

    fn snapshot(&self) -> Arc<[Arc<Host>]> {
        self.hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One call: round robin from the next host, hosts that failed lately last; the next
    /// host when connecting fails, each at most once.
    async fn send(&self, mut out: Outgoing) -> Result<http::Response<Bytes>, CallError> {
        let hosts = self.snapshot();
        if hosts.is_empty() {
            return Err(CallError::NoHosts);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // The clock is read only when some host has failed.
        let now = hosts
            .iter()
            .any(|h| h.failed.load(Ordering::Acquire))
            .then(tokio::time::Instant::now);
        let order = (0..2 * hosts.len())
            .map(|i| (i, &hosts[(start + i) % hosts.len()]))
            .filter(|(i, host)| host.paused(now) == (*i >= hosts.len()))
            .map(|(_, host)| host);
        let mut last = None;
        let mut left = hosts.len();
        for host in order {
            left -= 1;
            let Some(authority) = host.authority.clone() else {
                last = Some(CallError::Connect {
                    host: host.addr.clone(),
                    error: "bad host address (want ip:port)".into(),
                });
                continue;
            };
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            // The last host this call may try takes the path and the headers, the others a
            // copy.
            uri.path_and_query = Some(if left == 0 {
                std::mem::replace(&mut out.path, PathAndQuery::from_static("/"))
            } else {
                out.path.clone()
            });
            let uri =
                Uri::from_parts(uri).map_err(|e| CallError::InvalidRequest(format!("uri: {e}")))?;
            let headers = if left == 0 {
                std::mem::take(&mut out.headers)
            } else {
                out.headers.clone()
            };
            let mut attempt = http::Request::new(Full::new(out.body.clone()));
            *attempt.method_mut() = out.method.clone();
            *attempt.uri_mut() = uri;
            *attempt.headers_mut() = headers;
            match self.pool.request(attempt).await {
                Ok(response) => {
                    host.set_failed(false);
                    let (parts, body) = response.into_parts();
                    return self.read(parts, body).await;
                }
                Err(e) if e.is_connect() => {
                    host.set_failed(true);
                    tracing::debug!(host = %host.addr, error = %chain(&e), "http client: host unreachable, trying the next");
                    last = Some(CallError::Connect {
                        host: host.addr.clone(),
                        error: Box::new(e),
                    });
                }
                Err(e) => return Err(CallError::Transport(Box::new(e))),
            }
        }
        Err(last.unwrap_or(CallError::NoHosts))
    }

    /// The response with its whole body, within the size limit.
    async fn read(
        &self,
        parts: http::response::Parts,
        body: hyper::body::Incoming,
    ) -> Result<http::Response<Bytes>, CallError> {
        let started = self.metrics.as_ref().map(|_| Instant::now());
        let collected = Limited::new(body, self.max_response_size).collect().await;
        if let (Some(metrics), Some(started)) = (&self.metrics, started)
            && let Some(endpoint) = crate::connect::current_endpoint()
        {
            metrics.with_endpoint(&endpoint, |m| {
                m.observe_response_reading(started.elapsed());
            });
        }
        match collected {
            Ok(collected) => Ok(http::Response::from_parts(parts, collected.to_bytes())),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(CallError::ResponseTooLarge(self.max_response_size))
            }
            Err(e) => Err(CallError::Transport(e)),
        }
    }
}

/// What a call sends, whichever host it goes to.
struct Outgoing {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    body: Bytes,
}

impl Outgoing {
    fn new(request: http::Request<Bytes>) -> Self {
        let (parts, body) = request.into_parts();
        let path = http::uri::Parts::from(parts.uri)
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Self {
            method: parts.method,
            path,
            headers: parts.headers,
            body,
        }
    }
}

/// An error and its sources, `: `-separated.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        source = next.source();
    }
    text
}

/// The request as the client pipeline's layers leave it: `ClientLayer` over this service sets
/// the request id and the trace context in place, with no future to poll.
struct Prepared;

impl<B> Service<http::Request<B>> for Prepared {
    type Response = http::Request<B>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<http::Request<B>, std::convert::Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

/// The call itself as a service, for the layers.
#[derive(Clone)]
struct Transport(Arc<Shared>);

impl Service<http::Request<Bytes>> for Transport {
    type Response = http::Response<Bytes>;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<http::Response<Bytes>, CallError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let shared = Arc::clone(&self.0);
        let out = Outgoing::new(request);
        Box::pin(async move { shared.send(out).await })
    }
}

#[derive(Debug, Clone)]
struct ClientConfig {
    timeout: Duration,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    max_idle_per_host: usize,
    max_response_size: usize,
    metrics: bool,
    pipeline: bool,
    decode: Decode,
}

struct Inner {
    shared: Arc<Shared>,
    /// The call through the layers; `None` without layers.
    layered: Option<ClientService>,
    /// The host list as last upgraded, for [`HttpClient::watch`] and [`HttpClient::wait_for`].
    published: tokio::sync::watch::Sender<Arc<[String]>>,
    config: ClientConfig,
}

impl Inner {
    /// One call, through the layers if any.
    fn call(
        &self,
        request: http::Request<Bytes>,
    ) -> impl std::future::Future<Output = Result<http::Response<Bytes>, CallError>> + '_ {
        match &self.layered {
            Some(service) => Either::Left(service.clone().oneshot(request)),
            None => Either::Right(self.shared.send(Outgoing::new(request))),
        }
    }
}

/// A client of isp modules that serve HTTP (Go: `httpclix.ClientBalancer` with isp-kit's
/// default middlewares: request id, metrics).
///
/// It implements [`HostsUpgrader`]: pass a clone to
/// [`EventHandler::require_module`](cluster_client::EventHandler::require_module) and it
/// follows the module's ready instances (`ip:port`; `http://ip:port` is taken too). Calls go
/// round-robin over the current hosts, over HTTP/1.1 connections kept in a pool
/// ([`DEFAULT_POOL_IDLE_TIMEOUT`]). With no host a call fails at once with
/// [`CallError::NoHosts`]. When a host cannot be connected to, the call moves on to the next
/// host, each host tried at most once, and that host is tried after the others for
/// [`HOST_PAUSE`] (1 s); any answer, an error status included, is the call's answer, and a
/// failure after the request went out is not retried (the callee may have handled it).
///
/// Cloning is cheap; clones share hosts and connections.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("hosts", &self.hosts())
            .field("config", &self.inner.config)
            .field("layered", &self.inner.layered.is_some())
            .finish()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Vec::<String>::new())
    }
}

/// Configures an [`HttpClient`].
#[derive(Clone)]
pub struct HttpClientBuilder {
    config: ClientConfig,
    layers: Vec<ApplyLayer>,
}

impl std::fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientBuilder")
            .field("config", &self.config)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl HttpClientBuilder {
    /// The timeout of a call that sets none (default [`DEFAULT_TIMEOUT`], 15 s; zero: none).
    /// It covers the whole call: connecting, every host tried, and reading the response.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// How long connecting to one host may take (default [`DEFAULT_CONNECT_TIMEOUT`], 5 s;
    /// zero: no limit of its own).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long an idle connection is kept (default [`DEFAULT_POOL_IDLE_TIMEOUT`], 5 s).
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections per host are kept (default [`DEFAULT_MAX_IDLE_PER_HOST`]).
    #[must_use]
    pub fn max_idle_per_host(mut self, max: usize) -> Self {
        self.config.max_idle_per_host = max;
        self
    }

    /// The largest response body (default [`DEFAULT_MAX_RESPONSE_SIZE`], 64 MiB): a larger
    /// one fails the call with [`CallError::ResponseTooLarge`].
    #[must_use]
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.config.max_response_size = bytes;
        self
    }

    /// Whether response bodies match struct fields ignoring case (default `true`, as Go's
    /// client decodes; see [`crate::json`]).
    #[must_use]
    pub fn case_insensitive_fields(mut self, on: bool) -> Self {
        self.config.decode.fold_case = on;
        self
    }

    /// Whether calls are recorded in isp-kit's client metrics (default `true`; see the crate
    /// docs).
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.config.metrics = on;
        self
    }

    /// Whether calls go through the client side of the request pipeline,
    /// `cluster_pipeline::ClientLayer` (default `true`): the call's `x-request-id` is the
    /// caller's ([`Invoke::request_id`] or the header), else the one of the call being
    /// served (a call made inside a handler passes the incoming id on, as isp-kit's
    /// `requestid.FromContext`), else a new one; and the current trace context (the span the
    /// call is made in, W3C `traceparent`/`tracestate`) is injected when OpenTelemetry's
    /// propagator is set. Off, a call sends only the headers the caller set (no request id
    /// is made); turn it off only to measure its cost (the `echo` bench's rows "pipeline
    /// off").
    #[must_use]
    pub fn pipeline(mut self, on: bool) -> Self {
        self.config.pipeline = on;
        self
    }

    /// Wraps each call in a tower layer of your own. The layer sees the call once, before
    /// the host is chosen, with the path as the URI, `Content-Type` set and, with the
    /// pipeline on, `x-request-id` and the trace context, and the whole response; the one
    /// added last is the outermost. The call's timeout and metrics are outside the layers.
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ClientService> + Send + Sync + 'static,
        L::Service: Service<http::Request<Bytes>, Response = http::Response<Bytes>, Error = CallError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Bytes>>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner: ClientService| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// A client over `hosts` (`ip:port`). Must be called inside a tokio runtime only when a
    /// call is made (the pool's connections are spawned then).
    #[must_use]
    pub fn build<I>(self, hosts: I) -> HttpClient
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let config = self.config;
        let metrics = config.metrics.then(|| Arc::new(HttpClientMetrics::new()));
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(Connector::new(config.connect_timeout, metrics.clone()));
        let shared = Arc::new(Shared {
            hosts: RwLock::new(Arc::from(Vec::new())),
            next: AtomicUsize::new(0),
            pool,
            max_response_size: config.max_response_size,
            metrics,
            paths: LabelCache::new(PATH_CACHE_CAPACITY),
        });
        let layered = (!self.layers.is_empty()).then(|| {
            let transport = BoxCloneSyncService::new(Transport(Arc::clone(&shared)));
            self.layers
                .iter()
                .fold(transport, |service, apply| apply(service))
        });
        let client = HttpClient {
            inner: Arc::new(Inner {
                shared,
                layered,
                published: tokio::sync::watch::Sender::new(Arc::from(Vec::new())),
                config,
            }),
        };
        client.upgrade(hosts.into_iter().map(Into::into).collect());
        client
    }
}

impl HttpClient {
    /// A client over `hosts` (`ip:port`) with the defaults; usually empty, filled by the
    /// cluster through [`HostsUpgrader`].
    #[must_use]
    pub fn new<I>(hosts: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::builder().build(hosts)
    }

    /// A builder (15 s timeout, 5 s connect timeout, 64 MiB responses, metrics and request
    /// pipeline on).
    #[must_use]
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder {
            config: ClientConfig {
                timeout: DEFAULT_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
                max_idle_per_host: DEFAULT_MAX_IDLE_PER_HOST,
                max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
                metrics: true,
                pipeline: true,
                decode: Decode::default(),
            },
            layers: Vec::new(),
        }
    }

    /// Waits until the client has at least `n` hosts (as the cluster delivers them through
    /// [`HostsUpgrader`]); returns them. With `n == 0` it returns at once. There is no
    /// timeout: wrap it in `tokio::time::timeout` if the module may never come up.
    ///
    /// ```
    /// use cluster_client::HostsUpgrader;
    /// use cluster_http::HttpClient;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let orders = HttpClient::new(Vec::<String>::new());
    /// orders.upgrade(vec!["127.0.0.1:9000".to_owned()]); // what the cluster does
    /// assert_eq!(&*orders.wait_for(1).await, ["127.0.0.1:9000"]);
    /// # });
    /// ```
    pub async fn wait_for(&self, n: usize) -> Arc<[String]> {
        let mut rx = self.watch();
        // The sender lives in `self`: the watch cannot close while we wait.
        let hosts = rx.wait_for(|hosts| hosts.len() >= n).await;
        hosts.map_or_else(|_| Arc::from(self.hosts()), |hosts| hosts.clone())
    }

    /// A watch of the host list: it changes at every [`HostsUpgrader::upgrade`].
    #[must_use]
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Arc<[String]>> {
        self.inner.published.subscribe()
    }

    /// The current hosts, in the order given.
    #[must_use]
    pub fn hosts(&self) -> Vec<String> {
        self.inner
            .shared
            .snapshot()
            .iter()
            .map(|h| h.addr.clone())
            .collect()
    }

    /// The hosts passed over because connecting to them failed less than [`HOST_PAUSE`] ago.
    #[must_use]
    pub fn paused_hosts(&self) -> Vec<String> {
        let now = Some(tokio::time::Instant::now());
        self.inner
            .shared
            .snapshot()
            .iter()
            .filter(|h| h.paused(now))
            .map(|h| h.addr.clone())
            .collect()
    }

    /// A call of `method` on `path` (`orders/api/create` or `/orders/api/create`, a query
    /// allowed), sent to `http://<host><path>`, the path with a leading `/`.
    pub fn invoke(&self, method: Method, path: impl AsRef<str>) -> Invoke {
        Invoke {
            client: self.clone(),
            method,
            path: self.inner.shared.call_path(path.as_ref()),
            body: Ok(None),
            headers: HeaderMap::new(),
            invalid: None,
            timeout: None,
        }
    }

    /// `POST path`.
    pub fn post(&self, path: impl AsRef<str>) -> Invoke {
        self.invoke(Method::POST, path)
    }

    /// `GET path`.
    pub fn get(&self, path: impl AsRef<str>) -> Invoke {
        self.invoke(Method::GET, path)
    }

    /// `PUT path`.
    pub fn put(&self, path: impl AsRef<str>) -> Invoke {
        self.invoke(Method::PUT, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: impl AsRef<str>) -> Invoke {
        self.invoke(Method::DELETE, path)
    }

    /// `PATCH path`.
    pub fn patch(&self, path: impl AsRef<str>) -> Invoke {
        self.invoke(Method::PATCH, path)
    }
}

/// `path` with its leading `/`, parsed (one allocation, the result's).
fn path_and_query(path: &str) -> Result<PathAndQuery, String> {
    let parsed = if path.starts_with('/') {
        PathAndQuery::try_from(path)
    } else {
        let mut slashed = String::with_capacity(path.len() + 1);
        slashed.push('/');
        slashed.push_str(path);
        PathAndQuery::try_from(slashed)
    };
    parsed.map_err(|e| format!("path {path:?}: {e}"))
}

impl HostsUpgrader for HttpClient {
    /// Replaces the hosts (a host that stays keeps its failure record; the pool keeps its
    /// connections until they idle out).
    fn upgrade(&self, hosts: Vec<String>) {
        let shared = &self.inner.shared;
        let mut current = shared.hosts.write().unwrap_or_else(PoisonError::into_inner);
        let next: Vec<Arc<Host>> = hosts
            .into_iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|h| h.addr == addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Host::new(addr)))
            })
            .collect();
        tracing::debug!(hosts = next.len(), "http client: hosts upgraded");
        let published: Arc<[String]> = next.iter().map(|h| h.addr.clone()).collect();
        *current = Arc::from(next);
        drop(current);
        self.inner.published.send_replace(published);
    }
}

/// One call being built (Go: `RequestBuilder`). Nothing is sent until [`Invoke::json`],
/// [`Invoke::raw`] or [`Invoke::send`] is awaited. (Its `Debug` lists the header names, not
/// their values, which may be tokens.)
#[must_use = "a call does nothing until awaited with json(), raw() or send()"]
pub struct Invoke {
    client: HttpClient,
    method: Method,
    /// The path and query, with its leading `/`.
    path: Result<CallPath, String>,
    /// `None`: no body.
    body: Result<Option<Bytes>, CallError>,
    headers: HeaderMap,
    /// The first header that HTTP does not allow.
    invalid: Option<String>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Invoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoke")
            .field("method", &self.method)
            .field("path", &self.path.as_ref().map(|p| &p.path))
            .field(
                "body_len",
                &self.body.as_ref().map(|b| b.as_ref().map(Bytes::len)),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Invoke {
    /// The request body, encoded to JSON, with `Content-Type: application/json` (Go:
    /// `JsonRequestBody`). Without one no body is sent.
    pub fn json_body<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.body = serde_json::to_vec(body)
            .map(|json| Some(Bytes::from(json)))
            .map_err(CallError::EncodeRequest);
        self
    }

    /// The request body as JSON bytes, sent as they are, with `Content-Type:
    /// application/json` unless a content type is set.
    pub fn raw_body(mut self, json: impl Into<Bytes>) -> Self {
        self.body = Ok(Some(json.into()));
        self
    }

    /// Sets a header (Go: `Header`), replacing any of the same name.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.insert(name, value);
            }
            _ => {
                self.invalid
                    .get_or_insert_with(|| format!("header {name:?}"));
            }
        }
        self
    }

    /// Sets `x-request-id`; without it (and without the header) the call sends the id of the
    /// call being served, or a new one, as isp-kit's client does (with the pipeline on, the
    /// default: see [`HttpClientBuilder::pipeline`]).
    pub fn request_id(self, id: &str) -> Self {
        self.header(REQUEST_ID, id)
    }

    /// Sets `x-application-identity`.
    pub fn application_id(self, id: i64) -> Self {
        self.header(APPLICATION_ID, &id.to_string())
    }

    /// The call's timeout (default: the client's, 15 s); zero means none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the call and decodes a 2xx response's JSON into `T` (an empty body reads as
    /// `null`: use `()`, `Option<T>` or `serde_json::Value` where it may come; keys match
    /// fields ignoring case unless the client turned it off).
    ///
    /// # Errors
    /// See [`CallError`]; a non-2xx answer is [`CallError::Api`] or [`CallError::Status`].
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, CallError> {
        let decode = self.client.inner.config.decode;
        let body = self.raw().await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"null").map_err(CallError::DecodeResponse);
        }
        json::decode(&body, decode).map_err(|e| match e {
            DecodeError::Json(e) => CallError::DecodeResponse(e),
            DecodeError::Eof => CallError::DecodeResponse(serde::de::Error::custom("EOF")),
        })
    }

    /// Sends the call; returns a 2xx response's body as it came (Go: `StatusCodeToError`
    /// and `DoAndReadBody`).
    ///
    /// # Errors
    /// See [`CallError`]; a non-2xx answer is [`CallError::Api`] or [`CallError::Status`].
    pub async fn raw(self) -> Result<Bytes, CallError> {
        let response = self.send().await?;
        let status = response.status();
        let body = response.into_body();
        if status.is_success() {
            Ok(body)
        } else {
            Err(CallError::from_response(status, body))
        }
    }

    /// Sends the call; returns the response whatever its status (Go: `Do`).
    ///
    /// # Errors
    /// When no response came: see [`CallError`].
    pub async fn send(self) -> Result<http::Response<Bytes>, CallError> {
        self.start().await
    }

    /// The call's request made, and the call as one boxed future: the futures of `json`,
    /// `raw` and `send` stay small (they are moved on every await that makes them).
    fn start(self) -> BoxFuture<'static, Result<http::Response<Bytes>, CallError>> {
        let Self {
            client,
            method,
            path,
            body,
            mut headers,
            invalid,
            timeout,
        } = self;
        if let Some(what) = invalid {
            return Box::pin(std::future::ready(Err(CallError::InvalidRequest(what))));
        }
        let body = match body {
            Ok(body) => body,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let path = match path {
            Ok(path) => path,
            Err(e) => return Box::pin(std::future::ready(Err(CallError::InvalidRequest(e)))),
        };
        if body.is_some() && !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(APPLICATION_JSON),
            );
        }
        let endpoint: Option<Arc<str>> = client
            .inner
            .shared
            .metrics
            .as_ref()
            .map(|_| Arc::clone(&path.endpoint));
        let mut request = http::Request::new(body.unwrap_or_default());
        *request.method_mut() = method;
        *request.uri_mut() = Uri::from(path.path);
        *request.headers_mut() = headers;
        if client.inner.config.pipeline {
            // The request id and the trace context, here, in the span and the task of the
            // caller (this runs when the call is first polled).
            request = match ClientLayer.layer(Prepared).call(request).into_inner() {
                Ok(request) => request,
                Err(never) => match never {},
            };
        }
        let timeout = timeout.unwrap_or(client.inner.config.timeout);
        Box::pin(async move {
            let inner = &*client.inner;
            let started = endpoint.as_ref().map(|_| Instant::now());
            // Made in place (not passed through a parameter, which would keep two copies of
            // the call's future in this one: its size is copied whenever it is made).
            let call = async {
                let call = std::pin::pin!(inner.call(request));
                if timeout.is_zero() {
                    return call.await;
                }
                let expired = std::pin::pin!(tokio::time::sleep(timeout));
                tokio::select! {
                    biased;
                    result = call => result,
                    () = expired => Err(CallError::Timeout(timeout)),
                }
            };
            let result = CALL_ENDPOINT.scope(endpoint.clone(), call).await;
            if let (Some(metrics), Some(endpoint), Some(started)) =
                (&inner.shared.metrics, endpoint, started)
            {
                // Every call, whatever its outcome (isp-kit's client `Metrics` middleware).
                metrics.with_endpoint(&endpoint, |m| {
                    m.observe_duration(started.elapsed());
                    match &result {
                        Ok(response) => m.count_status_code(response.status().as_u16()),
                        Err(error) => m.count_error(error),
                    }
                });
            }
            result
        })
    }
}
