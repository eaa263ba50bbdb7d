//! The fake config service: listeners, connections and the delivery of notifications, on top
//! of the pure [`ClusterState`].
//!
//! One [`FakeConfigService`] holds one state behind one `std` mutex (never held across an
//! `await`). Each listener ([`FakeConfigService::listen_memory`],
//! [`FakeConfigService::listen_ws`]) runs one task that accepts clients; each client is a
//! [`Conn`] whose handlers (`MODULE:SEND_CONFIG_SCHEMA`, `MODULE:SEND_REQUIREMENTS`,
//! `MODULE:READY`) are synchronous ([`Reply::Ack`]): they run in arrival order, change the
//! state under the lock and queue the resulting notifications before they return, so
//!
//! - what a handler emits to its own connection goes out **before** its ack
//!   (`CONFIG:SEND_CONFIG_WHEN_CONNECTED` before the ack of the schema, as the real service);
//! - each subscriber receives notifications in the order the changes happened (change *k*'s
//!   are queued before change *k + 1* is even computed).
//!
//! A notification is encoded once and the same [`Bytes`] is queued to each recipient
//! ([`Conn::emit_encoded`]), so one config change reaches thousands of connections fast.
//!
//! # Deviations from isp-config-service, on purpose
//! - Notifications are immediate (the real service polls a replicated event table every
//!   500 ms); use [`FakeConfigService::fault_event`] with [`Fault::Delay`] to add lag.
//! - So the `CONFIG:SEND_ROUTES_CHANGED` / `<m>_MODULE_CONNECTED` caused by a connection's own
//!   `MODULE:READY` reach it **before** the ack of `MODULE:READY` (the real service sends them
//!   later, after the ack). docs/protocol.md leaves this order free.
//! - Config variables (`_Var(name)` in isp-config-service) are not supported: configs are sent
//!   as stored.

use crate::state::{
    ActiveConfig, ClusterState, ConfigUpdateError, ConnId, ConnectionInfo, ErrorEvent, HandleError,
    Limits, ModuleSnapshot, Notification, ReadyInstance, StoredSchema, UpdateMode,
};
use bytes::Bytes;
use cluster_proto::event;
use cluster_proto::frame;
use cluster_proto::payload::BackendDeclaration;
use cluster_proto::secrets::SecretMasker;
use cluster_transport::conn::{Conn, ConnConfig, Disconnect, Handlers, Reply};
use cluster_transport::memory::{MemoryConfig, MemoryNetwork};
use cluster_transport::ws::{WsAcceptor, WsServerConfig};
use cluster_transport::{Accepted, Acceptor, CLOSE_NORMAL, Connector, Endpoint, TransportError};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Close code sent to clients when the service stops (1001, "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code sent to a client while connections are refused (1013, "try again later").
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code sent to a client whose module name cannot be used on the wire (1008, "policy
/// violation"; see [`cluster_proto::event::check_module_name`]). The WebSocket listener
/// refuses such names at the upgrade already; this catches every other transport.
pub const CLOSE_INVALID_MODULE_NAME: u16 = 1008;
/// The host part of in-memory listener addresses: `fake-config-service:<port>`.
pub const MEMORY_HOST: &str = "fake-config-service";

/// A fault to inject on an ack or an outgoing event (see [`FakeConfigService::fault_ack`] and
/// [`FakeConfigService::fault_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send it this much later.
    Delay(Duration),
    /// Never send it.
    Swallow,
}

/// Which way a recorded frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → service: an event the service received (and dispatched).
    Received,
    /// Service → client: an event the service emitted. Recorded when the event is queued on
    /// the connection (handed to its writer), not when it is written to the socket: a client
    /// that vanishes at that moment may never get a frame recorded as sent. An event held
    /// back by [`Fault::Delay`] is recorded when the delay ends and it is queued.
    Sent,
    /// Service → client: the service's answer to a received event ([`RecordedFrame::event`]
    /// is the answered event). It goes out as `__ack_<event>` when the event asked for an ack
    /// (the Go client always does); the handler cannot tell, so it is recorded either way.
    /// Recorded when the answer is handed to the connection, like [`Direction::Sent`]. An ack
    /// is not an event: [`FakeConfigService::wait_event`] does not count it.
    Acked,
}

/// One frame as the service recorded it: received when its handler ran, sent when it was
/// queued on the connection (see [`Direction`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    seq: u64,
    conn: ConnId,
    direction: Direction,
    event: Arc<str>,
    data: Bytes,
}

impl RecordedFrame {
    /// The order of recording across the whole service (ascending, from 1).
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The connection.
    #[must_use]
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Which way it went.
    #[must_use]
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The event name (for [`Direction::Acked`], the answered event).
    #[must_use]
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The event data (for [`Direction::Acked`], the ack data: `ok` or the error text).
    #[must_use]
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The data as text (lossy), for assertions and messages.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

impl fmt::Display for RecordedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::Received => "<-",
            Direction::Sent => "->",
            Direction::Acked => "-> ack",
        };
        const SHOWN: usize = 120;
        let text = self.text();
        let cut = text
            .char_indices()
            .nth(SHOWN)
            .map_or(text.as_str(), |(i, _)| &text[..i]);
        let more = if cut.len() < text.len() { "…" } else { "" };
        write!(f, "{} {arrow} {} {cut}{more}", self.conn, self.event)
    }
}

/// Whose frames: one connection's, or those of every connection of a module (open or closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One connection.
    Conn(ConnId),
    /// Every connection of a module, in recording order.
    Module(String),
}

impl From<ConnId> for Target {
    fn from(conn: ConnId) -> Self {
        Self::Conn(conn)
    }
}

impl From<&str> for Target {
    fn from(module: &str) -> Self {
        Self::Module(module.to_owned())
    }
}

impl From<String> for Target {
    fn from(module: String) -> Self {
        Self::Module(module)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conn(conn) => write!(f, "{conn}"),
            Self::Module(module) => write!(f, "module {module:?}"),
        }
    }
}

/// An accepted config update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigChange {
    /// The active version after the update.
    pub version: u64,
    /// Whether the config changed (`false`: it was equal to the active one; nothing was sent).
    pub changed: bool,
    /// How many connections are subscribed to the change (`CONFIG:SEND_CONFIG_CHANGED` was
    /// queued to each of them, unless an event fault holds it back or swallows it).
    pub notified: usize,
}

