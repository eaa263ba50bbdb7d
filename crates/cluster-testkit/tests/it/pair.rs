//! The client's session against the fake service's state, with no runtime, no sockets and a
//! virtual clock: every frame goes through the ETP codec both ways, in the order each side
//! sends it, so what is checked here is the protocol itself (handshake, config changes,
//! routes, error events at every step, timeouts, disconnects).
//!
//! The server side is [`ClusterState`] plus the few lines of glue the real service adds:
//! decode a module event, hand it to the state, send the notifications meant for the
//! connection and then the ack (`ok`, or the error's text), in that order (the order of the
//! Go service: `CONFIG:SEND_CONFIG_WHEN_CONNECTED` comes before the schema's ack).

use bytes::Bytes;
use cluster_proto::event;
use cluster_proto::frame::{self, Frame};
use cluster_proto::payload::{
    AddressConfiguration, ConfigData, ModuleInfo, ModuleRequirements, decode_addresses,
    decode_routing_config,
};
use cluster_proto::session::{
    Applied, Session, SessionConfig, SessionError, SessionEvent, SessionState,
};
use cluster_testkit::state::{ClusterState, ConnId, ErrorEvent, Notification, UpdateMode};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// One client connection: its session, what is on the wire to it, what it handed out.
struct Peer {
    module: String,
    session: Session,
    inbox: VecDeque<Bytes>,
    events: Vec<SessionEvent>,
    /// Whether the application accepts the first events it is handed.
    accept: bool,
}

/// An error event the server sends right before the ack of a module event.
#[derive(Clone, Copy)]
struct Inject {
    before_ack_of: &'static str,
    kind: ErrorEvent,
}

struct World {
    now: Instant,
    state: ClusterState,
    peers: BTreeMap<ConnId, Peer>,
    next_conn: u64,
    /// Module events the server receives but never acks (a silent server).
    silent: Vec<&'static str>,
    inject: Option<Inject>,
}

fn info(name: &str, ip: &str) -> ModuleInfo {
    ModuleInfo {
        module_name: name.into(),
        module_version: "1.0.0".into(),
        lib_version: "1.0.0".into(),
        grpc_outer_address: AddressConfiguration::new(ip, "9000"),
        ..ModuleInfo::default()
    }
}

fn session_config(name: &str, ip: &str, requires: &[&str], routes: bool) -> SessionConfig {
    let data = ConfigData::from_json(
        "1.0.0",
        r#"{"type":"object","properties":{"level":{"type":"string"}}}"#,
        r#"{"level":"info"}"#,
    )
    .unwrap();
    let requirements = ModuleRequirements {
        required_modules: requires.iter().map(|m| (*m).to_owned()).collect(),
        require_routes: routes,
    };
    let mut config = SessionConfig::new(&info(name, ip), &data, requirements);
    config.wait_config = true;
    config
}

