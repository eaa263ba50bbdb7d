//! The admin HTTP server against slow and hostile clients, over raw TCP on 127.0.0.1: half-sent
//! heads and bodies time out, connections are capped, shutdown has a deadline, and every
//! error is JSON. Timeouts are set short here; each test awaits the server's answer or close
//! (never a sleep).

mod common;

use cluster_testkit::FakeConfigService;
use cluster_testkit::admin::{AdminConfig, serve_with};
use common::{ChildGuard, Client, memory, spawn_service_binary_with};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Longer than any timeout the tests configure: a test that waits this long failed.
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: AdminConfig) -> Self {
        Self::start_with(FakeConfigService::new(), config).await
    }

    async fn start_with(service: FakeConfigService, config: AdminConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(listener, service, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Signals shutdown and waits for `serve_with` to return; fails after [`WAIT`].
    async fn shut_down(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the server did not stop")
            .expect("server task")
            .expect("server");
        started.elapsed()
    }
}

/// Writes `request` and reads until the server closes; fails after [`WAIT`].
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).await.unwrap();
    read_to_close(stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the server kept the connection open")
        .expect("read");
    raw
}

/// The status and the JSON body of a raw response.
fn parse(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

fn short(config: AdminConfig) -> AdminConfig {
    AdminConfig {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        ..config
    }
}

#[tokio::test]
async fn a_half_sent_head_is_closed_after_the_header_timeout() {
    let server = Server::start(short(AdminConfig::default())).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let raw = exchange(&mut stream, b"GET /modules HTTP/1.1\r\nHost: x\r\n").await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!raw.starts_with(b"HTTP/1.1 200"), "{raw:?}");
    // An idle connection (not a byte sent) goes the same way.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    read_to_close(&mut idle).await;
    server.shut_down().await;
}

