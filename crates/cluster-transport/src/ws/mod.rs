//! WebSocket transport (`ws://` and `wss://`), the protocol the Go peers speak.
//!
//! [`WsConnector`] dials `ws://{host:port}/isp-etp/?module_name={module}` exactly as the Go
//! client does (the module name is query-escaped the Go way: a space is `+`). A `ws://`
//! endpoint is always plain TCP; a `wss://` endpoint is always TLS ([`crate::tls`]): neither
//! falls back to nor upgrades to the other. [`WsAcceptor`] serves the [`ETP_PATH`] path, plain
//! or with TLS.
//!
//! The WebSocket framing is this crate's own (`frames`, `codec`: see *Buffers* below for why;
//! the libraries it was measured against are in the crate docs). It logs nothing, so no
//! payload can reach a log through it, whatever subscriber or `log` bridge the application
//! installs. The opening handshake is ours on both sides too (see *Upgrade requests* below): a
//! refused client gets the server's reason in its error ("server answered HTTP 400: invalid
//! module_name: ..."). `tests/it/rfc6455.rs` holds the framing rules of RFC 6455 on both sides.
//!
//! # Messages
//! Text only. Received text is handed over without a copy; sent text is validated as UTF-8
//! and framed without a copy (the client masks into a copy, as it must). Pings are answered
//! while the stream is read; pongs are surfaced as [`Incoming::Pong`].
//!
//! # Faults and close codes (RFC 6455 §7.4.1)
//! The side that sees the fault sends the close frame, shuts the connection down (§7.1.7:
//! without waiting for the transport to be dropped), returns [`TransportError::Violation`]
//! (with a [`WsViolation`] as its source) or [`TransportError::MessageTooBig`], with the code
//! it sent, and logs at `warn` that *we* ended the connection and why; the other side receives
//! the close as [`Incoming::Closed`] with that code (the peer ended it). After a close
//! handshake the server shuts the connection down first (§7.1.1); a client waits for it.
//!
//! | fault | code |
//! |---|---|
//! | a WebSocket framing violation (unmasked client frame, masked server frame, reserved bits or opcode, bad control frame, bad continuation, invalid close code) | 1002 ([`CLOSE_PROTOCOL_ERROR`](crate::CLOSE_PROTOCOL_ERROR)) |
//! | a binary message (ETP is text only) | 1003 ([`CLOSE_UNSUPPORTED_DATA`]) |
//! | a text message (or close reason) that is not UTF-8 | 1007 ([`CLOSE_INVALID_PAYLOAD`](crate::CLOSE_INVALID_PAYLOAD)) |
//! | a message over the read limit | 1009 ([`CLOSE_MESSAGE_TOO_BIG`]) |
//!
//! An ETP frame that does not decode (inside a well-formed text message) is the ETP runtime's
//! business (`cluster-etp`'s `Conn`): the WebSocket framing is intact, so it reports the frame to the
//! error handler and skips it, and the connection stays, as the Go peers do (the fake
//! service's tests rely on it); no close code is sent for it.
//!
//! Either way the ETP runtime's `Conn::closed` (`cluster-etp`) says who ended it: `by_peer: false` with our code
//! when our transport closed for a fault ("closed by us (close 1002: ...)"), `by_peer: true`
//! with the peer's code when the peer did ("closed by the peer (close 1002: ...)").
//!
//! # Upgrade requests
//! The server reads at most [`MAX_REQUEST_HEAD`] bytes and [`MAX_REQUEST_HEADERS`] header
//! fields (past either: 431); a request that is not a WebSocket upgrade, lacks `Host`,
//! `Sec-WebSocket-Key` or `Sec-WebSocket-Version`, or carries a `module_name` that is missing or
//! refused by [`check_module_name`](cluster_proto::event::check_module_name) gets 400 with the
//! reason; a `Sec-WebSocket-Version` other than 13 gets 426 with `Sec-WebSocket-Version: 13`; a
//! path not under [`ETP_PATH`] gets 404. Each refusal is logged at `warn` with the peer.
//!
//! # Pending sockets
//! Accepted sockets whose TLS and upgrade are not done yet are capped
//! ([`WsServerConfig::max_pending_handshakes`], default [`DEFAULT_MAX_PENDING_HANDSHAKES`]):
//! past the cap, a new socket is closed at once (a warning at most once a second), so that a
//! flood of idle sockets costs bounded memory and connected modules go on. Each pending socket
//! has [`WsServerConfig::handshake_timeout`] in all for TLS and upgrade together, however
//! slowly it trickles its bytes.
//!
//! # Buffers
//! An idle connection holds no buffer: the read buffer is dropped whenever everything read was
//! decoded and the socket was read dry, and the write buffer once everything queued is
//! written. The libraries measured (crate docs) keep their read buffer for the connection's
//! life, at 8 KiB from the start and as large as the largest message once one came: a config
//! service pays it for each of its thousands of idle modules, and a module whose client once
//! read a large routing table pays it for good. Reads take at least 4 KiB of room (doubling
//! while the socket fills it, up to 64 KiB), or the rest of the frame being read when larger,
//! so a large message is read into its own allocation, once. A payload is handed over without
//! a copy (the client unmasks nothing; the server unmasks in place); a fragmented message is
//! copied together. Frame headers and payloads up to 1 KiB are copied into one write buffer;
//! larger payloads are queued as they are (a fan-out of one frame to many connections copies
//! nothing), and everything queued goes out in vectored writes at a flush or once
//! [`WsConfig::write_buffer_size`] bytes are queued.
//!
//! # Halves
//! The two halves share the socket through a `std::sync::Mutex` taken only inside a single
//! poll (never across an await), so the reading half can also write: it flushes pong and close
//! replies, and sends the closes of the table above.

