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
//! - **Read.** With nothing buffered and no flood going, a read goes into [`READ_CHUNK`]
//!   bytes on the stack, and what came is kept in an allocation of its size: a read that finds
//!   nothing allocates nothing, and a message that was the whole read is handed over in that
//!   allocation, not as a share of a larger buffer (a share allocates its reference count).
//!   Otherwise a read goes into spare room of at least [`READ_CHUNK`] bytes (4 KiB, under
//!   the fake service's 8 KiB mmap threshold), or the rest of the frame being read when that
//!   is larger, so a large message is read into its own allocation, once. While the socket
//!   keeps filling the room, the next room doubles, up to [`MAX_READ_CHUNK`]; otherwise it
//!   follows the size of the last read (a burst read in pieces is read whole next time).
//!   A message handed over shares its read's allocation: one kept for long keeps that
//!   allocation (up to [`MAX_READ_CHUNK`]) alive. A peer's ping is answered with one pong at
//!   most waiting (a later ping replaces an unanswered one), so a peer that pings and never
//!   reads costs one pong; tasks whose flush waits are woken by whichever completes it. A payload is
//!   cut out of the buffer without a copy; a fragmented message is copied together.
//! - **Write.** A frame header, and a payload of at most [`COPY_MAX`] bytes, are copied into
//!   a write buffer: the first frame's size when nothing is queued, else at least
//!   [`WRITE_CHUNK`] bytes; a full one is queued as it is and a new one begins, so nothing
//!   queued is moved again. A larger payload is queued as it is (a
//!   fan-out of one frame to many connections copies nothing). What is queued goes out in one
//!   vectored write when it is two slices or more, in a plain one (`send` on TCP) when it is
//!   one. A client masks its payload into the buffer, as it must (RFC 6455 §5.3).

use super::codec::{self, Header, MAX_HEADER, Opcode, Role, WsViolation};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
/// The most room reserved ahead of the bytes of a frame being read: 4 MiB.
pub(crate) const MAX_RESERVE_AHEAD: usize = 4 << 20;
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
///
/// The fields are in the order a write and then a read touch them (`repr(C)` keeps it): a
/// server of 10,000 connections finds each one's state out of the cache, so what a write
/// needs (the flags, the stream, the write queue) sits in as few cache lines as it can, the
/// read state after it, and the rare fields last.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Socket<S> {
    role: Role,
    state: State,
    /// Whether a close frame was queued (ours, or the reply to the peer's).
    close_sent: bool,
    /// A [`Socket::poll_once`] is under way: its waker is borrowed (or a no-op), and is not
    /// recorded as a waiter.
    polling_once: bool,
    /// Written to the stream and not flushed yet (a TLS stream can hold what it took).
    io_unflushed: bool,
    /// Queued bytes past which [`Socket::poll_ready`] writes before taking more.
    flush_threshold: usize,
    io: S,
    write: WriteQueue,
    /// The tasks whose write or flush is pending, the last to be pending last: the stream
    /// wakes only the last task that polled it (this list's last), so whoever completes a
    /// flush wakes the others, and a poll that does not wait ([`Socket::poll_once`]) polls
    /// with the last one's waker, so that the stream's wake-up stays where it is.
    flush_waiters: Vec<Waker>,
    read: ReadState,
    /// The limit of a received message.
    max_message_size: usize,
    /// What [`Socket::next_buffered`] or [`Socket::poll_next_data`] came across but does not
    /// hand over (a close, a fault): [`Socket::poll_next`] returns it first.
    stashed: Option<Result<Message, SocketError>>,
    /// The payload of the last ping not answered yet: one pong at most waits, whatever the
    /// peer sends (RFC 6455 §5.5.3 allows answering only the latest ping).
    pong: Option<Bytes>,
}

#[derive(Debug, Default)]
struct ReadState {
    /// Bytes read and not yet decoded; no allocation while idle.
    buf: BytesMut,
    /// The spare room the next read is given.
    chunk: usize,
    /// The bytes of the frame being read that have not come yet (0 between frames).
    frame_rest: usize,
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