#[tokio::test]
async fn a_half_sent_body_gets_408_as_json() {
    let server = Server::start(short(AdminConfig::default())).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(
        &mut stream,
        b"PUT /modules/a/config?unsafe=true HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":",
    )
    .await;
    let (status, body) = parse(&raw);
    assert_eq!(status, 408);
    assert!(
        body["error"].as_str().unwrap().contains("did not arrive"),
        "{body}"
    );
    server.shut_down().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_as_json() {
    let config = AdminConfig {
        max_body_size: 1024,
        ..AdminConfig::default()
    };
    let server = Server::start(config).await;
    // Declared too large: answered at once.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(
        &mut stream,
        b"PUT /modules/a/config HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    let (status, body) = parse(&raw);
    assert_eq!(status, 413);
    assert!(
        body["error"].as_str().unwrap().contains("1024 bytes"),
        "{body}"
    );
    // Chunked, found too large while reading.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let chunk = "x".repeat(2000);
    let request = format!(
        "PUT /modules/a/config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let raw = exchange(&mut stream, request.as_bytes()).await;
    assert_eq!(parse(&raw).0, 413);
    server.shut_down().await;
}

#[tokio::test]
async fn undecodable_paths_and_impossible_module_names_get_400_as_json() {
    let server = Server::start(AdminConfig::default()).await;
    for (request, expected) in [
        ("GET /modules/%FF/config", "bad path"),
        (
            "PUT /modules/x%7C%7Cy/config?unsafe=true",
            "invalid module name",
        ),
        ("POST /modules/__ack_x/disconnect", "invalid module name"),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "{request} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let (status, body) = parse(&exchange(&mut stream, request.as_bytes()).await);
        assert_eq!(status, 400, "{request}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(expected),
            "{request}: {body}"
        );
    }
    server.shut_down().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_the_slots_come_back() {
    let config = AdminConfig {
        max_connections: 2,
        // Long enough that the held connections are still open when the third comes.
        header_timeout: Duration::from_secs(1),
        ..AdminConfig::default()
    };
    let server = Server::start(config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /modules HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // The server has taken both (it answers the third with 503, not the first two).
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = parse(&read_to_close(&mut third).await);
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // The held ones time out, and their slots are free once they are closed.
    for stream in &mut held {
        read_to_close(stream).await;
    }
    let mut next = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(
        &mut next,
        b"GET /modules HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(parse(&raw), (200, Value::Array(Vec::new())));
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_past_its_deadline_for_a_stuck_request() {
    let config = AdminConfig {
        header_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_millis(200),
        ..AdminConfig::default()
    };
    let server = Server::start(config).await;
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck
        .write_all(b"PUT /modules/a/config HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        .await
        .unwrap();
    // Once the server answers another request, it is serving the stuck one too.
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(
        &mut other,
        b"GET /routes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(parse(&raw).0, 200);
    let took = server.shut_down().await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    read_to_close(&mut stuck).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_by_its_shutdown_deadline_with_a_stuck_admin_request() {
    use std::io::BufRead;
    let mut child = spawn_service_binary_with(&[
        "--shutdown-timeout",
        "300ms",
        "--admin-header-timeout",
        "60s",
    ]);
    let stdout = child.stdout.take().expect("stdout");
    let pid = child.id();
    let mut guard = ChildGuard(Some(child));
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines);
    });
    let lines = tokio::time::timeout(WAIT, rx).await.unwrap().unwrap();
    let (_, admin) = common::bound_addresses(&lines);
    let mut stuck = TcpStream::connect(admin).await.unwrap();
    stuck.write_all(b"GET /modules HTTP/1.1\r\n").await.unwrap();
    let mut other = TcpStream::connect(admin).await.unwrap();
    let raw = exchange(
        &mut other,
        b"GET /routes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(parse(&raw).0, 200);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let mut child = guard.0.take().expect("child");
    let started = Instant::now();
    let status = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("the process did not exit")
        .expect("wait task")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    read_to_close(&mut stuck).await;
}

#[tokio::test]
async fn a_refused_config_is_answered_without_its_values() {
    let service = FakeConfigService::new();
    let (connector, host) = memory(&service);
    let module = Client::connect(&connector, &host, "svc").await;
    let schema = r#"{"version":"1","schema":{"type":"object","properties":{"password":{"type":"integer"}}},"config":{}}"#;
    assert_eq!(module.ack("MODULE:SEND_CONFIG_SCHEMA", schema).await, "ok");
    let server = Server::start_with(service, AdminConfig::default()).await;
    for (path, body) in [
        (
            "PUT /modules/svc/config",
            r#"{"password":"hunter2-SECRET"}"#.to_owned(),
        ),
        (
            "POST /config/config/create_update_config",
            r#"{"name":"svc","moduleId":"svc","data":{"password":"hunter2-SECRET"}}"#.to_owned(),
        ),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let raw = exchange(&mut stream, request.as_bytes()).await;
        let (status, answer) = parse(&raw);
        assert_eq!(status, 400, "{answer}");
        let text = answer.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("/password"), "{text}");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_dropped_after_the_write_timeout() {
    // Responses far larger than what the sockets buffer (the kernel's send buffer is at most
    // a few MiB; the client's receive buffer is made tiny).
    let service = FakeConfigService::new();
    let big = format!(r#"{{"blob":"{}"}}"#, "b".repeat(3_900_000));
    for module in ["m1", "m2", "m3", "m4"] {
        service
            .set_config_unsafe(module, big.clone(), None)
            .unwrap();
    }
    let config = AdminConfig {
        write_timeout: Duration::from_millis(300),
        // Without the write timeout, shutdown would wait this long for the stuck response.
        shutdown_timeout: Duration::from_secs(60),
        ..AdminConfig::default()
    };
    let server = Server::start_with(service, config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /modules HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The response has started: from here on the client reads nothing.
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("no response")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let took = server.shut_down().await;
    assert!(took < Duration::from_secs(5), "{took:?}");
}
