//! The ETP connection runtime: emit, emit with ack, handlers per event, ping, close.
//!
//! [`Conn::spawn`] takes a [`Transport`] and runs it with exactly two tasks:
//!
//! - the **reader** receives messages, decodes ETP frames, resolves acks and pongs, and
//!   dispatches events to the [`Handlers`]. The synchronous part of a handler runs inline, in
//!   arrival order; a [`Reply::Later`] future is spawned, at most
//!   [`ConnConfig::max_concurrent_handlers`] at once.
//! - the **writer** drains the queue of encoded frames into the sink. It feeds frames while the
//!   queue has more and flushes when the queue is empty or after [`ConnConfig::flush_batch`]
//!   frames: one flush per burst, not per frame.
//!
//! # Backpressure
//! `emit*` never blocks: it queues the frame for the writer. The queue is bounded by bytes:
//! - above [`ConnConfig::queued_bytes_high_water`] (4 MiB by default) the reader dispatches no
//!   further event until the writer has drained the queue below it, as a synchronous write
//!   would hold up the Go peer's reader. A peer that sends requests but does not read the
//!   answers is slowed down to its own reading pace.
//! - above [`ConnConfig::max_queued_bytes`] (64 MiB by default) a frame is refused with
//!   [`ConnError::QueueFull`], and the connection is closed with code 1008 (a peer that does
//!   not read 64 MiB is dead or hostile).
//! - at [`ConnConfig::max_concurrent_handlers`] running [`Reply::Later`] futures the reader
//!   dispatches no further event until one finishes.
//!
//! While it waits (for the queue or a handler slot), the reader still reads: acks, pongs and
//! the peer's close are handled as they come (so a handler waiting for an ack does not wait
//! forever, and pings are answered), malformed frames are reported, and the first event that
//! arrives is held. Only once it holds an event does it stop reading: the peer is then
//! back-pressured by the transport, and the reader never holds more than one frame.
//!
//! The price of that bound: a [`Reply::Later`] future that waits for the peer's ack (its own
//! [`Conn::emit_with_ack`]) while all handler slots are busy *and* an event is held waits for
//! a slot to free up by other means, since the ack is queued behind the held event. (The Go
//! peer reads on without bound instead, one goroutine per event.) Give such handlers enough
//! slots for the peer's pipelining, or a deadline ([`Conn::emit_with_ack_timeout`]).
//!
//! Everything else is shared state behind an [`Arc`]: the pending acks (a map from ack id to a
//! oneshot sender, behind a `std` mutex that is never held across an `await`), the pending pings,
//! and the reason the connection ended. Nothing is preallocated: the writer's queue is a
//! `VecDeque` that grows with bursts and shrinks when idle, and the rare paths (closing) are
//! boxed out of the tasks' futures, so an idle connection costs about 2.5 KiB plus its
//! transport (measured: `benches/etp.rs`, `memory`).
//!
//! Frames are encoded once, by the caller of `emit*` (or by the reader for acks), straight into
//! an exactly sized allocation that becomes the [`Bytes`] handed to the sink: every frame needs
//! its own owned buffer anyway (the WebSocket sink takes it without a copy), so a reused
//! encoding buffer would only add a copy.
//!
//! # Rules (docs/protocol.md §2)
//! - A malformed frame is reported to [`Handlers::on_error`] and skipped; the connection stays.
//!
//! # Log volume
//! What a peer can trigger at will is logged through the connection's [`LogLimiter`]
//! ([`Conn::log_limiter`], settings in [`ConnConfig::log_limit`]): the first
//! [`LogLimit::burst`] warnings of each [`LogLimit::interval`] (default 5 per 10 s), then one
//! summary line with the count of the suppressed ones, and a last summary when the
//! connection ends. Handlers that log on the peer's behalf (an error handler, an
//! unknown-event handler) should use the same limiter.
//! - A frame whose name starts with `__ack_` is an acknowledgement, matched by its ack id only,
//!   and never dispatched. An ack for an unknown id (never sent, timed out, forgotten) is ignored.
//! - Ack ids are a per-connection sequence from 1.
//! - When the connection ends every pending ack and ping fails with [`ConnError::Closed`].
//!
//! # Lifetime
//! A connection lives until one side closes it or the transport breaks; dropping every [`Conn`]
//! handle does **not** close it (the reader keeps one for the handlers). Call [`Conn::close`].
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use cluster_transport::conn::{Conn, ConnConfig, Handlers, Reply};
//! use cluster_transport::memory;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let (client, server, _faults) = memory::pair();
//! let echo = Handlers::new().on("ECHO", |_conn, data| Reply::Ack(data));
//! let server = Conn::spawn(server, echo, ConnConfig::default());
//! let client = Conn::spawn(client, Handlers::new(), ConnConfig::default());
//!
//! let answer = client.emit_with_ack("ECHO", b"hello").await.unwrap();
//! assert_eq!(answer, Bytes::from_static(b"hello"));
//!
//! client.close(1000, "bye").await;
//! assert!(server.closed().await.normal);
//! # });
//! ```

