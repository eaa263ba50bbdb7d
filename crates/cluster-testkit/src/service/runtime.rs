//! What runs behind a [`FakeConfigService`](super::FakeConfigService): the shared state,
//! the accept loop of each listener, the handlers of each connection, the delivery of notifications
//! (with their faults and the delay line), and the reaper that records how connections end.

use super::{
    CLOSE_GOING_AWAY, CLOSE_INVALID_MODULE_NAME, CLOSE_TRY_AGAIN_LATER, Direction, Fault,
    RecordedFrame,
};
use crate::state::{ClusterState, ConnId, HandleError, Notification};
use bytes::Bytes;
use cluster_etp::{Conn, ConnConfig, Disconnect, Handlers, Reply};
use cluster_proto::event;
use cluster_proto::frame;
use cluster_transport::memory::MemoryNetwork;
use cluster_transport::ws::WsServerConfig;
use cluster_transport::{Accepted, Acceptor};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub(super) struct Shared {
    /// A weak handle to itself, for the tasks it starts.
    pub(super) me: Weak<Self>,
    pub(super) inner: Mutex<Inner>,
    /// Bumped after every change of `inner`: the await helpers wait on it.
    pub(super) changed: watch::Sender<u64>,
    pub(super) handlers: Handlers,
    pub(super) conn_config: ConnConfig,
    pub(super) ws_config: WsServerConfig,
    pub(super) network: MemoryNetwork,
}

pub(super) struct Inner {
    pub(super) state: ClusterState,
    pub(super) conns: HashMap<ConnId, ConnSlot>,
    /// Records of closed connections (kept only while recording).
    pub(super) history: BTreeMap<ConnId, ConnRecord>,
    pub(super) recording: bool,
    pub(super) next_seq: u64,
    pub(super) refuse: bool,
    pub(super) ack_faults: HashMap<String, Fault>,
    pub(super) event_faults: HashMap<String, Fault>,
    pub(super) delay_line: Option<DelayLine>,
    /// For each connection with notifications in the delay line, how many: its later
    /// notifications go through the line too, so they cannot overtake the held ones.
    pub(super) held: HashMap<ConnId, usize>,
    pub(super) reaper: Option<mpsc::UnboundedSender<Closing>>,
    pub(super) listeners: Vec<Listener>,
}

/// The end of one connection, as the reaper awaits it.
pub(super) type Closing = BoxFuture<'static, (ConnId, Disconnect)>;

pub(super) struct ConnSlot {
    pub(super) conn: Conn,
    pub(super) record: ConnRecord,
}

pub(super) struct ConnRecord {
    pub(super) module: Arc<str>,
    pub(super) frames: Vec<RecordedFrame>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ListenAddr {
    Memory(String),
    Ws(SocketAddr),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(addr) => write!(f, "mem://{addr}"),
            Self::Ws(addr) => write!(f, "ws://{addr}"),
        }
    }
}

pub(super) struct Listener {
    pub(super) addr: ListenAddr,
    /// Dropping it stops the accept task.
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) task: Option<JoinHandle<()>>,
}

/// One module event applied to the state (a method of [`ClusterState`]).
pub(super) type ApplyFn =
    fn(&mut ClusterState, ConnId, &[u8]) -> Result<Vec<Notification>, HandleError>;

/// The queue of held-back notifications and its task.
pub(super) struct DelayLine {
    pub(super) tx: mpsc::UnboundedSender<Delayed>,
    /// Dropped with the service: the task stops at once, even in the middle of a wait.
    pub(super) _stop: oneshot::Sender<()>,
}

