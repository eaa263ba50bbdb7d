//! Helpers shared by the client's integration tests: modules, receivers that record what they
//! get (and let a test await it), state waits, log capture, a scripted server.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use cluster_client::Connector;
use cluster_client::transport::memory::MemoryNetwork;
use cluster_client::transport::{Acceptor, Incoming, MessageSink, MessageStream};
use cluster_client::{
    AddressConfiguration, BoxError, Client, ClientBuilder, ClientError, ClientState, ConfigData,
    EndpointDescriptor, EventHandler, ModuleInfo, RemoteConfigReceiver, RoutesReceiver,
    RoutingConfig, async_trait,
};
use cluster_client::{Endpoint, Transport, TransportError};
use cluster_etp::{Conn, ConnConfig, Handlers};
use cluster_testkit::{FakeConfigService, MemoryListener};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Generous virtual-time bound for anything a test awaits.
pub const WAIT: Duration = Duration::from_secs(60);

pub const SCHEMA: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"someString":{"type":"string"}}}"#;

pub fn module(name: &str, ip: &str) -> ModuleInfo {
    ModuleInfo {
        module_name: name.to_owned(),
        module_version: "1.0.0".to_owned(),
        lib_version: "1.0.0".to_owned(),
        grpc_outer_address: AddressConfiguration::new(ip, "9999"),
        endpoints: vec![EndpointDescriptor::new(format!(
            "{}/api/one",
            name.to_lowercase()
        ))],
        ..ModuleInfo::default()
    }
}

pub fn config_data(default: &str) -> ConfigData {
    ConfigData::from_json("1.0.0", SCHEMA, default).unwrap()
}

/// A client of `listener` (in memory, `mem://` in the logs), with a fixed seed.
pub fn builder(listener: &MemoryListener, info: ModuleInfo, default: &str) -> ClientBuilder {
    Client::builder(info, config_data(default), [listener.url()])
        .connector_arc(listener.connector.clone())
        .seed(7)
}

/// A client's `run`, spawned.
pub type Run = JoinHandle<Result<(), ClientError>>;

pub fn spawn_run(client: &Client, handler: EventHandler) -> Run {
    let client = client.clone();
    tokio::spawn(async move { client.run(handler).await })
}

/// Closes `client` and checks that its `run` ended cleanly.
pub async fn close_and_join(client: &Client, run: Run) {
    client.close().await;
    run.await.unwrap().unwrap();
}

/// Waits (virtual time) until the client's state satisfies `pred`; returns it.
pub async fn wait_state(
    client: &Client,
    what: &str,
    pred: impl Fn(&ClientState) -> bool,
) -> ClientState {
    let mut rx = client.state();
    let found = match tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s))).await {
        Ok(Ok(state)) => Some(state.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("client never reached {what}; state: {:?}", *rx.borrow()))
}

pub async fn wait_ready(client: &Client) -> ClientState {
    wait_state(client, "ready", ClientState::is_ready).await
}

pub async fn wait_backing_off(client: &Client) -> ClientState {
    wait_state(client, "backing off", |s| {
        matches!(s, ClientState::BackingOff { .. })
    })
    .await
}

/// Records every value it receives, in order, and lets a test await them.
#[derive(Clone)]
pub struct Recorder<T> {
    seen: Arc<watch::Sender<Vec<T>>>,
}

impl<T: Clone + Send + Sync + std::fmt::Debug + 'static> Recorder<T> {
    pub fn new() -> Self {
        Self {
            seen: Arc::new(watch::channel(Vec::new()).0),
        }
    }

    pub fn push(&self, value: T) {
        self.seen.send_modify(|v| v.push(value));
    }

    pub fn all(&self) -> Vec<T> {
        self.seen.borrow().clone()
    }

    /// Waits until at least `n` values were recorded; returns them all.
    pub async fn wait_len(&self, n: usize) -> Vec<T> {
        let mut rx = self.seen.subscribe();
        let found = match tokio::time::timeout(WAIT, rx.wait_for(|v| v.len() >= n)).await {
            Ok(Ok(v)) => Some(v.clone()),
            _ => None,
        };
        found.unwrap_or_else(|| panic!("expected {n} values, got {:?}", *rx.borrow()))
    }
}

/// A config receiver that records configs as text.
pub type Configs = Recorder<String>;

#[async_trait]
impl RemoteConfigReceiver for Recorder<String> {
    async fn receive_config(&self, config: Bytes) -> Result<(), BoxError> {
        self.push(String::from_utf8_lossy(&config).into_owned());
        Ok(())
    }
}

#[async_trait]
impl RoutesReceiver for Recorder<RoutingConfig> {
    async fn receive_routes(&self, routes: RoutingConfig) -> Result<(), BoxError> {
        self.push(routes);
        Ok(())
    }
}