use crate::socket::dial_tcp;
use crate::stream_end::StreamEnd;
use crate::tls::{self, TlsConfig};
use crate::upgrade::{self, HandshakeError, Prefixed};
use crate::{
    CLOSE_MESSAGE_TOO_BIG, CloseInfo, Connector, ETP_PATH, Endpoint, Incoming, MessageSink,
    MessageStream, Scheme, Transport, TransportError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

mod codec;
mod frames;
mod server;
#[cfg(test)]
use server::listen;

pub use codec::WsViolation;
use codec::{Opcode, Role};
use frames::{Message, Socket, SocketError};
pub use server::{WsAcceptor, WsServerConfig};

pub use crate::CLOSE_UNSUPPORTED_DATA;
pub use crate::socket::{DEFAULT_MAX_PENDING_HANDSHAKES, PendingHandshakes};
pub use crate::upgrade::{MAX_REQUEST_HEAD, MAX_REQUEST_HEADERS};

/// Default connect timeout of [`WsConfig`]: TCP connect, TLS and upgrade together (5 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub use crate::{DEFAULT_CLIENT_MAX_MESSAGE_SIZE, DEFAULT_SERVER_MAX_MESSAGE_SIZE};
/// Default number of queued bytes past which writes go out before more are queued (32 KiB).
///
/// Chosen with the flood bench (`cluster-etp`'s `benches/etp.rs`, `flood`): with 1 KiB messages flushed every
/// 64, 32 KiB went clearly faster than 8 KiB. It costs an idle connection nothing: the write
/// buffer is dropped once written out.
pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 32 << 10;
/// Default time a server gives a client for its TCP/TLS + upgrade handshake (10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reading half waits to write out a close reply or its own close (1 s).
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The listen backlog of a [`WsAcceptor`]: 4,096 TCP connections waiting for the accept loop
/// (Linux caps it at `net.core.somaxconn`, 4,096 by default since 5.4). tokio's
/// `TcpListener::bind` uses 1,024: 10,000 clients connecting at once overflow that, and the
/// kernel drops their SYNs, which the clients retry only a second later.
pub const LISTEN_BACKLOG: u32 = 4096;
/// The longest close reason a close frame can carry (125 bytes of payload minus the code).
const MAX_CLOSE_REASON: usize = 123;
/// The largest ping payload a control frame can carry.
const MAX_PING_PAYLOAD: usize = 125;

/// Settings of a [`WsConnector`]. Every field has a documented default; the `with_*`
/// methods build one fluently.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Time allowed for TCP connect + TLS + upgrade together. Default 5 s.
    pub connect_timeout: Duration,
    /// The largest message the client accepts. Default 4 MiB (the Go client's limit).
    pub max_message_size: usize,
    /// Queued frames go out once this many bytes are queued, or at a flush. Default 32 KiB.
    pub write_buffer_size: usize,
    /// Trusted CAs for `wss://`. Default: the `webpki-roots` roots.
    pub tls: TlsConfig,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_CLIENT_MAX_MESSAGE_SIZE,
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
    /// A connector with `config`; the TLS config is built now, so a bad CA fails here. CA
    /// files ([`TlsConfig::add_ca_file`]) are read here with blocking reads, never while
    /// dialing: in async code, call this on the blocking pool or pass the PEM bytes instead.
    ///
    /// # Errors
    /// A [`SetupError`](crate::SetupError) when [`TlsConfig::client_config`] fails.
    pub fn new(config: WsConfig) -> Result<Self, crate::SetupError> {
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
        let limits = Limits {
            max_message_size: self.config.max_message_size,
            write_buffer_size: self.config.write_buffer_size,
        };
        let request = Upgrade {
            host: endpoint.authority(),
            target: format!("{ETP_PATH}?module_name={}", query_escape(module_name)),
        };
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
                                source: HandshakeError::Tls(e),
                            }
                        })
                    })?;
                upgrade_client(limits, &request, tls, &target, peer).await
            }
            _ => upgrade_client(limits, &request, tcp, &target, peer).await,
        }
    }
}

