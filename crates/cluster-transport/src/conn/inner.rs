//! The state the handles and the tasks of one connection share ([`Inner`]), and how it is
//! made. What each concern does with it lives with that concern: queueing in `writer`, acks
//! and pings in `pending`, the end in `close`.

use super::ConnConfig;
use super::Disconnect;
use super::hasher::IdMap;
use super::writer::Outbox;
use crate::log_limit::LogLimiter;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::{Notify, Semaphore, oneshot};

/// What the reader is told to do when the connection ends on our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// We close: stop dispatching, read on for the peer's close reply.
    Drain,
    /// The writer failed: the transport is broken, stop at once.
    Now,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) acks: IdMap<oneshot::Sender<Bytes>>,
    pub(super) pings: Vec<(u64, oneshot::Sender<()>)>,
    /// The first known reason the connection ends; published in `Inner::done` at the very end.
    pub(super) cause: Option<Disconnect>,
    pub(super) stop_reader: Option<oneshot::Sender<Stop>>,
    pub(super) close_started: bool,
    /// Pending acks and pings were released; no new ones are registered.
    pub(super) ended: bool,
}
pub(super) struct Inner {
    pub(super) id: u64,
    pub(super) peer: Box<str>,
    /// The writer's queue, and the writer's waker while it waits (see [`Outbox`]).
    pub(super) outbox: Mutex<Outbox>,
    pub(super) next_ack: AtomicU64,
    pub(super) next_ping: AtomicU64,
    /// No more frames are accepted (closing or closed). A fast check; the authority is
    /// `Outbox::accepting`.
    pub(super) closed: AtomicBool,
    /// The reader's stop was sent (set just before): until then the reader reads on without
    /// looking at its stop channel, which lives in an allocation of its own (one cache miss
    /// less per message on a client of many connections).
    pub(super) stop_sent: AtomicBool,
    /// Bytes of the frames queued and not yet handed to the sink: added when a frame is
    /// queued, subtracted by the writer once the sink took it (in one go per flush, batch or
    /// wait: see `writer::Taken`).
    pub(super) queued: AtomicUsize,
    pub(super) high_water: usize,
    pub(super) max_queued: usize,
    /// Wakes whoever waits for `queued` to be down to `high_water` (the reader, and
    /// [`Conn::writable`](super::Conn::writable)) when the writer brings it there, and when
    /// the writer ends (`close_outbox` sets it to 0).
    pub(super) drained: Notify,
    /// Running handler futures must stop.
    pub(super) handlers_stopping: AtomicBool,
    pub(super) max_handlers: u32,
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
    pub(super) fn new(peer: String, config: &ConnConfig) -> (Arc<Self>, oneshot::Receiver<Stop>) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let max_handlers = u32::try_from(config.max_concurrent_handlers)
            .unwrap_or(u32::MAX)
            .clamp(1, 1 << 28);
        let inner = Arc::new(Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            peer: peer.into_boxed_str(),
            outbox: Mutex::new(Outbox::new()),
            next_ack: AtomicU64::new(1),
            next_ping: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            stop_sent: AtomicBool::new(false),
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
    use crate::conn::reader::run_reader;
    use crate::conn::writer::run_writer;
    use crate::conn::{Conn, DEFAULT_FLUSH_BATCH, Handlers};
    use crate::memory;

    /// The per-connection state a server holds 10,000 of: the shared state and the two tasks'
    /// futures (the transport's own state and its boxed futures come on top). The bound was
    /// 512 bytes until the outbox's buffer of frames encoded in place (32 bytes in each of
    /// `Inner` and the writer's future) took the flood on two workers from 0.6 to 1 M events/s.
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
            assert!(size <= 576, "{what} is {size} bytes");
        }
    }
}
