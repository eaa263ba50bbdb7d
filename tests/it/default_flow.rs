//! The `default_flow` example's own code (compiled into this test from
//! `examples/default_flow.rs`) against the fake config service on loopback WebSocket: what it
//! registers, what its receivers and balancer get, and its shutdown.

#[allow(dead_code)]
#[path = "../../examples/default_flow.rs"]
mod example;

use cluster_client::typed::json_schema_for;
use cluster_client::{AddressConfiguration, Client, ConfigData, EventHandler, ModuleInfo};
use cluster_examples::Signal;
use cluster_testkit::FakeConfigService;
use example::{AUTH_SERVICE, Application, MODULE_NAME, OUTER_ADDRESS, RemoteConfig};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_default_flow_registers_receives_balances_and_shuts_down() {
    let service = FakeConfigService::new();
    let host = service.listen_ws("127.0.0.1:0").await.unwrap().to_string();

    // auth-service is up first, at 127.0.0.7:9100.
    let auth = Client::new(
        ModuleInfo {
            module_name: AUTH_SERVICE.to_owned(),
            module_version: "1.0.0".to_owned(),
            lib_version: "0.1.0".to_owned(),
            grpc_outer_address: AddressConfiguration::new("127.0.0.7", "9100"),
            ..ModuleInfo::default()
        },
        ConfigData::from_json("1.0.0", r#"{"type":"object"}"#, "{}").unwrap(),
        [host.clone()],
    )
    .unwrap();
    let auth_run = tokio::spawn({
        let auth = auth.clone();
        async move { auth.run(EventHandler::new()).await }
    });
    service
        .wait_ready_instances(AUTH_SERVICE, 1, WAIT)
        .await
        .unwrap();

    let app = Application::start(vec![host]).unwrap();
    let auth_balancer = app.auth_service.clone();
    let mut config = app.config.clone();
    let client = app.client.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
        Signal::Terminate
    }));

    // MODULE:READY: the endpoint, the required module, the outer address.
    let ready = service
        .wait_ready_instances(MODULE_NAME, 1, WAIT)
        .await
        .unwrap();
    let ready: Value = serde_json::from_slice(&ready[0].to_json()).unwrap();
    assert_eq!(
        ready["endpoints"],
        json!([{"path":"/api/foo","inner":false,"userAuthRequired":false,"extra":null}])
    );
    assert_eq!(
        ready["requiredModules"],
        json!([{"name":"auth-service","required":true}])
    );
    assert_eq!(
        ready["address"],
        json!({"ip": OUTER_ADDRESS.0, "port": OUTER_ADDRESS.1})
    );
    // The service stores the declaration before the client reads its ack: wait for ready.
    let mut state = client.state();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.is_ready()))
        .await
        .unwrap()
        .unwrap();
    client.healthcheck().unwrap();

    // The schema derived from the type, and the default config the service stored.
    let schema: Value =
        serde_json::from_slice(&service.schema(MODULE_NAME).unwrap().schema).unwrap();
    assert_eq!(schema, json_schema_for::<RemoteConfig>());
    assert_eq!(schema["properties"]["maxConcurrency"]["type"], "integer");
    let stored = service.active_config(MODULE_NAME).unwrap();
    assert_eq!(
        stored.json(),
        json!({"logLevel":"info","maxConcurrency":16})
    );

    // Requirements: auth-service and the routes.
    let requirements = service
        .wait_event(MODULE_NAME, "MODULE:SEND_REQUIREMENTS", WAIT)
        .await
        .unwrap();
    assert_eq!(
        requirements.text(),
        r#"{"requiredModules":["auth-service"],"requireRoutes":true}"#
    );

    // The config receiver applied the default; the balancer has auth-service's address.
    let first = config
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(*first, RemoteConfig::default());
    assert_eq!(auth_balancer.next().unwrap(), "127.0.0.7:9100");

    // auth-service goes away, then an admin changes the config. The service sends this
    // connection its notifications in order (the empty address list, then the config), and
    // the client hands address lists over synchronously, in arrival order, before it looks
    // at the next event: once the new config is applied, the balancer is empty.
    auth.close().await;
    auth_run.await.unwrap().unwrap();
    service
        .wait_ready_instances(AUTH_SERVICE, 0, WAIT)
        .await
        .unwrap();
    service
        .set_config(
            MODULE_NAME,
            r#"{"logLevel":"debug","maxConcurrency":64}"#,
            None,
        )
        .unwrap();
    let changed = config
        .wait_for(|c| c.as_ref().is_some_and(|c| c.max_concurrency == 64))
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(changed.log_level, "debug");
    assert!(auth_balancer.next().is_err());

    // SIGTERM (here: the future standing for it) closes the client and the run ends cleanly.
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(client.is_closed());
    service
        .wait_connections(MODULE_NAME, 0, WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bad_host_is_an_error_before_anything_runs() {
    let err = Application::start(vec!["tcp://127.0.0.1:1".to_owned()])
        .err()
        .expect("a tcp:// host is refused when the client is built");
    assert!(err.to_string().contains("tcp://"), "{err}");
}
