//! A raw ETP client for the tests: the connection runtime ([`Conn`]) with every received event
//! forwarded to a channel, and helpers that build the module payloads.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use cluster_etp::{Conn, ConnConfig, Disconnect, Handlers, Reply};
use cluster_testkit::FakeConfigService;
use cluster_transport::ws::{WsConfig, WsConnector};
use cluster_transport::{Connector, Endpoint};
use std::net::SocketAddr;
use std::process::Child;
#[cfg(feature = "bin")]
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// An event the service pushed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: Bytes,
}

impl Event {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A module instance talking to the service with raw frames.
pub struct Client {
    pub conn: Conn,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Client {
    pub async fn connect(connector: &Arc<dyn Connector>, host: &str, module: &str) -> Self {
        let endpoint: Endpoint = host.parse().expect("host:port");
        let transport = tokio::time::timeout(WAIT, connector.connect(&endpoint, module))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (tx, events) = mpsc::unbounded_channel();
        let handlers = Handlers::new().on_unknown(move |_, name, data| {
            let _ = tx.send(Event {
                name: name.to_owned(),
                data,
            });
            Reply::default()
        });
        Self {
            conn: Conn::spawn(transport, handlers, ConnConfig::default()),
            events,
        }
    }

    /// Emits with ack and returns the ack text.
    pub async fn ack(&self, event: &str, data: impl AsRef<[u8]>) -> String {
        let ack = self
            .conn
            .emit_with_ack_timeout(event, data.as_ref(), WAIT)
            .await
            .unwrap_or_else(|e| panic!("ack of {event}: {e}"));
        String::from_utf8_lossy(&ack).into_owned()
    }

    /// The next event, waiting for it.
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no event in time")
            .expect("connection gone")
    }

    /// The next event if one already arrived.
    pub fn try_next(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next event, which must be `name`; returns its data as text.
    pub async fn expect(&mut self, name: &str) -> String {
        let event = self.next().await;
        assert_eq!(event.name, name, "unexpected event {event:?}");
        event.text()
    }

    /// Everything the service queued to us before now has arrived once this returns: the
    /// service answers an unknown event with an ack queued behind all of it.
    pub async fn barrier(&self) {
        assert_eq!(self.ack("TEST:BARRIER", b"").await, "");
    }

    /// Drains the events that arrived so far (call [`Client::barrier`] first).
    pub fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.try_next()).collect()
    }

    pub async fn close(&self) -> Disconnect {
        self.conn.close(1000, "bye").await;
        self.conn.closed().await
    }

    /// Waits for the connection to close (from the other side).
    pub async fn closed(&self) -> Disconnect {
        tokio::time::timeout(WAIT, self.conn.closed())
            .await
            .expect("the connection did not close")
    }

    /// The Go client's handshake, minus the waits: schema, requirements, ready. Returns the
    /// three ack texts.
    pub async fn handshake(&self, schema: &str, requirements: &str, ready: &str) -> [String; 3] {
        [
            self.ack("MODULE:SEND_CONFIG_SCHEMA", schema.as_bytes())
                .await,
            self.ack("MODULE:SEND_REQUIREMENTS", requirements.as_bytes())
                .await,
            self.ack("MODULE:READY", ready.as_bytes()).await,
        ]
    }
}

/// An instance of `module` at `ip:9999` that went through the handshake (config `{}`, no
/// requirements) with three `ok` acks.
pub async fn ready_instance(
    connector: &Arc<dyn Connector>,
    host: &str,
    module: &str,
    ip: &str,
) -> Client {
    let client = Client::connect(connector, host, module).await;
    let acks = client
        .handshake(
            &schema_payload("{}"),
            &requirements_payload(&[], false),
            &ready_payload(module, ip, "9999"),
        )
        .await;
    assert_eq!(acks, ["ok", "ok", "ok"]);
    client
}

/// A `ConfigData` payload with the fixture's schema.
pub fn schema_payload(config: &str) -> String {
    format!(
        r#"{{"version":"1.0.0","schema":{{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{{"someString":{{"type":"string"}}}}}},"config":{config}}}"#
    )
}

/// A `ModuleRequirements` payload.
pub fn requirements_payload(modules: &[&str], routes: bool) -> String {
    let modules: Vec<String> = modules.iter().map(|m| format!("{m:?}")).collect();
    format!(
        r#"{{"requiredModules":[{}],"requireRoutes":{routes}}}"#,
        modules.join(",")
    )
}

/// A `BackendDeclaration` payload as the reference Go client sends it.
pub fn ready_payload(module: &str, ip: &str, port: &str) -> String {
    format!(
        r#"{{"moduleName":"{module}","version":"1.0.0","libVersion":"1.0.0","endpoints":null,"requiredModules":[],"address":{{"ip":"{ip}","port":"{port}"}}}}"#
    )
}

/// An address list payload, as the service sends it.
pub fn addresses(ips: &[(&str, &str)]) -> String {
    let items: Vec<String> = ips
        .iter()
        .map(|(ip, port)| format!(r#"{{"ip":"{ip}","port":"{port}"}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// A routing table of reference-client declarations, newest first.
pub fn routes(instances: &[(&str, &str, &str)]) -> String {
    let items: Vec<String> = instances
        .iter()
        .map(|(module, ip, port)| ready_payload(module, ip, port))
        .collect();
    format!("[{}]", items.join(","))
}

/// A WebSocket connector with the default settings.
pub fn ws_connector() -> Arc<dyn Connector> {
    Arc::new(WsConnector::new(WsConfig::default()).expect("ws connector"))
}

/// A WebSocket listener of `service` and a connector for it.
pub async fn ws(service: &FakeConfigService) -> (Arc<dyn Connector>, String) {
    let addr = service.listen_ws("127.0.0.1:0").await.expect("bind");
    (ws_connector(), addr.to_string())
}

/// An in-memory listener of `service` and its connector.
pub fn memory(service: &FakeConfigService) -> (Arc<dyn Connector>, String) {
    let listener = service.listen_memory().expect("bind");
    (listener.connector, listener.host)
}

// ----- the `fake-config-service` binary -----

/// Starts the `fake-config-service` binary with both listeners on `127.0.0.1:0`,
/// `RUST_LOG=warn`, stdin closed and stdout piped: its first two lines are the bound
/// addresses (see [`bound_addresses`]).
#[cfg(feature = "bin")]
pub fn spawn_service_binary(stderr: Stdio) -> Child {
    spawn_binary(&[], stderr)
}

/// [`spawn_service_binary`] with more arguments, stderr discarded.
#[cfg(feature = "bin")]
pub fn spawn_service_binary_with(args: &[&str]) -> Child {
    spawn_binary(args, Stdio::null())
}

#[cfg(feature = "bin")]
fn spawn_binary(args: &[&str], stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fake-config-service"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn fake-config-service")
}

/// The (WebSocket, admin) addresses in the binary's first lines of output.
pub fn bound_addresses(lines: &[String]) -> (SocketAddr, SocketAddr) {
    let addr = |prefix: &str| -> SocketAddr {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
    };
    (addr("listen ws://"), addr("admin http://"))
}

/// Kills the child when dropped (a test or bench that failed before it stopped it), unless
/// it was taken out.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
