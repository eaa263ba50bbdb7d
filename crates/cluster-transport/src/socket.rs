//! TCP plumbing shared by the socket transports (TCP and WebSocket): dialing a host, and the
//! accept loop that runs each client's opening handshake in a task of its own.

use crate::{Accepted, Endpoint, TransportError};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Opens a TCP connection to `endpoint`'s host and port, with Nagle's algorithm off. Returns it
/// with the peer's address as text (the endpoint's `host:port` if the socket cannot tell).
///
/// # Errors
/// [`TransportError::Connect`] when the connection cannot be opened.
pub(crate) async fn dial_tcp(endpoint: &Endpoint) -> Result<(TcpStream, String), TransportError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| TransportError::Connect {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
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

/// Accepts TCP connections on `listener` until `tx` is closed (the acceptor was dropped), and
/// runs `handshake` for each in a task of its own, so a slow or silent client holds up no one.
/// A handshake that yields an [`Accepted`] hands it to `tx`; one that yields `None` refused its
/// client (and logged why). The handshake tasks belong to the loop (a `JoinSet`): when it ends
/// they are aborted with it, instead of finishing a handshake nobody will take.
pub(crate) async fn accept_loop<H, F>(
    listener: TcpListener,
    transport: &'static str,
    tx: mpsc::Sender<Accepted>,
    handshake: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = Option<Accepted>> + Send + 'static,
{
    let mut handshakes = JoinSet::new();
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
        let tx = tx.clone();
        let handshake = handshake(tcp, peer);
        handshakes.spawn(async move {
            if let Some(accepted) = handshake.await {
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

    #[tokio::test(start_paused = true)]
    async fn a_failed_accept_pauses_before_the_next() {
        let start = tokio::time::Instant::now();
        let accepted = accepted_tcp(Err(io::Error::other("out of fds")), "TCP").await;
        assert!(accepted.is_none());
        assert_eq!(start.elapsed(), ACCEPT_RETRY);
    }
}
