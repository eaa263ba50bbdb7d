//! Accepting isp-kit's empty `:authority`.
//!
//! isp-kit's client dials `isp:///` through a manual resolver, so grpc-go sends every request
//! with `:authority` present and empty. The `h2` crate (under hyper and tonic) parses
//! `:authority` into a URI authority, fails on the empty string, and resets the stream with
//! `PROTOCOL_ERROR` (h2 issue #345, grpc-go issue #3854); it has no option to relax this. h2
//! does accept a request *without* `:authority` (RFC 9113 makes it optional), so the server
//! drops the empty one before h2 sees it.
//!
//! # Mechanism
//! [`AuthorityFilter`] wraps each accepted connection's read side (the write side is passed
//! through untouched) and walks the client's HTTP/2 frames: the connection preface and every
//! frame except `HEADERS` and `CONTINUATION` are passed through byte for byte. A header block
//! (a `HEADERS` frame and its `CONTINUATION`s) is collected whole and rewritten by an HPACK
//! rewriter (crate-private `hpack` module) that follows the client's dynamic table exactly.
//! As long as the client never *indexes* an empty `:authority` (grpc-go sends it as static
//! entry 1), h2's table mirrors the client's and the block is forwarded byte for byte minus
//! that field. If the client ever indexes one, the connection switches for good to
//! self-contained blocks: references into the client's table become literals without
//! indexing (strings kept as the client encoded them, Huffman or not), additions are recorded
//! and forwarded without indexing, and h2's table is not referenced again. Either way h2 never
//! sees an empty `:authority` and its table never drifts. The block is then written as one
//! `HEADERS` frame (same
//! stream, `END_STREAM` and priority kept, padding removed) and `CONTINUATION`s of at most
//! 16 384 bytes (the smallest maximum frame size a peer must accept). A non-empty
//! `:authority` is kept.
//!
//! Why this and not something else: patching or forking `h2` means shipping third-party code;
//! a proxy process in front doubles the hops; dropping only the bytes of the field is unsafe
//! because HPACK is stateful (the field may be added to, or referenced from, the dynamic
//! table). Following the table and rewriting only what depends on it keeps both HPACK
//! contexts consistent; strings are Huffman-decoded only where a length or a name must be
//! known. The `unary` bench measures what the filter costs a call (its row without the
//! filter); the figures are in the repository's `docs/performance.md`.
//!
//! # Limits
//! A header block larger than [`MAX_HEADER_BLOCK`] bytes, a frame sequence that breaks the
//! `CONTINUATION` rules, or a block that does not decode (or raises the dynamic table above
//! the 4 096 bytes the server allows) is a connection error: the read fails with
//! `InvalidData`, one warning is logged, and hyper closes the connection.

