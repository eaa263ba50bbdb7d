//! The outbox (the writer's queue, bounded by bytes) and the writer task that drains it into
//! the sink.

use super::inner::{Inner, Stop};
use super::{CLOSE_QUEUE_OVERFLOW, ConnError, Disconnect, SendError};
use bytes::{Bytes, BytesMut};
use cluster_proto::{frame, wire};
use cluster_transport::{CLOSE_NORMAL, CloseInfo, MessageSink, TransportError};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};

/// One instruction to the writer: 32 bytes, the size of a [`Bytes`]. (A reference's niche
/// holds one more variant, hence the nested [`Other`].)
pub(super) enum Command {
    /// A frame encoded by the caller (e.g. one frame fanned out to many connections).
    Frame(Bytes),
    Other(Other),
}

pub(super) enum Other {
    /// A frame of this many bytes, encoded in [`Outbox::encoded`] after the frames before it.
    Encoded(usize),
    Control(Box<Control>),
}

/// A frame to send: encoded already, or the parts to encode where it goes (a new buffer when
/// the caller feeds the transport itself, else the outbox's shared buffer; see [`Outbox`]).
pub(super) enum Outgoing<'a> {
    Encoded(Bytes),
    /// `<name>||<ack_id>||<data>`.
    Event {
        name: &'a str,
        ack_id: u64,
        data: &'a [u8],
    },
    /// `__ack_<event>||<ack_id>||<data>`.
    Ack {
        event: &'a str,
        ack_id: u64,
        data: &'a [u8],
    },
}

impl Outgoing<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Encoded(frame) => frame.len(),
            Self::Event { name, ack_id, data } => frame::encoded_len(name, *ack_id, data),
            Self::Ack {
                event,
                ack_id,
                data,
            } => frame::ACK_PREFIX.len() + frame::encoded_len(event, *ack_id, data),
        }
    }

    /// Appends the frame to `buf` (which has room for it).
    fn encode_into(&self, buf: &mut BytesMut) {
        match self {
            Self::Encoded(frame) => buf.extend_from_slice(frame),
            Self::Event { name, ack_id, data } => frame::encode(name, *ack_id, data, buf),
            Self::Ack {
                event,
                ack_id,
                data,
            } => frame::encode_ack(event, *ack_id, data, buf),
        }
    }

    /// The frame in a [`Bytes`] of its own (no copy for an encoded one).
    fn into_bytes(self, len: usize) -> Bytes {
        match self {
            Self::Encoded(frame) => frame,
            parts => {
                let mut buf = BytesMut::with_capacity(len);
                parts.encode_into(&mut buf);
                buf.freeze()
            }
        }
    }
}

/// The least room [`Outbox::encoded`] gets when it is empty: a burst of small frames then
/// costs an allocation per 4 KiB or more (the buffer doubles as it grows), not one per frame.
/// 4 KiB, as the WebSocket layer's write chunks: under the fake service's 8 KiB mmap
/// threshold, so a short burst is not an `mmap` and a `munmap`.
const ENCODED_CHUNK: usize = 4 << 10;

