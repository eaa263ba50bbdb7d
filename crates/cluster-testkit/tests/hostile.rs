//! The fake service against hostile or broken peers: oversized declarations and configs,
//! names that break the wire format, secrets in refused configs, and floods of bad input.
//! Everything runs over the in-memory transport, whose client end has the client's 4 MiB
//! inbound limit.

mod common;

use bytes::Bytes;
use cluster_testkit::logs::CapturedLogs;
use cluster_testkit::state::{DEFAULT_MAX_DECLARATION_LEN, DEFAULT_MAX_FRAME_LEN, frame_len};
use cluster_testkit::{ConfigUpdateError, FakeConfigService, Limits};
use cluster_transport::log_limit::DEFAULT_LOG_BURST;
use cluster_transport::{Endpoint, Incoming};
use common::{Client, WAIT, memory, requirements_payload, schema_payload};

/// A declaration of `module` at `ip` whose JSON is about `len` bytes (the padding is in
/// `version`).
fn fat_ready(module: &str, ip: &str, len: usize) -> String {
    let pad = "v".repeat(len.saturating_sub(150));
    format!(
        r#"{{"moduleName":"{module}","version":"{pad}","libVersion":"1.0.0","endpoints":null,"requiredModules":[],"address":{{"ip":"{ip}","port":"9000"}}}}"#
    )
}

/// Asserts that nothing the service sent (events and acks) is over `max` bytes.
fn assert_frames_within(service: &FakeConfigService, modules: &[String], max: usize) {
    for module in modules {
        for frame in service.sent(module.as_str()) {
            let len = frame_len(frame.event(), frame.data().len());
            assert!(len <= max, "{len} bytes sent: {frame}");
        }
    }
}

#[tokio::test]
async fn a_ready_that_would_take_the_routing_table_over_the_frame_limit_is_refused() {
    let service = FakeConfigService::new();
    let (connector, host) = memory(&service);
    let mut watcher = Client::connect(&connector, &host, "watcher").await;
    assert_eq!(
        watcher
            .ack("MODULE:SEND_REQUIREMENTS", requirements_payload(&[], true))
            .await,
        "ok"
    );
    assert_eq!(
        watcher.expect("CONFIG:SEND_ROUTES_WHEN_CONNECTED").await,
        "[]"
    );

    // The issue's declaration (846 KiB, under the 1 MiB inbound limit) is refused outright.
    let big = Client::connect(&connector, &host, "big").await;
    let ack = big
        .ack("MODULE:READY", fat_ready("big", "10.0.0.1", 846 << 10))
        .await;
    assert!(ack.starts_with("declaration too large"), "{ack}");
    assert!(service.ready_instances("big").is_empty());

    // Declarations just under the cap fill the table until the next would not fit a frame.
    let size = DEFAULT_MAX_DECLARATION_LEN - 1024;
    let fit = DEFAULT_MAX_FRAME_LEN / (size + 1);
    let mut clients = Vec::new();
    let mut modules = vec!["watcher".to_owned(), "big".to_owned()];
    for i in 0..=fit {
        let module = format!("m{i}");
        let client = Client::connect(&connector, &host, &module).await;
        let ack = client
            .ack("MODULE:READY", fat_ready(&module, "10.0.0.2", size))
            .await;
        if i < fit {
            assert_eq!(ack, "ok", "instance {i}");
        } else {
            assert!(ack.starts_with("the routing table would be"), "{ack}");
        }
        clients.push(client);
        modules.push(module);
    }
    assert_eq!(service.routing_table().len(), fit);

    // The watcher got every table; a newcomer that wants routes still gets the table (over
    // 4 MiB, the memory transport would have closed its connection with 1009).
    watcher.barrier().await;
    let tables = watcher.drain();
    assert_eq!(tables.len(), fit);
    let mut late = Client::connect(&connector, &host, "late").await;
    assert_eq!(
        late.ack("MODULE:SEND_REQUIREMENTS", requirements_payload(&[], true))
            .await,
        "ok"
    );
    let table = late.expect("CONFIG:SEND_ROUTES_WHEN_CONNECTED").await;
    assert!(
        table.len() > DEFAULT_MAX_FRAME_LEN - size,
        "{}",
        table.len()
    );
    modules.push("late".to_owned());
    assert_frames_within(&service, &modules, DEFAULT_MAX_FRAME_LEN);

    // An instance that leaves makes room again.
    clients.remove(0).close().await;
    service
        .wait_ready_instances("m0", 0, WAIT)
        .await
        .expect("m0 gone");
    let ack = clients
        .last()
        .expect("the refused one")
        .ack("MODULE:READY", fat_ready("again", "10.0.0.3", size))
        .await;
    assert_eq!(ack, "ok");
}