/// Why an await helper gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The condition did not hold in time.
    #[error("timed out after {timeout:?} waiting for {expected}; what there is: {actual}")]
    Timeout {
        /// What was awaited.
        expected: String,
        /// What the state was when the time ran out.
        actual: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Frames are not recorded ([`FakeConfigServiceBuilder::recording`]), so no frame can be
    /// awaited.
    #[error("frame recording is off: cannot wait for {expected}")]
    RecordingOff {
        /// What was awaited.
        expected: String,
    },
}

/// An in-memory listener: the host to put in a client's host list and the connector that
/// reaches it.
#[derive(Clone)]
pub struct MemoryListener {
    /// `host:port` on the service's [`MemoryNetwork`], e.g. `fake-config-service:49152`.
    pub host: String,
    /// Dials the service's memory network (every memory listener of the service).
    pub connector: Arc<dyn Connector>,
}

impl MemoryListener {
    /// The host with the in-memory scheme, `mem://fake-config-service:49152`: put it in a
    /// client's host list (with [`MemoryListener::connector`]) and the client's logs and
    /// states show the in-memory scheme rather than `ws://`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("mem://{}", self.host)
    }

    /// The host as an [`Endpoint`].
    ///
    /// # Panics
    /// Never: the host is always `name:port`.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint {
        self.host
            .parse()
            .expect("a memory listener address is host:port")
    }
}

impl fmt::Debug for MemoryListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryListener")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Builds a [`FakeConfigService`] with non-default settings.
#[derive(Debug, Clone)]
pub struct FakeConfigServiceBuilder {
    recording: bool,
    limits: Limits,
    conn_config: ConnConfig,
    ws_config: WsServerConfig,
    memory_config: MemoryConfig,
}

impl Default for FakeConfigServiceBuilder {
    fn default() -> Self {
        Self {
            recording: true,
            limits: Limits::default(),
            conn_config: ConnConfig::default(),
            ws_config: WsServerConfig::default(),
            memory_config: MemoryConfig::default(),
        }
    }
}

impl FakeConfigServiceBuilder {
    /// Whether every frame is recorded per connection (default `true`). Switch it off for
    /// load tests: nothing is then kept per frame, and a closed connection leaves nothing.
    #[must_use]
    pub fn recording(mut self, on: bool) -> Self {
        self.recording = on;
        self
    }

    /// What the service accepts so that no frame it sends is larger than a client can read
    /// (default [`Limits::default`]: frames of at most 4 MiB, declarations of at most 256 KiB
    /// and 4,096 endpoints). See [`Limits`].
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The settings of each connection (default [`ConnConfig::default`]).
    #[must_use]
    pub fn conn_config(mut self, config: ConnConfig) -> Self {
        self.conn_config = config;
        self
    }

    /// The settings of WebSocket listeners (default [`WsServerConfig::default`]: 1 MiB
    /// messages, as the Go server).
    #[must_use]
    pub fn ws_config(mut self, config: WsServerConfig) -> Self {
        self.ws_config = config;
        self
    }

    /// The settings of the in-memory network (default [`MemoryConfig::default`]).
    #[must_use]
    pub fn memory_config(mut self, config: MemoryConfig) -> Self {
        self.memory_config = config;
        self
    }

    /// Builds the service. It listens nowhere until asked to.
    #[must_use]
    pub fn build(self) -> FakeConfigService {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| Shared {
            me: weak.clone(),
            inner: Mutex::new(Inner {
                state: ClusterState::with_limits(self.limits),
                conns: HashMap::new(),
                history: BTreeMap::new(),
                recording: self.recording,
                next_seq: 0,
                refuse: false,
                ack_faults: HashMap::new(),
                event_faults: HashMap::new(),
                delay_line: None,
                held: HashMap::new(),
                reaper: None,
                listeners: Vec::new(),
            }),
            changed,
            handlers: make_handlers(weak.clone()),
            conn_config: self.conn_config,
            ws_config: self.ws_config,
            network: MemoryNetwork::with_config(self.memory_config),
        });
        FakeConfigService { shared }
    }
}