pub(super) enum Control {
    Ping(u64),
    /// Our close: flush what is queued, then close.
    Close(CloseInfo),
    /// The peer closed: flush what is queued, echo its close (the transport may have done so
    /// already), stop.
    Finish(CloseInfo),
}
/// The writer's queue. A `std` mutex around a `VecDeque` rather than a tokio mpsc channel: the
/// channel allocates a block per connection up front (a block of 32 slots and cache-padded
/// halves), this allocates nothing until a frame is queued. The lock is held only to push one
/// command or to swap the whole queue out, never across an `await`.
///
/// # Feeding from the caller's task
/// While the writer task waits with nothing to do, it leaves the sink here (`idle_sink`). A
/// frame queued on an empty queue is then fed by the caller itself ([`MessageSink::try_feed`],
/// which never waits), and the writer task is woken only to flush: it runs once the caller's
/// task yields (on a multi-thread runtime, on the same worker: tokio's LIFO slot), so a burst
/// of frames from one task is one flush, and a lone frame costs no hop to another thread. A
/// frame the transport cannot take at once is queued as before, and the writer task feeds it.
/// Order holds: a caller feeds only with an empty queue and the sink in hand, and whatever is
/// queued meanwhile goes behind it.
///
/// # Frames encoded in place
/// A frame queued behind others (the writer task is busy: on a multi-thread runtime, a burst
/// of emits while it writes the previous ones on the other worker) is encoded into
/// [`Outbox::encoded`], one buffer the writer task takes whole with the commands, rather than
/// into an allocation of its own. Besides saving an allocation per frame, this keeps the
/// allocator out of a producer–consumer pattern: each frame allocated on the emitting thread
/// and freed on the writer's is what glibc's malloc serves worst (both threads take the
/// emitting thread's arena lock, and wait on it: a flood's profile had a futex call every 4
/// events). Now one buffer per burst crosses threads.
///
/// `repr(C)`: what a send looks at (the flags, the idle sink, the writer's waker, the queue)
/// comes first, next to the lock in [`Inner`].
#[repr(C)]
pub(super) struct Outbox {
    /// `false` once the writer has ended: nothing can be queued any more.
    pub(super) open: bool,
    /// `false` once the last command (our close, or the echo of the peer's) is queued: frames
    /// and pings are refused from then on. Checked under the lock, so a frame is either queued
    /// before the close or refused, never accepted and then dropped.
    pub(super) accepting: bool,
    /// Frames were fed from a caller's task since the writer task last looked: it flushes.
    pub(super) unflushed: bool,
    /// The sink, while the writer task waits with nothing to do and nothing unflushed; `None`
    /// while the writer task or a caller uses it.
    pub(super) idle_sink: Option<Box<dyn MessageSink>>,
    /// The writer task's waker while it waits for work; whoever gives it work takes it (under
    /// this lock) and wakes it. Kept here rather than in a `tokio::sync::Notify`: the writer
    /// checks for work and registers under the one lock every caller takes anyway, so no
    /// wake-up can fall between the two, and a send touches no other structure (in a fan-out
    /// to 10,000 connections, the `Notify` was 3% of the service's CPU).
    pub(super) writer: Option<Waker>,
    pub(super) commands: VecDeque<Command>,
    /// A caller's feed failed: the writer task ends with this error, as if its own write had.
    pub(super) failed: Option<Box<TransportError>>,
    /// The frames of the [`Other::Encoded`] commands, in order. Empty (no allocation) once
    /// the writer took it.
    pub(super) encoded: BytesMut,
}

impl Outbox {
    pub(super) fn new() -> Self {
        Self {
            commands: VecDeque::new(),
            encoded: BytesMut::new(),
            open: true,
            accepting: true,
            idle_sink: None,
            unflushed: false,
            failed: None,
            writer: None,
        }
    }

    /// Records that `waker`'s task (the writer) waits for work.
    fn park_writer(&mut self, waker: &Waker) {
        match &mut self.writer {
            Some(parked) if parked.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }
}

/// Wakes the writer task if it was waiting (see [`Outbox::writer`]); called once the outbox
/// lock is released.
fn wake(writer: Option<Waker>) {
    if let Some(writer) = writer {
        writer.wake();
    }
}

impl Inner {
    /// Queues a frame unless the connection is closing or closed, or the queue is full (which
    /// closes the connection). With an empty queue and an idle writer, feeds it from this task
    /// (see [`Outbox`]).
    pub(super) fn send_frame(&self, frame: Outgoing<'_>) -> Result<(), ConnError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed.into());
        }
        let len = frame.len();
        let writer = {
            let mut outbox = self.outbox();
            if !outbox.open || !outbox.accepting {
                return Err(SendError::Closed.into());
            }
            // Only the writer lowers `queued` meanwhile: the check cannot be outdated upwards.
            let queued = self.queued.load(Ordering::Acquire);
            if queued.saturating_add(len) > self.max_queued {
                drop(outbox);
                return Err(self.overflow(queued, len));
            }
            if outbox.commands.is_empty()
                && let Some(sink) = outbox.idle_sink.take()
            {
                drop(outbox);
                self.feed_here(sink, frame.into_bytes(len));
                return Ok(());
            }
            self.queued.fetch_add(len, Ordering::AcqRel);
            let command = match frame {
                Outgoing::Encoded(frame) => Command::Frame(frame),
                parts => {
                    let encoded = &mut outbox.encoded;
                    if encoded.capacity() == 0 {
                        encoded.reserve(len.max(ENCODED_CHUNK));
                    } else {
                        encoded.reserve(len);
                    }
                    parts.encode_into(encoded);
                    Command::Other(Other::Encoded(len))
                }
            };
            outbox.commands.push_back(command);
            outbox.writer.take()
        };
        wake(writer);
        Ok(())
    }

