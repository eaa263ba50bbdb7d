//! WebSocket transport (`ws://` and `wss://`), the protocol the Go peers speak.
//!
//! [`WsConnector`] dials `ws://{host:port}/isp-etp/?module_name={module}` exactly as the Go
//! client does (the module name is query-escaped the Go way: a space is `+`). A `ws://`
//! endpoint is always plain TCP; a `wss://` endpoint is always TLS ([`crate::tls`]): neither
//! falls back to nor upgrades to the other. [`WsAcceptor`] serves the [`ETP_PATH`] path, plain
//! or with TLS, and refuses a client without a `module_name` with HTTP 400.
//!
//! Messages: text only. A text payload is tungstenite's `Utf8Bytes`, which wraps [`Bytes`]:
//! received text is handed over without a copy; sent text is validated as UTF-8 and not
//! copied before framing. A binary message is a protocol violation: the connection is closed
//! with 1003 and [`TransportError::Protocol`] is returned. A message over the read limit closes
//! the connection with 1009 and returns [`TransportError::MessageTooBig`]. Pings are answered
//! by tungstenite while the stream is read; pongs are surfaced as [`Incoming::Pong`].
//!
//! # Buffers
//! tungstenite zero-fills its whole read buffer on every read (128 KiB by default, ~130 KiB per
//! connection and ~5 µs per round trip, see `docs/performance.md`). Both configs default to a 4 KiB
//! read buffer and a 32 KiB write buffer (writes are coalesced up to that size until a flush);
//! an idle connection costs ~10 KiB for both ends together.
//!
//! # Halves
//! The two halves share the socket through a `std::sync::Mutex` taken only inside a single
//! poll (never across an await), so the reading half can also write: it flushes pong and close
//! replies, and sends the 1003 and 1009 closes.

use crate::acceptor::ChannelAcceptor;
use crate::socket::{self, dial_tcp};
use crate::stream_end::StreamEnd;
use crate::tls::{self, TlsConfig};
use crate::{
    Accepted, Acceptor, CLOSE_MESSAGE_TOO_BIG, CloseInfo, Connector, ETP_PATH, Endpoint, Incoming,
    MessageSink, MessageStream, Scheme, Transport, TransportError,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Sink, Stream};
use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// Default connect timeout of [`WsConfig`]: TCP connect, TLS and upgrade together (5 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default read limit of the client (4 MiB, as the Go client).
pub const DEFAULT_CLIENT_MAX_MESSAGE_SIZE: usize = 4 << 20;
/// Default read limit of the server (1 MiB, as the Go server).
pub const DEFAULT_SERVER_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Default size of tungstenite's read buffer (4 KiB).
pub const DEFAULT_READ_BUFFER_SIZE: usize = 4 << 10;
/// Default size up to which writes are coalesced before going to the socket (32 KiB).
///
/// Measured with 1 KiB messages flushed every 64: 8 KiB gave ~0.55–0.85 M msg/s, 32 KiB
/// ~0.95–1.4 M msg/s on this machine. The buffer grows only while messages are queued, so it
/// costs an idle connection nothing.
pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 32 << 10;
/// Default time a server gives a client for its TCP/TLS + upgrade handshake (10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Close code sent when the peer sends a binary message (unsupported data).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// How long the reading half waits to write out a close reply or its own close (1 s).
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The listen backlog of a [`WsAcceptor`]: 4,096 TCP connections waiting for the accept loop
/// (Linux caps it at `net.core.somaxconn`, 4,096 by default since 5.4). tokio's
/// `TcpListener::bind` uses 1,024: 10,000 clients connecting at once overflow that, and the
/// kernel drops their SYNs, which the clients retry only a second later.
pub const LISTEN_BACKLOG: u32 = 4096;
/// The longest close reason a close frame can carry (125 bytes of payload minus the code).
const MAX_CLOSE_REASON: usize = 123;

