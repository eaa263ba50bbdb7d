//! In-memory transports with fault knobs, for tests.
//!
//! Enabled by the crate's `memory` feature (off by default).
//!
//! [`pair`] makes one connected (client, server) pair of [`Transport`]s and the [`Faults`] that
//! steer it. A [`MemoryNetwork`] is a registry of listeners by `host:port`: [`MemoryNetwork::bind`]
//! gives a [`MemoryAcceptor`], [`MemoryNetwork::connector`] a [`Connector`] that dials them, and
//! [`MemoryNetwork::connections`] / [`MemoryNetwork::connection`] hand a test the [`Faults`] of
//! the connections dialled, so it can sever the current client connection of a server. Closed
//! connections are listed too, up to the newest [`CLOSED_CONNECTIONS_KEPT`] of them.
//!
//! # Semantics (those of the WebSocket transport)
//! - Messages are [`Bytes`], moved through tokio mpsc channels without a copy. Each direction is
//!   a bounded channel of [`MemoryConfig::capacity`] messages (1024 by default): a writer whose
//!   peer does not read waits, as it would on a full TCP buffer.
//! - A ping is answered by the *receiving stream* when it reads the ping, as tungstenite does:
//!   a side that never calls [`MessageStream::recv`] never answers pings. Pongs and close
//!   replies are sent without waiting; if the peer's channel is full (1024 unread messages) the
//!   reply is dropped and logged.
//! - [`MessageSink::close`] sends a close; the peer's stream returns [`Incoming::Closed`] and
//!   echoes the same close back, which the closing side's stream then returns as
//!   [`Incoming::Closed`]. After a close was sent or received, the sink refuses to send with
//!   [`TransportError::Closed`]; closing twice is a no-op.
//! - Dropping a [`Transport`] without closing looks like a broken TCP stream: the peer's stream
//!   returns [`TransportError::Lost`], and its sink fails with it.
//! - A text message over the receiver's limit (the client accepts 4 MiB, the server 1 MiB, as
//!   the Go peers) makes the receiver return [`TransportError::MessageTooBig`] and close with
//!   1009, which the sender's stream sees as [`Incoming::Closed`].
//! - A text message that is not UTF-8 is refused by the sink with [`TransportError::Protocol`],
//!   as the WebSocket sink does.
//!
//! Time (the [`Faults::delay`] knob) is tokio time: it works under `tokio::time::pause()`.

use crate::stream_end::StreamEnd;
use crate::{
    Accepted, Acceptor, CLOSE_MESSAGE_TOO_BIG, CloseInfo, Connector, Endpoint, Incoming,
    MessageSink, MessageStream, Transport, TransportError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The default capacity of each direction of a pair, in messages.
pub const DEFAULT_CAPACITY: usize = 1024;
pub use crate::{DEFAULT_CLIENT_MAX_MESSAGE_SIZE, DEFAULT_SERVER_MAX_MESSAGE_SIZE};
/// How many dialled connections a [`MemoryAcceptor`] holds before `accept` takes them; over
/// that, dialling fails with [`TransportError::Connect`].
pub const ACCEPT_BACKLOG: usize = 1024;
/// How many closed connections (severed, closed, or dropped by both ends) a [`MemoryNetwork`]
/// keeps listing: the newest 1,024. Older closed ones are forgotten as new connections are
/// dialled, so a long test or load run does not keep every connection it ever made.
pub const CLOSED_CONNECTIONS_KEPT: usize = 1024;

const SEVERED: &str = "connection severed by the memory network";
const CLOSED_BY_NETWORK: &str = "closed by the memory network";
const PEER_DROPPED: &str = "the peer dropped the connection without closing";

/// Settings of in-memory pairs.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Messages each direction holds before a writer waits. Default [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    /// The largest text message the client end accepts. Default 4 MiB.
    pub client_max_message_size: usize,
    /// The largest text message the server end accepts. Default 1 MiB.
    pub server_max_message_size: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            client_max_message_size: DEFAULT_CLIENT_MAX_MESSAGE_SIZE,
            server_max_message_size: DEFAULT_SERVER_MAX_MESSAGE_SIZE,
        }
    }
}

/// One direction of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Messages the client sends to the server.
    ClientToServer,
    /// Messages the server sends to the client.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Self::ClientToServer => 0,
            Self::ServerToClient => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Open,
    Severed,
    ClosedNormally,
}

#[derive(Debug, Clone)]
struct LinkState {
    status: Status,
    stalled: bool,
    delay: Duration,
}