    /// Writes once (vectored for two slices or more, when the stream says it does that well);
    /// returns the bytes written.
    fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        // One slice goes out in a plain write: on a TCP stream that is `send`, which costs the
        // kernel less than a `writev` of one buffer (no iovec to copy in, no file position
        // lock; in a fan-out to 10,000 connections the difference was ~4% of the service's
        // CPU).
        let slices = self.segments.len() + usize::from(!self.tail.is_empty());
        let written = if slices > 1 && io.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for segment in self.segments.iter().take(MAX_IOVECS - 1) {
                slices[count] = IoSlice::new(segment);
                count += 1;
            }
            // The tail comes after every segment: only in a write that holds them all.
            if !self.tail.is_empty() && count == self.segments.len() {
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
            flush_waiters: Vec::new(),
            polling_once: false,
            io_unflushed: false,
            pong: None,
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
        if opcode == Opcode::Close
            && let Some(pong) = self.pong.take()
        {
            // Nothing may follow a close: the waiting pong goes first.
            self.push(Opcode::Pong, &pong);
        }
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
            Poll::Ready(Ok(_)) => {
                self.io_unflushed = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => {
                self.state = State::Done;
                self.wake_waiters(cx);
                Poll::Ready(Err(err.into()))
            }
            Poll::Pending => {
                self.add_waiter(cx.waker());
                Poll::Pending
            }
        }
    }

