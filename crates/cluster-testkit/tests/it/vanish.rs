//! Clients that go away at any point of the handshake, or send garbage, leave nothing behind
//! and never take the service down.

use crate::common::{Client, WAIT, addresses, ready_payload, requirements_payload, schema_payload};
use bytes::Bytes;
use cluster_proto::event;
use cluster_testkit::FakeConfigService;
use cluster_transport::{Connector, Endpoint, Incoming};
use std::sync::Arc;

/// B requires A with routes; returns it with its first two events consumed.
async fn watcher(connector: &Arc<dyn Connector>, host: &str) -> Client {
    let mut b = Client::connect(connector, host, "B").await;
    b.ack(
        event::MODULE_SEND_REQUIREMENTS,
        requirements_payload(&["A"], true).as_bytes(),
    )
    .await;
    b.expect("A_MODULE_CONNECTED").await;
    b.expect(event::CONFIG_SEND_ROUTES_WHEN_CONNECTED).await;
    b
}

#[tokio::test]
async fn vanishing_before_ready_leaves_no_trace_and_bothers_nobody() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut b = watcher(&connector, &host).await;
    let a = Client::connect(&connector, &host, "A").await;
    a.ack(
        event::MODULE_SEND_CONFIG_SCHEMA,
        schema_payload("{}").as_bytes(),
    )
    .await;
    a.ack(
        event::MODULE_SEND_REQUIREMENTS,
        requirements_payload(&["B"], false).as_bytes(),
    )
    .await;
    let network = service.memory_network();
    network.connections().last().unwrap().faults.sever();
    assert!(!a.conn.closed().await.normal);
    service.wait_connections("A", 0, WAIT).await.unwrap();
    assert!(service.ready_instances("A").is_empty());
    b.barrier().await;
    assert_eq!(b.drain(), [], "no instance came or went");
    // Its config stays, as in the real service.
    assert_eq!(service.active_config("A").unwrap().version, 1);
}

#[tokio::test]
async fn vanishing_after_ready_drops_the_instance_and_notifies() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut b = watcher(&connector, &host).await;
    let _a = crate::common::ready_instance(&connector, &host, "A", "10.0.0.1").await;
    assert_eq!(
        b.expect(event::CONFIG_SEND_ROUTES_CHANGED).await,
        crate::common::routes(&[("A", "10.0.0.1", "9999")])
    );
    assert_eq!(
        b.expect("A_MODULE_CONNECTED").await,
        addresses(&[("10.0.0.1", "9999")])
    );
    service
        .memory_network()
        .connections()
        .last()
        .unwrap()
        .faults
        .sever();
    service.wait_ready_instances("A", 0, WAIT).await.unwrap();
    assert_eq!(b.expect(event::CONFIG_SEND_ROUTES_CHANGED).await, "[]");
    assert_eq!(b.expect("A_MODULE_CONNECTED").await, "[]");
    assert!(service.connections("A").is_empty());
}

#[tokio::test]
async fn vanishing_with_ready_in_flight_leaves_no_instance() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let mut b = watcher(&connector, &host).await;
    let endpoint: Endpoint = host.parse().unwrap();
    let mut raw = connector.connect(&endpoint, "A").await.unwrap();
    let ready = format!(
        "MODULE:READY||1||{}",
        ready_payload("A", "10.0.0.1", "9999")
    );
    raw.sink.feed(Bytes::from(ready)).await.unwrap();
    raw.sink.flush().await.unwrap();
    drop(raw); // gone without a close, READY possibly unread
    service.wait_connections("A", 0, WAIT).await.unwrap();
    assert!(service.ready_instances("A").is_empty());
    assert!(service.routing_table().is_empty());
    b.barrier().await;
    // Whatever B was told, the last word is that A has no instance.
    let last = b
        .drain()
        .into_iter()
        .rfind(|e| e.name == "A_MODULE_CONNECTED")
        .map_or_else(|| "[]".to_owned(), |e| e.text());
    assert_eq!(last, "[]");
}

#[tokio::test]
async fn a_client_that_is_never_heard_from_leaves_nothing_behind() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let a = Client::connect(&connector, &host, "A").await;
    service.wait_connections("A", 1, WAIT).await.unwrap();
    assert!(service.module("A").unwrap().config.is_none());
    assert_eq!(service.modules(), ["A"]);
    a.close().await;
    service.wait_connections("A", 0, WAIT).await.unwrap();
    // No config, no schema, no connection: the module is forgotten (one that sent its schema
    // stays, as in the real service: see `vanishing_before_ready_leaves_no_trace_and_bothers_nobody`).
    assert!(service.modules().is_empty());
    assert!(service.module("A").is_none());
}

#[tokio::test]
async fn malformed_frames_are_skipped_and_the_connection_stays() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let endpoint: Endpoint = host.parse().unwrap();
    let mut raw = connector.connect(&endpoint, "A").await.unwrap();
    for garbage in ["no separator", "||1||x", "E||-1||x", "E||1x"] {
        raw.sink
            .feed(Bytes::from_static(garbage.as_bytes()))
            .await
            .unwrap();
    }
    raw.sink
        .feed(Bytes::from_static(b"MODULE:SEND_REQUIREMENTS||3||{}"))
        .await
        .unwrap();
    raw.sink.flush().await.unwrap();
    match tokio::time::timeout(WAIT, raw.stream.recv()).await {
        Ok(Ok(Incoming::Text(text))) => {
            assert_eq!(&text[..], b"__ack_MODULE:SEND_REQUIREMENTS||3||ok");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(service.connections("A").len(), 1);
    let received: Vec<String> = service
        .received("A")
        .iter()
        .map(|f| f.event().to_owned())
        .collect();
    assert_eq!(received, [event::MODULE_SEND_REQUIREMENTS]);
}

#[tokio::test]
async fn a_client_outliving_the_service_is_closed() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let a = Client::connect(&connector, &host, "A").await;
    service.wait_connections("A", 1, WAIT).await.unwrap();
    drop(service);
    let closed = a.conn.closed().await;
    assert_eq!(
        closed.close.and_then(|c| c.code),
        Some(1001),
        "{}",
        closed.reason
    );
}

/// Every event is answered with the ack id the client chose, whatever it is (the Go client
/// numbers from 1; other clients may not).
#[tokio::test]
async fn every_ack_id_is_answered_with_that_id() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    let endpoint: Endpoint = host.parse().unwrap();
    let mut raw = connector.connect(&endpoint, "A").await.unwrap();
    for id in (1..=12).chain([100, u64::MAX]) {
        let frame = format!("MODULE:SEND_REQUIREMENTS||{id}||{{}}");
        raw.sink.feed(Bytes::from(frame)).await.unwrap();
        raw.sink.flush().await.unwrap();
        match tokio::time::timeout(WAIT, raw.stream.recv()).await {
            Ok(Ok(Incoming::Text(text))) => assert_eq!(
                String::from_utf8_lossy(&text),
                format!("__ack_MODULE:SEND_REQUIREMENTS||{id}||ok")
            ),
            other => panic!("no ack for id {id}: {other:?}"),
        }
    }
}
