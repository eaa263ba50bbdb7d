//! One WebSocket connection after its opening handshake: messages assembled from frames,
//! pings answered, the close echoed, and frames queued and written out together.
//!
//! # Why our own
//! The libraries we measured (crate docs) keep a read buffer per connection for its whole
//! life: 8 KiB from the start, and as large as the largest message once one came. A config
//! service holds thousands of idle connections, and a module's client received a routing
//! table of tens of KiB once; both pay for it as long as the connection lives. Here an idle
//! connection holds no buffer at all: the read buffer is released whenever the socket has
//! been read dry and every frame in it was decoded, and the write buffer once everything
//! queued is written. Framing itself is small ([`super::codec`]), and owning it also lets
//! text be checked as UTF-8 once on each side.
//!
//! # Buffers
//! - **Read.** A read goes into spare room of at least [`READ_CHUNK`] bytes (4 KiB, under
//!   the fake service's 8 KiB mmap threshold), or the rest of the frame being read when that
//!   is larger, so a large message is read into its own allocation, once. While the socket
//!   keeps filling the room, the next room doubles, up to [`MAX_READ_CHUNK`]; otherwise it
//!   follows the size of the last read (a burst read in pieces is read whole next time). A payload is
//!   cut out of the buffer without a copy; a fragmented message is copied together.
//! - **Write.** A frame header, and a payload of at most [`COPY_MAX`] bytes, are copied into
//!   a write buffer: the first frame's size when nothing is queued, else at least
//!   [`WRITE_CHUNK`] bytes; a full one is queued as it is and a new one begins, so nothing
//!   queued is moved again. A larger payload is queued as it is (a
//!   fan-out of one frame to many connections copies nothing). Everything queued goes out in
//!   vectored writes. A client masks its payload into the buffer, as it must (RFC 6455 §5.3).

use super::codec::{self, Header, MAX_HEADER, Opcode, Role, WsViolation};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncWrite};

/// The least spare room a read is given: 4 KiB.
pub(crate) const READ_CHUNK: usize = 4 << 10;
/// The most spare room a read is given while the socket keeps filling it: 64 KiB (a frame
/// larger than that gets exactly its own size).
pub(crate) const MAX_READ_CHUNK: usize = 64 << 10;
/// Payloads up to this size are copied into the write buffer; larger ones are queued by
/// reference. 1 KiB.
pub(crate) const COPY_MAX: usize = 1 << 10;
/// The least a new write buffer holds: 4 KiB (under the fake service's 8 KiB mmap threshold).
/// A full one is queued as it is and a new one begins, so queued bytes are never moved.
pub(crate) const WRITE_CHUNK: usize = 4 << 10;
/// The most buffers one vectored write is given.
const MAX_IOVECS: usize = 64;

/// A received message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// A text message, checked as UTF-8.
    Text(Bytes),
    /// A pong's payload.
    Pong(Bytes),
    /// The peer's close: its code (`None` when it sent none) and reason.
    Close(Option<u16>, String),
}

