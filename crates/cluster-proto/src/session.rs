//! The client side of one connection to the config service, as a sans-IO state machine that
//! owns the wire protocol.
//!
//! A [`Session`] lives for one connection. It never touches a socket or a clock: the runtime
//! feeds it what the transport received, in arrival order, each with the current time, and
//! drains its outputs after every input:
//!
//! - inputs: [`Session::handle_frame`] (one received text message: an ETP frame),
//!   [`Session::handle_pong`], [`Session::handle_timeout`], [`Session::handle_applied`] (the
//!   application's verdict on a first event), [`Session::handle_disconnect`],
//!   [`Session::close`];
//! - outputs, in this order: [`Session::poll_transmit`] (frames, pings, close),
//!   [`Session::poll_event`] (configs, routes, host lists, ready, failure), and
//!   [`Session::poll_timeout`] (the one next deadline: keep ONE sleep).
//!
//! ```text
//! Connected ─► SchemaSent ─► RequirementsSent ─► AwaitingEvents ─► ReadySent ─► Ready
//!     (any state) ─► Failed (error event, bad ack, timeout, missed pongs, disconnect)
//!     (any state) ─► Closed (the application closed)
//! ```
//!
//! # What the session owns
//! Everything the protocol decides: the ack ids of its emits (a sequence from 1, per
//! connection), the one ack it waits for and its deadline, the acks it owes the server (an
//! event with an ack id above 0 is acknowledged with empty data, as the Go client does), the
//! pings and their pongs, and every deadline of the handshake, in one table. Because frames
//! come in through one door in the order they arrived, an error event that arrives before
//! the ack of `MODULE:READY` always fails the handshake, and a config that arrives before
//! the schema's ack is always seen first.
//!
//! An ack not answered by its deadline fails the session, and so does an ack whose text is
//! not `ok` (the Go client ignores the text; we don't: a server that says it failed has not
//! stored what we sent). A malformed frame is reported ([`SessionEvent::Malformed`]) and
//! skipped; the session goes on, as with the Go peer. An ack for an id the session is not
//! waiting for is ignored.
//!
//! # Why no connection core shared with the server runtime
//! The server side's runtime (`cluster-etp`'s `Conn`) has the same wire rules but a
//! different shape: any number of tasks emit with ack at once, each waiting on its own
//! channel, and handlers run concurrently. The client session has at most one ack in flight
//! and one ping. What both need in common is shared, not a core: the frame grammar and the
//! ack naming ([`crate::frame`]), the name rules ([`crate::event`]), and the wire rules
//! ([`crate::wire`]: ack ids and their matching, the ping payload, the close timeout, and the
//! write high-water mark the client's driver keeps). A generic core would be a table with one
//! entry here and a translation layer there: more code, not less.
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
//! use cluster_proto::frame;
//! use cluster_proto::payload::{ConfigData, ModuleInfo, ModuleRequirements};
//! use cluster_proto::session::{Session, SessionConfig, SessionState, Transmit};
//! use std::time::Instant;
//!
//! let module = ModuleInfo { module_name: "A".into(), ..ModuleInfo::default() };
//! let config_data = ConfigData::from_json("1.0.0", "{}", "{}").unwrap();
//! let config = SessionConfig::new(&module, &config_data, ModuleRequirements::default());
//! let now = Instant::now();
//! let mut session = Session::new(config, now);
//!
//! let Some(Transmit::Emit { event, ack_id, .. }) = session.poll_transmit() else { panic!() };
//! assert_eq!(event, "MODULE:SEND_CONFIG_SCHEMA");
//! // The server's ack, as it arrives on the wire.
//! session.handle_frame(now, frame::encode_ack_to_bytes(event, ack_id, b"ok"));
//! assert_eq!(session.state(), SessionState::RequirementsSent);
//! ```

use crate::event;
use crate::frame::{self, DecodeError, Frame};
use crate::payload::{ConfigData, ModuleInfo, ModuleRequirements};
use crate::wire;
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

