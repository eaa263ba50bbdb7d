//! No payload reaches a log, whatever the subscriber and level.
//!
//! A global `tracing` subscriber at TRACE with the `log` bridge on (tracing-subscriber's
//! `tracing-log` feature installs `tracing_log::LogTracer`, so every `log` record of every
//! dependency lands in it too) captures everything written while canary payloads travel both
//! ways over `ws://` and `wss://`, handshake and close included. No canary may appear: not in
//! plain text, not in hex, not as a list of byte values.
//!
//! The subscriber is global to the process: this file holds this one test only.

mod common;
use bytes::Bytes;
use cluster_transport::tls::{TlsConfig, server_config_from_pem};
use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{Acceptor, Connector, Endpoint, Incoming, Transport};
use common::Captured;
use rcgen::{CertificateParams, KeyPair};

/// The forms a payload takes in a log line: as is, in hex (either case, with or without
/// separators) and as a list of decimal byte values. Searched for case-insensitively.
fn forms(canary: &str) -> Vec<String> {
    let bytes = canary.as_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let spaced: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let decimal: Vec<String> = bytes.iter().map(u8::to_string).collect();
    vec![
        canary.to_lowercase(),
        hex,
        spaced.join(" "),
        spaced.join(", "),
        decimal.join(", "),
    ]
}

/// Sends `canary` one way, then its reply the other way, and closes.
async fn exchange(mut client: Transport, mut server: Transport, canary: &str) {
    let up = Bytes::from(format!("EVENT||1||{{\"secret\":\"{canary}-up\"}}"));
    client.sink.feed(up.clone()).await.unwrap();
    client.sink.flush().await.unwrap();
    assert_eq!(server.stream.recv().await.unwrap(), Incoming::Text(up));

    let down = Bytes::from(format!("__ack_EVENT||1||{canary}-down"));
    server.sink.feed(down.clone()).await.unwrap();
    server.sink.flush().await.unwrap();
    assert_eq!(client.stream.recv().await.unwrap(), Incoming::Text(down));

    let ping = Bytes::from(format!("{canary}-ping"));
    client.sink.ping(ping.clone()).await.unwrap();
    // The server answers the ping while it reads; the close ends its read.
    client
        .sink
        .close(1000, &format!("{canary}-bye"))
        .await
        .unwrap();
    match server.stream.recv().await.unwrap() {
        Incoming::Closed(info) => assert!(info.is_normal()),
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(client.stream.recv().await.unwrap(), Incoming::Pong(ping));
    assert!(matches!(
        client.stream.recv().await.unwrap(),
        Incoming::Closed(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_payload_reaches_any_log_at_trace_with_the_log_bridge() {
    let captured = Captured::default();
    let writer = captured.clone();
    // `init` installs the `log` → `tracing` bridge (LogTracer) at the same max level.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    assert!(
        log::log_enabled!(log::Level::Trace),
        "the log bridge is not on at TRACE"
    );
    log::trace!(target: "bridge-check", "log records reach the subscriber");

    // ws://
    let mut acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
        .await
        .unwrap();
    let endpoint: Endpoint = format!("ws://{}", acceptor.local_addr()).parse().unwrap();
    let client = WsConnector::new(WsConfig::default())
        .unwrap()
        .connect(&endpoint, "plain")
        .await
        .unwrap();
    let server = acceptor.accept().await.unwrap().transport;
    exchange(client, server, "CANARY7QX-plain").await;

    // wss://
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls =
        server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let mut acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default().with_tls(tls))
        .await
        .unwrap();
    let endpoint: Endpoint = format!("wss://{}", acceptor.local_addr()).parse().unwrap();
    let client =
        WsConnector::new(WsConfig::default().with_tls(TlsConfig::custom_ca_pem(cert.pem())))
            .unwrap()
            .connect(&endpoint, "secure")
            .await
            .unwrap();
    let server = acceptor.accept().await.unwrap().transport;
    exchange(client, server, "CANARY7QX-tls").await;

    let text = captured.text().to_lowercase();
    assert!(
        text.contains("log records reach the subscriber"),
        "the capture does not work: {text}"
    );
    for canary in ["CANARY7QX-plain", "CANARY7QX-tls", "CANARY7QX"] {
        for form in forms(canary) {
            assert!(
                !text.contains(&form),
                "a payload reached the log ({canary} as {form:?}):\n{}",
                excerpt(&text, &form)
            );
        }
    }
}

/// The log lines around `needle`, to show what leaked.
fn excerpt(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|line| line.contains(needle))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}
