//! Logs: unknown events are logged, configs only masked, one span per session. In a test
//! binary of its own: the capturing subscriber is per thread, and tracing caches callsite
//! interest process-wide, so other tests on other threads could hide spans from it.

mod common;

use cluster_client::transport::conn::{Handlers, Reply};
use cluster_client::{Client, EventHandler};
use common::*;

#[tokio::test(start_paused = true)]
async fn unknown_events_are_logged_and_configs_only_masked() {
    let (logs, _guard) = Logs::capture();
    let server = scripted(|events| {
        Handlers::new().on_unknown(move |conn, name, _data| {
            record(&events, conn, name);
            if name == "MODULE:SEND_CONFIG_SCHEMA" {
                let _ = conn.emit("SOMETHING_NEW", b"surprise");
                let _ = conn.emit(
                    "CONFIG:SEND_CONFIG_WHEN_CONNECTED",
                    br#"{"db":{"password":"p@ss","host":"dbhost"},"token":"t0k3n"}"#,
                );
            }
            Reply::ack("ok")
        })
    });
    let configs = Configs::new();
    let client = Client::builder(
        module("B", "10.0.0.2"),
        config_data(r#"{"db":{"password":"p@ss","host":"dbhost"},"token":"t0k3n"}"#),
        [server.host.clone()],
    )
    .connector_arc(server.connector.clone())
    .build()
    .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(configs.clone()),
    );
    wait_ready(&client).await;
    assert!(
        configs.all()[0].contains("p@ss"),
        "the application gets the real config"
    );
    client.close().await;
    run.await.unwrap().unwrap();

    let text = logs.text();
    assert!(
        text.contains("unexpected event from config service"),
        "{text}"
    );
    assert!(text.contains("SOMETHING_NEW"), "{text}");
    assert!(text.contains(r#""password":"***""#), "{text}");
    assert!(text.contains("dbhost"), "non-secret values stay: {text}");
    assert!(
        !text.contains("p@ss") && !text.contains("t0k3n"),
        "secrets leaked: {text}"
    );
    // INFO names the config (size and fingerprint); its masked content is for DEBUG only.
    let received = text
        .lines()
        .find(|l| l.contains("remote config received"))
        .unwrap_or_else(|| panic!("no config line: {text}"));
    assert!(received.contains(" INFO "), "{received}");
    assert!(
        received.contains("bytes=58") && received.contains("hash="),
        "{received}"
    );
    assert!(
        !received.contains("dbhost"),
        "no content at INFO: {received}"
    );
    let content = text
        .lines()
        .find(|l| l.contains("remote config content"))
        .unwrap_or_else(|| panic!("no content line: {text}"));
    assert!(
        content.contains(" DEBUG ") && content.contains(r#""password":"***""#),
        "{content}"
    );
    assert!(text.contains("session_id"), "one span per session: {text}");
    assert!(text.contains("event_id"), "an id per event: {text}");

    // Masking can be extended at run time.
    client.secret_masker().add("host");
    assert!(client.secret_masker().is_secret_key("dbHost"));
}

#[tokio::test(start_paused = true)]
async fn logs_name_the_routes_size_and_the_in_memory_scheme() {
    let (logs, _guard) = Logs::capture();
    let (service, listener) = service();
    let _b = service
        .declare_instance(cluster_testkit::declared::instance(
            "B",
            "10.0.0.2",
            "9000",
            &[],
        ))
        .await
        .unwrap();
    let client = Client::builder(module("A", "10.0.0.1"), config_data("{}"), [listener.url()])
        .connector_arc(listener.connector.clone())
        .build()
        .unwrap();
    let recorder = Recorder::<cluster_client::RoutingConfig>::new();
    let run = spawn_run(
        &client,
        EventHandler::new().routes_receiver(recorder.clone()),
    );
    wait_ready(&client).await;
    let table = recorder.wait_len(1).await.remove(0);
    close_and_join(&client, run).await;

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("routes received"))
        .unwrap_or_else(|| panic!("no routes line: {text}"));
    assert!(
        line.contains(&format!("instances={}", table.len())),
        "{line}"
    );
    assert!(line.contains("bytes="), "a byte count says so: {line}");
    assert!(!line.contains(" len="), "{line}");
    assert!(
        text.contains("host=mem://fake-config-service:"),
        "the in-memory scheme: {text}"
    );
    assert!(!text.contains("host=ws://"), "{text}");
}
