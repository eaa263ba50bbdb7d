//! Length-delimited frames over plain TCP.
//!
//! Enabled by the crate's `tcp` feature (off by default).
//!
//! **This transport does not speak to the Go peers**: they only speak WebSocket. It is for
//! tests and for setups of Rust peers only, where the WebSocket upgrade is not wanted.
//!
//! # Wire format
//! Each frame is a 4-byte big-endian length (tokio-util's [`LengthDelimitedCodec`] default)
//! followed by that many bytes: one tag byte, then the body.
//!
//! | tag | frame | body |
//! |---|---|---|
//! | `1` | hello | the module name (UTF-8); the first frame of a client, and only there |
//! | `2` | text | one ETP frame (UTF-8) |
//! | `3` | ping | payload |
//! | `4` | pong | the ping's payload |
//! | `5` | close | empty (no code), or a big-endian `u16` code then a UTF-8 reason |
//!
//! Behaviour follows the WebSocket transport: the reading half answers a ping with a pong and a
//! close with the same close; an incoming frame over the read limit (client 4 MiB, server
//! 1 MiB by default) closes the connection with 1009 and returns
//! [`TransportError::MessageTooBig`]; an EOF or reset without a close frame is
//! [`TransportError::Lost`]. A server refuses a client whose first frame is not a hello with a
//! non-empty module name (close 1008) and keeps accepting.
//!
//! The halves share the write buffer through a `std::sync::Mutex` never held across an await.
//! Pongs and close replies are written by the reading half without waiting for the socket
//! (`try_write`); whatever does not fit goes out with the next write or flush.

use crate::acceptor::ChannelAcceptor;
use crate::socket::{self, dial_tcp};
use crate::stream_end::StreamEnd;
use crate::upgrade::HandshakeError;
use crate::{
    Accepted, Acceptor, CLOSE_MESSAGE_TOO_BIG, CloseInfo, Connector, Endpoint, Incoming,
    MessageSink, MessageStream, Scheme, SetupError, Transport, TransportError,
};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

/// Default connect timeout of [`TcpConfig`] (5 s), connect and hello together.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub use crate::{DEFAULT_CLIENT_MAX_MESSAGE_SIZE, DEFAULT_SERVER_MAX_MESSAGE_SIZE};
/// Default time a server waits for a client's hello (10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A server closes a client without a proper hello with [`CLOSE_POLICY_VIOLATION`], and a
/// malformed frame with [`CLOSE_PROTOCOL_ERROR`].
pub use crate::{CLOSE_POLICY_VIOLATION, CLOSE_PROTOCOL_ERROR};

const TAG_HELLO: u8 = 1;
const TAG_TEXT: u8 = 2;
const TAG_PING: u8 = 3;
const TAG_PONG: u8 = 4;
const TAG_CLOSE: u8 = 5;
/// A feed flushes by itself once this much is buffered.
const WRITE_HIGH_WATER: usize = 64 << 10;
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of a [`TcpConnector`].
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Time allowed for the TCP connect and the hello. Default 5 s.
    pub connect_timeout: Duration,
    /// The largest message the client accepts. Default 4 MiB.
    pub max_message_size: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_CLIENT_MAX_MESSAGE_SIZE,
        }
    }
}

