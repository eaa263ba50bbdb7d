//! Drives `Session` deterministically with a virtual clock through every path.

use bytes::Bytes;
use cluster_proto::payload::{AddressConfiguration, ConfigData, ModuleInfo, ModuleRequirements};
use cluster_proto::session::{
    Applied, Session, SessionConfig, SessionError, SessionEvent, SessionState, SessionTimeouts,
    Transmit,
};
use cluster_proto::{DecodeError, event, frame};
use std::time::{Duration, Instant};

const SCHEMA: &[u8] = br#"{"version":"1.0.0","schema":{},"config":{}}"#;
const REQS: &[u8] = br#"{"requiredModules":["A","C"],"requireRoutes":true}"#;
const DECL: &[u8] = br#"{"moduleName":"B","version":"1.0.0","libVersion":"1.0.0","endpoints":null,"requiredModules":[{"name":"A","required":true},{"name":"C","required":true}],"address":{"ip":"127.0.0.1","port":"8000"}}"#;

/// A session plus a virtual clock and the outputs seen so far.
struct Harness {
    session: Session,
    now: Instant,
    sent: Vec<Transmit>,
    /// Every event but [`SessionEvent::Acked`], which goes to `acked`.
    events: Vec<SessionEvent>,
    acked: Vec<&'static str>,
}

fn module() -> ModuleInfo {
    ModuleInfo {
        module_name: "B".into(),
        module_version: "1.0.0".into(),
        lib_version: "1.0.0".into(),
        grpc_outer_address: AddressConfiguration::new("127.0.0.1", "8000"),
        ..ModuleInfo::default()
    }
}

/// With `wait_all`, the module has a config receiver and requires `A`, `C` and the routes;
/// without, it has no receiver and requires nothing, so it awaits nothing.
fn config(wait_all: bool) -> SessionConfig {
    let data = ConfigData::from_json("1.0.0", "{}", "{}").unwrap();
    let requirements = if wait_all {
        ModuleRequirements {
            required_modules: vec!["A".into(), "C".into()],
            require_routes: true,
        }
    } else {
        ModuleRequirements::default()
    };
    let mut cfg = SessionConfig::new(&module(), &data, requirements);
    cfg.wait_config = wait_all;
    cfg
}