/// Settings of a [`WsConnector`]. Every field has a documented default; the `with_*`
/// methods build one fluently.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Time allowed for TCP connect + TLS + upgrade together. Default 5 s.
    pub connect_timeout: Duration,
    /// The largest message the client accepts. Default 4 MiB (the Go client's limit).
    pub max_message_size: usize,
    /// tungstenite's read buffer, zero-filled on every read. Default 4 KiB.
    pub read_buffer_size: usize,
    /// Writes are coalesced up to this many bytes before a flush. Default 32 KiB.
    pub write_buffer_size: usize,
    /// Trusted CAs for `wss://`. Default: the `webpki-roots` roots.
    pub tls: TlsConfig,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_CLIENT_MAX_MESSAGE_SIZE,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
            tls: TlsConfig::default(),
        }
    }
}

impl WsConfig {
    /// Sets [`WsConfig::connect_timeout`].
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`WsConfig::max_message_size`].
    #[must_use]
    pub fn with_max_message_size(mut self, size: usize) -> Self {
        self.max_message_size = size;
        self
    }

    /// Sets [`WsConfig::read_buffer_size`].
    #[must_use]
    pub fn with_read_buffer_size(mut self, size: usize) -> Self {
        self.read_buffer_size = size;
        self
    }

    /// Sets [`WsConfig::write_buffer_size`].
    #[must_use]
    pub fn with_write_buffer_size(mut self, size: usize) -> Self {
        self.write_buffer_size = size;
        self
    }

    /// Sets [`WsConfig::tls`].
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }
}

fn websocket_config(
    max_message_size: usize,
    read_buffer_size: usize,
    write_buffer_size: usize,
) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer_size.max(1))
        .write_buffer_size(write_buffer_size)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// Escapes a query component as Go's `url.QueryEscape` does (and so as the Go client's
/// `url.Values.Encode`): unreserved characters stay, a space becomes `+`, the rest is `%XX`.
#[must_use]
pub fn query_escape(value: &str) -> String {
    urlencoding::encode(value).replace("%20", "+")
}

/// Unescapes a query component as Go's `url.QueryUnescape` does (`+` is a space). `None`
/// when the result is not UTF-8.
#[must_use]
pub fn query_unescape(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    urlencoding::decode(&spaced)
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// The URL the Go client dials: `ws://{authority}/isp-etp/?module_name={escaped}` (`wss://`
/// for a [`Scheme::Wss`] endpoint).
#[must_use]
pub fn etp_url(endpoint: &Endpoint, module_name: &str) -> String {
    let scheme = if endpoint.scheme == Scheme::Wss {
        "wss"
    } else {
        "ws"
    };
    format!(
        "{scheme}://{}{ETP_PATH}?module_name={}",
        endpoint.authority(),
        query_escape(module_name)
    )
}

/// Opens WebSocket connections to `ws://` and `wss://` endpoints.
#[derive(Clone)]
pub struct WsConnector {
    config: WsConfig,
    tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for WsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WsConnector {
    /// A connector with `config`; the TLS config is built now, so a bad CA fails here.
    ///
    /// # Errors
    /// [`TransportError::Tls`] when [`TlsConfig::client_config`] fails.
    pub fn new(config: WsConfig) -> Result<Self, TransportError> {
        let tls = config.tls.client_config()?;
        Ok(Self { config, tls })
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    async fn dial(
        &self,
        endpoint: &Endpoint,
        module_name: &str,
    ) -> Result<Transport, TransportError> {
        let target = endpoint.to_string();
        let (tcp, peer) = dial_tcp(endpoint).await?;
        let request = etp_url(endpoint, module_name)
            .into_client_request()
            .map_err(|e| TransportError::Handshake {
                endpoint: target.clone(),
                reason: format!("bad request URL: {e}"),
            })?;
        let config = websocket_config(
            self.config.max_message_size,
            self.config.read_buffer_size,
            self.config.write_buffer_size,
        );
        match endpoint.scheme {
            Scheme::Wss => {
                let name = self.config.tls.name_for(&endpoint.host)?;
                let name_text = name.to_str().into_owned();
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        tls::classify(&e, &target, &name_text).unwrap_or_else(|| {
                            TransportError::Handshake {
                                endpoint: target.clone(),
                                reason: format!("TLS handshake failed: {e}"),
                            }
                        })
                    })?;
                upgrade(request, tls, config, &target, peer).await
            }
            _ => upgrade(request, tcp, config, &target, peer).await,
        }
    }
}

async fn upgrade<S>(
    request: tungstenite::handshake::client::Request,
    stream: S,
    config: WebSocketConfig,
    target: &str,
    peer: String,
) -> Result<Transport, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| {
                let reason = match e {
                    tungstenite::Error::Http(response) => {
                        let body = response
                            .body()
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        format!(
                            "server answered HTTP {}: {}",
                            response.status(),
                            body.trim()
                        )
                    }
                    other => other.to_string(),
                };
                TransportError::Handshake {
                    endpoint: target.to_owned(),
                    reason,
                }
            })?;
    Ok(transport(ws, peer))
}

