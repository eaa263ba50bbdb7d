//! The run loop and the session driver: one task drives the sans-IO [`Session`] over a
//! [`Conn`].
//!
//! The run loop picks the next host ([`Reconnect`]: round-robin from a seeded random start),
//! connects, drives one session until it fails or the client is closed, waits the backoff, and
//! starts over. The driver of one session is a single `select!` loop:
//!
//! - inputs: the server's events (forwarded in arrival order by ONE catch-all handler of the
//!   connection into a bounded [`Inbox`]), the outcomes of acknowledged emits and pings
//!   (futures polled by this task, so nothing outlives it), the end of the connection, the
//!   end of an application of a receiver, and ONE sleep reset to [`Session::poll_timeout`];
//! - after every input, [`Session::poll_transmit`] is sent and [`Session::poll_event`] is
//!   dispatched: configs and routing tables to their [`Applier`]s, host lists to the upgraders
//!   (inline), and the verdicts on the first ones back to the session with
//!   [`Session::handle_applied`]. Nothing in there awaits: a failed session leaves the
//!   [`ClientState::Ready`] state at the very input that failed it, and its connection is
//!   closed by the run loop during the backoff.
//!
//! The select is biased so that the server's events are always taken before the outcome of an
//! ack that arrived after them: the connection's reader forwards an event before it resolves a
//! later ack, so the session sees the wire order. Two bounds keep that from starving the rest:
//! after [`EVENT_BUDGET`] events in a row the driver lets its other inputs go first once, and
//! when the inbox is full (the driver is behind by [`EVENT_QUEUE`] events) the reader parks the
//! events, in order, and stops reading once the connection's
//! [`max_concurrent_handlers`](cluster_transport::conn::ConnConfig::max_concurrent_handlers)
//! are parked. In either case an ack may overtake events that arrived before it; the session
//! tolerates that (early events count), except that an error event overtaken by the ack of
//! `MODULE:READY` is then logged rather than failing the handshake.

use crate::apply::{Applier, Done, Job, Order, panic_message};
use crate::handler::EventHandler;
use crate::state::{ClientState, Shared};
use bytes::Bytes;
use cluster_proto::SecretMasker;
use cluster_proto::backoff::Reconnect;
use cluster_proto::payload::{ModuleRequirements, decode_addresses, decode_routing_config};
use cluster_proto::rng::SplitMix64;
use cluster_proto::session::{
    AckToken, Applied, PingToken, Session, SessionConfig, SessionError, SessionEvent,
    SessionTimeouts, Transmit,
};
use cluster_transport::conn::{Conn, ConnError, Handlers, Reply};
use cluster_transport::{CLOSE_NORMAL, Connector, Endpoint, Transport, TransportError};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The close reason sent when the application closes the client.
const REASON_CLOSED: &str = "client closed";
/// The close reason sent when a session failed.
const REASON_FAILED: &str = "session failed";
/// How many of the server's events the [`Inbox`] holds before the reader parks them.
pub(crate) const EVENT_QUEUE: usize = 1024;
/// How many events the driver takes in a row before its other inputs get a turn.
pub(crate) const EVENT_BUDGET: u32 = 64;

/// What one run needs, prepared once.
pub(crate) struct Plan {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) session: SessionConfig,
    pub(crate) module_name: String,
    pub(crate) seed: u64,
}

impl Plan {
    /// The session config of `handler`: what to send, what to wait for, how long.
    pub(crate) fn session_config(
        shared: &Shared,
        handler: &EventHandler,
        timeouts: SessionTimeouts,
    ) -> SessionConfig {
        let settings = &shared.settings;
        let modules: Vec<String> = handler.required_modules().map(str::to_owned).collect();
        let requirements = ModuleRequirements {
            required_modules: modules.clone(),
            require_routes: handler.has_routes_receiver(),
        };
        let declaration = settings.module_info.backend_declaration(&modules);
        let mut session = SessionConfig::new(
            Bytes::from(settings.config_data.to_json()),
            Bytes::from(requirements.to_json()),
            Bytes::from(declaration.to_json()),
        );
        session.wait_config = handler.has_config_receiver();
        session.wait_routes = handler.has_routes_receiver();
        session.required_modules = modules;
        session.timeouts = timeouts;
        session
    }
}

