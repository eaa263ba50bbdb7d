//! The reader task: receives messages, resolves acks and pongs, reports malformed frames, and
//! hands events to [`dispatch`](super::dispatch); while it must wait, it reads on and holds
//! the first event.

use super::close::wind_down;
use super::dispatch::{dispatch, dispatch_after_drain, spawn_when_free};
use super::inner::{Inner, Stop};
use super::{Conn, ConnError, Handlers};
use cluster_proto::frame::Frame;
use cluster_proto::wire;
use cluster_transport::{CloseInfo, Incoming, MessageStream, TransportError};
use std::future::{Future, poll_fn};
use std::sync::{Arc, Weak};
use std::task::Poll;
use tokio::task::JoinHandle;

/// Publishes the end of the connection when the reader is done, even if it panicked. It holds
/// a `Weak`, upgraded only to publish: if no handle is left there is no one to tell.
pub(super) struct FinishGuard(Weak<Inner>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.finish();
        }
    }
}

pub(super) enum End {
    Stop(Stop),
    PeerClosed(CloseInfo),
    Lost(TransportError),
}

pub(super) async fn run_reader(
    conn: Conn,
    stream: Box<dyn MessageStream>,
    handlers: Handlers,
    writer: JoinHandle<()>,
) {
    let _finish = FinishGuard(Arc::downgrade(&conn.inner));
    read_loop(conn, stream, handlers, writer).await;
    // Everything the reader held is dropped here, before `_finish` publishes the end.
}

pub(super) async fn read_loop(
    conn: Conn,
    mut stream: Box<dyn MessageStream>,
    handlers: Handlers,
    mut writer: JoinHandle<()>,
) {
    let inner = &*conn.inner;
    // An event read while the reader waited (for the writer or a handler slot), to dispatch
    // before reading on.
    let mut held: Option<Frame> = None;
    let end = loop {
        let frame = match held.take() {
            Some(frame) => frame,
            None => {
                // What the last read brought is taken without a future per message, as long
                // as no stop is waiting.
                if let Some(stop) = inner.stop_sent() {
                    break End::Stop(stop);
                }
                let incoming = match stream.try_recv() {
                    Some(incoming) => Ok(incoming),
                    None => {
                        // The wait, by polling where the transport can: no future per message.
                        let polled = poll_fn(|cx| match inner.poll_stop(cx) {
                            Poll::Ready(stop) => Poll::Ready(Err(stop)),
                            Poll::Pending => stream.poll_recv(cx).map(Ok),
                        })
                        .await;
                        match polled {
                            Err(stop) => break End::Stop(stop),
                            Ok(Some(incoming)) => Ok(incoming),
                            // Something else comes next (or the transport cannot poll).
                            Ok(None) => tokio::select! {
                                biased;
                                stop = inner.stopped() => break End::Stop(stop),
                                incoming = stream.recv() => incoming,
                            },
                        }
                    }
                };
                match take_incoming(&conn, &handlers, incoming) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => continue,
                    Err(end) => break end,
                }
            }
        };
        // The waits are rare: boxed, so their state does not weigh on the reader's future.
        let waited = if inner.over_high_water() {
            let reader = Reader {
                conn: &conn,
                handlers: &handlers,
                stream: &mut *stream,
                held: &mut held,
            };
            Box::pin(dispatch_after_drain(reader, frame)).await
        } else if let Some(later) = dispatch(&conn, &handlers, frame) {
            let reader = Reader {
                conn: &conn,
                handlers: &handlers,
                stream: &mut *stream,
                held: &mut held,
            };
            Box::pin(spawn_when_free(reader, later)).await
        } else {
            Ok(())
        };
        if let Err(end) = waited {
            break end;
        }
    };
    drop(held);
    // The end is rare and needs timers: boxed, so the reader's future stays small while it runs.
    Box::pin(wind_down(inner, end, &mut *stream, &mut writer)).await;
    inner.log_end();
}

/// What the reader lends to `dispatch` and `wait_reading`.
pub(super) struct Reader<'a> {
    pub(super) conn: &'a Conn,
    pub(super) handlers: &'a Handlers,
    pub(super) stream: &'a mut dyn MessageStream,
    pub(super) held: &'a mut Option<Frame>,
}

/// Handles what the stream gave, except events: acks, pongs and malformed frames are dealt
/// with here; an event frame is returned; the end of the stream is `Err`.
pub(super) fn take_incoming(
    conn: &Conn,
    handlers: &Handlers,
    incoming: Result<Incoming, TransportError>,
) -> Result<Option<Frame>, End> {
    match incoming {
        Ok(Incoming::Text(message)) => match Frame::decode(message) {
            Ok(frame) => match wire::acked_id(&frame) {
                Some(id) => {
                    conn.inner.on_ack(id, frame.into_data());
                    Ok(None)
                }
                None => Ok(Some(frame)),
            },
            Err(err) => {
                handlers.report(conn, &ConnError::Malformed(err));
                Ok(None)
            }
        },
        Ok(Incoming::Pong(payload)) => {
            conn.inner.on_pong(&payload);
            Ok(None)
        }
        Ok(Incoming::Closed(info)) => Err(End::PeerClosed(info)),
        // `Incoming` is non-exhaustive: a kind of message this runtime does not know is skipped.
        Ok(_) => Ok(None),
        Err(err) => Err(End::Lost(err)),
    }
}

/// Waits for `ready` while reading on: acks, pongs and malformed frames are handled, the
/// first event is kept in `held` and then reading stops; a stop or the end of the stream ends
/// the wait with `Err`.
pub(super) async fn wait_reading<T>(
    reader: &mut Reader<'_>,
    ready: impl Future<Output = T>,
) -> Result<T, End> {
    tokio::pin!(ready);
    loop {
        let incoming = tokio::select! {
            biased;
            stop = reader.conn.inner.stopped() => return Err(End::Stop(stop)),
            out = &mut ready => return Ok(out),
            incoming = reader.stream.recv(), if reader.held.is_none() => incoming,
        };
        if let Some(frame) = take_incoming(reader.conn, reader.handlers, incoming)? {
            tracing::trace!(
                conn = reader.conn.id(),
                peer = reader.conn.peer(),
                event = frame.name(),
                "event held until the reader may dispatch it; reading paused"
            );
            *reader.held = Some(frame);
        }
    }
}
