//! What goes wrong on a connection: the caller's mistakes ([`SendError`]) apart from what the
//! peer or the connection did ([`ConnError`]); and why a connection ended ([`Disconnect`]).

use cluster_proto::frame::DecodeError;
use cluster_transport::{CloseInfo, TransportError};
use std::fmt;
use std::time::Duration;

/// A frame the caller asked to send was refused because of the call: nothing was sent, and
/// the connection goes on as it was. Fix the call; trying again does not help. (The rule is in
/// the [module docs](super#whose-fault-an-error-is).)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection was already closing or closed when the call was made
    /// ([`Conn::is_closed`](super::Conn::is_closed) tells in advance).
    #[error("connection closed")]
    Closed,
    /// An event name that cannot be sent: empty, containing `||`, or starting with `__ack_`
    /// (the peer would take it for an acknowledgement).
    #[error("invalid event name {0:?}")]
    InvalidEventName(String),
    /// Data (or an encoded frame) that is not UTF-8: ETP frames travel as WebSocket text
    /// messages, which must be.
    #[error("data is not valid UTF-8 (valid up to byte {valid_up_to}); ETP frames are text")]
    NotUtf8 {
        /// The length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
}

/// What went wrong on a connection: the peer's doing (a malformed frame, no ack in time, a
/// peer that does not read), the connection's end, a handler's panic; or, as
/// [`ConnError::Send`], the caller's mistake in a call. (The rule is in the
/// [module docs](super#whose-fault-an-error-is).)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The call was refused at once, because of the call itself (`emit*`, `ping` on a
    /// connection already closed, a bad event name, data that is not UTF-8).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The connection ended (either side, or the transport broke) before the answer came:
    /// pending acks and pings are released with this error.
    #[error("connection closed")]
    Closed,
    /// No ack arrived within the given time
    /// ([`Conn::emit_with_ack_timeout`](super::Conn::emit_with_ack_timeout)).
    #[error("no ack within {0:?}")]
    AckTimeout(Duration),
    /// No pong arrived within the given time ([`Conn::ping`](super::Conn::ping)).
    #[error("no pong within {0:?}")]
    PingTimeout(Duration),
    /// The peer sent a message that is not an ETP frame. It was skipped; the connection stays.
    #[error("malformed frame from the peer: {0}")]
    Malformed(#[from] DecodeError),
    /// The transport failed. (A broken transport ends the connection, and
    /// [`Conn::closed`](super::Conn::closed) says why; this variant is for callers that wrap
    /// transport errors in `ConnError`.)
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The write queue is full: the frame would take it over
    /// [`ConnConfig::max_queued_bytes`](super::ConnConfig::max_queued_bytes) because the peer does
    /// not read. The frame was not queued, and the connection is being closed with
    /// [`CLOSE_QUEUE_OVERFLOW`](super::CLOSE_QUEUE_OVERFLOW).
    #[error("write queue full: {queued} bytes queued, limit {limit}; the peer does not read")]
    QueueFull {
        /// The bytes queued when the frame was refused.
        queued: usize,
        /// [`ConnConfig::max_queued_bytes`](super::ConnConfig::max_queued_bytes).
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

/// Why a connection ended, as [`Conn::closed`](super::Conn::closed) reports it.
///
/// When we closed ([`Conn::close`](super::Conn::close)) but our close frame could not be written
/// (the transport broke, or the peer did not read it within
/// [`CLOSE_TIMEOUT`](super::CLOSE_TIMEOUT)), the end is reported as `by_peer: false` (we ended it),
/// `normal: false` and `close: None` (there was no close handshake), with the failure in `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Whether the peer ended it (its close, or the transport breaking) rather than we did
    /// ([`Conn::close`](super::Conn::close)).
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
    pub(super) fn local(info: CloseInfo) -> Self {
        Self {
            by_peer: false,
            normal: info.is_normal(),
            reason: format!("closed by us ({info})"),
            close: Some(info),
        }
    }

    pub(super) fn peer_closed(info: CloseInfo) -> Self {
        Self {
            by_peer: true,
            normal: info.is_normal(),
            reason: format!("closed by the peer ({info})"),
            close: Some(info),
        }
    }

    pub(super) fn lost(reason: String) -> Self {
        Self {
            by_peer: true,
            normal: false,
            close: None,
            reason,
        }
    }

    /// Our close `info` could not be written: `why`.
    pub(super) fn close_failed(info: &CloseInfo, why: &str) -> Self {
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
