//! The client side of one connection to the config service, as a sans-IO state machine.
//!
//! A [`Session`] lives for one connection. It never touches a socket or a clock: the runtime
//! feeds it inputs (`handle_*`, each with the current time) and drains its outputs in this
//! order after every input:
//!
//! 1. [`Session::poll_transmit`]: what to send (emits, with or without ack; pings; close);
//! 2. [`Session::poll_event`]: what to hand the application (configs, routes, host lists, ready,
//!    failure);
//! 3. [`Session::poll_timeout`]: when to call [`Session::handle_timeout`] next (keep ONE sleep).
//!
//! ```text
//! Connected ─► SchemaSent ─► RequirementsSent ─► AwaitingEvents ─► ReadySent ─► Ready
//!     (any state) ─► Failed (error event, bad ack, timeout, missed pongs, disconnect)
//!     (any state) ─► Closed (the application closed)
//! ```
//!
//! Ack ids are the connection runtime's business: the session names each acknowledged emit with
//! an [`AckToken`] and takes the ack's text back through [`Session::handle_ack`]. Deadlines
//! and what an outcome means are the session's: an ack not answered by its deadline fails the
//! session, and so does an ack whose text is not `ok` (the Go client ignores the text; we
//! don't: a server that says it failed has not stored what we sent).
//!
//! Every timeout may be as long as the caller likes: a deadline past what [`Instant`] can hold
//! (`Duration::MAX`, say) means no deadline at all. A zero [`SessionTimeouts::ping_interval`]
//! turns pings off.
//!
//! The first events (initial config, initial routes, each required module's addresses) count
//! once the application has applied them ([`Session::handle_applied`]); a rejection fails the
//! handshake, as in Go. Events that arrive before the wait starts still count. Each expected
//! event has its own deadline, all starting when the requirements are acknowledged (the Go
//! client waits for them one after another).
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use cluster_proto::session::{Session, SessionConfig, SessionState, Transmit};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let mut session = Session::new(SessionConfig::new(
//!     Bytes::from_static(br#"{"version":"1.0.0","schema":{},"config":{}}"#),
//!     Bytes::from_static(br#"{"requiredModules":[],"requireRoutes":false}"#),
//!     Bytes::from_static(br#"{"moduleName":"A"}"#),
//! ), now);
//! let Some(Transmit::Emit { event, ack: Some(token), .. }) = session.poll_transmit() else { panic!() };
//! assert_eq!(event, "MODULE:SEND_CONFIG_SCHEMA");
//! session.handle_ack(now, token, b"ok");
//! assert_eq!(session.state(), SessionState::RequirementsSent);
//! ```

use crate::event;
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Timeouts of a session. Every default is the Go client's value. A timeout too long for
/// [`Instant`] to hold (`Duration::MAX`) means no deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// How long to wait for the ack of each emit. Default: 1 s.
    pub ack: Duration,
    /// The handshake's **whole** wait for the initial config: for it to arrive and for the
    /// receiver to apply it (from the handshake's start to the config's ack). The Go client
    /// waits 5 s plus the config handler's timeout; the client crate sets it to its
    /// `config_arrival_wait` (5 s) plus the receiver's apply timeout (5 s). Default: 10 s.
    pub initial_config: Duration,
    /// How long to wait for the initial routes. Default: 1 s.
    pub routes: Duration,
    /// How long to wait for each required module's first address list. Default: 1 s.
    pub hosts: Duration,
    /// The interval between pings once ready. Default: 5 s. Zero turns pings off (rather than
    /// pinging without pause); so does an interval too long for [`Instant`] to hold.
    pub ping_interval: Duration,
    /// How long a pong may take. Default: 3 s. Zero counts every pong as missed.
    pub pong_timeout: Duration,
    /// How many pongs in a row may be missed before the connection is declared dead. The Go
    /// client only logs a missed pong, leaving half-open sessions alive. Default: 2.
    pub max_missed_pongs: u32,
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        Self {
            ack: Duration::from_secs(1),
            initial_config: Duration::from_secs(10),
            routes: Duration::from_secs(1),
            hosts: Duration::from_secs(1),
            ping_interval: Duration::from_secs(5),
            pong_timeout: Duration::from_secs(3),
            max_missed_pongs: 2,
        }
    }
}

