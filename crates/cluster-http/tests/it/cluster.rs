//! An HTTP module in a cluster (the testkit's fake config service, in memory): what it
//! declares, a second module calling it at the address the cluster delivers, and the server
//! stopping after the module left.

use cluster_client::{
    AddressConfiguration, Client, ConfigData, EventHandler, HTTP_TRANSPORT, ModuleInfo,
};
use cluster_http::{HttpClient, Server};
use cluster_testkit::{FakeConfigService, MemoryListener};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn client(listener: &MemoryListener, module: ModuleInfo) -> Client {
    let config = ConfigData::from_json("1.0.0", "{}", "{}").unwrap();
    Client::builder(module, config, [listener.url()])
        .connector_arc(listener.connector.clone())
        .build()
        .unwrap()
}

fn module(name: &str) -> ModuleInfo {
    ModuleInfo {
        module_name: name.to_owned(),
        module_version: "1.0.0".to_owned(),
        lib_version: cluster_client::LIB_VERSION.to_owned(),
        ..ModuleInfo::default()
    }
}

#[tokio::test]
async fn an_http_module_declares_its_methods_and_serves_until_it_left() {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();

    // The order a module follows: listener, declaration, cluster client, server.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let router = crate::common::router();
    let orders = client(
        &listener,
        ModuleInfo {
            transport: HTTP_TRANSPORT.to_owned(),
            endpoints: router.descriptors(),
            grpc_outer_address: AddressConfiguration::new("127.0.0.1", port.to_string()),
            ..module("orders")
        },
    );
    let server = Server::builder(router)
        .shutdown_with(&orders)
        .serve(tcp)
        .unwrap();
    let run = tokio::spawn({
        let orders = orders.clone();
        async move { orders.run(EventHandler::new()).await }
    });

    let ready = service
        .wait_ready_instances("orders", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(ready[0].transport, "http");
    let declared: Vec<(String, String)> = ready[0]
        .endpoints
        .iter()
        .map(|e| (e.http_method.clone(), e.path.clone()))
        .collect();
    assert!(
        declared.contains(&("POST".into(), "echo/json".into())),
        "{declared:?}"
    );
    assert!(
        declared.contains(&("POST".into(), "/orders/create".into())),
        "{declared:?}"
    );
    assert!(
        declared.contains(&("GET".into(), "orders/whoami".into())),
        "{declared:?}"
    );
    assert!(
        declared.contains(&("PUT".into(), "orders/raw".into())),
        "{declared:?}"
    );
    // On the wire, as isp-config-service reads it.
    let frame = service
        .received("orders")
        .into_iter()
        .find(|f| f.event() == "MODULE:READY")
        .unwrap();
    let payload: Value = serde_json::from_slice(frame.data()).unwrap();
    assert_eq!(payload["transport"], "http");
    assert!(
        payload["endpoints"]
            .as_array()
            .unwrap()
            .contains(&json!({"path": "echo/json", "inner": false, "userAuthRequired": false, "httpMethod": "POST", "extra": null})),
        "{payload}"
    );

    // Another module requires `orders` and calls it where the cluster says it is.
    let caller = HttpClient::default();
    let gateway = client(&listener, module("gateway"));
    let gateway_run = tokio::spawn({
        let gateway = gateway.clone();
        let handler = EventHandler::new().require_module("orders", caller.clone());
        async move { gateway.run(handler).await }
    });
    let hosts = tokio::time::timeout(WAIT, caller.wait_for(1))
        .await
        .unwrap();
    assert_eq!(&*hosts, [format!("127.0.0.1:{port}")]);
    let echoed: Value = caller
        .post("echo/json")
        .json_body(&json!({"x": 1}))
        .json()
        .await
        .unwrap();
    assert_eq!(echoed, json!({"x": 1}));

    // `orders` leaves the cluster; then its server stops.
    orders.close().await;
    run.await.unwrap().unwrap();
    tokio::time::timeout(WAIT, server.wait())
        .await
        .unwrap()
        .unwrap();
    gateway.close().await;
    gateway_run.await.unwrap().unwrap();
}