use bytes::{Buf, BytesMut};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The largest header block (all its frames' fragments together) accepted: 1 MiB.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The HPACK dynamic table size the server allows the client (the HTTP/2 default, which the
/// server does not change).
const MAX_TABLE_SIZE: usize = 4096;
/// The largest frame payload written (the smallest `SETTINGS_MAX_FRAME_SIZE` allowed).
const MAX_FRAME_PAYLOAD: usize = 16_384;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why a client's frames were refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The frames break HTTP/2's framing rules for header blocks.
    #[error("malformed HTTP/2 header frames: {0}")]
    Framing(&'static str),
    /// A header block is larger than [`MAX_HEADER_BLOCK`].
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    /// A header block does not decode.
    #[error("HPACK decoding failed: {0}")]
    Hpack(#[from] crate::hpack::HpackError),
}

struct Pending {
    stream_id: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

enum State {
    Preface,
    FrameHeader,
    Passthrough(usize),
}

/// The sans-IO half: bytes from the client in, rewritten bytes out.
pub(crate) struct Rewriter {
    state: State,
    input: BytesMut,
    pending: Option<Pending>,
    hpack: crate::hpack::Rewriter,
    block: Vec<u8>,
}

impl Rewriter {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Preface,
            input: BytesMut::new(),
            pending: None,
            hpack: crate::hpack::Rewriter::new(MAX_TABLE_SIZE),
            block: Vec::new(),
        }
    }

    /// Feeds bytes read from the client; appends what h2 should read to `out`.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), FilterError> {
        // Fast path: a frame body passing through, nothing buffered.
        let mut data = data;
        if self.input.is_empty()
            && let State::Passthrough(remaining) = &mut self.state
        {
            let n = (*remaining).min(data.len());
            out.extend_from_slice(&data[..n]);
            *remaining -= n;
            data = &data[n..];
            if *remaining == 0 {
                self.state = State::FrameHeader;
            }
        }
        self.input.extend_from_slice(data);
        self.process(out)
    }

    fn process(&mut self, out: &mut BytesMut) -> Result<(), FilterError> {
        loop {
            match &mut self.state {
                State::Preface => {
                    if self.input.len() < PREFACE.len() {
                        return Ok(());
                    }
                    out.extend_from_slice(&self.input[..PREFACE.len()]);
                    self.input.advance(PREFACE.len());
                    self.state = State::FrameHeader;
                }
                State::Passthrough(remaining) => {
                    let n = (*remaining).min(self.input.len());
                    if n == 0 && *remaining > 0 {
                        return Ok(());
                    }
                    out.extend_from_slice(&self.input[..n]);
                    self.input.advance(n);
                    *remaining -= n;
                    if *remaining == 0 {
                        self.state = State::FrameHeader;
                    }
                }
                State::FrameHeader => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let h = &self.input[..FRAME_HEADER_LEN];
                    let len =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let kind = h[3];
                    if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION {
                        if self.pending.is_some() {
                            return Err(FilterError::Framing("expected CONTINUATION"));
                        }
                        out.extend_from_slice(h);
                        self.input.advance(FRAME_HEADER_LEN);
                        self.state = State::Passthrough(len);
                        continue;
                    }
                    if len > MAX_HEADER_BLOCK {
                        return Err(FilterError::TooLarge);
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        self.input
                            .reserve(FRAME_HEADER_LEN + len - self.input.len());
                        return Ok(());
                    }
                    let frame = self.input.split_to(FRAME_HEADER_LEN + len);
                    self.header_frame(&frame, out)?;
                }
            }
        }
    }

    fn header_frame(&mut self, frame: &[u8], out: &mut BytesMut) -> Result<(), FilterError> {
        let (head, payload) = frame.split_at(FRAME_HEADER_LEN);
        let kind = head[3];
        let flags = head[4];
        let stream_id = [head[5], head[6], head[7], head[8]];
        let fragment = if kind == TYPE_HEADERS {
            if self.pending.is_some() {
                return Err(FilterError::Framing("HEADERS inside a header block"));
            }
            let mut rest = payload;
            let mut pad = 0usize;
            if flags & FLAG_PADDED != 0 {
                let (&p, r) = rest
                    .split_first()
                    .ok_or(FilterError::Framing("PADDED without pad length"))?;
                pad = usize::from(p);
                rest = r;
            }
            let mut priority = None;
            if flags & FLAG_PRIORITY != 0 {
                if rest.len() < 5 {
                    return Err(FilterError::Framing("PRIORITY fields missing"));
                }
                priority = Some([rest[0], rest[1], rest[2], rest[3], rest[4]]);
                rest = &rest[5..];
            }
            if pad > rest.len() {
                return Err(FilterError::Framing("padding longer than payload"));
            }
            self.pending = Some(Pending {
                stream_id,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                block: Vec::new(),
            });
            &rest[..rest.len() - pad]
        } else {
            match &self.pending {
                Some(p) if p.stream_id == stream_id => {}
                Some(_) => return Err(FilterError::Framing("CONTINUATION on another stream")),
                None => return Err(FilterError::Framing("CONTINUATION without HEADERS")),
            }
            payload
        };
        let pending = self.pending.as_mut().expect("set above");
        if pending.block.len() + fragment.len() > MAX_HEADER_BLOCK {
            return Err(FilterError::TooLarge);
        }
        pending.block.extend_from_slice(fragment);
        if flags & FLAG_END_HEADERS != 0 {
            let pending = self.pending.take().expect("set above");
            self.emit(&pending, out)?;
        }
        Ok(())
    }

    fn emit(&mut self, pending: &Pending, out: &mut BytesMut) -> Result<(), FilterError> {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        let rewritten = self.hpack.rewrite(&pending.block, &mut block);
        let result = rewritten
            .map_err(FilterError::from)
            .map(|()| write_frames(pending, &block, out));
        self.block = block;
        result
    }
}