/// A fake isp-config-service for tests: see the [crate docs](crate).
///
/// Cloning gives another handle to the same service. When the last handle is dropped the
/// listeners stop and every connection is closed (1001).
#[derive(Clone)]
pub struct FakeConfigService {
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeConfigService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("FakeConfigService")
            .field("state", &inner.state)
            .field(
                "listeners",
                &inner.listeners.iter().map(|l| &l.addr).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for FakeConfigService {
    fn default() -> Self {
        Self::new()
    }
}

struct Shared {
    /// A weak handle to itself, for the tasks it starts.
    me: Weak<Self>,
    inner: Mutex<Inner>,
    /// Bumped after every change of `inner`: the await helpers wait on it.
    changed: watch::Sender<u64>,
    handlers: Handlers,
    conn_config: ConnConfig,
    ws_config: WsServerConfig,
    network: MemoryNetwork,
}

struct Inner {
    state: ClusterState,
    conns: HashMap<ConnId, ConnSlot>,
    /// Records of closed connections (kept only while recording).
    history: BTreeMap<ConnId, ConnRecord>,
    recording: bool,
    next_seq: u64,
    refuse: bool,
    ack_faults: HashMap<String, Fault>,
    event_faults: HashMap<String, Fault>,
    delay_line: Option<DelayLine>,
    /// For each connection with notifications in the delay line, how many: its later
    /// notifications go through the line too, so they cannot overtake the held ones.
    held: HashMap<ConnId, usize>,
    reaper: Option<mpsc::UnboundedSender<Closing>>,
    listeners: Vec<Listener>,
}

/// The end of one connection, as the reaper awaits it.
type Closing = BoxFuture<'static, (ConnId, Disconnect)>;

struct ConnSlot {
    conn: Conn,
    record: ConnRecord,
}

struct ConnRecord {
    module: Arc<str>,
    frames: Vec<RecordedFrame>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListenAddr {
    Memory(String),
    Ws(SocketAddr),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(addr) => write!(f, "mem://{addr}"),
            Self::Ws(addr) => write!(f, "ws://{addr}"),
        }
    }
}

struct Listener {
    addr: ListenAddr,
    /// Dropping it stops the accept task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// One module event applied to the state (a method of [`ClusterState`]).
type ApplyFn = fn(&mut ClusterState, ConnId, &[u8]) -> Result<Vec<Notification>, HandleError>;

/// The queue of held-back notifications and its task.
struct DelayLine {
    tx: mpsc::UnboundedSender<Delayed>,
    /// Dropped with the service: the task stops at once, even in the middle of a wait.
    _stop: oneshot::Sender<()>,
}

/// A notification held back by [`Fault::Delay`], or queued behind one.
struct Delayed {
    at: Instant,
    event: Arc<str>,
    payload: Bytes,
    frame: Bytes,
    recipients: Vec<ConnId>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the state half-changed in a way that
        // matters to a test double; carry on rather than poison every later call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Registers an accepted client and starts its connection.
    fn on_accept(self: &Arc<Self>, accepted: Accepted, listener: &str) {
        let Accepted {
            transport,
            module_name,
        } = accepted;
        if let Err(reason) = event::check_module_name(&module_name) {
            tracing::info!(module = ?shorten(&module_name), listener, %reason, "refusing a connection: invalid module name");
            let conn = Conn::spawn(transport, Handlers::new(), self.conn_config.clone());
            conn.start_close(
                CLOSE_INVALID_MODULE_NAME,
                &format!("invalid module name: {reason}"),
            );
            return;
        }
        let mut inner = self.lock();
        if inner.refuse {
            drop(inner);
            tracing::info!(module = %module_name, listener, "refusing a connection");
            let conn = Conn::spawn(transport, Handlers::new(), self.conn_config.clone());
            conn.start_close(
                CLOSE_TRY_AGAIN_LATER,
                "the fake config service refuses connections",
            );
            return;
        }
        // Spawned under the lock, so no handler of this connection runs before it is known.
        let conn = Conn::spawn(transport, self.handlers.clone(), self.conn_config.clone());
        let id = ConnId(conn.id());
        tracing::info!(conn = %id, module = %module_name, peer = conn.peer(), listener, "module connected");
        inner.state.connect(id, &module_name, conn.peer());
        inner.conns.insert(
            id,
            ConnSlot {
                conn: conn.clone(),
                record: ConnRecord {
                    module: module_name.into(),
                    frames: Vec::new(),
                },
            },
        );
        // The reaper ends only when this sender is dropped.
        let _ = inner
            .reaper(&self.me)
            .send(Box::pin(async move { (id, conn.closed().await) }));
        drop(inner);
        self.bump();
    }

    /// The connection ended: drop its instance, notify, keep its record if recording.
    fn on_closed(&self, id: ConnId, disconnect: &Disconnect) {
        let mut inner = self.lock();
        tracing::info!(conn = %id, normal = disconnect.normal, reason = %disconnect.reason, "module disconnected");
        let notifications = inner.state.disconnect(id);
        inner.deliver(notifications, &self.me);
        if let Some(slot) = inner.conns.remove(&id)
            && inner.recording
        {
            inner.history.insert(id, slot.record);
        }
        drop(inner);
        self.bump();
    }

    /// Runs one module event: record it, change the state, deliver the notifications, and
    /// answer `ok` or the error text (through the ack fault, if any).
    fn handle(
        self: &Arc<Self>,
        conn: &Conn,
        event: &'static str,
        data: &Bytes,
        apply: ApplyFn,
    ) -> Reply {
        let id = ConnId(conn.id());
        let mut inner = self.lock();
        inner.record(id, Direction::Received, event, data.clone());
        let answer = match apply(&mut inner.state, id, data) {
            Ok(notifications) => {
                inner.deliver(notifications, &self.me);
                Bytes::from_static(b"ok")
            }
            Err(err) => {
                if conn.log_limiter().admit(conn.id(), conn.peer()) {
                    tracing::warn!(conn = %id, event, error = %err, "module event refused");
                }
                Bytes::from(err.to_string())
            }
        };
        let reply = inner.answer(self, id, event, answer);
        drop(inner);
        self.bump();
        reply
    }

    fn handle_unknown(self: &Arc<Self>, conn: &Conn, event: &str, data: Bytes) -> Reply {
        let id = ConnId(conn.id());
        if conn.log_limiter().admit(conn.id(), conn.peer()) {
            tracing::warn!(conn = %id, event = ?shorten(event), "unknown event; acking empty");
        }
        let mut inner = self.lock();
        inner.record(id, Direction::Received, event, data);
        let reply = inner.answer(self, id, event, Bytes::new());
        drop(inner);
        self.bump();
        reply
    }

    /// Awaits the end of every connection and unregisters it. One task for all connections
    /// (rather than one per connection) keeps a connection's cost down.
    async fn run_reaper(weak: Weak<Self>, mut rx: mpsc::UnboundedReceiver<Closing>) {
        let mut closing = FuturesUnordered::new();
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(conn) => closing.push(conn),
                    None => return,
                },
                Some((id, disconnect)) = closing.next(), if !closing.is_empty() => {
                    let Some(shared) = weak.upgrade() else { return };
                    shared.on_closed(id, &disconnect);
                }
            }
        }
    }

    /// Emits held-back notifications when their time comes, in the order they were held.
    /// Ends as soon as the service is gone (`stop` fires when its sender is dropped), also in
    /// the middle of a wait.
    async fn run_delay_line(
        weak: Weak<Self>,
        mut rx: mpsc::UnboundedReceiver<Delayed>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let delayed = tokio::select! {
                next = rx.recv() => match next {
                    Some(delayed) => delayed,
                    None => return,
                },
                _ = &mut stop => return,
            };
            tokio::select! {
                () = tokio::time::sleep_until(delayed.at) => {}
                _ = &mut stop => return,
            }
            let Some(shared) = weak.upgrade() else { return };
            let mut inner = shared.lock();
            inner.emit_now(
                &delayed.event,
                &delayed.payload,
                &delayed.frame,
                &delayed.recipients,
            );
            inner.release(&delayed.recipients);
            drop(inner);
            shared.bump();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        for listener in &mut inner.listeners {
            listener.stop.take();
            if let Some(task) = listener.task.take() {
                task.abort();
            }
        }
        for slot in inner.conns.values() {
            slot.conn
                .start_close(CLOSE_GOING_AWAY, "the fake config service is gone");
        }
    }
}