/// Settings of a [`TcpAcceptor`].
#[derive(Debug, Clone)]
pub struct TcpServerConfig {
    /// The largest message the server accepts. Default 1 MiB.
    pub max_message_size: usize,
    /// Time a client gets to send its hello. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for TcpServerConfig {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_SERVER_MAX_MESSAGE_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    TooBig(usize),
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

/// [`LengthDelimitedCodec`] with a limit on the body, that reports the announced size.
struct FrameDecoder {
    inner: LengthDelimitedCodec,
    max_message_size: usize,
}

impl FrameDecoder {
    fn new(max_message_size: usize) -> Self {
        Self {
            inner: LengthDelimitedCodec::builder()
                // One tag byte on top of the message.
                .max_frame_length(max_message_size.saturating_add(1))
                .new_codec(),
            max_message_size,
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = ReadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, ReadError> {
        match self.inner.decode(src) {
            Ok(frame) => Ok(frame),
            Err(err)
                if err
                    .get_ref()
                    .is_some_and(|e| e.is::<LengthDelimitedCodecError>()) =>
            {
                // The codec refuses before consuming the head: the length is still there.
                let announced = if src.len() >= 4 {
                    src.get_u32() as usize
                } else {
                    0
                };
                Err(ReadError::TooBig(announced.saturating_sub(1)))
            }
            Err(err) => Err(ReadError::Io(err)),
        }
    }
}

fn put_frame(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.reserve(5 + body.len());
    // Bodies are bounded far below 4 GiB by the readers' limits.
    buf.put_u32(u32::try_from(body.len() + 1).unwrap_or(u32::MAX));
    buf.put_u8(tag);
    buf.put_slice(body);
}

fn close_body(code: u16, reason: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + reason.len());
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(reason.as_bytes());
    body
}

struct Writer {
    io: OwnedWriteHalf,
    buf: BytesMut,
}

impl Writer {
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.advance(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Writes what the socket takes now, without waiting.
    fn try_drain(&mut self) -> io::Result<()> {
        while !self.buf.is_empty() {
            match self.io.try_write(&self.buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.buf.advance(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

struct Shared {
    writer: Mutex<Writer>,
    sent_close: OnceLock<CloseInfo>,
    received_close: OnceLock<CloseInfo>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn flush(&self) -> io::Result<()> {
        poll_fn(|cx| self.lock().poll_flush(cx)).await
    }

    fn closed(&self) -> Option<CloseInfo> {
        self.sent_close
            .get()
            .or_else(|| self.received_close.get())
            .cloned()
    }

    /// Queues a control frame from the reading half and writes what fits now.
    fn reply(&self, tag: u8, body: &[u8]) {
        let mut writer = self.lock();
        put_frame(&mut writer.buf, tag, body);
        if let Err(err) = writer.try_drain() {
            tracing::debug!(error = %err, "TCP transport could not write a control reply");
        }
    }

    /// Sends our close from the reading half, waiting a bounded time for it to go out.
    async fn close_from_reader(&self, code: u16, reason: &str) {
        let info = CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        };
        if self.sent_close.set(info).is_err() || self.received_close.get().is_some() {
            return;
        }
        self.reply(TAG_CLOSE, &close_body(code, reason));
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.flush()).await;
    }
}

/// Builds the two halves; `pending` is written out before anything else (the hello).
fn transport(
    reader: FramedRead<OwnedReadHalf, FrameDecoder>,
    io: OwnedWriteHalf,
    peer: String,
    pending: BytesMut,
) -> Transport {
    let shared = Arc::new(Shared {
        writer: Mutex::new(Writer { io, buf: pending }),
        sent_close: OnceLock::new(),
        received_close: OnceLock::new(),
    });
    Transport {
        sink: Box::new(TcpSink {
            shared: shared.clone(),
        }),
        stream: Box::new(TcpStreamHalf {
            reader,
            shared,
            done: StreamEnd::default(),
        }),
        peer,
    }
}

struct TcpSink {
    shared: Arc<Shared>,
}

impl TcpSink {
    async fn queue(&mut self, tag: u8, body: &[u8], flush: bool) -> Result<(), TransportError> {
        if let Some(info) = self.shared.closed() {
            return Err(TransportError::Closed(info));
        }
        let buffered = {
            let mut writer = self.shared.lock();
            put_frame(&mut writer.buf, tag, body);
            writer.buf.len()
        };
        if flush || buffered >= WRITE_HIGH_WATER {
            self.shared
                .flush()
                .await
                .map_err(|e| TransportError::lost_io("TCP write failed", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl MessageSink for TcpSink {
    async fn feed(&mut self, text: Bytes) -> Result<(), TransportError> {
        if !crate::is_utf8(&text) {
            return Err(TransportError::protocol(
                "a text message must be valid UTF-8",
            ));
        }
        self.queue(TAG_TEXT, &text, false).await
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.shared
            .flush()
            .await
            .map_err(|e| TransportError::lost_io("TCP write failed", e))
    }

    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        self.queue(TAG_PING, &payload, true).await
    }

    /// Sends a close frame after what was fed, and flushes. Closing again is a no-op; closing
    /// after the peer's close was received is [`TransportError::Closed`].
    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        if self.shared.sent_close.get().is_some() {
            return Ok(());
        }
        if let Some(info) = self.shared.received_close.get() {
            return Err(TransportError::Closed(info.clone()));
        }
        let body = close_body(code, reason);
        {
            let mut writer = self.shared.lock();
            put_frame(&mut writer.buf, TAG_CLOSE, &body);
        }
        let _ = self.shared.sent_close.set(CloseInfo {
            code: Some(code),
            reason: reason.to_owned(),
        });
        self.flush().await
    }
}

struct TcpStreamHalf {
    reader: FramedRead<OwnedReadHalf, FrameDecoder>,
    shared: Arc<Shared>,
    done: StreamEnd,
}

fn parse_close(body: &[u8]) -> Result<CloseInfo, TransportError> {
    match body {
        [] => Ok(CloseInfo {
            code: None,
            reason: String::new(),
        }),
        [hi, lo, reason @ ..] => Ok(CloseInfo {
            code: Some(u16::from_be_bytes([*hi, *lo])),
            reason: String::from_utf8(reason.to_vec())
                .map_err(|_| TransportError::protocol("close reason is not UTF-8"))?,
        }),
        [_] => Err(TransportError::protocol("truncated close frame")),
    }
}

impl TcpStreamHalf {
    async fn protocol_error(&self, reason: String) -> TransportError {
        tracing::warn!(%reason, "TCP peer violated the framing; closing with 1002");
        self.shared
            .close_from_reader(CLOSE_PROTOCOL_ERROR, "protocol error")
            .await;
        TransportError::protocol(reason)
    }

    async fn next_incoming(&mut self) -> Result<Incoming, TransportError> {
        loop {
            let mut frame = match self.reader.next().await {
                Some(Ok(frame)) => frame.freeze(),
                Some(Err(ReadError::TooBig(size))) => {
                    let limit = self.reader.decoder().max_message_size;
                    tracing::warn!(
                        size,
                        limit,
                        "TCP peer sent a message over the limit; closing with 1009"
                    );
                    self.shared
                        .close_from_reader(CLOSE_MESSAGE_TOO_BIG, "message too big")
                        .await;
                    return Err(TransportError::MessageTooBig { size, limit });
                }
                Some(Err(ReadError::Io(err))) => {
                    return Err(TransportError::lost_io("TCP read failed", err));
                }
                None => {
                    return Err(match self.shared.received_close.get() {
                        Some(info) => TransportError::Closed(info.clone()),
                        None => TransportError::lost("connection ended without a close frame"),
                    });
                }
            };
            if frame.is_empty() {
                return Err(self.protocol_error("empty frame".to_owned()).await);
            }
            let tag = frame.get_u8();
            match tag {
                TAG_TEXT => {
                    if !crate::is_utf8(&frame) {
                        return Err(self.protocol_error("text is not UTF-8".to_owned()).await);
                    }
                    return Ok(Incoming::Text(frame));
                }
                TAG_PING => {
                    if self.shared.closed().is_none() {
                        self.shared.reply(TAG_PONG, &frame);
                    }
                }
                TAG_PONG => return Ok(Incoming::Pong(frame)),
                TAG_CLOSE => {
                    let info = match parse_close(&frame) {
                        Ok(info) => info,
                        Err(err) => return Err(self.protocol_error(err.to_string()).await),
                    };
                    let _ = self.shared.received_close.set(info.clone());
                    if self.shared.sent_close.get().is_none() {
                        let body = match info.code {
                            Some(code) => close_body(code, &info.reason),
                            None => Vec::new(),
                        };
                        self.shared.reply(TAG_CLOSE, &body);
                        let _ =
                            tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.shared.flush()).await;
                    }
                    return Ok(Incoming::Closed(info));
                }
                other => {
                    return Err(self
                        .protocol_error(format!("unexpected frame tag {other}"))
                        .await);
                }
            }
        }
    }
}

#[async_trait]
impl MessageStream for TcpStreamHalf {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        self.done.check()?;
        let result = self.next_incoming().await;
        self.done.record(&result);
        result
    }
}

/// Opens connections to `tcp://` endpoints.
#[derive(Debug, Clone, Default)]
pub struct TcpConnector {
    config: TcpConfig,
}

impl TcpConnector {
    /// A connector with `config`.
    #[must_use]
    pub fn new(config: TcpConfig) -> Self {
        Self { config }
    }

    async fn dial(
        &self,
        endpoint: &Endpoint,
        module_name: &str,
    ) -> Result<Transport, TransportError> {
        let (tcp, peer) = dial_tcp(endpoint).await?;
        let (read, write) = tcp.into_split();
        let reader = FramedRead::new(read, FrameDecoder::new(self.config.max_message_size));
        // The hello goes first; the server answers nothing unless it refuses (close 1008).
        let mut hello = BytesMut::new();
        put_frame(&mut hello, TAG_HELLO, module_name.as_bytes());
        let mut transport = transport(reader, write, peer, hello);
        transport
            .sink
            .flush()
            .await
            .map_err(|e| TransportError::Handshake {
                endpoint: endpoint.to_string(),
                source: HandshakeError::Hello(Box::new(e)),
            })?;
        Ok(transport)
    }
}

#[async_trait]
impl Connector for TcpConnector {
    /// Connects to a `tcp://` endpoint and sends the hello, within the connect timeout.
    ///
    /// # Errors
    /// [`TransportError::UnsupportedEndpoint`] for other schemes; [`TransportError::Setup`]
    /// for an empty module name (the server would refuse it); [`TransportError::Connect`],
    /// [`TransportError::Handshake`], [`TransportError::Timeout`].
    async fn connect(
        &self,
        endpoint: &Endpoint,
        module_name: &str,
    ) -> Result<Transport, TransportError> {
        if endpoint.scheme != Scheme::Tcp {
            return Err(TransportError::UnsupportedEndpoint(endpoint.to_string()));
        }
        if module_name.is_empty() {
            return Err(SetupError::ModuleName {
                name: String::new(),
                reason: "the server refuses an empty module name",
            }
            .into());
        }
        let timeout = self.config.connect_timeout;
        tokio::time::timeout(timeout, self.dial(endpoint, module_name))
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }
}

/// Accepts clients of the TCP transport. Each client's hello is awaited in its own task, so a
/// silent client holds up no one; at most
/// [`DEFAULT_MAX_PENDING_HANDSHAKES`](crate::ws::DEFAULT_MAX_PENDING_HANDSHAKES) (1,024) hellos
/// are awaited at once, and a socket accepted past that is closed at once. Dropping the acceptor
/// stops listening.
pub struct TcpAcceptor(ChannelAcceptor);

impl fmt::Debug for TcpAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TcpAcceptor {
    /// Listens on `addr` with the default [`TcpServerConfig`].
    ///
    /// # Errors
    /// [`TransportError::Io`] when the address cannot be bound.
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Self, TransportError> {
        Self::bind_with(addr, TcpServerConfig::default()).await
    }

    /// Listens on `addr` with `config`.
    ///
    /// # Errors
    /// [`TransportError::Io`] when the address cannot be bound.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        config: TcpServerConfig,
    ) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self(ChannelAcceptor::spawn(
            "TcpAcceptor",
            "the TCP listener stopped",
            local_addr,
            |tx| {
                let pending = socket::Pending::new(socket::DEFAULT_MAX_PENDING_HANDSHAKES);
                socket::accept_loop(listener, "TCP", tx, pending, move |tcp, peer| {
                    hello(tcp, peer, config.clone())
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
impl Acceptor for TcpAcceptor {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        self.0.accept().await
    }
}

/// Awaits a TCP client's hello (see [`socket::accept_loop`]): its module name, or a close with
/// 1008 and the reason.
async fn hello(tcp: TcpStream, peer: SocketAddr, config: TcpServerConfig) -> Option<Accepted> {
    let (read, write) = tcp.into_split();
    let mut reader = FramedRead::new(read, FrameDecoder::new(config.max_message_size));
    let hello = tokio::time::timeout(config.handshake_timeout, reader.next()).await;
    let module_name = match hello {
        Ok(Some(Ok(frame))) if frame.first() == Some(&TAG_HELLO) => {
            match std::str::from_utf8(&frame[1..]) {
                Ok(name) if !name.is_empty() => Ok(name.to_owned()),
                _ => Err("hello without a module name"),
            }
        }
        Ok(Some(Ok(_))) => Err("the first frame is not a hello"),
        Ok(Some(Err(_))) => Err("unreadable hello"),
        Ok(None) => Err("connection ended before the hello"),
        Err(_) => Err("no hello in time"),
    };
    let mut transport = transport(reader, write, peer.to_string(), BytesMut::new());
    match module_name {
        Ok(module_name) => Some(Accepted {
            transport,
            module_name,
        }),
        Err(reason) => {
            tracing::warn!(%peer, reason, "TCP client refused");
            let _ = tokio::time::timeout(
                CLOSE_WRITE_TIMEOUT,
                transport.sink.close(CLOSE_POLICY_VIOLATION, reason),
            )
            .await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_reports_the_announced_size() {
        let mut decoder = FrameDecoder::new(10);
        let mut ok = BytesMut::new();
        put_frame(&mut ok, TAG_TEXT, b"0123456789");
        let frame = decoder.decode(&mut ok).unwrap().unwrap();
        assert_eq!(&frame[..], b"\x020123456789");
        let mut big = BytesMut::new();
        put_frame(&mut big, TAG_TEXT, b"0123456789a");
        assert!(matches!(
            decoder.decode(&mut big),
            Err(ReadError::TooBig(11))
        ));
    }

    #[test]
    fn close_bodies_round_trip() {
        let info = parse_close(&close_body(1009, "too big")).unwrap();
        assert_eq!((info.code, info.reason.as_str()), (Some(1009), "too big"));
        assert_eq!(parse_close(&[]).unwrap().code, None);
        assert!(parse_close(&[3]).is_err());
    }
}

#[cfg(test)]
mod acceptor_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn refuses_a_client_without_hello_and_keeps_accepting() {
        let mut acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
        let addr = acceptor.local_addr();
        let _silent = TcpStream::connect(addr).await.unwrap();

        let mut rude = TcpStream::connect(addr).await.unwrap();
        let mut frame = BytesMut::new();
        put_frame(&mut frame, TAG_TEXT, b"no hello");
        rude.write_all(&frame).await.unwrap();
        let mut answer = Vec::new();
        rude.read_to_end(&mut answer).await.unwrap();
        let mut expected = BytesMut::new();
        put_frame(
            &mut expected,
            TAG_CLOSE,
            &close_body(CLOSE_POLICY_VIOLATION, "the first frame is not a hello"),
        );
        assert_eq!(answer, expected.to_vec());

        let endpoint: Endpoint = format!("tcp://{addr}").parse().unwrap();
        let _client = TcpConnector::default()
            .connect(&endpoint, "polite")
            .await
            .unwrap();
        assert_eq!(acceptor.accept().await.unwrap().module_name, "polite");
    }

    #[tokio::test]
    async fn dropping_the_acceptor_ends_hellos_in_progress() {
        let config = TcpServerConfig {
            handshake_timeout: Duration::from_secs(600),
            ..TcpServerConfig::default()
        };
        let mut acceptor = TcpAcceptor::bind_with("127.0.0.1:0", config).await.unwrap();
        let addr = acceptor.local_addr();
        // Connects and says nothing: its hello task waits.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Once a later client is accepted, the loop (which takes connections in order) has
        // taken the silent one too and started waiting for its hello.
        let endpoint: Endpoint = format!("tcp://{addr}").parse().unwrap();
        let _client = TcpConnector::default()
            .connect(&endpoint, "m")
            .await
            .unwrap();
        assert_eq!(acceptor.accept().await.unwrap().module_name, "m");

        drop(acceptor);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
            .await
            .expect("the hello task outlived its acceptor: the connection stayed open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[tokio::test]
    async fn the_connector_refuses_other_schemes_and_empty_names() {
        let ws: Endpoint = "ws://127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            TcpConnector::default().connect(&ws, "m").await,
            Err(TransportError::UnsupportedEndpoint(_))
        ));
        let tcp: Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            TcpConnector::default().connect(&tcp, "").await,
            Err(TransportError::Setup(SetupError::ModuleName { .. }))
        ));
    }
}