/// The fault knobs of one in-memory connection. Cloning gives another handle to the same
/// connection.
#[derive(Clone)]
pub struct Faults {
    link: Arc<watch::Sender<LinkState>>,
    drops: Arc<[AtomicUsize; 2]>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.link.borrow();
        f.debug_struct("Faults")
            .field("status", &state.status)
            .field("stalled", &state.stalled)
            .field("delay", &state.delay)
            .finish_non_exhaustive()
    }
}

impl Faults {
    fn new() -> Self {
        let (link, _) = watch::channel(LinkState {
            status: Status::Open,
            stalled: false,
            delay: Duration::ZERO,
        });
        Self {
            link: Arc::new(link),
            drops: Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]),
        }
    }

    fn end(&self, status: Status) {
        self.link.send_if_modified(|state| {
            if state.status == Status::Open {
                state.status = status;
                true
            } else {
                false
            }
        });
    }

    /// Breaks the connection without a close handshake, as a reset would: both streams return
    /// [`TransportError::Lost`] at once (messages in flight are lost) and both sinks fail with
    /// it. No effect on a connection already severed or closed by [`Faults::close_normally`].
    pub fn sever(&self) {
        self.end(Status::Severed);
    }

    /// Closes the connection normally on behalf of both ends: both streams return
    /// [`Incoming::Closed`] with code 1000 at once (messages in flight are discarded) and
    /// both sinks fail with [`TransportError::Closed`].
    pub fn close_normally(&self) {
        self.end(Status::ClosedNormally);
    }

    /// Delivers each message sent from now on (both directions, pings and pongs included)
    /// `delay` after it was sent; [`Duration::ZERO`] turns the delay off. Order is kept.
    pub fn delay(&self, delay: Duration) {
        self.link.send_modify(|state| state.delay = delay);
    }

    /// Silently drops the next `n` text messages in *each* direction (each direction counts its
    /// own `n`). Pings, pongs and closes are never dropped (use [`Faults::stall`] for those).
    pub fn drop_next(&self, n: usize) {
        for counter in self.drops.iter() {
            counter.store(n, Ordering::Release);
        }
    }

    /// Silently drops the next `n` text messages sent in `direction` only.
    pub fn drop_next_in(&self, direction: Direction, n: usize) {
        self.drops[direction.index()].store(n, Ordering::Release);
    }

    /// Holds every message in both directions (pings and pongs included) until
    /// [`Faults::release`]: a half-open connection. Writers go on until the channels fill up.
    pub fn stall(&self) {
        self.link
            .send_if_modified(|state| !std::mem::replace(&mut state.stalled, true));
    }

    /// Delivers what [`Faults::stall`] held, in order, and lets messages flow again.
    pub fn release(&self) {
        self.link
            .send_if_modified(|state| std::mem::replace(&mut state.stalled, false));
    }

    /// Whether the connection was neither severed nor closed by the network, and one of its
    /// ends is still alive (not dropped).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.link.borrow().status == Status::Open && self.link.receiver_count() > 0
    }
}

enum Frame {
    Text(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(CloseInfo),
}

struct Envelope {
    frame: Frame,
    deliver_at: Option<Instant>,
}

fn stamp(link: &watch::Receiver<LinkState>, frame: Frame) -> Envelope {
    let delay = link.borrow().delay;
    Envelope {
        frame,
        deliver_at: (!delay.is_zero()).then(|| Instant::now() + delay),
    }
}

/// What one end knows of the close handshake; shared by its sink and its stream.
#[derive(Default)]
struct EndState {
    sent_close: OnceLock<CloseInfo>,
    received_close: OnceLock<CloseInfo>,
}

fn link_error(status: Status) -> Option<TransportError> {
    match status {
        Status::Open => None,
        Status::Severed => Some(TransportError::lost(SEVERED)),
        Status::ClosedNormally => {
            Some(TransportError::Closed(CloseInfo::normal(CLOSED_BY_NETWORK)))
        }
    }
}

struct MemorySink {
    tx: mpsc::Sender<Envelope>,
    link: watch::Receiver<LinkState>,
    // Keeps the watch sender alive so `changed()` never fails while this end exists.
    _faults: Faults,
    drops: Arc<[AtomicUsize; 2]>,
    direction: Direction,
    end: Arc<EndState>,
}

impl MemorySink {
    fn check(&self) -> Result<(), TransportError> {
        if let Some(err) = link_error(self.link.borrow().status) {
            return Err(err);
        }
        if let Some(info) = self
            .end
            .sent_close
            .get()
            .or_else(|| self.end.received_close.get())
        {
            return Err(TransportError::Closed(info.clone()));
        }
        Ok(())
    }