/// What a session sends and waits for, from one source: the module, its config schema and
/// default config, and its typed requirements. What to await is derived, never given apart:
/// the routing table when the requirements ask for routes, one address list per required
/// module (duplicates once), and the initial config when [`SessionConfig::wait_config`] is set
/// (the module has a config receiver: nothing on the wire says so).
///
/// The payloads are encoded once, here; cloning a config is cheap.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    config_data: Bytes,
    requirements: ModuleRequirements,
    requirements_json: Bytes,
    declaration: Bytes,
    /// Whether the module has a config receiver: then the initial config is awaited.
    /// Default: `false`.
    pub wait_config: bool,
    /// The timeouts. Default: [`SessionTimeouts::default`].
    pub timeouts: SessionTimeouts,
}

impl SessionConfig {
    /// The session of `module` with `config_data` (`MODULE:SEND_CONFIG_SCHEMA`) and
    /// `requirements` (`MODULE:SEND_REQUIREMENTS`); `MODULE:READY` declares the module with
    /// the required modules of `requirements`.
    #[must_use]
    pub fn new(
        module: &ModuleInfo,
        config_data: &ConfigData,
        requirements: ModuleRequirements,
    ) -> Self {
        let declaration = module.backend_declaration(&requirements.required_modules);
        Self {
            config_data: Bytes::from(config_data.to_json()),
            requirements_json: Bytes::from(requirements.to_json()),
            requirements,
            declaration: Bytes::from(declaration.to_json()),
            wait_config: false,
            timeouts: SessionTimeouts::default(),
        }
    }

    /// What the module requires.
    #[must_use]
    pub fn requirements(&self) -> &ModuleRequirements {
        &self.requirements
    }

    /// The encoded `MODULE:READY` payload (`BackendDeclaration`).
    #[must_use]
    pub fn declaration(&self) -> &Bytes {
        &self.declaration
    }

