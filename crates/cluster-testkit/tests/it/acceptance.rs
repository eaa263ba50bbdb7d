//! The isp-config-service acceptance scenario: two instances of A; B requires A and wants
//! routes and config; B's config is updated; one A leaves. B must get 2 configs, 2 host lists
//! and 3 routing tables, each in the right order. Run on the in-memory transport and on a real
//! WebSocket on 127.0.0.1.

use crate::common::{
    Client, WAIT, addresses, ready_instance, ready_payload, requirements_payload, routes,
    schema_payload,
};
use cluster_proto::event;
use cluster_testkit::{Direction, FakeConfigService};
use cluster_transport::Connector;
use std::sync::Arc;

async fn scenario(service: &FakeConfigService, connector: Arc<dyn Connector>, host: &str) {
    let a1 = ready_instance(&connector, host, "A", "10.0.0.1").await;
    let a2 = ready_instance(&connector, host, "A", "10.0.0.2").await;
    service.wait_ready_instances("A", 2, WAIT).await.unwrap();

    let mut b = Client::connect(&connector, host, "B").await;
    let ack = b
        .ack(
            event::MODULE_SEND_CONFIG_SCHEMA,
            schema_payload(r#"{"someString":"initial"}"#).as_bytes(),
        )
        .await;
    assert_eq!(ack, "ok");
    // The config arrived before the ack.
    let first = b.try_next().expect("config before the schema ack");
    assert_eq!(first.name, event::CONFIG_SEND_CONFIG_WHEN_CONNECTED);
    assert_eq!(first.text(), r#"{"someString":"initial"}"#);

    let ack = b
        .ack(
            event::MODULE_SEND_REQUIREMENTS,
            requirements_payload(&["A"], true).as_bytes(),
        )
        .await;
    assert_eq!(ack, "ok");
    let ack = b
        .ack(
            event::MODULE_READY,
            ready_payload("B", "10.0.0.3", "8000").as_bytes(),
        )
        .await;
    assert_eq!(ack, "ok");

    let change = service
        .set_config("B", r#"{"someString":"changed"}"#, Some(1))
        .unwrap();
    assert_eq!(
        (change.version, change.changed, change.notified),
        (2, true, 1)
    );

    a2.close().await;
    service.wait_ready_instances("A", 1, WAIT).await.unwrap();
    b.barrier().await;

    let mut events = vec![first];
    events.extend(b.drain());
    let of = |name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.name == name)
            .map(crate::common::Event::text)
            .collect()
    };
    let configs: Vec<String> = events
        .iter()
        .filter(|e| e.name.starts_with("CONFIG:SEND_CONFIG"))
        .map(|e| format!("{} {}", e.name, e.text()))
        .collect();
    assert_eq!(
        configs,
        [
            r#"CONFIG:SEND_CONFIG_WHEN_CONNECTED {"someString":"initial"}"#,
            r#"CONFIG:SEND_CONFIG_CHANGED {"someString":"changed"}"#,
        ]
    );
    assert_eq!(
        of("A_MODULE_CONNECTED"),
        [
            addresses(&[("10.0.0.2", "9999"), ("10.0.0.1", "9999")]),
            addresses(&[("10.0.0.1", "9999")]),
        ]
    );
    let tables: Vec<String> = events
        .iter()
        .filter(|e| e.name.starts_with("CONFIG:SEND_ROUTES"))
        .map(|e| format!("{} {}", e.name, e.text()))
        .collect();
    assert_eq!(
        tables,
        [
            format!(
                "CONFIG:SEND_ROUTES_WHEN_CONNECTED {}",
                routes(&[("A", "10.0.0.2", "9999"), ("A", "10.0.0.1", "9999")])
            ),
            format!(
                "CONFIG:SEND_ROUTES_CHANGED {}",
                routes(&[
                    ("B", "10.0.0.3", "8000"),
                    ("A", "10.0.0.2", "9999"),
                    ("A", "10.0.0.1", "9999")
                ])
            ),
            format!(
                "CONFIG:SEND_ROUTES_CHANGED {}",
                routes(&[("B", "10.0.0.3", "8000"), ("A", "10.0.0.1", "9999")])
            ),
        ]
    );
    assert_eq!(events.len(), 7, "nothing else: {events:#?}");

    // The service recorded the same, in the same order, for B's connection.
    let b_id = service.connections("B")[0].id;
    let sent: Vec<String> = service
        .sent(b_id)
        .into_iter()
        .filter(|f| f.direction() == Direction::Sent)
        .map(|f| f.event().to_owned())
        .collect();
    let received: Vec<String> = events.iter().map(|e| e.name.clone()).collect();
    assert_eq!(sent, received);

    // The routing table the service holds is the last one sent.
    let table: Vec<String> = service
        .routing_table()
        .into_iter()
        .map(|i| i.declaration.address.to_string())
        .collect();
    assert_eq!(table, ["10.0.0.3:8000", "10.0.0.1:9999"]);
    a1.close().await;
    b.close().await;
    service.wait_connections("B", 0, WAIT).await.unwrap();
    assert!(service.routing_table().is_empty());
}

#[tokio::test]
async fn acceptance_in_memory() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::memory(&service);
    scenario(&service, connector, &host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_over_websocket() {
    let service = FakeConfigService::new();
    let (connector, host) = crate::common::ws(&service).await;
    scenario(&service, connector, &host).await;
}