    /// Checks a text message before it is sent: `Ok(true)` when the network drops it.
    fn check_text(&self, text: &[u8]) -> Result<bool, TransportError> {
        self.check()?;
        if !crate::is_utf8(text) {
            return Err(TransportError::protocol(
                "a text message must be valid UTF-8",
            ));
        }
        let counter = &self.drops[self.direction.index()];
        if counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            tracing::debug!(direction = ?self.direction, "memory network dropped a message");
            return Ok(true);
        }
        Ok(false)
    }

    async fn send(&mut self, frame: Frame) -> Result<(), TransportError> {
        let envelope = stamp(&self.link, frame);
        let tx = &self.tx;
        tokio::select! {
            sent = tx.send(envelope) => {
                sent.map_err(|_| TransportError::lost(PEER_DROPPED))
            }
            state = self.link.wait_for(|s| s.status != Status::Open) => {
                let status = state.map_or(Status::Severed, |s| s.status);
                Err(link_error(status).unwrap_or_else(|| TransportError::lost(SEVERED)))
            }
        }
    }
}

#[async_trait]
impl MessageSink for MemorySink {
    async fn feed(&mut self, text: Bytes) -> Result<(), TransportError> {
        if self.check_text(&text)? {
            return Ok(());
        }
        self.send(Frame::Text(text)).await
    }

    /// Takes `text` when the channel towards the peer has room now.
    fn try_feed(&mut self, text: Bytes) -> Result<Option<Bytes>, TransportError> {
        if self.check_text(&text)? {
            return Ok(None);
        }
        match self.tx.try_send(stamp(&self.link, Frame::Text(text))) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(Envelope {
                frame: Frame::Text(text),
                ..
            })) => Ok(Some(text)),
            Err(_) => Err(TransportError::lost(PEER_DROPPED)),
        }
    }

    fn try_flush(&mut self) -> Result<bool, TransportError> {
        self.check().map(|()| true)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.check()
    }

    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        self.check()?;
        self.send(Frame::Ping(payload)).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        if self.end.sent_close.get().is_some() {
            return Ok(());
        }
        if let Some(err) = link_error(self.link.borrow().status) {
            return Err(err);
        }
        if let Some(info) = self.end.received_close.get() {
            // The stream already echoed the peer's close: the handshake is over.
            return Err(TransportError::Closed(info.clone()));
        }
        let info = CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        };
        let _ = self.end.sent_close.set(info.clone());
        self.send(Frame::Close(info)).await
    }
}

struct MemoryStream {
    rx: mpsc::Receiver<Envelope>,
    /// Towards the peer, for pongs and close replies.
    reply: mpsc::Sender<Envelope>,
    link: watch::Receiver<LinkState>,
    _faults: Faults,
    end: Arc<EndState>,
    max_message_size: usize,
    pending: Option<Envelope>,
    done: StreamEnd,
}

impl MemoryStream {
    fn send_reply(&self, frame: Frame) {
        if let Err(err) = self.reply.try_send(stamp(&self.link, frame)) {
            tracing::warn!(error = %err, "memory transport could not send a control reply");
        }
    }

    async fn next(&mut self) -> Result<Incoming, TransportError> {
        loop {
            let state = self.link.borrow_and_update().clone();
            match link_error(state.status) {
                Some(TransportError::Closed(info)) => return Ok(Incoming::Closed(info)),
                Some(err) => return Err(err),
                None => {}
            }
            let Some(envelope) = &self.pending else {
                tokio::select! {
                    biased;
                    _ = self.link.changed() => {}
                    envelope = self.rx.recv() => match envelope {
                        Some(envelope) => self.pending = Some(envelope),
                        None => return Err(TransportError::lost(PEER_DROPPED)),
                    },
                }
                continue;
            };
            if state.stalled {
                let _ = self.link.changed().await;
                continue;
            }
            if let Some(at) = envelope.deliver_at.filter(|at| Instant::now() < *at) {
                tokio::select! {
                    biased;
                    _ = self.link.changed() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
                continue;
            }
            let Some(envelope) = self.pending.take() else {
                continue;
            };
            match envelope.frame {
                Frame::Text(text) if text.len() > self.max_message_size => {
                    let info = CloseInfo {
                        code: Some(CLOSE_MESSAGE_TOO_BIG),
                        reason: "message too big".to_owned(),
                    };
                    if self.end.sent_close.set(info.clone()).is_ok() {
                        self.send_reply(Frame::Close(info));
                    }
                    tracing::warn!(
                        size = text.len(),
                        limit = self.max_message_size,
                        "memory transport received a message over the limit; closing with 1009"
                    );
                    return Err(TransportError::MessageTooBig {
                        size: text.len(),
                        limit: self.max_message_size,
                    });
                }
                Frame::Text(text) => return Ok(Incoming::Text(text)),
                Frame::Ping(payload) => self.send_reply(Frame::Pong(payload)),
                Frame::Pong(payload) => return Ok(Incoming::Pong(payload)),
                Frame::Close(info) => {
                    let _ = self.end.received_close.set(info.clone());
                    if self.end.sent_close.get().is_none() {
                        self.send_reply(Frame::Close(info.clone()));
                    }
                    return Ok(Incoming::Closed(info));
                }
            }
        }
    }
}

#[async_trait]
impl MessageStream for MemoryStream {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        self.done.check()?;
        let result = self.next().await;
        self.done.record(&result);
        if result.is_err() {
            self.rx.close();
        }
        result
    }
}

