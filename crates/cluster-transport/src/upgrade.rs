//! The server side of the WebSocket opening handshake (RFC 6455 §4.2), written here so that
//! every malformed request gets an HTTP status and nothing unbounded is read.
//!
//! The request head is read up to [`MAX_REQUEST_HEAD`] bytes and [`MAX_REQUEST_HEADERS`]
//! headers (past either: 431), then checked in this order, the first failure answering:
//!
//! | what is wrong | status |
//! |---|---|
//! | not HTTP, not `GET`, not HTTP/1.1 or later | 400 |
//! | path not under [`ETP_PATH`] | 404 |
//! | no `Host`, no `Upgrade: websocket`, no `Connection: upgrade` | 400 |
//! | no `Sec-WebSocket-Version` | 400 |
//! | `Sec-WebSocket-Version` other than 13 | 426, with `Sec-WebSocket-Version: 13` |
//! | no `Sec-WebSocket-Key`, or not 16 bytes in base64 | 400 |
//! | no `module_name`, empty, not UTF-8, or refused by [`check_module_name`] | 400, with the reason |
//! | bytes after the request, before our answer (RFC 6455 §4.1: the client waits) | 400 |
//!
//! A refusal is answered with a `text/plain` body naming the fault, `Connection: close`;
//! then the server stops writing and reads (and drops) what the client still sends for up to
//! [`LINGER`] / [`LINGER_BYTES`], so that the client reads the answer instead of a reset.
//!
//! The client's side is here too: the request the Go client sends, and the answer read within
//! the same limits ([`MAX_REQUEST_HEAD`], [`MAX_REQUEST_HEADERS`]); a refusal's body (at most
//! [`MAX_REFUSAL_BODY`] bytes) becomes the reason of the error. Bytes that follow the 101 are
//! handed to the WebSocket ([`Prefixed`]).

use crate::ETP_PATH;
use crate::ws::query_unescape;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes};
use cluster_proto::event::check_module_name;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The longest request head (request line and headers, up to the blank line) a client may
/// send: 8 KiB (a module name is at most 256 bytes, 768 escaped). Past it: 431.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;
/// The most header fields a request may have: 64. Past it: 431.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// How long a refused client's socket is read and dropped after the answer (500 ms).
pub(crate) const LINGER: Duration = Duration::from_millis(500);
/// How much of a refused client's data is read and dropped after the answer (64 KiB).
pub(crate) const LINGER_BYTES: usize = 64 << 10;
/// The most of a refusal's body the client reads for its error (1 KiB).
pub(crate) const MAX_REFUSAL_BODY: usize = 1024;
/// RFC 6455 §1.3.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a client's opening handshake failed: the WebSocket upgrade (this crate's own client
/// side, see [`crate::ws`]), the TCP transport's hello, or TLS when rustls did not say why.
/// The source of [`TransportError::Handshake`](crate::TransportError::Handshake).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Writing the upgrade request failed.
    #[error("sending the upgrade request failed: {0}")]
    Send(#[source] io::Error),
    /// Reading the server's answer failed.
    #[error("reading the upgrade answer failed: {0}")]
    Read(#[source] io::Error),
    /// The server closed the connection before it answered.
    #[error("the server closed the connection before answering the upgrade")]
    ClosedEarly,
    /// The server answered 101 without `Upgrade: websocket`.
    #[error("the server switched to another protocol than WebSocket")]
    NotWebSocket,
    /// The server's `Sec-WebSocket-Accept` is not the one our key asks for.
    #[error("the server's Sec-WebSocket-Accept does not match")]
    AcceptMismatch,
    /// The answer's head is over [`MAX_REQUEST_HEAD`] bytes.
    #[error("the upgrade answer is over {MAX_REQUEST_HEAD} bytes")]
    AnswerTooLong,
    /// The answer is not an HTTP response.
    #[error("the upgrade answer is not HTTP: {0}")]
    NotHttp(#[source] httparse::Error),
    /// The server refused the upgrade with an HTTP status; its body says why.
    #[error("server answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body (bounded, trimmed; empty if none).
        body: String,
    },
    /// The TLS handshake failed, and not because rustls refused the peer (that is
    /// [`TransportError::Tls`](crate::TransportError::Tls)): the connection broke meanwhile.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The TCP transport's hello could not be sent.
    #[error("sending the hello failed: {0}")]
    Hello(#[source] Box<crate::TransportError>),
}

/// An HTTP refusal of an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 400, 404, 426 or 431.
    pub(crate) status: u16,
    /// Why, in the body and the log.
    pub(crate) reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    fn bad(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }

    /// The whole HTTP response.
    pub(crate) fn response(&self) -> Vec<u8> {
        let phrase = match self.status {
            404 => "Not Found",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let extra = if self.status == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n{extra}\r\n{}",
            self.status,
            self.reason.len(),
            self.reason
        )
        .into_bytes()
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The request is malformed or too large: answer it.
    Refuse(Refusal),
    /// The client went away or the socket failed: nobody to answer.
    Gone(String),
}

/// Reads one request head: the bytes up to and including the blank line. Reads in chunks of
/// at most 1 KiB and never more than [`MAX_REQUEST_HEAD`] bytes in all.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Vec<u8>, ReadFailure> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = (MAX_REQUEST_HEAD + 1 - head.len()).min(chunk.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|e| ReadFailure::Gone(format!("read failed: {e}")))?;
        if n == 0 {
            return Err(ReadFailure::Gone(if head.is_empty() {
                "closed before sending a request".to_owned()
            } else {
                "closed in the middle of its request".to_owned()
            }));
        }
        head.extend_from_slice(&chunk[..n]);
        // Parse only when a line may have ended: a trickling client costs a scan per line.
        if chunk[..n].contains(&b'\n') {
            let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
            match httparse::Request::new(&mut headers).parse(&head) {
                Ok(httparse::Status::Complete(_)) => return Ok(head),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ReadFailure::Refuse(Refusal::new(
                        431,
                        format!("more than {MAX_REQUEST_HEADERS} header fields"),
                    )));
                }
                Err(e) => {
                    return Err(ReadFailure::Refuse(Refusal::bad(format!(
                        "malformed HTTP request: {e}"
                    ))));
                }
            }
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(ReadFailure::Refuse(Refusal::new(
                431,
                format!("request head over {MAX_REQUEST_HEAD} bytes"),
            )));
        }
    }
}

