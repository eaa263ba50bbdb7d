//! The server side of the WebSocket transport: [`WsAcceptor`] listens, takes each
//! connection's opening handshake within its bounds, and hands over the connections that
//! completed it.

use super::codec::Role;
use super::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SERVER_MAX_MESSAGE_SIZE, DEFAULT_WRITE_BUFFER_SIZE,
    LISTEN_BACKLOG, Limits, transport,
};
use crate::acceptor::ChannelAcceptor;
use crate::socket::{self, DEFAULT_MAX_PENDING_HANDSHAKES, Pending, PendingHandshakes};
use crate::upgrade::{self, ReadFailure};
use crate::{Accepted, Acceptor, TransportError};
use async_trait::async_trait;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::watch;

/// Settings of a [`WsAcceptor`].
#[derive(Debug, Clone)]
pub struct WsServerConfig {
    /// The largest message the server accepts. Default 1 MiB (the Go server's default).
    pub max_message_size: usize,
    /// Queued frames go out once this many bytes are queued, or at a flush. Default 32 KiB.
    pub write_buffer_size: usize,
    /// Time a client gets for TLS + upgrade after TCP accept, in all (a client trickling its
    /// request gets no more). Default 10 s.
    pub handshake_timeout: Duration,
    /// The most accepted sockets whose TLS + upgrade is in progress at once; past it new
    /// sockets are closed at once. Default [`DEFAULT_MAX_PENDING_HANDSHAKES`] (1,024); 0 counts
    /// as 1.
    pub max_pending_handshakes: usize,
    /// Serve `wss://` with this rustls config (see [`tls::server_config_from_pem`](crate::tls::server_config_from_pem)).
    /// Default `None`: plain `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for WsServerConfig {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_SERVER_MAX_MESSAGE_SIZE,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            tls: None,
        }
    }
}

impl WsServerConfig {
    /// Sets [`WsServerConfig::max_message_size`].
    #[must_use]
    pub fn with_max_message_size(mut self, size: usize) -> Self {
        self.max_message_size = size;
        self
    }

    /// Sets [`WsServerConfig::handshake_timeout`].
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`WsServerConfig::max_pending_handshakes`].
    #[must_use]
    pub fn with_max_pending_handshakes(mut self, max: usize) -> Self {
        self.max_pending_handshakes = max;
        self
    }

    /// Sets [`WsServerConfig::tls`].
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Accepts WebSocket clients on [`ETP_PATH`](crate::ETP_PATH).
///
/// A background task accepts TCP connections (listen backlog [`LISTEN_BACKLOG`]) and runs each
/// one's TLS and upgrade handshake in its own task (bounded by
/// [`WsServerConfig::handshake_timeout`], at most [`WsServerConfig::max_pending_handshakes`]
/// at once), so a slow or silent client never holds up the others. Malformed requests are
/// answered as the module docs say (*Upgrade requests*). Refusals and failed handshakes are
/// logged and the acceptor keeps going. Dropping the acceptor stops listening and cancels the
/// handshakes in progress: their clients see the connection close at once.
pub struct WsAcceptor {
    inner: ChannelAcceptor,
    pending: watch::Receiver<PendingHandshakes>,
}

impl fmt::Debug for WsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl WsAcceptor {
    /// Listens on `addr` (`127.0.0.1:0` picks a port: see [`WsAcceptor::local_addr`]), with a
    /// backlog of [`LISTEN_BACKLOG`]. When `addr` resolves to several addresses, the first
    /// that can be bound is used.
    ///
    /// # Errors
    /// [`TransportError::Io`] when the address cannot be resolved or bound.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: WsServerConfig,
    ) -> Result<Self, TransportError> {
        let listener = listen(addr).await?;
        let local_addr = listener.local_addr()?;
        let pending = Pending::new(config.max_pending_handshakes);
        let watch = pending.subscribe();
        let inner = ChannelAcceptor::spawn(
            "WsAcceptor",
            "the WebSocket listener stopped",
            local_addr,
            |tx| {
                let config = Arc::new(config);
                let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                socket::accept_loop(listener, "WebSocket", tx, pending, move |tcp, peer| {
                    handshake(tcp, peer, Arc::clone(&config), tls.clone())
                })
            },
        );
        Ok(Self {
            inner,
            pending: watch,
        })
    }

    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Watches the handshakes in progress (now, peak, refused at the cap): for metrics, and
    /// to wait for a count in tests.
    #[must_use]
    pub fn pending_handshakes(&self) -> watch::Receiver<PendingHandshakes> {
        self.pending.clone()
    }
}

#[async_trait]
impl Acceptor for WsAcceptor {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        self.inner.accept().await
    }
}

/// A TCP listener on the first address `addr` resolves to that can be bound, with a backlog of
/// [`LISTEN_BACKLOG`] (and, as `TcpListener::bind`, `SO_REUSEADDR` outside Windows).
pub(super) async fn listen(addr: impl ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last_err = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen_on(addr) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to no address",
        )
    }))
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs a WebSocket client's opening handshake (TLS first when configured; see
/// [`socket::accept_loop`]), bounded by the handshake timeout; `None` when refused.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<WsServerConfig>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Option<Accepted> {
    let handshake = async {
        match tls {
            Some(tls) => {
                let stream = tls
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                server_upgrade(stream, peer, &config).await
            }
            None => server_upgrade(tcp, peer, &config).await,
        }
    };
    match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(reason)) => {
            tracing::warn!(%peer, %reason, "WebSocket client refused");
            None
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                timeout = ?config.handshake_timeout,
                "WebSocket client refused: handshake timed out"
            );
            None
        }
    }
}

/// Reads and checks the upgrade request, answers it, and on success wraps the stream.
async fn server_upgrade<S>(
    mut stream: S,
    peer: SocketAddr,
    config: &WsServerConfig,
) -> Result<Accepted, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let checked = match upgrade::read_head(&mut stream).await {
        Ok(head) => upgrade::check_request(&head),
        Err(ReadFailure::Refuse(refusal)) => Err(refusal),
        Err(ReadFailure::Gone(reason)) => return Err(reason),
    };
    let upgrade = match checked {
        Ok(upgrade) => upgrade,
        Err(refusal) => {
            upgrade::refuse(&mut stream, &refusal).await;
            return Err(format!("HTTP {}: {}", refusal.status, refusal.reason));
        }
    };
    stream
        .write_all(&upgrade::switching_protocols(&upgrade.accept))
        .await
        .map_err(|e| format!("cannot answer the upgrade: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("cannot answer the upgrade: {e}"))?;
    let limits = Limits {
        max_message_size: config.max_message_size,
        write_buffer_size: config.write_buffer_size,
    };
    Ok(Accepted {
        transport: transport(limits.socket(stream, Role::Server), peer.to_string()),
        module_name: upgrade.module_name,
    })
}