/// Makes a connected (client, server) pair with the default [`MemoryConfig`], and the
/// [`Faults`] of the connection. The peers are named `memory-server` and `memory-client`.
#[must_use]
pub fn pair() -> (Transport, Transport, Faults) {
    pair_with(&MemoryConfig::default())
}

/// Makes a connected (client, server) pair with `config`, and its [`Faults`].
#[must_use]
pub fn pair_with(config: &MemoryConfig) -> (Transport, Transport, Faults) {
    named_pair(
        config,
        "memory-server".to_owned(),
        "memory-client".to_owned(),
    )
}

fn named_pair(
    config: &MemoryConfig,
    server_name: String,
    client_name: String,
) -> (Transport, Transport, Faults) {
    let faults = Faults::new();
    let capacity = config.capacity.max(1);
    let (to_server, from_client) = mpsc::channel(capacity);
    let (to_client, from_server) = mpsc::channel(capacity);
    let make = |tx: mpsc::Sender<Envelope>,
                rx: mpsc::Receiver<Envelope>,
                direction: Direction,
                max_message_size: usize,
                peer: String| {
        let end = Arc::new(EndState::default());
        Transport {
            sink: Box::new(MemorySink {
                tx: tx.clone(),
                link: faults.link.subscribe(),
                _faults: faults.clone(),
                drops: faults.drops.clone(),
                direction,
                end: end.clone(),
            }),
            stream: Box::new(MemoryStream {
                rx,
                reply: tx,
                link: faults.link.subscribe(),
                _faults: faults.clone(),
                end,
                max_message_size,
                pending: None,
                done: StreamEnd::default(),
            }),
            peer,
        }
    };
    let client = make(
        to_server,
        from_server,
        Direction::ClientToServer,
        config.client_max_message_size,
        server_name,
    );
    let server = make(
        to_client,
        from_client,
        Direction::ServerToClient,
        config.server_max_message_size,
        client_name,
    );
    (client, server, faults)
}

/// One connection dialled on a [`MemoryNetwork`].
#[derive(Debug, Clone)]
pub struct MemoryConnection {
    /// Its place in the order of dials on the network, from 0.
    pub index: usize,
    /// The listener address it was dialled to (`host:port`).
    pub addr: String,
    /// The module name the client gave.
    pub module_name: String,
    /// Its fault knobs.
    pub faults: Faults,
}

struct Listener {
    id: u64,
    tx: mpsc::Sender<Accepted>,
}

/// The connections of a network, as [`MemoryNetwork::connections`] lists them.
#[derive(Default)]
struct Dials {
    /// Open connections and the newest closed ones, ascending by index.
    list: Vec<MemoryConnection>,
    /// How many connections were ever dialled: the index of the next one.
    count: usize,
    /// The list length at which closed connections are pruned next.
    prune_at: usize,
}

impl Dials {
    /// Forgets all closed connections but the newest [`CLOSED_CONNECTIONS_KEPT`], then sets the
    /// next pruning so that each costs at most one check per connection dialled since the
    /// last one (amortised O(1) per dial).
    fn prune(&mut self) {
        let closed: Vec<bool> = self.list.iter().map(|c| !c.faults.is_open()).collect();
        let mut excess = closed
            .iter()
            .filter(|c| **c)
            .count()
            .saturating_sub(CLOSED_CONNECTIONS_KEPT);
        let mut closed = closed.into_iter();
        self.list.retain(|_| {
            let forget = closed.next().unwrap_or(false) && excess > 0;
            if forget {
                excess -= 1;
            }
            !forget
        });
        self.prune_at = self.list.len() + self.list.len().max(CLOSED_CONNECTIONS_KEPT);
    }
}

struct NetInner {
    config: MemoryConfig,
    listeners: Mutex<HashMap<String, Listener>>,
    connections: watch::Sender<Dials>,
    next_id: AtomicU64,
    next_port: AtomicU16,
}