use crate::log_limit::{LogLimit, LogLimiter};
use crate::{
    CLOSE_NORMAL, CloseInfo, Incoming, MessageSink, MessageStream, Transport, TransportError,
};
use bytes::Bytes;
use cluster_proto::frame::{self, ACK_PREFIX, DecodeError, Frame, SEPARATOR};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The default of [`ConnConfig::max_concurrent_handlers`].
pub const DEFAULT_MAX_CONCURRENT_HANDLERS: usize = 256;
/// The default of [`ConnConfig::flush_batch`].
pub const DEFAULT_FLUSH_BATCH: usize = 64;
/// The default of [`ConnConfig::queued_bytes_high_water`]: 4 MiB.
pub const DEFAULT_QUEUED_BYTES_HIGH_WATER: usize = 4 << 20;
/// The default of [`ConnConfig::max_queued_bytes`]: 64 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;
/// The close code sent when the write queue goes over [`ConnConfig::max_queued_bytes`]
/// (1008, policy violation: the peer does not read what it is sent).
pub const CLOSE_QUEUE_OVERFLOW: u16 = 1008;
/// How long the end of a connection may take: after we send a close, how long we wait for the
/// peer's close reply (and for the writer to flush what was queued before it); after the peer
/// closed, how long the writer may take to flush and echo the close. Past it the transport is
/// dropped, which the peer sees as a broken connection.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// How many [`Reply::Later`] futures may run at once on this connection (default
    /// [`DEFAULT_MAX_CONCURRENT_HANDLERS`], 256). When that many run, the reader waits for one
    /// to finish before it reads on, so a fast peer is slowed down instead of filling memory.
    /// `0` is taken as `1`.
    pub max_concurrent_handlers: usize,
    /// The writer flushes the transport when its queue is empty or after this many frames fed
    /// without a flush, whichever comes first (default [`DEFAULT_FLUSH_BATCH`], 64). `0` is
    /// taken as `1` (flush every frame).
    pub flush_batch: usize,
    /// When more bytes than this wait in the write queue, the reader dispatches no further
    /// event until the writer has drained the queue to this mark (default
    /// [`DEFAULT_QUEUED_BYTES_HIGH_WATER`], 4 MiB). Acks, pongs and the peer's close are still
    /// read meanwhile; see the [module docs](self#backpressure). `0` means: dispatch an event
    /// only when the queue is empty.
    pub queued_bytes_high_water: usize,
    /// The most bytes the write queue holds (default [`DEFAULT_MAX_QUEUED_BYTES`], 64 MiB). A
    /// frame that would take the queue over it is refused with [`ConnError::QueueFull`], and
    /// the connection is closed with [`CLOSE_QUEUE_OVERFLOW`] after what is queued (or dropped
    /// after [`CLOSE_TIMEOUT`] if the peer still does not read). Keep it well above
    /// `queued_bytes_high_water` and the largest frame you send.
    pub max_queued_bytes: usize,
    /// How many warnings a peer can cause per interval (default [`LogLimit::default`]: 5 per
    /// 10 s, then one summary line with the count); see the [module docs](self#log-volume).
    pub log_limit: LogLimit,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            max_concurrent_handlers: DEFAULT_MAX_CONCURRENT_HANDLERS,
            flush_batch: DEFAULT_FLUSH_BATCH,
            queued_bytes_high_water: DEFAULT_QUEUED_BYTES_HIGH_WATER,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            log_limit: LogLimit::default(),
        }
    }
}

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The connection is closed (or closing): nothing more can be sent, and pending acks and
    /// pings are released with this error.
    #[error("connection closed")]
    Closed,
    /// No ack arrived within the given time ([`Conn::emit_with_ack_timeout`]).
    #[error("no ack within {0:?}")]
    AckTimeout(Duration),
    /// No pong arrived within the given time ([`Conn::ping`]).
    #[error("no pong within {0:?}")]
    PingTimeout(Duration),
    /// The peer sent a message that is not an ETP frame. It was skipped; the connection stays.
    #[error("malformed frame from the peer: {0}")]
    Malformed(#[from] DecodeError),
    /// The transport failed. (A broken transport ends the connection, and [`Conn::closed`]
    /// says why; this variant is for callers that wrap transport errors in `ConnError`.)
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The caller gave an event name that cannot be sent: empty, containing `||`, or starting
    /// with `__ack_` (the peer would take it for an acknowledgement).
    #[error("invalid event name {0:?}")]
    InvalidEventName(String),
    /// The caller gave data (or an encoded frame) that is not UTF-8: ETP frames travel as
    /// WebSocket text messages, which must be. Nothing was sent; the connection goes on.
    #[error("data is not valid UTF-8 (valid up to byte {valid_up_to}); ETP frames are text")]
    NotUtf8 {
        /// The length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// The write queue is full: the frame would take it over [`ConnConfig::max_queued_bytes`]
    /// because the peer does not read. The frame was not queued, and the connection is being
    /// closed with [`CLOSE_QUEUE_OVERFLOW`].
    #[error("write queue full: {queued} bytes queued, limit {limit}; the peer does not read")]
    QueueFull {
        /// The bytes queued when the frame was refused.
        queued: usize,
        /// [`ConnConfig::max_queued_bytes`].
        limit: usize,
    },
    /// A handler panicked. The panic was caught; if the peer asked for an ack it got one with
    /// empty data, and the connection goes on.
    #[error("handler of {event:?} panicked: {message}")]
    HandlerPanicked {
        /// The event being handled.
        event: String,
        /// The panic message (when it was a string).
        message: String,
    },
}

/// Why a connection ended, as [`Conn::closed`] reports it.
///
/// When we closed ([`Conn::close`]) but our close frame could not be written (the transport
/// broke, or the peer did not read it within [`CLOSE_TIMEOUT`]), the end is reported as
/// `by_peer: false` (we ended it), `normal: false` and `close: None` (there was no close
/// handshake), with the failure in `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Whether the peer ended it (its close, or the transport breaking) rather than we did
    /// ([`Conn::close`]).
    pub by_peer: bool,
    /// Whether it was a normal closure: a close handshake with code 1000, from either side.
    /// A broken transport or any other code is abnormal.
    pub normal: bool,
    /// The close handshake, when there was one: the peer's close if `by_peer`, ours otherwise.
    pub close: Option<CloseInfo>,
    /// A human-readable account of what happened, for logs.
    pub reason: String,
}

impl Disconnect {
    fn local(info: CloseInfo) -> Self {
        Self {
            by_peer: false,
            normal: info.is_normal(),
            reason: format!("closed by us ({info})"),
            close: Some(info),
        }
    }

    fn peer_closed(info: CloseInfo) -> Self {
        Self {
            by_peer: true,
            normal: info.is_normal(),
            reason: format!("closed by the peer ({info})"),
            close: Some(info),
        }
    }

    fn lost(reason: String) -> Self {
        Self {
            by_peer: true,
            normal: false,
            close: None,
            reason,
        }
    }

    /// Our close `info` could not be written: `why`.
    fn close_failed(info: &CloseInfo, why: &str) -> Self {
        Self {
            by_peer: false,
            normal: false,
            close: None,
            reason: format!("closing by us ({info}) failed: {why}"),
        }
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What a handler answers to an event.
pub enum Reply {
    /// Done: if the peer asked for an ack, it carries these bytes (they are ignored otherwise).
    /// `Reply::Ack(Bytes::new())` is the empty answer.
    Ack(Bytes),
    /// More to do: the future is spawned and runs concurrently with the reader and other
    /// handlers (at most [`ConnConfig::max_concurrent_handlers`] at once); the bytes it yields
    /// are the ack data, sent if the peer asked for an ack. It is cancelled when the connection
    /// ends.
    Later(BoxFuture<'static, Bytes>),
}

impl Reply {
    /// A finished reply with `data` as ack data.
    pub fn ack(data: impl Into<Bytes>) -> Self {
        Self::Ack(data.into())
    }

    /// A reply computed by `future`, which runs concurrently.
    pub fn later<F>(future: F) -> Self
    where
        F: Future<Output = Bytes> + Send + 'static,
    {
        Self::Later(Box::pin(future))
    }
}

impl Default for Reply {
    /// The empty ack.
    fn default() -> Self {
        Self::Ack(Bytes::new())
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ack(data) => f.debug_tuple("Ack").field(data).finish(),
            Self::Later(_) => f.write_str("Later(..)"),
        }
    }
}

type EventFn = Arc<dyn Fn(&Conn, Bytes) -> Reply + Send + Sync>;
type UnknownFn = Arc<dyn Fn(&Conn, &str, Bytes) -> Reply + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&Conn, &ConnError) + Send + Sync>;

#[derive(Clone, Default)]
struct HandlerTable {
    events: HashMap<Box<str>, EventFn, FastState>,
    unknown: Option<UnknownFn>,
    error: Option<ErrorFn>,
}

/// The handlers of a connection's events, by event name.
///
/// A handler gets the connection (to emit on it) and the event data, and answers with a
/// [`Reply`]. Its synchronous part runs inline in the reader, in the order events arrive, so it
/// must not block: hand slow work to [`Reply::Later`]. If the event asked for an ack, the ack is
/// queued after whatever the handler emitted while it ran, so the peer sees the handler's events
/// before the ack (the order the Go server shows).
///
/// A handler that panics (its synchronous part or its future) is caught: the panic is reported
/// to [`Handlers::on_error`] as [`ConnError::HandlerPanicked`], an ack (if asked) goes out with
/// empty data so the peer does not wait for its timeout (the Go client reads anything but `ok`
/// as a failure), and the connection goes on.
///
/// Cloning is cheap (a reference count): a server builds one table and gives a clone to each
/// connection.
#[derive(Clone, Default)]
pub struct Handlers(Arc<HandlerTable>);

impl Handlers {
    /// No handlers: every event goes to the unknown-event fallback.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles `event` with `f`, replacing any handler it had. (A name starting with `__ack_`
    /// is never dispatched: such frames are acks.)
    #[must_use]
    pub fn on<F>(mut self, event: impl Into<String>, f: F) -> Self
    where
        F: Fn(&Conn, Bytes) -> Reply + Send + Sync + 'static,
    {
        let event: String = event.into();
        Arc::make_mut(&mut self.0)
            .events
            .insert(event.into_boxed_str(), Arc::new(f));
        self
    }

