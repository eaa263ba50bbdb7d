//! The ETP connection runtime, server side: emit, emit with ack, handlers per event, ping,
//! close, over any [`Transport`] of `cluster-transport`.
//!
//! ```
//! use bytes::Bytes;
//! use cluster_etp::{Conn, ConnConfig, Handlers, Reply};
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
//!
//! # Why a crate of its own
//! `cluster-transport` knows frames and connections, not sessions; this crate is what runs
//! ETP on one of its connections. It is the fake config service's engine
//! (`cluster-testkit`), but it is not the fake service: it is a runtime with its own rules
//! (backpressure, acks, the end of a connection), its own tests (`tests/`) and its own bench
//! (`cargo bench -p cluster-etp --bench etp`), and the testkit's job is the service built on
//! it.
//!
//! The wire rules it shares with the client's sans-IO session (ack ids and their matching,
//! the ping payload, the close timeout, the write high-water mark's meaning) come from
//! [`cluster_proto::wire`], written once for both.
//!
//! # How it runs
//! [`Conn::spawn`] takes a [`Transport`] and runs it with exactly two tasks:
//!
//! - the **reader** receives messages, decodes ETP frames, resolves acks and pongs, and
//!   dispatches events to the [`Handlers`]. The synchronous part of a handler runs inline, in
//!   arrival order; a [`Reply::Later`] future is spawned, at most
//!   [`ConnConfig::max_concurrent_handlers`] at once.
//! - the **writer** drains the queue of encoded frames into the sink. It feeds frames while the
//!   queue has more and flushes when the queue is empty or after [`ConnConfig::flush_batch`]
//!   frames: one flush per burst, not per frame. While it has nothing to do it lends the sink
//!   to the callers: a frame queued on an empty queue is fed by the caller's own task
//!   ([`MessageSink::try_feed`](cluster_transport::MessageSink::try_feed), which never waits), and the
//!   writer is woken only to flush, once that task yields. A request answered by a
//!   synchronous handler, or a burst of emits from one task, thus costs no wake-up of another
//!   thread on a multi-thread runtime; a frame the transport cannot take at once is queued.
//!   Called from outside the runtime's tasks (`block_on`, the body of `#[tokio::main]`, another
//!   thread), where waking the writer would cross threads, the caller also writes the frame
//!   out ([`MessageSink::try_flush`](cluster_transport::MessageSink::try_flush)), except on a
//!   current-thread runtime.
//!
//! # Backpressure
//! `emit*` never blocks: it queues the frame for the writer. The queue is bounded by bytes:
//! - above [`ConnConfig::queued_bytes_high_water`] (1 MiB by default) the reader dispatches no
//!   further event until the writer has drained the queue below it, as a synchronous write
//!   would hold up the Go peer's reader. A peer that sends requests but does not read the
//!   answers is slowed down to its own reading pace. A task that emits many events in a row
//!   awaits [`Conn::writable`] between them to go at the peer's pace too (it waits only while
//!   the queue is over that mark).
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
//! boxed out of the tasks' futures, so an idle connection costs little beyond its transport
//! (`benches/etp.rs`, `memory`, prints the figure).
//!
//! Frames are encoded once, by the caller of `emit*` (or by the reader for acks). A frame the
//! caller feeds itself (idle writer) is encoded into an exactly sized allocation that becomes
//! the [`Bytes`] handed to the sink. A frame queued behind others is encoded into the outbox's
//! one shared buffer, which the writer takes whole with the queue and feeds as slices: on a
//! multi-thread runtime, where the writer runs on another worker than the emitting task, a
//! buffer allocated on one thread and freed on the other per frame was what glibc's malloc
//! serves worst (a lock both threads wait on); now one buffer per burst crosses threads.
//!
//! # Rules (docs/protocol.md §2)
//! - A malformed frame is reported to [`Handlers::on_error`] and skipped; the connection stays.
//!
//! # Log volume
//! What a peer can trigger at will is logged through the connection's [`LogLimiter`]
//! ([`Conn::log_limiter`], settings in [`ConnConfig::log_limit`]): the first
//! [`LogLimit::burst`](cluster_transport::log_limit::LogLimit::burst) warnings of each
//! [`LogLimit::interval`](cluster_transport::log_limit::LogLimit::interval) (default 5 per 10 s), then one
//! summary line with the count of the suppressed ones, and a last summary when the
//! connection ends. Handlers that log on the peer's behalf (an error handler, an
//! unknown-event handler) should use the same limiter.
//! - A frame whose name starts with `__ack_` is an acknowledgement, matched by its ack id only,
//!   and never dispatched. An ack for an unknown id (never sent, timed out, forgotten) is ignored.
//! - Ack ids are a per-connection sequence from 1.
//! - When the connection ends every pending ack and ping fails with [`ConnError::Closed`].
//!
//! # Whose fault an error is
//! A call refused because of the call itself is a [`SendError`] (inside
//! [`ConnError::Send`] where the call also waits for the peer): the connection was already
//! closed, the event name cannot be sent, the data is not UTF-8. Nothing was sent and the
//! connection goes on; fix the call, as trying again does not help. Every other
//! [`ConnError`] is what the peer or the connection did: a malformed frame
//! ([`ConnError::Malformed`]), no ack or pong in time ([`ConnError::AckTimeout`],
//! [`ConnError::PingTimeout`]), a write queue full because the peer does not read
//! ([`ConnError::QueueFull`]), the connection ending while an answer was awaited
//! ([`ConnError::Closed`]), a handler that panicked ([`ConnError::HandlerPanicked`]).
//!
//! # Lifetime
//! A connection lives until one side closes it or the transport breaks; dropping every [`Conn`]
//! handle does **not** close it (the reader keeps one for the handlers). Call [`Conn::close`].
//!
//! # Layout
//! - `lib.rs`: the [`Conn`] handle and its public methods;
//! - `config.rs`: [`ConnConfig`], its `DEFAULT_*` constants, [`CLOSE_QUEUE_OVERFLOW`] and
//!   [`CLOSE_TIMEOUT`];
//! - `error.rs`: [`ConnError`] and [`Disconnect`];
//! - `handlers.rs`: [`Handlers`] (the handler table) and [`Reply`];
//! - `hasher.rs`: the fast hasher of the handler table and of the pending acks;
//! - `inner.rs`: the state shared by the handles and the two tasks;
//! - `writer.rs`: the outbox (the writer's queue, bounded by bytes) and the writer task;
//! - `reader.rs`: the reader task, reading on while it waits;
//! - `dispatch.rs`: dispatching an event, and the tasks of [`Reply::Later`] futures;
//! - `pending.rs`: pending acks ([`AckFuture`]) and pings;
//! - `close.rs`: how the connection ends, and the wind-down after the read loop.
//!
#![forbid(unsafe_code)]