#[tokio::test]
async fn declarations_are_bounded_in_endpoints_and_address_lists_in_size() {
    let service = FakeConfigService::builder()
        .limits(Limits {
            max_frame_len: 2048,
            ..Limits::default()
        })
        .build();
    let (connector, host) = memory(&service);
    let client = Client::connect(&connector, &host, "a").await;
    let endpoints: Vec<String> = (0..4097).map(|i| format!(r#"{{"path":"/{i}"}}"#)).collect();
    let many = format!(
        r#"{{"moduleName":"a","endpoints":[{}],"address":{{"ip":"1","port":"2"}}}}"#,
        endpoints.join(",")
    );
    let ack = client.ack("MODULE:READY", many).await;
    assert_eq!(ack, "too many endpoints: 4097 (at most 4096)");

    // With a 2 KiB frame limit the address list is checked as well: under a 256-byte module
    // name, `<name>_MODULE_CONNECTED` is the longest frame, and an ever longer address is
    // refused for it first.
    let name = "n".repeat(256);
    let mut dependent = Client::connect(&connector, &host, "b").await;
    dependent
        .ack(
            "MODULE:SEND_REQUIREMENTS",
            requirements_payload(&[&name], false),
        )
        .await;
    let event = format!("{name}_MODULE_CONNECTED");
    assert_eq!(dependent.expect(&event).await, "[]");
    let instance = Client::connect(&connector, &host, &name).await;
    let mut refusal = None;
    for len in (1500..2100).step_by(8) {
        let ip = "1".repeat(len);
        let ready = format!(r#"{{"moduleName":"","address":{{"ip":"{ip}","port":"2"}}}}"#);
        let ack = instance.ack("MODULE:READY", ready).await;
        if ack != "ok" {
            refusal = Some(ack);
            break;
        }
    }
    let refusal = refusal.expect("a refusal");
    assert!(
        refusal.starts_with("the address list would be"),
        "{refusal}"
    );
    assert_eq!(service.ready_instances(&name).len(), 1);
    dependent.barrier().await;
    assert!(!dependent.drain().is_empty());
    assert_frames_within(&service, &[name, "a".into(), "b".into()], 2048);
}

#[tokio::test]
async fn configs_are_held_to_the_frame_limit() {
    let service = FakeConfigService::builder()
        .limits(Limits {
            max_frame_len: 1024,
            ..Limits::default()
        })
        .build();
    let (connector, host) = memory(&service);
    let client = Client::connect(&connector, &host, "a").await;
    // A default config that would come back too large: refused, nothing stored.
    let big = format!(r#"{{"someString":"{}"}}"#, "x".repeat(1000));
    let ack = client
        .ack("MODULE:SEND_CONFIG_SCHEMA", schema_payload(&big))
        .await;
    assert!(ack.starts_with("the config would be"), "{ack}");
    assert!(service.active_config("a").is_none());
    assert_eq!(
        client
            .ack("MODULE:SEND_CONFIG_SCHEMA", schema_payload("{}"))
            .await,
        "ok"
    );
    let err = service.set_config("a", big.clone(), None).unwrap_err();
    assert!(matches!(err, ConfigUpdateError::TooLarge { .. }), "{err}");
    let err = service.set_config_unsafe("a", big, None).unwrap_err();
    assert!(matches!(err, ConfigUpdateError::TooLarge { .. }), "{err}");
    assert_eq!(service.active_config("a").map(|c| c.version), Some(1));
}

#[tokio::test]
async fn names_that_break_the_wire_format_are_refused() {
    let service = FakeConfigService::new();
    let (connector, host) = memory(&service);

    // At the connection: closed with 1008 before any event, not registered.
    for name in ["x||y", "__ack_x", "a\nb"] {
        let client = Client::connect(&connector, &host, name).await;
        let end = client.closed().await;
        assert_eq!(end.close.and_then(|c| c.code), Some(1008), "{name:?}");
    }
    assert!(service.modules().is_empty(), "{:?}", service.modules());

    // In requirements: an error ack, nothing subscribed, nothing sent.
    let mut client = Client::connect(&connector, &host, "ok-module").await;
    for bad in ["x||y", "__ack_z"] {
        let ack = client
            .ack(
                "MODULE:SEND_REQUIREMENTS",
                requirements_payload(&["fine", bad], true),
            )
            .await;
        assert!(ack.starts_with("invalid required module name"), "{ack}");
    }
    client.barrier().await;
    assert_eq!(client.drain(), []);
    let info = &service.connections("ok-module")[0];
    assert!(info.required_modules.is_empty());
    assert!(!info.wants_routes);

    // Configs cannot be stored under such a name either.
    let err = service.set_config_unsafe("x||y", "{}", None).unwrap_err();
    assert!(
        matches!(err, ConfigUpdateError::InvalidModuleName { .. }),
        "{err}"
    );
}

// ----- logs -----

/// Installs a subscriber at `level` on this thread, writing into the returned buffer, for as
/// long as the guard lives.
fn capture(level: tracing::Level) -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

const FLOOD: usize = 10_000;

/// The lines of a flood that ended with the connection: at most the burst of each kind, the
/// connection's own lines, and one summary carrying `suppressed`.
fn assert_bounded(lines: &[String], what: &str, suppressed: usize) {
    let warnings = lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(warnings, DEFAULT_LOG_BURST as usize, "{lines:#?}");
    assert!(lines.len() <= DEFAULT_LOG_BURST as usize + 6, "{lines:#?}");
    let summaries: Vec<&String> = lines.iter().filter(|l| l.contains("suppressed")).collect();
    assert_eq!(summaries.len(), 1, "{lines:#?}");
    assert!(
        summaries[0].contains(&format!("suppressed={suppressed}")),
        "{}",
        summaries[0]
    );
}

#[tokio::test]
async fn a_flood_of_unknown_events_logs_a_few_lines_and_a_count() {
    let (logs, _guard) = capture(tracing::Level::INFO);
    let service = FakeConfigService::builder().recording(false).build();
    let (connector, host) = memory(&service);
    let client = Client::connect(&connector, &host, "flooder").await;
    for _ in 0..FLOOD {
        client.conn.emit("WHAT:IS:THIS", b"{}").unwrap();
    }
    client.barrier().await; // one more unknown event
    client.close().await;
    service
        .wait_connections("flooder", 0, WAIT)
        .await
        .expect("gone");
    let lines = logs.lines();
    assert_bounded(
        &lines,
        "unknown event",
        FLOOD + 1 - DEFAULT_LOG_BURST as usize,
    );
}

#[tokio::test]
async fn a_flood_of_refused_events_logs_a_few_lines_and_a_count() {
    let (logs, _guard) = capture(tracing::Level::INFO);
    let service = FakeConfigService::builder().recording(false).build();
    let (connector, host) = memory(&service);
    let client = Client::connect(&connector, &host, "flooder").await;
    for _ in 0..FLOOD {
        client.conn.emit("MODULE:READY", b"{not json").unwrap();
    }
    assert!(
        client
            .ack("MODULE:READY", b"{")
            .await
            .starts_with("unmarshal event data")
    );
    client.close().await;
    service
        .wait_connections("flooder", 0, WAIT)
        .await
        .expect("gone");
    assert_bounded(
        &logs.lines(),
        "module event refused",
        FLOOD + 1 - DEFAULT_LOG_BURST as usize,
    );
}

#[tokio::test]
async fn a_flood_of_malformed_frames_logs_a_few_lines_and_a_count() {
    let (logs, _guard) = capture(tracing::Level::INFO);
    let service = FakeConfigService::builder().recording(false).build();
    let (connector, host) = memory(&service);
    let endpoint: Endpoint = host.parse().unwrap();
    let mut peer = connector.connect(&endpoint, "flooder").await.unwrap();
    for i in 0..FLOOD {
        peer.sink
            .feed(Bytes::from(format!("garbage {i}")))
            .await
            .unwrap();
    }
    peer.sink
        .feed(Bytes::from_static(b"SYNC||1||x"))
        .await
        .unwrap();
    peer.sink.flush().await.unwrap();
    loop {
        match peer.stream.recv().await.unwrap() {
            Incoming::Text(text) if text.starts_with(b"__ack_SYNC||1") => break,
            _ => {}
        }
    }
    peer.sink.close(1000, "bye").await.unwrap();
    service
        .wait_connections("flooder", 0, WAIT)
        .await
        .expect("gone");
    let lines = logs.lines();
    // The unknown SYNC event shares the connection's limiter, and the burst was used up.
    assert_bounded(
        &lines,
        "bad input from a module",
        FLOOD + 1 - DEFAULT_LOG_BURST as usize,
    );
}

// ----- secrets -----

const SECRET_SCHEMA: &str = r#"{"version":"1","schema":{"type":"object","properties":{"password":{"type":"string","minLength":20},"name":{"type":"string"},"port":{"type":"integer"}}},"config":{}}"#;

#[tokio::test]
async fn a_refused_config_is_reported_by_place_and_rule_never_by_value() {
    let (logs, _guard) = capture(tracing::Level::DEBUG);
    let service = FakeConfigService::new();
    let (connector, host) = memory(&service);
    let client = Client::connect(&connector, &host, "svc").await;
    assert_eq!(
        client.ack("MODULE:SEND_CONFIG_SCHEMA", SECRET_SCHEMA).await,
        "ok"
    );
    let err = service
        .set_config(
            "svc",
            r#"{"password":"hunter2-SECRET","port":"secret-port-9"}"#,
            None,
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("secret-port"),
        "{text}"
    );
    let ConfigUpdateError::Invalid { issues, .. } = &err else {
        panic!("{err:?}");
    };
    let mut found: Vec<(&str, &str)> = issues
        .iter()
        .map(|i| (i.instance_path.as_str(), i.rule.as_str()))
        .collect();
    found.sort_unstable();
    assert_eq!(found, [("/password", "minLength"), ("/port", "type")]);
    assert!(text.contains("shorter than 20 characters"), "{text}");

    // An accepted change: version, size and hash at INFO; the masked content at DEBUG only.
    let config = r#"{"password":"correct-horse-battery-staple","name":"visible-name"}"#;
    service.set_config("svc", config, None).unwrap();
    let logs = logs.text();
    assert!(
        !logs.contains("hunter2") && !logs.contains("secret-port"),
        "{logs}"
    );
    assert!(!logs.contains("correct-horse"), "{logs}");
    let info = logs
        .lines()
        .find(|l| l.contains(" INFO ") && l.contains("config set"))
        .expect("the INFO line");
    assert!(
        info.contains(&format!("size={}", config.len())) && info.contains("hash="),
        "{info}"
    );
    assert!(!info.contains("visible-name"), "{info}");
    let debug = logs
        .lines()
        .find(|l| l.contains("DEBUG") && l.contains("secrets masked"))
        .expect("the DEBUG line");
    assert!(debug.contains("visible-name"), "{debug}");
}