    /// Handles every event that has no handler of its own (`f` gets the event name). Without
    /// it, such events are logged at debug level and acked with empty data.
    #[must_use]
    pub fn on_unknown<F>(mut self, f: F) -> Self
    where
        F: Fn(&Conn, &str, Bytes) -> Reply + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.0).unknown = Some(Arc::new(f));
        self
    }

    /// Is told of what goes wrong on the connection without ending it: malformed frames from
    /// the peer ([`ConnError::Malformed`]) and handler panics ([`ConnError::HandlerPanicked`]).
    /// Without it, they are logged at warn level through the connection's
    /// [`LogLimiter`]. It runs inline in the reader, once per error: a handler that logs
    /// should ask [`Conn::log_limiter`] first.
    #[must_use]
    pub fn on_error<F>(mut self, f: F) -> Self
    where
        F: Fn(&Conn, &ConnError) + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.0).error = Some(Arc::new(f));
        self
    }

    /// Runs the synchronous part of the handler of `frame`, catching a panic.
    fn call(&self, conn: &Conn, frame: &Frame) -> Result<Reply, String> {
        let name = frame.name();
        let data = frame.data().clone();
        let table = &*self.0;
        std::panic::catch_unwind(AssertUnwindSafe(|| match table.events.get(name) {
            Some(handler) => handler(conn, data),
            None => match &table.unknown {
                Some(unknown) => unknown(conn, name, data),
                None => {
                    tracing::debug!(
                        conn = conn.id(),
                        peer = conn.peer(),
                        event = name,
                        "no handler for event; acking empty"
                    );
                    Reply::default()
                }
            },
        }))
        .map_err(panic_message)
    }

    /// Reports `error` to the error handler (or logs it), never panicking.
    fn report(&self, conn: &Conn, error: &ConnError) {
        match &self.0.error {
            Some(handler) => {
                if let Err(panic) =
                    std::panic::catch_unwind(AssertUnwindSafe(|| handler(conn, error)))
                {
                    tracing::error!(
                        conn = conn.id(),
                        peer = conn.peer(),
                        panic = panic_message(panic),
                        "error handler panicked"
                    );
                }
            }
            None => {
                if conn.log_limiter().admit(conn.id(), conn.peer()) {
                    tracing::warn!(conn = conn.id(), peer = conn.peer(), %error, "connection error");
                }
            }
        }
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut events: Vec<&str> = self.0.events.keys().map(|k| &**k).collect();
        events.sort_unstable();
        f.debug_struct("Handlers")
            .field("events", &events)
            .field("on_unknown", &self.0.unknown.is_some())
            .field("on_error", &self.0.error.is_some())
            .finish()
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// A fast hasher for our two maps: ack ids (sequential, ours) and event names (the keys are
/// the handlers' names, chosen by us; the peer only chooses what is looked up, so it cannot
/// build colliding keys). One multiplication per 8 bytes instead of SipHash.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

type FastState = BuildHasherDefault<FastHasher>;

type IdMap<V> = HashMap<u64, V, FastState>;

/// One instruction to the writer. Two variants, so the niche of [`Bytes`] keeps it at 32 bytes.
enum Command {
    Frame(Bytes),
    Control(Box<Control>),
}

enum Control {
    Ping(u64),
    /// Our close: flush what is queued, then close.
    Close(CloseInfo),
    /// The peer closed: flush what is queued, echo its close (the transport may have done so
    /// already), stop.
    Finish(CloseInfo),
}

/// What the reader is told to do when the connection ends on our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// We close: stop dispatching, read on for the peer's close reply.
    Drain,
    /// The writer failed: the transport is broken, stop at once.
    Now,
}

#[derive(Default)]
struct State {
    acks: IdMap<oneshot::Sender<Bytes>>,
    pings: Vec<(u64, oneshot::Sender<()>)>,
    /// The first known reason the connection ends; published in `Inner::done` at the very end.
    cause: Option<Disconnect>,
    stop_reader: Option<oneshot::Sender<Stop>>,
    close_started: bool,
    /// Pending acks and pings were released; no new ones are registered.
    ended: bool,
}

/// The writer's queue. A `std` mutex around a `VecDeque` rather than a tokio mpsc channel: the
/// channel allocates ~1.5 KiB per connection up front (a block of 32 slots and cache-padded
/// halves), this allocates nothing until a frame is queued. The lock is held only to push one
/// command or to swap the whole queue out, never across an `await`.
struct Outbox {
    commands: VecDeque<Command>,
    /// `false` once the writer has ended: nothing can be queued any more.
    open: bool,
    /// `false` once the last command (our close, or the echo of the peer's) is queued: frames
    /// and pings are refused from then on. Checked under the lock, so a frame is either queued
    /// before the close or refused, never accepted and then dropped.
    accepting: bool,
}