/// What the client's upgrade request names.
struct Upgrade {
    /// `host:port`, the `Host` header.
    host: String,
    /// Path and query.
    target: String,
}

/// Sends the Go client's upgrade request and reads the answer (see [`crate::upgrade`]).
async fn upgrade_client<S>(
    limits: Limits,
    request: &Upgrade,
    mut stream: S,
    target: &str,
    peer: String,
) -> Result<Transport, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |source: HandshakeError| TransportError::Handshake {
        endpoint: target.to_owned(),
        source,
    };
    let key = upgrade::new_key();
    stream
        .write_all(&upgrade::client_request(
            &request.host,
            &request.target,
            &key,
        ))
        .await
        .map_err(|e| failed(HandshakeError::Send(e)))?;
    stream
        .flush()
        .await
        .map_err(|e| failed(HandshakeError::Send(e)))?;
    let leftover = upgrade::read_response(&mut stream, &key)
        .await
        .map_err(failed)?;
    let socket = limits.socket(Prefixed::new(leftover, stream), Role::Client);
    Ok(transport(socket, peer))
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

/// A side's read limit and write threshold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_message_size: usize,
    write_buffer_size: usize,
}

impl Limits {
    fn socket<S: AsyncRead + AsyncWrite + Unpin>(self, io: S, role: Role) -> Socket<S> {
        Socket::new(io, role, self.max_message_size, self.write_buffer_size)
    }
}

/// One WebSocket shared by the two halves.
///
/// `repr(C)`: the flag the sink reads before each frame sits next to the lock it takes then,
/// in the first cache line (the two close cells come after the socket: 312 bytes over TCP).
#[repr(C)]
struct Shared<S> {
    /// Set once a close was sent or received (after its cell below is set): the sink's
    /// check per frame reads this word, not the two cells.
    closing: AtomicBool,
    ws: Mutex<Socket<S>>,
    sent_close: OnceLock<CloseInfo>,
    received_close: OnceLock<CloseInfo>,
    /// The peer, for logs.
    peer: String,
}

