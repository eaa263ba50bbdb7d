//! Hostile clients of the WebSocket server: malformed upgrade requests get an HTTP
//! status (400 / 426 / 431 / 404), pending sockets are capped, and a slowloris that trickles
//! its request runs into the handshake timeout. Each over a raw TCP socket.

use cluster_transport::ws::{
    MAX_REQUEST_HEAD, PendingHandshakes, WsAcceptor, WsConfig, WsConnector, WsServerConfig,
};
use cluster_transport::{Acceptor, Connector, Endpoint};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A safety net for awaits that should complete at once: a hang fails instead of blocking.
const WAIT: Duration = Duration::from_secs(10);

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

async fn acceptor(config: WsServerConfig) -> (WsAcceptor, SocketAddr) {
    let acceptor = WsAcceptor::bind("127.0.0.1:0", config).await.unwrap();
    let addr = acceptor.local_addr();
    (acceptor, addr)
}

/// An upgrade request for `target` with `headers` (each ending in CRLF) after `Host`.
fn request(target: &str, headers: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n")
}

fn upgrade_headers(version: &str) -> String {
    format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: {version}\r\n"
    )
}

/// Writes `request` on a fresh socket and reads the whole answer (the server closes after a
/// refusal).
async fn answer(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server neither answered nor closed")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

async fn a_real_client_connects(acceptor: &mut WsAcceptor, addr: SocketAddr) {
    let endpoint: Endpoint = format!("ws://{addr}").parse().unwrap();
    let _client = WsConnector::new(WsConfig::default())
        .unwrap()
        .connect(&endpoint, "real")
        .await
        .unwrap();
    let accepted = tokio::time::timeout(WAIT, acceptor.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.module_name, "real");
}

#[tokio::test]
async fn malformed_upgrade_requests_get_an_http_status() {
    let (mut acceptor, addr) = acceptor(WsServerConfig::default()).await;
    let v13 = upgrade_headers("13");
    let long_name = "m".repeat(300);
    let huge_name = "m".repeat(MAX_REQUEST_HEAD + 1);
    let many_headers: String = (0..200).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "module name over 256 bytes",
            request(&format!("/isp-etp/?module_name={long_name}"), &v13),
            "HTTP/1.1 400 Bad Request",
            "invalid module_name",
        ),
        (
            "module name with the frame separator",
            request("/isp-etp/?module_name=a%7C%7Cb", &v13),
            "HTTP/1.1 400 Bad Request",
            "invalid module_name",
        ),
        (
            "module name with the ack prefix",
            request("/isp-etp/?module_name=__ack_x", &v13),
            "HTTP/1.1 400 Bad Request",
            "invalid module_name",
        ),
        (
            "module name with a control character",
            request("/isp-etp/?module_name=a%0Ab", &v13),
            "HTTP/1.1 400 Bad Request",
            "invalid module_name",
        ),
        (
            "no module name",
            request("/isp-etp/", &v13),
            "HTTP/1.1 400 Bad Request",
            "module_name is required",
        ),
        (
            "a request head over the limit (huge module name)",
            request(&format!("/isp-etp/?module_name={huge_name}"), &v13),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "request head over",
        ),
        (
            "200 headers",
            request("/isp-etp/?module_name=m", &format!("{v13}{many_headers}")),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "header fields",
        ),
        (
            "wrong WebSocket version",
            request("/isp-etp/?module_name=m", &upgrade_headers("8")),
            "HTTP/1.1 426 Upgrade Required",
            "Sec-WebSocket-Version: 13",
        ),
        (
            "no Sec-WebSocket-Key",
            request(
                "/isp-etp/?module_name=m",
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            ),
            "HTTP/1.1 400 Bad Request",
            "Sec-WebSocket-Key",
        ),
        (
            "a plain GET",
            request("/isp-etp/?module_name=m", ""),
            "HTTP/1.1 400 Bad Request",
            "not a WebSocket upgrade",
        ),
        (
            "not HTTP at all",
            "\x16\x03\x01 definitely not HTTP\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
            "malformed HTTP request",
        ),
        (
            "a wrong path",
            request("/elsewhere?module_name=m", &v13),
            "HTTP/1.1 404 Not Found",
            "ETP is served on /isp-etp/",
        ),
    ];
    for (what, request, expected_status, expected_text) in cases {
        let answer = answer(addr, request.as_bytes()).await;
        assert_eq!(status(&answer), expected_status, "{what}: {answer}");
        assert!(answer.contains(expected_text), "{what}: {answer}");
    }
    a_real_client_connects(&mut acceptor, addr).await;
}

/// Waits until the acceptor's pending count satisfies `done`.
async fn pending_until(acceptor: &WsAcceptor, done: impl FnMut(&PendingHandshakes) -> bool) {
    let mut watch = acceptor.pending_handshakes();
    tokio::time::timeout(WAIT, watch.wait_for(done))
        .await
        .expect("the pending count never got there")
        .unwrap();
}

/// Whether the server closed `tcp` (EOF or reset) without answering anything.
async fn closed_without_answer(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn pending_sockets_are_capped_and_real_clients_connect_once_they_go() {
    const CAP: usize = 16;
    const EXTRA: usize = 8;
    let config = WsServerConfig::default()
        .with_max_pending_handshakes(CAP)
        .with_handshake_timeout(Duration::from_secs(600));
    let (mut acceptor, addr) = acceptor(config).await;

    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    pending_until(&acceptor, |p| p.now == CAP).await;
    // Past the cap, sockets are closed at once.
    for _ in 0..EXTRA {
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert!(closed_without_answer(&mut extra).await);
    }
    let count = *acceptor.pending_handshakes().borrow();
    assert_eq!(count.now, CAP);
    assert_eq!(count.peak, CAP, "the pending count went over the cap");
    assert_eq!(count.refused, EXTRA as u64);

    // The idle ones go; a real client connects.
    drop(idle);
    pending_until(&acceptor, |p| p.now == 0).await;
    a_real_client_connects(&mut acceptor, addr).await;
    let count = *acceptor.pending_handshakes().borrow();
    assert_eq!(count.peak, CAP);
}

#[tokio::test]
async fn idle_sockets_before_tls_count_as_pending() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = cluster_transport::tls::server_config_from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let config = WsServerConfig::default()
        .with_tls(tls)
        .with_max_pending_handshakes(2)
        .with_handshake_timeout(Duration::from_secs(600));
    let (acceptor, addr) = acceptor(config).await;
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    pending_until(&acceptor, |p| p.now == 2).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_without_answer(&mut third).await);
    assert_eq!(acceptor.pending_handshakes().borrow().refused, 1);
}

#[tokio::test]
async fn a_slowloris_runs_into_the_handshake_timeout() {
    let timeout = Duration::from_millis(800);
    let config = WsServerConfig::default().with_handshake_timeout(timeout);
    let (mut acceptor, addr) = acceptor(config).await;
    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    // One byte of a never-ending header every 50 ms: each read makes progress, none finishes.
    let trickle = tokio::spawn(async move {
        let request = format!(
            "GET /isp-etp/?module_name=m HTTP/1.1\r\nX-Slow: {}",
            "a".repeat(1000)
        );
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for byte in request.bytes() {
            tick.tick().await;
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, read.read(&mut buf))
        .await
        .expect("the slowloris outlived the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "closed after {elapsed:?}");
    assert!(elapsed < timeout * 3, "closed only after {elapsed:?}");
    trickle.abort();
    pending_until(&acceptor, |p| p.now == 0).await;
    a_real_client_connects(&mut acceptor, addr).await;
}
