//! The outbox (the writer's queue, bounded by bytes) and the writer task that drains it into
//! the sink.

use super::inner::{Inner, Stop};
use super::{CLOSE_QUEUE_OVERFLOW, ConnError, Disconnect, SendError};
use crate::{CLOSE_NORMAL, CloseInfo, MessageSink, TransportError};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// One instruction to the writer. Two variants, so the niche of [`Bytes`] keeps it at 32 bytes.
pub(super) enum Command {
    Frame(Bytes),
    Control(Box<Control>),
}

pub(super) enum Control {
    Ping(u64),
    /// Our close: flush what is queued, then close.
    Close(CloseInfo),
    /// The peer closed: flush what is queued, echo its close (the transport may have done so
    /// already), stop.
    Finish(CloseInfo),
}
/// The writer's queue. A `std` mutex around a `VecDeque` rather than a tokio mpsc channel: the
/// channel allocates ~1.5 KiB per connection up front (a block of 32 slots and cache-padded
/// halves), this allocates nothing until a frame is queued. The lock is held only to push one
/// command or to swap the whole queue out, never across an `await`.
pub(super) struct Outbox {
    pub(super) commands: VecDeque<Command>,
    /// `false` once the writer has ended: nothing can be queued any more.
    pub(super) open: bool,
    /// `false` once the last command (our close, or the echo of the peer's) is queued: frames
    /// and pings are refused from then on. Checked under the lock, so a frame is either queued
    /// before the close or refused, never accepted and then dropped.
    pub(super) accepting: bool,
}
impl Inner {
    /// Queues an encoded frame unless the connection is closing or closed, or the queue is
    /// full (which closes the connection).
    pub(super) fn send_frame(&self, frame: Bytes) -> Result<(), ConnError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed.into());
        }
        let len = frame.len();
        let was_empty = {
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
            self.queued.fetch_add(len, Ordering::AcqRel);
            outbox.commands.push_back(Command::Frame(frame));
            outbox.commands.len() == 1
        };
        if was_empty {
            self.outbox_ready.notify_one();
        }
        Ok(())
    }

    /// Queues a control command: a ping (refused once closing), or the last command (our
    /// close, the echo of the peer's), after which nothing more is accepted.
    pub(super) fn send_control(&self, control: Control) -> Result<(), ConnError> {
        let last = !matches!(control, Control::Ping(_));
        let was_empty = {
            let mut outbox = self.outbox();
            if !outbox.open || (!last && !outbox.accepting) {
                return Err(SendError::Closed.into());
            }
            if last {
                outbox.accepting = false;
            }
            outbox
                .commands
                .push_back(Command::Control(Box::new(control)));
            outbox.commands.len() == 1
        };
        if was_empty {
            self.outbox_ready.notify_one();
        }
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

    /// Called by the writer once the sink took a frame of `len` bytes.
    pub(super) fn written(&self, len: usize) {
        let before = self.queued.fetch_sub(len, Ordering::AcqRel);
        if before > self.high_water && before - len <= self.high_water {
            self.drained.notify_waiters();
        }
    }

    pub(super) fn over_high_water(&self) -> bool {
        self.queued.load(Ordering::Acquire) > self.high_water
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

    /// Called when the writer ends: refuses new commands and drops the queued ones.
    pub(super) fn close_outbox(&self) {
        let dropped = {
            let mut outbox = self.outbox();
            outbox.open = false;
            outbox.accepting = false;
            self.queued.store(0, Ordering::Release);
            std::mem::take(&mut outbox.commands)
        };
        drop(dropped);
        self.drained.notify_waiters();
    }
}

/// Closes the outbox when the writer ends, however it ends (done, failed, aborted).
pub(super) struct WriterGuard(Arc<Inner>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.close_outbox();
    }
}

pub(super) async fn run_writer(
    inner: Arc<Inner>,
    mut sink: Box<dyn MessageSink>,
    flush_batch: usize,
) {
    let _guard = WriterGuard(Arc::clone(&inner));
    if let Err(err) = write_loop(&inner, &mut *sink, flush_batch).await {
        let recorded = match &err {
            // The peer's close got to the transport before it got to our reader. (If we were
            // closing too, the closes crossed: our recorded close stands.)
            TransportError::Closed(info) => inner.end_with(Disconnect::peer_closed(info.clone())),
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

/// Takes the whole queue at once, feeds it, and flushes when the queue is found empty or after
/// `flush_batch` frames.
pub(super) async fn write_loop(
    inner: &Inner,
    sink: &mut dyn MessageSink,
    flush_batch: usize,
) -> Result<(), TransportError> {
    let mut batch = VecDeque::new();
    let mut unflushed = 0usize;
    loop {
        std::mem::swap(&mut inner.outbox().commands, &mut batch);
        if batch.is_empty() {
            if unflushed > 0 {
                sink.flush().await?;
                unflushed = 0;
                // More may have come while flushing.
                continue;
            }
            inner.outbox_ready.notified().await;
            continue;
        }
        while let Some(command) = batch.pop_front() {
            match command {
                Command::Frame(text) => {
                    let len = text.len();
                    sink.feed(text).await?;
                    inner.written(len);
                    unflushed += 1;
                    if unflushed >= flush_batch {
                        sink.flush().await?;
                        unflushed = 0;
                    }
                }
                Command::Control(control) => match *control {
                    Control::Ping(id) => {
                        sink.ping(Bytes::copy_from_slice(&id.to_be_bytes())).await?;
                        sink.flush().await?;
                        unflushed = 0;
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
                },
            }
        }
        // Do not keep a burst's worth of capacity on an idle connection.
        if batch.capacity() > 64 {
            batch = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_commands_stay_small() {
        assert_eq!(std::mem::size_of::<Command>(), 32);
    }
}