impl Harness {
    fn new(cfg: SessionConfig) -> Self {
        let now = Instant::now();
        let mut h = Self {
            session: Session::new(cfg, now),
            now,
            sent: Vec::new(),
            events: Vec::new(),
            acked: Vec::new(),
        };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            self.sent.push(t);
        }
        while let Some(e) = self.session.poll_event() {
            match e {
                SessionEvent::Acked { event } => self.acked.push(event),
                e => self.events.push(e),
            }
        }
    }

    /// Moves the virtual clock to the next deadline (like a runtime's one sleep).
    fn fire_next_timeout(&mut self) -> Duration {
        let at = self.session.poll_timeout().expect("a deadline is set");
        let waited = at - self.now;
        self.now = at;
        self.session.handle_timeout(self.now);
        self.drain();
        waited
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.session.handle_timeout(self.now);
        self.drain();
    }

    /// The ack id of the last emit of `event` that asked for an ack.
    fn ack_id(&self, event: &str) -> u64 {
        self.sent
            .iter()
            .rev()
            .find_map(|t| match t {
                Transmit::Emit {
                    event: e, ack_id, ..
                } if *e == event && *ack_id > 0 => Some(*ack_id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{event} was not emitted with ack: {:?}", self.sent))
    }

    /// The server acknowledges `event` with `text`, as a frame.
    fn ack(&mut self, event: &str, text: &[u8]) {
        let id = self.ack_id(event);
        self.frame(frame::encode_ack_to_bytes(event, id, text));
    }

    /// The server sends `name` with `data` (no ack wanted), as a frame.
    fn event(&mut self, name: &str, data: &'static [u8]) {
        self.frame(frame::encode_to_bytes(name, 0, data));
    }

    /// One raw message from the server.
    fn frame(&mut self, message: Bytes) {
        self.session.handle_frame(self.now, message);
        self.drain();
    }

    fn applied(&mut self, what: Applied, result: Result<(), String>) {
        self.session.handle_applied(self.now, what, result);
        self.drain();
    }

    fn emitted(&self) -> Vec<&'static str> {
        self.sent
            .iter()
            .filter_map(|t| match t {
                Transmit::Emit { event, .. } => Some(*event),
                _ => None,
            })
            .collect()
    }

    fn failure(&self) -> SessionError {
        assert_eq!(self.session.state(), SessionState::Failed);
        assert_eq!(
            self.sent.last(),
            Some(&Transmit::Close),
            "a failed session closes"
        );
        match self.events.last() {
            Some(SessionEvent::Failed(e)) => {
                assert_eq!(Some(e), self.session.error());
                e.clone()
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    fn last_ping(&self) -> Bytes {
        self.sent
            .iter()
            .rev()
            .find_map(|t| match t {
                Transmit::Ping(payload) => Some(payload.clone()),
                _ => None,
            })
            .expect("a ping was sent")
    }

    /// The first events of [`config`]`(true)`, each applied, once the requirements are acked.
    fn handshake_events(&mut self) {
        self.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
        self.event(event::CONFIG_SEND_ROUTES_WHEN_CONNECTED, b"[]");
        self.event("A_MODULE_CONNECTED", b"[]");
        self.event("C_MODULE_CONNECTED", b"[]");
        self.applied(Applied::Config, Ok(()));
        self.applied(Applied::Routes, Ok(()));
        self.applied(Applied::Hosts("A".into()), Ok(()));
        self.applied(Applied::Hosts("C".into()), Ok(()));
    }

    /// Runs the whole golden handshake in the order the Go peers produce it.
    fn handshake(&mut self) {
        // The config arrives before the schema ack (observed order).
        self.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
        self.applied(Applied::Config, Ok(()));
        self.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
        self.event(
            "A_MODULE_CONNECTED",
            br#"[{"ip":"127.0.9.2","port":"9999"}]"#,
        );
        self.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
        self.event("C_MODULE_CONNECTED", b"[]");
        self.event(event::CONFIG_SEND_ROUTES_WHEN_CONNECTED, b"[]");
        self.applied(Applied::Hosts("A".into()), Ok(()));
        self.applied(Applied::Hosts("C".into()), Ok(()));
        assert_eq!(self.session.state(), SessionState::AwaitingEvents);
        self.applied(Applied::Routes, Ok(()));
        assert_eq!(self.session.state(), SessionState::ReadySent);
        self.ack(event::MODULE_READY, b"ok");
    }
}

#[test]
fn golden_handshake_reaches_ready() {
    let mut h = Harness::new(config(true));
    assert_eq!(h.session.state(), SessionState::SchemaSent);
    h.handshake();
    assert_eq!(h.session.state(), SessionState::Ready);
    assert!(h.session.is_ready());
    assert_eq!(
        h.emitted(),
        [
            event::MODULE_SEND_CONFIG_SCHEMA,
            event::MODULE_SEND_REQUIREMENTS,
            event::MODULE_READY
        ]
    );
    let payloads: Vec<&[u8]> = h
        .sent
        .iter()
        .filter_map(|t| match t {
            Transmit::Emit { data, .. } => Some(&data[..]),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, [SCHEMA, REQS, DECL]);
    assert!(matches!(
        h.events[0],
        SessionEvent::Config { initial: true, .. }
    ));
    assert!(h.events.contains(&SessionEvent::Hosts {
        module: "A".into(),
        data: Bytes::from_static(br#"[{"ip":"127.0.9.2","port":"9999"}]"#),
        initial: true
    }));
    assert_eq!(h.events.last(), Some(&SessionEvent::Ready));
    // Once ready, the only deadline is the first ping, 5 s later.
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(5));
    assert!(matches!(h.sent.last(), Some(Transmit::Ping(_))));
}

#[test]
fn awaits_nothing_when_nothing_is_wanted() {
    let mut h = Harness::new(config(false));
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    assert_eq!(h.session.state(), SessionState::ReadySent);
    // A config that nobody wants is not handed to the application.
    h.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
    assert!(h.events.is_empty());
    h.ack(event::MODULE_READY, b"ok");
    assert_eq!(h.events, [SessionEvent::Ready]);
}

#[test]
fn each_ack_timeout_fails_the_session() {
    for stage in 0..3 {
        let mut h = Harness::new(config(false));
        let names = [
            event::MODULE_SEND_CONFIG_SCHEMA,
            event::MODULE_SEND_REQUIREMENTS,
            event::MODULE_READY,
        ];
        for name in &names[..stage] {
            h.ack(name, b"ok");
        }
        assert_eq!(h.fire_next_timeout(), Duration::from_secs(1));
        assert_eq!(
            h.failure(),
            SessionError::AckTimeout {
                event: names[stage],
                timeout: Duration::from_secs(1)
            }
        );
        assert_eq!(h.session.poll_timeout(), None);
    }
}

#[test]
fn each_wait_has_its_own_deadline() {
    let cases: [(&str, Duration); 4] = [
        (
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED,
            Duration::from_secs(10),
        ),
        (
            event::CONFIG_SEND_ROUTES_WHEN_CONNECTED,
            Duration::from_secs(1),
        ),
        ("A_MODULE_CONNECTED", Duration::from_secs(1)),
        ("C_MODULE_CONNECTED", Duration::from_secs(1)),
    ];
    for (missing, timeout) in cases {
        let mut h = Harness::new(config(true));
        h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
        h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
        for (name, _) in cases.iter().filter(|(n, _)| *n != missing) {
            h.event(name, b"[]");
        }
        h.applied(Applied::Config, Ok(()));
        h.applied(Applied::Routes, Ok(()));
        h.applied(Applied::Hosts("A".into()), Ok(()));
        h.applied(Applied::Hosts("C".into()), Ok(()));
        assert_eq!(h.session.state(), SessionState::AwaitingEvents, "{missing}");
        assert_eq!(h.fire_next_timeout(), timeout, "{missing}");
        assert_eq!(
            h.failure(),
            SessionError::WaitTimeout {
                event: missing.to_owned(),
                timeout
            }
        );
    }
}

#[test]
fn a_delivered_but_unapplied_event_still_times_out() {
    let mut h = Harness::new(config(true));
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
    h.event(event::CONFIG_SEND_ROUTES_WHEN_CONNECTED, b"[]");
    h.event("A_MODULE_CONNECTED", b"[]");
    h.event("C_MODULE_CONNECTED", b"[]");
    h.applied(Applied::Routes, Ok(()));
    h.applied(Applied::Hosts("A".into()), Ok(()));
    h.applied(Applied::Hosts("C".into()), Ok(()));
    // The application never finishes applying the config.
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(10));
    assert!(matches!(h.failure(), SessionError::WaitTimeout { .. }));
}

#[test]
fn error_events_fail_the_handshake_at_every_stage() {
    for name in [event::ERROR_CONNECTION, event::ERROR_CONFIG] {
        for stage in 0..4 {
            let mut h = Harness::new(config(true));
            if stage >= 1 {
                h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
            }
            if stage >= 2 {
                h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
            }
            if stage >= 3 {
                h.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
            }
            h.event(name, b"module is not allowed");
            let expected_event = if name == event::ERROR_CONFIG {
                event::ERROR_CONFIG
            } else {
                event::ERROR_CONNECTION
            };
            assert_eq!(
                h.failure(),
                SessionError::ServerError {
                    event: expected_event,
                    text: "module is not allowed".into()
                }
            );
        }
    }
}

#[test]
fn error_events_after_ready_are_reported_and_the_session_stays() {
    let mut h = Harness::new(config(true));
    h.handshake();
    h.event(event::ERROR_CONFIG, b"bad config");
    assert_eq!(
        h.events.last(),
        Some(&SessionEvent::ServerError {
            event: event::ERROR_CONFIG,
            text: Bytes::from_static(b"bad config")
        })
    );
    assert!(h.session.is_ready());
}

#[test]
fn a_failing_ack_fails_with_the_server_text() {
    let mut h = Harness::new(config(false));
    h.ack(
        event::MODULE_SEND_CONFIG_SCHEMA,
        b"handle onModuleConfigSchema: missing variables in initial config: [x]",
    );
    assert_eq!(
        h.failure(),
        SessionError::AckRejected {
            event: event::MODULE_SEND_CONFIG_SCHEMA,
            text: "handle onModuleConfigSchema: missing variables in initial config: [x]".into()
        }
    );
    // Nothing more is sent after the close.
    let sent = h.sent.len();
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
    assert_eq!(h.sent.len(), sent);
}

#[test]
fn stale_and_unknown_ack_tokens_are_ignored() {
    let mut h = Harness::new(config(false));
    let schema = h.ack_id(event::MODULE_SEND_CONFIG_SCHEMA);
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    // The same id again (stale), and one never sent.
    h.frame(frame::encode_ack_to_bytes(
        event::MODULE_SEND_CONFIG_SCHEMA,
        schema,
        b"not ok",
    ));
    h.frame(frame::encode_ack_to_bytes(
        event::MODULE_SEND_REQUIREMENTS,
        99,
        b"not ok",
    ));
    assert_eq!(h.session.state(), SessionState::RequirementsSent);
}

#[test]
fn unknown_events_are_reported_and_change_nothing() {
    let mut h = Harness::new(config(true));
    h.event("SOMETHING_NEW", b"x");
    h.event("Z_MODULE_CONNECTED", b"[]");
    assert_eq!(
        h.events,
        [
            SessionEvent::Unknown {
                name: "SOMETHING_NEW".into()
            },
            SessionEvent::Unknown {
                name: "Z_MODULE_CONNECTED".into()
            }
        ]
    );
    assert_eq!(h.session.state(), SessionState::SchemaSent);
}

#[test]
fn early_events_count() {
    let mut h = Harness::new(config(true));
    // Everything arrives (and is applied) before the schema is even acknowledged.
    for (name, what) in [
        (event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, Applied::Config),
        (event::CONFIG_SEND_ROUTES_WHEN_CONNECTED, Applied::Routes),
        ("A_MODULE_CONNECTED", Applied::Hosts("A".into())),
        ("C_MODULE_CONNECTED", Applied::Hosts("C".into())),
    ] {
        h.event(name, b"[]");
        h.applied(what, Ok(()));
    }
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    assert_eq!(h.session.state(), SessionState::ReadySent);
}

#[test]
fn a_rejected_initial_config_fails_the_handshake() {
    let mut h = Harness::new(config(true));
    h.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
    h.applied(Applied::Config, Err("field x is required".into()));
    assert_eq!(
        h.failure(),
        SessionError::Rejected {
            what: event::CONFIG_SEND_CONFIG_WHEN_CONNECTED.into(),
            reason: "field x is required".into()
        }
    );
    assert!(!h.emitted().contains(&event::MODULE_READY));
}

#[test]
fn changes_after_ready_are_outputs() {
    let mut h = Harness::new(config(true));
    h.handshake();
    h.events.clear();
    h.event(event::CONFIG_SEND_CONFIG_CHANGED, br#"{"a||b":"x||y"}"#);
    h.event(event::CONFIG_SEND_ROUTES_CHANGED, b"[]");
    h.event("A_MODULE_CONNECTED", b"[]");
    assert_eq!(
        h.events,
        [
            SessionEvent::Config {
                data: Bytes::from_static(br#"{"a||b":"x||y"}"#),
                initial: false
            },
            SessionEvent::Routes {
                data: Bytes::from_static(b"[]"),
                initial: false
            },
            SessionEvent::Hosts {
                module: "A".into(),
                data: Bytes::from_static(b"[]"),
                initial: false
            },
        ]
    );
    // Verdicts on changes are ignored.
    h.applied(Applied::Config, Err("nope".into()));
    assert!(h.session.is_ready());
}

#[test]
fn pings_every_interval_and_two_missed_pongs_kill_the_session() {
    let mut h = Harness::new(config(false));
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.ack(event::MODULE_READY, b"ok");
    // A pong in time keeps the session.
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(5));
    let ping = h.last_ping();
    h.now += Duration::from_millis(2);
    h.session.handle_pong(h.now, &ping);
    // One missed pong is tolerated ...
    let t = h.fire_next_timeout();
    assert_eq!(t, Duration::from_millis(4998));
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(3));
    assert!(h.session.is_ready(), "one missed pong is tolerated");
    // ... a pong resets the count ...
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(2));
    let ping = h.last_ping();
    h.session.handle_pong(h.now, &ping);
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(5));
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(3));
    assert!(h.session.is_ready());
    // ... and two in a row declare the connection dead.
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(2));
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(3));
    assert_eq!(h.failure(), SessionError::PongsMissed { missed: 2 });
}

