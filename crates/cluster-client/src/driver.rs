//! The run loop and the session driver: one task drives the sans-IO [`Session`] over a
//! [`Transport`].
//!
//! The run loop picks the next host ([`Reconnect`]: round-robin from a seeded random start),
//! connects, drives one session until it fails or the client is closed, waits the backoff, and
//! starts over. The driver of one session is ONE `select!` over (in the order it prefers them
//! when several are ready: what finished locally before new input, so that a peer that floods
//! starves nothing and the order of inputs never depends on chance):
//!
//! - the client's close;
//! - the end of the write in flight (a future owning the writing half, given back);
//! - the end of an application of a receiver;
//! - ONE sleep, reset to [`Session::poll_timeout`] (acks, first events, pings, pongs);
//! - the transport's next message (one read in flight, a future that owns the reading half and
//!   gives it back), handed to the session in arrival order: frames to
//!   [`Session::handle_frame`], pongs to [`Session::handle_pong`], the end to
//!   [`Session::handle_disconnect`].
//!
//! After every input, [`Session::poll_transmit`] goes to the write queue and
//! [`Session::poll_event`] is dispatched: configs and routing tables to their [`Applier`]s,
//! host lists to the upgraders (inline), and the verdicts on the first ones back to the session
//! with [`Session::handle_applied`]. Nothing in there awaits: a failed session leaves the
//! [`ClientState::Ready`] state at the very input that failed it, and its connection is closed
//! by the run loop during the backoff.
//!
//! Since the session sees every frame in the order it arrived, nothing can overtake anything:
//! an error event that arrives before the ack of `MODULE:READY` fails the handshake.
//!
//! Bounds: the session's own frames are few (three emits, pings); the acks it owes a server
//! that emits with ack are the only frames a peer can multiply, so reading pauses while more
//! than [`WRITE_HIGH_WATER`] bytes wait to be written (a server that does not read its acks
//! slows itself down). Inbound messages are bounded by the transport's size limit.

use crate::apply::{Applier, Done, Job, Order, panic_message};
use crate::handler::EventHandler;
use crate::state::{ClientState, Shared};
use bytes::Bytes;
use cluster_metrics::cluster::{ClusterMetrics, FailureCause};
use cluster_proto::SecretMasker;
use cluster_proto::backoff::Reconnect;
use cluster_proto::payload::{ModuleRequirements, decode_addresses, decode_routing_config};
use cluster_proto::rng::SplitMix64;
use cluster_proto::session::{
    Applied, Session, SessionConfig, SessionError, SessionEvent, SessionTimeouts, Transmit,
};
use cluster_proto::wire::{self, CLOSE_TIMEOUT};
use cluster_transport::log_limit::LogLimiter;
use cluster_transport::{
    CLOSE_NORMAL, Connector, Endpoint, Incoming, MessageSink, MessageStream, Transport,
    TransportError,
};
use futures_util::future::BoxFuture;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The close reason sent when the application closes the client.
const REASON_CLOSED: &str = "client closed";
/// The close reason sent when a session failed.
const REASON_FAILED: &str = "session failed";
/// Reading pauses while more than this many bytes wait to be written (see the module docs):
/// the rule and the default of both ends ([`wire::over_high_water`]).
pub(crate) const WRITE_HIGH_WATER: usize = wire::DEFAULT_WRITE_HIGH_WATER;

/// What one run needs, prepared once.
pub(crate) struct Plan {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) session: SessionConfig,
    pub(crate) module_name: String,
    pub(crate) seed: u64,
}

impl Plan {
    /// The session config of `handler`: what to send, what to wait for, how long. One source:
    /// the handler's receivers and required modules.
    pub(crate) fn session_config(
        shared: &Shared,
        handler: &EventHandler,
        timeouts: SessionTimeouts,
    ) -> SessionConfig {
        let settings = &shared.settings;
        let requirements = ModuleRequirements {
            required_modules: handler.required_modules().map(str::to_owned).collect(),
            require_routes: handler.has_routes_receiver(),
        };
        let mut session =
            SessionConfig::new(&settings.module_info, &settings.config_data, requirements);
        session.wait_config = handler.has_config_receiver();
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
    async fn wait<F: Future>(&mut self, shared: &Shared, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                () = shared.cancel.cancelled() => return None,
                out = &mut fut => return Some(out),
                done = self.config.done() => {
                    count_config(&shared.metrics, &done);
                    Self::log("remote config", &done);
                }
                done = self.routes.done() => Self::log("routes", &done),
            }
        }
    }
}

/// Counts the outcome of a config application (applied: the config version moves on).
fn count_config(metrics: &ClusterMetrics, done: &Done) {
    match done.result {
        Ok(()) => {
            metrics.config_applied();
        }
        Err(_) => metrics.config_refused(),
    }
}

