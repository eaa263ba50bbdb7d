//! The server side shared by the socket transports: a background task accepts and handshakes
//! clients and hands them over a channel; [`ChannelAcceptor`] takes them off it.

use crate::{Accepted, TransportError};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many handshaken connections wait for `accept` before the accept loop holds back.
const ACCEPT_QUEUE: usize = 1024;

/// Handshaken connections from a background accept loop, waiting for `accept`. Dropping it
/// aborts the loop (and so stops listening).
pub(crate) struct ChannelAcceptor {
    /// The public type's name, for `Debug`.
    name: &'static str,
    /// The error text once the loop has stopped (`"the TCP listener stopped"`).
    stopped: &'static str,
    local_addr: SocketAddr,
    rx: mpsc::Receiver<Accepted>,
    task: JoinHandle<()>,
}

impl ChannelAcceptor {
    /// Spawns `accept_loop` with the sending end of the queue.
    pub(crate) fn spawn<F>(
        name: &'static str,
        stopped: &'static str,
        local_addr: SocketAddr,
        accept_loop: impl FnOnce(mpsc::Sender<Accepted>) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let task = tokio::spawn(accept_loop(tx));
        Self {
            name,
            stopped,
            local_addr,
            rx,
            task,
        }
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next handshaken connection; [`TransportError::Lost`] once the loop has stopped.
    pub(crate) async fn accept(&mut self) -> Result<Accepted, TransportError> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| TransportError::lost(self.stopped))
    }
}

impl fmt::Debug for ChannelAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.name)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ChannelAcceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn debug_shows_the_public_name_and_address() {
        let acceptor = ChannelAcceptor::spawn("TcpAcceptor", "stopped", addr(), |tx| async move {
            tx.closed().await;
        });
        assert_eq!(
            format!("{acceptor:?}"),
            "TcpAcceptor { local_addr: 127.0.0.1:1, .. }"
        );
        assert_eq!(acceptor.local_addr(), addr());
    }

    #[tokio::test]
    async fn accept_fails_with_the_given_text_once_the_loop_stops() {
        let mut acceptor =
            ChannelAcceptor::spawn("X", "the X listener stopped", addr(), |tx| async move {
                drop(tx);
            });
        match acceptor.accept().await {
            Err(TransportError::Lost { reason, .. }) => {
                assert_eq!(reason, "the X listener stopped")
            }
            other => panic!("expected Lost, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dropping_the_acceptor_aborts_the_loop() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let acceptor = ChannelAcceptor::spawn("X", "stopped", addr(), |_tx| async move {
            let _done_tx = done_tx;
            std::future::pending::<()>().await;
        });
        drop(acceptor);
        // The loop never returns by itself: its sender is dropped only when the task is aborted.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), done_rx).await;
        assert!(matches!(ended, Ok(Err(_))), "the loop is still running");
    }
}
