//! `serve` against slow and hostile clients, over raw TCP on 127.0.0.1: half-sent heads and
//! bodies time out, connections are capped, clients that stop reading are dropped, and
//! shutdown lets requests in flight finish, up to its deadline. Timeouts are set short here;
//! each test awaits the server's answer or close (never a sleep).

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use cluster_serve::{ServeConfig, serve};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Longer than any timeout the tests configure: a test that waits this long failed.
const WAIT: Duration = Duration::from_secs(10);

/// A short limit, for the tests that wait for one to pass.
const SHORT: Duration = Duration::from_millis(300);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Told when the server has seen the shutdown signal.
    seen: Option<oneshot::Receiver<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router, config: ServeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (saw, seen) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, config, async move {
            let _ = stopped.await;
            let _ = saw.send(());
        }));
        Self {
            addr,
            stop: Some(stop),
            seen: Some(seen),
            task,
        }
    }

    /// Signals shutdown and returns once the server has seen it (it has stopped accepting
    /// and told its connections).
    async fn signal(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        if let Some(seen) = self.seen.take() {
            tokio::time::timeout(WAIT, seen)
                .await
                .expect("the server did not see the signal")
                .expect("server gone");
        }
    }

    /// Signals shutdown (if not done yet) and waits for `serve` to return; fails after
    /// [`WAIT`]. Returns how long that took.
    async fn shut_down(mut self) -> Duration {
        let started = Instant::now();
        self.signal().await;
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

/// The status, the head and the body of a raw response.
fn split(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The status and the `error` of a raw JSON error response.
fn error(raw: &[u8]) -> (u16, String) {
    let (status, head, body) = split(raw);
    assert!(head.contains("content-type: application/json"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    (status, message.to_owned())
}

/// `GET /` answers `hello`; `PUT /len` the length of its body.
fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello" })).route(
        "/len",
        post(|body: Bytes| async move { body.len().to_string() }),
    )
}

fn short() -> ServeConfig {
    ServeConfig::new("test")
        .with_header_timeout(SHORT)
        .with_body_timeout(SHORT)
}

#[tokio::test]
async fn a_half_sent_head_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let server = Server::start(hello(), short()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let raw = exchange(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert!(started.elapsed() >= SHORT - Duration::from_millis(50));
    assert!(!raw.starts_with(b"HTTP/1.1 200"), "{raw:?}");
    // An idle connection (not a byte sent) goes the same way.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    read_to_close(&mut idle).await;
    // And so does a kept-alive one after its answer.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(&mut kept, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, _, body) = split(&raw);
    assert_eq!((status, body.as_str()), (200, "hello"));
    server.shut_down().await;
}

#[tokio::test]
async fn a_half_sent_body_gets_408_as_json() {
    let server = Server::start(hello(), short()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(
        &mut stream,
        b"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":",
    )
    .await;
    assert_eq!(
        error(&raw),
        (
            408,
            "the request body did not arrive within 300 ms".to_owned()
        )
    );
    server.shut_down().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_as_json_and_others_reach_the_route() {
    let config = ServeConfig::new("test").with_max_body_size(1024);
    let server = Server::start(hello(), config).await;
    // Declared too large: answered at once.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(
        &mut stream,
        b"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert_eq!(
        error(&raw),
        (413, "the request body is larger than 1024 bytes".to_owned())
    );
    // Chunked, found too large while reading.
    let chunked = |len: usize| {
        format!(
            "POST /len HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n{}\r\n0\r\n\r\n",
            "x".repeat(len)
        )
    };
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(&mut stream, chunked(2000).as_bytes()).await;
    assert_eq!(error(&raw).0, 413);
    // At the limit: the route gets all of it.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(&mut stream, chunked(1024).as_bytes()).await;
    let (status, _, body) = split(&raw);
    assert_eq!((status, body.as_str()), (200, "1024"));
    server.shut_down().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_naming_the_server_and_the_slots_come_back() {
    let config = ServeConfig::new("infra")
        .with_max_connections(2)
        // Long enough that the held connections are still open when the third comes.
        .with_header_timeout(Duration::from_secs(1));
    let server = Server::start(hello(), config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    // The server has taken both (it answers the third with 503, not the first two).
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let raw = read_to_close(&mut third).await;
    assert_eq!(
        error(&raw),
        (
            503,
            "too many infra connections; try again later".to_owned()
        )
    );
    // The held ones time out, and their slots are free once they are closed.
    for stream in &mut held {
        read_to_close(stream).await;
    }
    let mut next = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(
        &mut next,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(split(&raw).0, 200);
    server.shut_down().await;
}

/// A route that says when it started and answers when `release` says so, or never without it.
fn held(started: mpsc::UnboundedSender<()>, release: Option<oneshot::Receiver<()>>) -> Router {
    let release = Arc::new(Mutex::new(release));
    Router::new().route(
        "/held",
        get(move || {
            let release = release.lock().unwrap().take();
            let _ = started.send(());
            async move {
                match release {
                    Some(release) => {
                        let _ = release.await;
                    }
                    None => std::future::pending().await,
                }
                "done"
            }
        }),
    )
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_gets_its_answer_and_nothing_new_is_accepted() {
    let (started, mut in_flight) = mpsc::unbounded_channel();
    let (release, released) = oneshot::channel();
    let config = ServeConfig::new("test").with_shutdown_timeout(WAIT);
    let mut server = Server::start(held(started, Some(released)), config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Kept alive: the server closes the connection after the answer because it is stopping.
    stream
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(WAIT, in_flight.recv())
        .await
        .expect("the request did not reach the route");
    server.signal().await;
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting"
    );
    release.send(()).unwrap();
    let (status, _, body) = split(&read_to_close(&mut stream).await);
    assert_eq!((status, body.as_str()), (200, "done"));
    server.shut_down().await;
}

#[tokio::test]
async fn idle_kept_alive_connections_do_not_hold_up_shutdown() {
    let config = ServeConfig::new("test")
        .with_header_timeout(Duration::from_secs(60))
        .with_shutdown_timeout(Duration::from_secs(60));
    let server = Server::start(hello(), config).await;
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"hello") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, kept.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed early: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    let took = server.shut_down().await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(read_to_close(&mut kept).await.is_empty());
}

#[tokio::test]
async fn shutdown_does_not_wait_past_its_deadline_for_stuck_requests() {
    let (started, mut in_flight) = mpsc::unbounded_channel();
    let config = ServeConfig::new("test")
        .with_header_timeout(Duration::from_secs(60))
        .with_body_timeout(Duration::from_secs(60))
        .with_shutdown_timeout(Duration::from_millis(200));
    let server = Server::start(held(started, None), config).await;
    // One connection sends half a body; the next one a request whose route never answers.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        .await
        .unwrap();
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Connections are accepted in order: both are being served.
    tokio::time::timeout(WAIT, in_flight.recv())
        .await
        .expect("the request did not reach the route");
    let took = server.shut_down().await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(read_to_close(&mut stuck).await.is_empty());
    read_to_close(&mut half).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_dropped_after_the_write_timeout() {
    // A response far larger than what the sockets buffer (the kernel's send buffer is at most
    // a few MiB; the client's receive buffer is made tiny).
    let big = Bytes::from(vec![b'b'; 32 << 20]);
    let router = Router::new().route("/big", get(move || async move { big.clone() }));
    let config = ServeConfig::new("test")
        .with_write_timeout(SHORT)
        // Without the write timeout, shutdown would wait this long for the stuck response.
        .with_shutdown_timeout(Duration::from_secs(60));
    let server = Server::start(router, config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
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

#[tokio::test]
async fn each_request_carries_the_peers_address() {
    let router = Router::new().route(
        "/peer",
        get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            },
        ),
    );
    let server = Server::start(router, ServeConfig::new("test")).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let me = stream.local_addr().unwrap();
    let raw = exchange(
        &mut stream,
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (status, _, body) = split(&raw);
    assert_eq!((status, body), (200, me.to_string()));
    server.shut_down().await;
}

#[tokio::test]
async fn a_request_served_longer_than_the_header_timeout_keeps_its_connection() {
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(3 * SHORT).await;
            "late"
        }),
    );
    let server = Server::start(slow, short()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    // Kept alive: answered after three header timeouts, then closed after one more idle.
    let raw = exchange(&mut stream, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, _, body) = split(&raw);
    assert_eq!((status, body.as_str()), (200, "late"));
    assert!(started.elapsed() >= 4 * SHORT - Duration::from_millis(50));
    server.shut_down().await;
}

#[tokio::test]
async fn a_body_over_axums_own_limit_reaches_an_extractor() {
    // axum's extractors take 2 MiB unless told otherwise; the server's limit (4 MiB) is what
    // applies.
    let server = Server::start(hello(), ServeConfig::new("test")).await;
    let len = 3 << 20;
    let mut request = format!(
        "POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b'x', len));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let raw = exchange(&mut stream, &request).await;
    let (status, _, body) = split(&raw);
    assert_eq!((status, body), (200, len.to_string()));
    server.shut_down().await;
}