impl World {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            state: ClusterState::new(),
            peers: BTreeMap::new(),
            next_conn: 1,
            silent: Vec::new(),
            inject: None,
        }
    }

    /// A client of `config` connects; returns its connection id.
    fn connect(&mut self, name: &str, config: SessionConfig) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.state.connect(conn, name, "127.0.0.1:50000");
        let session = Session::new(config, self.now);
        self.peers.insert(
            conn,
            Peer {
                module: name.to_owned(),
                session,
                inbox: VecDeque::new(),
                events: Vec::new(),
                accept: true,
            },
        );
        conn
    }

    fn send(&mut self, notifications: Vec<Notification>) {
        for n in notifications {
            let message = frame::encode_to_bytes(&n.event, 0, &n.payload);
            for to in &n.recipients {
                if let Some(peer) = self.peers.get_mut(to) {
                    peer.inbox.push_back(message.clone());
                }
            }
        }
    }

    /// The server handles one frame from `conn`.
    fn server_receives(&mut self, conn: ConnId, message: Bytes) {
        let frame = Frame::decode(message).expect("the client sends valid frames");
        let data = frame.data().clone();
        let (name, result) = match frame.name() {
            event::MODULE_SEND_CONFIG_SCHEMA => (
                event::MODULE_SEND_CONFIG_SCHEMA,
                self.state.config_schema(conn, &data),
            ),
            event::MODULE_SEND_REQUIREMENTS => (
                event::MODULE_SEND_REQUIREMENTS,
                self.state.module_requirements(conn, &data),
            ),
            event::MODULE_READY => (event::MODULE_READY, self.state.module_ready(conn, &data)),
            other if other.starts_with(frame::ACK_PREFIX) => return,
            other => panic!("unexpected client event {other}"),
        };
        let text = match result {
            Ok(notifications) => {
                self.send(notifications);
                Bytes::from_static(b"ok")
            }
            Err(err) => Bytes::from(err.to_string()),
        };
        if let Some(inject) = self.inject.filter(|i| i.before_ack_of == name) {
            let module = self.peers[&conn].module.clone();
            let error = self.state.error_event(&module, inject.kind, "injected");
            self.send(error.into_iter().collect());
        }
        if self.silent.contains(&name) || frame.ack_id() == 0 {
            return;
        }
        let ack = frame::encode_ack_to_bytes(name, frame.ack_id(), &text);
        self.peers.get_mut(&conn).unwrap().inbox.push_back(ack);
    }

    /// One step of `conn`'s handshake by hand: its next transmit reaches the server (panics
    /// if it has none), then its inbox reaches it, less the messages `drop` picks.
    fn step(&mut self, conn: ConnId, drop: impl Fn(&[u8]) -> bool) {
        let transmit = self
            .peers
            .get_mut(&conn)
            .unwrap()
            .session
            .poll_transmit()
            .expect("the session has something to send");
        self.server_receives(conn, transmit.encode().unwrap());
        let now = self.now;
        let peer = self.peers.get_mut(&conn).unwrap();
        peer.inbox.retain(|m| !drop(m));
        while let Some(m) = peer.inbox.pop_front() {
            peer.session.handle_frame(now, m);
            peer.apply(now);
        }
    }

    /// Runs every side until nothing moves: the clients' transmits reach the server, the
    /// server's frames reach the clients, first events are applied (or refused).
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            let conns: Vec<ConnId> = self.peers.keys().copied().collect();
            for conn in conns {
                // Client → server.
                loop {
                    let Some(transmit) = self.peers.get_mut(&conn).unwrap().session.poll_transmit()
                    else {
                        break;
                    };
                    moved = true;
                    match transmit {
                        cluster_proto::session::Transmit::Ping(payload) => {
                            let now = self.now;
                            self.peers
                                .get_mut(&conn)
                                .unwrap()
                                .session
                                .handle_pong(now, &payload);
                        }
                        cluster_proto::session::Transmit::Close => {
                            self.drop_conn(conn);
                            break;
                        }
                        other => {
                            let message = other.encode().unwrap();
                            self.server_receives(conn, message);
                        }
                    }
                }
                // Server → client, then the application.
                let now = self.now;
                let Some(peer) = self.peers.get_mut(&conn) else {
                    continue;
                };
                while let Some(message) = peer.inbox.pop_front() {
                    moved = true;
                    peer.session.handle_frame(now, message);
                    peer.apply(now);
                }
                peer.apply(now);
            }
            if !moved {
                return;
            }
        }
    }

    /// The connection ends (the client closed, or the network): the server forgets it.
    fn drop_conn(&mut self, conn: ConnId) {
        let notifications = self.state.disconnect(conn);
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.session
                .handle_disconnect(self.now, false, "connection lost");
            peer.apply(self.now);
        }
        self.send(notifications);
    }

    /// Moves the virtual clock to the earliest deadline of any session, fires it, settles.
    fn advance_to_next_deadline(&mut self) -> Duration {
        let at = self
            .peers
            .values()
            .filter_map(|p| p.session.poll_timeout())
            .min()
            .expect("a deadline is set");
        let waited = at - self.now;
        self.now = at;
        for peer in self.peers.values_mut() {
            peer.session.handle_timeout(at);
            peer.apply(at);
        }
        self.settle();
        waited
    }

    fn peer(&self, conn: ConnId) -> &Peer {
        &self.peers[&conn]
    }

    fn state_of(&self, conn: ConnId) -> SessionState {
        self.peer(conn).session.state()
    }
}

impl Peer {
    /// Drains the session's events; applies (or refuses) the first ones.
    fn apply(&mut self, now: Instant) {
        while let Some(event) = self.session.poll_event() {
            let verdict = |ok: bool| {
                if ok {
                    Ok(())
                } else {
                    Err("refused".to_owned())
                }
            };
            match &event {
                SessionEvent::Config { initial: true, .. } => {
                    self.session
                        .handle_applied(now, Applied::Config, verdict(self.accept));
                }
                SessionEvent::Routes { initial: true, .. } => {
                    self.session
                        .handle_applied(now, Applied::Routes, verdict(self.accept));
                }
                SessionEvent::Hosts {
                    module,
                    initial: true,
                    ..
                } => {
                    let what = Applied::Hosts(module.clone());
                    self.session.handle_applied(now, what, verdict(self.accept));
                }
                _ => {}
            }
            if !matches!(event, SessionEvent::Acked { .. }) {
                self.events.push(event);
            }
        }
    }