#[async_trait]
impl Connector for WsConnector {
    /// Dials `endpoint` (`ws://` or `wss://` only) within [`WsConfig::connect_timeout`].
    ///
    /// # Errors
    /// [`TransportError::UnsupportedEndpoint`] for other schemes; [`TransportError::Connect`]
    /// when TCP fails; [`TransportError::Tls`] when the certificate is refused;
    /// [`TransportError::Handshake`] when the upgrade fails (HTTP 400 for an empty module
    /// name, say); [`TransportError::Timeout`] when it all takes too long.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        module_name: &str,
    ) -> Result<Transport, TransportError> {
        if !matches!(endpoint.scheme, Scheme::Ws | Scheme::Wss) {
            return Err(TransportError::UnsupportedEndpoint(endpoint.to_string()));
        }
        let timeout = self.config.connect_timeout;
        tokio::time::timeout(timeout, self.dial(endpoint, module_name))
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }
}

/// Settings of a [`WsAcceptor`].
#[derive(Debug, Clone)]
pub struct WsServerConfig {
    /// The largest message the server accepts. Default 1 MiB (the Go server's default).
    pub max_message_size: usize,
    /// tungstenite's read buffer per connection. Default 4 KiB.
    pub read_buffer_size: usize,
    /// Writes are coalesced up to this many bytes before a flush. Default 32 KiB.
    pub write_buffer_size: usize,
    /// Time a client gets for TLS + upgrade after TCP accept. Default 10 s.
    pub handshake_timeout: Duration,
    /// Serve `wss://` with this rustls config (see [`tls::server_config_from_pem`]).
    /// Default `None`: plain `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for WsServerConfig {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_SERVER_MAX_MESSAGE_SIZE,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
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

    /// Sets [`WsServerConfig::tls`].
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Accepts WebSocket clients on [`ETP_PATH`].
///
/// A background task accepts TCP connections (listen backlog [`LISTEN_BACKLOG`]) and runs each
/// one's TLS and upgrade handshake in its own task (bounded by
/// [`WsServerConfig::handshake_timeout`]), so a slow or silent client never holds up the
/// others. A request whose path is not under [`ETP_PATH`] gets HTTP 404; one without a
/// non-empty `module_name` gets HTTP 400. Refusals and failed handshakes are logged and the
/// acceptor keeps going. Dropping the acceptor stops listening and cancels the handshakes in
/// progress: their clients see the connection close at once.
pub struct WsAcceptor(ChannelAcceptor);

impl fmt::Debug for WsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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
        Ok(Self(ChannelAcceptor::spawn(
            "WsAcceptor",
            "the WebSocket listener stopped",
            local_addr,
            |tx| {
                let config = Arc::new(config);
                let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                socket::accept_loop(listener, "WebSocket", tx, move |tcp, peer| {
                    handshake(tcp, peer, Arc::clone(&config), tls.clone())
                })
            },
        )))
    }

    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }
}

#[async_trait]
impl Acceptor for WsAcceptor {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        self.0.accept().await
    }
}

