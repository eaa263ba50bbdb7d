//! Every control and fault knob of the fake service, the await helpers and the recording, on
//! the in-memory transport (virtual time where time matters) and, for stop/restart, over a
//! real WebSocket.

use crate::common::{Client, WAIT, addresses, ready_payload, requirements_payload, schema_payload};
use bytes::Bytes;
use cluster_proto::event;
use cluster_testkit::{
    ConfigUpdateError, Direction, ErrorEvent, FakeConfigService, Fault, WaitError,
};
use cluster_transport::ws::{WsConfig, WsConnector};
use cluster_transport::{Connector, Endpoint};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

async fn ready_a(connector: &Arc<dyn Connector>, host: &str, ip: &str) -> Client {
    let mut a = Client::connect(connector, host, "A").await;
    let acks = a
        .handshake(
            &schema_payload("{}"),
            &requirements_payload(&[], false),
            &ready_payload("A", ip, "9999"),
        )
        .await;
    assert_eq!(acks, ["ok", "ok", "ok"]);
    assert_eq!(
        a.expect(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED).await,
        "{}"
    );
    a
}

/// B requires A and wants routes; its first events are consumed.
async fn dependent_b(connector: &Arc<dyn Connector>, host: &str) -> Client {
    let mut b = Client::connect(connector, host, "B").await;
    assert_eq!(
        b.ack(
            event::MODULE_SEND_REQUIREMENTS,
            requirements_payload(&["A"], true).as_bytes()
        )
        .await,
        "ok"
    );
    b.expect("A_MODULE_CONNECTED").await;
    b.expect(event::CONFIG_SEND_ROUTES_WHEN_CONNECTED).await;
    b
}