    fn failure(&self) -> SessionError {
        assert_eq!(
            self.session.state(),
            SessionState::Failed,
            "{:?}",
            self.events
        );
        self.session.error().cloned().unwrap()
    }

    fn configs(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::Config { data, .. } => {
                    Some(String::from_utf8_lossy(data).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    fn last_hosts(&self, module: &str) -> Vec<String> {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                SessionEvent::Hosts {
                    module: m, data, ..
                } if m == module => Some(
                    decode_addresses(data)
                        .unwrap()
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn last_routes(&self) -> Vec<String> {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                SessionEvent::Routes { data, .. } => Some(
                    decode_routing_config(data)
                        .unwrap()
                        .into_iter()
                        .map(|d| d.module_name)
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default()
    }
}

#[test]
fn two_modules_get_ready_and_see_each_other() {
    let mut w = World::new();
    let a = w.connect("A", session_config("A", "10.0.0.1", &[], false));
    w.settle();
    assert_eq!(w.state_of(a), SessionState::Ready);
    assert_eq!(w.peer(a).configs(), [r#"{"level":"info"}"#]);

    let b = w.connect("B", session_config("B", "10.0.0.2", &["A"], true));
    w.settle();
    assert_eq!(w.state_of(b), SessionState::Ready);
    assert_eq!(w.peer(b).last_hosts("A"), ["10.0.0.1:9000"]);
    assert_eq!(w.peer(b).last_routes(), ["B", "A"], "newest first");
    assert_eq!(w.state.ready_instances("B").len(), 1);
}

#[test]
fn config_changes_reach_the_session_as_changes() {
    let mut w = World::new();
    let a = w.connect("A", session_config("A", "10.0.0.1", &[], false));
    w.settle();
    let update = w
        .state
        .set_config(
            "A",
            Bytes::from_static(br#"{"level":"debug"}"#),
            None,
            UpdateMode::Validated,
        )
        .unwrap();
    w.send(update.notifications);
    w.settle();
    assert_eq!(
        w.peer(a).configs(),
        [r#"{"level":"info"}"#, r#"{"level":"debug"}"#]
    );
    assert!(matches!(
        w.peer(a).events.last(),
        Some(SessionEvent::Config { initial: false, .. })
    ));
    assert_eq!(w.state_of(a), SessionState::Ready);
}

#[test]
fn a_required_module_coming_and_going_updates_hosts_and_routes() {
    let mut w = World::new();
    let b = w.connect("B", session_config("B", "10.0.0.2", &["A"], true));
    w.settle();
    assert_eq!(w.state_of(b), SessionState::Ready, "an empty list counts");
    assert!(w.peer(b).last_hosts("A").is_empty());

    let a1 = w.connect("A", session_config("A", "10.0.0.1", &[], false));
    let a2 = w.connect("A", session_config("A", "10.0.0.3", &[], false));
    w.settle();
    assert_eq!(
        w.peer(b).last_hosts("A"),
        ["10.0.0.3:9000", "10.0.0.1:9000"]
    );

    w.drop_conn(a2);
    w.settle();
    assert_eq!(w.peer(b).last_hosts("A"), ["10.0.0.1:9000"]);
    assert_eq!(w.peer(b).last_routes(), ["A", "B"]);
    assert_eq!(w.state_of(a1), SessionState::Ready);
    assert_eq!(w.state_of(b), SessionState::Ready);
}

#[test]
fn an_error_event_before_each_ack_fails_the_handshake() {
    for before in [
        event::MODULE_SEND_CONFIG_SCHEMA,
        event::MODULE_SEND_REQUIREMENTS,
        event::MODULE_READY,
    ] {
        for kind in [ErrorEvent::Config, ErrorEvent::Connection] {
            let mut w = World::new();
            w.inject = Some(Inject {
                before_ack_of: before,
                kind,
            });
            let b = w.connect("B", session_config("B", "10.0.0.2", &["A"], true));
            w.settle();
            assert_eq!(
                w.peer(b).failure(),
                SessionError::ServerError {
                    event: kind.name(),
                    text: "injected".into()
                },
                "before the ack of {before}"
            );
            assert!(!w.peer(b).events.contains(&SessionEvent::Ready));
            // The server saw the connection go: B has no connection and nothing ready.
            assert!(w.state.connections_of("B").is_empty(), "{before}");
            assert!(w.state.ready_instances("B").is_empty(), "{before}");
        }
    }
}

#[test]
fn an_error_event_after_ready_is_reported_and_the_session_stays() {
    let mut w = World::new();
    let a = w.connect("A", session_config("A", "10.0.0.1", &[], false));
    w.settle();
    let error = w
        .state
        .error_event("A", ErrorEvent::Config, "config is wrong")
        .unwrap();
    w.send(vec![error]);
    w.settle();
    assert_eq!(w.state_of(a), SessionState::Ready);
    assert_eq!(
        w.peer(a).events.last(),
        Some(&SessionEvent::ServerError {
            event: event::ERROR_CONFIG,
            text: Bytes::from_static(b"config is wrong")
        })
    );
}

#[test]
fn a_server_that_never_acks_fails_the_session_after_the_ack_timeout() {
    for silent in [
        event::MODULE_SEND_CONFIG_SCHEMA,
        event::MODULE_SEND_REQUIREMENTS,
        event::MODULE_READY,
    ] {
        let mut w = World::new();
        w.silent.push(silent);
        let a = w.connect("A", session_config("A", "10.0.0.1", &[], false));
        w.settle();
        assert_eq!(w.advance_to_next_deadline(), Duration::from_secs(1));
        assert!(
            matches!(w.peer(a).failure(), SessionError::AckTimeout { event, .. } if event == silent),
            "{silent}"
        );
    }
}

#[test]
fn a_required_module_the_server_never_announces_times_out() {
    let mut w = World::new();
    // The server's state sends `<m>_MODULE_CONNECTED` for every required module; a session
    // that awaits one more than it declared cannot exist (one source), so drop the event
    // on the wire instead.
    let b = w.connect("B", session_config("B", "10.0.0.2", &["A"], false));
    for _ in 0..2 {
        w.step(b, |m| m.starts_with(b"A_MODULE_CONNECTED"));
    }
    assert_eq!(w.state_of(b), SessionState::AwaitingEvents);
    assert_eq!(w.advance_to_next_deadline(), Duration::from_secs(1));
    assert_eq!(
        w.peer(b).failure(),
        SessionError::WaitTimeout {
            event: "A_MODULE_CONNECTED".into(),
            timeout: Duration::from_secs(1)
        }
    );
}

#[test]
fn a_refused_initial_config_fails_the_handshake_and_a_fixed_one_passes() {
    let mut w = World::new();
    let a = w.connect("A", session_config("A", "10.0.0.1", &[], false));
    w.peers.get_mut(&a).unwrap().accept = false;
    w.settle();
    assert!(matches!(w.peer(a).failure(), SessionError::Rejected { .. }));
    assert!(w.state.connections_of("A").is_empty(), "closed");

    let again = w.connect("A", session_config("A", "10.0.0.1", &[], false));
    w.settle();
    assert_eq!(w.state_of(again), SessionState::Ready);
}

#[test]
fn a_disconnect_at_every_stage_fails_the_session_and_the_server_forgets_it() {
    for stage in 0..4 {
        let mut w = World::new();
        let b = w.connect("B", session_config("B", "10.0.0.2", &[], true));
        // Let `stage` module events through, then cut the connection.
        for _ in 0..stage {
            w.step(b, |_| false);
        }
        w.drop_conn(b);
        assert!(
            matches!(w.peer(b).failure(), SessionError::Disconnected { .. }),
            "stage {stage}"
        );
        assert!(w.state.connections_of("B").is_empty(), "stage {stage}");
        assert!(w.state.ready_instances("B").is_empty(), "stage {stage}");
    }
}

/// The session's keep-alive against the harness: the pongs come from the transport (the
/// harness answers each ping as a WebSocket peer does), not from the server glue, which never
/// sees pings.
#[test]
fn ready_sessions_ping_and_stay_ready_when_pongs_come() {
    let mut w = World::new();
    let a = w.connect("A", session_config("A", "10.0.0.1", &[], false));
    w.settle();
    for _ in 0..3 {
        assert_eq!(w.advance_to_next_deadline(), Duration::from_secs(5));
    }
    assert_eq!(w.state_of(a), SessionState::Ready, "pongs answered");
}