struct Inner {
    id: u64,
    peer: Box<str>,
    outbox: Mutex<Outbox>,
    /// Wakes the writer when a command is queued on an empty queue (`notify_one` keeps a
    /// permit if the writer is not waiting yet, so no wake-up is lost).
    outbox_ready: Notify,
    next_ack: AtomicU64,
    next_ping: AtomicU64,
    /// No more frames are accepted (closing or closed). A fast check; the authority is
    /// `Outbox::accepting`.
    closed: AtomicBool,
    /// Bytes of the frames queued and not yet handed to the sink: added when a frame is
    /// queued, subtracted by the writer once the sink took it.
    queued: AtomicUsize,
    high_water: usize,
    max_queued: usize,
    /// Wakes the reader when the writer brings `queued` down to `high_water`.
    drained: Notify,
    /// Running handler futures must stop.
    handlers_stopping: AtomicBool,
    max_handlers: u32,
    permits: Semaphore,
    state: Mutex<State>,
    done: OnceLock<Disconnect>,
    /// Wakes `closed()` waiters (when `done` is set) and handler futures (when
    /// `handlers_stopping` is set). Waiters re-check their condition.
    events: Notify,
    /// Bounds the warnings the peer can cause. Boxed: most connections never warn, and the
    /// shared state a server holds thousands of stays small.
    warnings: Box<LogLimiter>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl Inner {
    fn new(peer: String, config: &ConnConfig) -> (Arc<Self>, oneshot::Receiver<Stop>) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let max_handlers = u32::try_from(config.max_concurrent_handlers)
            .unwrap_or(u32::MAX)
            .clamp(1, 1 << 28);
        let inner = Arc::new(Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            peer: peer.into_boxed_str(),
            outbox: Mutex::new(Outbox {
                commands: VecDeque::new(),
                open: true,
                accepting: true,
            }),
            outbox_ready: Notify::new(),
            next_ack: AtomicU64::new(1),
            next_ping: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            high_water: config.queued_bytes_high_water,
            max_queued: config.max_queued_bytes,
            drained: Notify::new(),
            handlers_stopping: AtomicBool::new(false),
            max_handlers,
            permits: Semaphore::new(max_handlers as usize),
            state: Mutex::new(State {
                stop_reader: Some(stop_tx),
                ..State::default()
            }),
            done: OnceLock::new(),
            events: Notify::new(),
            warnings: Box::new(LogLimiter::new(config.log_limit)),
        });
        (inner, stop_rx)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an encoded frame unless the connection is closing or closed, or the queue is
    /// full (which closes the connection).
    fn send_frame(&self, frame: Bytes) -> Result<(), ConnError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ConnError::Closed);
        }
        let len = frame.len();
        let was_empty = {
            let mut outbox = self.outbox();
            if !outbox.open || !outbox.accepting {
                return Err(ConnError::Closed);
            }
            // Only the writer lowers `queued` meanwhile: the check cannot be outdated upwards.
            let queued = self.queued.load(Ordering::Acquire);
            if queued.saturating_add(len) > self.max_queued {
                drop(outbox);
                return Err(self.overflow(queued, len));
            }
            self.queued.fetch_add(len, Ordering::AcqRel);
            outbox.commands.push_back(Command::Frame(frame));
            outbox.commands.len() == 1
        };
        if was_empty {
            self.outbox_ready.notify_one();
        }
        Ok(())
    }

    /// Queues a control command: a ping (refused once closing), or the last command (our
    /// close, the echo of the peer's), after which nothing more is accepted.
    fn send_control(&self, control: Control) -> Result<(), ConnError> {
        let last = !matches!(control, Control::Ping(_));
        let was_empty = {
            let mut outbox = self.outbox();
            if !outbox.open || (!last && !outbox.accepting) {
                return Err(ConnError::Closed);
            }
            if last {
                outbox.accepting = false;
            }
            outbox
                .commands
                .push_back(Command::Control(Box::new(control)));
            outbox.commands.len() == 1
        };
        if was_empty {
            self.outbox_ready.notify_one();
        }
        Ok(())
    }

    /// The queue cannot take `len` more bytes: starts closing with 1008.
    fn overflow(&self, queued: usize, len: usize) -> ConnError {
        if !self.closed.load(Ordering::Acquire) {
            tracing::warn!(
                conn = self.id,
                peer = &*self.peer,
                queued,
                frame = len,
                limit = self.max_queued,
                "write queue full: the peer does not read; closing with 1008"
            );
        }
        self.start_close(CLOSE_QUEUE_OVERFLOW, "write queue full");
        ConnError::QueueFull {
            queued,
            limit: self.max_queued,
        }
    }

    /// Called by the writer once the sink took a frame of `len` bytes.
    fn written(&self, len: usize) {
        let before = self.queued.fetch_sub(len, Ordering::AcqRel);
        if before > self.high_water && before - len <= self.high_water {
            self.drained.notify_waiters();
        }
    }

    fn over_high_water(&self) -> bool {
        self.queued.load(Ordering::Acquire) > self.high_water
    }

    /// Resolves once the write queue is at or under the high-water mark.
    async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.over_high_water() {
                return;
            }
            notified.await;
        }
    }

    /// Called when the writer ends: refuses new commands and drops the queued ones.
    fn close_outbox(&self) {
        let dropped = {
            let mut outbox = self.outbox();
            outbox.open = false;
            outbox.accepting = false;
            self.queued.store(0, Ordering::Release);
            std::mem::take(&mut outbox.commands)
        };
        drop(dropped);
        self.drained.notify_waiters();
    }

    /// Queues the ack of `event`/`ack_id` with `data`; data that is not UTF-8 cannot travel
    /// in a text message, so it is logged and the ack goes out empty.
    fn send_ack(&self, event: &str, ack_id: u64, data: &[u8]) {
        let data = match std::str::from_utf8(data) {
            Ok(_) => data,
            Err(err) => {
                if self.warnings.admit(self.id, &self.peer) {
                    tracing::warn!(
                        conn = self.id,
                        peer = &*self.peer,
                        event,
                        ack_id,
                        valid_up_to = err.valid_up_to(),
                        "handler reply is not UTF-8; acking with empty data"
                    );
                }
                &[]
            }
        };
        let len = ACK_PREFIX.len() + frame::encoded_len(event, ack_id, data);
        let mut buf = Vec::with_capacity(len);
        frame::encode_ack(event, ack_id, data, &mut buf);
        if let Err(err) = self.send_frame(Bytes::from(buf)) {
            tracing::debug!(
                conn = self.id,
                peer = &*self.peer,
                event,
                ack_id,
                %err,
                "ack not sent"
            );
        }
    }

    fn on_ack(&self, ack_id: u64, data: Bytes) {
        let waiter = {
            let mut state = self.state();
            let waiter = state.acks.remove(&ack_id);
            if state.acks.is_empty() && state.acks.capacity() > 64 {
                state.acks.shrink_to(0);
            }
            waiter
        };
        match waiter {
            // The receiver may be gone (dropped future racing with the ack): nothing to do.
            Some(waiter) => drop(waiter.send(data)),
            None => tracing::debug!(
                conn = self.id,
                peer = &*self.peer,
                ack_id,
                "ack for an unknown ack id ignored"
            ),
        }
    }

    fn forget_ack(&self, ack_id: u64) {
        let waiter = self.state().acks.remove(&ack_id);
        drop(waiter);
    }

    fn on_pong(&self, payload: &[u8]) {
        let Ok(raw) = <[u8; 8]>::try_from(payload) else {
            tracing::debug!(
                conn = self.id,
                peer = &*self.peer,
                "pong with a foreign payload ignored"
            );
            return;
        };
        let id = u64::from_be_bytes(raw);
        let waiter = {
            let mut state = self.state();
            let at = state.pings.iter().position(|(p, _)| *p == id);
            at.map(|at| state.pings.swap_remove(at).1)
        };
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    fn forget_ping(&self, id: u64) {
        let waiter = {
            let mut state = self.state();
            let at = state.pings.iter().position(|(p, _)| *p == id);
            at.map(|at| state.pings.swap_remove(at))
        };
        drop(waiter);
    }

    /// Records why the connection ends (the first reason wins), refuses new frames and releases
    /// pending acks and pings with [`ConnError::Closed`]. Returns whether this reason won.
    fn end_with(&self, cause: Disconnect) -> bool {
        self.closed.store(true, Ordering::Release);
        let (won, acks, pings) = {
            let mut state = self.state();
            let won = state.cause.is_none();
            if won {
                state.cause = Some(cause);
            }
            state.ended = true;
            (
                won,
                std::mem::take(&mut state.acks),
                std::mem::take(&mut state.pings),
            )
        };
        // Dropping the senders wakes the waiters with `Closed`, outside the lock.
        drop((acks, pings));
        won
    }

    fn stop_reader(&self, stop: Stop) {
        let sender = self.state().stop_reader.take();
        if let Some(sender) = sender {
            let _ = sender.send(stop);
        }
    }

    /// Starts our close: refuses new frames, queues the close after what is queued, tells the
    /// reader to stop dispatching. Pending acks stay pending until the end, in case the peer
    /// answers them before its close reply.
    fn start_close(&self, code: u16, reason: &str) {
        let info = CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        };
        let stop = {
            let mut state = self.state();
            if state.close_started || state.cause.is_some() {
                return;
            }
            state.close_started = true;
            state.cause = Some(Disconnect::local(info.clone()));
            state.stop_reader.take()
        };
        self.closed.store(true, Ordering::Release);
        tracing::debug!(
            conn = self.id,
            peer = &*self.peer,
            code,
            reason,
            "closing ETP connection"
        );
        // Queued after every frame accepted so far; frames are refused from here on (under
        // the outbox lock, so none slips in behind the close).
        let _ = self.send_control(Control::Close(info));
        if let Some(stop) = stop {
            let _ = stop.send(Stop::Drain);
        }
    }

    /// Our close could not be written (`why`): replaces the normal close recorded by
    /// `start_close`, so that `closed()` does not claim a close handshake that did not happen.
    /// Returns whether it did (i.e. we were closing).
    fn close_failed(&self, why: &str) -> bool {
        let mut state = self.state();
        if !state.close_started {
            return false;
        }
        if let Some(Disconnect {
            by_peer: false,
            close: Some(info),
            ..
        }) = &state.cause
        {
            let failed = Disconnect::close_failed(info, why);
            state.cause = Some(failed);
        }
        true
    }

    /// Resolves once handler futures must stop.
    async fn handlers_stopped(&self) {
        loop {
            let notified = self.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.handlers_stopping.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Cancels running handler futures and waits until every one has been dropped.
    async fn stop_handlers(&self) {
        self.handlers_stopping.store(true, Ordering::Release);
        self.events.notify_waiters();
        // Every running handler holds one permit, returned when its task drops its future.
        // The semaphore is never closed, so this only fails if it were: then there is nothing
        // to wait for either.
        if let Ok(all) = self.permits.acquire_many(self.max_handlers).await {
            drop(all);
        }
    }

    /// The final cause, once the reader wound down (or `lost` if none was recorded).
    fn final_cause(&self) -> Disconnect {
        self.end_with(Disconnect::lost("the connection ended".to_owned()));
        self.state()
            .cause
            .clone()
            .unwrap_or_else(|| Disconnect::lost("the connection ended".to_owned()))
    }

    /// Logs the end of the connection, once everything of it has stopped.
    fn log_end(&self) {
        self.warnings.flush(self.id, &self.peer);
        let cause = self.final_cause();
        if cause.normal {
            tracing::info!(conn = self.id, peer = &*self.peer, by_peer = cause.by_peer, reason = %cause.reason, "ETP connection ended");
        } else {
            tracing::warn!(conn = self.id, peer = &*self.peer, by_peer = cause.by_peer, reason = %cause.reason, "ETP connection ended abnormally");
        }
    }

    /// Publishes the end: called once, when the reader (the last task) is done.
    fn finish(&self) {
        let cause = self.final_cause();
        self.state().stop_reader = None;
        let _ = self.done.set(cause);
        self.events.notify_waiters();
    }
}

/// A handle to one ETP connection. Cloning gives another handle to the same connection.
///
/// See the [module docs](self) for what runs where.
#[derive(Clone)]
pub struct Conn {
    inner: Arc<Inner>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Starts the reader and writer tasks (`tokio::spawn`) for `transport`, dispatching to
    /// `handlers`.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    #[must_use = "the connection runs until closed; keep the handle to close it"]
    pub fn spawn(transport: Transport, handlers: Handlers, config: ConnConfig) -> Self {
        let Transport { sink, stream, peer } = transport;
        let (inner, stop_rx) = Inner::new(peer, &config);
        let conn = Self { inner };
        tracing::debug!(
            conn = conn.id(),
            peer = conn.peer(),
            "ETP connection started"
        );
        let writer = tokio::spawn(run_writer(
            Arc::clone(&conn.inner),
            sink,
            config.flush_batch.max(1),
        ));
        tokio::spawn(run_reader(conn.clone(), stream, handlers, stop_rx, writer));
        conn
    }

    /// The limiter of the warnings this connection's peer can cause (see the
    /// [module docs](self#log-volume)): a handler that logs on the peer's behalf asks it
    /// first, `if conn.log_limiter().admit(conn.id(), conn.peer()) { tracing::warn!(…) }`.
    #[must_use]
    pub fn log_limiter(&self) -> &LogLimiter {
        &self.inner.warnings
    }

    /// The process-unique id of this connection (for logs and tests), from 1.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The peer's address as the transport gave it.
    #[must_use]
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// Queues `event` with `data`, without ack (ack id 0). Never blocks.
    ///
    /// `Ok` means *queued*, not delivered: the frame is written after everything queued before
    /// it and before our close, but the transport may still break first. The queue is bounded
    /// ([`ConnConfig::max_queued_bytes`]); see the [module docs](self#backpressure).
    ///
    /// # Errors
    /// [`ConnError::Closed`] once the connection is closing or closed;
    /// [`ConnError::InvalidEventName`] for a name that cannot be sent; [`ConnError::NotUtf8`]
    /// for data that is not UTF-8; [`ConnError::QueueFull`] when the peer does not read (the
    /// connection is then closing).
    pub fn emit(&self, event: &str, data: &[u8]) -> Result<(), ConnError> {
        check_event_name(event)?;
        check_utf8(data)?;
        self.inner
            .send_frame(frame::encode_to_bytes(event, 0, data))
    }

    /// Queues an already encoded frame as it is, e.g. one event fanned out to many connections:
    /// encode it once ([`frame::encode_to_bytes`]) and give each connection a clone of the
    /// [`Bytes`]. The frame is checked to be UTF-8, not to be a valid ETP frame. Never blocks;
    /// `Ok` means queued, as for [`Conn::emit`].
    ///
    /// # Errors
    /// [`ConnError::Closed`] once the connection is closing or closed; [`ConnError::NotUtf8`]
    /// for a frame that is not UTF-8; [`ConnError::QueueFull`] when the peer does not read.
    pub fn emit_encoded(&self, frame: Bytes) -> Result<(), ConnError> {
        check_utf8(&frame)?;
        self.inner.send_frame(frame)
    }

    /// Bytes of the frames queued for this connection and not yet handed to the transport
    /// (what [`ConnConfig::queued_bytes_high_water`] and [`ConnConfig::max_queued_bytes`]
    /// bound). For metrics and tests.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Queues `event` with `data` and the next ack id (a per-connection sequence from 1), and
    /// resolves to the data of the peer's ack.
    ///
    /// The frame is queued when this is called, not when the future is first polled. Dropping
    /// the future forgets the ack id (a late ack is then ignored). There is no timeout here:
    /// the caller owns deadlines (see [`Conn::emit_with_ack_timeout`]).
    ///
    /// The future resolves to [`ConnError::Closed`] if the connection is closed or ends before
    /// the ack arrives, and at once to the errors of [`Conn::emit`] if the frame cannot be
    /// queued ([`ConnError::InvalidEventName`], [`ConnError::NotUtf8`],
    /// [`ConnError::QueueFull`]).
    pub fn emit_with_ack(&self, event: &str, data: &[u8]) -> AckFuture {
        if let Err(err) = check_event_name(event).and_then(|()| check_utf8(data)) {
            return AckFuture::ready(Err(err));
        }
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return AckFuture::ready(Err(ConnError::Closed));
        }
        let ack_id = inner.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = inner.state();
            if state.ended {
                return AckFuture::ready(Err(ConnError::Closed));
            }
            state.acks.insert(ack_id, tx);
        }
        let sent = inner.send_frame(frame::encode_to_bytes(event, ack_id, data));
        if let Err(err) = sent {
            inner.forget_ack(ack_id);
            return AckFuture::ready(Err(err));
        }
        AckFuture {
            state: AckState::Waiting {
                rx,
                inner: Arc::downgrade(inner),
                ack_id,
            },
        }
    }

    /// [`Conn::emit_with_ack`] bounded by `timeout`.
    ///
    /// # Errors
    /// [`ConnError::AckTimeout`] when no ack came in time (the ack id is then forgotten), and
    /// the errors of [`Conn::emit_with_ack`].
    pub async fn emit_with_ack_timeout(
        &self,
        event: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, ConnError> {
        tokio::time::timeout(timeout, self.emit_with_ack(event, data))
            .await
            .unwrap_or(Err(ConnError::AckTimeout(timeout)))
    }

    /// Sends a transport ping and waits for its pong; returns the round trip time.
    ///
    /// # Errors
    /// [`ConnError::PingTimeout`] when no pong came within `timeout`; [`ConnError::Closed`] if
    /// the connection is closed or ends meanwhile.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, ConnError> {
        let inner = &self.inner;
        let id = inner.next_ping.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = inner.state();
            if state.ended {
                return Err(ConnError::Closed);
            }
            state.pings.push((id, tx));
        }
        // Forgets the ping however this future ends (timeout, cancellation, error).
        struct Forget<'a>(&'a Inner, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.forget_ping(self.1);
            }
        }
        let _forget = Forget(inner, id);
        let started = Instant::now();
        inner.send_control(Control::Ping(id))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(_)) => Err(ConnError::Closed),
            Err(_) => Err(ConnError::PingTimeout(timeout)),
        }
    }

    /// Closes the connection with `code` and `reason` after flushing the frames queued so far,
    /// and waits until both tasks (and every handler future) have ended: after it returns,
    /// nothing of this connection runs. Waits at most about [`CLOSE_TIMEOUT`] for the peer's
    /// close reply.
    ///
    /// Idempotent; if the connection already ended (or the peer is closing it) this just waits
    /// for the end. Called from a [`Reply::Later`] future of this very connection, the close
    /// goes ahead but the future itself is cancelled with the other handlers.
    pub async fn close(&self, code: u16, reason: &str) {
        self.start_close(code, reason);
        self.closed().await;
    }

    /// Starts [`Conn::close`] without waiting for it, e.g. from the synchronous part of a
    /// handler. Idempotent.
    pub fn start_close(&self, code: u16, reason: &str) {
        self.inner.start_close(code, reason);
    }

    /// Resolves once the connection has ended (either side), with why. Can be awaited many
    /// times, from any clone; once it resolves, nothing of this connection runs any more.
    pub async fn closed(&self) -> Disconnect {
        loop {
            let notified = self.inner.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(done) = self.inner.done.get() {
                return done.clone();
            }
            notified.await;
        }
    }

    /// Whether the connection is closing or closed: frames are no longer accepted.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// How many emits with ack wait for their ack.
    #[must_use]
    pub fn pending_acks(&self) -> usize {
        self.inner.state().acks.len()
    }
}