/// A TCP listener on the first address `addr` resolves to that can be bound, with a backlog of
/// [`LISTEN_BACKLOG`] (and, as `TcpListener::bind`, `SO_REUSEADDR` outside Windows).
async fn listen(addr: impl ToSocketAddrs) -> std::io::Result<TcpListener> {
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

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_owned()));
    *response.status_mut() = status;
    response
}

/// The `module_name` of an upgrade request, or the HTTP status and text of the refusal.
fn check_request(request: &Request) -> Result<String, (StatusCode, &'static str)> {
    let uri = request.uri();
    if !uri.path().starts_with(ETP_PATH) {
        return Err((
            StatusCode::NOT_FOUND,
            "not found: ETP is served on /isp-etp/",
        ));
    }
    let module_name = uri.query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (query_unescape(key).as_deref() == Some("module_name")).then(|| query_unescape(value))
        })
    });
    match module_name.flatten() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err((StatusCode::BAD_REQUEST, "module_name is required")),
    }
}

// The callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn server_upgrade<S>(
    stream: S,
    peer: SocketAddr,
    config: &WsServerConfig,
) -> Result<Accepted, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut module_name = None;
    let callback = |request: &Request, response: Response| {
        let name = check_request(request).map_err(|(status, text)| refuse(status, text))?;
        module_name = Some(name);
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(websocket_config(
            config.max_message_size,
            config.read_buffer_size,
            config.write_buffer_size,
        )),
    )
    .await
    .map_err(|e| match e {
        tungstenite::Error::Http(response) => format!(
            "HTTP {}: {}",
            response.status(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
        ),
        other => format!("upgrade failed: {other}"),
    })?;
    let module_name = module_name.ok_or_else(|| "upgrade without module_name".to_owned())?;
    Ok(Accepted {
        transport: transport(ws, peer.to_string()),
        module_name,
    })
}

/// One WebSocket shared by the two halves.
struct Shared<S> {
    ws: Mutex<WebSocketStream<S>>,
    sent_close: OnceLock<CloseInfo>,
    received_close: OnceLock<CloseInfo>,
}

impl<S> Shared<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn lock(&self) -> MutexGuard<'_, WebSocketStream<S>> {
        self.ws.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn send(&self, message: Message) -> Result<(), tungstenite::Error> {
        let mut message = Some(message);
        poll_fn(|cx| {
            let mut ws = self.lock();
            ready!(Pin::new(&mut *ws).poll_ready(cx))?;
            match message.take() {
                Some(message) => Poll::Ready(Pin::new(&mut *ws).start_send(message)),
                None => Poll::Ready(Ok(())),
            }
        })
        .await
    }

    async fn flush(&self) -> Result<(), tungstenite::Error> {
        poll_fn(|cx| Pin::new(&mut *self.lock()).poll_flush(cx)).await
    }

    async fn next(&self) -> Option<Result<Message, tungstenite::Error>> {
        poll_fn(|cx| Pin::new(&mut *self.lock()).poll_next(cx)).await
    }

    fn close_info(&self) -> CloseInfo {
        self.received_close
            .get()
            .or_else(|| self.sent_close.get())
            .cloned()
            .unwrap_or_else(|| CloseInfo {
                code: None,
                reason: "connection closed".to_owned(),
            })
    }

    /// Maps a tungstenite error to ours.
    fn error(&self, err: tungstenite::Error) -> TransportError {
        use tungstenite::error::{CapacityError, ProtocolError};
        match err {
            tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(ProtocolError::SendAfterClosing) => {
                TransportError::Closed(self.close_info())
            }
            tungstenite::Error::Io(err) => TransportError::Lost(err.to_string()),
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                TransportError::Lost("connection reset without a close frame".to_owned())
            }
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                TransportError::MessageTooBig {
                    size,
                    limit: max_size,
                }
            }
            other => TransportError::Protocol(other.to_string()),
        }
    }

    /// Sends our own close from the reading half, bounded in time; errors are ignored
    /// (the connection is going away anyway).
    async fn close_from_reader(&self, code: u16, reason: &str) {
        let info = CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        };
        if self.sent_close.set(info).is_err() || self.received_close.get().is_some() {
            return;
        }
        let frame = close_frame(code, reason);
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            self.send(Message::Close(Some(frame))).await?;
            self.flush().await
        })
        .await;
    }
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(&reason[..end]),
    }
}

