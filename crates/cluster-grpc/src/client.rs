//! [`GrpcClient`]: calls the modules a module requires, round-robin over their live instances.

use crate::error::CallError;
use crate::message::{Body, Message};
use crate::metadata::{APPLICATION_ID, PROXY_METHOD_NAME, REQUEST_ID};
use crate::server::{DEFAULT_MAX_MESSAGE_SIZE, REQUEST_PATH};
use bytes::Bytes;
use cluster_client::HostsUpgrader;
use cluster_metrics::grpc::GrpcClientMetrics;
use cluster_pipeline::request_id_bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{AsciiMetadataValue, MetadataKey, MetadataMap};
use tonic::transport::{Channel, Endpoint};

/// The default call timeout: 15 s (Go: the request builder's `defaultTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The default connect timeout of one host: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Host {
    addr: String,
    channel: OnceLock<Option<Channel>>,
    /// Whether `failed_at` is set: calls to a host that answers read this flag only, and
    /// take no lock.
    failed: AtomicBool,
    /// When the last attempt to reach it failed before any answer (see [`HOST_PAUSE`]).
    failed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// The gRPC deadline header, as tonic's `Request::set_timeout` names it.
const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// How long a host that could not be reached is passed over while others are available: 1 s
/// (grpc-go's round-robin likewise skips instances whose connection is failing).
pub const HOST_PAUSE: Duration = Duration::from_secs(1);

impl Host {
    fn new(addr: String) -> Self {
        Self {
            addr,
            channel: OnceLock::new(),
            failed: AtomicBool::new(false),
            failed_at: std::sync::Mutex::new(None),
        }
    }

    /// Whether it failed before `now` and less than [`HOST_PAUSE`] before. (A failure at or
    /// after `now`, during the call that asks, does not count: that call tried it already.)
    fn paused(&self, now: tokio::time::Instant) -> bool {
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

    /// The host's channel, made on first use (inside the runtime); `None` when the address
    /// does not make a URI.
    fn channel(&self, config: &ClientConfig) -> Option<Channel> {
        self.channel
            .get_or_init(|| {
                let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
                    .map_err(|e| tracing::warn!(host = %self.addr, error = %e, "grpc client: bad host address"))
                    .ok()?;
                Some(
                    endpoint
                        .connect_timeout(config.connect_timeout)
                        .tcp_nodelay(true)
                        .connect_lazy(),
                )
            })
            .clone()
    }
}

#[derive(Debug, Clone)]
struct ClientConfig {
    timeout: Duration,
    connect_timeout: Duration,
    max_message_size: usize,
    metrics: bool,
}

struct Inner {
    hosts: RwLock<Arc<[Arc<Host>]>>,
    /// The host list as last upgraded, for [`GrpcClient::watch`] and [`GrpcClient::wait_for`].
    published: tokio::sync::watch::Sender<Arc<[String]>>,
    next: AtomicUsize,
    config: ClientConfig,
    /// The `grpc-timeout` of `config.timeout`, made once (`None` for no timeout).
    timeout_header: Option<AsciiMetadataValue>,
    /// `grpc_client_request_duration_ms` by endpoint; `None`: off.
    metrics: Option<GrpcClientMetrics>,
}

/// A client of isp modules (Go: isp-kit's `grpc/client.Client`).
///
/// It implements [`HostsUpgrader`]: pass a clone to
/// [`EventHandler::require_module`](cluster_client::EventHandler::require_module) and it
/// follows the module's ready instances. Calls go round-robin over the current hosts; one
/// HTTP/2 connection per host is made on first use and kept while the host stays in the list
/// (a host that leaves the list has its connection dropped). With no host a call fails at
/// once with [`CallError::NoHosts`]. When a host cannot be connected to (the call fails
/// `Unavailable` before any answer from a server), the call moves on to the next host, each
/// host tried at most once, and that host is tried after the others for [`HOST_PAUSE`]
/// (1 s); an `Unavailable` sent by a server is returned as it is.
///
/// Cloning is cheap; clones share hosts and connections.
#[derive(Clone)]
pub struct GrpcClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClient")
            .field("hosts", &self.hosts())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Default for GrpcClient {
    fn default() -> Self {
        Self::new(Vec::<String>::new())
    }
}

/// Configures a [`GrpcClient`].
#[derive(Debug, Clone)]
pub struct GrpcClientBuilder {
    config: ClientConfig,
}

impl GrpcClientBuilder {
    /// The timeout of a call that sets none (default [`DEFAULT_TIMEOUT`], 15 s; zero: none).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// How long connecting to one host may take (default [`DEFAULT_CONNECT_TIMEOUT`], 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// The message limit, each way (default 64 MiB).
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Whether the duration of each call is recorded in isp-kit's
    /// `grpc_client_request_duration_ms{endpoint}` (default `true`; see the crate docs).
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.config.metrics = on;
        self
    }