    /// Feeds `frame` with the sink the idle writer left, gives the sink back, and wakes the
    /// writer for what is left to do: flush (see [`flushes_here`]), feed the frame if the
    /// transport could not take it now, end if the transport failed.
    fn feed_here(&self, mut sink: Box<dyn MessageSink>, frame: Bytes) {
        let len = frame.len();
        let fed = match sink.try_feed(frame) {
            Ok(None) if flushes_here() => sink
                .try_flush()
                .map(|done| if done { Fed::Written } else { Fed::Unflushed }),
            Ok(None) => Ok(Fed::Unflushed),
            Ok(Some(frame)) => Ok(Fed::Refused(frame)),
            Err(err) => Err(err),
        };
        let mut outbox = self.outbox();
        if !outbox.open {
            // The writer ended meanwhile (aborted): the transport goes, as it would have.
            drop(outbox);
            drop(sink);
            return;
        }
        outbox.idle_sink = Some(sink);
        match fed {
            Ok(Fed::Written) => {}
            Ok(Fed::Unflushed) => outbox.unflushed = true,
            Ok(Fed::Refused(frame)) => {
                // Checked against the limit with the others' frames of that moment: the queue
                // can pass it by this one frame (one caller at a time holds the sink).
                self.queued.fetch_add(len, Ordering::AcqRel);
                // First: whatever was queued meanwhile came after it.
                outbox.commands.push_front(Command::Frame(frame));
            }
            Err(err) => outbox.failed = Some(Box::new(err)),
        }
        // Whenever there is work, even if the writer was woken for it already: it may have
        // been woken while we held the sink, and gone back to waiting for it.
        let work = outbox.unflushed || !outbox.commands.is_empty() || outbox.failed.is_some();
        let writer = if work { outbox.writer.take() } else { None };
        drop(outbox);
        wake(writer);
    }

    /// Queues a control command: a ping (refused once closing), or the last command (our
    /// close, the echo of the peer's), after which nothing more is accepted.
    pub(super) fn send_control(&self, control: Control) -> Result<(), ConnError> {
        let last = !matches!(control, Control::Ping(_));
        let writer = {
            let mut outbox = self.outbox();
            if !outbox.open || (!last && !outbox.accepting) {
                return Err(SendError::Closed.into());
            }
            if last {
                outbox.accepting = false;
            }
            outbox
                .commands
                .push_back(Command::Other(Other::Control(Box::new(control))));
            outbox.writer.take()
        };
        wake(writer);
        Ok(())
    }

    /// The queue cannot take `len` more bytes: starts closing with 1008.
    pub(super) fn overflow(&self, queued: usize, len: usize) -> ConnError {
        if !self.closed.load(Ordering::Acquire) {
            tracing::warn!(
                conn = self.id,
                peer = &*self.peer,
                queued,
                frame = len,
                limit = self.max_queued,
                "write queue full: the peer does not read; closing with 1008"
            );
        }
        self.start_close(CLOSE_QUEUE_OVERFLOW, "write queue full");
        ConnError::QueueFull {
            queued,
            limit: self.max_queued,
        }
    }

