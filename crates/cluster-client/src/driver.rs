//! The run loop and the session driver: one task drives the sans-IO [`Session`] over a
//! [`Conn`].
//!
//! The run loop picks the next host ([`Reconnect`]: round-robin from a seeded random start),
//! connects, drives one session until it fails or the client is closed, waits the backoff, and
//! starts over. The driver of one session is a single `select!` loop:
//!
//! - inputs: the server's events (forwarded in arrival order by ONE catch-all handler of the
//!   connection into an unbounded channel), the outcomes of acknowledged emits and pings
//!   (futures polled by this task, so nothing outlives it), the end of the connection, the
//!   end of an application of a receiver, and ONE sleep reset to [`Session::poll_timeout`];
//! - after every input, [`Session::poll_transmit`] is sent and [`Session::poll_event`] is
//!   dispatched: configs and routing tables to their [`Applier`]s, host lists to the upgraders
//!   (inline), and the verdicts on the first ones back to the session with
//!   [`Session::handle_applied`].
//!
//! The select is biased so that the server's events are always taken before the outcome of an
//! ack that arrived after them: the connection's reader forwards an event before it resolves a
//! later ack, so the session sees the wire order.

use crate::apply::{Applier, Done, Job, Order, panic_message};
use crate::client::{ClientState, Shared};
use crate::handler::EventHandler;
use crate::lb::splitmix;
use bytes::Bytes;
use cluster_proto::SecretMasker;
use cluster_proto::backoff::Reconnect;
use cluster_proto::payload::{ModuleRequirements, decode_addresses, decode_routing_config};
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
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The close reason sent when the application closes the client.
const REASON_CLOSED: &str = "client closed";
/// The close reason sent when a session failed.
const REASON_FAILED: &str = "session failed";

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
    /// The client was closed.
    closed: bool,
    /// The session reached ready.
    ready: bool,
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
    let mut ids = plan.seed ^ 0x5EED_0F5E_5510_1015;
    let mut appliers = Appliers {
        config: Applier::new(Order::LatestWins, handler.config_timeout),
        routes: Applier::new(Order::Fifo, handler.routes_timeout),
    };
    let mut generation = 0u64;
    while !cancel.is_cancelled() {
        let Some(index) = reconnect.next_host() else {
            break;
        };
        let endpoint = &plan.endpoints[index];
        generation += 1;
        let session_id = format!("{:016x}", splitmix(&mut ids));
        let host: Arc<str> = Arc::from(endpoint.to_string());
        let span = tracing::info_span!("session", session_id = %session_id, host = %host);
        let outcome = async {
            tracing::info!("run config service session");
            shared.set_state(ClientState::Connecting { host: host.clone() });
            let connect = plan.connector.connect(endpoint, &plan.module_name);
            let transport = match appliers.wait(cancel, connect).await {
                None => {
                    return Outcome {
                        closed: true,
                        ready: false,
                    };
                }
                Some(Ok(transport)) => transport,
                Some(Err(err)) => {
                    log_connect_error(&err);
                    return Outcome {
                        closed: false,
                        ready: false,
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
            *guard = None;
            tracing::info!("config service session stopped");
            outcome
        }
        .instrument(span)
        .await;
        if outcome.closed {
            break;
        }
        if outcome.ready {
            reconnect.reset();
        }
        let delay = reconnect.next_delay();
        let until = tokio::time::Instant::now() + delay;
        shared.set_state(ClientState::BackingOff {
            until,
            delay,
            failures: reconnect.failures(),
        });
        tracing::debug!(?delay, "waiting before the next session");
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
    events: mpsc::UnboundedReceiver<(Box<str>, Bytes)>,
    pending: FuturesUnordered<BoxFuture<'static, Settled>>,
    generation: u64,
    host: Arc<str>,
    session_id: String,
    event_seq: u64,
    pong_timeout: Duration,
    closed: bool,
    ready: bool,
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
        let (tx, events) = mpsc::unbounded_channel();
        // ONE catch-all handler: every event goes to the driver, in arrival order.
        let handlers = Handlers::new().on_unknown(move |_conn, name, data| {
            let _ = tx.send((Box::from(name), data));
            Reply::default()
        });
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
            ready: false,
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
        loop {
            self.flush().await;
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
                Some((name, data)) = self.events.recv() => self.on_event(&name, data),
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
        // The session is over: make sure the connection is, and that its tasks have ended.
        let reason = if self.closed {
            REASON_CLOSED
        } else {
            REASON_FAILED
        };
        self.conn.close(CLOSE_NORMAL, reason).await;
        Outcome {
            closed: self.closed,
            ready: self.ready,
        }
    }

    /// Sends what the session wants sent and hands its events to the application, until both
    /// queues are empty (handing out an event can produce more to send).
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.session.poll_transmit() {
                progressed = true;
                self.transmit(transmit).await;
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

    async fn transmit(&mut self, transmit: Transmit) {
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
            Transmit::Close => {
                let reason = if self.closed {
                    REASON_CLOSED
                } else {
                    REASON_FAILED
                };
                self.conn.close(CLOSE_NORMAL, reason).await;
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
                tracing::info!(
                    event_id,
                    initial,
                    config = %Masked(&self.shared.settings.masker, &data),
                    "remote config received; applying"
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
                tracing::info!(event_id, initial, len = data.len(), "routes received");
                let Some(receiver) = self.handler.routes.clone() else {
                    return;
                };
                self.appliers.routes.push(Job {
                    tag: initial.then_some(self.generation),
                    event_id,
                    future: Box::pin(async move {
                        let routes = decode_routing_config(&data)?;
                        receiver.receive_routes(routes).await
                    }),
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
            SessionEvent::ServerError { event, text } => {
                tracing::error!(
                    event_id,
                    event,
                    text = %String::from_utf8_lossy(&text),
                    "error event from config service"
                );
            }
            SessionEvent::Unknown { name } => {
                tracing::warn!(event_id, event = %name, "unexpected event from config service");
            }
            SessionEvent::Ready => {
                self.ready = true;
                tracing::info!("module ready: session active");
                self.shared.set_state(ClientState::Ready {
                    host: self.host.clone(),
                    session_id: self.session_id.clone(),
                });
            }
            SessionEvent::Failed(error) => self.log_failure(&error),
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

/// Formats a config with its secrets masked, only when the log line is written.
struct Masked<'a>(&'a SecretMasker, &'a [u8]);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.mask(self.1))
    }
}