fn check_utf8(data: &[u8]) -> Result<(), ConnError> {
    match std::str::from_utf8(data) {
        Ok(_) => Ok(()),
        Err(err) => Err(ConnError::NotUtf8 {
            valid_up_to: err.valid_up_to(),
        }),
    }
}

fn check_event_name(event: &str) -> Result<(), ConnError> {
    let bytes = event.as_bytes();
    if bytes.is_empty() || bytes.windows(2).any(|w| w == SEPARATOR) || event.starts_with(ACK_PREFIX)
    {
        return Err(ConnError::InvalidEventName(event.to_owned()));
    }
    Ok(())
}

/// The future of [`Conn::emit_with_ack`]: the ack's data, or why it will not come.
///
/// Dropping it before it resolves forgets the ack id.
#[must_use = "dropping an AckFuture forgets its ack"]
pub struct AckFuture {
    state: AckState,
}

enum AckState {
    Ready(Option<ConnError>),
    Waiting {
        rx: oneshot::Receiver<Bytes>,
        inner: Weak<Inner>,
        ack_id: u64,
    },
    Done,
}

impl AckFuture {
    fn ready(result: Result<Bytes, ConnError>) -> Self {
        match result {
            Ok(_) => Self {
                state: AckState::Done,
            },
            Err(err) => Self {
                state: AckState::Ready(Some(err)),
            },
        }
    }

