//! The state the handles and the tasks of one connection share ([`Inner`]), and how it is
//! made. What each concern does with it lives with that concern: queueing in `writer`, acks
//! and pings in `pending`, the end in `close`.

use super::ConnConfig;
use super::Disconnect;
use super::hasher::IdMap;
use super::writer::Outbox;
use bytes::Bytes;
use cluster_transport::log_limit::LogLimiter;
use futures_util::task::AtomicWaker;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::{Notify, Semaphore, oneshot};

/// What the reader is told to do when the connection ends on our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Stop {
    /// We close: stop dispatching, read on for the peer's close reply.
    Drain = 1,
    /// The writer failed: the transport is broken, stop at once.
    Now = 2,
}

impl Stop {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Drain),
            2 => Some(Self::Now),
            _ => None,
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) acks: IdMap<oneshot::Sender<Bytes>>,
    pub(super) pings: Vec<(u64, oneshot::Sender<()>)>,
    /// The first known reason the connection ends; published in `Inner::done` at the very end.
    pub(super) cause: Option<Disconnect>,
    pub(super) close_started: bool,
    /// Pending acks and pings were released; no new ones are registered.
    pub(super) ended: bool,
}

/// The state a connection's handles and tasks share.
///
/// The fields are in the order a send and a read touch them (`repr(C)` keeps it): a server
/// of 10,000 connections finds each one's state out of the cache, so the flags, the queue's
/// count and marks, and the outbox come first, in as few cache lines as they fit, and what
/// only the handshake, acks and the end use comes after.
#[repr(C)]
pub(super) struct Inner {
    /// No more frames are accepted (closing or closed). A fast check; the authority is
    /// `Outbox::accepting`.
    pub(super) closed: AtomicBool,
    /// What the reader is told to do (see [`Stop`]; 0 until then). Set once: the first stop
    /// wins. The reader looks at it before each message.
    pub(super) stop: AtomicU8,
    /// Running handler futures must stop.
    pub(super) handlers_stopping: AtomicBool,
    pub(super) max_handlers: u32,
    /// The reader's waker while it waits for a message, woken by a stop. Here rather than in
    /// a channel of its own: the reader's wait touches no other allocation (one cache miss
    /// less per message on a client of many connections).
    pub(super) reader: AtomicWaker,
    /// Bytes of the frames queued and not yet handed to the sink: added when a frame is
    /// queued, subtracted by the writer once the sink took it (in one go per flush, batch or
    /// wait: see `writer::Taken`).
    pub(super) queued: AtomicUsize,
    pub(super) high_water: usize,
    pub(super) max_queued: usize,
    /// The writer's queue, and the writer's waker while it waits (see [`Outbox`]).
    pub(super) outbox: Mutex<Outbox>,
    pub(super) id: u64,
    pub(super) peer: Box<str>,
    pub(super) next_ack: AtomicU64,
    pub(super) next_ping: AtomicU64,
    /// Wakes whoever waits for `queued` to be down to `high_water` (the reader, and
    /// [`Conn::writable`](super::Conn::writable)) when the writer brings it there, and when
    /// the writer ends (`close_outbox` sets it to 0).
    pub(super) drained: Notify,
    pub(super) permits: Semaphore,
    pub(super) state: Mutex<State>,
    pub(super) done: OnceLock<Disconnect>,
    /// Wakes `closed()` waiters (when `done` is set) and handler futures (when
    /// `handlers_stopping` is set). Waiters re-check their condition.
    pub(super) events: Notify,
    /// Bounds the warnings the peer can cause. Boxed: most connections never warn, and the
    /// shared state a server holds thousands of stays small.
    pub(super) warnings: Box<LogLimiter>,
}