/// A notification held back by [`Fault::Delay`], or queued behind one.
pub(super) struct Delayed {
    pub(super) at: Instant,
    pub(super) event: Arc<str>,
    pub(super) payload: Bytes,
    pub(super) frame: Bytes,
    pub(super) recipients: Vec<ConnId>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the state half-changed in a way that
        // matters to a test double; carry on rather than poison every later call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Registers an accepted client and starts its connection.
    pub(super) fn on_accept(self: &Arc<Self>, accepted: Accepted, listener: &str) {
        let Accepted {
            transport,
            module_name,
        } = accepted;
        if let Err(reason) = event::check_module_name(&module_name) {
            tracing::info!(module = ?shorten(&module_name), listener, %reason, "refusing a connection: invalid module name");
            let conn = Conn::spawn(transport, Handlers::new(), self.conn_config.clone());
            conn.start_close(
                CLOSE_INVALID_MODULE_NAME,
                &format!("invalid module name: {reason}"),
            );
            return;
        }
        let mut inner = self.lock();
        if inner.refuse {
            drop(inner);
            tracing::info!(module = %module_name, listener, "refusing a connection");
            let conn = Conn::spawn(transport, Handlers::new(), self.conn_config.clone());
            conn.start_close(
                CLOSE_TRY_AGAIN_LATER,
                "the fake config service refuses connections",
            );
            return;
        }
        // Spawned under the lock, so no handler of this connection runs before it is known.
        let conn = Conn::spawn(transport, self.handlers.clone(), self.conn_config.clone());
        let id = ConnId(conn.id());
        tracing::info!(conn = %id, module = %module_name, peer = conn.peer(), listener, "module connected");
        inner.state.connect(id, &module_name, conn.peer());
        inner.conns.insert(
            id,
            ConnSlot {
                conn: conn.clone(),
                record: ConnRecord {
                    module: module_name.into(),
                    frames: Vec::new(),
                },
            },
        );
        // The reaper ends only when this sender is dropped.
        let _ = inner
            .reaper(&self.me)
            .send(Box::pin(async move { (id, conn.closed().await) }));
        drop(inner);
        self.bump();
    }

    /// The connection ended: drop its instance, notify, keep its record if recording.
    pub(super) fn on_closed(&self, id: ConnId, disconnect: &Disconnect) {
        let mut inner = self.lock();
        tracing::info!(conn = %id, normal = disconnect.normal, reason = %disconnect.reason, "module disconnected");
        let notifications = inner.state.disconnect(id);
        inner.deliver(notifications, &self.me);
        if let Some(slot) = inner.conns.remove(&id)
            && inner.recording
        {
            inner.history.insert(id, slot.record);
        }
        drop(inner);
        self.bump();
    }

    /// Runs one module event: record it, change the state, deliver the notifications, and
    /// answer `ok` or the error text (through the ack fault, if any).
    pub(super) fn handle(
        self: &Arc<Self>,
        conn: &Conn,
        event: &'static str,
        data: &Bytes,
        apply: ApplyFn,
    ) -> Reply {
        let id = ConnId(conn.id());
        let mut inner = self.lock();
        inner.record(id, Direction::Received, event, data.clone());
        let answer = match apply(&mut inner.state, id, data) {
            Ok(notifications) => {
                inner.deliver(notifications, &self.me);
                Bytes::from_static(b"ok")
            }
            Err(err) => {
                if conn.log_limiter().admit(conn.id(), conn.peer()) {
                    tracing::warn!(conn = %id, event, error = %err, "module event refused");
                }
                Bytes::from(err.to_string())
            }
        };
        let reply = inner.answer(self, id, event, answer);
        drop(inner);
        self.bump();
        reply
    }

    pub(super) fn handle_unknown(self: &Arc<Self>, conn: &Conn, event: &str, data: Bytes) -> Reply {
        let id = ConnId(conn.id());
        if conn.log_limiter().admit(conn.id(), conn.peer()) {
            tracing::warn!(conn = %id, event = ?shorten(event), "unknown event; acking empty");
        }
        let mut inner = self.lock();
        inner.record(id, Direction::Received, event, data);
        let reply = inner.answer(self, id, event, Bytes::new());
        drop(inner);
        self.bump();
        reply
    }

