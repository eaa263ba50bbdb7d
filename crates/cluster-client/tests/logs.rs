//! Logs: unknown events are logged, configs only masked, one span per session. In a test
//! binary of its own: the capturing subscriber is per thread, and tracing caches callsite
//! interest process-wide, so other tests on other threads could hide spans from it.

mod common;

use cluster_client::{Client, EventHandler};
use cluster_etp::{Handlers, Reply};
use cluster_testkit::ErrorEvent;
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

/// How many lines of `text` contain `what`.
fn count(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_unknown_events_writes_a_bounded_number_of_warnings() {
    let (logs, _guard) = Logs::capture();
    let server = scripted(|events| {
        Handlers::new().on_unknown(move |conn, name, _data| {
            record(&events, conn, name);
            match name {
                "MODULE:SEND_CONFIG_SCHEMA" => {
                    let _ = conn.emit("CONFIG:SEND_CONFIG_WHEN_CONNECTED", b"{}");
                }
                "MODULE:READY" => {
                    for _ in 0..10_000 {
                        let _ = conn.emit("FLOOD", b"x");
                    }
                    // Events are handled in order: once this one is applied, the flood was read.
                    let _ = conn.emit("CONFIG:SEND_CONFIG_CHANGED", br#"{"after":"flood"}"#);
                }
                _ => {}
            }
            Reply::ack("ok")
        })
    });
    let configs = Configs::new();
    let client = server.client("B", "10.0.0.2");
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(configs.clone()),
    );
    wait_ready(&client).await;
    configs.wait_len(2).await;
    client.close().await;
    run.await.unwrap().unwrap();

    let text = logs.text();
    let warned = count(&text, "unexpected event from config service");
    assert!(warned <= 5, "{warned} warnings for 10,000 unknown events");
    assert!(
        text.contains("suppressed=9995"),
        "a summary counts the rest"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_error_events_writes_a_bounded_number_of_lines() {
    let (logs, _guard) = Logs::capture();
    let (service, listener) = service();
    let configs = Configs::new();
    let client = builder(&listener, module("B", "10.0.0.2"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(configs.clone()),
    );
    wait_ready(&client).await;
    let long = "e".repeat(2_000);
    for _ in 0..10_000 {
        service.send_error("B", ErrorEvent::Config, &long);
    }
    // Events are handled in order: once this config is applied, the flood was read.
    service
        .set_config("B", r#"{"after":"flood"}"#, None)
        .unwrap();
    configs.wait_len(2).await;
    client.close().await;
    run.await.unwrap().unwrap();

    let text = logs.text();
    let errors = count(&text, "error event from config service");
    assert!(errors <= 5, "{errors} lines for 10,000 error events");
    assert!(
        text.contains("suppressed=9995"),
        "a summary counts the rest"
    );
    assert!(
        !text.contains(&"e".repeat(300)),
        "a peer's text is cut before it is logged"
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_frames_are_logged_and_the_session_goes_on() {
    let (logs, _guard) = Logs::capture();
    let server = scripted(|events| {
        Handlers::new().on_unknown(move |conn, name, _data| {
            record(&events, conn, name);
            if name == "MODULE:SEND_CONFIG_SCHEMA" {
                let _ = conn.emit_encoded(bytes::Bytes::from_static(b"not a frame"));
                let _ = conn.emit_encoded(bytes::Bytes::from_static(b"X||-1||{}"));
            }
            Reply::ack("ok")
        })
    });
    let client = server.client("B", "10.0.0.2");
    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    client.close().await;
    run.await.unwrap().unwrap();
    let text = logs.text();
    let malformed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("malformed frame from config service"))
        .collect();
    assert_eq!(malformed.len(), 2, "{text}");
    assert!(malformed[0].contains(" WARN "), "{text}");
    assert!(malformed[1].contains("invalid ack id"), "{text}");
}