/// What a session sends and waits for. Payloads are encoded JSON (see [`crate::payload`]).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The `MODULE:SEND_CONFIG_SCHEMA` payload (`ConfigData`).
    pub config_data: Bytes,
    /// The `MODULE:SEND_REQUIREMENTS` payload (`ModuleRequirements`).
    pub requirements: Bytes,
    /// The `MODULE:READY` payload (`BackendDeclaration`).
    pub declaration: Bytes,
    /// Whether the module has a config receiver: then the initial config is awaited.
    pub wait_config: bool,
    /// Whether the module wants routes: then the initial routes are awaited.
    pub wait_routes: bool,
    /// The modules whose address lists are awaited (one `<m>_MODULE_CONNECTED` each).
    pub required_modules: Vec<String>,
    /// The timeouts.
    pub timeouts: SessionTimeouts,
}

impl SessionConfig {
    /// A config that awaits nothing but the acks; set the `wait_*` fields and
    /// `required_modules` to await the first events.
    #[must_use]
    pub fn new(config_data: Bytes, requirements: Bytes, declaration: Bytes) -> Self {
        Self {
            config_data,
            requirements,
            declaration,
            wait_config: false,
            wait_routes: false,
            required_modules: Vec::new(),
            timeouts: SessionTimeouts::default(),
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Connected; nothing sent yet.
    Connected,
    /// `MODULE:SEND_CONFIG_SCHEMA` sent, awaiting its ack.
    SchemaSent,
    /// `MODULE:SEND_REQUIREMENTS` sent, awaiting its ack.
    RequirementsSent,
    /// Awaiting the first config, routes and host lists.
    AwaitingEvents,
    /// `MODULE:READY` sent, awaiting its ack.
    ReadySent,
    /// The module is ready: the session is active.
    Ready,
    /// The application closed the session.
    Closed,
    /// The session failed; see [`Session::error`].
    Failed,
}

/// Names one acknowledged emit of a session, to match its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckToken(u64);

/// Names one ping of a session, to match its pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PingToken(u64);

/// Something the runtime must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Emit `event` with `data`; when `ack` is set, emit with ack and report the ack's text
    /// with [`Session::handle_ack`] (the deadline is the session's).
    Emit {
        /// The event name.
        event: &'static str,
        /// The payload.
        data: Bytes,
        /// Set when an acknowledgement is wanted.
        ack: Option<AckToken>,
    },
    /// Send a ping and report its pong with [`Session::handle_pong`].
    Ping(PingToken),
    /// Close the connection normally (the session failed or was closed).
    Close,
}

/// Which first event the application has applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Applied {
    /// The initial remote config.
    Config,
    /// The initial routes.
    Routes,
    /// The first address list of this required module.
    Hosts(String),
}

/// Something for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Apply this remote config (raw JSON). When `initial`, report the outcome with
    /// [`Session::handle_applied`]`(Applied::Config, …)`.
    Config {
        /// The raw config JSON, as the server sent it.
        data: Bytes,
        /// Whether this is the initial config the handshake waits for.
        initial: bool,
    },
    /// Apply this routing config (JSON array of declarations). When `initial`, report the
    /// outcome with [`Session::handle_applied`]`(Applied::Routes, …)`.
    Routes {
        /// The routing config JSON.
        data: Bytes,
        /// Whether these are the initial routes the handshake waits for.
        initial: bool,
    },
    /// New addresses of a required module (JSON array of `AddressConfiguration`). When
    /// `initial`, report with [`Session::handle_applied`]`(Applied::Hosts(module), …)`.
    Hosts {
        /// The required module.
        module: String,
        /// The address list JSON.
        data: Bytes,
        /// Whether this is the first list the handshake waits for.
        initial: bool,
    },
    /// The server sent an error event after the session was ready (before, it fails the
    /// session instead).
    ServerError {
        /// `ERROR_CONNECTION` or `ERROR_CONFIG`.
        event: &'static str,
        /// The error text.
        text: Bytes,
    },
    /// An event this session does not expect (logged by the runtime).
    Unknown {
        /// The event name.
        name: String,
    },
    /// The module is ready: `MODULE:READY` was acknowledged.
    Ready,
    /// The session failed; the runtime closes the connection and reconnects.
    Failed(SessionError),
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// An emit was not acknowledged in time.
    #[error("no ack for {event} within {timeout:?}")]
    AckTimeout {
        /// The event.
        event: &'static str,
        /// The ack timeout.
        timeout: Duration,
    },
    /// The server acknowledged an emit with an error text instead of `ok`.
    #[error("{event} refused by the config service: {text}")]
    AckRejected {
        /// The event.
        event: &'static str,
        /// The server's text.
        text: String,
    },
    /// An expected first event did not arrive (and get applied) in time.
    #[error("{event} not received within {timeout:?}")]
    WaitTimeout {
        /// The awaited event.
        event: String,
        /// Its timeout.
        timeout: Duration,
    },
    /// The server sent `ERROR_CONNECTION` or `ERROR_CONFIG` during the handshake.
    #[error("{event} from the config service: {text}")]
    ServerError {
        /// The error event.
        event: &'static str,
        /// Its text.
        text: String,
    },
    /// The application rejected a first event (the initial config, say).
    #[error("{what} rejected by the application: {reason}")]
    Rejected {
        /// What was rejected.
        what: String,
        /// The application's reason.
        reason: String,
    },
    /// Too many pongs in a row were missed: the connection is dead (half-open).
    #[error("{missed} pongs missed in a row: connection considered dead")]
    PongsMissed {
        /// How many pongs were missed.
        missed: u32,
    },
    /// The connection ended.
    #[error("disconnected ({reason})")]
    Disconnected {
        /// Whether the peer closed normally (1000).
        normal: bool,
        /// Why, as the transport told it.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitStatus {
    /// Not arrived yet.
    Pending,
    /// Delivered to the application, awaiting its verdict.
    Delivered,
    /// Arrived and applied.
    Done,
}