    /// Called by the writer once the sink took frames of `len` bytes in all.
    pub(super) fn written(&self, len: usize) {
        let before = self.queued.fetch_sub(len, Ordering::AcqRel);
        if wire::over_high_water(before, self.high_water)
            && !wire::over_high_water(before - len, self.high_water)
        {
            self.drained.notify_waiters();
        }
    }

    pub(super) fn over_high_water(&self) -> bool {
        wire::over_high_water(self.queued.load(Ordering::Acquire), self.high_water)
    }

    /// Resolves once the write queue is at or under the high-water mark.
    pub(super) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.over_high_water() {
                return;
            }
            notified.await;
        }
    }

    /// Called when the writer ends: refuses new commands and drops the queued ones and the
    /// sink if the writer left it here.
    pub(super) fn close_outbox(&self) {
        let dropped = {
            let mut outbox = self.outbox();
            outbox.open = false;
            outbox.accepting = false;
            outbox.unflushed = false;
            outbox.failed = None;
            self.queued.store(0, Ordering::Release);
            (
                std::mem::take(&mut outbox.commands),
                std::mem::take(&mut outbox.encoded),
                outbox.idle_sink.take(),
                // The writer's own waker: it must not keep its ended task alive.
                outbox.writer.take(),
            )
        };
        drop(dropped);
        self.drained.notify_waiters();
    }
}

/// What became of a frame fed from the caller's task.
enum Fed {
    /// Written out.
    Written,
    /// Taken by the transport; the writer flushes it.
    Unflushed,
    /// Not taken now: the writer feeds it.
    Refused(Bytes),
}

/// Whether a frame fed from the caller's task is also written out from it, rather than by the
/// writer task once the caller yields. Only where waking the writer would cross threads: on a
/// multi-thread runtime from outside its tasks (`block_on`, the body of `#[tokio::main]`), or
/// from outside any runtime. In a task the wake-up stays on the worker (tokio's LIFO slot) and
/// the writer flushes a whole burst at once, so a task's burst of emits is not a write each.
fn flushes_here() -> bool {
    tokio::task::try_id().is_none()
        && !matches!(
            tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread)
        )
}

/// Closes the outbox when the writer ends, however it ends (done, failed, aborted, or
/// dropped before it ever ran).
pub(super) struct WriterGuard(Arc<Inner>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.close_outbox();
    }
}

/// The writer task. Its guard is made here, before the first poll: a writer aborted before it
/// ever ran (the reader found the transport broken first, and the end aborts the writer) still
/// closes the outbox, so that `queued` goes to 0 and whoever waits for it to drain
/// ([`Conn::writable`](super::Conn::writable), the reader) is woken.
pub(super) fn run_writer(
    inner: Arc<Inner>,
    sink: Box<dyn MessageSink>,
    flush_batch: usize,
) -> impl Future<Output = ()> + Send + 'static {
    let guard = WriterGuard(Arc::clone(&inner));
    async move {
        let _guard = guard;
        // `None` while lent (see `Outbox`); dropped at the end, after the error is recorded.
        let mut sink = Some(sink);
        if let Err(err) = write_loop(&inner, &mut sink, flush_batch).await {
            let recorded = match &err {
                // The peer's close got to the transport before it got to our reader. (If we
                // were closing too, the closes crossed: our recorded close stands.)
                TransportError::Closed(info) => {
                    inner.end_with(Disconnect::peer_closed(info.clone()))
                }
                other => {
                    let why = format!("write failed: {other}");
                    // If we were closing, our close never made it out.
                    let failed = inner.close_failed(&why);
                    inner.end_with(Disconnect::lost(why)) || failed
                }
            };
            if recorded {
                tracing::debug!(conn = inner.id, peer = &*inner.peer, %err, "write failed; ending the connection");
            }
            inner.stop_reader(Stop::Now);
        }
    }
}

