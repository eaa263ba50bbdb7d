//! TCP plumbing shared by the socket transports (TCP and WebSocket): dialing a host, and the
//! accept loop that runs each client's opening handshake in a task of its own.

use crate::{Accepted, Endpoint, TransportError};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Opens a TCP connection to `endpoint`'s host and port, with Nagle's algorithm off. Returns it
/// with the peer's address as text (the endpoint's `host:port` if the socket cannot tell).
///
/// # Errors
/// [`TransportError::Connect`] when the connection cannot be opened.
pub(crate) async fn dial_tcp(endpoint: &Endpoint) -> Result<(TcpStream, String), TransportError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| TransportError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| endpoint.authority(), |a| a.to_string());
    Ok((tcp, peer))
}

/// How long an accept loop pauses after the listener failed to accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// What an accept loop does with one `TcpListener::accept` result: the stream, with Nagle's
/// algorithm off; or, after logging the error and pausing [`ACCEPT_RETRY`] (out of file
/// descriptors and the like: give the system a moment), `None`, to accept again.
async fn accepted_tcp(
    accepted: io::Result<(TcpStream, SocketAddr)>,
    transport: &str,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok((tcp, peer)) => {
            let _ = tcp.set_nodelay(true);
            Some((tcp, peer))
        }
        Err(err) => {
            tracing::warn!(error = %err, "{transport} listener failed to accept");
            tokio::time::sleep(ACCEPT_RETRY).await;
            None
        }
    }
}

/// Default cap on accepted sockets whose opening handshake (TLS, upgrade, hello) is in
/// progress: 1,024. Past it, new sockets are closed at once.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1024;
/// At most one "too many pending handshakes" warning per this interval (1 s); the others are
/// counted into the next one.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How many accepted sockets have their opening handshake in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingHandshakes {
    /// In progress now.
    pub now: usize,
    /// The most there have been at once since the listener started.
    pub peak: usize,
    /// Sockets closed at once because `now` was at the cap, since the listener started.
    pub refused: u64,
}

/// The count of handshakes in progress, capped, published on a watch channel.
#[derive(Debug)]
pub(crate) struct Pending {
    cap: usize,
    tx: watch::Sender<PendingHandshakes>,
}

impl Pending {
    /// A count capped at `cap` (at least 1).
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            tx: watch::Sender::new(PendingHandshakes::default()),
        })
    }

    /// Watches the count.
    pub(crate) fn subscribe(&self) -> watch::Receiver<PendingHandshakes> {
        self.tx.subscribe()
    }

    /// Counts one more handshake unless the cap is reached (then counts a refusal).
    fn enter(self: &Arc<Self>) -> Option<PendingGuard> {
        let mut entered = false;
        self.tx.send_modify(|count| {
            if count.now < self.cap {
                count.now += 1;
                count.peak = count.peak.max(count.now);
                entered = true;
            } else {
                count.refused += 1;
            }
        });
        entered.then(|| PendingGuard(Arc::clone(self)))
    }
}

/// One handshake in progress; dropping it (done, failed, or aborted) counts it out.
struct PendingGuard(Arc<Pending>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.tx.send_modify(|count| count.now -= 1);
    }
}

/// Rate-limits the refusal warning to one per [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct RefusalLog {
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, transport: &str, cap: usize) {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                refused = self.unlogged,
                cap,
                "{transport} listener has {cap} handshakes in progress: new sockets are closed at once"
            );
            self.last = Some(now);
            self.unlogged = 0;
        }
    }
}

/// Accepts TCP connections on `listener` until `tx` is closed (the acceptor was dropped), and
/// runs `handshake` for each in a task of its own, so a slow or silent client holds up no one.
/// A handshake that yields an [`Accepted`] hands it to `tx`; one that yields `None` refused its
/// client (and logged why). The handshake tasks belong to the loop (a `JoinSet`): when it ends
/// they are aborted with it, instead of finishing a handshake nobody will take.
///
/// At most `pending`'s cap of handshakes run at once: a socket accepted at the cap is closed
/// at once (and counted, with a warning at most once per second), so that a flood of idle or
/// slow sockets cannot take memory and tasks without bound while connected peers go on.
pub(crate) async fn accept_loop<H, F>(
    listener: TcpListener,
    transport: &'static str,
    tx: mpsc::Sender<Accepted>,
    pending: Arc<Pending>,
    handshake: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = Option<Accepted>> + Send + 'static,
{
    let mut handshakes = JoinSet::new();
    let mut refusals = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
            // Reap finished handshakes so the set holds only those in progress.
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let Some((tcp, peer)) = accepted_tcp(accepted, transport).await else {
            continue;
        };
        let Some(guard) = pending.enter() else {
            drop(tcp);
            refusals.refused(transport, pending.cap);
            continue;
        };
        let tx = tx.clone();
        let handshake = handshake(tcp, peer);
        handshakes.spawn(async move {
            let accepted = handshake.await;
            drop(guard);
            if let Some(accepted) = accepted {
                tracing::debug!(%peer, module_name = %accepted.module_name, "{transport} client accepted");
                let _ = tx.send(accepted).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dialled_stream_has_nagle_off_and_knows_its_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint: Endpoint = format!("tcp://{addr}").parse().unwrap();
        let (tcp, peer) = dial_tcp(&endpoint).await.unwrap();
        assert!(tcp.nodelay().unwrap());
        assert_eq!(peer, addr.to_string());
    }

    #[tokio::test]
    async fn a_refused_dial_is_a_connect_error_naming_the_endpoint() {
        // A port that was free a moment ago: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let endpoint: Endpoint = format!("tcp://{addr}").parse().unwrap();
        match dial_tcp(&endpoint).await {
            Err(TransportError::Connect {
                endpoint: named, ..
            }) => {
                assert_eq!(named, endpoint.to_string());
            }
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_accepted_stream_has_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _peer) = accepted_tcp(listener.accept().await, "TCP").await.unwrap();
        assert!(tcp.nodelay().unwrap());
    }

    #[test]
    fn the_count_stops_at_the_cap_and_guards_count_out() {
        let pending = Pending::new(2);
        let a = pending.enter().unwrap();
        let b = pending.enter().unwrap();
        assert!(pending.enter().is_none());
        let count = *pending.subscribe().borrow();
        assert_eq!((count.now, count.peak, count.refused), (2, 2, 1));
        drop(a);
        let c = pending.enter().unwrap();
        drop((b, c));
        let count = *pending.subscribe().borrow();
        assert_eq!((count.now, count.peak, count.refused), (0, 2, 1));
        assert_eq!(Pending::new(0).cap, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refusal_warning_is_rate_limited() {
        let mut log = RefusalLog::default();
        log.refused("TCP", 1);
        assert_eq!(log.unlogged, 0, "the first refusal is logged");
        log.refused("TCP", 1);
        log.refused("TCP", 1);
        assert_eq!(
            log.unlogged, 2,
            "refusals within the interval are counted, not logged"
        );
        tokio::time::advance(REFUSAL_LOG_INTERVAL).await;
        log.refused("TCP", 1);
        assert_eq!(log.unlogged, 0, "the next interval logs the count");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_accept_pauses_before_the_next() {
        let start = tokio::time::Instant::now();
        let accepted = accepted_tcp(Err(io::Error::other("out of fds")), "TCP").await;
        assert!(accepted.is_none());
        assert_eq!(start.elapsed(), ACCEPT_RETRY);
    }
}