impl<S> Shared<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(ws: Socket<S>, peer: String) -> Self {
        Self {
            closing: AtomicBool::new(false),
            ws: Mutex::new(ws),
            sent_close: OnceLock::new(),
            received_close: OnceLock::new(),
            peer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Socket<S>> {
        self.ws.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame once the queue is under the write threshold.
    async fn send(&self, opcode: Opcode, payload: &Bytes) -> Result<(), SocketError> {
        poll_fn(|cx| {
            let mut ws = self.lock();
            ready!(ws.poll_ready(cx))?;
            Poll::Ready(ws.queue(opcode, payload))
        })
        .await
    }

    async fn flush(&self) -> Result<(), SocketError> {
        poll_fn(|cx| self.lock().poll_flush(cx)).await
    }

    async fn shutdown(&self) -> Result<(), SocketError> {
        poll_fn(|cx| self.lock().poll_shutdown(cx)).await
    }

    async fn next(&self) -> Option<Result<Message, SocketError>> {
        poll_fn(|cx| self.lock().poll_next(cx)).await
    }

    /// Records our close (the first one only: returns whether this was it), then raises
    /// `closing`.
    fn record_sent_close(&self, info: CloseInfo) -> bool {
        let first = self.sent_close.set(info).is_ok();
        self.closing.store(true, Ordering::Release);
        first
    }

    /// Records the peer's close (the first one only), then raises `closing`.
    fn record_received_close(&self, info: CloseInfo) {
        let _ = self.received_close.set(info);
        self.closing.store(true, Ordering::Release);
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

    /// Maps a socket error to ours.
    fn error(&self, err: SocketError) -> TransportError {
        match err {
            SocketError::Closing => TransportError::Closed(self.close_info()),
            SocketError::Io(err) => TransportError::lost_io("WebSocket IO failed", err),
            SocketError::Violation(violation) => TransportError::Violation {
                code: violation.close_code(),
                reason: violation.to_string(),
                source: Some(violation),
            },
            SocketError::TooBig { size, limit } => TransportError::MessageTooBig {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit,
            },
        }
    }

    /// Ends the connection from the reading half because the peer broke a rule: sends the
    /// close `code` (unless a close was sent or exchanged already), writes it out within
    /// [`CLOSE_WRITE_TIMEOUT`], and logs that we ended it. Write errors are ignored: the
    /// connection is going away anyway.
    async fn close_for_fault(&self, code: u16, reason: &str) {
        let info = CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        };
        if !self.record_sent_close(info) || self.received_close.get().is_some() {
            return;
        }
        tracing::warn!(
            peer = %self.peer,
            code,
            reason,
            "WebSocket connection closed by us: the peer broke the protocol"
        );
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            self.lock()
                .queue(Opcode::Close, &close_payload(Some(code), reason))?;
            // A failed connection is closed (RFC 6455 §7.1.7), not left to the holder.
            self.shutdown().await
        })
        .await;
    }
}

/// The payload of a close frame for `code` and `reason`: a reason over 123 bytes is cut at a
/// character boundary; a code that may not be sent (outside 1000–1015 and 3000–4999, or one
/// of the reserved 1004, 1005, 1006, 1015) gives a close frame without code or reason.
fn close_payload(code: Option<u16>, reason: &str) -> Bytes {
    let Some(code) = code.filter(|code| codec::close_code_is_sendable(*code)) else {
        return Bytes::new();
    };
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    Bytes::from(payload)
}

/// The close frame `close_payload` sends, as recorded by the sink.
fn sent_close_info(code: u16, reason: &str) -> CloseInfo {
    match codec::parse_close(&close_payload(Some(code), reason)) {
        Ok((Some(code), reason)) => CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        },
        _ => CloseInfo {
            code: None,
            reason: String::new(),
        },
    }
}