fn transport<S>(ws: WebSocketStream<S>, peer: String) -> Transport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        ws: Mutex::new(ws),
        sent_close: OnceLock::new(),
        received_close: OnceLock::new(),
    });
    Transport {
        sink: Box::new(WsSink {
            shared: shared.clone(),
        }),
        stream: Box::new(WsStream {
            shared,
            done: StreamEnd::default(),
        }),
        peer,
    }
}

struct WsSink<S> {
    shared: Arc<Shared<S>>,
}

impl<S> WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn check(&self) -> Result<(), TransportError> {
        match self
            .shared
            .sent_close
            .get()
            .or_else(|| self.shared.received_close.get())
        {
            Some(info) => Err(TransportError::Closed(info.clone())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl<S> MessageSink for WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn feed(&mut self, text: Bytes) -> Result<(), TransportError> {
        self.check()?;
        let text = Utf8Bytes::try_from(text).map_err(|_| {
            TransportError::Protocol("a text message must be valid UTF-8".to_owned())
        })?;
        let shared = &self.shared;
        shared
            .send(Message::Text(text))
            .await
            .map_err(|e| shared.error(e))
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        let shared = &self.shared;
        shared.flush().await.map_err(|e| shared.error(e))
    }

    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        self.check()?;
        let shared = &self.shared;
        shared
            .send(Message::Ping(payload))
            .await
            .map_err(|e| shared.error(e))?;
        shared.flush().await.map_err(|e| shared.error(e))
    }

    /// Sends a close frame (a reason over 123 bytes is cut at a character boundary) after
    /// what was fed, and flushes. Closing again is a no-op; closing after the peer's close
    /// was received is [`TransportError::Closed`].
    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        let shared = &self.shared;
        if shared.sent_close.get().is_some() {
            return Ok(());
        }
        if let Some(info) = shared.received_close.get() {
            return Err(TransportError::Closed(info.clone()));
        }
        let frame = close_frame(code, reason);
        let _ = shared.sent_close.set(CloseInfo {
            code: Some(code),
            reason: frame.reason.to_string(),
        });
        shared
            .send(Message::Close(Some(frame)))
            .await
            .map_err(|e| shared.error(e))?;
        shared.flush().await.map_err(|e| shared.error(e))
    }
}

struct WsStream<S> {
    shared: Arc<Shared<S>>,
    done: StreamEnd,
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn next_incoming(&mut self) -> Result<Incoming, TransportError> {
        let shared = &self.shared;
        loop {
            match shared.next().await {
                Some(Ok(Message::Text(text))) => return Ok(Incoming::Text(Bytes::from(text))),
                Some(Ok(Message::Pong(payload))) => return Ok(Incoming::Pong(payload)),
                // tungstenite queued the pong; the next read writes it out.
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(data))) => {
                    tracing::warn!(
                        size = data.len(),
                        "WebSocket peer sent a binary message; closing with 1003"
                    );
                    shared
                        .close_from_reader(
                            CLOSE_UNSUPPORTED_DATA,
                            "binary messages are not supported",
                        )
                        .await;
                    return Err(TransportError::Protocol(
                        "received a binary message; ETP is text only".to_owned(),
                    ));
                }
                Some(Ok(Message::Close(frame))) => {
                    let info = frame.map_or_else(
                        || CloseInfo {
                            code: None,
                            reason: String::new(),
                        },
                        |frame| CloseInfo {
                            code: Some(u16::from(frame.code)),
                            reason: frame.reason.to_string(),
                        },
                    );
                    let _ = shared.received_close.set(info.clone());
                    // Write out the close reply tungstenite queued (if the peer started).
                    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, shared.flush()).await;
                    return Ok(Incoming::Closed(info));
                }
                Some(Err(err)) => {
                    let err = shared.error(err);
                    if let TransportError::MessageTooBig { size, limit } = &err {
                        tracing::warn!(
                            size,
                            limit,
                            "WebSocket peer sent a message over the limit; closing with 1009"
                        );
                        shared
                            .close_from_reader(CLOSE_MESSAGE_TOO_BIG, "message too big")
                            .await;
                    } else {
                        tracing::debug!(error = %err, "WebSocket read failed");
                    }
                    return Err(err);
                }
                None => {
                    return Err(match shared.received_close.get() {
                        Some(info) => TransportError::Closed(info.clone()),
                        None => TransportError::Lost(
                            "connection ended without a close frame".to_owned(),
                        ),
                    });
                }
            }
        }
    }
}