/// The applications of the receivers, shared by all sessions of one run.
struct Appliers {
    config: Applier,
    routes: Applier,
}

impl Appliers {
    /// Logs an outcome that no session waits for.
    fn log(what: &str, done: &Done) {
        match &done.result {
            Ok(()) => tracing::info!(event_id = done.event_id, "{what} applied"),
            Err(err) => {
                tracing::error!(event_id = done.event_id, error = %err, "{what} not applied");
            }
        }
    }

    /// Waits for `fut` while applications go on; `None` if the client was closed first.
    async fn wait<F: Future>(&mut self, cancel: &CancellationToken, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                out = &mut fut => return Some(out),
                done = self.config.done() => Self::log("remote config", &done),
                done = self.routes.done() => Self::log("routes", &done),
            }
        }
    }
}

/// How a session ended.
struct Outcome {
    /// The client was closed (the connection, if any, is closed too).
    closed: bool,
    /// How long the session stayed ready (`None`: it never was).
    ready_for: Option<Duration>,
    /// The connection of a failed session, still to be closed (it may take up to
    /// [`CLOSE_TIMEOUT`](cluster_transport::conn::CLOSE_TIMEOUT) with a peer that does not
    /// answer); `None` when the connect failed or the client was closed.
    conn: Option<Conn>,
    /// Why it ended, for [`ClientState::BackingOff`].
    cause: Arc<str>,
}

impl Outcome {
    fn closed() -> Self {
        Self {
            closed: true,
            ready_for: None,
            conn: None,
            cause: Arc::from("closed"),
        }
    }
}

/// Runs sessions until the client is closed.
pub(crate) async fn run(
    shared: &Shared,
    handler: &EventHandler,
    plan: Plan,
    guard: &mut Option<Conn>,
) {
    let settings = &shared.settings;
    let cancel = &shared.cancel;
    let mut reconnect = Reconnect::new(plan.endpoints.len(), settings.backoff, plan.seed);
    let mut ids = SplitMix64::new(plan.seed ^ 0x5EED_0F5E_5510_1015);
    let mut appliers = Appliers {
        config: Applier::new(Order::LatestWins, handler.config_apply_timeout),
        routes: Applier::new(Order::Fifo, handler.routes_timeout),
    };
    let mut generation = 0u64;
    while !cancel.is_cancelled() {
        let Some(index) = reconnect.next_host() else {
            break;
        };
        let endpoint = &plan.endpoints[index];
        generation += 1;
        let session_id = format!("{:016x}", ids.next_u64());
        let host: Arc<str> = Arc::from(endpoint.to_string());
        let span = tracing::info_span!("session", session_id = %session_id, host = %host);
        let outcome = async {
            tracing::info!("run config service session");
            shared.set_state(ClientState::Connecting { host: host.clone() });
            let connect = plan.connector.connect(endpoint, &plan.module_name);
            let transport = match appliers.wait(cancel, connect).await {
                None => return Outcome::closed(),
                Some(Ok(transport)) => transport,
                Some(Err(err)) => {
                    log_connect_error(&err);
                    return Outcome {
                        closed: false,
                        ready_for: None,
                        conn: None,
                        cause: Arc::from(format!("connect: {err}")),
                    };
                }
            };
            shared.set_state(ClientState::Handshaking {
                host: host.clone(),
                session_id: session_id.clone(),
            });
            let mut driver = Driver::start(
                shared,
                handler,
                &mut appliers,
                transport,
                &plan.session,
                generation,
                host.clone(),
                session_id.clone(),
            );
            *guard = Some(driver.conn.clone());
            let outcome = driver.drive().await;
            if outcome.conn.is_none() {
                *guard = None;
            }
            tracing::info!("config service session stopped");
            outcome
        }
        .instrument(span.clone())
        .await;
        if outcome.closed {
            break;
        }
        // A session that stayed ready long enough resets the backoff; one dropped at once
        // counts as a failure, so a server that accepts and drops is not hammered every second.
        reconnect.session_ended(outcome.ready_for);
        // Leave the session's state (ready, say) before anything is awaited.
        let delay = reconnect.next_delay();
        let until = deadline_after(delay);
        shared.set_state(ClientState::BackingOff {
            until,
            delay,
            failures: reconnect.failures(),
            cause: outcome.cause,
        });
        tracing::info!(
            delay = %format_args!("{delay:.1?}"),
            "next session after the backoff delay"
        );
        if let Some(conn) = outcome.conn {
            let closed = close_failed(&mut appliers, cancel, &conn)
                .instrument(span)
                .await;
            *guard = None;
            if closed {
                break;
            }
        }
        if appliers
            .wait(cancel, tokio::time::sleep_until(until))
            .await
            .is_none()
        {
            break;
        }
    }
    // `appliers` is dropped on return: whatever application still runs is cancelled.
}