/// Writes a rewritten header block as one HEADERS frame and its CONTINUATIONs.
fn write_frames(pending: &Pending, block: &[u8], out: &mut BytesMut) {
    let mut first = true;
    let mut rest = block;
    loop {
        let (kind, mut flags, prefix): (u8, u8, &[u8]) = if first {
            let mut flags = 0;
            if pending.end_stream {
                flags |= FLAG_END_STREAM;
            }
            match &pending.priority {
                Some(p) => (TYPE_HEADERS, flags | FLAG_PRIORITY, &p[..]),
                None => (TYPE_HEADERS, flags, &[][..]),
            }
        } else {
            (TYPE_CONTINUATION, 0, &[][..])
        };
        let room = MAX_FRAME_PAYLOAD - prefix.len();
        let n = room.min(rest.len());
        if n == rest.len() {
            flags |= FLAG_END_HEADERS;
        }
        let len = prefix.len() + n;
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.extend_from_slice(&pending.stream_id);
        out.extend_from_slice(prefix);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        first = false;
        if rest.is_empty() {
            return;
        }
    }
}

/// A connection whose reads pass through the header-block filter; writes go straight through.
///
/// It can also be cut off from the server's side ([`AuthorityFilter::abort_on`]): once the
/// token is cancelled, reads and writes fail with `ConnectionAborted`, which ends the HTTP/2
/// connection even when the client does not cooperate with a graceful shutdown.
pub struct AuthorityFilter<IO> {
    io: IO,
    rewriter: Rewriter,
    scratch: Box<[u8]>,
    out: BytesMut,
    eof: bool,
    enabled: bool,
    abort: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    token: Option<CancellationToken>,
}