mod close;
mod config;
mod dispatch;
mod error;
mod handlers;
mod hasher;
mod inner;
mod pending;
mod reader;
#[cfg(test)]
#[path = "../../cluster-transport/src/test_waker.rs"]
mod test_waker;
mod writer;

pub use config::{
    CLOSE_QUEUE_OVERFLOW, CLOSE_TIMEOUT, ConnConfig, DEFAULT_FLUSH_BATCH,
    DEFAULT_MAX_CONCURRENT_HANDLERS, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_QUEUED_BYTES_HIGH_WATER,
};
pub use error::{ConnError, Disconnect, SendError};
pub use handlers::{Handlers, Reply};
pub use pending::AckFuture;

use bytes::Bytes;
use cluster_proto::frame::{ACK_PREFIX, SEPARATOR};
use cluster_proto::wire;
use cluster_transport::Transport;
use cluster_transport::log_limit::LogLimiter;
use inner::Inner;
use pending::AckState;
use reader::run_reader;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use writer::{Control, Outgoing, run_writer};

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
        let inner = Inner::new(peer, &config);
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
        tokio::spawn(run_reader(conn.clone(), stream, handlers, writer));
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
    /// The caller's mistakes as [`ConnError::Send`]: [`SendError::Closed`] once the connection
    /// is closing or closed, [`SendError::InvalidEventName`] for a name that cannot be sent,
    /// [`SendError::NotUtf8`] for data that is not UTF-8. The peer's:
    /// [`ConnError::QueueFull`] when the peer does not read (the
    /// connection is then closing).
    pub fn emit(&self, event: &str, data: &[u8]) -> Result<(), ConnError> {
        check_event_name(event)?;
        check_utf8(data)?;
        self.inner.send_frame(Outgoing::Event {
            name: event,
            ack_id: wire::NO_ACK,
            data,
        })
    }

    /// Queues an already encoded frame as it is, e.g. one event fanned out to many connections:
    /// encode it once ([`cluster_proto::frame::encode_to_bytes`]) and give each connection a
    /// clone of the [`Bytes`]. The frame is checked to be UTF-8, not to be a valid ETP frame.
    /// Never blocks; `Ok` means queued, as for [`Conn::emit`].
    ///
    /// # Errors
    /// [`ConnError::Send`] with [`SendError::Closed`] once the connection is closing or
    /// closed, or [`SendError::NotUtf8`] for a frame that is not UTF-8;
    /// [`ConnError::QueueFull`] when the peer does not read.
    pub fn emit_encoded(&self, frame: Bytes) -> Result<(), ConnError> {
        check_utf8(&frame)?;
        self.inner.send_frame(Outgoing::Encoded(frame))
    }

    /// Bytes of the frames queued for this connection and not yet handed to the transport
    /// (what [`ConnConfig::queued_bytes_high_water`] and [`ConnConfig::max_queued_bytes`]
    /// bound). The writer counts frames out in one go at each flush, at the end of what it
    /// took from the queue, and before it waits for the transport, so a frame the transport
    /// took may still count here until then. For metrics and tests.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Resolves once the write queue holds at most [`ConnConfig::queued_bytes_high_water`]
    /// bytes: at once while it does (an atomic load, no await point), and once the connection
    /// has ended (then `emit` says why). A task that emits a stream of events awaits it
    /// between emits, so that it goes at the pace the peer reads instead of filling the queue
    /// up to [`ConnConfig::max_queued_bytes`] (which closes the connection). A peer that
    /// stops reading without closing leaves it waiting: bound the wait
    /// (`tokio::time::timeout`) where that matters, and close on the timeout (with
    /// [`CLOSE_QUEUE_OVERFLOW`], say) or check the peer with [`Conn::ping`].
    ///
    /// ```no_run
    /// # async fn stream(conn: cluster_etp::Conn, rows: Vec<Vec<u8>>) -> Result<(), cluster_etp::ConnError> {
    /// for row in &rows {
    ///     conn.writable().await;
    ///     conn.emit("ROW", row)?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn writable(&self) {
        if self.inner.over_high_water() {
            self.inner.drained().await;
        }
    }

    /// Queues `event` with `data` and the next ack id (a per-connection sequence from 1), and
    /// resolves to the data of the peer's ack.
    ///
    /// The frame is queued when this is called, not when the future is first polled. Dropping
    /// the future forgets the ack id (a late ack is then ignored). There is no timeout here:
    /// the caller owns deadlines (see [`Conn::emit_with_ack_timeout`]).
    ///
    /// The future resolves to [`ConnError::Closed`] if the connection ends before the ack
    /// arrives, and at once to the errors of [`Conn::emit`] if the frame cannot be queued
    /// ([`ConnError::Send`]: the connection was already closed, a bad name, data that is not
    /// UTF-8; [`ConnError::QueueFull`]).
    pub fn emit_with_ack(&self, event: &str, data: &[u8]) -> AckFuture {
        if let Err(err) = check_event_name(event).and_then(|()| check_utf8(data)) {
            return AckFuture::ready(Err(err.into()));
        }
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return AckFuture::ready(Err(SendError::Closed.into()));
        }
        let ack_id = inner.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = inner.state();
            if state.ended {
                return AckFuture::ready(Err(SendError::Closed.into()));
            }
            state.acks.insert(ack_id, tx);
        }
        let sent = inner.send_frame(Outgoing::Event {
            name: event,
            ack_id,
            data,
        });
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
    /// [`ConnError::PingTimeout`] when no pong came within `timeout`;
    /// [`ConnError::Send`] with [`SendError::Closed`] if the connection was already closing
    /// or closed; [`ConnError::Closed`] if
    /// the connection is closed or ends meanwhile.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, ConnError> {
        let inner = &self.inner;
        let id = inner.next_ping.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = inner.state();
            if state.ended {
                return Err(SendError::Closed.into());
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

/// Whether `bytes` is UTF-8 (simdutf8: several times faster than `std::str::from_utf8` on
/// ETP's mostly ASCII frames).
fn is_utf8(bytes: &[u8]) -> bool {
    simdutf8::basic::from_utf8(bytes).is_ok()
}

fn check_utf8(data: &[u8]) -> Result<(), SendError> {
    if crate::is_utf8(data) {
        return Ok(());
    }
    match std::str::from_utf8(data) {
        Ok(_) => Ok(()),
        Err(err) => Err(SendError::NotUtf8 {
            valid_up_to: err.valid_up_to(),
        }),
    }
}

fn check_event_name(event: &str) -> Result<(), SendError> {
    let bytes = event.as_bytes();
    if bytes.is_empty() || bytes.windows(2).any(|w| w == SEPARATOR) || event.starts_with(ACK_PREFIX)
    {
        return Err(SendError::InvalidEventName(event.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_transport::CLOSE_NORMAL;
    use cluster_transport::memory;

    #[test]
    fn event_names_are_checked() {
        assert!(check_event_name("MODULE:READY").is_ok());
        for bad in ["", "a||b", "__ack_MODULE:READY"] {
            assert!(matches!(
                check_event_name(bad),
                Err(SendError::InvalidEventName(name)) if name == bad
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