fn log_connect_error(err: &TransportError) {
    tracing::error!(error = %err, "connect to config service");
}

/// `delay` from now; a delay too long for an instant means about thirty years.
fn deadline_after(delay: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

/// Closes the connection of a failed session while the applications go on (this is part of
/// the backoff). Returns whether the client was closed meanwhile; the close is then finished
/// before returning all the same, so that nothing of the connection outlives `Client::close`.
async fn close_failed(appliers: &mut Appliers, cancel: &CancellationToken, conn: &Conn) -> bool {
    let close = conn.close(CLOSE_NORMAL, REASON_FAILED);
    tokio::pin!(close);
    if appliers.wait(cancel, close.as_mut()).await.is_some() {
        return false;
    }
    close.await;
    true
}

/// What the driver's futures resolve to.
enum Settled {
    Ack {
        token: AckToken,
        event: &'static str,
        result: Result<Bytes, ConnError>,
    },
    Pong {
        token: PingToken,
        result: Result<Duration, ConnError>,
    },
}

/// Drives one session over one connection.
struct Driver<'a> {
    shared: &'a Shared,
    handler: &'a EventHandler,
    appliers: &'a mut Appliers,
    conn: Conn,
    session: Session,
    events: mpsc::Receiver<InboxItem>,
    pending: FuturesUnordered<BoxFuture<'static, Settled>>,
    generation: u64,
    host: Arc<str>,
    session_id: String,
    event_seq: u64,
    pong_timeout: Duration,
    closed: bool,
    /// When the session became ready.
    ready_at: Option<tokio::time::Instant>,
    /// The session's error, once it failed.
    failure: Option<Arc<str>>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl<'a> Driver<'a> {
    #[allow(clippy::too_many_arguments)]
    fn start(
        shared: &'a Shared,
        handler: &'a EventHandler,
        appliers: &'a mut Appliers,
        transport: Transport,
        config: &SessionConfig,
        generation: u64,
        host: Arc<str>,
        session_id: String,
    ) -> Self {
        // What an older session left queued is superseded by this session's first config and
        // routing table; waiting behind it could outlast this session's handshake.
        let dropped = appliers.config.drop_queued() + appliers.routes.drop_queued();
        if dropped > 0 {
            tracing::debug!(dropped, "queued applications of an earlier session dropped");
        }
        let (inbox, events) = Inbox::new(EVENT_QUEUE);
        // ONE catch-all handler: every event goes to the driver, in arrival order.
        let handlers =
            Handlers::new().on_unknown(move |_conn, name, data| inbox.deliver(name, data));
        let conn = Conn::spawn(transport, handlers, shared.settings.conn_config.clone());
        let session = Session::new(config.clone(), now());
        Self {
            shared,
            handler,
            appliers,
            conn,
            session,
            events,
            pending: FuturesUnordered::new(),
            generation,
            host,
            session_id,
            event_seq: 0,
            pong_timeout: config.timeouts.pong_timeout,
            closed: false,
            ready_at: None,
            failure: None,
        }
    }

    async fn drive(&mut self) -> Outcome {
        let cancel = self.shared.cancel.clone();
        let conn = self.conn.clone();
        let closed = conn.closed();
        tokio::pin!(closed);
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut disconnected = false;
        let mut budget = EVENT_BUDGET;
        loop {
            self.flush();
            if self.session.is_finished() {
                break;
            }
            let deadline = self.session.poll_timeout();
            if let Some(at) = deadline {
                let at = tokio::time::Instant::from_std(at);
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !self.closed => {
                    self.closed = true;
                    self.session.close(now());
                }
                Some((name, data)) = next_event(&mut self.events, &mut budget) => {
                    budget = budget.saturating_sub(1);
                    self.on_event(&name, data);
                }
                Some(outcome) = self.pending.next(), if !self.pending.is_empty() => {
                    self.on_outcome(outcome);
                }
                done = self.appliers.config.done() => self.on_applied(Applied::Config, "remote config", &done),
                done = self.appliers.routes.done() => self.on_applied(Applied::Routes, "routes", &done),
                cause = &mut closed, if !disconnected => {
                    disconnected = true;
                    self.session.handle_disconnect(now(), cause.normal, &cause.reason);
                }
                () = &mut sleep, if deadline.is_some() => self.session.handle_timeout(now()),
            }
        }
        if self.closed {
            // Closed by the application: the connection's end is awaited here, before `run`
            // returns. A failed session's is left to the run loop, once the state says so.
            self.conn.close(CLOSE_NORMAL, REASON_CLOSED).await;
            return Outcome::closed();
        }
        Outcome {
            closed: false,
            ready_for: self.ready_at.map(|at| at.elapsed()),
            conn: Some(self.conn.clone()),
            cause: self
                .failure
                .take()
                .unwrap_or_else(|| Arc::from("session ended")),
        }
    }

    /// Sends what the session wants sent and hands its events to the application, until both
    /// queues are empty (handing out an event can produce more to send). Never waits.
    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.session.poll_transmit() {
                progressed = true;
                self.transmit(transmit);
            }
            while let Some(event) = self.session.poll_event() {
                progressed = true;
                self.dispatch(event);
            }
            if !progressed {
                return;
            }
        }
    }

    fn transmit(&mut self, transmit: Transmit) {
        match transmit {
            Transmit::Emit { event, data, ack } => {
                tracing::debug!(
                    event,
                    data = %Masked(&self.shared.settings.masker, &data),
                    "send event"
                );
                match ack {
                    Some(token) => {
                        let ack = self.conn.emit_with_ack(event, &data);
                        self.pending.push(Box::pin(async move {
                            Settled::Ack {
                                token,
                                event,
                                result: ack.await,
                            }
                        }));
                    }
                    None => {
                        if let Err(err) = self.conn.emit(event, &data) {
                            tracing::warn!(event, error = %err, "emit failed");
                        }
                    }
                }
            }
            Transmit::Ping(token) => {
                let conn = self.conn.clone();
                let timeout = self.pong_timeout;
                self.pending.push(Box::pin(async move {
                    Settled::Pong {
                        token,
                        result: conn.ping(timeout).await,
                    }
                }));
            }
            // Only started here: the session is over, and the end of the connection is
            // awaited after the state has left `Ready` (see `run` and `drive`).
            Transmit::Close => {
                let reason = if self.closed {
                    REASON_CLOSED
                } else {
                    REASON_FAILED
                };
                self.conn.start_close(CLOSE_NORMAL, reason);
            }
        }
    }

    fn on_event(&mut self, name: &str, data: Bytes) {
        self.event_seq += 1;
        tracing::debug!(
            event_id = self.event_seq,
            event = name,
            len = data.len(),
            "event received"
        );
        self.session.handle_event(now(), name, data);
    }

    fn on_outcome(&mut self, outcome: Settled) {
        match outcome {
            Settled::Ack {
                token,
                event,
                result,
            } => match result {
                Ok(text) => {
                    if text.as_ref() == b"ok" {
                        tracing::debug!(event, "event acknowledged");
                    } else {
                        tracing::error!(
                            event,
                            response = %String::from_utf8_lossy(&text),
                            "event refused by the config service"
                        );
                    }
                    self.session.handle_ack(now(), token, &text);
                }
                // The connection ended: the disconnect input fails the session.
                Err(err) => tracing::debug!(event, error = %err, "no ack"),
            },
            Settled::Pong { token, result } => match result {
                Ok(rtt) => {
                    tracing::trace!(?rtt, "pong");
                    self.session.handle_pong(now(), token);
                }
                Err(err) => tracing::warn!(error = %err, "ping config service"),
            },
        }
    }

    fn dispatch(&mut self, event: SessionEvent) {
        let event_id = self.event_seq;
        match event {
            SessionEvent::Config { data, initial } => {
                // INFO says which config (size and a fingerprint of its masked form); the
                // masked content itself is for DEBUG.
                let masker = &self.shared.settings.masker;
                tracing::info!(
                    event_id,
                    initial,
                    bytes = data.len(),
                    hash = %masker.fingerprint(&data),
                    "remote config received; applying"
                );
                tracing::debug!(
                    event_id,
                    config = %Masked(masker, &data),
                    "remote config content (secrets masked)"
                );
                let Some(receiver) = self.handler.config.clone() else {
                    return;
                };
                self.appliers.config.push(Job {
                    tag: initial.then_some(self.generation),
                    event_id,
                    future: Box::pin(async move { receiver.receive_config(data).await }),
                });
            }
            SessionEvent::Routes { data, initial } => {
                let routes = decode_routing_config(&data);
                match &routes {
                    Ok(routes) => tracing::info!(
                        event_id,
                        initial,
                        instances = routes.len(),
                        bytes = data.len(),
                        "routes received"
                    ),
                    Err(err) => tracing::error!(
                        event_id,
                        initial,
                        bytes = data.len(),
                        error = %err,
                        "bad routing table"
                    ),
                }
                let Some(receiver) = self.handler.routes.clone() else {
                    return;
                };
                self.appliers.routes.push(Job {
                    tag: initial.then_some(self.generation),
                    event_id,
                    future: Box::pin(async move { receiver.receive_routes(routes?).await }),
                });
            }
            SessionEvent::Hosts {
                module,
                data,
                initial,
            } => {
                let result = self.upgrade_hosts(event_id, &module, &data);
                if initial {
                    self.session
                        .handle_applied(now(), Applied::Hosts(module), result);
                }
            }
            // Both come as often as the peer likes: through the connection's log limiter.
            SessionEvent::ServerError { event, text } => {
                if self
                    .conn
                    .log_limiter()
                    .admit(self.conn.id(), self.conn.peer())
                {
                    let text = String::from_utf8_lossy(&text);
                    tracing::error!(
                        event_id,
                        event,
                        text = %shorten(&text),
                        len = text.len(),
                        "error event from config service"
                    );
                }
            }
            SessionEvent::Unknown { name } => {
                if self
                    .conn
                    .log_limiter()
                    .admit(self.conn.id(), self.conn.peer())
                {
                    tracing::warn!(
                        event_id,
                        event = %shorten(&name),
                        "unexpected event from config service"
                    );
                }
            }
            SessionEvent::Ready => {
                self.ready_at = Some(tokio::time::Instant::now());
                tracing::info!("module ready: session active");
                self.shared.set_state(ClientState::Ready {
                    host: self.host.clone(),
                    session_id: self.session_id.clone(),
                });
            }
            SessionEvent::Failed(error) => {
                self.log_failure(&error);
                self.failure = Some(Arc::from(error.to_string()));
            }
        }
    }

    fn upgrade_hosts(&self, event_id: u64, module: &str, data: &[u8]) -> Result<(), String> {
        let addresses = decode_addresses(data).map_err(|err| {
            tracing::error!(event_id, module, error = %err, "bad address list");
            err.to_string()
        })?;
        let hosts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        tracing::info!(
            event_id,
            module,
            ?hosts,
            "required module addresses received"
        );
        let Some(upgrader) = self.handler.upgrader(module) else {
            return Ok(());
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| upgrader.upgrade(hosts))).map_err(|panic| {
            let message = format!("hosts upgrader panicked: {}", panic_message(&*panic));
            tracing::error!(event_id, module, "{message}");
            message
        })
    }

    fn on_applied(&mut self, what: Applied, name: &str, done: &Done) {
        let current = done.tag == Some(self.generation);
        match &done.result {
            Ok(()) => tracing::info!(
                event_id = done.event_id,
                superseded = done.superseded,
                "{name} applied"
            ),
            Err(err) => {
                tracing::error!(event_id = done.event_id, error = %err, "{name} not applied")
            }
        }
        if current {
            self.session
                .handle_applied(now(), what, done.result.clone());
        }
    }

    fn log_failure(&self, error: &SessionError) {
        match error {
            SessionError::Disconnected { normal: true, .. } => {
                tracing::info!(%error, "config service session ended");
            }
            _ => tracing::error!(%error, "config service session failed"),
        }
    }
}