impl<IO> AuthorityFilter<IO> {
    /// Wraps a server-side connection.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            rewriter: Rewriter::new(),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            out: BytesMut::new(),
            eof: false,
            enabled: true,
            abort: None,
            token: None,
        }
    }

    /// Wraps a connection without filtering anything (reads go straight through).
    pub fn passthrough(io: IO) -> Self {
        Self {
            io,
            rewriter: Rewriter::new(),
            scratch: Box::default(),
            out: BytesMut::new(),
            eof: false,
            enabled: false,
            abort: None,
            token: None,
        }
    }

    /// Fails every read and write from the moment `token` is cancelled.
    #[must_use]
    pub fn abort_on(mut self, token: CancellationToken) -> Self {
        self.abort = Some(Box::pin(token.clone().cancelled_owned()));
        self.token = Some(token);
        self
    }

    /// Whether the connection was cut. Cheap when it was not: the token is polled (and the
    /// waker registered) only on the way to `Pending`, see [`Self::park`].
    fn aborted(&self) -> bool {
        self.abort.is_some()
            && self
                .token
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
    }

    /// On the way to returning `Pending`: registers the waker with the abort token, and says
    /// whether it fired meanwhile.
    fn park(&mut self, cx: &mut Context<'_>) -> bool {
        self.abort
            .as_mut()
            .is_some_and(|abort| abort.as_mut().poll(cx).is_ready())
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFilter<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.aborted() {
            return Poll::Ready(Err(aborted()));
        }
        if !this.enabled {
            let polled = Pin::new(&mut this.io).poll_read(cx, buf);
            if polled.is_pending() && this.park(cx) {
                return Poll::Ready(Err(aborted()));
            }
            return polled;
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            if polled.is_pending() && this.park(cx) {
                return Poll::Ready(Err(aborted()));
            }
            ready!(polled)?;
            if n == 0 {
                this.eof = true;
                continue;
            }
            if let Err(e) = this.rewriter.feed(&this.scratch[..n], &mut this.out) {
                tracing::warn!(error = %e, "grpc server: refusing a client's HTTP/2 header frames");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFilter<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.aborted() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if polled.is_pending() && this.park(cx) {
            return Poll::Ready(Err(aborted()));
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.aborted() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        if polled.is_pending() && this.park(cx) {
            return Poll::Ready(Err(aborted()));
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.aborted() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if polled.is_pending() && this.park(cx) {
            return Poll::Ready(Err(aborted()));
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "grpc server shut down")
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFilter<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
    fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0);
        encode_int(out, name.len(), 0);
        out.extend_from_slice(name);
        encode_int(out, value.len(), 0);
        out.extend_from_slice(value);
    }

    /// An HPACK string length: 7-bit prefix, H bit clear (RFC 7541 §5.1).
    fn encode_int(out: &mut Vec<u8>, mut value: usize, high: u8) {
        const MAX: usize = 127;
        if value < MAX {
            out.push(high | value as u8);
            return;
        }
        out.push(high | MAX as u8);
        value -= MAX;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn decode_headers(out: &[u8]) -> Vec<(String, String)> {
        let mut d = loona_hpack::Decoder::new();
        d.set_max_allowed_table_size(4096);
        let mut rest = &out[PREFACE.len()..];
        let mut block = Vec::new();
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[9..9 + len];
            if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                let skip = if flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
                block.extend_from_slice(&payload[skip..]);
            }
            rest = &rest[9 + len..];
        }
        d.decode(&block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn drops_indexed_empty_authority_byte_by_byte() {
        // :method POST (idx 3), :scheme http (idx 6), :path literal, :authority "" (idx 1).
        let mut block = vec![0x83, 0x86, 0x04, 0x03];
        block.extend_from_slice(b"/a/");
        block.push(0x81);
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"hello"));
        let mut r = Rewriter::new();
        let mut out = BytesMut::new();
        // One byte at a time: every split point must work.
        for b in &input {
            r.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        let headers = decode_headers(&out);
        assert_eq!(
            headers,
            [(":method", "POST"), (":scheme", "http"), (":path", "/a/")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(out.ends_with(b"hello"));
    }

    #[test]
    fn follows_the_dynamic_table_and_keeps_a_real_authority() {
        // Block 1: :authority "" with incremental indexing (dynamic index 62), plus a padded
        // frame split with a CONTINUATION. Block 2: indexed 62 (the empty authority again),
        // and a non-empty authority that must stay.
        let mut b1 = vec![0x41, 0x00, 0x83];
        let mut payload = vec![2u8];
        payload.extend_from_slice(&b1[..2]);
        payload.extend_from_slice(&[0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_END_STREAM,
            1,
            &payload,
        ));
        input.extend(frame(
            TYPE_CONTINUATION,
            FLAG_END_HEADERS,
            1,
            &b1.split_off(2),
        ));
        let b2 = [0xbe, 0x01, 0x01, b'h'];
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &b2));
        let mut r = Rewriter::new();
        let mut out = BytesMut::new();
        r.feed(&input, &mut out).unwrap();
        let headers = decode_headers(&out);
        assert_eq!(
            headers,
            [(":method", "POST"), (":authority", "h")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn large_blocks_are_split_and_bad_input_is_an_error() {
        let mut block = Vec::new();
        encode_literal(&mut block, b"x-big", &vec![b'a'; 40_000]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        let mut out = BytesMut::new();
        Rewriter::new().feed(&input, &mut out).unwrap();
        assert_eq!(decode_headers(&out)[0].1.len(), 40_000);

        let mut bad = PREFACE.to_vec();
        bad.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x81]));
        assert!(matches!(
            Rewriter::new().feed(&bad, &mut BytesMut::new()),
            Err(FilterError::Framing(_))
        ));
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0x0f],
        ));
        assert!(matches!(
            Rewriter::new().feed(&bad, &mut BytesMut::new()),
            Err(FilterError::Hpack(_))
        ));
        let mut huge = PREFACE.to_vec();
        huge.extend_from_slice(&[0x7f, 0xff, 0xff, TYPE_HEADERS, 0, 0, 0, 0, 1]);
        assert!(matches!(
            Rewriter::new().feed(&huge, &mut BytesMut::new()),
            Err(FilterError::TooLarge)
        ));
    }
}