/// Why reading or writing failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer broke the framing rules.
    #[error(transparent)]
    Violation(#[from] WsViolation),
    /// A message over the read limit.
    #[error("message of {size} bytes over the limit of {limit}")]
    TooBig {
        /// Its size so far (the frame that crossed the limit included).
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A data frame after a close was sent or received.
    #[error("the connection is closing")]
    Closing,
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close and read on until the peer's.
    ClosedByUs,
    /// The peer sent a close; our reply is queued. Reading ends once it is written.
    ClosedByPeer,
    /// Nothing more is read: the close handshake is done, or reading failed.
    Done,
}

/// A WebSocket connection over `S`, after the handshake.
#[derive(Debug)]
pub(crate) struct Socket<S> {
    io: S,
    role: Role,
    state: State,
    read: ReadState,
    write: WriteQueue,
    /// The limit of a received message.
    max_message_size: usize,
    /// Queued bytes past which [`Socket::poll_ready`] writes before taking more.
    flush_threshold: usize,
    /// Whether a close frame was queued (ours, or the reply to the peer's).
    close_sent: bool,
    /// What [`Socket::next_buffered`] decoded but does not hand over (a close, a fault):
    /// [`Socket::poll_next`] returns it first.
    stashed: Option<Result<Message, SocketError>>,
    /// The waker of the task flushing, when a flush is pending: the reading side flushes
    /// its replies with it, so that the flushing task is not forgotten.
    flushing_waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct ReadState {
    /// Bytes read and not yet decoded; no allocation while idle.
    buf: BytesMut,
    /// The spare room the next read is given.
    chunk: usize,
    /// The fragmented message being assembled.
    partial: Option<BytesMut>,
}

/// Frames waiting to be written: `segments` in order, then `tail`.
#[derive(Debug, Default)]
struct WriteQueue {
    segments: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl WriteQueue {
    fn push(&mut self, opcode: Opcode, payload: &Bytes, mask: Option<[u8; 4]>) {
        let copied = if mask.is_some() || payload.len() <= COPY_MAX {
            payload.len()
        } else {
            0
        };
        self.make_room(MAX_HEADER + copied);
        let before = self.tail.len();
        codec::put_header(&mut self.tail, opcode, payload.len(), mask);
        if copied == 0 {
            self.len += self.tail.len() - before + payload.len();
            // What was queued before, and this header, go before the payload.
            self.segments.push_back(self.tail.split().freeze());
            self.segments.push_back(payload.clone());
            return;
        }
        let start = self.tail.len();
        self.tail.extend_from_slice(payload);
        if let Some(mask) = mask {
            codec::apply_mask(&mut self.tail[start..], mask);
        }
        self.len += self.tail.len() - before;
    }

    /// Makes room for `needed` more bytes in the tail without moving what it holds: a full
    /// tail is queued as a segment and a new one of at least [`WRITE_CHUNK`] begins. The
    /// first frame of an empty queue gets just its size (a server sending one small frame to
    /// each of thousands of connections allocates that, not 4 KiB each).
    fn make_room(&mut self, needed: usize) {
        if self.tail.capacity() - self.tail.len() >= needed {
            return;
        }
        let size = if self.len == 0 {
            needed
        } else {
            needed.max(WRITE_CHUNK)
        };
        if !self.tail.is_empty() {
            self.segments.push_back(self.tail.split().freeze());
        }
        self.tail = BytesMut::with_capacity(size);
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes once (vectored when the stream says it does that well); returns the bytes
    /// written.
    fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let written = if io.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for segment in self.segments.iter().take(MAX_IOVECS - 1) {
                slices[count] = IoSlice::new(segment);
                count += 1;
            }
            if !self.tail.is_empty() && count < MAX_IOVECS {
                slices[count] = IoSlice::new(&self.tail);
                count += 1;
            }
            ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
        } else {
            let first = self.segments.front().map_or(&self.tail[..], |s| &s[..]);
            ready!(Pin::new(&mut *io).poll_write(cx, first))?
        };
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.advance(written);
        Poll::Ready(Ok(written))
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            match self.segments.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    self.segments.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    n = 0;
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
        if self.len == 0 {
            // Written out: an idle connection holds no write buffer.
            self.tail = BytesMut::new();
            self.segments = VecDeque::new();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// Takes over `io` as `role`, with a read limit and a write threshold (at least 1).
    pub(crate) fn new(io: S, role: Role, max_message_size: usize, flush_threshold: usize) -> Self {
        Self {
            io,
            role,
            state: State::Open,
            read: ReadState {
                chunk: READ_CHUNK,
                ..ReadState::default()
            },
            write: WriteQueue::default(),
            max_message_size,
            flush_threshold: flush_threshold.max(1),
            close_sent: false,
            stashed: None,
            flushing_waker: None,
        }
    }

    /// Queues a final frame. A data frame or a ping after a close was sent or received is
    /// [`SocketError::Closing`]; a close after one was queued does nothing. A close after
    /// reading failed is the close for the fault.
    pub(crate) fn queue(&mut self, opcode: Opcode, payload: &Bytes) -> Result<(), SocketError> {
        if opcode == Opcode::Close {
            if self.close_sent {
                return Ok(());
            }
            self.close_sent = true;
            if self.state == State::Open {
                self.state = State::ClosedByUs;
            }
        } else if self.state != State::Open || self.close_sent {
            return Err(SocketError::Closing);
        }
        self.push(opcode, payload);
        Ok(())
    }

    fn push(&mut self, opcode: Opcode, payload: &Bytes) {
        let mask = (self.role == Role::Client).then(rand::random::<[u8; 4]>);
        self.write.push(opcode, payload, mask);
    }

    /// Ready to take a frame: writes first while more than the threshold is queued.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SocketError>> {
        while self.write.len >= self.flush_threshold {
            if let Err(err) = ready!(self.poll_write_once(cx)) {
                return Poll::Ready(Err(err));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_once(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SocketError>> {
        match self.write.poll_write(&mut self.io, cx) {
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(err)) => {
                self.flushing_waker = None;
                self.state = State::Done;
                Poll::Ready(Err(err.into()))
            }
            Poll::Pending => {
                self.set_flushing_waker(cx.waker());
                Poll::Pending
            }
        }
    }

    /// Writes out everything queued, then flushes the stream.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SocketError>> {
        while !self.write.is_empty() {
            ready!(self.poll_write_once(cx))?;
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(result) => {
                self.flushing_waker = None;
                if result.is_err() {
                    self.state = State::Done;
                }
                Poll::Ready(result.map_err(SocketError::from))
            }
            Poll::Pending => {
                self.set_flushing_waker(cx.waker());
                Poll::Pending
            }
        }
    }

    /// Writes out everything queued and shuts the stream's writing down (the peer reads its
    /// end): for a failed connection (RFC 6455 §7.1.7) on either side, and on a server once
    /// the close handshake is done (§7.1.1: the server closes the TCP connection first).
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SocketError>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.io)
            .poll_shutdown(cx)
            .map_err(SocketError::from)
    }

    /// Which end this is.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    fn set_flushing_waker(&mut self, waker: &Waker) {
        if !self
            .flushing_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            self.flushing_waker = Some(waker.clone());
        }
    }

    /// The next message. `None` once the close handshake is done (the peer's close was
    /// returned, and our reply written) or the peer ended the stream. A ping is answered
    /// (the pong written with the next flush, or with this read's) and not returned.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, SocketError>>> {
        if let Some(stashed) = self.stashed.take() {
            return Poll::Ready(Some(stashed));
        }
        match self.state {
            State::Done => return Poll::Ready(None),
            State::ClosedByPeer => {
                ready!(self.poll_flush(cx))?;
                self.state = State::Done;
                return Poll::Ready(None);
            }
            State::Open | State::ClosedByUs => {}
        }
        loop {
            match self.decode() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(err) => {
                    self.stop_reading();
                    return Poll::Ready(Some(Err(err)));
                }
            }
            // Before waiting for more, write out what is queued (a pong, or frames the
            // writer left), with the flushing task's waker if there is one, so that it is
            // woken when the socket takes more.
            if !self.write.is_empty() {
                let waker = self.flushing_waker.clone();
                let mut flush_cx = Context::from_waker(waker.as_ref().unwrap_or(cx.waker()));
                if let Poll::Ready(Err(err)) = self.poll_flush(&mut flush_cx) {
                    return Poll::Ready(Some(Err(err)));
                }
            }
            match ready!(self.poll_read(cx)) {
                Ok(0) => {
                    self.stop_reading();
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(err) => {
                    self.stop_reading();
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
        }
    }

    /// The next text message or pong among the bytes already read, without reading or
    /// writing. Anything else decoded (a close, a fault) is kept for [`Socket::poll_next`].
    pub(crate) fn next_buffered(&mut self) -> Option<Message> {
        if self.stashed.is_some() || !matches!(self.state, State::Open | State::ClosedByUs) {
            return None;
        }
        match self.decode() {
            Ok(Some(message @ (Message::Text(_) | Message::Pong(_)))) => Some(message),
            Ok(Some(close)) => {
                self.stashed = Some(Ok(close));
                None
            }
            Ok(None) => None,
            Err(err) => {
                self.stop_reading();
                self.stashed = Some(Err(err));
                None
            }
        }
    }

    /// Reading ended (a fault, or the stream's end): what was read is dropped.
    fn stop_reading(&mut self) {
        self.state = State::Done;
        self.read.buf = BytesMut::new();
        self.read.partial = None;
    }

    /// Reads once into spare room of at least the current chunk (see the module docs). The
    /// next chunk doubles when this read filled its room, and otherwise follows what came:
    /// twice this read, rounded up to a power of two, within [`READ_CHUNK`] and
    /// [`MAX_READ_CHUNK`].
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let read = &mut self.read;
        if read.buf.capacity() - read.buf.len() < read.chunk {
            read.buf.reserve(read.chunk);
        }
        let room = read.buf.capacity() - read.buf.len();
        let n = match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut read.buf) {
            Poll::Ready(result) => result?,
            Poll::Pending => {
                // Nothing to read: a connection waiting with nothing buffered holds no room.
                if read.buf.is_empty() {
                    read.buf = BytesMut::new();
                }
                return Poll::Pending;
            }
        };
        read.chunk = if n == room {
            (read.chunk * 2).min(MAX_READ_CHUNK)
        } else {
            (2 * n)
                .next_power_of_two()
                .clamp(READ_CHUNK, MAX_READ_CHUNK)
        };
        Poll::Ready(Ok(n))
    }

    /// Decodes what the buffer holds into the next message, handling control frames on the
    /// way. `Ok(None)`: more bytes are needed (room for the frame being read is reserved,
    /// or the buffer released when it is empty).
    fn decode(&mut self) -> Result<Option<Message>, SocketError> {
        loop {
            let Some(header) = codec::parse_header(&self.read.buf, self.role)? else {
                self.release_or_reserve(MAX_HEADER);
                return Ok(None);
            };
            self.check_size(&header)?;
            // Under the read limit, or a control frame of at most 125 bytes: fits usize.
            let len = header.len as usize;
            if self.read.buf.len() < header.size + len {
                self.release_or_reserve(header.size + len);
                return Ok(None);
            }
            self.read.buf.advance(header.size);
            let mut payload = self.read.buf.split_to(len);
            if let Some(mask) = header.mask {
                codec::apply_mask(&mut payload, mask);
            }
            if let Some(message) = self.frame(header, payload)? {
                if self.read.buf.is_empty() {
                    self.read.buf = BytesMut::new();
                }
                return Ok(Some(message));
            }
        }
    }

    /// Refuses a data frame that takes the message over the limit, and one that breaks
    /// the fragmentation rules, before its payload is read.
    fn check_size(&self, header: &Header) -> Result<(), SocketError> {
        let partial = self.read.partial.as_ref().map(BytesMut::len);
        match header.opcode {
            Opcode::Continuation if partial.is_none() => {
                return Err(WsViolation::UnexpectedContinuation.into());
            }
            Opcode::Text | Opcode::Binary if partial.is_some() => {
                return Err(WsViolation::UnfinishedMessage.into());
            }
            Opcode::Binary => return Err(WsViolation::Binary.into()),
            _ => {}
        }
        if !header.opcode.is_control() {
            let size = partial.unwrap_or(0) as u64 + header.len;
            if size > self.max_message_size as u64 {
                return Err(SocketError::TooBig {
                    size,
                    limit: self.max_message_size,
                });
            }
        }
        Ok(())
    }

    /// When the buffer is empty, drops it (an idle connection holds nothing); otherwise
    /// makes room for `needed` bytes in all.
    fn release_or_reserve(&mut self, needed: usize) {
        let buf = &mut self.read.buf;
        if buf.is_empty() {
            *buf = BytesMut::new();
        } else if needed > buf.capacity() {
            buf.reserve(needed - buf.len());
        }
    }

    /// One frame's meaning: a message, or `None` for a fragment or an answered ping.
    fn frame(&mut self, header: Header, payload: BytesMut) -> Result<Option<Message>, SocketError> {
        match header.opcode {
            Opcode::Text if header.fin => Ok(Some(Message::Text(text(payload)?))),
            Opcode::Text => {
                self.read.partial = Some(payload);
                Ok(None)
            }
            Opcode::Continuation => {
                let partial = self.read.partial.as_mut().expect("checked before");
                partial.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                let whole = self.read.partial.take().expect("checked before");
                Ok(Some(Message::Text(text(whole)?)))
            }
            Opcode::Ping => {
                if self.state == State::Open {
                    self.push(Opcode::Pong, &payload.freeze());
                }
                Ok(None)
            }
            Opcode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            Opcode::Close => {
                let (code, reason) = codec::parse_close(&payload)?;
                let message = Message::Close(code, reason.to_owned());
                if self.state == State::ClosedByUs {
                    self.state = State::Done;
                } else {
                    // Echo the code (RFC 6455 §5.5.1), without the reason.
                    let echo = code.map_or_else(Bytes::new, |code| {
                        Bytes::copy_from_slice(&code.to_be_bytes())
                    });
                    if !self.close_sent {
                        self.close_sent = true;
                        self.push(Opcode::Close, &echo);
                    }
                    self.state = State::ClosedByPeer;
                }
                self.read.buf = BytesMut::new();
                self.read.partial = None;
                Ok(Some(message))
            }
            Opcode::Binary => unreachable!("refused before its payload is read"),
        }
    }
}