#[derive(Debug, Clone)]
struct Wait {
    key: Applied,
    event: String,
    timeout: Duration,
    status: WaitStatus,
    deadline: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct PendingAck {
    token: AckToken,
    event: &'static str,
    /// `None`: the ack timeout is too long to have a deadline.
    deadline: Option<Instant>,
}

/// The client side of one connection: see the [module docs](self).
pub struct Session {
    config: SessionConfig,
    state: SessionState,
    error: Option<SessionError>,
    waits: Vec<Wait>,
    pending_ack: Option<PendingAck>,
    next_token: u64,
    next_ping: Option<Instant>,
    /// The ping awaiting its pong, with its deadline (`None`: no deadline).
    pending_ping: Option<(PingToken, Option<Instant>)>,
    missed_pongs: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session on a fresh connection: queues `MODULE:SEND_CONFIG_SCHEMA`.
    #[must_use]
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let t = config.timeouts;
        let mut waits = Vec::new();
        if config.wait_config {
            waits.push(Wait::new(
                Applied::Config,
                event::CONFIG_SEND_CONFIG_WHEN_CONNECTED.to_owned(),
                t.initial_config,
            ));
        }
        if config.wait_routes {
            waits.push(Wait::new(
                Applied::Routes,
                event::CONFIG_SEND_ROUTES_WHEN_CONNECTED.to_owned(),
                t.routes,
            ));
        }
        for module in &config.required_modules {
            let key = Applied::Hosts(module.clone());
            if waits.iter().all(|w| w.key != key) {
                waits.push(Wait::new(key, event::module_connected(module), t.hosts));
            }
        }
        let mut session = Self {
            config,
            state: SessionState::Connected,
            error: None,
            waits,
            pending_ack: None,
            next_token: 1,
            next_ping: None,
            pending_ping: None,
            missed_pongs: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        let data = session.config.config_data.clone();
        session.emit_with_ack(now, event::MODULE_SEND_CONFIG_SCHEMA, data);
        session.state = SessionState::SchemaSent;
        session
    }

    // ----- getters -----

    /// Where the session stands.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Why the session failed, once it has.
    #[must_use]
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// Whether the session is active (ready): what a health check reports.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.state == SessionState::Ready
    }