    /// The ack id the event was sent with; `None` when it was not sent.
    #[must_use]
    pub fn ack_id(&self) -> Option<u64> {
        match &self.state {
            AckState::Waiting { ack_id, .. } => Some(*ack_id),
            _ => None,
        }
    }
}

impl fmt::Debug for AckFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckFuture")
            .field("ack_id", &self.ack_id())
            .finish_non_exhaustive()
    }
}

impl Future for AckFuture {
    type Output = Result<Bytes, ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = match &mut this.state {
            AckState::Waiting { rx, .. } => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(data)) => Ok(data),
                Poll::Ready(Err(_)) => Err(ConnError::Closed),
            },
            AckState::Ready(err) => Err(err.take().unwrap_or(ConnError::Closed)),
            // Polled after completion: answer as a closed connection rather than panic.
            AckState::Done => Err(ConnError::Closed),
        };
        this.state = AckState::Done;
        Poll::Ready(result)
    }
}

impl Drop for AckFuture {
    fn drop(&mut self) {
        if let AckState::Waiting { inner, ack_id, .. } = &self.state
            && let Some(inner) = inner.upgrade()
        {
            inner.forget_ack(*ack_id);
        }
    }
}

/// Returns a handler permit when a handler task ends (done, cancelled or panicked). The task
/// drops it after everything else it held, so once the reader has every permit back no
/// handler holds anything any more.
struct PermitGuard(Arc<Inner>);

impl Drop for PermitGuard {
    fn drop(&mut self) {
        self.0.permits.add_permits(1);
    }
}

/// Publishes the end of the connection when the reader is done, even if it panicked. It holds
/// a `Weak`, upgraded only to publish: if no handle is left there is no one to tell.
struct FinishGuard(Weak<Inner>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.finish();
        }
    }
}

enum End {
    Stop(Stop),
    PeerClosed(CloseInfo),
    Lost(TransportError),
}

async fn run_reader(
    conn: Conn,
    stream: Box<dyn MessageStream>,
    handlers: Handlers,
    stop: oneshot::Receiver<Stop>,
    writer: JoinHandle<()>,
) {
    let _finish = FinishGuard(Arc::downgrade(&conn.inner));
    read_loop(conn, stream, handlers, stop, writer).await;
    // Everything the reader held is dropped here, before `_finish` publishes the end.
}

async fn read_loop(
    conn: Conn,
    mut stream: Box<dyn MessageStream>,
    handlers: Handlers,
    mut stop: oneshot::Receiver<Stop>,
    mut writer: JoinHandle<()>,
) {
    let inner = &*conn.inner;
    // An event read while the reader waited (for the writer or a handler slot), to dispatch
    // before reading on.
    let mut held: Option<Frame> = None;
    let end = loop {
        let frame = match held.take() {
            Some(frame) => frame,
            None => {
                let incoming = tokio::select! {
                    biased;
                    stop = &mut stop => break End::Stop(stop.unwrap_or(Stop::Now)),
                    incoming = stream.recv() => incoming,
                };
                match take_incoming(&conn, &handlers, incoming) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => continue,
                    Err(end) => break end,
                }
            }
        };
        // The waits are rare: boxed, so their state does not weigh on the reader's future.
        let waited = if inner.over_high_water() {
            let reader = Reader {
                conn: &conn,
                handlers: &handlers,
                stream: &mut *stream,
                stop: &mut stop,
                held: &mut held,
            };
            Box::pin(dispatch_after_drain(reader, frame)).await
        } else if let Some(later) = dispatch(&conn, &handlers, frame) {
            let reader = Reader {
                conn: &conn,
                handlers: &handlers,
                stream: &mut *stream,
                stop: &mut stop,
                held: &mut held,
            };
            Box::pin(spawn_when_free(reader, later)).await
        } else {
            Ok(())
        };
        if let Err(end) = waited {
            break end;
        }
    };
    drop(held);
    // The end is rare and needs timers: boxed, so the reader's future stays small while it runs.
    Box::pin(wind_down(inner, end, &mut *stream, &mut writer)).await;
    inner.log_end();
}