/// An in-memory network: listeners registered by `host:port`, dialled by
/// [`MemoryConnector`]. Cloning gives another handle to the same network.
#[derive(Clone)]
pub struct MemoryNetwork {
    inner: Arc<NetInner>,
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listeners: Vec<String> = self
            .inner
            .listeners
            .lock()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("MemoryNetwork")
            .field("listeners", &listeners)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryNetwork {
    /// An empty network whose connections use the default [`MemoryConfig`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// An empty network whose connections use `config`.
    #[must_use]
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            inner: Arc::new(NetInner {
                config,
                listeners: Mutex::new(HashMap::new()),
                connections: watch::channel(Dials {
                    prune_at: 2 * CLOSED_CONNECTIONS_KEPT,
                    ..Dials::default()
                })
                .0,
                next_id: AtomicU64::new(1),
                next_port: AtomicU16::new(49152),
            }),
        }
    }

    /// Starts listening on `addr` (`host:port`). Port `0` picks a free port from 49152 up;
    /// [`MemoryAcceptor::local_addr`] tells which. The address is free again when the acceptor
    /// is dropped.
    ///
    /// # Errors
    /// [`TransportError::Io`] with `InvalidInput` for an address without a numeric port, and
    /// with `AddrInUse` when the address is taken.
    pub fn bind(&self, addr: &str) -> Result<MemoryAcceptor, TransportError> {
        let invalid = || {
            TransportError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid memory address {addr:?} (want host:port)"),
            ))
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if host.is_empty() {
            return Err(invalid());
        }
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .map_err(|_| TransportError::lost("memory network lock poisoned"))?;
        let key = if port == 0 {
            let mut found = None;
            for _ in 0..=u16::MAX {
                let port = self
                    .inner
                    .next_port
                    .fetch_add(1, Ordering::Relaxed)
                    .max(1024);
                let key = format!("{host}:{port}");
                if !listeners.contains_key(&key) {
                    found = Some(key);
                    break;
                }
            }
            found.ok_or_else(|| {
                TransportError::Io(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "no free port on the memory network",
                ))
            })?
        } else {
            addr.to_owned()
        };
        if listeners.contains_key(&key) {
            return Err(TransportError::Io(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("memory address {key} is in use"),
            )));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
        listeners.insert(key.clone(), Listener { id, tx });
        Ok(MemoryAcceptor {
            addr: key,
            id,
            rx,
            network: self.inner.clone(),
        })
    }

    /// A connector that dials this network.
    #[must_use]
    pub fn connector(&self) -> MemoryConnector {
        MemoryConnector {
            network: self.inner.clone(),
        }
    }

    /// The connections dialled so far, in order: every open one, and closed ones (severed,
    /// closed, or dropped by both ends) up to the newest [`CLOSED_CONNECTIONS_KEPT`] of them;
    /// older closed ones are forgotten when new connections are dialled. Use
    /// [`MemoryNetwork::dials`] to count dials.
    #[must_use]
    pub fn connections(&self) -> Vec<MemoryConnection> {
        self.inner.connections.borrow().list.clone()
    }

    /// How many connections were dialled on this network so far (forgotten ones included).
    #[must_use]
    pub fn dials(&self) -> usize {
        self.inner.connections.borrow().count
    }

    /// Waits until the connection with `index` (from 0, in order of dials) exists and returns
    /// it: `connection(0)` is the first dial, `connection(1)` the first reconnect, and so on.
    ///
    /// # Panics
    /// When that connection was closed and has since been forgotten (see
    /// [`MemoryNetwork::connections`]): only after more than [`CLOSED_CONNECTIONS_KEPT`]
    /// later connections closed.
    pub async fn connection(&self, index: usize) -> MemoryConnection {
        let mut rx = self.inner.connections.subscribe();
        loop {
            {
                let dials = rx.borrow_and_update();
                if index < dials.count {
                    let found = dials
                        .list
                        .binary_search_by_key(&index, |c| c.index)
                        .ok()
                        .map(|i| dials.list[i].clone());
                    return found.unwrap_or_else(|| {
                        panic!(
                            "memory connection {index} was closed and forgotten (a network \
                             lists only the newest {CLOSED_CONNECTIONS_KEPT} closed connections)"
                        )
                    });
                }
            }
            // The sender lives in `self.inner`, so this never fails.
            let _ = rx.changed().await;
        }
    }
}

/// Dials listeners of a [`MemoryNetwork`] by [`Endpoint::authority`], whatever the scheme.
#[derive(Clone)]
pub struct MemoryConnector {
    network: Arc<NetInner>,
}

impl fmt::Debug for MemoryConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConnector").finish_non_exhaustive()
    }
}