/// One event of the server: its name and data.
type InboxItem = (Box<str>, Bytes);

/// Where the connection's reader puts the server's events for the driver: a queue bounded to
/// [`EVENT_QUEUE`] events that keeps their arrival order.
///
/// [`Inbox::deliver`] runs in the reader, in arrival order. While the queue has room and no
/// event is parked, the event is queued at once. Otherwise it is parked in a [`Reply::Later`]
/// future with a numbered turn: parked events reach the queue strictly by turn (the
/// connection runs `Later` futures concurrently, in no set order), and none is queued directly
/// while any is parked. Parked futures count against the connection's
/// `max_concurrent_handlers`: once that many are parked the reader stops reading, so a server
/// that outruns the driver is slowed down instead of filling memory.
struct Inbox {
    tx: mpsc::Sender<InboxItem>,
    turns: Mutex<Turns>,
    served: Notify,
}

/// The turns of parked events.
#[derive(Default)]
struct Turns {
    /// Turns handed out so far.
    issued: u64,
    /// Turns whose event is queued; `served == issued` when nothing is parked.
    served: u64,
}

impl Inbox {
    fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<InboxItem>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let inbox = Self {
            tx,
            turns: Mutex::new(Turns::default()),
            served: Notify::new(),
        };
        (Arc::new(inbox), rx)
    }

    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the event `name` with `data`, or parks it (see [`Inbox`]). Once the driver is
    /// gone (the session is over) the event is dropped.
    fn deliver(self: &Arc<Self>, name: &str, data: Bytes) -> Reply {
        let mut item: InboxItem = (Box::from(name), data);
        let turn = {
            let mut turns = self.turns();
            if turns.issued == turns.served {
                match self.tx.try_send(item) {
                    Ok(()) | Err(TrySendError::Closed(_)) => return Reply::default(),
                    Err(TrySendError::Full(back)) => item = back,
                }
            }
            let turn = turns.issued;
            turns.issued += 1;
            turn
        };
        tracing::trace!(turn, "event parked: the driver is behind");
        let inbox = Arc::clone(self);
        Reply::later(async move {
            inbox.park(turn, item).await;
            Bytes::new()
        })
    }

    /// Waits for `turn`, then for room in the queue.
    async fn park(&self, turn: u64, item: InboxItem) {
        loop {
            let served = self.served.notified();
            tokio::pin!(served);
            served.as_mut().enable();
            if self.turns().served == turn {
                break;
            }
            served.await;
        }
        // An error means the driver is gone: the event is dropped with the session.
        let _ = self.tx.send(item).await;
        self.turns().served += 1;
        self.served.notify_waiters();
    }
}