/// What the reader lends to `dispatch` and `wait_reading`.
struct Reader<'a> {
    conn: &'a Conn,
    handlers: &'a Handlers,
    stream: &'a mut dyn MessageStream,
    stop: &'a mut oneshot::Receiver<Stop>,
    held: &'a mut Option<Frame>,
}

/// Handles what the stream gave, except events: acks, pongs and malformed frames are dealt
/// with here; an event frame is returned; the end of the stream is `Err`.
fn take_incoming(
    conn: &Conn,
    handlers: &Handlers,
    incoming: Result<Incoming, TransportError>,
) -> Result<Option<Frame>, End> {
    match incoming {
        Ok(Incoming::Text(message)) => match Frame::decode(message) {
            Ok(frame) if frame.is_ack() => {
                conn.inner.on_ack(frame.ack_id(), frame.into_data());
                Ok(None)
            }
            Ok(frame) => Ok(Some(frame)),
            Err(err) => {
                handlers.report(conn, &ConnError::Malformed(err));
                Ok(None)
            }
        },
        Ok(Incoming::Pong(payload)) => {
            conn.inner.on_pong(&payload);
            Ok(None)
        }
        Ok(Incoming::Closed(info)) => Err(End::PeerClosed(info)),
        Err(err) => Err(End::Lost(err)),
    }
}

/// Waits for `ready` while reading on: acks, pongs and malformed frames are handled, the
/// first event is kept in `held` and then reading stops; a stop or the end of the stream ends
/// the wait with `Err`.
async fn wait_reading<T>(
    reader: &mut Reader<'_>,
    ready: impl Future<Output = T>,
) -> Result<T, End> {
    tokio::pin!(ready);
    loop {
        let incoming = tokio::select! {
            biased;
            stop = &mut *reader.stop => return Err(End::Stop(stop.unwrap_or(Stop::Now))),
            out = &mut ready => return Ok(out),
            incoming = reader.stream.recv(), if reader.held.is_none() => incoming,
        };
        if let Some(frame) = take_incoming(reader.conn, reader.handlers, incoming)? {
            tracing::trace!(
                conn = reader.conn.id(),
                peer = reader.conn.peer(),
                event = frame.name(),
                "event held until the reader may dispatch it; reading paused"
            );
            *reader.held = Some(frame);
        }
    }
}

/// Ends the connection once the read loop is over: records why, stops the handlers, lets the
/// writer finish (or not), and for our own close reads on until the peer's close reply.
async fn wind_down(
    inner: &Inner,
    end: End,
    stream: &mut dyn MessageStream,
    writer: &mut JoinHandle<()>,
) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    match end {
        End::Lost(err) => {
            let reason = match &err {
                TransportError::Closed(info) => {
                    inner.end_with(Disconnect::peer_closed(info.clone()));
                    None
                }
                // The transport closed it with a code because the peer broke the protocol.
                other if other.close_sent().is_some() => {
                    inner.end_with(Disconnect::local(CloseInfo {
                        code: other.close_sent(),
                        reason: other.to_string(),
                    }));
                    None
                }
                other => Some(other.to_string()),
            };
            if let Some(reason) = reason {
                inner.end_with(Disconnect::lost(reason));
            }
            // The transport is broken: what the writer still has cannot be delivered.
            writer.abort();
            inner.stop_handlers().await;
            let _ = writer.await;
        }
        End::PeerClosed(info) => {
            inner.end_with(Disconnect::peer_closed(info.clone()));
            let _ = inner.send_control(Control::Finish(info));
            inner.stop_handlers().await;
            wait_writer(inner, writer, deadline).await;
        }
        End::Stop(Stop::Now) => {
            inner.stop_handlers().await;
            wait_writer(inner, writer, deadline).await;
        }
        End::Stop(Stop::Drain) => {
            inner.stop_handlers().await;
            drain(inner, stream, deadline).await;
            wait_writer(inner, writer, deadline).await;
        }
    }
}

/// After our close: reads until the peer's close reply (or the end of the stream, or the
/// deadline), still resolving acks and pongs but dispatching nothing.
async fn drain(inner: &Inner, stream: &mut dyn MessageStream, deadline: Instant) {
    loop {
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Err(_) => {
                tracing::debug!(
                    conn = inner.id,
                    peer = &*inner.peer,
                    "no close reply from the peer in time"
                );
                return;
            }
            Ok(Ok(Incoming::Closed(info))) => {
                tracing::debug!(conn = inner.id, peer = &*inner.peer, %info, "close reply received");
                return;
            }
            Ok(Ok(Incoming::Text(message))) => {
                if let Ok(frame) = Frame::decode(message)
                    && frame.is_ack()
                {
                    inner.on_ack(frame.ack_id(), frame.into_data());
                }
            }
            Ok(Ok(Incoming::Pong(payload))) => inner.on_pong(&payload),
            Ok(Err(err)) => {
                tracing::debug!(conn = inner.id, peer = &*inner.peer, %err, "stream ended while closing");
                return;
            }
        }
    }
}

async fn wait_writer(inner: &Inner, writer: &mut JoinHandle<()>, deadline: Instant) {
    if tokio::time::timeout_at(deadline, &mut *writer)
        .await
        .is_err()
    {
        tracing::warn!(
            conn = inner.id,
            peer = &*inner.peer,
            "writer did not finish in time; dropping the transport"
        );
        inner.close_failed("the peer did not read it in time");
        writer.abort();
        let _ = writer.await;
    }
}