    fn requires(&self, module: &str) -> bool {
        self.requirements
            .required_modules
            .iter()
            .any(|m| m == module)
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

/// Something the runtime must send, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Emit `event` with `data`; an `ack_id` above 0 asks for an acknowledgement (the session
    /// matches it and keeps its deadline). [`Transmit::encode`] gives the text message.
    Emit {
        /// The event name.
        event: &'static str,
        /// The ack id: `0` when no acknowledgement is wanted.
        ack_id: u64,
        /// The payload.
        data: Bytes,
    },
    /// Acknowledge the server's `event` that asked for it, with empty data.
    Ack {
        /// The event acknowledged (the frame's name is `__ack_<event>`).
        event: String,
        /// The server's ack id.
        ack_id: u64,
    },
    /// Send a ping with this payload; pass the pong's payload to [`Session::handle_pong`].
    Ping(Bytes),
    /// Close the connection normally (the session failed or was closed). Nothing follows.
    Close,
}

impl Transmit {
    /// The ETP frame to send as one text message, for [`Transmit::Emit`] and
    /// [`Transmit::Ack`]; `None` for pings and the close.
    #[must_use]
    pub fn encode(&self) -> Option<Bytes> {
        match self {
            Self::Emit {
                event,
                ack_id,
                data,
            } => Some(frame::encode_to_bytes(event, *ack_id, data)),
            Self::Ack { event, ack_id } => Some(frame::encode_ack_to_bytes(event, *ack_id, b"")),
            Self::Ping(_) | Self::Close => None,
        }
    }
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
    /// One of the session's emits was acknowledged with `ok`.
    Acked {
        /// The event acknowledged.
        event: &'static str,
    },
    /// The server sent an error event after the session was ready (before, it fails the
    /// session instead).
    ServerError {
        /// `ERROR_CONNECTION` or `ERROR_CONFIG`.
        event: &'static str,
        /// The error text.
        text: Bytes,
    },
    /// An event this session does not expect (the runtime logs it, bounded).
    Unknown {
        /// The event name.
        name: String,
    },
    /// A received message is not an ETP frame. It was skipped; the session goes on.
    Malformed(DecodeError),
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

impl SessionError {
    /// A stable, short name of the kind of failure, for a metric label or an alert:
    /// `ack_timeout`, `ack_rejected`, `wait_timeout`, `server_error`, `rejected`,
    /// `pongs_missed` or `disconnected` (a normal close included). The set is closed: a new
    /// variant gets a new name here, and the texts of the errors never show in it.
    ///
    /// ```
    /// use cluster_proto::session::SessionError;
    /// let error = SessionError::PongsMissed { missed: 2 };
    /// assert_eq!(error.kind(), "pongs_missed");
    /// ```
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AckTimeout { .. } => "ack_timeout",
            Self::AckRejected { .. } => "ack_rejected",
            Self::WaitTimeout { .. } => "wait_timeout",
            Self::ServerError { .. } => "server_error",
            Self::Rejected { .. } => "rejected",
            Self::PongsMissed { .. } => "pongs_missed",
            Self::Disconnected { .. } => "disconnected",
        }
    }
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

/// The one emit awaiting its ack.
#[derive(Debug, Clone, Copy)]
struct PendingAck {
    id: u64,
    event: &'static str,
    /// `None`: the ack timeout is too long to have a deadline.
    deadline: Option<Instant>,
}

/// The one ping awaiting its pong.
#[derive(Debug, Clone, Copy)]
struct PendingPing {
    id: u64,
    /// `None`: the pong timeout is too long to have a deadline.
    deadline: Option<Instant>,
}

/// The client side of one connection: see the [module docs](self).
pub struct Session {
    config: SessionConfig,
    state: SessionState,
    error: Option<SessionError>,
    waits: Vec<Wait>,
    /// The ack id of the next emit with ack: a sequence from 1 per connection.
    next_ack_id: u64,
    pending_ack: Option<PendingAck>,
    next_ping_id: u64,
    next_ping: Option<Instant>,
    pending_ping: Option<PendingPing>,
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
        if config.requirements.require_routes {
            waits.push(Wait::new(
                Applied::Routes,
                event::CONFIG_SEND_ROUTES_WHEN_CONNECTED.to_owned(),
                t.routes,
            ));
        }
        for module in &config.requirements.required_modules {
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
            next_ack_id: wire::FIRST_ACK_ID,
            pending_ack: None,
            next_ping_id: wire::FIRST_PING_ID,
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

    /// One text message from the server, in arrival order: an ETP frame.
    ///
    /// An acknowledgement is matched to the emit waiting for it by its ack id (`ok` moves the
    /// handshake on; any other text fails the session); an ack for any other id is ignored.
    /// An event that asks for an ack gets one (empty data) and is handled. A message that is
    /// not a frame is reported as [`SessionEvent::Malformed`] and skipped.
    pub fn handle_frame(&mut self, now: Instant, message: Bytes) {
        if self.is_finished() {
            return;
        }
        let frame = match Frame::decode(message) {
            Ok(frame) => frame,
            Err(error) => {
                self.events.push_back(SessionEvent::Malformed(error));
                return;
            }
        };
        if let Some(id) = wire::acked_id(&frame) {
            self.on_ack(now, id, frame.data());
            return;
        }
        if wire::wants_ack(frame.ack_id()) {
            self.transmits.push_back(Transmit::Ack {
                event: frame.name().to_owned(),
                ack_id: frame.ack_id(),
            });
        }
        self.on_event(frame.name(), frame.data().clone());
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

    /// A pong arrived with `payload`. The pong of the ping in flight settles it (and resets
    /// the count of missed pongs); any other pong is ignored.
    pub fn handle_pong(&mut self, now: Instant, payload: &[u8]) {
        let _ = now;
        let Some(id) = wire::pong_id(payload) else {
            return;
        };
        if self.pending_ping.is_some_and(|p| p.id == id) {
            self.pending_ping = None;
            self.missed_pongs = 0;
        }
    }

    /// Time has passed: fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        if let Some(pending) = self.pending_ack
            && pending.deadline.is_some_and(|d| d <= now)
        {
            self.fail(SessionError::AckTimeout {
                event: pending.event,
                timeout: self.config.timeouts.ack,
            });
            return;
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
        if let Some(ping) = self.pending_ping
            && ping.deadline.is_some_and(|d| d <= now)
        {
            self.pending_ping = None;
            self.missed_pongs += 1;
            if self.missed_pongs >= self.config.timeouts.max_missed_pongs.max(1) {
                self.fail(SessionError::PongsMissed {
                    missed: self.missed_pongs,
                });
                return;
            }
        }
        if let Some(at) = self.next_ping {
            if at <= now && self.pending_ping.is_none() {
                let id = self.next_ping_id;
                self.next_ping_id += 1;
                self.transmits
                    .push_back(Transmit::Ping(Bytes::copy_from_slice(&wire::ping_payload(
                        id,
                    ))));
                self.pending_ping = Some(PendingPing {
                    id,
                    deadline: now.checked_add(self.config.timeouts.pong_timeout),
                });
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
        self.state = SessionState::Failed;
        self.clear_timers();
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
        let pong = self.pending_ping.and_then(|p| p.deadline);
        [ack, waits, pong, self.next_ping]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals -----

    fn on_ack(&mut self, now: Instant, id: u64, text: &[u8]) {
        let Some(pending) = self.pending_ack.filter(|p| p.id == id) else {
            return;
        };
        self.pending_ack = None;
        if text != b"ok" {
            self.fail(SessionError::AckRejected {
                event: pending.event,
                text: String::from_utf8_lossy(text).into_owned(),
            });
            return;
        }
        self.events.push_back(SessionEvent::Acked {
            event: pending.event,
        });
        match self.state {
            SessionState::SchemaSent => {
                let data = self.config.requirements_json.clone();
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

    fn on_event(&mut self, name: &str, data: Bytes) {
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
                if self.config.requirements.require_routes =>
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
            _ => match event::connected_module(name).filter(|m| self.config.requires(m)) {
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
            },
        }
    }

    fn emit_with_ack(&mut self, now: Instant, event: &'static str, data: Bytes) {
        let id = self.next_ack_id;
        self.next_ack_id += 1;
        self.pending_ack = Some(PendingAck {
            id,
            event,
            deadline: now.checked_add(self.config.timeouts.ack),
        });
        self.transmits.push_back(Transmit::Emit {
            event,
            ack_id: id,
            data,
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

#[cfg(test)]
mod tests {
    use super::SessionError;
    use std::time::Duration;

    #[test]
    fn kinds_are_stable_and_carry_no_text() {
        let secret = "token=hunter2";
        let cases = [
            (
                SessionError::AckTimeout {
                    event: "MODULE:READY",
                    timeout: Duration::from_secs(5),
                },
                "ack_timeout",
            ),
            (
                SessionError::AckRejected {
                    event: "MODULE:READY",
                    text: secret.to_owned(),
                },
                "ack_rejected",
            ),
            (
                SessionError::WaitTimeout {
                    event: "CONFIG:SEND_CONFIG_WHEN_CONNECTED".to_owned(),
                    timeout: Duration::from_secs(5),
                },
                "wait_timeout",
            ),
            (
                SessionError::ServerError {
                    event: "ERROR_CONNECTION",
                    text: secret.to_owned(),
                },
                "server_error",
            ),
            (
                SessionError::Rejected {
                    what: "config".to_owned(),
                    reason: secret.to_owned(),
                },
                "rejected",
            ),
            (SessionError::PongsMissed { missed: 2 }, "pongs_missed"),
            (
                SessionError::Disconnected {
                    normal: true,
                    reason: secret.to_owned(),
                },
                "disconnected",
            ),
            (
                SessionError::Disconnected {
                    normal: false,
                    reason: secret.to_owned(),
                },
                "disconnected",
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert!(
                kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{kind}"
            );
        }
    }
}