#[async_trait]
impl<S> MessageStream for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        self.done.check()?;
        let result = self.next_incoming().await;
        self.done.record(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn escapes_like_go_query_escape() {
        assert_eq!(query_escape("my module/x&y=z"), "my+module%2Fx%26y%3Dz");
        assert_eq!(query_escape("A-b_c.d~e"), "A-b_c.d~e");
        assert_eq!(
            query_escape("модуль"),
            "%D0%BC%D0%BE%D0%B4%D1%83%D0%BB%D1%8C"
        );
        assert_eq!(
            query_unescape("my+module%2Fx").as_deref(),
            Some("my module/x")
        );
    }

    #[test]
    fn etp_url_is_the_go_one() {
        let e: Endpoint = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(
            etp_url(&e, "a b"),
            "ws://127.0.0.1:9001/isp-etp/?module_name=a+b"
        );
        let e: Endpoint = "wss://[::1]:443".parse().unwrap();
        assert_eq!(etp_url(&e, "m"), "wss://[::1]:443/isp-etp/?module_name=m");
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let frame = close_frame(1000, &long);
        assert!(frame.reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(frame.reason.len(), 122);
    }

    #[tokio::test]
    async fn the_listen_backlog_holds_2000_clients_nobody_accepts_yet() {
        let listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Nobody accepts: a connect completes only if the backlog has room for it (a full
        // backlog drops the SYN, and the client's retries keep failing until someone accepts).
        let connects = (0..2000).map(|_| TcpStream::connect(addr));
        let clients = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::future::try_join_all(connects),
        )
        .await
        .expect("connects beyond the backlog hang")
        .unwrap();
        assert_eq!(clients.len(), 2000);
        // Still all there to be accepted.
        let (first, _) = listener.accept().await.unwrap();
        assert_eq!(first.local_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn dropping_the_acceptor_ends_handshakes_in_progress() {
        use tokio::io::AsyncReadExt;
        let config = WsServerConfig::default().with_handshake_timeout(Duration::from_secs(600));
        let mut acceptor = WsAcceptor::bind("127.0.0.1:0", config).await.unwrap();
        let addr = acceptor.local_addr();
        // Connects and says nothing: its handshake waits for a request.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Connects after it and upgrades. Once it is accepted, the accept loop (which takes
        // connections in order) has taken the silent one too and started its handshake.
        let endpoint: Endpoint = format!("ws://{addr}").parse().unwrap();
        let _client = WsConnector::new(WsConfig::default())
            .unwrap()
            .connect(&endpoint, "m")
            .await
            .unwrap();
        assert_eq!(acceptor.accept().await.unwrap().module_name, "m");

        drop(acceptor);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
            .await
            .expect("the handshake outlived its acceptor: the connection stayed open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[test]
    fn request_checks() {
        let req = |uri: &str| Request::builder().uri(uri).body(()).unwrap();
        assert_eq!(
            check_request(&req("/isp-etp/?module_name=a+b")).unwrap(),
            "a b"
        );
        assert_eq!(
            check_request(&req("/isp-etp/?x=1&module_name=%D0%BC")).unwrap(),
            "м"
        );
        assert_eq!(check_request(&req("/isp-etp/")).unwrap_err().0, 400);
        assert_eq!(
            check_request(&req("/isp-etp/?module_name=")).unwrap_err().0,
            400
        );
        assert_eq!(
            check_request(&req("/other?module_name=a")).unwrap_err().0,
            404
        );
    }
}