impl Inner {
    /// Records a frame when recording is on (the event name is only allocated then).
    fn record(
        &mut self,
        conn: ConnId,
        direction: Direction,
        event: impl Into<Arc<str>>,
        data: Bytes,
    ) {
        if !self.recording {
            return;
        }
        let event = event.into();
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(slot) = self.conns.get_mut(&conn) {
            slot.record.frames.push(RecordedFrame {
                seq,
                conn,
                direction,
                event,
                data,
            });
        }
    }

    /// Queues each notification to its recipients now, or hands it to the delay line, or
    /// drops it, per the event faults.
    ///
    /// A recipient that has notifications in the delay line gets its undelayed ones through
    /// the line too, queued behind them (due at once, so sent right after the last one held
    /// before it: at `max(now, its last deadline)`). Each connection thus receives its
    /// notifications in the order the changes happened, whatever the faults; recipients with
    /// nothing held get theirs at once.
    ///
    /// Last line of defence: a notification whose event name would not decode as itself, or
    /// whose frame is over [`Limits::max_frame_len`], is dropped with an error line (the state
    /// refuses the inputs that would produce one; this catches what it missed).
    fn deliver(&mut self, notifications: Vec<Notification>, me: &Weak<Shared>) {
        let max_frame_len = self.state.limits().max_frame_len;
        for n in notifications {
            if let Err(reason) = event::check_event_name(&n.event) {
                tracing::error!(event = ?shorten(&n.event), %reason, "not sending an event with an invalid name");
                continue;
            }
            let len = crate::state::frame_len(&n.event, n.payload.len());
            if len > max_frame_len {
                tracing::error!(
                    event = n.event,
                    len,
                    max_frame_len,
                    "not sending a frame over the outgoing limit"
                );
                continue;
            }
            let fault = self.event_faults.get(&n.event).copied();
            if fault == Some(Fault::Swallow) {
                tracing::debug!(
                    event = n.event,
                    recipients = n.recipients.len(),
                    "swallowing event (fault)"
                );
                continue;
            }
            let frame = frame::encode_to_bytes(&n.event, 0, &n.payload);
            let event: Arc<str> = n.event.into();
            match fault {
                Some(Fault::Delay(delay)) => self.hold(
                    me,
                    Delayed {
                        at: Instant::now() + delay,
                        event,
                        payload: n.payload,
                        frame,
                        recipients: n.recipients,
                    },
                ),
                _ if self.held.is_empty() => {
                    self.emit_now(&event, &n.payload, &frame, &n.recipients);
                }
                _ => {
                    let (behind, free): (Vec<ConnId>, Vec<ConnId>) = n
                        .recipients
                        .into_iter()
                        .partition(|id| self.held.contains_key(id));
                    self.emit_now(&event, &n.payload, &frame, &free);
                    if !behind.is_empty() {
                        self.hold(
                            me,
                            Delayed {
                                at: Instant::now(),
                                event,
                                payload: n.payload,
                                frame,
                                recipients: behind,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Puts a notification in the delay line and counts it for each of its recipients.
    fn hold(&mut self, me: &Weak<Shared>, delayed: Delayed) {
        for &id in &delayed.recipients {
            *self.held.entry(id).or_default() += 1;
        }
        // The delay line ends only when the service is gone.
        let _ = self.delay_line(me).send(delayed);
    }

    /// The delay line sent a notification to `recipients`: one less held for each.
    fn release(&mut self, recipients: &[ConnId]) {
        for id in recipients {
            if let Some(count) = self.held.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    self.held.remove(id);
                }
            }
        }
    }

    fn emit_now(&mut self, event: &Arc<str>, payload: &Bytes, frame: &Bytes, to: &[ConnId]) {
        for &id in to {
            let Some(slot) = self.conns.get(&id) else {
                continue;
            };
            if slot.conn.emit_encoded(frame.clone()).is_ok() {
                self.record(id, Direction::Sent, event.clone(), payload.clone());
            }
        }
    }

    fn reaper(&mut self, me: &Weak<Shared>) -> &mpsc::UnboundedSender<Closing> {
        self.reaper.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Shared::run_reaper(me.clone(), rx));
            tx
        })
    }

    fn delay_line(&mut self, me: &Weak<Shared>) -> &mpsc::UnboundedSender<Delayed> {
        &self
            .delay_line
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let (stop, stopped) = oneshot::channel();
                tokio::spawn(Shared::run_delay_line(me.clone(), rx, stopped));
                DelayLine { tx, _stop: stop }
            })
            .tx
    }

    /// The handler's reply for `answer`, through the ack fault of `event`.
    fn answer(&mut self, shared: &Arc<Shared>, id: ConnId, event: &str, answer: Bytes) -> Reply {
        match self.ack_faults.get(event).copied() {
            None => {
                self.record(id, Direction::Acked, event, answer.clone());
                Reply::Ack(answer)
            }
            Some(Fault::Swallow) => {
                tracing::debug!(conn = %id, event, "swallowing ack (fault)");
                // Holds one handler slot of the connection until it closes.
                Reply::later(std::future::pending())
            }
            Some(Fault::Delay(delay)) => {
                let weak = Arc::downgrade(shared);
                let event: Arc<str> = event.into();
                Reply::later(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(shared) = weak.upgrade() {
                        shared
                            .lock()
                            .record(id, Direction::Acked, event, answer.clone());
                        shared.bump();
                    }
                    answer
                })
            }
        }
    }
}