#[test]
fn the_missed_pong_limit_is_configurable() {
    let mut cfg = config(false);
    cfg.timeouts = SessionTimeouts {
        max_missed_pongs: 1,
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_millis(500),
        ..SessionTimeouts::default()
    };
    let mut h = Harness::new(cfg);
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.ack(event::MODULE_READY, b"ok");
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(1));
    assert_eq!(h.fire_next_timeout(), Duration::from_millis(500));
    assert_eq!(h.failure(), SessionError::PongsMissed { missed: 1 });
}

#[test]
fn a_disconnect_in_every_state_fails_the_session() {
    for stage in 0..6 {
        let mut h = Harness::new(config(true));
        let steps: [&dyn Fn(&mut Harness); 5] = [
            &|h| h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok"),
            &|h| h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok"),
            &|h| {
                h.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
                h.event(event::CONFIG_SEND_ROUTES_WHEN_CONNECTED, b"[]");
                h.event("A_MODULE_CONNECTED", b"[]");
                h.event("C_MODULE_CONNECTED", b"[]");
            },
            &|h| {
                h.applied(Applied::Config, Ok(()));
                h.applied(Applied::Routes, Ok(()));
                h.applied(Applied::Hosts("A".into()), Ok(()));
                h.applied(Applied::Hosts("C".into()), Ok(()));
            },
            &|h| h.ack(event::MODULE_READY, b"ok"),
        ];
        for step in &steps[..stage.min(5)] {
            step(&mut h);
        }
        let before = h.session.state();
        h.session
            .handle_disconnect(h.now, false, "connection reset");
        h.drain();
        assert_eq!(h.session.state(), SessionState::Failed, "from {before:?}");
        assert_eq!(
            h.session.error(),
            Some(&SessionError::Disconnected {
                normal: false,
                reason: "connection reset".into()
            })
        );
        assert_eq!(h.session.poll_timeout(), None);
        // A disconnect is final: later inputs change nothing.
        h.session.handle_disconnect(h.now, true, "again");
        h.advance(Duration::from_secs(60));
        assert!(matches!(
            h.session.error(),
            Some(SessionError::Disconnected { normal: false, .. })
        ));
    }
}