    /// A client over `hosts` (`ip:port`).
    #[must_use]
    pub fn build<I>(self, hosts: I) -> GrpcClient
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let client = GrpcClient {
            inner: Arc::new(Inner {
                hosts: RwLock::new(Arc::from(Vec::new())),
                published: tokio::sync::watch::Sender::new(Arc::from(Vec::new())),
                next: AtomicUsize::new(0),
                timeout_header: grpc_timeout_value(self.config.timeout),
                metrics: self.config.metrics.then(GrpcClientMetrics::new),
                config: self.config,
            }),
        };
        client.upgrade(hosts.into_iter().map(Into::into).collect());
        client
    }
}

impl GrpcClient {
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

    /// A builder (15 s timeout, 5 s connect timeout, 64 MiB limits, metrics on).
    #[must_use]
    pub fn builder() -> GrpcClientBuilder {
        GrpcClientBuilder {
            config: ClientConfig {
                timeout: DEFAULT_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                metrics: true,
            },
        }
    }

    /// Waits until the client has at least `n` hosts (as the cluster delivers them through
    /// [`HostsUpgrader`]); returns them. With `n == 0` it returns at once. There is no
    /// timeout: wrap it in `tokio::time::timeout` if the module may never come up.
    ///
    /// # Examples
    /// ```
    /// use cluster_client::HostsUpgrader;
    /// use cluster_grpc::GrpcClient;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let auth = GrpcClient::new(Vec::<String>::new());
    /// auth.upgrade(vec!["127.0.0.1:9000".to_owned()]); // what the cluster does
    /// assert_eq!(&*auth.wait_for(1).await, ["127.0.0.1:9000"]);
    /// # });
    /// ```
    pub async fn wait_for(&self, n: usize) -> Arc<[String]> {
        let mut rx = self.watch();
        // The sender lives in `self`: the watch cannot close while we wait.
        let hosts = rx.wait_for(|hosts| hosts.len() >= n).await;
        hosts.map_or_else(|_| Arc::from(self.hosts()), |hosts| hosts.clone())
    }

    /// A watch of the host list: it changes at every [`HostsUpgrader::upgrade`] (each list
    /// the config service sends for the module), for `select!` loops.
    #[must_use]
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Arc<[String]>> {
        self.inner.published.subscribe()
    }

    /// The current hosts, in the order given.
    #[must_use]
    pub fn hosts(&self) -> Vec<String> {
        self.snapshot().iter().map(|h| h.addr.clone()).collect()
    }

    /// The hosts passed over because reaching them failed less than [`HOST_PAUSE`] ago.
    #[must_use]
    pub fn paused_hosts(&self) -> Vec<String> {
        let now = tokio::time::Instant::now();
        self.snapshot()
            .iter()
            .filter(|h| h.paused(now))
            .map(|h| h.addr.clone())
            .collect()
    }

    /// A call of `endpoint` (Go: `Invoke(endpoint)`).
    pub fn invoke(&self, endpoint: impl Into<String>) -> Invoke {
        Invoke {
            client: self.clone(),
            endpoint: endpoint.into(),
            body: Ok(Bytes::new()),
            metadata: Vec::new(),
            application_id: None,
            request_id: None,
            timeout: None,
        }
    }