/// The handlers every connection shares: they reach the service through a weak handle, so a
/// connection outliving its service answers with an error instead of keeping it alive.
fn make_handlers(weak: Weak<Shared>) -> Handlers {
    fn module_event(
        weak: &Weak<Shared>,
        event: &'static str,
        apply: ApplyFn,
    ) -> impl Fn(&Conn, Bytes) -> Reply + Send + Sync + 'static {
        let weak = weak.clone();
        move |conn, data| match weak.upgrade() {
            Some(shared) => shared.handle(conn, event, &data, apply),
            None => Reply::ack(Bytes::from_static(b"the fake config service is gone")),
        }
    }
    let unknown = weak.clone();
    Handlers::new()
        .on(
            event::MODULE_SEND_CONFIG_SCHEMA,
            module_event(
                &weak,
                event::MODULE_SEND_CONFIG_SCHEMA,
                ClusterState::config_schema,
            ),
        )
        .on(
            event::MODULE_SEND_REQUIREMENTS,
            module_event(
                &weak,
                event::MODULE_SEND_REQUIREMENTS,
                ClusterState::module_requirements,
            ),
        )
        .on(
            event::MODULE_READY,
            module_event(&weak, event::MODULE_READY, ClusterState::module_ready),
        )
        .on_unknown(move |conn, event, data| match unknown.upgrade() {
            Some(shared) => shared.handle_unknown(conn, event, data),
            None => Reply::default(),
        })
        .on_error(|conn, error| {
            if conn.log_limiter().admit(conn.id(), conn.peer()) {
                tracing::warn!(conn = conn.id(), peer = conn.peer(), %error, "bad input from a module");
            }
        })
}

/// `text` cut to 64 characters, for a log line about something a peer chose.
fn shorten(text: &str) -> &str {
    text.char_indices()
        .nth(64)
        .map_or(text, |(at, _)| &text[..at])
}

async fn accept_loop(
    weak: Weak<Shared>,
    mut acceptor: Box<dyn Acceptor>,
    addr: String,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = &mut stop => break,
        };
        match accepted {
            Ok(accepted) => match weak.upgrade() {
                Some(shared) => shared.on_accept(accepted, &addr),
                None => break,
            },
            Err(err) => {
                tracing::warn!(listener = addr, error = %err, "listener failed; it stops");
                break;
            }
        }
    }
    tracing::debug!(listener = addr, "listener stopped");
}

impl FakeConfigService {
    /// A service with the default settings (recording on). It listens nowhere until asked to.
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for other settings.
    #[must_use]
    pub fn builder() -> FakeConfigServiceBuilder {
        FakeConfigServiceBuilder::default()
    }

    // ----- listeners -----