    /// Whether the session is over (failed or closed): it takes no more inputs.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(self.state, SessionState::Failed | SessionState::Closed)
    }

    // ----- inputs -----

    /// The outcome of an acknowledged emit: the ack's data. `ok` moves the handshake on;
    /// anything else fails the session. Outcomes of unknown or stale tokens are ignored.
    pub fn handle_ack(&mut self, now: Instant, token: AckToken, text: &[u8]) {
        let Some(pending) = self.pending_ack else {
            return;
        };
        if pending.token != token || self.is_finished() {
            return;
        }
        self.pending_ack = None;
        if text != b"ok" {
            self.fail(SessionError::AckRejected {
                event: pending.event,
                text: String::from_utf8_lossy(text).into_owned(),
            });
            return;
        }
        match self.state {
            SessionState::SchemaSent => {
                let data = self.config.requirements.clone();
                self.emit_with_ack(now, event::MODULE_SEND_REQUIREMENTS, data);
                self.state = SessionState::RequirementsSent;
            }
            SessionState::RequirementsSent => {
                self.state = SessionState::AwaitingEvents;
                for wait in &mut self.waits {
                    if wait.status != WaitStatus::Done {
                        wait.deadline = now.checked_add(wait.timeout);
                    }
                }
                self.maybe_declare_ready(now);
            }
            SessionState::ReadySent => {
                self.state = SessionState::Ready;
                self.next_ping = self.ping_after(now);
                self.events.push_back(SessionEvent::Ready);
            }
            _ => {}
        }
    }

    /// An event from the server (not an ack), by name, with its data.
    pub fn handle_event(&mut self, now: Instant, name: &str, data: Bytes) {
        if self.is_finished() {
            return;
        }
        match name {
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED | event::CONFIG_SEND_CONFIG_CHANGED
                if self.config.wait_config =>
            {
                let initial = name == event::CONFIG_SEND_CONFIG_WHEN_CONNECTED
                    && self.deliver_first(&Applied::Config);
                self.events
                    .push_back(SessionEvent::Config { data, initial });
            }
            event::CONFIG_SEND_ROUTES_WHEN_CONNECTED | event::CONFIG_SEND_ROUTES_CHANGED
                if self.config.wait_routes =>
            {
                let initial = name == event::CONFIG_SEND_ROUTES_WHEN_CONNECTED
                    && self.deliver_first(&Applied::Routes);
                self.events
                    .push_back(SessionEvent::Routes { data, initial });
            }
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED
            | event::CONFIG_SEND_CONFIG_CHANGED
            | event::CONFIG_SEND_ROUTES_WHEN_CONNECTED
            | event::CONFIG_SEND_ROUTES_CHANGED => {
                // Known events the module did not ask for (no receiver): nothing to do.
            }
            event::ERROR_CONNECTION | event::ERROR_CONFIG => {
                let event = if name == event::ERROR_CONFIG {
                    event::ERROR_CONFIG
                } else {
                    event::ERROR_CONNECTION
                };
                if self.state == SessionState::Ready {
                    self.events
                        .push_back(SessionEvent::ServerError { event, text: data });
                } else {
                    self.fail(SessionError::ServerError {
                        event,
                        text: String::from_utf8_lossy(&data).into_owned(),
                    });
                }
            }
            _ => {
                let module = event::connected_module(name)
                    .filter(|m| self.config.required_modules.iter().any(|r| r == m));
                match module {
                    Some(module) => {
                        let key = Applied::Hosts(module.to_owned());
                        let initial = self.deliver_first(&key);
                        self.events.push_back(SessionEvent::Hosts {
                            module: module.to_owned(),
                            data,
                            initial,
                        });
                    }
                    None => self.events.push_back(SessionEvent::Unknown {
                        name: name.to_owned(),
                    }),
                }
            }
        }
        let _ = now;
    }

    /// The application's verdict on a first event it was handed (`initial: true`): `Ok` counts
    /// the event as arrived; `Err` fails the handshake (as the Go client does when the
    /// application rejects its initial config). Verdicts after the handshake are ignored.
    pub fn handle_applied(&mut self, now: Instant, what: Applied, result: Result<(), String>) {
        if self.is_finished() || self.state == SessionState::Ready {
            return;
        }
        let Some(wait) = self.waits.iter_mut().find(|w| w.key == what) else {
            return;
        };
        if wait.status != WaitStatus::Delivered {
            return;
        }
        match result {
            Ok(()) => {
                wait.status = WaitStatus::Done;
                wait.deadline = None;
                self.maybe_declare_ready(now);
            }
            Err(reason) => {
                let what = wait.event.clone();
                self.fail(SessionError::Rejected { what, reason });
            }
        }
    }

    /// The pong of a ping arrived.
    pub fn handle_pong(&mut self, now: Instant, token: PingToken) {
        if let Some((pending, _)) = self.pending_ping {
            if pending == token {
                self.pending_ping = None;
                self.missed_pongs = 0;
            }
        }
        let _ = now;
    }

    /// Time has passed: fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        if let Some(pending) = self.pending_ack {
            if pending.deadline.is_some_and(|d| d <= now) {
                self.fail(SessionError::AckTimeout {
                    event: pending.event,
                    timeout: self.config.timeouts.ack,
                });
                return;
            }
        }
        if let Some(wait) = self
            .waits
            .iter()
            .find(|w| w.deadline.is_some_and(|d| d <= now))
        {
            let error = SessionError::WaitTimeout {
                event: wait.event.clone(),
                timeout: wait.timeout,
            };
            self.fail(error);
            return;
        }
        if let Some((_, deadline)) = self.pending_ping {
            if deadline.is_some_and(|d| d <= now) {
                self.pending_ping = None;
                self.missed_pongs += 1;
                if self.missed_pongs >= self.config.timeouts.max_missed_pongs.max(1) {
                    self.fail(SessionError::PongsMissed {
                        missed: self.missed_pongs,
                    });
                    return;
                }
            }
        }
        if let Some(at) = self.next_ping {
            if at <= now && self.pending_ping.is_none() {
                let token = PingToken(self.take_token());
                self.transmits.push_back(Transmit::Ping(token));
                let deadline = now.checked_add(self.config.timeouts.pong_timeout);
                self.pending_ping = Some((token, deadline));
                self.next_ping = self.ping_after(now);
            } else if at <= now {
                // A pong is still outstanding: ping again once it is settled.
                self.next_ping = self.ping_after(now);
            }
        }
    }

    /// The connection ended. `normal` says whether the peer closed with 1000.
    pub fn handle_disconnect(&mut self, now: Instant, normal: bool, reason: &str) {
        let _ = now;
        if self.is_finished() {
            return;
        }
        self.pending_ack = None;
        self.state = SessionState::Failed;
        let error = SessionError::Disconnected {
            normal,
            reason: reason.to_owned(),
        };
        self.error = Some(error.clone());
        self.events.push_back(SessionEvent::Failed(error));
    }

    // ----- commands -----

    /// Closes the session: queues [`Transmit::Close`]. Idempotent.
    pub fn close(&mut self, now: Instant) {
        let _ = now;
        if self.is_finished() {
            return;
        }
        self.state = SessionState::Closed;
        self.clear_timers();
        self.transmits.push_back(Transmit::Close);
    }

    // ----- outputs -----

    /// The next thing to send. Call until `None` after every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing for the application. Call until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next; `None` when no deadline is set.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        let ack = self.pending_ack.and_then(|p| p.deadline);
        let waits = self.waits.iter().filter_map(|w| w.deadline).min();
        let pong = self.pending_ping.and_then(|(_, d)| d);
        [ack, waits, pong, self.next_ping]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals -----

    fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    fn emit_with_ack(&mut self, now: Instant, event: &'static str, data: Bytes) {
        let token = AckToken(self.take_token());
        self.pending_ack = Some(PendingAck {
            token,
            event,
            deadline: now.checked_add(self.config.timeouts.ack),
        });
        self.transmits.push_back(Transmit::Emit {
            event,
            data,
            ack: Some(token),
        });
    }

    /// When to ping next after `now`: `None` (no pings) for a zero interval, which would
    /// otherwise ping without pause, or one too long to have a deadline.
    fn ping_after(&self, now: Instant) -> Option<Instant> {
        let interval = self.config.timeouts.ping_interval;
        if interval.is_zero() {
            return None;
        }
        now.checked_add(interval)
    }

    /// Marks a first event as delivered; returns whether it is the first (awaiting a verdict).
    fn deliver_first(&mut self, key: &Applied) -> bool {
        if self.state == SessionState::Ready {
            return false;
        }
        match self.waits.iter_mut().find(|w| &w.key == key) {
            Some(wait) if wait.status == WaitStatus::Pending => {
                wait.status = WaitStatus::Delivered;
                true
            }
            _ => false,
        }
    }

    fn maybe_declare_ready(&mut self, now: Instant) {
        if self.state != SessionState::AwaitingEvents {
            return;
        }
        if self.waits.iter().all(|w| w.status == WaitStatus::Done) {
            let data = self.config.declaration.clone();
            self.emit_with_ack(now, event::MODULE_READY, data);
            self.state = SessionState::ReadySent;
        }
    }

    fn clear_timers(&mut self) {
        self.pending_ack = None;
        self.pending_ping = None;
        self.next_ping = None;
        for wait in &mut self.waits {
            wait.deadline = None;
        }
    }

    fn fail(&mut self, error: SessionError) {
        self.state = SessionState::Failed;
        self.clear_timers();
        self.error = Some(error.clone());
        self.transmits.push_back(Transmit::Close);
        self.events.push_back(SessionEvent::Failed(error));
    }
}

impl Wait {
    fn new(key: Applied, event: String, timeout: Duration) -> Self {
        Self {
            key,
            event,
            timeout,
            status: WaitStatus::Pending,
            deadline: None,
        }
    }
}