    fn snapshot(&self) -> Arc<[Arc<Host>]> {
        self.inner
            .hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn call(
        &self,
        message: Message,
        headers: &CallHeaders<'_>,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        let hosts = self.snapshot();
        if hosts.is_empty() {
            return Err(CallError::NoHosts);
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        // Round-robin order from `start`, hosts that failed lately last (two passes, no
        // allocation). The first attempt takes `metadata` (and, if it is the only host
        // left, `message`) as they are; a retry makes them again.
        let now = tokio::time::Instant::now();
        let mut first = Some(metadata);
        let mut message = Some(message);
        let mut tried = 0;
        let mut last = None;
        for i in 0..2 * hosts.len() {
            let host = &hosts[(start + i) % hosts.len()];
            if host.paused(now) != (i >= hosts.len()) {
                continue;
            }
            let Some(channel) = host.channel(&self.inner.config) else {
                last = Some(CallError::Status(tonic::Status::unavailable(format!(
                    "bad host address {}",
                    host.addr
                ))));
                continue;
            };
            tried += 1;
            let metadata = match first.take() {
                Some(metadata) => metadata,
                None => headers.metadata()?,
            };
            // The last host this call may try gets the message itself, others a copy.
            let body = if tried >= hosts.len() {
                message.take()
            } else {
                message.clone()
            };
            let Some(body) = body else { break };
            let mut request = tonic::Request::new(body);
            *request.metadata_mut() = metadata;
            let outcome = self.call_one(channel, request).await;
            host.set_failed(matches!(&outcome, Err(status) if is_connect_failure(status)));
            match outcome {
                Ok(response) => return Ok(response),
                Err(status) if is_connect_failure(&status) => {
                    tracing::debug!(host = %host.addr, error = %status.message(), "grpc client: host unreachable, trying the next");
                    last = Some(CallError::Status(status));
                }
                // tonic enforces the `grpc-timeout` it sends (and so does the server).
                Err(status)
                    if status.code() == Code::Cancelled
                        && status.message() == "Timeout expired" =>
                {
                    return Err(CallError::Timeout(timeout));
                }
                Err(status) => return Err(CallError::from_status(status)),
            }
        }
        Err(last.unwrap_or(CallError::NoHosts))
    }

    async fn call_one(
        &self,
        channel: Channel,
        request: tonic::Request<Message>,
    ) -> Result<Message, tonic::Status> {
        let max = self.inner.config.max_message_size;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("service not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Message, Message>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(REQUEST_PATH);
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A transport failure before any server answered: no response headers came back, so the
/// request was not handled and may go to another host.
fn is_connect_failure(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().get("content-type").is_none()
}

impl HostsUpgrader for GrpcClient {
    /// Replaces the hosts, keeping the connections of hosts that stay.
    fn upgrade(&self, hosts: Vec<String>) {
        let mut current = self
            .inner
            .hosts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
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
        tracing::debug!(hosts = next.len(), "grpc client: hosts upgraded");
        let published: Arc<[String]> = next.iter().map(|h| h.addr.clone()).collect();
        *current = Arc::from(next);
        drop(current);
        self.inner.published.send_replace(published);
    }
}

/// One call being built (Go: `RequestBuilder`). Nothing is sent until [`Invoke::json`],
/// [`Invoke::raw`] or [`Invoke::message`] is awaited.
#[derive(Debug)]
#[must_use = "a call does nothing until awaited with json(), raw() or message()"]
pub struct Invoke {
    client: GrpcClient,
    endpoint: String,
    body: Result<Bytes, CallError>,
    metadata: Vec<(String, String)>,
    application_id: Option<i64>,
    request_id: Option<String>,
    timeout: Option<Duration>,
}

impl Invoke {
    /// The request body, encoded to JSON (Go: `JsonRequestBody`). Without one the body is
    /// empty (`BytesBody` of length 0, as Go sends).
    pub fn json_body<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.body = serde_json::to_vec(body)
            .map(Bytes::from)
            .map_err(CallError::EncodeRequest);
        self
    }

    /// The request body as JSON bytes, sent as they are.
    pub fn raw_body(mut self, json: impl Into<Bytes>) -> Self {
        self.body = Ok(json.into());
        self
    }

    /// Adds a metadata entry (Go: `AppendMetadata`); keys are lowercased by HTTP/2.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Sets `x-application-identity` (Go: `ApplicationId`).
    pub fn application_id(mut self, id: i64) -> Self {
        self.application_id = Some(id);
        self
    }

    /// Sets `x-request-id`; without it (and without one in the metadata) a new one is made.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The call's timeout (default: the client's, 15 s); zero means none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the call and decodes the response's JSON into `T` (an empty body reads as
    /// `null`, as Go's client does: use `Option<T>` or `serde_json::Value` where it may come).
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, CallError> {
        let raw = self.raw().await?;
        let json: &[u8] = if raw.is_empty() { b"null" } else { &raw };
        serde_json::from_slice(json).map_err(CallError::DecodeResponse)
    }

    /// Sends the call; returns the response's `BytesBody` (JSON) as it came.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn raw(self) -> Result<Bytes, CallError> {
        // `Message::bytes_body` without its copy of the handle.
        Ok(match self.message().await?.body {
            Some(Body::BytesBody(bytes)) => bytes,
            _ => Bytes::new(),
        })
    }

    /// Sends the call; returns the whole response message.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn message(self) -> Result<Message, CallError> {
        let body = self.body?;
        // The request id: the caller's (`request_id`, else the first `x-request-id` in the
        // metadata), else the one of the call being served (isp-kit's client passes on
        // `requestid.FromContext(ctx)`), else a new one.
        let request_id = match &self.request_id {
            Some(id) => RequestId::Given(id),
            None => self
                .metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(REQUEST_ID))
                .map_or_else(
                    || {
                        cluster_pipeline::RequestId::current()
                            .map_or_else(|| RequestId::New(request_id_bytes()), RequestId::Current)
                    },
                    |(_, v)| RequestId::Given(v),
                ),
        };
        // The trace context of the span the call is made in (W3C `traceparent`), when
        // OpenTelemetry's propagator is set; made once, sent on every attempt.
        let mut trace = HeaderMap::new();
        cluster_pipeline::trace::inject_current(&mut trace);
        let timeout = self.timeout.unwrap_or(self.client.inner.config.timeout);
        let timeout_header = if timeout == self.client.inner.config.timeout {
            self.client.inner.timeout_header.clone()
        } else {
            grpc_timeout_value(timeout)
        };
        let headers = CallHeaders {
            endpoint: &self.endpoint,
            metadata: &self.metadata,
            application_id: self.application_id,
            request_id,
            timeout: timeout_header,
            trace,
        };
        let metadata = headers.metadata()?;
        let metrics = self.client.inner.metrics.as_ref();
        let started = metrics.map(|_| Instant::now());
        let call = self
            .client
            .call(Message::bytes(body), &headers, metadata, timeout);
        let result = if timeout.is_zero() {
            call.await
        } else {
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| Err(CallError::Timeout(timeout)))
        };
        // Every call sent, whatever its outcome (Go's client `Metrics` middleware).
        if let (Some(metrics), Some(started)) = (metrics, started) {
            metrics.observe_duration(&self.endpoint, started.elapsed());
        }
        result
    }
}

