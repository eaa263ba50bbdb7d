//! Dispatching one event: the handler's synchronous part inline, its ack, and its
//! [`Reply::Later`] future as a task holding one of the handler slots.

use super::handlers::panic_message;
use super::inner::Inner;
use super::reader::{End, Reader, wait_reading};
use super::{Conn, ConnError, Handlers, Reply};
use bytes::Bytes;
use cluster_proto::frame::Frame;
use cluster_proto::wire;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Returns a handler permit when a handler task ends (done, cancelled or panicked). The task
/// drops it after everything else it held, so once the reader has every permit back no
/// handler holds anything any more.
pub(super) struct PermitGuard(Arc<Inner>);

impl Drop for PermitGuard {
    fn drop(&mut self) {
        self.0.permits.add_permits(1);
    }
}

/// A [`Reply::Later`] future waiting for a handler slot, with its frame.
pub(super) type Later = (Frame, BoxFuture<'static, Bytes>);

/// Dispatches one event now: runs the handler's synchronous part, queues its ack, spawns its
/// [`Reply::Later`] future if a handler slot is free, or returns it to wait for one.
pub(super) fn dispatch(conn: &Conn, handlers: &Handlers, frame: Frame) -> Option<Later> {
    let inner = &*conn.inner;
    match handlers.call(conn, &frame) {
        Ok(Reply::Ack(data)) => {
            if wire::wants_ack(frame.ack_id()) {
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
pub(super) async fn dispatch_after_drain(mut reader: Reader<'_>, frame: Frame) -> Result<(), End> {
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
pub(super) async fn spawn_when_free(
    mut reader: Reader<'_>,
    (frame, future): Later,
) -> Result<(), End> {
    let inner = &*reader.conn.inner;
    if let Ok(permit) = wait_reading(&mut reader, inner.permits.acquire()).await? {
        // Given back by the `PermitGuard` of the task.
        permit.forget();
    }
    spawn_handler(reader.conn.clone(), reader.handlers.clone(), frame, future);
    Ok(())
}

pub(super) fn handler_panicked(conn: &Conn, handlers: &Handlers, frame: &Frame, message: String) {
    handlers.report(
        conn,
        &ConnError::HandlerPanicked {
            event: frame.name().to_owned(),
            message,
        },
    );
    if wire::wants_ack(frame.ack_id()) {
        conn.inner.send_ack(frame.name(), frame.ack_id(), &[]);
    }
}

pub(super) fn spawn_handler(
    conn: Conn,
    handlers: Handlers,
    frame: Frame,
    future: BoxFuture<'static, Bytes>,
) {
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

pub(super) async fn run_handler(
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
            if wire::wants_ack(frame.ack_id()) {
                inner.send_ack(frame.name(), frame.ack_id(), &data);
            }
        }
        Err(panic) => handler_panicked(&conn, &handlers, &frame, panic_message(panic)),
    }
}