/// Takes the whole queue at once, feeds it, and flushes when the queue is found empty or after
/// `flush_batch` frames. With nothing to do, it lends the sink to the callers (see [`Outbox`])
/// while it waits, and takes it back when woken.
pub(super) async fn write_loop(
    inner: &Inner,
    slot: &mut Option<Box<dyn MessageSink>>,
    flush_batch: usize,
) -> Result<(), TransportError> {
    let mut batch = Batch::default();
    let mut unflushed = 0usize;
    // Bytes the sink took and `queued` still counts: given back to `queued` at each flush, at
    // the end of each batch and before a wait, not per frame (see [`Inner::written`]).
    let mut taken = Taken::default();
    loop {
        // Ready at once when there is work (no await point is reached then).
        poll_fn(
            |cx| match take_work(inner, slot, &mut batch, &mut unflushed, cx.waker()) {
                Ok(true) => Poll::Ready(Ok(())),
                Ok(false) => Poll::Pending,
                Err(err) => Poll::Ready(Err(err)),
            },
        )
        .await?;
        let sink = slot
            .as_deref_mut()
            .expect("take_work reports work only with the sink in hand");
        if batch.commands.is_empty() {
            flush(sink).await?;
            unflushed = 0;
            // More may have come while flushing.
            continue;
        }
        while let Some(command) = batch.commands.pop_front() {
            let text = match command {
                Command::Frame(text) => text,
                Command::Other(Other::Encoded(len)) => batch.encoded.split_to(len),
                Command::Other(Other::Control(control)) => {
                    // Each of them waits for the transport.
                    taken.give_back(inner);
                    match *control {
                        Control::Ping(id) => {
                            sink.ping(Bytes::copy_from_slice(&wire::ping_payload(id)))
                                .await?;
                            flush(sink).await?;
                            unflushed = 0;
                            continue;
                        }
                        Control::Close(info) => {
                            let code = info.code.unwrap_or(CLOSE_NORMAL);
                            return sink.close(code, &info.reason).await;
                        }
                        Control::Finish(info) => {
                            // The peer is gone or going: best effort, errors are expected.
                            if unflushed > 0 {
                                let _ = sink.flush().await;
                            }
                            let code = info.code.unwrap_or(CLOSE_NORMAL);
                            let _ = sink.close(code, &info.reason).await;
                            return Ok(());
                        }
                    }
                }
            };
            let len = text.len();
            // Without a future when the transport takes it at once.
            if let Some(text) = sink.try_feed(text)? {
                taken.give_back(inner);
                sink.feed(text).await?;
            }
            taken.0 += len;
            unflushed += 1;
            if unflushed >= flush_batch {
                taken.give_back(inner);
                flush(sink).await?;
                unflushed = 0;
            }
        }
        taken.give_back(inner);
        batch.done();
    }
}

/// Bytes of frames the sink took that `Inner::queued` still counts. Given back in one
/// subtraction per flush or batch rather than one per frame: `queued` is the one word both the
/// emitting task (adding) and the writer (subtracting) write, and on a multi-thread runtime
/// each write moves its cache line to the other worker. `queued` thus counts a frame until
/// the next flush or the end of its batch (at most [`ConnConfig::flush_batch`] frames after
/// the sink took it), which errs towards a fuller queue, never an emptier one.
///
/// [`ConnConfig::flush_batch`]: super::ConnConfig::flush_batch
#[derive(Default)]
struct Taken(usize);

impl Taken {
    fn give_back(&mut self, inner: &Inner) {
        if self.0 > 0 {
            inner.written(std::mem::take(&mut self.0));
        }
    }
}

/// What the writer took from the [`Outbox`] in one go.
#[derive(Default)]
struct Batch {
    commands: VecDeque<Command>,
    /// The frames of the [`Other::Encoded`] commands (`Outbox::encoded`, frozen).
    encoded: Bytes,
}

impl Batch {
    /// Every command is done: lets the buffers go that an idle connection should not keep.
    fn done(&mut self) {
        debug_assert!(self.encoded.is_empty(), "every encoded frame was sent");
        // The transport may still hold parts of it until written; this is our reference.
        self.encoded = Bytes::new();
        // Do not keep a burst's worth of capacity on an idle connection.
        if self.commands.capacity() > 64 {
            self.commands = VecDeque::new();
        }
    }
}