fn transport<S>(ws: Socket<S>, peer: String) -> Transport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared::new(ws, peer.clone()));
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
        if !self.shared.closing.load(Ordering::Acquire) {
            return Ok(());
        }
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

/// Refuses text that is not UTF-8 (a caller's mistake: the message is not sent).
fn check_text(text: &[u8]) -> Result<(), TransportError> {
    if crate::is_utf8(text) {
        Ok(())
    } else {
        Err(TransportError::protocol(
            "a text message must be valid UTF-8",
        ))
    }
}

#[async_trait]
impl<S> MessageSink for WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn feed(&mut self, text: Bytes) -> Result<(), TransportError> {
        self.check()?;
        check_text(&text)?;
        let shared = &self.shared;
        shared
            .send(Opcode::Text, &text)
            .await
            .map_err(|e| shared.error(e))
    }

    /// Takes `text` unless the write queue is over [`WsConfig::write_buffer_size`] and the
    /// socket does not take it at once.
    fn try_feed(&mut self, text: Bytes) -> Result<Option<Bytes>, TransportError> {
        self.check()?;
        check_text(&text)?;
        let shared = &self.shared;
        let mut ws = shared.lock();
        // Nothing waits on this poll (see `Socket::poll_once`).
        match ws.poll_once(Socket::poll_ready) {
            Poll::Ready(Ok(())) => ws
                .queue(Opcode::Text, &text)
                .map(|()| None)
                .map_err(|e| shared.error(e)),
            Poll::Ready(Err(e)) => Err(shared.error(e)),
            Poll::Pending => Ok(Some(text)),
        }
    }

    fn try_flush(&mut self) -> Result<bool, TransportError> {
        let shared = &self.shared;
        let mut ws = shared.lock();
        match ws.poll_once(Socket::poll_flush) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(shared.error(e)),
            Poll::Pending => Ok(false),
        }
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        let shared = &self.shared;
        shared.flush().await.map_err(|e| shared.error(e))
    }

    /// Sends a ping (a payload over 125 bytes, the most a control frame carries, is refused
    /// with [`TransportError::Protocol`]) and flushes.
    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        self.check()?;
        if payload.len() > MAX_PING_PAYLOAD {
            return Err(TransportError::protocol(format!(
                "a ping carries at most {MAX_PING_PAYLOAD} bytes"
            )));
        }
        let shared = &self.shared;
        shared
            .send(Opcode::Ping, &payload)
            .await
            .map_err(|e| shared.error(e))?;
        shared.flush().await.map_err(|e| shared.error(e))
    }

    /// Sends a close frame after what was fed, and flushes. A reason over 123 bytes is cut at
    /// a character boundary; a code that may not be sent on the wire (outside 1000–1015 and
    /// 3000–4999, or the reserved 1004, 1005, 1006 and 1015) sends a close frame without code
    /// or reason (the peer sees 1005, no status). Closing again is a no-op; closing after the
    /// peer's close was received is [`TransportError::Closed`].
    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        let shared = &self.shared;
        if shared.sent_close.get().is_some() {
            return Ok(());
        }
        if let Some(info) = shared.received_close.get() {
            return Err(TransportError::Closed(info.clone()));
        }
        shared.record_sent_close(sent_close_info(code, reason));
        shared
            .send(Opcode::Close, &close_payload(Some(code), reason))
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
    /// The rare paths (a fault's close, the close reply) await boxed futures: the future of
    /// an idle connection's read, which a server holds thousands of, stays small.
    async fn next_incoming(&mut self) -> Result<Incoming, TransportError> {
        let shared = &self.shared;
        let message = match shared.next().await {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                let err = shared.error(err);
                match &err {
                    TransportError::MessageTooBig { size, limit } => {
                        let reason = format!("message of {size} bytes over the limit of {limit}");
                        Box::pin(shared.close_for_fault(CLOSE_MESSAGE_TOO_BIG, &reason)).await;
                    }
                    TransportError::Violation { code, reason, .. } => {
                        Box::pin(shared.close_for_fault(*code, reason)).await;
                    }
                    _ => {
                        tracing::debug!(peer = %shared.peer, error = %err, "WebSocket read failed")
                    }
                }
                return Err(err);
            }
            None => {
                return Err(match shared.received_close.get() {
                    Some(info) => TransportError::Closed(info.clone()),
                    None => TransportError::lost("connection ended without a close frame"),
                });
            }
        };
        match message {
            Message::Text(text) => Ok(Incoming::Text(text)),
            Message::Pong(payload) => Ok(Incoming::Pong(payload)),
            Message::Close(code, reason) => {
                let mut info = CloseInfo { code, reason };
                // The peer's reply to our close echoes the code only: it reports our close,
                // reason included.
                if let Some(sent) = shared.sent_close.get()
                    && sent.code == info.code
                    && info.reason.is_empty()
                {
                    info = sent.clone();
                }
                shared.record_received_close(info.clone());
                // Write out our close reply (if the peer started); a server then closes the
                // connection (RFC 6455 §7.1.1), a client leaves that to the server.
                let server = shared.lock().role() == Role::Server;
                let _ = Box::pin(tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                    if server {
                        shared.shutdown().await
                    } else {
                        shared.flush().await
                    }
                }))
                .await;
                Ok(Incoming::Closed(info))
            }
        }
    }
}