/// A text payload, checked as UTF-8.
fn text(payload: BytesMut) -> Result<Bytes, WsViolation> {
    if crate::is_utf8(&payload) {
        Ok(payload.freeze())
    } else {
        Err(WsViolation::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Our server socket and the raw client end of a pipe.
    fn server() -> (Socket<DuplexStream>, DuplexStream) {
        let (ours, raw) = tokio::io::duplex(1 << 20);
        (Socket::new(ours, Role::Server, 1 << 20, 32 << 10), raw)
    }

    /// A masked final frame, as a client sends it.
    fn client_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = Vec::new();
        codec::put_header(&mut frame, opcode, payload.len(), Some(mask));
        let start = frame.len();
        frame.extend_from_slice(payload);
        codec::apply_mask(&mut frame[start..], mask);
        frame
    }

    async fn next(socket: &mut Socket<DuplexStream>) -> Message {
        poll_fn(|cx| socket.poll_next(cx))
            .await
            .expect("a message")
            .expect("no error")
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer_after_a_large_message() {
        let (mut socket, mut raw) = server();
        let large = vec![b'x'; 100 << 10];
        let mut bytes = client_frame(Opcode::Text, &large);
        bytes.extend(client_frame(Opcode::Text, b"small"));
        raw.write_all(&bytes).await.unwrap();
        assert_eq!(next(&mut socket).await, Message::Text(Bytes::from(large)));
        assert_eq!(
            next(&mut socket).await,
            Message::Text(Bytes::from_static(b"small"))
        );
        // Read dry and all decoded: nothing held.
        let pending = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
        assert!(pending);
        assert_eq!(socket.read.buf.capacity(), 0);
        assert!(socket.read.partial.is_none());
    }

    #[tokio::test]
    async fn the_write_buffer_is_dropped_once_written_out() {
        let (mut socket, mut raw) = server();
        for size in [10, 2000, 100 << 10] {
            socket
                .queue(Opcode::Text, &Bytes::from(vec![b'y'; size]))
                .unwrap();
        }
        assert!(socket.write.tail.capacity() > 0);
        poll_fn(|cx| socket.poll_flush(cx)).await.unwrap();
        assert_eq!(socket.write.tail.capacity(), 0);
        assert_eq!(socket.write.segments.capacity(), 0);
        // The three frames arrived whole and in order (unmasked: we are the server).
        let mut wire = vec![0; 2 + 10 + 4 + 2000 + 10 + (100 << 10)];
        raw.read_exact(&mut wire).await.unwrap();
        assert_eq!(&wire[..2], &[0x81, 10]);
        assert_eq!(&wire[12..16], &[0x81, 126, 0x07, 0xd0]);
        assert_eq!(&wire[2016..2018], &[0x81, 127]);
        assert!(wire[2026..].iter().all(|b| *b == b'y'));
    }

    #[tokio::test]
    async fn a_fragmented_message_over_the_limit_is_refused_before_its_payload() {
        let (ours, mut raw) = tokio::io::duplex(1 << 20);
        let mut socket = Socket::new(ours, Role::Server, 100, 1024);
        // 60 bytes, then the header of 60 more (the payload never comes).
        let mut first = client_frame(Opcode::Text, &[b'a'; 60]);
        first[0] &= 0x7f; // not final
        let mut second = client_frame(Opcode::Continuation, &[b'b'; 60]);
        second.truncate(6);
        raw.write_all(&first).await.unwrap();
        raw.write_all(&second).await.unwrap();
        let result = poll_fn(|cx| socket.poll_next(cx)).await.unwrap();
        assert!(
            matches!(
                result,
                Err(SocketError::TooBig {
                    size: 120,
                    limit: 100
                })
            ),
            "{result:?}"
        );
        assert_eq!(socket.read.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn buffered_messages_come_without_a_read_and_a_close_waits_for_poll_next() {
        let (mut socket, mut raw) = server();
        let mut bytes = client_frame(Opcode::Text, b"one");
        bytes.extend(client_frame(Opcode::Text, b"two"));
        bytes.extend(client_frame(Opcode::Pong, b"p"));
        bytes.extend(client_frame(Opcode::Close, b"\x03\xe8bye"));
        bytes.extend(client_frame(Opcode::Text, b"after the close"));
        raw.write_all(&bytes).await.unwrap();
        // Nothing read yet: nothing buffered.
        assert_eq!(socket.next_buffered(), None);
        assert_eq!(
            next(&mut socket).await,
            Message::Text(Bytes::from_static(b"one"))
        );
        assert_eq!(
            socket.next_buffered(),
            Some(Message::Text(Bytes::from_static(b"two")))
        );
        assert_eq!(
            socket.next_buffered(),
            Some(Message::Pong(Bytes::from_static(b"p")))
        );
        // The close is decoded but kept for poll_next, and asked again, stays kept.
        assert_eq!(socket.next_buffered(), None);
        assert_eq!(socket.next_buffered(), None);
        assert_eq!(
            next(&mut socket).await,
            Message::Close(Some(1000), "bye".to_owned())
        );
        // Nothing after the close.
        assert!(poll_fn(|cx| socket.poll_next(cx)).await.is_none());
    }

    #[tokio::test]
    async fn a_fault_found_while_draining_is_returned_by_poll_next() {
        let (mut socket, mut raw) = server();
        let mut bytes = client_frame(Opcode::Text, b"one");
        bytes.extend(client_frame(Opcode::Text, b"two"));
        bytes.extend([0x81, 0x01, b'x']); // unmasked
        raw.write_all(&bytes).await.unwrap();
        assert_eq!(
            next(&mut socket).await,
            Message::Text(Bytes::from_static(b"one"))
        );
        assert!(socket.next_buffered().is_some());
        assert_eq!(socket.next_buffered(), None);
        let result = poll_fn(|cx| socket.poll_next(cx)).await.unwrap();
        assert!(
            matches!(result, Err(SocketError::Violation(WsViolation::Unmasked))),
            "{result:?}"
        );
        assert!(poll_fn(|cx| socket.poll_next(cx)).await.is_none());
    }
}