    /// Awaits the end of every connection and unregisters it. One task for all connections
    /// (rather than one per connection) keeps a connection's cost down.
    pub(super) async fn run_reaper(weak: Weak<Self>, mut rx: mpsc::UnboundedReceiver<Closing>) {
        let mut closing = FuturesUnordered::new();
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(conn) => closing.push(conn),
                    None => return,
                },
                Some((id, disconnect)) = closing.next(), if !closing.is_empty() => {
                    let Some(shared) = weak.upgrade() else { return };
                    shared.on_closed(id, &disconnect);
                }
            }
        }
    }

    /// Emits held-back notifications when their time comes, in the order they were held.
    /// Ends as soon as the service is gone (`stop` fires when its sender is dropped), also in
    /// the middle of a wait.
    pub(super) async fn run_delay_line(
        weak: Weak<Self>,
        mut rx: mpsc::UnboundedReceiver<Delayed>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let delayed = tokio::select! {
                next = rx.recv() => match next {
                    Some(delayed) => delayed,
                    None => return,
                },
                _ = &mut stop => return,
            };
            tokio::select! {
                () = tokio::time::sleep_until(delayed.at) => {}
                _ = &mut stop => return,
            }
            let Some(shared) = weak.upgrade() else { return };
            let mut inner = shared.lock();
            inner.emit_now(
                &delayed.event,
                &delayed.payload,
                &delayed.frame,
                &delayed.recipients,
            );
            inner.release(&delayed.recipients);
            drop(inner);
            shared.bump();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        for listener in &mut inner.listeners {
            listener.stop.take();
            if let Some(task) = listener.task.take() {
                task.abort();
            }
        }
        for slot in inner.conns.values() {
            slot.conn
                .start_close(CLOSE_GOING_AWAY, "the fake config service is gone");
        }
    }
}

impl Inner {
    /// Records a frame when recording is on (the event name is only allocated then).
    pub(super) fn record(
        &mut self,
        conn: ConnId,
        direction: Direction,
        event: impl Into<Arc<str>>,
        data: Bytes,
    ) {
        if !self.recording {
            return;
        }
        let event = event.into();
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(slot) = self.conns.get_mut(&conn) {
            slot.record.frames.push(RecordedFrame {
                seq,
                conn,
                direction,
                event,
                data,
            });
        }
    }