#[tokio::test]
async fn set_config_validates_checks_the_version_and_notifies() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut a = ready_a(&connector, &host, "10.0.0.1").await;

    let err = service
        .set_config("A", r#"{"someString":42}"#, Some(1))
        .unwrap_err();
    let ConfigUpdateError::Invalid { issues, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(issues[0].instance_path, "/someString");
    assert!(matches!(
        service.set_config("nobody", "{}", None),
        Err(ConfigUpdateError::NoSchema { .. })
    ));
    assert!(matches!(
        service.set_config("A", "[]", None),
        Err(ConfigUpdateError::NotAnObject { .. })
    ));

    let change = service
        .set_config("A", r#"{"someString":"x"}"#, Some(1))
        .unwrap();
    assert_eq!(
        (change.version, change.changed, change.notified),
        (2, true, 1)
    );
    assert_eq!(
        a.expect(event::CONFIG_SEND_CONFIG_CHANGED).await,
        r#"{"someString":"x"}"#
    );
    assert_eq!(
        service.set_config("A", r#"{"someString":"y"}"#, Some(1)),
        Err(ConfigUpdateError::VersionConflict {
            module: "A".into(),
            expected: 1,
            active: 2
        })
    );
    // Equal config: nothing changes, nothing is sent.
    let same = service
        .set_config("A", r#"{ "someString" : "x" }"#, Some(2))
        .unwrap();
    assert!(!same.changed);
    a.barrier().await;
    assert_eq!(a.drain(), []);
    assert_eq!(service.active_config("A").unwrap().version, 2);
}

#[tokio::test]
async fn unsafe_config_seeds_a_module_before_it_connects() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let seeded = service
        .set_config_unsafe("A", r#"{"someString":1}"#, None)
        .unwrap();
    assert_eq!(seeded.version, 1);
    let mut a = Client::connect(&connector, &host, "A").await;
    a.ack(
        event::MODULE_SEND_CONFIG_SCHEMA,
        schema_payload(r#"{"default":true}"#).as_bytes(),
    )
    .await;
    assert_eq!(
        a.expect(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED).await,
        r#"{"someString":1}"#
    );
}

#[tokio::test]
async fn send_error_reaches_every_connection_of_the_module() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut a1 = ready_a(&connector, &host, "10.0.0.1").await;
    let mut a2 = ready_a(&connector, &host, "10.0.0.2").await;
    let mut b = Client::connect(&connector, &host, "B").await;
    assert_eq!(
        service.send_error("A", ErrorEvent::Connection, "go away"),
        2
    );
    assert_eq!(service.send_error("A", ErrorEvent::Config, "bad"), 2);
    assert_eq!(service.send_error("nobody", ErrorEvent::Config, "x"), 0);
    for a in [&mut a1, &mut a2] {
        assert_eq!(a.expect(event::ERROR_CONNECTION).await, "go away");
        assert_eq!(a.expect(event::ERROR_CONFIG).await, "bad");
    }
    b.barrier().await;
    assert_eq!(b.drain(), []);
}

#[tokio::test]
async fn disconnect_module_closes_its_connections_and_notifies_dependents() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let a = ready_a(&connector, &host, "10.0.0.1").await;
    let mut b = dependent_b(&connector, &host).await;
    assert_eq!(service.disconnect_module("A").await, 1);
    // Done when it returns: no instance left, the client saw a normal close.
    assert!(service.ready_instances("A").is_empty());
    let closed = a.conn.closed().await;
    assert!(closed.by_peer && closed.normal, "{closed:?}");
    assert_eq!(b.expect(event::CONFIG_SEND_ROUTES_CHANGED).await, "[]");
    assert_eq!(b.expect("A_MODULE_CONNECTED").await, "[]");
    assert_eq!(service.disconnect_module("A").await, 0);

    assert_eq!(service.disconnect_all().await, 1);
    assert!(b.conn.closed().await.normal);
    assert_eq!(service.connection_count(), 0);
}

#[tokio::test]
async fn refused_connections_are_closed_before_any_event() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let open = ready_a(&connector, &host, "10.0.0.1").await;
    service.refuse_connections(true);
    let refused = Client::connect(&connector, &host, "A").await;
    let closed = refused.conn.closed().await;
    assert_eq!(
        closed.close.and_then(|c| c.code),
        Some(1013),
        "{}",
        closed.reason
    );
    assert_eq!(service.connections("A").len(), 1, "the open one stays");
    assert!(!open.conn.is_closed());
    service.refuse_connections(false);
    ready_a(&connector, &host, "10.0.0.2").await;
    assert_eq!(service.ready_instances("A").len(), 2);
}

#[tokio::test]
async fn stop_and_restart_keep_the_state_in_memory() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let a = ready_a(&connector, &host, "10.0.0.1").await;
    service
        .set_config("A", r#"{"someString":"v2"}"#, Some(1))
        .unwrap();
    service.stop().await;
    let closed = a.conn.closed().await;
    assert_eq!(closed.close.and_then(|c| c.code), Some(1001));
    assert!(service.ready_instances("A").is_empty());
    let endpoint: Endpoint = host.parse().unwrap();
    assert!(
        connector.connect(&endpoint, "A").await.is_err(),
        "nothing listens"
    );
    service.stop().await; // idempotent

    service.restart().await.unwrap();
    assert_eq!(service.listeners(), [format!("mem://{host}")]);
    let mut again = Client::connect(&connector, &host, "A").await;
    again
        .ack(
            event::MODULE_SEND_CONFIG_SCHEMA,
            schema_payload("{}").as_bytes(),
        )
        .await;
    assert_eq!(
        again.expect(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED).await,
        r#"{"someString":"v2"}"#
    );
    assert_eq!(service.active_config("A").unwrap().version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_rebind_the_same_websocket_address() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::ws(&service).await;
    let a = ready_a(&connector, &host, "10.0.0.1").await;
    service.stop().await;
    assert!(a.conn.closed().await.by_peer);
    let endpoint: Endpoint = host.parse().unwrap();
    let fresh: Arc<dyn Connector> = Arc::new(WsConnector::new(WsConfig::default()).unwrap());
    assert!(
        fresh.connect(&endpoint, "A").await.is_err(),
        "nothing listens"
    );
    service.restart().await.unwrap();
    ready_a(&connector, &host, "10.0.0.1").await;
    service.wait_ready_instances("A", 1, WAIT).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_delayed_ack_comes_late_but_the_state_changes_at_once() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let a = Client::connect(&connector, &host, "A").await;
    service.fault_ack(
        event::MODULE_READY,
        Some(Fault::Delay(Duration::from_secs(2))),
    );
    let started = Instant::now();
    let ack = a.conn.emit_with_ack(
        event::MODULE_READY,
        ready_payload("A", "10.0.0.1", "1").as_bytes(),
    );
    tokio::pin!(ack);
    service.wait_ready_instances("A", 1, WAIT).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1900), &mut ack)
            .await
            .is_err(),
        "ack came early"
    );
    assert_eq!(&ack.await.unwrap()[..], b"ok");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let acked = service
        .wait_event("A", event::MODULE_READY, WAIT)
        .await
        .unwrap();
    assert_eq!(acked.direction(), Direction::Received);
    let frames = service.sent("A");
    assert_eq!(frames.last().map(|f| f.direction()), Some(Direction::Acked));
}