/// A [`Reply::Later`] future waiting for a handler slot, with its frame.
type Later = (Frame, BoxFuture<'static, Bytes>);

/// Dispatches one event now: runs the handler's synchronous part, queues its ack, spawns its
/// [`Reply::Later`] future if a handler slot is free, or returns it to wait for one.
fn dispatch(conn: &Conn, handlers: &Handlers, frame: Frame) -> Option<Later> {
    let inner = &*conn.inner;
    match handlers.call(conn, &frame) {
        Ok(Reply::Ack(data)) => {
            if frame.ack_id() != 0 {
                inner.send_ack(frame.name(), frame.ack_id(), &data);
            }
        }
        Ok(Reply::Later(future)) => match inner.permits.try_acquire() {
            Ok(permit) => {
                // Given back by the `PermitGuard` of the task.
                permit.forget();
                spawn_handler(conn.clone(), handlers.clone(), frame, future);
            }
            Err(_) => return Some((frame, future)),
        },
        Err(message) => handler_panicked(conn, handlers, &frame, message),
    }
    None
}

/// Waits (reading on) until the write queue is at its high-water mark, then dispatches
/// `frame` (waiting for a handler slot if it must). `Err` when the connection ends meanwhile.
async fn dispatch_after_drain(mut reader: Reader<'_>, frame: Frame) -> Result<(), End> {
    let inner = &*reader.conn.inner;
    tracing::debug!(
        conn = inner.id,
        peer = &*inner.peer,
        queued = inner.queued.load(Ordering::Acquire),
        "write queue over its high-water mark; dispatching waits for the writer"
    );
    wait_reading(&mut reader, inner.drained()).await?;
    match dispatch(reader.conn, reader.handlers, frame) {
        Some(later) => spawn_when_free(reader, later).await,
        None => Ok(()),
    }
}

/// Waits (reading on) for a handler slot, then spawns the future. `Err` when the connection
/// ends meanwhile; the future is then dropped unpolled.
async fn spawn_when_free(mut reader: Reader<'_>, (frame, future): Later) -> Result<(), End> {
    let inner = &*reader.conn.inner;
    if let Ok(permit) = wait_reading(&mut reader, inner.permits.acquire()).await? {
        // Given back by the `PermitGuard` of the task.
        permit.forget();
    }
    spawn_handler(reader.conn.clone(), reader.handlers.clone(), frame, future);
    Ok(())
}

fn handler_panicked(conn: &Conn, handlers: &Handlers, frame: &Frame, message: String) {
    handlers.report(
        conn,
        &ConnError::HandlerPanicked {
            event: frame.name().to_owned(),
            message,
        },
    );
    if frame.ack_id() != 0 {
        conn.inner.send_ack(frame.name(), frame.ack_id(), &[]);
    }
}

fn spawn_handler(conn: Conn, handlers: Handlers, frame: Frame, future: BoxFuture<'static, Bytes>) {
    // Built outside the task so the permit comes back even if the task never runs.
    let guard = PermitGuard(Arc::clone(&conn.inner));
    tokio::spawn(async move {
        // Moved into `run_handler`, all of it is dropped when that ends, before the permit
        // comes back: `close()` waits for every permit, so when it returns no handler task
        // holds the connection, the handler table, the frame or the future.
        run_handler(conn, handlers, frame, future).await;
        drop(guard);
    });
}

async fn run_handler(
    conn: Conn,
    handlers: Handlers,
    frame: Frame,
    future: BoxFuture<'static, Bytes>,
) {
    let inner = &*conn.inner;
    let outcome = tokio::select! {
        biased;
        () = inner.handlers_stopped() => return,
        outcome = AssertUnwindSafe(future).catch_unwind() => outcome,
    };
    match outcome {
        Ok(data) => {
            if frame.ack_id() != 0 {
                inner.send_ack(frame.name(), frame.ack_id(), &data);
            }
        }
        Err(panic) => handler_panicked(&conn, &handlers, &frame, panic_message(panic)),
    }
}

/// Closes the outbox when the writer ends, however it ends (done, failed, aborted).
struct WriterGuard(Arc<Inner>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.close_outbox();
    }
}

async fn run_writer(inner: Arc<Inner>, mut sink: Box<dyn MessageSink>, flush_batch: usize) {
    let _guard = WriterGuard(Arc::clone(&inner));
    if let Err(err) = write_loop(&inner, &mut *sink, flush_batch).await {
        let recorded = match &err {
            // The peer's close got to the transport before it got to our reader. (If we were
            // closing too, the closes crossed: our recorded close stands.)
            TransportError::Closed(info) => inner.end_with(Disconnect::peer_closed(info.clone())),
            other => {
                let why = format!("write failed: {other}");
                // If we were closing, our close never made it out.
                let failed = inner.close_failed(&why);
                inner.end_with(Disconnect::lost(why)) || failed
            }
        };
        if recorded {
            tracing::debug!(conn = inner.id, peer = &*inner.peer, %err, "write failed; ending the connection");
        }
        inner.stop_reader(Stop::Now);
    }
}

/// Takes the whole queue at once, feeds it, and flushes when the queue is found empty or after
/// `flush_batch` frames.
async fn write_loop(
    inner: &Inner,
    sink: &mut dyn MessageSink,
    flush_batch: usize,
) -> Result<(), TransportError> {
    let mut batch = VecDeque::new();
    let mut unflushed = 0usize;
    loop {
        std::mem::swap(&mut inner.outbox().commands, &mut batch);
        if batch.is_empty() {
            if unflushed > 0 {
                sink.flush().await?;
                unflushed = 0;
                // More may have come while flushing.
                continue;
            }
            inner.outbox_ready.notified().await;
            continue;
        }
        while let Some(command) = batch.pop_front() {
            match command {
                Command::Frame(text) => {
                    let len = text.len();
                    sink.feed(text).await?;
                    inner.written(len);
                    unflushed += 1;
                    if unflushed >= flush_batch {
                        sink.flush().await?;
                        unflushed = 0;
                    }
                }
                Command::Control(control) => match *control {
                    Control::Ping(id) => {
                        sink.ping(Bytes::copy_from_slice(&id.to_be_bytes())).await?;
                        sink.flush().await?;
                        unflushed = 0;
                    }
                    Control::Close(info) => {
                        let code = info.code.unwrap_or(CLOSE_NORMAL);
                        return sink.close(code, &info.reason).await;
                    }
                    Control::Finish(info) => {
                        // The peer is gone or going: best effort, errors are expected.
                        if unflushed > 0 {
                            let _ = sink.flush().await;
                        }
                        let code = info.code.unwrap_or(CLOSE_NORMAL);
                        let _ = sink.close(code, &info.reason).await;
                        return Ok(());
                    }
                },
            }
        }
        // Do not keep a burst's worth of capacity on an idle connection.
        if batch.capacity() > 64 {
            batch = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory;

    #[test]
    fn writer_commands_stay_small() {
        assert_eq!(std::mem::size_of::<Command>(), 32);
    }

    /// The per-connection state a server holds 10,000 of: the shared state and the two tasks'
    /// futures (the transport's own state and its boxed futures come on top).
    #[tokio::test]
    async fn per_connection_state_stays_small() {
        let (transport, _peer, _faults) = memory::pair();
        let (inner, stop) = Inner::new(transport.peer.clone(), &ConnConfig::default());
        let writer = run_writer(Arc::clone(&inner), transport.sink, DEFAULT_FLUSH_BATCH);
        let reader = run_reader(
            Conn {
                inner: Arc::clone(&inner),
            },
            transport.stream,
            Handlers::new(),
            stop,
            tokio::spawn(async {}),
        );
        let sizes = [
            ("inner", std::mem::size_of::<Inner>()),
            ("writer future", std::mem::size_of_val(&writer)),
            ("reader future", std::mem::size_of_val(&reader)),
        ];
        println!("{sizes:?}");
        for (what, size) in sizes {
            assert!(size <= 512, "{what} is {size} bytes");
        }
    }

    #[test]
    fn event_names_are_checked() {
        assert!(check_event_name("MODULE:READY").is_ok());
        for bad in ["", "a||b", "__ack_MODULE:READY"] {
            assert!(matches!(
                check_event_name(bad),
                Err(ConnError::InvalidEventName(name)) if name == bad
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_of_the_connection_is_left_after_close() {
        let (a, b, _faults) = memory::pair();
        let probe = Arc::new(());
        let held = Arc::clone(&probe);
        let handlers = Handlers::new().on("E", move |_, _| {
            let _ = &held;
            Reply::default()
        });
        let a = Conn::spawn(a, handlers, ConnConfig::default());
        let b = Conn::spawn(b, Handlers::new(), ConnConfig::default());
        b.emit_with_ack("E", b"x").await.unwrap();
        let weak = Arc::downgrade(&a.inner);
        a.close(CLOSE_NORMAL, "bye").await;
        drop(a);
        assert!(
            weak.upgrade().is_none(),
            "a task of the connection still holds it"
        );
        assert_eq!(
            Arc::strong_count(&probe),
            1,
            "the handlers were not dropped"
        );
        assert!(b.closed().await.by_peer);
    }
}