#[async_trait]
impl Connector for MemoryConnector {
    /// Connects at once if a listener is bound at the endpoint's authority.
    ///
    /// # Errors
    /// [`TransportError::Connect`] (an IO error of kind `ConnectionRefused`) when nothing
    /// listens there or its backlog of [`ACCEPT_BACKLOG`] is full; [`TransportError::Setup`]
    /// for an empty `module_name`, which the WebSocket server refuses too.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        module_name: &str,
    ) -> Result<Transport, TransportError> {
        let addr = endpoint.authority();
        let refused = |kind: std::io::ErrorKind, reason: &str| TransportError::Connect {
            endpoint: endpoint.to_string(),
            source: std::io::Error::new(kind, reason.to_owned()),
        };
        if module_name.is_empty() {
            return Err(crate::SetupError::ModuleName {
                name: String::new(),
                reason: "the server refuses an empty module_name",
            }
            .into());
        }
        let tx = {
            let listeners =
                self.network.listeners.lock().map_err(|_| {
                    refused(std::io::ErrorKind::Other, "memory network lock poisoned")
                })?;
            listeners.get(&addr).map(|l| l.tx.clone()).ok_or_else(|| {
                refused(std::io::ErrorKind::ConnectionRefused, "connection refused")
            })?
        };
        let permit = tx
            .try_reserve()
            .map_err(|_| refused(std::io::ErrorKind::ConnectionRefused, "connection refused"))?;
        let mut index = 0;
        let (client, server, faults) = {
            let connections = &self.network.connections;
            let mut made = None;
            connections.send_modify(|dials| {
                if dials.list.len() >= dials.prune_at {
                    dials.prune();
                }
                index = dials.count;
                dials.count += 1;
                let pair = named_pair(
                    &self.network.config,
                    addr.clone(),
                    format!("mem-client-{index}"),
                );
                dials.list.push(MemoryConnection {
                    index,
                    addr: addr.clone(),
                    module_name: module_name.to_owned(),
                    faults: pair.2.clone(),
                });
                made = Some(pair);
            });
            made.ok_or_else(|| refused(std::io::ErrorKind::Other, "internal error"))?
        };
        drop(faults);
        permit.send(Accepted {
            transport: server,
            module_name: module_name.to_owned(),
        });
        tracing::debug!(%addr, index, module_name, "memory connection dialled");
        Ok(client)
    }
}

/// A listener on a [`MemoryNetwork`]; unbinds its address when dropped.
pub struct MemoryAcceptor {
    addr: String,
    id: u64,
    rx: mpsc::Receiver<Accepted>,
    network: Arc<NetInner>,
}

impl fmt::Debug for MemoryAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAcceptor")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MemoryAcceptor {
    /// The address it listens on (`host:port`, with the port picked for `host:0`).
    #[must_use]
    pub fn local_addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for MemoryAcceptor {
    fn drop(&mut self) {
        let Ok(mut listeners) = self.network.listeners.lock() else {
            return;
        };
        if listeners.get(&self.addr).is_some_and(|l| l.id == self.id) {
            listeners.remove(&self.addr);
        }
    }
}

#[async_trait]
impl Acceptor for MemoryAcceptor {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| TransportError::lost("memory listener closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(t: &mut Transport, text: &'static str) {
        t.sink
            .feed(Bytes::from_static(text.as_bytes()))
            .await
            .unwrap();
        t.sink.flush().await.unwrap();
    }