    /// Listens on a new address of the service's in-memory network
    /// (`fake-config-service:<port>`). Several listeners share the same state, like the nodes
    /// of a config service cluster; one connector reaches them all.
    ///
    /// # Errors
    /// A [`TransportError`] if the memory network refuses the address (it does not).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn listen_memory(&self) -> Result<MemoryListener, TransportError> {
        let acceptor = self.shared.network.bind(&format!("{MEMORY_HOST}:0"))?;
        let host = acceptor.local_addr().to_owned();
        self.start_listener(ListenAddr::Memory(host.clone()), Box::new(acceptor));
        Ok(MemoryListener {
            host,
            connector: self.connector(),
        })
    }

    /// Listens for WebSocket clients on `addr` (`127.0.0.1:0` picks a port), at
    /// `ws://<addr>/isp-etp/?module_name=<name>` as isp-config-service does. Real Go isp-kit
    /// services can be pointed at it.
    ///
    /// # Errors
    /// A [`TransportError`] if the address cannot be bound.
    pub async fn listen_ws(&self, addr: &str) -> Result<SocketAddr, TransportError> {
        let acceptor = WsAcceptor::bind(addr, self.shared.ws_config.clone()).await?;
        let local = acceptor.local_addr();
        self.start_listener(ListenAddr::Ws(local), Box::new(acceptor));
        Ok(local)
    }

    /// A connector to the service's in-memory network (it reaches every memory listener).
    #[must_use]
    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(self.shared.network.connector())
    }

    /// The service's in-memory network, for transport-level faults
    /// ([`MemoryNetwork::connections`] gives each connection's `Faults`: sever, stall, …).
    #[must_use]
    pub fn memory_network(&self) -> &MemoryNetwork {
        &self.shared.network
    }

    /// The addresses listened on: `mem://host:port` and `ws://ip:port`.
    #[must_use]
    pub fn listeners(&self) -> Vec<String> {
        let inner = self.shared.lock();
        inner.listeners.iter().map(|l| l.addr.to_string()).collect()
    }

    fn start_listener(&self, addr: ListenAddr, acceptor: Box<dyn Acceptor>) {
        let (stop, stop_rx) = oneshot::channel();
        let name = addr.to_string();
        tracing::info!(listener = %name, "fake config service listening");
        let task = tokio::spawn(accept_loop(
            Arc::downgrade(&self.shared),
            acceptor,
            name,
            stop_rx,
        ));
        let mut inner = self.shared.lock();
        match inner.listeners.iter_mut().find(|l| l.addr == addr) {
            Some(listener) => {
                listener.stop = Some(stop);
                listener.task = Some(task);
            }
            None => inner.listeners.push(Listener {
                addr,
                stop: Some(stop),
                task: Some(task),
            }),
        }
    }

    // ----- inspection -----

    /// The names of the known modules, sorted: every module with an open connection, a config
    /// or a schema. A module that never had a config or schema is forgotten when its last
    /// connection closes (see [`ClusterState::disconnect`]).
    #[must_use]
    pub fn modules(&self) -> Vec<String> {
        self.shared.lock().state.module_names()
    }

    /// Everything known of `module`: connections, ready instances, config, schema.
    #[must_use]
    pub fn module(&self, module: &str) -> Option<ModuleSnapshot> {
        self.shared.lock().state.module(module)
    }

    /// The open connections of `module`, ascending by id.
    #[must_use]
    pub fn connections(&self, module: &str) -> Vec<ConnectionInfo> {
        let inner = self.shared.lock();
        inner
            .state
            .connections_of(module)
            .into_iter()
            .filter_map(|id| inner.state.connection(id))
            .collect()
    }

    /// One open connection.
    #[must_use]
    pub fn connection(&self, id: ConnId) -> Option<ConnectionInfo> {
        self.shared.lock().state.connection(id)
    }

    /// The number of open connections, all modules together.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.lock().state.connection_count()
    }

    /// The declarations of `module`'s ready instances, newest first.
    #[must_use]
    pub fn ready_instances(&self, module: &str) -> Vec<BackendDeclaration> {
        self.shared
            .lock()
            .state
            .ready_instances(module)
            .into_iter()
            .map(|i| i.declaration)
            .collect()
    }

    /// The routing table as it would be sent now: every ready instance, newest first.
    #[must_use]
    pub fn routing_table(&self) -> Vec<ReadyInstance> {
        self.shared.lock().state.routing_table()
    }

    /// The schema `module` sent, with its module version.
    #[must_use]
    pub fn schema(&self, module: &str) -> Option<StoredSchema> {
        self.shared.lock().state.schema(module)
    }

    /// The active config of `module` and its version.
    #[must_use]
    pub fn active_config(&self, module: &str) -> Option<ActiveConfig> {
        self.shared.lock().state.active_config(module)
    }

    /// The frames recorded for `target` (both directions), in order. Empty when recording is
    /// off. Sent frames are recorded when queued on the connection, not when written (see
    /// [`Direction::Sent`]).
    #[must_use]
    pub fn frames(&self, target: impl Into<Target>) -> Vec<RecordedFrame> {
        self.shared.lock().frames(&target.into())
    }

    /// The frames `target` sent to the service.
    #[must_use]
    pub fn received(&self, target: impl Into<Target>) -> Vec<RecordedFrame> {
        let mut frames = self.frames(target);
        frames.retain(|f| f.direction == Direction::Received);
        frames
    }

    /// The frames the service sent to `target`: events and acks, recorded when queued on the
    /// connection (see [`Direction::Sent`]).
    #[must_use]
    pub fn sent(&self, target: impl Into<Target>) -> Vec<RecordedFrame> {
        let mut frames = self.frames(target);
        frames.retain(|f| f.direction != Direction::Received);
        frames
    }

    /// Switches frame recording on or off (see [`FakeConfigServiceBuilder::recording`]).
    pub fn set_recording(&self, on: bool) {
        self.shared.lock().recording = on;
    }

    /// Forgets every recorded frame and the records of closed connections.
    pub fn clear_recorded(&self) {
        let mut inner = self.shared.lock();
        inner.history.clear();
        for slot in inner.conns.values_mut() {
            slot.record.frames.clear();
        }
    }

    // ----- control -----

    /// Sets `module`'s active config as an admin would, validated against its stored schema.
    /// `version`: the version this update is based on (`None`: no check); a stale version is
    /// refused. Every config subscriber gets `CONFIG:SEND_CONFIG_CHANGED` with `config` byte
    /// for byte. See [`ClusterState::set_config`] for the rules.
    ///
    /// # Errors
    /// A [`ConfigUpdateError`] listing why; nothing changes then.
    pub fn set_config(
        &self,
        module: &str,
        config: impl Into<Bytes>,
        version: Option<u64>,
    ) -> Result<ConfigChange, ConfigUpdateError> {
        self.update_config(module, config.into(), version, UpdateMode::Validated)
    }

    /// [`FakeConfigService::set_config`] without schema validation (isp-config-service's
    /// `unsafe` update). An unknown module is created: this is how a test gives a module its
    /// config before it first connects.
    ///
    /// # Errors
    /// A [`ConfigUpdateError`] when `config` is not a JSON object or `version` is stale.
    pub fn set_config_unsafe(
        &self,
        module: &str,
        config: impl Into<Bytes>,
        version: Option<u64>,
    ) -> Result<ConfigChange, ConfigUpdateError> {
        self.update_config(module, config.into(), version, UpdateMode::Unsafe)
    }

    fn update_config(
        &self,
        module: &str,
        config: Bytes,
        version: Option<u64>,
        mode: UpdateMode,
    ) -> Result<ConfigChange, ConfigUpdateError> {
        let mut inner = self.shared.lock();
        let update = match inner
            .state
            .set_config(module, config.clone(), version, mode)
        {
            Ok(update) => update,
            Err(err) => {
                drop(inner);
                // The error names the module, the place and the rule, never a value.
                tracing::info!(module = ?shorten(module), error = %err, "config refused");
                return Err(err);
            }
        };
        let notified = update
            .notifications
            .iter()
            .map(|n| n.recipients.len())
            .sum();
        inner.deliver(update.notifications, &self.shared.me);
        drop(inner);
        self.shared.bump();
        // Never the content at INFO: a config holds passwords. Its size and the fingerprint of
        // its masked form tell two versions apart; the masked content is at DEBUG.
        let masker = SecretMasker::new();
        tracing::info!(
            module,
            version = update.version,
            changed = update.changed,
            notified,
            size = config.len(),
            hash = %masker.fingerprint(&config),
            "config set"
        );
        tracing::debug!(
            module,
            version = update.version,
            config = %masker.mask(&config),
            "config set (secrets masked)"
        );
        Ok(ConfigChange {
            version: update.version,
            changed: update.changed,
            notified,
        })
    }

    /// The limits the service enforces (see [`FakeConfigServiceBuilder::limits`]).
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.shared.lock().state.limits()
    }

    /// Sends `ERROR_CONFIG` or `ERROR_CONNECTION` with `text` to every open connection of
    /// `module`; returns how many. A text whose frame would be over [`Limits::max_frame_len`]
    /// is sent to none (0, and an error line).
    pub fn send_error(&self, module: &str, kind: ErrorEvent, text: &str) -> usize {
        let mut inner = self.shared.lock();
        let max_frame_len = inner.state.limits().max_frame_len;
        if crate::state::frame_len(kind.name(), text.len()) > max_frame_len {
            drop(inner);
            tracing::error!(module = ?shorten(module), len = text.len(), max_frame_len, "error text too large to send");
            return 0;
        }
        let Some(notification) = inner.state.error_event(module, kind, text) else {
            return 0;
        };
        let count = notification.recipients.len();
        inner.deliver(vec![notification], &self.shared.me);
        drop(inner);
        self.shared.bump();
        count
    }

    /// Closes every open connection of `module` (code 1000) and returns how many. When it
    /// returns the instances are gone, the other modules notified and the connections closed.
    pub async fn disconnect_module(&self, module: &str) -> usize {
        self.disconnect_where(
            Some(module),
            CLOSE_NORMAL,
            "disconnected by the fake config service",
        )
        .await
    }

    /// Closes every open connection (code 1000) and returns how many.
    pub async fn disconnect_all(&self) -> usize {
        self.disconnect_where(
            None,
            CLOSE_NORMAL,
            "disconnected by the fake config service",
        )
        .await
    }

    async fn disconnect_where(&self, module: Option<&str>, code: u16, reason: &str) -> usize {
        let conns: Vec<Conn> = {
            let mut inner = self.shared.lock();
            let ids = match module {
                Some(module) => inner.state.connections_of(module),
                None => inner.state.connection_ids(),
            };
            let mut conns = Vec::with_capacity(ids.len());
            for id in ids {
                let notifications = inner.state.disconnect(id);
                inner.deliver(notifications, &self.shared.me);
                if let Some(slot) = inner.conns.get(&id) {
                    // Closed now, so nothing queued after this point reaches it.
                    slot.conn.start_close(code, reason);
                    conns.push(slot.conn.clone());
                }
            }
            conns
        };
        self.shared.bump();
        let count = conns.len();
        futures_util::future::join_all(conns.iter().map(Conn::closed)).await;
        count
    }

    /// While `true`, new clients are accepted at the transport level and closed at once with
    /// 1013 ("try again later"), before any event; open connections stay.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.lock().refuse = refuse;
    }

    /// Stops every listener (their addresses are free again) and closes every connection with
    /// 1001 ("going away"). Modules, configs and schemas stay; ready instances go with their
    /// connections. Idempotent.
    pub async fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut inner = self.shared.lock();
            inner
                .listeners
                .iter_mut()
                .filter_map(|l| {
                    l.stop.take();
                    l.task.take()
                })
                .collect()
        };
        for task in tasks {
            // The task ends as soon as it sees its stop sender dropped; it cannot panic.
            let _ = task.await;
        }
        self.disconnect_where(None, CLOSE_GOING_AWAY, "the fake config service stops")
            .await;
    }

    /// Listens again on every address it listened on before [`FakeConfigService::stop`]
    /// (listeners still running are left alone). The state is as `stop` left it.
    ///
    /// # Errors
    /// A [`TransportError`] if an address cannot be bound again (another process took the
    /// port); the listeners bound so far stay.
    pub async fn restart(&self) -> Result<(), TransportError> {
        let stopped: Vec<ListenAddr> = {
            let inner = self.shared.lock();
            inner
                .listeners
                .iter()
                .filter(|l| l.task.is_none())
                .map(|l| l.addr.clone())
                .collect()
        };
        for addr in stopped {
            let acceptor: Box<dyn Acceptor> = match &addr {
                ListenAddr::Memory(host) => Box::new(self.shared.network.bind(host)?),
                ListenAddr::Ws(socket) => Box::new(self.rebind_ws(*socket).await?),
            };
            self.start_listener(addr, acceptor);
        }
        Ok(())
    }

    /// Binds `addr` again. The old listener socket is closed by a task that may not have run
    /// yet, so "address in use" is retried for up to a second.
    async fn rebind_ws(&self, addr: SocketAddr) -> Result<WsAcceptor, TransportError> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut pause = Duration::from_millis(1);
        loop {
            match WsAcceptor::bind(addr, self.shared.ws_config.clone()).await {
                Err(TransportError::Io(err))
                    if err.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Injects `fault` on the acks of `event` (e.g. `MODULE:READY`), or removes it (`None`).
    /// A delayed ack is recorded when it goes out; a swallowed one is never sent (it holds one
    /// handler slot of its connection until the connection closes).
    pub fn fault_ack(&self, event: &str, fault: Option<Fault>) {
        let mut inner = self.shared.lock();
        match fault {
            Some(fault) => inner.ack_faults.insert(event.to_owned(), fault),
            None => inner.ack_faults.remove(event),
        };
    }

    /// Injects `fault` on outgoing `event`s (e.g. `CONFIG:SEND_CONFIG_CHANGED` or
    /// `A_MODULE_CONNECTED`), or removes it (`None`). Delayed events keep their order among
    /// themselves (one delay line per service, first in first out: an event is never sent
    /// early, but may wait for one queued before it). Per-connection order is kept too: while
    /// a connection has a delayed event pending, its later events without a fault wait behind
    /// it (other connections get theirs at once). A swallowed event is not recorded.
    pub fn fault_event(&self, event: &str, fault: Option<Fault>) {
        let mut inner = self.shared.lock();
        match fault {
            Some(fault) => inner.event_faults.insert(event.to_owned(), fault),
            None => inner.event_faults.remove(event),
        };
    }

    /// Removes every ack and event fault.
    pub fn clear_faults(&self) {
        let mut inner = self.shared.lock();
        inner.ack_faults.clear();
        inner.event_faults.clear();
    }

    // ----- await helpers -----

    /// Waits until `module` has exactly `n` ready instances; returns their declarations,
    /// newest first. To give a module under test ready instances of a module it requires
    /// without running a second client, see [`FakeConfigService::declare_instance`].
    ///
    /// This is the service's view: an instance is ready once its `MODULE:READY` is stored,
    /// which is before the module's own client has read the ack. To assert on the module's
    /// side (its `healthcheck()`, say), await its client's state too
    /// (`client.state().wait_for(ClientState::is_ready)`).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] saying what there was instead.
    pub async fn wait_ready_instances(
        &self,
        module: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<BackendDeclaration>, WaitError> {
        self.wait_for(
            timeout,
            || format!("{n} ready instance(s) of module {module:?}"),
            |inner| {
                let ready = inner.state.ready_instances(module);
                (ready.len() == n).then(|| ready.into_iter().map(|i| i.declaration).collect())
            },
            |inner| inner.describe_module(module),
        )
        .await
    }

    /// Waits until `module` has exactly `n` open connections; returns them.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] saying what there was instead.
    pub async fn wait_connections(
        &self,
        module: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionInfo>, WaitError> {
        self.wait_for(
            timeout,
            || format!("{n} open connection(s) of module {module:?}"),
            |inner| {
                let ids = inner.state.connections_of(module);
                (ids.len() == n).then(|| {
                    ids.into_iter()
                        .filter_map(|id| inner.state.connection(id))
                        .collect()
                })
            },
            |inner| inner.describe_module(module),
        )
        .await
    }

    /// Waits until an event named `event` was recorded for `target`, received or sent
    /// (frames recorded before the call count); returns the first one. Acks
    /// ([`Direction::Acked`]) are not events and do not count: look for them in
    /// [`FakeConfigService::sent`].
    ///
    /// A sent event is recorded when it is queued on the connection, not when it is written:
    /// when this returns, the client may not have it yet (await it on the client's side).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] listing the frames there were, [`WaitError::RecordingOff`].
    pub async fn wait_event(
        &self,
        target: impl Into<Target>,
        event: &str,
        timeout: Duration,
    ) -> Result<RecordedFrame, WaitError> {
        let mut frames = self.wait_events(target, event, 1, timeout).await?;
        Ok(frames.swap_remove(0))
    }

    /// Waits until at least `n` events named `event` were recorded for `target` (received
    /// and sent together; acks do not count, see [`FakeConfigService::wait_event`]); returns
    /// all of them, in order.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] listing the frames there were, [`WaitError::RecordingOff`].
    pub async fn wait_events(
        &self,
        target: impl Into<Target>,
        event: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedFrame>, WaitError> {
        let target = target.into();
        let expected = || format!("{n} event(s) {event:?} of {target}");
        if !self.shared.lock().recording {
            return Err(WaitError::RecordingOff {
                expected: expected(),
            });
        }
        self.wait_for(
            timeout,
            expected,
            |inner| {
                let mut frames = inner.frames(&target);
                frames.retain(|f| f.direction != Direction::Acked && f.event() == event);
                (frames.len() >= n).then_some(frames)
            },
            |inner| inner.describe_frames(&target),
        )
        .await
    }

    /// Checks `check` after every change until it gives a value or `timeout` passes.
    async fn wait_for<T>(
        &self,
        timeout: Duration,
        expected: impl FnOnce() -> String,
        mut check: impl FnMut(&Inner) -> Option<T>,
        describe: impl FnOnce(&Inner) -> String,
    ) -> Result<T, WaitError> {
        let deadline = Instant::now() + timeout;
        // Subscribed before the first check, so no change between the two is missed.
        let mut changes = self.shared.changed.subscribe();
        loop {
            if let Some(value) = check(&self.shared.lock()) {
                return Ok(value);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                // The sender lives as long as `self`: `changed` cannot fail.
                Ok(_) => {}
                Err(_) => {
                    let inner = self.shared.lock();
                    if let Some(value) = check(&inner) {
                        return Ok(value);
                    }
                    return Err(WaitError::Timeout {
                        expected: expected(),
                        actual: describe(&inner),
                        timeout,
                    });
                }
            }
        }
    }
}

impl Inner {
    fn frames(&self, target: &Target) -> Vec<RecordedFrame> {
        let records = self
            .conns
            .iter()
            .map(|(id, slot)| (*id, &slot.record))
            .chain(self.history.iter().map(|(id, record)| (*id, record)));
        let mut frames: Vec<RecordedFrame> = records
            .filter(|(id, record)| match target {
                Target::Conn(conn) => id == conn,
                Target::Module(module) => &*record.module == module.as_str(),
            })
            .flat_map(|(_, record)| record.frames.iter().cloned())
            .collect();
        frames.sort_unstable_by_key(|f| f.seq);
        frames
    }

    fn describe_module(&self, module: &str) -> String {
        let Some(snapshot) = self.state.module(module) else {
            let known = self.state.module_names();
            return format!(
                "module {module:?} is unknown: it never connected, or left without a config \
                 or schema (known modules: {known:?})"
            );
        };
        let ready: Vec<String> = snapshot
            .ready
            .iter()
            .map(|i| format!("{} at {}", i.conn, i.declaration.address))
            .collect();
        let conns: Vec<String> = snapshot
            .connections
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "module {module:?} has {} open connection(s) [{}] and {} ready instance(s) [{}]",
            conns.len(),
            conns.join(", "),
            ready.len(),
            ready.join(", ")
        )
    }

    fn describe_frames(&self, target: &Target) -> String {
        const SHOWN: usize = 30;
        let frames = self.frames(target);
        if frames.is_empty() {
            return format!("no frame recorded for {target}");
        }
        let skipped = frames.len().saturating_sub(SHOWN);
        let lines: Vec<String> = frames[skipped..]
            .iter()
            .map(|f| format!("\n  {f}"))
            .collect();
        let more = if skipped > 0 {
            format!(" ({skipped} earlier not shown)")
        } else {
            String::new()
        };
        format!(
            "{} frame(s) of {target}{more}:{}",
            frames.len(),
            lines.concat()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deliver_drops_events_with_invalid_names_or_oversized_frames() {
        let service = FakeConfigService::builder()
            .limits(Limits {
                max_frame_len: 64,
                ..Limits::default()
            })
            .build();
        let listener = service.listen_memory().unwrap();
        let transport = listener
            .connector
            .connect(&listener.endpoint(), "a")
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handlers = Handlers::new().on_unknown(move |_, name, _| {
            let _ = tx.send(name.to_owned());
            Reply::default()
        });
        let client = Conn::spawn(transport, handlers, ConnConfig::default());
        let wait = Duration::from_secs(5);
        let id = service.wait_connections("a", 1, wait).await.unwrap()[0].id;
        let notification = |event: &str, payload: Vec<u8>| Notification {
            event: event.to_owned(),
            payload: payload.into(),
            recipients: vec![id],
        };
        service.shared.lock().deliver(
            vec![
                notification("x||y_MODULE_CONNECTED", b"[]".to_vec()),
                notification("a\nb_MODULE_CONNECTED", b"[]".to_vec()),
                notification("BIG", vec![b'x'; 64]),
                notification("FINE", b"[]".to_vec()),
            ],
            &service.shared.me,
        );
        assert_eq!(
            service.send_error("a", ErrorEvent::Config, &"e".repeat(64)),
            0
        );
        // The ack of an unknown event comes after everything queued before it.
        client.emit_with_ack("BARRIER", b"").await.unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("FINE"));
        assert!(rx.try_recv().is_err());
        client.close(1000, "done").await;
    }
}
