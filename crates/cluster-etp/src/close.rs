//! How a connection ends: our close, the peer's, a broken transport. The shared state records
//! why (the first reason wins), the handlers are stopped, and once the read loop is over
//! [`wind_down`] lets the writer finish and, for our own close, reads on to the peer's reply.

use super::inner::{Inner, Stop};
use super::reader::End;
use super::writer::Control;
use super::{CLOSE_TIMEOUT, Disconnect};
use cluster_proto::frame::Frame;
use cluster_proto::wire;
use cluster_transport::{CloseInfo, Incoming, MessageStream, TransportError};
use std::sync::atomic::Ordering;
use tokio::task::JoinHandle;
use tokio::time::Instant;

impl Inner {
    /// Records why the connection ends (the first reason wins), refuses new frames and releases
    /// pending acks and pings with [`ConnError::Closed`](super::ConnError::Closed). Returns whether
    /// this reason won.
    pub(super) fn end_with(&self, cause: Disconnect) -> bool {
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

    /// Starts our close: refuses new frames, queues the close after what is queued, tells the
    /// reader to stop dispatching. Pending acks stay pending until the end, in case the peer
    /// answers them before its close reply.
    pub(super) fn start_close(&self, code: u16, reason: &str) {
        let info = CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        };
        {
            let mut state = self.state();
            if state.close_started || state.cause.is_some() {
                return;
            }
            state.close_started = true;
            state.cause = Some(Disconnect::local(info.clone()));
            // The drain is claimed here, under the lock that made this close the first end:
            // a writer failing from now on (its `Stop::Now`) does not replace it.
            self.claim_stop(Stop::Drain);
        }
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
        // Woken once the close is queued, so that it drains behind it.
        self.wake_reader();
    }

    /// Our close could not be written (`why`): replaces the normal close recorded by
    /// `start_close`, so that `closed()` does not claim a close handshake that did not happen.
    /// Returns whether it did (i.e. we were closing).
    pub(super) fn close_failed(&self, why: &str) -> bool {
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
    pub(super) async fn handlers_stopped(&self) {
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
    pub(super) async fn stop_handlers(&self) {
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
    pub(super) fn final_cause(&self) -> Disconnect {
        self.end_with(Disconnect::lost("the connection ended".to_owned()));
        self.state()
            .cause
            .clone()
            .unwrap_or_else(|| Disconnect::lost("the connection ended".to_owned()))
    }

    /// Logs the end of the connection, once everything of it has stopped.
    pub(super) fn log_end(&self) {
        self.warnings.flush(self.id, &self.peer);
        let cause = self.final_cause();
        if cause.normal {
            tracing::info!(conn = self.id, peer = &*self.peer, by_peer = cause.by_peer, reason = %cause.reason, "ETP connection ended");
        } else {
            tracing::warn!(conn = self.id, peer = &*self.peer, by_peer = cause.by_peer, reason = %cause.reason, "ETP connection ended abnormally");
        }
    }

    /// Publishes the end: called once, when the reader (the last task) is done.
    pub(super) fn finish(&self) {
        let cause = self.final_cause();
        // The ended reader's waker, which would keep its task's memory for as long as a
        // handle lives.
        drop(self.reader.take());
        let _ = self.done.set(cause);
        self.events.notify_waiters();
    }
}

/// Ends the connection once the read loop is over: records why, stops the handlers, lets the
/// writer finish (or not), and for our own close reads on until the peer's close reply.
pub(super) async fn wind_down(
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
pub(super) async fn drain(inner: &Inner, stream: &mut dyn MessageStream, deadline: Instant) {
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
                    && let Some(id) = wire::acked_id(&frame)
                {
                    inner.on_ack(id, frame.into_data());
                }
            }
            Ok(Ok(Incoming::Pong(payload))) => inner.on_pong(&payload),
            // `Incoming` is non-exhaustive: a kind of message this runtime does not know.
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::debug!(conn = inner.id, peer = &*inner.peer, %err, "stream ended while closing");
                return;
            }
        }
    }
}

pub(super) async fn wait_writer(inner: &Inner, writer: &mut JoinHandle<()>, deadline: Instant) {
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