/// How a session ended.
struct Outcome {
    /// The client was closed (the connection, if any, is closed too).
    closed: bool,
    /// How long the session stayed ready (`None`: it never was).
    ready_for: Option<Duration>,
    /// The close of a failed session's connection, still to run (it may take up to
    /// [`CLOSE_TIMEOUT`] with a peer that does not answer); `None` when the connect failed or
    /// the client was closed.
    closing: Option<BoxFuture<'static, ()>>,
    /// Why it ended, for [`ClientState::BackingOff`].
    cause: Arc<str>,
}

impl Outcome {
    fn closed() -> Self {
        Self {
            closed: true,
            ready_for: None,
            closing: None,
            cause: Arc::from("closed"),
        }
    }
}

/// Runs sessions until the client is closed. Dropping this future drops the connection
/// without a close handshake (the peer sees it end); [`Client::close`](crate::Client::close)
/// closes it normally.
pub(crate) async fn run(shared: &Shared, handler: &EventHandler, plan: Plan) {
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
            let dialed_at = tokio::time::Instant::now();
            shared.metrics.session_started();
            shared.set_state(ClientState::Connecting { host: host.clone() });
            let connect = plan.connector.connect(endpoint, &plan.module_name);
            let transport = match appliers.wait(shared, connect).await {
                None => return Outcome::closed(),
                Some(Ok(transport)) => transport,
                Some(Err(err)) => {
                    log_connect_error(&err);
                    shared.metrics.session_failed(FailureCause::Connect);
                    return Outcome {
                        closed: false,
                        ready_for: None,
                        closing: None,
                        cause: Arc::from(format!("connect: {err}")),
                    };
                }
            };
            shared.set_state(ClientState::Handshaking {
                host: host.clone(),
                session_id: session_id.clone(),
            });
            let outcome = Driver::start(
                shared,
                handler,
                &mut appliers,
                transport,
                &plan.session,
                generation,
                host.clone(),
                session_id.clone(),
                dialed_at,
            )
            .drive()
            .await;
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
        if let Some(closing) = outcome.closing {
            // Part of the backoff. If the client is closed meanwhile, the close is finished
            // all the same before returning, so that nothing of it outlives `Client::close`.
            let mut closing = closing.instrument(span);
            if appliers.wait(shared, &mut closing).await.is_none() {
                closing.await;
                break;
            }
        }
        if appliers
            .wait(shared, tokio::time::sleep_until(until))
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

/// Drives one session over one connection.
struct Driver<'a> {
    shared: &'a Shared,
    handler: &'a EventHandler,
    appliers: &'a mut Appliers,
    link: Link,
    session: Session,
    generation: u64,
    host: Arc<str>,
    session_id: String,
    event_seq: u64,
    /// Bounds the warnings the peer can cause (malformed frames, unknown and error events).
    warnings: LogLimiter,
    closed: bool,
    /// When its dial started (for `cluster_time_to_ready_ms`).
    dialed_at: tokio::time::Instant,
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
        dialed_at: tokio::time::Instant,
    ) -> Self {
        // What an older session left queued is superseded by this session's first config and
        // routing table; waiting behind it could outlast this session's handshake.
        let dropped = appliers.config.drop_queued() + appliers.routes.drop_queued();
        if dropped > 0 {
            tracing::debug!(dropped, "queued applications of an earlier session dropped");
        }
        Self {
            shared,
            handler,
            appliers,
            link: Link::new(transport),
            session: Session::new(config.clone(), now()),
            generation,
            host,
            session_id,
            event_seq: 0,
            warnings: LogLimiter::new(shared.settings.log_limit),
            closed: false,
            dialed_at,
            ready_at: None,
            failure: None,
        }
    }

    async fn drive(mut self) -> Outcome {
        let cancel = self.shared.cancel.clone();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
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
            let reading = !wire::over_high_water(self.link.queued, WRITE_HIGH_WATER);
            // Biased: what finished here (a write, an application, a deadline) is taken
            // before the next message, so a peer that floods cannot starve them, and the
            // order of inputs does not depend on chance.
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !self.closed => {
                    self.closed = true;
                    self.session.close(now());
                }
                (sink, result) = next(&mut self.link.write) => self.on_written(sink, result),
                done = self.appliers.config.done() => self.on_applied(Applied::Config, "remote config", &done),
                done = self.appliers.routes.done() => self.on_applied(Applied::Routes, "routes", &done),
                () = &mut sleep, if deadline.is_some() => self.session.handle_timeout(now()),
                (stream, incoming) = next(&mut self.link.read), if reading => {
                    self.on_incoming(stream, incoming);
                }
            }
        }
        self.warnings.flush(self.generation, &self.link.peer);
        let reason = if self.closed {
            REASON_CLOSED
        } else {
            REASON_FAILED
        };
        let closing = Box::pin(self.link.shutdown(reason));
        if self.closed {
            // Closed by the application: the connection's end is awaited here, before `run`
            // returns. A failed session's is left to the run loop, once the state says so.
            closing.await;
            return Outcome::closed();
        }
        Outcome {
            closed: false,
            ready_for: self.ready_at.map(|at| at.elapsed()),
            closing: Some(closing),
            cause: self
                .failure
                .take()
                .unwrap_or_else(|| Arc::from("session ended")),
        }
    }

    /// Queues what the session wants sent and hands its events to the application, until
    /// both queues are empty (handing out an event can produce more to send), then starts a
    /// write. Never waits.
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
                break;
            }
        }
        self.link.start_write();
    }

    fn transmit(&mut self, transmit: Transmit) {
        if let Transmit::Emit { event, data, .. } = &transmit {
            tracing::debug!(
                event,
                data = %Masked(&self.shared.settings.masker, data),
                "send event"
            );
        }
        match transmit {
            Transmit::Ping(payload) => self.link.push(Out::Ping(payload)),
            // Not queued: the session is over, and the close is written by `Link::shutdown`
            // once the state has left `Ready` (see `run` and `drive`).
            Transmit::Close => {}
            frame => {
                if let Some(message) = frame.encode() {
                    self.link.push(Out::Frame(message));
                }
            }
        }
    }

    /// A read finished: hand what came to the session, and read on unless the stream ended.
    fn on_incoming(
        &mut self,
        stream: Box<dyn MessageStream>,
        incoming: Result<Incoming, TransportError>,
    ) {
        match incoming {
            Ok(Incoming::Text(message)) => {
                self.session.handle_frame(now(), message);
                self.link.read = Some(read(stream));
            }
            Ok(Incoming::Pong(payload)) => {
                tracing::trace!("pong");
                self.session.handle_pong(now(), &payload);
                self.link.read = Some(read(stream));
            }
            Ok(Incoming::Closed(close)) => {
                self.session
                    .handle_disconnect(now(), close.is_normal(), &close.to_string());
            }
            Ok(other) => {
                tracing::debug!(?other, "transport message ignored");
                self.link.read = Some(read(stream));
            }
            Err(err) => {
                self.session
                    .handle_disconnect(now(), false, &err.to_string());
            }
        }
    }

    /// A write finished: on error the transport is broken and the session ends.
    fn on_written(&mut self, sink: Box<dyn MessageSink>, result: Result<usize, TransportError>) {
        match result {
            Ok(written) => {
                self.link.queued -= written;
                self.link.sink = Some(sink);
            }
            Err(err) => {
                tracing::debug!(error = %err, "write to config service failed");
                self.session
                    .handle_disconnect(now(), false, &format!("write failed: {err}"));
            }
        }
    }

    /// Whether a warning the peer caused may be logged (see [`LogLimiter`]).
    fn peer_may_log(&self) -> bool {
        self.warnings.admit(self.generation, &self.link.peer)
    }

    fn dispatch(&mut self, event: SessionEvent) {
        if matches!(
            event,
            SessionEvent::Config { .. }
                | SessionEvent::Routes { .. }
                | SessionEvent::Hosts { .. }
                | SessionEvent::ServerError { .. }
                | SessionEvent::Unknown { .. }
        ) {
            self.event_seq += 1;
        }
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
                if self.peer_may_log() {
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
                if self.peer_may_log() {
                    tracing::warn!(
                        event_id,
                        event = %shorten(&name),
                        "unexpected event from config service"
                    );
                }
            }
            SessionEvent::Acked { event } => tracing::debug!(event, "event acknowledged"),
            SessionEvent::Malformed(error) => {
                if self.peer_may_log() {
                    tracing::warn!(%error, "malformed frame from config service; skipped");
                }
            }
            SessionEvent::Ready => {
                let now = tokio::time::Instant::now();
                self.ready_at = Some(now);
                self.shared.metrics.session_ready(now - self.dialed_at);
                tracing::info!("module ready: session active");
                self.shared.set_state(ClientState::Ready {
                    host: self.host.clone(),
                    session_id: self.session_id.clone(),
                });
            }
            SessionEvent::Failed(error) => {
                self.log_failure(&error);
                // Every kind has its label; one added later without it is not counted.
                if let Some(cause) = FailureCause::from_label(error.kind()) {
                    self.shared.metrics.session_failed(cause);
                }
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
        if matches!(what, Applied::Config) {
            count_config(&self.shared.metrics, done);
        }
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

/// Something to write.
enum Out {
    /// One ETP frame.
    Frame(Bytes),
    /// A ping with this payload.
    Ping(Bytes),
    /// The close handshake, with this reason; nothing follows.
    Close(&'static str),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Self::Frame(b) | Self::Ping(b) => b.len(),
            Self::Close(_) => 0,
        }
    }
}

type ReadFuture = BoxFuture<'static, (Box<dyn MessageStream>, Result<Incoming, TransportError>)>;
type WriteFuture = BoxFuture<'static, (Box<dyn MessageSink>, Result<usize, TransportError>)>;

/// The transport of one session, driven from the driver's one `select!`: at most one read and
/// one write in flight, each a future that owns its half of the transport and gives it back,
/// so that no message is lost when another branch wins (nothing relies on the transport's
/// futures being cancel-safe).
struct Link {
    peer: String,
    /// The read in flight; `None` once the stream ended.
    read: Option<ReadFuture>,
    /// The writing half while no write is in flight.
    sink: Option<Box<dyn MessageSink>>,
    /// The write in flight.
    write: Option<WriteFuture>,
    /// What waits for the next write.
    queue: Vec<Out>,
    /// Bytes queued or in flight.
    queued: usize,
}

impl Link {
    fn new(transport: Transport) -> Self {
        let Transport { sink, stream, peer } = transport;
        Self {
            peer,
            read: Some(read(stream)),
            sink: Some(sink),
            write: None,
            queue: Vec::new(),
            queued: 0,
        }
    }

    fn push(&mut self, out: Out) {
        self.queued += out.len();
        self.queue.push(out);
    }

    /// Starts writing what is queued, unless a write is in flight (it will be started when
    /// that one ends) or the writing half is gone (broken).
    fn start_write(&mut self) {
        if self.write.is_some() || self.queue.is_empty() {
            return;
        }
        if let Some(sink) = self.sink.take() {
            let batch = std::mem::take(&mut self.queue);
            self.write = Some(Box::pin(write(sink, batch)));
        }
    }

    /// Closes the connection normally with `reason`: finishes the writes, sends the close,
    /// and reads until the peer answers it (or the stream ends), all within
    /// [`CLOSE_TIMEOUT`]; when the close could not be written (the writing half broke), it
    /// does not wait for an answer. Dropping the future drops the connection.
    async fn shutdown(mut self, reason: &'static str) {
        let work = async {
            if let Some(write) = self.write.take() {
                let (sink, result) = write.await;
                if result.is_ok() {
                    self.sink = Some(sink);
                }
            }
            let Some(sink) = self.sink.take() else {
                // The writing half broke: no close went out, so no answer will come.
                return;
            };
            let mut batch = std::mem::take(&mut self.queue);
            batch.push(Out::Close(reason));
            if write(sink, batch).await.1.is_err() {
                return;
            }
            if let Some(read) = self.read.take() {
                let (mut stream, mut incoming) = read.await;
                while let Ok(Incoming::Text(_) | Incoming::Pong(_)) = incoming {
                    incoming = stream.recv().await;
                }
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, work).await.is_err() {
            tracing::debug!("the config service did not answer the close in time");
        }
    }
}

/// The next message of `stream`, with the stream given back.
fn read(mut stream: Box<dyn MessageStream>) -> ReadFuture {
    Box::pin(async move {
        let incoming = stream.recv().await;
        (stream, incoming)
    })
}

/// Writes `batch` (one flush at the end; a close flushes itself), with the sink given back and
/// the bytes written.
async fn write(
    mut sink: Box<dyn MessageSink>,
    batch: Vec<Out>,
) -> (Box<dyn MessageSink>, Result<usize, TransportError>) {
    let mut written = 0;
    let mut closed = false;
    for out in batch {
        written += out.len();
        let result = match out {
            Out::Frame(message) => sink.feed(message).await,
            Out::Ping(payload) => sink.ping(payload).await,
            Out::Close(reason) => {
                closed = true;
                sink.close(CLOSE_NORMAL, reason).await
            }
        };
        if let Err(err) = result {
            return (sink, Err(err));
        }
        if closed {
            break;
        }
    }
    let result = if closed { Ok(()) } else { sink.flush().await };
    (sink, result.map(|()| written))
}

/// The output of the future in `slot`, which is then emptied; pending forever while `slot` is
/// empty. Cancel-safe: a future that has not finished stays in its slot.
async fn next<T>(slot: &mut Option<BoxFuture<'static, T>>) -> T {
    let out = match slot.as_mut() {
        Some(future) => future.await,
        None => std::future::pending().await,
    };
    *slot = None;
    out
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