#[tokio::test(start_paused = true)]
async fn a_swallowed_ack_never_comes_until_the_fault_is_cleared() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut b = Client::connect(&connector, &host, "B").await;
    service.fault_ack(event::MODULE_SEND_REQUIREMENTS, Some(Fault::Swallow));
    let req = requirements_payload(&["A"], false);
    let err = b
        .conn
        .emit_with_ack_timeout(
            event::MODULE_SEND_REQUIREMENTS,
            req.as_bytes(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no ack"), "{err}");
    // The event itself was handled.
    assert_eq!(b.expect("A_MODULE_CONNECTED").await, "[]");
    service.clear_faults();
    assert_eq!(
        b.ack(event::MODULE_SEND_REQUIREMENTS, req.as_bytes()).await,
        "ok"
    );
}

#[tokio::test(start_paused = true)]
async fn a_delayed_event_goes_out_after_the_ack() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut a = Client::connect(&connector, &host, "A").await;
    service.fault_event(
        event::CONFIG_SEND_CONFIG_WHEN_CONNECTED,
        Some(Fault::Delay(Duration::from_secs(1))),
    );
    let started = Instant::now();
    a.ack(
        event::MODULE_SEND_CONFIG_SCHEMA,
        schema_payload("{}").as_bytes(),
    )
    .await;
    assert_eq!(a.try_next(), None, "held back");
    assert_eq!(
        a.expect(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED).await,
        "{}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    service.fault_event(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, None);
}

#[tokio::test(start_paused = true)]
async fn delayed_events_keep_their_order() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut a = ready_a(&connector, &host, "10.0.0.1").await;
    service.fault_event(
        event::CONFIG_SEND_CONFIG_CHANGED,
        Some(Fault::Delay(Duration::from_millis(500))),
    );
    for i in 0..5 {
        service
            .set_config("A", format!(r#"{{"someString":"{i}"}}"#), None)
            .unwrap();
    }
    for i in 0..5 {
        assert_eq!(
            a.expect(event::CONFIG_SEND_CONFIG_CHANGED).await,
            format!(r#"{{"someString":"{i}"}}"#)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_without_delay_waits_behind_a_delayed_one_to_the_same_connection() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    // Subscribed to config changes.
    let mut a = ready_a(&connector, &host, "10.0.0.1").await;
    // Not subscribed: nothing of it is held back.
    let mut other = Client::connect(&connector, &host, "A").await;
    service.wait_connections("A", 2, WAIT).await.unwrap();
    service.fault_event(
        event::CONFIG_SEND_CONFIG_CHANGED,
        Some(Fault::Delay(Duration::from_secs(1))),
    );
    let started = Instant::now();
    service
        .set_config("A", r#"{"someString":"late"}"#, None)
        .unwrap();
    assert_eq!(service.send_error("A", ErrorEvent::Config, "after"), 2);

    assert_eq!(other.expect(event::ERROR_CONFIG).await, "after");
    assert_eq!(started.elapsed(), Duration::ZERO, "nothing held for it");
    assert_eq!(
        a.expect(event::CONFIG_SEND_CONFIG_CHANGED).await,
        r#"{"someString":"late"}"#
    );
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(a.expect(event::ERROR_CONFIG).await, "after");
    assert_eq!(started.elapsed(), Duration::from_secs(1));

    // The line is empty again: events without a delay go out at once.
    let now = Instant::now();
    assert_eq!(service.send_error("A", ErrorEvent::Connection, "now"), 2);
    assert_eq!(a.expect(event::ERROR_CONNECTION).await, "now");
    assert_eq!(now.elapsed(), Duration::ZERO);
    // Recorded in the order they were queued.
    let id = service.connections("A")[0].id;
    let sent: Vec<String> = service
        .sent(id)
        .iter()
        .filter(|f| f.direction() == Direction::Sent)
        .map(|f| f.event().to_owned())
        .collect();
    assert_eq!(
        sent,
        [
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED,
            event::CONFIG_SEND_CONFIG_CHANGED,
            event::ERROR_CONFIG,
            event::ERROR_CONNECTION
        ]
    );
}

/// Config bytes that say when they are freed.
struct Tracked {
    json: &'static [u8],
    _freed: tokio::sync::oneshot::Sender<()>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        self.json
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_service_ends_its_delay_line_in_the_middle_of_a_wait() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut a = ready_a(&connector, &host, "10.0.0.1").await;
    service.fault_event(
        event::ERROR_CONFIG,
        Some(Fault::Delay(Duration::from_millis(10))),
    );
    service.fault_event(
        event::CONFIG_SEND_CONFIG_CHANGED,
        Some(Fault::Delay(Duration::from_secs(3600))),
    );
    let (freed, on_free) = tokio::sync::oneshot::channel();
    let config = Bytes::from_owner(Tracked {
        json: br#"{"someString":"held for an hour"}"#,
        _freed: freed,
    });
    assert_eq!(service.send_error("A", ErrorEvent::Config, "first"), 1);
    assert_eq!(service.set_config("A", config, None).unwrap().notified, 1);
    // The line sent the first event and, in the same turn, took the config change and
    // started its hour-long wait.
    assert_eq!(a.expect(event::ERROR_CONFIG).await, "first");
    drop(service);
    // Only the delay line still holds the config. It lets go when the service goes, not an
    // hour later (under paused time the 5 s timeout fires first if it keeps waiting).
    let started = Instant::now();
    assert!(
        tokio::time::timeout(WAIT, on_free).await.is_ok(),
        "the delay line outlived the service"
    );
    assert!(started.elapsed() < WAIT);
}

#[tokio::test]
async fn too_many_required_modules_are_refused_in_the_ack() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut b = Client::connect(&connector, &host, "B").await;
    let names: Vec<String> = (0..=cluster_testkit::state::MAX_REQUIRED_MODULES)
        .map(|i| format!("m{i}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let ack = b
        .ack(
            event::MODULE_SEND_REQUIREMENTS,
            requirements_payload(&names, true).as_bytes(),
        )
        .await;
    assert_eq!(ack, "too many required modules: 1025 (at most 1024)");
    let info = &service.connections("B")[0];
    assert!(info.required_modules.is_empty() && !info.wants_routes);
    // Nothing was sent to it (the barrier's ack comes after anything queued before it).
    b.barrier().await;
    assert_eq!(b.drain(), []);
}

#[tokio::test]
async fn a_swallowed_event_is_neither_sent_nor_recorded() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut a = ready_a(&connector, &host, "10.0.0.1").await;
    service.fault_event(event::CONFIG_SEND_CONFIG_CHANGED, Some(Fault::Swallow));
    let change = service
        .set_config("A", r#"{"someString":"lost"}"#, None)
        .unwrap();
    assert!(change.changed);
    a.barrier().await;
    assert_eq!(a.drain(), []);
    assert!(
        service
            .sent("A")
            .iter()
            .all(|f| f.event() != event::CONFIG_SEND_CONFIG_CHANGED)
    );
}

#[tokio::test]
async fn frames_are_recorded_both_ways_in_order() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let a = ready_a(&connector, &host, "10.0.0.1").await;
    let id = service.connections("A")[0].id;
    let frames: Vec<(Direction, String, String)> = service
        .frames(id)
        .into_iter()
        .map(|f| (f.direction(), f.event().to_owned(), f.text()))
        .collect();
    use Direction::{Acked, Received, Sent};
    let expected = [
        (
            Received,
            event::MODULE_SEND_CONFIG_SCHEMA,
            schema_payload("{}"),
        ),
        (
            Sent,
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED,
            "{}".to_owned(),
        ),
        (Acked, event::MODULE_SEND_CONFIG_SCHEMA, "ok".to_owned()),
        (
            Received,
            event::MODULE_SEND_REQUIREMENTS,
            requirements_payload(&[], false),
        ),
        (Acked, event::MODULE_SEND_REQUIREMENTS, "ok".to_owned()),
        (
            Received,
            event::MODULE_READY,
            ready_payload("A", "10.0.0.1", "9999"),
        ),
        (Acked, event::MODULE_READY, "ok".to_owned()),
    ];
    let expected: Vec<(Direction, String, String)> = expected
        .into_iter()
        .map(|(d, e, t)| (d, e.to_owned(), t))
        .collect();
    assert_eq!(frames, expected);
    assert_eq!(service.received(id).len(), 3);
    assert_eq!(service.sent("A").len(), 4);

    // A closed connection keeps its record; clear_recorded forgets it.
    a.close().await;
    service.wait_connections("A", 0, WAIT).await.unwrap();
    assert_eq!(service.frames("A").len(), 7);
    service.clear_recorded();
    assert!(service.frames("A").is_empty());
}

#[tokio::test]
async fn bad_payloads_and_unknown_events_get_answers() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let a = Client::connect(&connector, &host, "A").await;
    let ack = a.ack(event::MODULE_SEND_CONFIG_SCHEMA, b"{oops").await;
    assert!(ack.starts_with("unmarshal event data: "), "{ack}");
    assert!(service.active_config("A").is_none());
    let ack = a.ack(event::MODULE_READY, br#"{"address":5}"#).await;
    assert!(ack.starts_with("unmarshal event data: "), "{ack}");
    assert!(service.ready_instances("A").is_empty());
    assert_eq!(a.ack("SOMETHING:ELSE", b"x").await, "");
    let unknown = service
        .wait_event("A", "SOMETHING:ELSE", WAIT)
        .await
        .unwrap();
    assert_eq!(unknown.text(), "x");
    assert_eq!(a.ack(event::MODULE_SEND_REQUIREMENTS, b"{}").await, "ok");
}

#[tokio::test]
async fn with_recording_off_nothing_is_kept_and_frames_cannot_be_awaited() {
    let service = FakeConfigService::builder().recording(false).build();
    let (connector, host) = crate::common::memory(&service);
    let a = ready_a(&connector, &host, "10.0.0.1").await;
    assert!(service.frames("A").is_empty());
    let err = service
        .wait_event("A", event::MODULE_READY, WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::RecordingOff { .. }), "{err}");
    service.set_recording(true);
    a.ack("X", b"").await;
    assert_eq!(service.received("A").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn await_helpers_say_what_was_expected_and_what_there_is() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let _a = ready_a(&connector, &host, "10.0.0.1").await;
    let err = service
        .wait_ready_instances("A", 2, Duration::from_secs(1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(r#"2 ready instance(s) of module "A""#),
        "{text}"
    );
    assert!(text.contains("1 ready instance(s) [conn#"), "{text}");
    assert!(text.contains("at 10.0.0.1:9999"), "{text}");

    let err = service
        .wait_connections("Z", 1, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"module "Z" is unknown: it never connected"#),
        "{err}"
    );
    assert!(
        err.to_string().contains(r#"(known modules: ["A"])"#),
        "{err}"
    );

    let err = service
        .wait_event("A", event::ERROR_CONFIG, Duration::from_secs(1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(r#"1 event(s) "ERROR_CONFIG" of module "A""#),
        "{text}"
    );
    assert!(text.contains("<- MODULE:READY"), "{text}");
    assert!(text.contains("-> ack MODULE:READY ok"), "{text}");
}

#[tokio::test]
async fn await_helpers_wake_on_changes() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let waiter = {
        let service = service.clone();
        tokio::spawn(async move { service.wait_ready_instances("A", 2, WAIT).await })
    };
    let _a1 = ready_a(&connector, &host, "10.0.0.1").await;
    let _a2 = ready_a(&connector, &host, "10.0.0.2").await;
    let ready = waiter.await.unwrap().unwrap();
    let ips: Vec<&str> = ready.iter().map(|d| d.address.ip.as_str()).collect();
    assert_eq!(ips, ["10.0.0.2", "10.0.0.1"]);
    let events = service
        .wait_events("A", event::MODULE_READY, 2, WAIT)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "two received; acks do not count");
}

#[tokio::test(start_paused = true)]
async fn wait_events_counts_events_not_their_acks() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let _a = ready_a(&connector, &host, "10.0.0.1").await;
    let acked = service
        .sent("A")
        .into_iter()
        .filter(|f| f.direction() == Direction::Acked && f.event() == event::MODULE_READY)
        .count();
    assert_eq!(acked, 1, "the READY was acked and the ack recorded");
    // One READY and its ack are not two READY events.
    let err = service
        .wait_events("A", event::MODULE_READY, 2, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(r#"2 event(s) "MODULE:READY" of module "A""#),
        "{err}"
    );
    let ready = service
        .wait_events("A", event::MODULE_READY, 1, WAIT)
        .await
        .unwrap();
    let directions: Vec<Direction> = ready.iter().map(|f| f.direction()).collect();
    assert_eq!(directions, [Direction::Received]);
}

#[tokio::test]
async fn listeners_share_one_state() {
    let service = FakeConfigService::new();
    let (connector, first) = crate::common::memory(&service);
    let second = service.listen_memory().unwrap();
    let (ws_connector, ws_host) = crate::common::ws(&service).await;
    assert_ne!(first, second.host);
    assert_eq!(service.listeners().len(), 3);
    let _a = ready_a(&connector, &first, "10.0.0.1").await;
    let mut b = Client::connect(&second.connector, &second.host, "B").await;
    b.ack(
        event::MODULE_SEND_REQUIREMENTS,
        requirements_payload(&["A"], false).as_bytes(),
    )
    .await;
    assert_eq!(
        b.expect("A_MODULE_CONNECTED").await,
        addresses(&[("10.0.0.1", "9999")])
    );
    let _a2 = ready_a(&ws_connector, &ws_host, "10.0.0.2").await;
    assert_eq!(
        b.expect("A_MODULE_CONNECTED").await,
        addresses(&[("10.0.0.2", "9999"), ("10.0.0.1", "9999")])
    );
}