    async fn text(t: &mut Transport) -> Bytes {
        match t.stream.recv().await.unwrap() {
            Incoming::Text(b) => b,
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn sever_makes_both_ends_lost() {
        let (mut c, mut s, faults) = pair();
        send(&mut c, "queued").await;
        faults.sever();
        assert!(matches!(
            c.stream.recv().await,
            Err(TransportError::Lost { .. })
        ));
        assert!(matches!(
            s.stream.recv().await,
            Err(TransportError::Lost { .. })
        ));
        assert!(matches!(
            c.sink.feed(Bytes::from_static(b"x")).await,
            Err(TransportError::Lost { .. })
        ));
        assert!(matches!(
            s.sink.ping(Bytes::new()).await,
            Err(TransportError::Lost { .. })
        ));
        assert!(!faults.is_open());
    }

    #[tokio::test]
    async fn sever_wakes_a_waiting_reader() {
        let (_c, mut s, faults) = pair();
        let reader = tokio::spawn(async move { s.stream.recv().await });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "the reader is waiting");
        faults.sever();
        assert!(matches!(
            reader.await.unwrap(),
            Err(TransportError::Lost { .. })
        ));
    }

    #[tokio::test]
    async fn sever_wakes_a_writer_blocked_on_a_full_channel() {
        let config = MemoryConfig {
            capacity: 1,
            ..MemoryConfig::default()
        };
        let (mut c, _s, faults) = pair_with(&config);
        send(&mut c, "fills the channel").await;
        let writer = tokio::spawn(async move { c.sink.feed(Bytes::from_static(b"waits")).await });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        faults.sever();
        assert!(matches!(
            writer.await.unwrap(),
            Err(TransportError::Lost { .. })
        ));
    }

    #[tokio::test]
    async fn close_normally_is_seen_as_1000_by_both_ends() {
        let (mut c, mut s, faults) = pair();
        faults.close_normally();
        for t in [&mut c, &mut s] {
            match t.stream.recv().await.unwrap() {
                Incoming::Closed(info) => assert!(info.is_normal()),
                other => panic!("expected close, got {other:?}"),
            }
            assert!(matches!(
                t.sink.feed(Bytes::from_static(b"x")).await,
                Err(TransportError::Closed(_))
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_each_message_for_the_delay() {
        let (mut c, mut s, faults) = pair();
        faults.delay(Duration::from_millis(300));
        let start = Instant::now();
        send(&mut c, "one").await;
        send(&mut c, "two").await;
        assert_eq!(text(&mut s).await, "one");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(text(&mut s).await, "two");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        // A ping and its pong are each delayed: one round trip costs twice the delay.
        let start = Instant::now();
        c.sink.ping(Bytes::from_static(b"p")).await.unwrap();
        let server = tokio::spawn(async move {
            let r = s.stream.recv().await;
            (s, r)
        });
        assert_eq!(
            c.stream.recv().await.unwrap(),
            Incoming::Pong(Bytes::from_static(b"p"))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(600));
        faults.delay(Duration::ZERO);
        send(&mut c, "now").await;
        let (_s, r) = server.await.unwrap();
        assert_eq!(r.unwrap(), Incoming::Text(Bytes::from_static(b"now")));
        assert_eq!(start.elapsed(), Duration::from_millis(600));
    }

    #[tokio::test]
    async fn drop_next_drops_text_in_each_direction() {
        let (mut c, mut s, faults) = pair();
        faults.drop_next(2);
        for m in ["c1", "c2", "c3"] {
            send(&mut c, m).await;
        }
        for m in ["s1", "s2", "s3"] {
            send(&mut s, m).await;
        }
        assert_eq!(text(&mut s).await, "c3");
        assert_eq!(text(&mut c).await, "s3");
        faults.drop_next_in(Direction::ServerToClient, 1);
        send(&mut c, "c4").await;
        send(&mut s, "s4").await;
        send(&mut s, "s5").await;
        assert_eq!(text(&mut s).await, "c4");
        assert_eq!(text(&mut c).await, "s5");
    }

    #[tokio::test(start_paused = true)]
    async fn stall_holds_everything_until_release() {
        let (mut c, mut s, faults) = pair();
        faults.stall();
        send(&mut c, "held").await;
        c.sink.ping(Bytes::from_static(b"p")).await.unwrap();
        let server = tokio::spawn(async move {
            let first = s.stream.recv().await.unwrap();
            let second = s.stream.recv().await;
            (first, second)
        });
        // Under paused time, this timeout elapses only once every task is idle: nothing came.
        let waited = tokio::time::timeout(Duration::from_secs(10), c.stream.recv()).await;
        assert!(waited.is_err(), "a pong crossed a stalled link");
        assert!(!server.is_finished());
        faults.release();
        assert_eq!(
            c.stream.recv().await.unwrap(),
            Incoming::Pong(Bytes::from_static(b"p"))
        );
        c.sink.close(1000, "bye").await.unwrap();
        let (first, second) = server.await.unwrap();
        assert_eq!(first, Incoming::Text(Bytes::from_static(b"held")));
        assert_eq!(second.unwrap(), Incoming::Closed(CloseInfo::normal("bye")));
    }

    #[tokio::test]
    async fn close_is_echoed_and_the_sink_refuses_afterwards() {
        let (mut c, mut s, _faults) = pair();
        c.sink.close(1000, "done").await.unwrap();
        assert_eq!(
            s.stream.recv().await.unwrap(),
            Incoming::Closed(CloseInfo::normal("done"))
        );
        assert_eq!(
            c.stream.recv().await.unwrap(),
            Incoming::Closed(CloseInfo::normal("done"))
        );
        assert!(matches!(
            c.sink.feed(Bytes::from_static(b"x")).await,
            Err(TransportError::Closed(_))
        ));
        assert!(matches!(
            s.sink.feed(Bytes::from_static(b"x")).await,
            Err(TransportError::Closed(_))
        ));
        assert!(matches!(
            s.stream.recv().await,
            Err(TransportError::Closed(_))
        ));
        c.sink.close(1000, "again").await.unwrap();
    }

    #[tokio::test]
    async fn network_dials_binds_and_exposes_faults() {
        let network = MemoryNetwork::new();
        let endpoint: Endpoint = "mem://10.0.0.1:7000".parse().unwrap();
        let refused = network
            .connector()
            .connect(&endpoint, "m")
            .await
            .unwrap_err();
        assert!(
            matches!(refused, TransportError::Connect { ref source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
        );

        let mut acceptor = network.bind("10.0.0.1:7000").unwrap();
        assert!(matches!(
            network.bind("10.0.0.1:7000"),
            Err(TransportError::Io(_))
        ));
        let mut client = network
            .connector()
            .connect(&endpoint, "my module")
            .await
            .unwrap();
        let mut accepted = acceptor.accept().await.unwrap();
        assert_eq!(accepted.module_name, "my module");
        assert_eq!(client.peer, "10.0.0.1:7000");
        assert_eq!(accepted.transport.peer, "mem-client-0");

        let conn = network.connection(0).await;
        assert_eq!(
            (conn.index, conn.addr.as_str(), conn.module_name.as_str()),
            (0, "10.0.0.1:7000", "my module")
        );
        assert!(conn.faults.is_open());
        conn.faults.sever();
        assert!(matches!(
            client.stream.recv().await,
            Err(TransportError::Lost { .. })
        ));
        assert!(matches!(
            accepted.transport.stream.recv().await,
            Err(TransportError::Lost { .. })
        ));

        let ws: Endpoint = "10.0.0.1:7000".parse().unwrap();
        let empty = network.connector().connect(&ws, "").await.unwrap_err();
        assert!(matches!(
            empty,
            TransportError::Setup(crate::SetupError::ModuleName { .. })
        ));
        let _second = network.connector().connect(&ws, "again").await.unwrap();
        assert_eq!(network.connections().len(), 2);

        drop(acceptor);
        let refused = network
            .connector()
            .connect(&endpoint, "m")
            .await
            .unwrap_err();
        assert!(matches!(refused, TransportError::Connect { .. }));
        let any = network.bind("10.0.0.1:0").unwrap();
        assert_ne!(any.local_addr(), "10.0.0.1:0");
    }

    #[tokio::test]
    async fn closed_connections_are_forgotten_beyond_the_newest_kept() {
        let network = MemoryNetwork::new();
        let mut acceptor = network.bind("10.0.0.1:7000").unwrap();
        let endpoint: Endpoint = "10.0.0.1:7000".parse().unwrap();
        let connector = network.connector();
        // One connection stays open throughout; all the others close at once.
        let open_client = connector.connect(&endpoint, "open").await.unwrap();
        let open_server = acceptor.accept().await.unwrap();
        let dials = 3 * CLOSED_CONNECTIONS_KEPT + 100;
        for _ in 1..dials {
            let client = connector.connect(&endpoint, "short").await.unwrap();
            let server = acceptor.accept().await.unwrap();
            drop((client, server));
        }
        assert_eq!(network.dials(), dials);
        let listed = network.connections();
        assert!(
            listed.len() > CLOSED_CONNECTIONS_KEPT && listed.len() <= 2 * CLOSED_CONNECTIONS_KEPT,
            "{} listed",
            listed.len()
        );
        assert!(listed.windows(2).all(|w| w[0].index < w[1].index));
        assert_eq!(
            (listed[0].index, listed[0].module_name.as_str()),
            (0, "open")
        );
        assert!(listed[0].faults.is_open());
        assert!(listed[1..].iter().all(|c| !c.faults.is_open()));
        assert_eq!(listed.last().map(|c| c.index), Some(dials - 1));
        assert_eq!(network.connection(dials - 1).await.index, dials - 1);
        assert_eq!(network.connection(0).await.module_name, "open");

        // Asking for a forgotten one is a clear panic, not a wait forever.
        let forgotten = tokio::spawn({
            let network = network.clone();
            async move { network.connection(1).await }
        });
        assert!(forgotten.await.unwrap_err().is_panic());
        drop((open_client, open_server));
    }

    #[tokio::test]
    async fn dropping_a_transport_is_lost_for_the_peer() {
        let (c, mut s, _faults) = pair();
        drop(c);
        assert!(matches!(
            s.stream.recv().await,
            Err(TransportError::Lost { .. })
        ));
        assert!(matches!(
            s.sink.feed(Bytes::from_static(b"x")).await,
            Err(TransportError::Lost { .. })
        ));
    }

    #[tokio::test]
    async fn invalid_utf8_is_refused_by_the_sink() {
        let (mut c, _s, _faults) = pair();
        let err = c
            .sink
            .feed(Bytes::from_static(b"\xff\xfe"))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Protocol { .. }));
    }
}