    /// Queues each notification to its recipients now, or hands it to the delay line, or
    /// drops it, per the event faults.
    ///
    /// A recipient that has notifications in the delay line gets its undelayed ones through
    /// the line too, queued behind them (due at once, so sent right after the last one held
    /// before it: at `max(now, its last deadline)`). Each connection thus receives its
    /// notifications in the order the changes happened, whatever the faults; recipients with
    /// nothing held get theirs at once.
    ///
    /// Last line of defence: a notification whose event name would not decode as itself, or
    /// whose frame is over [`Limits::max_frame_len`](crate::state::Limits::max_frame_len), is
    /// dropped with an error line (the state refuses the inputs that would produce one; this
    /// catches what it missed).
    pub(super) fn deliver(&mut self, notifications: Vec<Notification>, me: &Weak<Shared>) {
        let max_frame_len = self.state.limits().max_frame_len;
        for n in notifications {
            if let Err(reason) = event::check_event_name(&n.event) {
                tracing::error!(event = ?shorten(&n.event), %reason, "not sending an event with an invalid name");
                continue;
            }
            let len = crate::state::frame_len(&n.event, n.payload.len());
            if len > max_frame_len {
                tracing::error!(
                    event = n.event,
                    len,
                    max_frame_len,
                    "not sending a frame over the outgoing limit"
                );
                continue;
            }
            let fault = self.event_faults.get(&n.event).copied();
            if fault == Some(Fault::Swallow) {
                tracing::debug!(
                    event = n.event,
                    recipients = n.recipients.len(),
                    "swallowing event (fault)"
                );
                continue;
            }
            let frame = frame::encode_to_bytes(&n.event, 0, &n.payload);
            let event: Arc<str> = n.event.into();
            match fault {
                Some(Fault::Delay(delay)) => self.hold(
                    me,
                    Delayed {
                        at: Instant::now() + delay,
                        event,
                        payload: n.payload,
                        frame,
                        recipients: n.recipients,
                    },
                ),
                _ if self.held.is_empty() => {
                    self.emit_now(&event, &n.payload, &frame, &n.recipients);
                }
                _ => {
                    let (behind, free): (Vec<ConnId>, Vec<ConnId>) = n
                        .recipients
                        .into_iter()
                        .partition(|id| self.held.contains_key(id));
                    self.emit_now(&event, &n.payload, &frame, &free);
                    if !behind.is_empty() {
                        self.hold(
                            me,
                            Delayed {
                                at: Instant::now(),
                                event,
                                payload: n.payload,
                                frame,
                                recipients: behind,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Puts a notification in the delay line and counts it for each of its recipients.
    pub(super) fn hold(&mut self, me: &Weak<Shared>, delayed: Delayed) {
        for &id in &delayed.recipients {
            *self.held.entry(id).or_default() += 1;
        }
        // The delay line ends only when the service is gone.
        let _ = self.delay_line(me).send(delayed);
    }

    /// The delay line sent a notification to `recipients`: one less held for each.
    pub(super) fn release(&mut self, recipients: &[ConnId]) {
        for id in recipients {
            if let Some(count) = self.held.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    self.held.remove(id);
                }
            }
        }
    }

    pub(super) fn emit_now(
        &mut self,
        event: &Arc<str>,
        payload: &Bytes,
        frame: &Bytes,
        to: &[ConnId],
    ) {
        for &id in to {
            let Some(slot) = self.conns.get(&id) else {
                continue;
            };
            if slot.conn.emit_encoded(frame.clone()).is_ok() {
                self.record(id, Direction::Sent, event.clone(), payload.clone());
            }
        }
    }

    pub(super) fn reaper(&mut self, me: &Weak<Shared>) -> &mpsc::UnboundedSender<Closing> {
        self.reaper.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Shared::run_reaper(me.clone(), rx));
            tx
        })
    }

    pub(super) fn delay_line(&mut self, me: &Weak<Shared>) -> &mpsc::UnboundedSender<Delayed> {
        &self
            .delay_line
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let (stop, stopped) = oneshot::channel();
                tokio::spawn(Shared::run_delay_line(me.clone(), rx, stopped));
                DelayLine { tx, _stop: stop }
            })
            .tx
    }

    /// The handler's reply for `answer`, through the ack fault of `event`.
    pub(super) fn answer(
        &mut self,
        shared: &Arc<Shared>,
        id: ConnId,
        event: &str,
        answer: Bytes,
    ) -> Reply {
        match self.ack_faults.get(event).copied() {
            None => {
                self.record(id, Direction::Acked, event, answer.clone());
                Reply::Ack(answer)
            }
            Some(Fault::Swallow) => {
                tracing::debug!(conn = %id, event, "swallowing ack (fault)");
                // Holds one handler slot of the connection until it closes.
                Reply::later(std::future::pending())
            }
            Some(Fault::Delay(delay)) => {
                let weak = Arc::downgrade(shared);
                let event: Arc<str> = event.into();
                Reply::later(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(shared) = weak.upgrade() {
                        shared
                            .lock()
                            .record(id, Direction::Acked, event, answer.clone());
                        shared.bump();
                    }
                    answer
                })
            }
        }
    }
}