/// A text message or pong (what `Socket::next_buffered` and `Socket::poll_next_data` return).
fn data_message(message: Message) -> Incoming {
    match message {
        Message::Text(text) => Incoming::Text(text),
        Message::Pong(payload) => Incoming::Pong(payload),
        Message::Close(..) => unreachable!("a close is kept for recv"),
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

    fn try_recv(&mut self) -> Option<Incoming> {
        self.done.check().ok()?;
        self.shared.lock().next_buffered().map(data_message)
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        if self.done.check().is_err() {
            return Poll::Ready(None);
        }
        self.shared
            .lock()
            .poll_next_data(cx)
            .map(|message| message.map(data_message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Acceptor as _;
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

    /// Either close, once recorded, is what the sink's check per frame refuses with: the
    /// flag it reads is raised with the cell.
    #[test]
    fn a_recorded_close_is_refused_by_the_sinks_check() {
        let sink = || {
            let (io, _raw) = tokio::io::duplex(64);
            let socket = Socket::new(io, Role::Client, 1 << 20, 1 << 10);
            WsSink {
                shared: Arc::new(Shared::new(socket, "peer".to_owned())),
            }
        };
        let refused_with = |sink: &WsSink<_>| match sink.check() {
            Err(TransportError::Closed(info)) => info,
            other => panic!("expected Closed, got {other:?}"),
        };
        let ours = sink();
        assert!(ours.check().is_ok());
        assert!(ours.shared.record_sent_close(CloseInfo::normal("ours")));
        assert!(!ours.shared.record_sent_close(CloseInfo::normal("again")));
        assert_eq!(refused_with(&ours), CloseInfo::normal("ours"));
        let theirs = sink();
        theirs
            .shared
            .record_received_close(CloseInfo::normal("theirs"));
        assert_eq!(refused_with(&theirs), CloseInfo::normal("theirs"));
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let info = sent_close_info(1000, &long);
        assert!(info.reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(info.reason.len(), 122);
        assert_eq!(info.code, Some(1000));
    }

    #[test]
    fn a_code_that_may_not_be_sent_sends_no_code() {
        for code in [0, 999, 1005, 1006, 1015, 2000, 5000] {
            assert_eq!(
                sent_close_info(code, "x"),
                CloseInfo {
                    code: None,
                    reason: String::new()
                },
                "{code}"
            );
        }
        assert_eq!(sent_close_info(4000, "x").code, Some(4000));
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
}