pub(super) static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl Inner {
    pub(super) fn new(peer: String, config: &ConnConfig) -> Arc<Self> {
        let max_handlers = u32::try_from(config.max_concurrent_handlers)
            .unwrap_or(u32::MAX)
            .clamp(1, 1 << 28);
        Arc::new(Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            peer: peer.into_boxed_str(),
            outbox: Mutex::new(Outbox::new()),
            next_ack: AtomicU64::new(cluster_proto::wire::FIRST_ACK_ID),
            next_ping: AtomicU64::new(cluster_proto::wire::FIRST_PING_ID),
            closed: AtomicBool::new(false),
            stop: AtomicU8::new(0),
            reader: AtomicWaker::new(),
            queued: AtomicUsize::new(0),
            high_water: config.queued_bytes_high_water,
            max_queued: config.max_queued_bytes,
            drained: Notify::new(),
            handlers_stopping: AtomicBool::new(false),
            max_handlers,
            permits: Semaphore::new(max_handlers as usize),
            state: Mutex::new(State::default()),
            done: OnceLock::new(),
            events: Notify::new(),
            warnings: Box::new(LogLimiter::new(config.log_limit)),
        })
    }

    /// The reader's stop, if one was sent.
    pub(super) fn stop_sent(&self) -> Option<Stop> {
        Stop::from_u8(self.stop.load(Ordering::Acquire))
    }

    /// Resolves with the reader's stop once one is sent. Only the reader awaits it (one
    /// waker is kept).
    pub(super) fn stopped(&self) -> impl Future<Output = Stop> + '_ {
        std::future::poll_fn(move |cx| self.poll_stop(cx))
    }

    /// [`Inner::stopped`] as a poll.
    pub(super) fn poll_stop(&self, cx: &mut Context<'_>) -> Poll<Stop> {
        if let Some(stop) = self.stop_sent() {
            return Poll::Ready(stop);
        }
        self.reader.register(cx.waker());
        // A stop sent between the look and the registration woke no one: look again.
        match self.stop_sent() {
            Some(stop) => Poll::Ready(stop),
            None => Poll::Pending,
        }
    }

    /// Tells the reader to stop, unless it was told already (the first stop wins).
    pub(super) fn stop_reader(&self, stop: Stop) {
        if self.claim_stop(stop) {
            self.reader.wake();
        }
    }

    /// Sets the reader's stop without waking it, unless one was set already (the first
    /// wins); the caller wakes it ([`Inner::wake_reader`]) once ready.
    pub(super) fn claim_stop(&self, stop: Stop) -> bool {
        self.stop
            .compare_exchange(0, stop as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Wakes the reader if it waits for its stop.
    pub(super) fn wake_reader(&self) {
        self.reader.wake();
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::run_reader;
    use crate::test_waker::Counting;
    use crate::writer::run_writer;
    use crate::{Conn, DEFAULT_FLUSH_BATCH, Handlers};
    use cluster_transport::memory;
    use std::pin::pin;
    use std::task::Context;

    /// The reader's wait for a stop: pending until one is sent, woken once by it, and the
    /// first stop stands (a later one neither replaces it nor wakes the reader again).
    #[test]
    fn the_reader_is_woken_by_the_first_stop_and_keeps_it() {
        let inner = Inner::new("peer".to_owned(), &ConnConfig::default());
        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(inner.stop_sent(), None);
        {
            let mut stopped = pin!(inner.stopped());
            assert!(stopped.as_mut().poll(&mut cx).is_pending());
            inner.stop_reader(Stop::Drain);
            assert_eq!(counting.count(), 1, "the stop wakes the waiting reader");
            assert_eq!(stopped.poll(&mut cx), Poll::Ready(Stop::Drain));
        }
        inner.stop_reader(Stop::Now);
        assert_eq!(counting.count(), 1, "a second stop wakes no one");
        assert_eq!(inner.stop_sent(), Some(Stop::Drain));
        assert_eq!(
            pin!(inner.stopped()).poll(&mut cx),
            Poll::Ready(Stop::Drain)
        );
    }

    /// Once the connection has ended, the shared state (which a handle may keep for long)
    /// holds no waker of the ended reader task, and so not its memory.
    #[tokio::test]
    async fn an_ended_reader_leaves_no_waker_behind() {
        let (transport, peer, _faults) = memory::pair();
        let conn = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
        drop(peer);
        conn.closed().await;
        assert!(conn.inner.reader.take().is_none());
    }

    /// The per-connection state a server holds 10,000 of: the shared state and the two tasks'
    /// futures (the transport's own state and its boxed futures come on top). The bound was
    /// 512 bytes until the outbox's buffer of frames encoded in place (32 bytes in each of
    /// `Inner` and the writer's future) took the flood on two workers from 0.6 to 1 M events/s.
    #[tokio::test]
    async fn per_connection_state_stays_small() {
        let (transport, _peer, _faults) = memory::pair();
        let inner = Inner::new(transport.peer.clone(), &ConnConfig::default());
        let writer = run_writer(Arc::clone(&inner), transport.sink, DEFAULT_FLUSH_BATCH);
        let reader = run_reader(
            Conn {
                inner: Arc::clone(&inner),
            },
            transport.stream,
            Handlers::new(),
            tokio::spawn(async {}),
        );
        let sizes = [
            ("inner", std::mem::size_of::<Inner>()),
            ("writer future", std::mem::size_of_val(&writer)),
            ("reader future", std::mem::size_of_val(&reader)),
        ];
        println!("{sizes:?}");
        for (what, size) in sizes {
            assert!(size <= 576, "{what} is {size} bytes");
        }
    }
}