/// The request id a call sends.
enum RequestId<'a> {
    /// The caller's.
    Given(&'a str),
    /// The call being served's.
    Current(cluster_pipeline::RequestId),
    /// A new one.
    New([u8; 32]),
}

/// What a call sends as metadata, kept to make it again for a retry on another host.
struct CallHeaders<'a> {
    endpoint: &'a str,
    metadata: &'a [(String, String)],
    application_id: Option<i64>,
    request_id: RequestId<'a>,
    /// `grpc-timeout`; `None` for no timeout.
    timeout: Option<AsciiMetadataValue>,
    /// The trace context (`traceparent`, `tracestate`), empty without a propagator.
    trace: HeaderMap,
}

impl CallHeaders<'_> {
    /// The call's metadata: the caller's entries in order (keys lowercased, `x-request-id`
    /// left out), then `proxy_method_name`, `x-application-identity`, `x-request-id`,
    /// `grpc-timeout` and the trace context (unless the caller's entries set it).
    fn metadata(&self) -> Result<MetadataMap, CallError> {
        let mut md = MetadataMap::with_capacity(self.metadata.len() + 4);
        for (k, v) in self.metadata {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| CallError::InvalidMetadata(k.clone()))?;
            let value: AsciiMetadataValue = v
                .parse()
                .map_err(|_| CallError::InvalidMetadata(k.clone()))?;
            if key.as_str() != REQUEST_ID {
                md.append(key, value);
            }
        }
        md.insert(PROXY_METHOD_NAME, ascii(self.endpoint)?);
        if let Some(id) = self.application_id {
            md.insert(APPLICATION_ID, AsciiMetadataValue::from(id));
        }
        let mut request_id = match &self.request_id {
            RequestId::Given(id) => ascii(id)?,
            RequestId::Current(id) => {
                md.as_mut().insert(REQUEST_ID, id.to_header_value());
                return self.finish(md);
            }
            RequestId::New(bytes) => AsciiMetadataValue::try_from(bytes)
                .map_err(|_| CallError::InvalidMetadata(REQUEST_ID.to_owned()))?,
        };
        // A new value on every call: HPACK sends it as a literal that neither end adds to
        // its table (RFC 7541 §7.1.3). Indexed, each call's id took a table entry on both
        // ends (and in the server's `:authority` filter) and evicted the entries that repeat.
        request_id.set_sensitive(true);
        md.insert(REQUEST_ID, request_id);
        self.finish(md)
    }

    /// `grpc-timeout` and the trace context after the rest.
    fn finish(&self, mut md: MetadataMap) -> Result<MetadataMap, CallError> {
        if let Some(timeout) = &self.timeout {
            md.insert(GRPC_TIMEOUT_HEADER, timeout.clone());
        }
        for (name, value) in &self.trace {
            let headers = md.as_mut();
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        Ok(md)
    }
}