/// A hosts upgrader that records each list.
pub fn hosts_recorder() -> (
    Recorder<Vec<String>>,
    impl Fn(Vec<String>) + Send + Sync + 'static,
) {
    let rec = Recorder::new();
    let r = rec.clone();
    (rec, move |hosts: Vec<String>| r.push(hosts))
}

/// What a [`watching`] handler records: configs, routing tables, and the required module's
/// host lists.
pub struct Watched {
    pub configs: Configs,
    pub routes: Recorder<RoutingConfig>,
    pub hosts: Recorder<Vec<String>>,
}

/// A handler that records configs and routes and requires `module`, recording its hosts.
pub fn watching(module: &str) -> (EventHandler, Watched) {
    let configs = Configs::new();
    let routes = Recorder::<RoutingConfig>::new();
    let (hosts, upgrader) = hosts_recorder();
    let handler = EventHandler::new()
        .remote_config_receiver(configs.clone())
        .routes_receiver(routes.clone())
        .require_module(module, upgrader);
    (
        handler,
        Watched {
            configs,
            routes,
            hosts,
        },
    )
}

/// A flag set when dropped: proves a future was cancelled.
pub struct DropFlag(pub Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Captured log output (a `tracing` subscriber for the current thread).
#[derive(Clone, Default)]
pub struct Logs(cluster_testkit::logs::CapturedLogs);

impl Logs {
    /// Installs a capturing subscriber on this thread (tests use the current-thread runtime,
    /// so every task of the test logs here) for as long as the guard lives.
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.0.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        self.0.text()
    }
}

/// A fake service with one in-memory listener.
pub fn service() -> (FakeConfigService, MemoryListener) {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    (service, listener)
}

/// Runs `fut` with a virtual-time bound and a readable failure.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A server scripted per test on its own memory network: records `(connection, event)`.
pub struct Scripted {
    pub host: String,
    pub connector: Arc<dyn Connector>,
    pub events: Recorder<(u64, String)>,
}

pub fn scripted(handlers: impl Fn(Recorder<(u64, String)>) -> Handlers) -> Scripted {
    let network = MemoryNetwork::new();
    let mut acceptor = network.bind("scripted:9001").unwrap();
    let events = Recorder::new();
    let handlers = handlers(events.clone());
    tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok(accepted) = acceptor.accept().await {
            conns.push(Conn::spawn(
                accepted.transport,
                handlers.clone(),
                ConnConfig::default(),
            ));
        }
    });
    Scripted {
        host: "scripted:9001".to_owned(),
        connector: Arc::new(network.connector()),
        events,
    }
}

impl Scripted {
    /// A client of module `name` at `ip` (default config `{}`) for this server.
    pub fn client(&self, name: &str, ip: &str) -> Client {
        Client::builder(module(name, ip), config_data("{}"), [self.host.clone()])
            .connector_arc(self.connector.clone())
            .build()
            .unwrap()
    }
}

pub fn record(events: &Recorder<(u64, String)>, conn: &Conn, event: &str) {
    events.push((conn.id(), event.to_owned()));
}

/// Counts the pings the client sends and the pongs it receives, over every connection it
/// dials through [`PingCounter::connector`].
#[derive(Clone, Default)]
pub struct PingCounter {
    pings: Arc<AtomicUsize>,
    pongs: Arc<AtomicUsize>,
}

impl PingCounter {
    /// `inner`, with every dialed transport counted.
    pub fn connector(&self, inner: Arc<dyn Connector>) -> CountingConnector {
        CountingConnector {
            inner,
            counter: self.clone(),
        }
    }

    pub fn pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }

    pub fn pongs(&self) -> usize {
        self.pongs.load(Ordering::SeqCst)
    }
}

pub struct CountingConnector {
    inner: Arc<dyn Connector>,
    counter: PingCounter,
}

#[async_trait]
impl Connector for CountingConnector {
    async fn connect(
        &self,
        endpoint: &Endpoint,
        module_name: &str,
    ) -> Result<Transport, TransportError> {
        let transport = self.inner.connect(endpoint, module_name).await?;
        Ok(Transport {
            sink: Box::new(CountingSink(transport.sink, self.counter.pings.clone())),
            stream: Box::new(CountingStream(transport.stream, self.counter.pongs.clone())),
            peer: transport.peer,
        })
    }
}

struct CountingSink(Box<dyn MessageSink>, Arc<AtomicUsize>);

#[async_trait]
impl MessageSink for CountingSink {
    async fn feed(&mut self, text: Bytes) -> Result<(), TransportError> {
        self.0.feed(text).await
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.0.flush().await
    }
    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.ping(payload).await
    }
    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        self.0.close(code, reason).await
    }
}

struct CountingStream(Box<dyn MessageStream>, Arc<AtomicUsize>);

#[async_trait]
impl MessageStream for CountingStream {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        let incoming = self.0.recv().await?;
        if matches!(incoming, Incoming::Pong(_)) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        Ok(incoming)
    }
}