/// The next event, unless `budget` events were taken in a row: then it first yields once, so
/// that the select's other inputs (acks, pongs, applications, timers) and the connection's
/// tasks get a turn, and starts a new budget.
async fn next_event(events: &mut mpsc::Receiver<InboxItem>, budget: &mut u32) -> Option<InboxItem> {
    if *budget == 0 {
        *budget = EVENT_BUDGET;
        tokio::task::yield_now().await;
    }
    events.recv().await
}

/// `text` cut to its first 256 characters, for a log line about something the peer chose.
fn shorten(text: &str) -> &str {
    text.char_indices()
        .nth(256)
        .map_or(text, |(at, _)| &text[..at])
}

/// Formats a config with its secrets masked, only when the log line is written.
struct Masked<'a>(&'a SecretMasker, &'a [u8]);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.mask(self.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(item: &InboxItem) -> &str {
        &item.0
    }

    #[tokio::test]
    async fn the_inbox_is_bounded_and_keeps_arrival_order() {
        let (inbox, mut rx) = Inbox::new(2);
        let mut parked = Vec::new();
        for i in 0..6 {
            match inbox.deliver(&format!("E{i}"), Bytes::new()) {
                Reply::Later(future) => parked.push(future),
                _ => assert!(i < 2, "E{i} was queued although the queue was full"),
            }
        }
        assert_eq!(parked.len(), 4, "parked once the queue is full");
        // Room again, but E2..E5 are parked: E6 must wait its turn behind them.
        assert_eq!(name(&rx.try_recv().unwrap()), "E0");
        assert_eq!(name(&rx.try_recv().unwrap()), "E1");
        let Reply::Later(e6) = inbox.deliver("E6", Bytes::new()) else {
            panic!("E6 overtook the parked events");
        };
        parked.push(e6);
        // The connection runs parked replies concurrently in no set order: start the last first.
        let tasks: Vec<_> = parked.into_iter().rev().map(tokio::spawn).collect();
        let mut names = Vec::new();
        for _ in 2..7 {
            names.push(name(&rx.recv().await.unwrap()).to_owned());
        }
        assert_eq!(names, ["E2", "E3", "E4", "E5", "E6"]);
        for task in tasks {
            task.await.unwrap();
        }
        // Nothing parked any more: straight into the queue.
        assert!(matches!(inbox.deliver("E7", Bytes::new()), Reply::Ack(_)));
        assert_eq!(name(&rx.recv().await.unwrap()), "E7");
        // Once the driver is gone, events are dropped without parking.
        drop(rx);
        for _ in 0..3 {
            assert!(matches!(inbox.deliver("late", Bytes::new()), Reply::Ack(_)));
        }
    }

    #[tokio::test]
    async fn a_burst_of_events_lets_other_inputs_in_after_the_budget() {
        let (tx, mut rx) = mpsc::channel(1000);
        for i in 0..200 {
            tx.try_send((Box::from(format!("E{i}")), Bytes::new()))
                .unwrap();
        }
        let mut budget = EVENT_BUDGET;
        let mut taken = Vec::new();
        // Like the driver: events first, another input that is always ready after them.
        for _ in 0..3 {
            loop {
                tokio::select! {
                    biased;
                    Some(item) = next_event(&mut rx, &mut budget) => {
                        budget = budget.saturating_sub(1);
                        taken.push(item);
                    }
                    () = std::future::ready(()) => break,
                }
            }
        }
        assert_eq!(taken.len(), 3 * EVENT_BUDGET as usize);
        assert!(
            taken
                .iter()
                .enumerate()
                .all(|(i, item)| name(item) == format!("E{i}")),
            "in order"
        );
    }
}