/// Flushes without a future when the transport writes everything out at once.
async fn flush(sink: &mut dyn MessageSink) -> Result<(), TransportError> {
    if sink.try_flush()? {
        return Ok(());
    }
    sink.flush().await
}

/// Takes the sink back (unless a caller is feeding with it) and the work queued: `Ok(false)`
/// when there is nothing to do (the sink is then left to the callers) or no sink, and `waker`
/// is then recorded for whoever brings work; `Err` when a caller's feed failed.
fn take_work(
    inner: &Inner,
    slot: &mut Option<Box<dyn MessageSink>>,
    batch: &mut Batch,
    unflushed: &mut usize,
    waker: &Waker,
) -> Result<bool, TransportError> {
    let mut outbox = inner.outbox();
    if slot.is_none() {
        *slot = outbox.idle_sink.take();
        if slot.is_none() {
            // A caller is feeding with it; it wakes us when it gives it back.
            outbox.park_writer(waker);
            return Ok(false);
        }
    }
    if let Some(err) = outbox.failed.take() {
        return Err(*err);
    }
    if std::mem::take(&mut outbox.unflushed) {
        *unflushed += 1;
    }
    std::mem::swap(&mut outbox.commands, &mut batch.commands);
    if !outbox.encoded.is_empty() {
        batch.encoded = std::mem::take(&mut outbox.encoded).freeze();
    }
    if batch.commands.is_empty() && *unflushed == 0 {
        outbox.idle_sink = slot.take();
        outbox.park_writer(waker);
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_waker::Counting;
    use crate::{ConnConfig, DEFAULT_FLUSH_BATCH};
    use cluster_transport::{Incoming, Transport, memory};
    use std::pin::{Pin, pin};
    use std::task::Context;

    /// `E||0||x`: the frame the hand-polled writer tests queue.
    fn small_event() -> Outgoing<'static> {
        Outgoing::Event {
            name: "E",
            ack_id: 0,
            data: b"x",
        }
    }

    /// A writer (not polled yet) over the client end of an in-memory pair made with
    /// `config`, the state it shares (with `conn`'s settings), and the server end.
    fn memory_writer(
        config: &memory::MemoryConfig,
        conn: &ConnConfig,
    ) -> (
        Arc<Inner>,
        Pin<Box<impl Future<Output = ()> + use<>>>,
        Transport,
    ) {
        let (transport, peer, _faults) = memory::pair_with(config);
        let inner = Inner::new(transport.peer.clone(), conn);
        let writer = Box::pin(run_writer(
            Arc::clone(&inner),
            transport.sink,
            DEFAULT_FLUSH_BATCH,
        ));
        (inner, writer, peer)
    }

    /// The writer waits with its waker in the outbox; a frame wakes it exactly once and takes
    /// the waker; the writer sends it and waits again; once the writer ends, the outbox lets
    /// its waker go (it must not keep its own ended task alive).
    #[tokio::test]
    async fn the_writer_waits_in_the_outbox_and_a_frame_wakes_it_once() {
        let (inner, mut writer, mut peer) =
            memory_writer(&memory::MemoryConfig::default(), &ConnConfig::default());
        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        assert!(writer.as_mut().poll(&mut cx).is_pending());
        assert!(
            inner
                .outbox()
                .writer
                .as_ref()
                .is_some_and(|w| w.will_wake(&waker))
        );
        assert_eq!(counting.count(), 0);

        for round in 1..=2 {
            let sent = inner.send_frame(small_event());
            assert!(sent.is_ok());
            assert_eq!(
                counting.count(),
                round,
                "one wake-up per frame on an idle writer"
            );
            assert!(
                inner.outbox().writer.is_none(),
                "the wake-up took the waker"
            );
            assert!(writer.as_mut().poll(&mut cx).is_pending());
            assert!(inner.outbox().writer.is_some(), "waits again");
            let got = pin!(peer.stream.recv()).poll(&mut cx);
            assert!(
                matches!(&got, Poll::Ready(Ok(Incoming::Text(t))) if &t[..] == b"E||0||x"),
                "{got:?}"
            );
        }

        let strong = Arc::strong_count(&counting);
        drop(writer);
        assert!(inner.outbox().writer.is_none());
        assert_eq!(Arc::strong_count(&counting), strong - 1, "the waker went");
    }

    /// The writer gives the bytes the sink took back to `queued` in one go, but before it
    /// waits for the transport: a writer stuck on a slow peer counts only what it could not
    /// hand over, and what it handed over is no longer held against the limits.
    #[tokio::test]
    async fn the_writer_counts_out_what_the_sink_took_before_it_waits() {
        let config = memory::MemoryConfig {
            capacity: 2,
            ..memory::MemoryConfig::default()
        };
        // Not polled yet, so the writer holds the sink: all three frames are queued.
        let (inner, mut writer, mut peer) = memory_writer(&config, &ConnConfig::default());
        let (_counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let len = small_event().len();
        for _ in 0..3 {
            let sent = inner.send_frame(small_event());
            assert!(sent.is_ok());
        }
        assert_eq!(inner.queued.load(Ordering::Acquire), 3 * len);

        // The channel takes two; the writer waits to feed the third.
        assert!(writer.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            inner.queued.load(Ordering::Acquire),
            len,
            "only the frame the transport could not take is still counted"
        );

        // The peer reads one: the third goes, and nothing is counted any more.
        assert!(matches!(peer.stream.recv().await, Ok(Incoming::Text(_))));
        assert!(writer.as_mut().poll(&mut cx).is_pending());
        assert_eq!(inner.queued.load(Ordering::Acquire), 0);
    }

    /// A writer dropped before it ever ran (the end of a connection whose reader found the
    /// transport broken first aborts it) still closes the outbox: `queued` goes to 0 and a
    /// task waiting for the queue to drain is woken.
    #[tokio::test]
    async fn a_writer_dropped_before_its_first_poll_closes_the_outbox() {
        let config = ConnConfig {
            queued_bytes_high_water: 0,
            ..ConnConfig::default()
        };
        let (inner, writer, _peer) = memory_writer(&memory::MemoryConfig::default(), &config);
        // Not polled, so the writer holds the sink: the frame is queued.
        let sent = inner.send_frame(small_event());
        assert!(sent.is_ok());
        assert!(inner.over_high_water());
        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let mut drained = pin!(inner.drained());
        assert!(drained.as_mut().poll(&mut cx).is_pending());

        drop(writer);
        assert!(!inner.outbox().open, "the outbox is closed");
        assert_eq!(inner.queued.load(Ordering::Acquire), 0);
        assert_eq!(counting.count(), 1, "the drain waiter is woken");
        assert!(drained.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn writer_commands_stay_small() {
        assert_eq!(std::mem::size_of::<Command>(), 32);
    }

    #[test]
    fn an_outgoing_frame_is_as_long_as_its_encoding() {
        let data = [b'd'; 300];
        let cases = [
            Outgoing::Encoded(Bytes::from_static(b"X||0||y")),
            Outgoing::Event {
                name: "MODULE:READY",
                ack_id: 0,
                data: b"",
            },
            Outgoing::Event {
                name: "E",
                ack_id: u64::MAX,
                data: &data,
            },
            Outgoing::Ack {
                event: "CONFIG:SEND_CONFIG_CHANGED",
                ack_id: 12_345,
                data: b"",
            },
            Outgoing::Ack {
                event: "E",
                ack_id: 7,
                data: &data,
            },
        ];
        for case in cases {
            let mut buf = BytesMut::new();
            case.encode_into(&mut buf);
            let len = case.len();
            assert_eq!(buf.len(), len);
            assert_eq!(case.into_bytes(len), buf.freeze());
        }
    }

    #[test]
    fn the_encoded_frames_decode_as_sent() {
        let mut buf = BytesMut::new();
        Outgoing::Ack {
            event: "E",
            ack_id: 7,
            data: b"ok",
        }
        .encode_into(&mut buf);
        assert_eq!(&buf[..], b"__ack_E||7||ok");
    }
}