#[test]
fn close_is_idempotent_and_final() {
    let mut h = Harness::new(config(true));
    h.session.close(h.now);
    h.session.close(h.now);
    h.drain();
    assert_eq!(h.session.state(), SessionState::Closed);
    assert_eq!(h.sent.iter().filter(|t| **t == Transmit::Close).count(), 1);
    assert_eq!(h.session.poll_timeout(), None);
    h.session.handle_disconnect(h.now, true, "closed by us");
    assert_eq!(h.session.state(), SessionState::Closed);
}

#[test]
fn timeouts_too_long_for_an_instant_mean_no_deadline() {
    let mut cfg = config(true);
    cfg.timeouts = SessionTimeouts {
        ack: Duration::MAX,
        initial_config: Duration::MAX,
        routes: Duration::MAX,
        hosts: Duration::MAX,
        ping_interval: Duration::MAX,
        pong_timeout: Duration::MAX,
        max_missed_pongs: 1,
    };
    // Every stage waits without a deadline.
    let mut h = Harness::new(cfg);
    assert_eq!(h.session.poll_timeout(), None, "schema ack");
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    assert_eq!(h.session.poll_timeout(), None, "requirements ack");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    assert_eq!(h.session.poll_timeout(), None, "first events");
    h.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(h.session.state(), SessionState::AwaitingEvents);
    h.handshake_events();
    assert_eq!(h.session.state(), SessionState::ReadySent);
    assert_eq!(h.session.poll_timeout(), None, "ready ack");
    h.ack(event::MODULE_READY, b"ok");
    assert!(h.session.is_ready());
    assert_eq!(h.session.poll_timeout(), None, "no pings");
    h.advance(Duration::from_secs(365 * 24 * 3600));
    assert!(h.session.is_ready());
    assert!(!h.sent.iter().any(|t| matches!(t, Transmit::Ping(_))));
}

