//! Ready instances declared without a client reach the modules that require them.

use cluster_etp::{Conn, ConnConfig, Handlers};
use cluster_proto::event;
use cluster_testkit::FakeConfigService;
use cluster_testkit::declared::{DeclareError, instance};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn a_declared_instance_is_routed_and_announced_until_removed() {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    // A module that requires `auth` and wants routes, as a raw connection.
    let transport = listener
        .connector
        .connect(&listener.endpoint(), "orders")
        .await
        .unwrap();
    let orders = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
    let ack = orders
        .emit_with_ack(
            event::MODULE_SEND_REQUIREMENTS,
            br#"{"requiredModules":["auth"],"requireRoutes":true}"#,
        )
        .await
        .unwrap();
    assert_eq!(&ack[..], b"ok");

    let auth = service
        .declare_instance(instance("auth", "10.0.0.7", "9000", &["auth/api/login"]))
        .await
        .unwrap();
    assert_eq!(auth.declaration().module_name, "auth");
    let ready = service.wait_ready_instances("auth", 1, WAIT).await.unwrap();
    assert_eq!(ready[0].address.to_string(), "10.0.0.7:9000");
    assert_eq!(ready[0].endpoints[0].path, "auth/api/login");
    let sent = service
        .wait_events("orders", "auth_MODULE_CONNECTED", 2, WAIT)
        .await
        .unwrap();
    assert_eq!(sent[1].text(), r#"[{"ip":"10.0.0.7","port":"9000"}]"#);
    assert!(
        service
            .routing_table()
            .iter()
            .any(|i| i.declaration.module_name == "auth")
    );

    auth.remove().await;
    service.wait_ready_instances("auth", 0, WAIT).await.unwrap();
    let sent = service
        .wait_events("orders", "auth_MODULE_CONNECTED", 3, WAIT)
        .await
        .unwrap();
    assert_eq!(sent[2].text(), "[]");

    // Dropping the handle removes it too.
    let dropped = service
        .declare_instance(instance("auth", "10.0.0.8", "9000", &[]))
        .await
        .unwrap();
    service.wait_ready_instances("auth", 1, WAIT).await.unwrap();
    drop(dropped);
    service.wait_ready_instances("auth", 0, WAIT).await.unwrap();
    orders.close(1000, "done").await;
}

#[tokio::test(start_paused = true)]
async fn declaring_listens_in_memory_when_needed_and_checks_the_name() {
    let service = FakeConfigService::new();
    let err = service
        .declare_instance(instance("a||b", "10.0.0.7", "9000", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, DeclareError::ModuleName { .. }), "{err}");
    assert!(
        service.listeners().is_empty(),
        "nothing done for a bad name"
    );
    let ok = service
        .declare_instance(instance("auth", "10.0.0.7", "9000", &[]))
        .await
        .unwrap();
    assert_eq!(service.listeners().len(), 1);
    assert!(service.listeners()[0].starts_with("mem://"));
    // A second one reuses the listener.
    let _two = service
        .declare_instance(instance("auth", "10.0.0.9", "9000", &[]))
        .await
        .unwrap();
    assert_eq!(service.listeners().len(), 1);
    service.wait_ready_instances("auth", 2, WAIT).await.unwrap();
    ok.remove().await;
}