/// `grpc-timeout` as tonic's `Request::set_timeout` writes it: the most precise unit whose
/// value has at most 8 digits. `None` for zero (no timeout).
fn grpc_timeout_value(timeout: Duration) -> Option<AsciiMetadataValue> {
    if timeout.is_zero() {
        return None;
    }
    const MAX: u128 = 99_999_999;
    let secs = u128::from(timeout.as_secs());
    let text = [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (secs, 'S'),
        (secs / 60, 'M'),
        (secs / 3600, 'H'),
    ]
    .into_iter()
    .find(|(value, _)| *value <= MAX)
    .map_or_else(
        || format!("{MAX}H"),
        |(value, unit)| format!("{value}{unit}"),
    );
    text.parse().ok()
}

fn ascii(value: &str) -> Result<AsciiMetadataValue, CallError> {
    value
        .parse()
        .map_err(|_| CallError::InvalidMetadata(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_written_as_tonic_writes_it() {
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_nanos(99_999_999),
            Duration::from_millis(100),
            Duration::from_millis(500),
            DEFAULT_TIMEOUT,
            Duration::from_secs(100_000),
            Duration::from_secs(100_000_000),
            Duration::from_secs(6_000_000_000),
            Duration::from_secs(359_999_996_400),
        ] {
            let mut request = tonic::Request::new(());
            request.set_timeout(timeout);
            assert_eq!(
                grpc_timeout_value(timeout).as_ref(),
                request.metadata().get(GRPC_TIMEOUT_HEADER),
                "{timeout:?}"
            );
        }
        assert_eq!(grpc_timeout_value(Duration::ZERO), None);
    }

    #[test]
    fn a_retry_sends_the_same_metadata() {
        let metadata = vec![
            ("X-User-Token".to_owned(), "t".to_owned()),
            ("x-request-id".to_owned(), "md-id".to_owned()),
        ];
        let headers = CallHeaders {
            endpoint: "a/b",
            metadata: &metadata,
            application_id: Some(7),
            request_id: RequestId::New(request_id_bytes()),
            timeout: grpc_timeout_value(DEFAULT_TIMEOUT),
            trace: HeaderMap::new(),
        };
        let first = headers.metadata().unwrap();
        let again = headers.metadata().unwrap();
        let pairs = |md: &MetadataMap| {
            md.iter()
                .map(|entry| match entry {
                    tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                        (k.as_str().to_owned(), v.to_str().unwrap().to_owned())
                    }
                    tonic::metadata::KeyAndValueRef::Binary(..) => unreachable!(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&first), pairs(&again));
        let keys: Vec<String> = pairs(&first).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "x-user-token",
                PROXY_METHOD_NAME,
                APPLICATION_ID,
                REQUEST_ID,
                GRPC_TIMEOUT_HEADER
            ]
        );
        assert_eq!(first.get(GRPC_TIMEOUT_HEADER).unwrap(), "15000000u");
        let id = first.get(REQUEST_ID).unwrap();
        assert_eq!(id.len(), 32);
        // Not kept in the HPACK tables: a new value each call.
        assert!(id.is_sensitive());
    }
}