#[test]
fn a_long_pong_timeout_never_misses() {
    let mut cfg = config(false);
    cfg.timeouts.pong_timeout = Duration::MAX;
    cfg.timeouts.max_missed_pongs = 1;
    let mut h = Harness::new(cfg);
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.ack(event::MODULE_READY, b"ok");
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(5));
    let ping = h.last_ping();
    // No pong deadline: only the next ping time is set, and it does not count a miss.
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(5));
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(5));
    assert!(h.session.is_ready());
    assert_eq!(
        h.last_ping(),
        ping,
        "no new ping while the pong is outstanding"
    );
    h.session.handle_pong(h.now, &ping);
    assert_eq!(h.fire_next_timeout(), Duration::from_secs(5));
    assert_ne!(h.last_ping(), ping);
}

#[test]
fn a_zero_ping_interval_turns_pings_off() {
    let mut cfg = config(false);
    cfg.timeouts.ping_interval = Duration::ZERO;
    let mut h = Harness::new(cfg);
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.ack(event::MODULE_READY, b"ok");
    assert!(h.session.is_ready());
    // Nothing to wake up for: a deadline at `now` over and over would spin the runtime.
    assert_eq!(h.session.poll_timeout(), None);
    h.advance(Duration::ZERO);
    h.advance(Duration::from_secs(60));
    assert!(h.session.is_ready());
    assert!(!h.sent.iter().any(|t| matches!(t, Transmit::Ping(_))));
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn emits_are_numbered_from_one_and_acks_match_by_id() {
    let mut h = Harness::new(config(false));
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.ack(event::MODULE_READY, b"ok");
    let ids: Vec<u64> = h
        .sent
        .iter()
        .filter_map(|t| match t {
            Transmit::Emit { ack_id, .. } => Some(*ack_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
        h.acked,
        [
            event::MODULE_SEND_CONFIG_SCHEMA,
            event::MODULE_SEND_REQUIREMENTS,
            event::MODULE_READY
        ]
    );
    // What goes on the wire is the frame the Go server reads.
    assert_eq!(
        h.sent[0].encode().unwrap(),
        Bytes::from([b"MODULE:SEND_CONFIG_SCHEMA||1||".as_slice(), SCHEMA].concat())
    );
    assert_eq!(h.session.state(), SessionState::Ready);
}

#[test]
fn an_error_event_just_before_the_ready_ack_fails_the_handshake() {
    let mut h = Harness::new(config(true));
    h.event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, b"{}");
    h.applied(Applied::Config, Ok(()));
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.handshake_events();
    assert_eq!(h.session.state(), SessionState::ReadySent);
    // Both arrive in one read: the error event first, then the ack.
    h.event(event::ERROR_CONNECTION, b"instance refused");
    h.ack(event::MODULE_READY, b"ok");
    assert_eq!(
        h.failure(),
        SessionError::ServerError {
            event: event::ERROR_CONNECTION,
            text: "instance refused".into()
        }
    );
    assert!(!h.events.contains(&SessionEvent::Ready));
}

#[test]
fn malformed_frames_are_reported_and_skipped() {
    let mut h = Harness::new(config(false));
    h.frame(Bytes::from_static(b"no separator"));
    h.frame(Bytes::from_static(b"X||-1||{}"));
    h.frame(Bytes::from_static(b"||0||{}"));
    assert_eq!(
        h.events,
        [
            SessionEvent::Malformed(DecodeError::MissingSeparator),
            SessionEvent::Malformed(DecodeError::InvalidAckId("-1".into())),
            SessionEvent::Malformed(DecodeError::EmptyName),
        ]
    );
    assert_eq!(h.session.state(), SessionState::SchemaSent);
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    assert_eq!(h.session.state(), SessionState::RequirementsSent);
}

#[test]
fn an_event_that_asks_for_an_ack_gets_an_empty_one() {
    let mut h = Harness::new(config(true));
    h.frame(frame::encode_to_bytes(
        event::CONFIG_SEND_CONFIG_WHEN_CONNECTED,
        7,
        b"{}",
    ));
    let ack = h
        .sent
        .iter()
        .find(|t| matches!(t, Transmit::Ack { .. }))
        .expect("an ack was sent");
    assert_eq!(
        ack.encode().unwrap(),
        Bytes::from_static(b"__ack_CONFIG:SEND_CONFIG_WHEN_CONNECTED||7")
    );
    assert!(matches!(
        h.events[..],
        [SessionEvent::Config { initial: true, .. }]
    ));
}

#[test]
fn a_pong_that_is_not_ours_settles_nothing() {
    let mut h = Harness::new(config(false));
    h.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"ok");
    h.ack(event::MODULE_SEND_REQUIREMENTS, b"ok");
    h.ack(event::MODULE_READY, b"ok");
    h.fire_next_timeout(); // ping 1
    h.session.handle_pong(h.now, b"foreign");
    h.session.handle_pong(h.now, &99u64.to_be_bytes());
    h.fire_next_timeout(); // pong 1 missed
    h.fire_next_timeout(); // ping 2
    h.fire_next_timeout(); // pong 2 missed: dead
    assert_eq!(h.failure(), SessionError::PongsMissed { missed: 2 });
}
