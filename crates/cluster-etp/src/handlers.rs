//! The handlers of a connection's events ([`Handlers`]) and what they answer ([`Reply`]).

use super::hasher::FastState;
use super::{Conn, ConnError};
use bytes::Bytes;
use cluster_proto::frame::Frame;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// What a handler answers to an event.
pub enum Reply {
    /// Done: if the peer asked for an ack, it carries these bytes (they are ignored otherwise).
    /// `Reply::Ack(Bytes::new())` is the empty answer.
    Ack(Bytes),
    /// More to do: the future is spawned and runs concurrently with the reader and other
    /// handlers (at most
    /// [`ConnConfig::max_concurrent_handlers`](super::ConnConfig::max_concurrent_handlers) at
    /// once); the bytes it yields are the ack data, sent if the peer asked for an ack. It is
    /// cancelled when the connection ends.
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

pub(super) type EventFn = Arc<dyn Fn(&Conn, Bytes) -> Reply + Send + Sync>;
pub(super) type UnknownFn = Arc<dyn Fn(&Conn, &str, Bytes) -> Reply + Send + Sync>;
pub(super) type ErrorFn = Arc<dyn Fn(&Conn, &ConnError) + Send + Sync>;

#[derive(Clone, Default)]
pub(super) struct HandlerTable {
    pub(super) events: HashMap<Box<str>, EventFn, FastState>,
    pub(super) unknown: Option<UnknownFn>,
    pub(super) error: Option<ErrorFn>,
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
    /// [`LogLimiter`](cluster_transport::log_limit::LogLimiter). It runs inline in the reader, once per error:
    /// a handler that logs should ask [`Conn::log_limiter`] first.
    #[must_use]
    pub fn on_error<F>(mut self, f: F) -> Self
    where
        F: Fn(&Conn, &ConnError) + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.0).error = Some(Arc::new(f));
        self
    }

    /// Runs the synchronous part of the handler of `frame`, catching a panic.
    pub(super) fn call(&self, conn: &Conn, frame: &Frame) -> Result<Reply, String> {
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
    pub(super) fn report(&self, conn: &Conn, error: &ConnError) {
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

pub(super) fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
