//! What waits for the peer: acks ([`AckFuture`], the ack sent for an event) and pings.

use super::ConnError;
use super::inner::Inner;
use super::writer::Outgoing;
use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

impl Inner {
    /// Queues the ack of `event`/`ack_id` with `data`; data that is not UTF-8 cannot travel
    /// in a text message, so it is logged and the ack goes out empty.
    pub(super) fn send_ack(&self, event: &str, ack_id: u64, data: &[u8]) {
        let data = if crate::is_utf8(data) {
            data
        } else {
            if self.warnings.admit(self.id, &self.peer) {
                let valid_up_to =
                    std::str::from_utf8(data).map_or_else(|e| e.valid_up_to(), str::len);
                tracing::warn!(
                    conn = self.id,
                    peer = &*self.peer,
                    event,
                    ack_id,
                    valid_up_to,
                    "handler reply is not UTF-8; acking with empty data"
                );
            }
            &[]
        };
        let ack = Outgoing::Ack {
            event,
            ack_id,
            data,
        };
        if let Err(err) = self.send_frame(ack) {
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

    pub(super) fn on_ack(&self, ack_id: u64, data: Bytes) {
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

    pub(super) fn forget_ack(&self, ack_id: u64) {
        let waiter = self.state().acks.remove(&ack_id);
        drop(waiter);
    }

    pub(super) fn on_pong(&self, payload: &[u8]) {
        let Some(id) = cluster_proto::wire::pong_id(payload) else {
            tracing::debug!(
                conn = self.id,
                peer = &*self.peer,
                "pong with a foreign payload ignored"
            );
            return;
        };
        let waiter = {
            let mut state = self.state();
            let at = state.pings.iter().position(|(p, _)| *p == id);
            at.map(|at| state.pings.swap_remove(at).1)
        };
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    pub(super) fn forget_ping(&self, id: u64) {
        let waiter = {
            let mut state = self.state();
            let at = state.pings.iter().position(|(p, _)| *p == id);
            at.map(|at| state.pings.swap_remove(at))
        };
        drop(waiter);
    }
}

/// The future of [`Conn::emit_with_ack`](super::Conn::emit_with_ack): the ack's data, or why it
/// will not come.
///
/// Dropping it before it resolves forgets the ack id.
#[must_use = "dropping an AckFuture forgets its ack"]
pub struct AckFuture {
    pub(super) state: AckState,
}

pub(super) enum AckState {
    Ready(Option<ConnError>),
    Waiting {
        rx: oneshot::Receiver<Bytes>,
        inner: Weak<Inner>,
        ack_id: u64,
    },
    Done,
}

impl AckFuture {
    pub(super) fn ready(result: Result<Bytes, ConnError>) -> Self {
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
