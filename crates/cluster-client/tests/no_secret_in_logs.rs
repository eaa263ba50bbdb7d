//! No secret reaches a log, at any level, from our code or a dependency's: the client and the
//! fake config service run over real WebSocket under a global subscriber at TRACE
//! with the `log` bridge on (so whatever a dependency logs through the `log` facade is caught),
//! over configs full of canary secrets, and nothing written may contain a canary, as text or
//! as hex. In a test binary of its own: the subscriber and the `log` bridge are process-wide.

mod common;

use cluster_client::transport::ws::{WsConfig, WsConnector};
use cluster_client::{Client, ConfigData, Connector, Endpoint, EventHandler};
use cluster_etp::{Conn, ConnConfig, Handlers};
use cluster_testkit::logs::CapturedLogs;
use common::*;

/// Each canary is a secret value somewhere in a config; none may be logged.
const CANARIES: [&str; 9] = [
    "CanaryPassw0rdOne",
    "CanaryArraySecretTwo",
    "CanaryApiKeyThree",
    "CanaryPrivateKeyFour",
    "CanaryNestedTokenFive",
    "CanaryChangedSecretSix",
    "CanaryMalformedSeven",
    "CanaryRefusedEight",
    "CanaryCredentialNine",
];

const SCHEMA: &str = r#"{"type":"object","properties":{
    "db":{"type":"object","properties":{"password":{"type":"string","maxLength":40}}}}}"#;

fn default_config() -> String {
    format!(
        r#"{{"db":{{"host":"db.local","password":"{}"}},
            "clientSecrets":["{}",{{"x":"y"}}],
            "apiKey":"{}","tls":{{"private_key":"{}"}},
            "deep":{{"deeper":{{"authToken":"{}"}}}},
            "credentials":{{"user":"u","pass":"{}"}},"workers":4}}"#,
        CANARIES[0], CANARIES[1], CANARIES[2], CANARIES[3], CANARIES[4], CANARIES[8]
    )
}

fn hex(text: &str) -> [String; 2] {
    let lower: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    [lower.clone(), lower.to_uppercase()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_canary_reaches_any_log_at_trace() {
    let sink = CapturedLogs::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        // Also installs the `log` → `tracing` bridge (tracing-subscriber's `tracing-log`).
        .try_init()
        .expect("the only subscriber of this test binary");
    assert!(log::log_enabled!(log::Level::Trace), "the log bridge is on");

    let service = cluster_testkit::FakeConfigService::new();
    let addr = service.listen_ws("127.0.0.1:0").await.unwrap();
    let configs = Configs::new();
    let client = Client::new(
        module("B", "127.0.9.2"),
        ConfigData::from_json("1.0.0", SCHEMA, default_config()).unwrap(),
        [addr.to_string()],
    )
    .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(configs.clone()),
    );
    wait_ready(&client).await;
    assert!(configs.wait_len(1).await[0].contains(CANARIES[0]));

    // A change, applied.
    let changed = format!(r#"{{"db":{{"password":"{}"}},"workers":5}}"#, CANARIES[5]);
    service.set_config("B", changed.clone(), None).unwrap();
    assert!(configs.wait_len(2).await[1].contains(CANARIES[5]));

    // A module whose schema message is not JSON, with a secret beside a `password` key: the
    // service refuses it, and neither side logs the bytes.
    let connector = WsConnector::new(WsConfig::default()).unwrap();
    let endpoint: Endpoint = addr.to_string().parse().unwrap();
    let transport = connector.connect(&endpoint, "C").await.unwrap();
    let conn = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
    let malformed = format!(
        r#"{{"version":"1","schema":{{}},"config":{{"password":"{}", "workers": oops"#,
        CANARIES[6]
    );
    let answer = conn
        .emit_with_ack("MODULE:SEND_CONFIG_SCHEMA", malformed.as_bytes())
        .await
        .unwrap();
    assert_ne!(&answer[..], b"ok", "refused");
    conn.close(1000, "done").await;

    // A config the schema refuses: the refusal names the path and the rule, not the value.
    let refused = format!(
        r#"{{"db":{{"password":"{}{}"}}}}"#,
        CANARIES[7],
        "x".repeat(40)
    );
    let err = service.set_config("B", refused.clone(), None).unwrap_err();
    assert!(!err.to_string().contains(CANARIES[7]), "{err}");

    close_and_join(&client, run).await;
    service.wait_connections("B", 0, WAIT).await.unwrap();

    let logs = sink.text();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the capture works at low levels: {logs}"
    );
    assert!(logs.contains("db.local"), "configs are logged, masked");
    for canary in CANARIES {
        assert!(!logs.contains(canary), "{canary} leaked:\n{logs}");
        for hex in hex(canary) {
            assert!(!logs.contains(&hex), "{canary} leaked as hex:\n{logs}");
        }
    }
}