/// The handlers every connection shares: they reach the service through a weak handle, so a
/// connection outliving its service answers with an error instead of keeping it alive.
pub(super) fn make_handlers(weak: Weak<Shared>) -> Handlers {
    fn module_event(
        weak: &Weak<Shared>,
        event: &'static str,
        apply: ApplyFn,
    ) -> impl Fn(&Conn, Bytes) -> Reply + Send + Sync + 'static {
        let weak = weak.clone();
        move |conn, data| match weak.upgrade() {
            Some(shared) => shared.handle(conn, event, &data, apply),
            None => Reply::ack(Bytes::from_static(b"the fake config service is gone")),
        }
    }
    let unknown = weak.clone();
    Handlers::new()
        .on(
            event::MODULE_SEND_CONFIG_SCHEMA,
            module_event(
                &weak,
                event::MODULE_SEND_CONFIG_SCHEMA,
                ClusterState::config_schema,
            ),
        )
        .on(
            event::MODULE_SEND_REQUIREMENTS,
            module_event(
                &weak,
                event::MODULE_SEND_REQUIREMENTS,
                ClusterState::module_requirements,
            ),
        )
        .on(
            event::MODULE_READY,
            module_event(&weak, event::MODULE_READY, ClusterState::module_ready),
        )
        .on_unknown(move |conn, event, data| match unknown.upgrade() {
            Some(shared) => shared.handle_unknown(conn, event, data),
            None => Reply::default(),
        })
        .on_error(|conn, error| {
            if conn.log_limiter().admit(conn.id(), conn.peer()) {
                tracing::warn!(conn = conn.id(), peer = conn.peer(), %error, "bad input from a module");
            }
        })
}

/// `text` cut to 64 characters, for a log line about something a peer chose.
pub(super) fn shorten(text: &str) -> &str {
    text.char_indices()
        .nth(64)
        .map_or(text, |(at, _)| &text[..at])
}

pub(super) async fn accept_loop(
    weak: Weak<Shared>,
    mut acceptor: Box<dyn Acceptor>,
    addr: String,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = &mut stop => break,
        };
        match accepted {
            Ok(accepted) => match weak.upgrade() {
                Some(shared) => shared.on_accept(accepted, &addr),
                None => break,
            },
            Err(err) => {
                tracing::warn!(listener = addr, error = %err, "listener failed; it stops");
                break;
            }
        }
    }
    tracing::debug!(listener = addr, "listener stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::FakeConfigService;
    use crate::state::{ErrorEvent, Limits};
    use std::time::Duration;

    #[tokio::test]
    async fn deliver_drops_events_with_invalid_names_or_oversized_frames() {
        let service = FakeConfigService::builder()
            .limits(Limits {
                max_frame_len: 64,
                ..Limits::default()
            })
            .build();
        let listener = service.listen_memory().unwrap();
        let transport = listener
            .connector
            .connect(&listener.endpoint(), "a")
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handlers = Handlers::new().on_unknown(move |_, name, _| {
            let _ = tx.send(name.to_owned());
            Reply::default()
        });
        let client = Conn::spawn(transport, handlers, ConnConfig::default());
        let wait = Duration::from_secs(5);
        let id = service.wait_connections("a", 1, wait).await.unwrap()[0].id;
        let notification = |event: &str, payload: Vec<u8>| Notification {
            event: event.to_owned(),
            payload: payload.into(),
            recipients: vec![id],
        };
        service.shared.lock().deliver(
            vec![
                notification("x||y_MODULE_CONNECTED", b"[]".to_vec()),
                notification("a\nb_MODULE_CONNECTED", b"[]".to_vec()),
                notification("BIG", vec![b'x'; 64]),
                notification("FINE", b"[]".to_vec()),
            ],
            &service.shared.me,
        );
        assert_eq!(
            service.send_error("a", ErrorEvent::Config, &"e".repeat(64)),
            0
        );
        // The ack of an unknown event comes after everything queued before it.
        client.emit_with_ack("BARRIER", b"").await.unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("FINE"));
        assert!(rx.try_recv().is_err());
        client.close(1000, "done").await;
    }
}