    /// Writes out everything queued (the pong waiting included), then flushes the stream.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SocketError>> {
        loop {
            while !self.write.is_empty() {
                ready!(self.poll_write_once(cx))?;
            }
            // The pong is queued only once the queue is out: at most one is ever queued.
            match self.pong.take() {
                Some(payload) => self.push(Opcode::Pong, &payload),
                None => break,
            }
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(result) => {
                if result.is_err() {
                    self.state = State::Done;
                } else {
                    self.io_unflushed = false;
                }
                self.wake_waiters(cx);
                Poll::Ready(result.map_err(SocketError::from))
            }
            Poll::Pending => {
                self.add_waiter(cx.waker());
                Poll::Pending
            }
        }
    }

    /// A write or flush polled with `waker` is pending: the task waits, and the stream now
    /// holds its waker. (Not for a [`Socket::poll_once`]: its waker is not a waiting task's
    /// own.)
    fn add_waiter(&mut self, waker: &Waker) {
        if self.polling_once {
            return;
        }
        let waker = match self.flush_waiters.iter().position(|w| w.will_wake(waker)) {
            Some(known) => self.flush_waiters.remove(known),
            None => waker.clone(),
        };
        self.flush_waiters.push(waker);
    }

    /// Polls `poll` once for a caller that does not wait for it. It polls with the waker the
    /// stream holds for a waiting task, if any, so that the stream's wake-up stays where it
    /// is (the stream keeps only the last waker it was polled with: any other waker there,
    /// a no-op one above all, would be a lost wake-up for that task), else with a no-op waker
    /// (whoever then waits polls again with its own). If the poll ended the waits (a flush
    /// done or failed), that task is woken too: the flush skipped it as the poller.
    pub(crate) fn poll_once<T>(
        &mut self,
        poll: impl FnOnce(&mut Self, &mut Context<'_>) -> T,
    ) -> T {
        let waiter = self.flush_waiters.last().cloned();
        let mut cx = Context::from_waker(waiter.as_ref().unwrap_or(Waker::noop()));
        self.polling_once = true;
        let out = poll(self, &mut cx);
        self.polling_once = false;
        if let Some(waiter) = waiter
            && self.flush_waiters.is_empty()
        {
            waiter.wake();
        }
        out
    }

    /// A flush ended: wakes the other tasks that waited on one.
    fn wake_waiters(&mut self, cx: &Context<'_>) {
        for waker in self.flush_waiters.drain(..) {
            if !waker.will_wake(cx.waker()) {
                waker.wake();
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
            // Before waiting for more, write out what waits (a pong, frames the writer left,
            // bytes a TLS stream holds), with the waker of a task already waiting on a flush
            // if there is one, so that it keeps the socket's wake-up.
            if self.pong.is_some() || !self.write.is_empty() || self.io_unflushed {
                let flushed = if self.flush_waiters.is_empty() {
                    self.poll_flush(cx)
                } else {
                    self.poll_once(Self::poll_flush)
                };
                if let Poll::Ready(Err(err)) = flushed {
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

    /// [`Socket::poll_next`] for a reader that handles only text messages and pongs itself: one
    /// of those is returned; anything else (a close, a fault) is kept for `poll_next`, and
    /// `Ready(None)` says to call it (as does the end of the stream).
    pub(crate) fn poll_next_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if self.stashed.is_some() {
            return Poll::Ready(None);
        }
        match ready!(self.poll_next(cx)) {
            Some(Ok(message @ (Message::Text(_) | Message::Pong(_)))) => Poll::Ready(Some(message)),
            None => Poll::Ready(None),
            other => {
                self.stashed = other;
                Poll::Ready(None)
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
        self.read.frame_rest = 0;
    }

    /// Reads once into spare room of at least the current chunk (see the module docs). The
    /// next chunk doubles when this read filled its room, and otherwise follows what came:
    /// twice this read, rounded up to a power of two, within [`READ_CHUNK`] and
    /// [`MAX_READ_CHUNK`].
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let read = &mut self.read;
        if read.buf.capacity() == 0 && read.chunk == READ_CHUNK {
            // Nothing buffered and no flood going: read on the stack, and keep what came in an
            // allocation of its size. A read that finds nothing allocates nothing, and a small
            // message is one small allocation, handed over whole (see `decode`).
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut room = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut room))?;
            let n = room.filled().len();
            read.buf = BytesMut::from(room.filled());
            read.chunk = next_chunk(read.chunk, n, READ_CHUNK);
            return Poll::Ready(Ok(n));
        }
        // Within a frame, no more than its rest: the room reserved for it is not grown again.
        let want = match read.frame_rest {
            0 => read.chunk,
            rest => rest.min(read.chunk),
        };
        if read.buf.capacity() - read.buf.len() < want {
            read.buf.reserve(want);
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
        read.chunk = next_chunk(read.chunk, n, room);
        Poll::Ready(Ok(n))
    }

    /// Decodes what the buffer holds into the next message, handling control frames on the
    /// way. `Ok(None)`: more bytes are needed (room for the frame being read is reserved,
    /// or the buffer released when it is empty).
    fn decode(&mut self) -> Result<Option<Message>, SocketError> {
        loop {
            let Some(header) = codec::parse_header(&self.read.buf, self.role)? else {
                if self.read.buf.is_empty() {
                    // Everything read was decoded: an idle connection holds nothing.
                    self.read.buf = BytesMut::new();
                }
                return Ok(None);
            };
            self.check_size(&header)?;
            // Under the read limit, or a control frame of at most 125 bytes: fits usize.
            let len = header.len as usize;
            let Some(frame_len) = header.size.checked_add(len) else {
                return Err(SocketError::TooBig {
                    size: header.len,
                    limit: self.max_message_size,
                });
            };
            if self.read.buf.len() < frame_len {
                self.reserve_frame(frame_len);
                return Ok(None);
            }
            self.read.frame_rest = 0;
            let mut payload = if self.read.buf.len() == frame_len {
                // The last frame read: the buffer itself, not a share of it (sharing a
                // buffer allocates its reference count).
                let mut whole = std::mem::take(&mut self.read.buf);
                whole.advance(header.size);
                whole
            } else {
                self.read.buf.advance(header.size);
                self.read.buf.split_to(len)
            };
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

    /// Makes room for the rest of a frame of `frame_len` bytes whose start is in the buffer,
    /// so that it is read into one allocation without moving (at most [`MAX_RESERVE_AHEAD`]
    /// ahead of what came: a header alone does not reserve a whole message of any size).
    fn reserve_frame(&mut self, frame_len: usize) {
        let buf = &mut self.read.buf;
        let rest = frame_len - buf.len();
        self.read.frame_rest = rest;
        let room = rest.min(MAX_RESERVE_AHEAD);
        if buf.capacity() - buf.len() < room {
            buf.reserve(room);
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
                    // Replaces an unanswered one: a peer that pings and never reads costs one.
                    self.pong = Some(payload.freeze());
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

/// The room of the read after one that brought `n` bytes into `room`: double the current
/// chunk when the read filled its room, else twice what came, rounded up to a power of two,
/// within [`READ_CHUNK`] and [`MAX_READ_CHUNK`].
fn next_chunk(chunk: usize, n: usize, room: usize) -> usize {
    if n == room {
        (chunk * 2).min(MAX_READ_CHUNK)
    } else {
        (2 * n)
            .next_power_of_two()
            .clamp(READ_CHUNK, MAX_READ_CHUNK)
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
    use crate::test_waker::Counting;
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

    /// The reader's polling wait: messages and pongs come (read when needed), a close and a
    /// fault are kept for `poll_next` (asked again, still kept), and the end says to call it.
    #[tokio::test]
    async fn poll_next_data_hands_over_messages_and_keeps_the_rest_for_poll_next() {
        let data = |socket: &mut Socket<DuplexStream>| {
            let waker = std::task::Waker::noop();
            socket.poll_next_data(&mut Context::from_waker(waker))
        };
        let (mut socket, mut raw) = server();
        assert_eq!(data(&mut socket), Poll::Pending, "nothing came yet");
        let mut bytes = client_frame(Opcode::Text, b"one");
        bytes.extend(client_frame(Opcode::Pong, b"p"));
        bytes.extend(client_frame(Opcode::Close, b"\x03\xe8bye"));
        raw.write_all(&bytes).await.unwrap();
        let one = poll_fn(|cx| socket.poll_next_data(cx)).await;
        assert_eq!(one, Some(Message::Text(Bytes::from_static(b"one"))));
        let pong = Poll::Ready(Some(Message::Pong(Bytes::from_static(b"p"))));
        assert_eq!(data(&mut socket), pong);
        assert_eq!(data(&mut socket), Poll::Ready(None));
        assert_eq!(data(&mut socket), Poll::Ready(None));
        assert_eq!(
            next(&mut socket).await,
            Message::Close(Some(1000), "bye".to_owned())
        );

        let (mut socket, mut raw) = server();
        raw.write_all(&[0x81, 0x01, b'x']).await.unwrap(); // unmasked
        assert_eq!(poll_fn(|cx| socket.poll_next_data(cx)).await, None);
        let result = poll_fn(|cx| socket.poll_next(cx)).await.unwrap();
        assert!(
            matches!(result, Err(SocketError::Violation(WsViolation::Unmasked))),
            "{result:?}"
        );

        let (mut socket, raw) = server();
        drop(raw);
        assert_eq!(poll_fn(|cx| socket.poll_next_data(cx)).await, None);
        assert!(poll_fn(|cx| socket.poll_next(cx)).await.is_none());
    }

    /// A stream that takes writes (vectored or plain, counted apart), at most `per_write`
    /// bytes each, and never reads.
    #[derive(Default)]
    struct Vectored {
        wire: Vec<u8>,
        per_write: usize,
        /// Calls of `poll_write` and of `poll_write_vectored`.
        plain: usize,
        vectored: usize,
    }

    impl Vectored {
        fn accept(&mut self, bufs: &[IoSlice<'_>]) -> usize {
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(self.per_write.saturating_sub(taken));
                self.wire.extend_from_slice(&buf[..n]);
                taken += n;
            }
            taken
        }
    }

    impl AsyncRead for Vectored {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Vectored {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.plain += 1;
            Poll::Ready(Ok(self.accept(&[IoSlice::new(buf)])))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored += 1;
            Poll::Ready(Ok(self.accept(bufs)))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Every frame back from `wire` (unmasked, final, as a server writes them).
    fn frames_on(mut wire: &[u8]) -> Vec<(Opcode, Vec<u8>)> {
        let mut frames = Vec::new();
        while !wire.is_empty() {
            let header = codec::parse_header(wire, Role::Client).unwrap().unwrap();
            let end = header.size + header.len as usize;
            frames.push((header.opcode, wire[header.size..end].to_vec()));
            wire = &wire[end..];
        }
        frames
    }

    /// A lone frame (one buffer) goes out in a plain write (`send` on TCP), a header and a
    /// payload not copied (two) in a vectored one.
    #[tokio::test]
    async fn one_slice_is_written_plain_and_more_vectored() {
        let io = Vectored {
            per_write: usize::MAX,
            ..Vectored::default()
        };
        let mut socket = Socket::new(io, Role::Server, 1 << 20, usize::MAX);
        let small = Bytes::from_static(b"small");
        socket.queue(Opcode::Text, &small).unwrap();
        poll_fn(|cx| socket.poll_flush(cx)).await.unwrap();
        assert_eq!((socket.io.plain, socket.io.vectored), (1, 0));
        let large = Bytes::from(vec![b'x'; COPY_MAX + 1]);
        socket.queue(Opcode::Text, &large).unwrap();
        assert_eq!(
            socket.write.segments.len(),
            2,
            "the header, then the payload"
        );
        poll_fn(|cx| socket.poll_flush(cx)).await.unwrap();
        assert_eq!((socket.io.plain, socket.io.vectored), (1, 1));
        assert_eq!(
            frames_on(&socket.io.wire),
            [
                (Opcode::Text, small.to_vec()),
                (Opcode::Text, large.to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn more_segments_than_one_write_takes_stay_in_order() {
        // 40 payloads over 1 KiB (80 segments) and small frames between and after them (the
        // tail), each write taking all it is given.
        let io = Vectored {
            per_write: usize::MAX,
            ..Vectored::default()
        };
        let mut socket = Socket::new(io, Role::Server, 1 << 20, usize::MAX);
        let mut sent = Vec::new();
        for i in 0..40u8 {
            let large = vec![i; 1500];
            let small = vec![b'a' + i % 26; 10];
            socket
                .queue(Opcode::Text, &Bytes::from(large.clone()))
                .unwrap();
            socket
                .queue(Opcode::Text, &Bytes::from(small.clone()))
                .unwrap();
            sent.push((Opcode::Text, large));
            sent.push((Opcode::Text, small));
        }
        assert!(socket.write.segments.len() > MAX_IOVECS);
        poll_fn(|cx| socket.poll_flush(cx)).await.unwrap();
        assert_eq!(frames_on(&socket.io.wire), sent);
    }

    #[tokio::test]
    async fn a_peer_that_pings_and_never_reads_costs_one_pong() {
        // A pipe of 256 bytes that the peer never reads from.
        let (ours, mut raw) = tokio::io::duplex(256);
        let mut socket = Socket::new(ours, Role::Server, 1 << 20, 32 << 10);
        for i in 0..2000u32 {
            raw.write_all(&client_frame(Opcode::Ping, &i.to_be_bytes()))
                .await
                .unwrap();
            // Read what came; the pongs fill the pipe, then wait.
            let pending = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
            assert!(pending);
            assert!(socket.write.len < 256, "{} bytes queued", socket.write.len);
        }
        assert_eq!(
            socket.pong,
            Some(Bytes::copy_from_slice(&1999u32.to_be_bytes()))
        );
    }

    /// Our server socket with a 1,000-byte frame queued, over a pipe of 64 bytes: a flush
    /// stays pending until the raw end reads.
    fn stuck_flush() -> (Socket<DuplexStream>, DuplexStream) {
        let (ours, raw) = tokio::io::duplex(64);
        let mut socket = Socket::new(ours, Role::Server, 1 << 20, 32 << 10);
        socket
            .queue(Opcode::Text, &Bytes::from(vec![b'x'; 1000]))
            .unwrap();
        (socket, raw)
    }

    #[tokio::test]
    async fn a_task_waiting_on_a_flush_is_woken_when_another_completes_it() {
        let (mut socket, mut raw) = stuck_flush();
        // The writer's flush waits for room; then the reader's does (and takes the pipe's
        // wake-up, which goes to the last task that polled).
        let (writer, writer_waker) = Counting::waker();
        let (reader, reader_waker) = Counting::waker();
        assert!(
            socket
                .poll_flush(&mut Context::from_waker(&writer_waker))
                .is_pending()
        );
        assert!(
            socket
                .poll_flush(&mut Context::from_waker(&reader_waker))
                .is_pending()
        );
        // Drain the pipe, polling the reader's flush whenever it is woken, until it is done.
        let mut wire = Vec::new();
        loop {
            let mut chunk = [0u8; 64];
            let n = raw.read(&mut chunk).await.unwrap();
            wire.extend_from_slice(&chunk[..n]);
            if reader.count() > 0 {
                let done = socket.poll_flush(&mut Context::from_waker(&reader_waker));
                if done.is_ready() {
                    break;
                }
            }
        }
        assert!(writer.count() > 0, "the writer was never woken");
        assert!(socket.flush_waiters.is_empty());
    }

    /// A poll that does not wait (`try_flush`, `try_feed`, the reader's flush) keeps the
    /// stream's wake-up with the task the stream holds it for, even when an earlier waiter
    /// that moved on is still listed first (the reader, whose flush was pending once).
    #[tokio::test]
    async fn a_poll_that_does_not_wait_leaves_the_wake_up_with_the_last_waiter() {
        let (mut socket, mut raw) = stuck_flush();
        let (reader, reader_waker) = Counting::waker();
        let (writer, writer_waker) = Counting::waker();
        // The reader's flush is pending first (it then goes on without polling again), then
        // the writer's: the stream holds the writer's waker.
        for waker in [&reader_waker, &writer_waker] {
            assert!(
                socket
                    .poll_flush(&mut Context::from_waker(waker))
                    .is_pending()
            );
        }
        // A caller's try_flush, still pending.
        assert!(socket.poll_once(Socket::poll_flush).is_pending());
        // Room comes: the writer must hear of it.
        let mut chunk = [0u8; 64];
        let n = raw.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        assert_eq!(writer.count(), 1, "the writer was not woken");
        assert_eq!(reader.count(), 0);
        // The writer's flush goes on; once it completes, the reader is woken too.
        let mut wire = chunk[..n].to_vec();
        while socket
            .poll_flush(&mut Context::from_waker(&writer_waker))
            .is_pending()
        {
            let n = raw.read(&mut chunk).await.unwrap();
            wire.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(reader.count(), 1, "the reader was not woken");
        assert!(socket.flush_waiters.is_empty());
    }

    /// A no-op waker (a poll that does not wait, with nobody waiting) is never recorded.
    #[test]
    fn a_poll_that_does_not_wait_records_no_waiter() {
        let (mut socket, _raw) = stuck_flush();
        assert!(socket.poll_once(Socket::poll_flush).is_pending());
        assert!(socket.flush_waiters.is_empty());
    }

    #[tokio::test]
    async fn a_large_frame_arriving_in_pieces_is_read_into_one_allocation() {
        let (mut socket, mut raw) = server();
        let payload = vec![b'z'; 300 << 10];
        let frame = client_frame(Opcode::Text, &payload);
        raw.write_all(&frame[..1000]).await.unwrap();
        let pending = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
        assert!(pending);
        let capacity = socket.read.buf.capacity();
        assert!(capacity >= frame.len(), "{capacity}");
        for piece in frame[1000..].chunks(70_000) {
            let before = socket.read.buf.len();
            raw.write_all(piece).await.unwrap();
            if before + piece.len() < frame.len() {
                let pending = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
                assert!(pending);
                assert_eq!(socket.read.buf.capacity(), capacity, "grown again");
            }
        }
        assert_eq!(next(&mut socket).await, Message::Text(Bytes::from(payload)));
    }
}