/// What an acceptable upgrade request carries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// The `module_name` query parameter, unescaped and checked.
    pub(crate) module_name: String,
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub(crate) accept: String,
}

/// Checks a request head read by [`read_head`] (see the module docs for the order).
pub(crate) fn check_request(head: &[u8]) -> Result<Upgrade, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(Refusal::bad("incomplete HTTP request")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                431,
                format!("more than {MAX_REQUEST_HEADERS} header fields"),
            ));
        }
        Err(e) => return Err(Refusal::bad(format!("malformed HTTP request: {e}"))),
    };
    if request.method != Some("GET") {
        return Err(Refusal::bad("a WebSocket upgrade is a GET request"));
    }
    if request.version != Some(1) {
        return Err(Refusal::bad("a WebSocket upgrade needs HTTP/1.1"));
    }
    let target = request.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with(ETP_PATH) {
        return Err(Refusal::new(404, "not found: ETP is served on /isp-etp/"));
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|value| {
            value
                .split(|&b| b == b',')
                .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if header("host").is_none() {
        return Err(Refusal::bad("no Host header"));
    }
    if !has_token("upgrade", "websocket") {
        return Err(Refusal::bad(
            "not a WebSocket upgrade (no Upgrade: websocket)",
        ));
    }
    if !has_token("connection", "upgrade") {
        return Err(Refusal::bad(
            "not a WebSocket upgrade (no Connection: upgrade)",
        ));
    }
    match header("sec-websocket-version") {
        None => return Err(Refusal::bad("no Sec-WebSocket-Version header")),
        Some(version) if version.trim_ascii() != b"13" => {
            return Err(Refusal::new(
                426,
                "unsupported WebSocket version: this server speaks 13",
            ));
        }
        Some(_) => {}
    }
    let key = header("sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .ok_or_else(|| Refusal::bad("no Sec-WebSocket-Key header"))?;
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(Refusal::bad("Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    let module_name = module_name(query)?;
    if len != head.len() {
        return Err(Refusal::bad("data sent before the upgrade was answered"));
    }
    Ok(Upgrade {
        module_name,
        accept: accept_key(key),
    })
}

/// The `module_name` parameter of a query string, unescaped as Go does and checked.
fn module_name(query: &str) -> Result<String, Refusal> {
    let raw = query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (query_unescape(key).as_deref() == Some("module_name")).then_some(value)
    });
    let Some(raw) = raw else {
        return Err(Refusal::bad("module_name is required"));
    };
    let name = query_unescape(raw)
        .ok_or_else(|| Refusal::bad("module_name is not UTF-8 once unescaped"))?;
    if name.is_empty() {
        return Err(Refusal::bad("module_name is required"));
    }
    check_module_name(&name).map_err(|e| Refusal::bad(format!("invalid module_name: {e}")))?;
    Ok(name)
}

/// `Sec-WebSocket-Accept` for `key`: base64 of the SHA-1 of the key and the GUID.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut input = Vec::with_capacity(key.len() + WEBSOCKET_GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(WEBSOCKET_GUID);
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    STANDARD.encode(digest.as_ref())
}

/// The 101 answer.
pub(crate) fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// Answers `refusal`, stops writing, and reads and drops what the client still sends (at
/// most [`LINGER_BYTES`] for at most [`LINGER`]) so that the answer is read, not reset.
pub(crate) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, refusal: &Refusal) {
    if stream.write_all(&refusal.response()).await.is_err() {
        return;
    }
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
pub(crate) fn new_key() -> String {
    STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The upgrade request of the Go client for `target` (path and query) on `host` (`host:port`).
pub(crate) fn client_request(host: &str, target: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads the server's answer to [`client_request`] with `key`: on a valid 101, the bytes read
/// past it (the first frames, if the server sent them at once); else why not, with the body
/// of a refusal.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    key: &str,
) -> Result<Bytes, HandshakeError> {
    // Read straight into `buf` (no chunk on the future's stack), at most 512 bytes at a time.
    let mut buf = Vec::with_capacity(512);
    let (status, head_len, content_length) = loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(512);
        }
        let room = (MAX_REQUEST_HEAD + 1 - buf.len()).min(512);
        let n = (&mut *stream)
            .take(room as u64)
            .read_buf(&mut buf)
            .await
            .map_err(HandshakeError::Read)?;
        if n == 0 {
            return Err(HandshakeError::ClosedEarly);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or_default();
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                if status == 101 {
                    let upgraded = header("upgrade")
                        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket"));
                    if !upgraded {
                        return Err(HandshakeError::NotWebSocket);
                    }
                    let expected = accept_key(key.as_bytes());
                    if header("sec-websocket-accept").map(<[u8]>::trim_ascii)
                        != Some(expected.as_bytes())
                    {
                        return Err(HandshakeError::AcceptMismatch);
                    }
                    return Ok(Bytes::copy_from_slice(&buf[len..]));
                }
                let content_length = header("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok());
                break (status, len, content_length);
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => {
                return Err(HandshakeError::AnswerTooLong);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(HandshakeError::NotHttp(e)),
        }
    };
    // A refusal: its body (bounded) says why.
    let want = content_length
        .unwrap_or(MAX_REFUSAL_BODY)
        .min(MAX_REFUSAL_BODY);
    while buf.len() - head_len < want {
        let missing = (head_len + want - buf.len()) as u64;
        match (&mut *stream).take(missing).read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let body = &buf[head_len..(head_len + want).min(buf.len())];
    Err(HandshakeError::Refused {
        status,
        body: String::from_utf8_lossy(body).trim().to_owned(),
    })
}

/// A stream that first yields `prefix` (bytes already read past the upgrade answer), then
/// reads from `inner`; writes go to `inner`.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {target} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn v13(target: &str) -> Vec<u8> {
        request(target, "Sec-WebSocket-Version: 13\r\n")
    }

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_the_go_request_and_unescapes_the_module_name() {
        let upgrade = check_request(&v13("/isp-etp/?module_name=a+b")).unwrap();
        assert_eq!(upgrade.module_name, "a b");
        assert_eq!(upgrade.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let upgrade = check_request(&v13("/isp-etp/?x=1&module_name=%D0%BC")).unwrap();
        assert_eq!(upgrade.module_name, "м");
    }

    #[test]
    fn refusals_and_their_statuses() {
        let status = |head: &[u8]| check_request(head).unwrap_err().status;
        assert_eq!(status(&v13("/isp-etp/")), 400);
        assert_eq!(status(&v13("/isp-etp/?module_name=")), 400);
        assert_eq!(status(&v13("/isp-etp/?module_name=a%7C%7Cb")), 400);
        assert_eq!(status(&v13("/isp-etp/?module_name=__ack_x")), 400);
        assert_eq!(status(&v13("/isp-etp/?module_name=%FF")), 400);
        assert_eq!(status(&v13("/other?module_name=a")), 404);
        assert_eq!(
            status(&request(
                "/isp-etp/?module_name=a",
                "Sec-WebSocket-Version: 8\r\n"
            )),
            426
        );
        assert_eq!(status(&request("/isp-etp/?module_name=a", "")), 400);
        assert_eq!(
            status(b"GET /isp-etp/?module_name=a HTTP/1.1\r\nHost: h\r\n\r\n"),
            400
        );
        assert_eq!(
            status(
                b"GET /isp-etp/?module_name=a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            400
        );
        let mut pipelined = v13("/isp-etp/?module_name=a");
        pipelined.extend_from_slice(b"\x81\x80");
        assert_eq!(status(&pipelined), 400);
        let refusal = check_request(&v13("/isp-etp/?module_name=a%7C%7Cb")).unwrap_err();
        assert!(
            refusal.reason.contains("invalid module_name"),
            "{refusal:?}"
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, the check answers (never panics), and an acceptance
        /// carries a module name that passes `check_module_name`.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(upgrade) = check_request(&bytes) {
                proptest::prop_assert!(check_module_name(&upgrade.module_name).is_ok());
            }
        }

        /// Any module name: it comes back only if it passes `check_module_name`, else 400.
        #[test]
        fn any_module_name_is_checked(value in "([a-z_|+.]|%[0-9A-F]{2}|[\\x00-\\x1f]){0,40}") {
            let head = v13(&format!("/isp-etp/?module_name={value}"));
            match check_request(&head) {
                Ok(upgrade) => proptest::prop_assert!(check_module_name(&upgrade.module_name).is_ok()),
                Err(refusal) => proptest::prop_assert_eq!(refusal.status, 400),
            }
        }
    }

    #[tokio::test]
    async fn read_head_stops_at_the_limit_and_at_eof() {
        let mut endless: &[u8] = &[b'a'; MAX_REQUEST_HEAD * 2];
        match read_head(&mut endless).await {
            Err(ReadFailure::Refuse(refusal)) => assert_eq!(refusal.status, 431),
            other => panic!("expected a 431, got {other:?}"),
        }
        let mut cut: &[u8] = b"GET /isp-etp/ HTTP/1.1\r\nHost: h\r\n";
        assert!(matches!(
            read_head(&mut cut).await,
            Err(ReadFailure::Gone(_))
        ));
        let mut whole: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(read_head(&mut whole).await.unwrap(), whole_request());
    }

    fn whole_request() -> Vec<u8> {
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()
    }

    #[tokio::test]
    async fn the_client_reads_a_101_and_keeps_what_follows() {
        let key = new_key();
        assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);
        let mut answer = switching_protocols(&accept_key(key.as_bytes()));
        answer.extend_from_slice(b"\x81\x02hi");
        let leftover = read_response(&mut &answer[..], &key).await.unwrap();
        assert_eq!(&leftover[..], b"\x81\x02hi");
        let mut prefixed = Prefixed::new(leftover, &b"!"[..]);
        let mut all = Vec::new();
        prefixed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"\x81\x02hi!");
    }

    #[tokio::test]
    async fn the_client_reports_a_refusal_with_its_body_and_a_wrong_accept() {
        let refusal = Refusal::bad("module_name is required").response();
        let err = read_response(&mut &refusal[..], &new_key())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HandshakeError::Refused { status: 400, body } if body == "module_name is required"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "server answered HTTP 400: module_name is required"
        );
        let wrong = switching_protocols("AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let err = read_response(&mut &wrong[..], &new_key())
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::AcceptMismatch), "{err}");
        let err = read_response(&mut &b"HTTP/1.1 101 Swi"[..], &new_key())
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::ClosedEarly), "{err}");
    }

    #[test]
    fn a_426_names_the_version_it_speaks() {
        let response = Refusal::new(426, "v").response();
        let text = String::from_utf8(response).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nv"), "{text}");
    }
}
