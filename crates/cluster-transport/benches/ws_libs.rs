//! The WebSocket libraries compared in one run (issue 12 §2): tokio-tungstenite (what the
//! transport used first), tokio-websockets (what it used next), fastwebsockets, and our own
//! frame layer (`cluster_transport::ws`, through its public `Transport`: its shared halves
//! and boxed futures included), over loopback, with no ETP on top. A plain program that prints
//! its figures (no criterion).
//!
//! ```text
//! cargo bench -p cluster-transport --bench ws_libs                # everything
//! cargo bench -p cluster-transport --bench ws_libs -- rtt         # one part: rtt | flood | memory | handshake
//! ```
//!
//! - `rtt`: a 16 B text message and its echo, one connection, sequential: ops/s, p50, p99; on
//!   a current_thread runtime and on a 2-worker multi-thread runtime;
//! - `flood`: fire-and-forget 1 KiB text messages client → server, flushed every 64: msg/s;
//!   both runtimes;
//! - `memory`: RSS delta over 1,000 idle connections (both ends in this process, one message
//!   each way first), each library in a fresh process;
//! - `handshake`: TCP connect + upgrade, client and server in this process, sequential: p50,
//!   p99 per connection.
//!
//! Settings: tokio-tungstenite as the transport had it (4 KiB read buffer, 32 KiB write
//! buffer); tokio-websockets with a 32 KiB flush threshold; fastwebsockets as it comes (it
//! writes each frame out at once). fastwebsockets' own handshake needs hyper (its `upgrade`
//! feature): here it runs after a minimal hand-written upgrade (request, 101, accept key), so
//! its handshake figure is that of the hand-written code, not of hyper's.
//!
//! Each part runs `RUNS` times per library, interleaved; the median run is printed with the
//! min and max. `WS_LIBS=Ours,TokioWebsockets` runs only those.

mod common;
use bytes::Bytes;
use common::*;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::fmt::Debug;
use std::future::Future;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RUNS: usize = 5;
const RTT_WARMUP: usize = 2_000;
const RTT_ROUNDS: usize = 20_000;
const FLOOD_MESSAGES: u64 = 200_000;
const FLOOD_SIZE: usize = 1024;
const FLUSH_EVERY: u64 = 64;
const IDLE_CONNECTIONS: usize = 1_000;
const HANDSHAKES: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lib {
    Tungstenite,
    TokioWebsockets,
    Fastwebsockets,
    Ours,
}

const LIBS: [Lib; 4] = [
    Lib::Tungstenite,
    Lib::TokioWebsockets,
    Lib::Fastwebsockets,
    Lib::Ours,
];

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Self::Tungstenite => "tokio-tungstenite 0.30",
            Self::TokioWebsockets => "tokio-websockets 0.12",
            Self::Fastwebsockets => "fastwebsockets 0.10",
            Self::Ours => "ours (cluster_transport::ws)",
        }
    }

    fn from_name(name: &str) -> Self {
        *LIBS
            .iter()
            .find(|lib| format!("{lib:?}") == name)
            .expect("library name")
    }
}

// ---- tokio-tungstenite: shared with the `etp` bench (common/tungstenite.rs) ------------------

use common::tungstenite as tt;
use common::tungstenite::{URL, tcp_pair};

// ---- tokio-websockets -----------------------------------------------------------------------

mod tw {
    use super::*;
    use tokio_websockets::{ClientBuilder, Config, Limits, Message, ServerBuilder};

    pub(crate) type Ws = tokio_websockets::WebSocketStream<TcpStream>;

    fn config() -> Config {
        Config::default().flush_threshold(32 << 10)
    }

    fn limits() -> Limits {
        Limits::default().max_payload_len(Some(4 << 20))
    }

    pub(crate) async fn pair(listener: &TcpListener) -> (Ws, Ws) {
        let (c, s) = tcp_pair(listener).await;
        let client = ClientBuilder::new()
            .uri(URL)
            .expect("uri")
            .config(config())
            .limits(limits());
        let server = ServerBuilder::new().config(config()).limits(limits());
        let (client, server) = tokio::join!(client.connect_on(c), server.accept(s));
        (client.expect("client").0, server.expect("server").1)
    }

    pub(crate) fn text(payload: Bytes) -> Message {
        Message::text(payload)
    }

    pub(crate) fn is_text(m: &Message) -> bool {
        m.is_text()
    }
}

// ---- ours -----------------------------------------------------------------------------------

mod ours {
    use cluster_transport::{Incoming, Transport};

    pub(crate) use super::Net;
    use super::*;

    pub(crate) async fn send(t: &mut Transport, text: Bytes) {
        t.sink.feed(text).await.expect("feed");
        t.sink.flush().await.expect("flush");
    }

    pub(crate) async fn text(t: &mut Transport) -> Bytes {
        match t.stream.recv().await.expect("recv") {
            Incoming::Text(text) => text,
            other => panic!("not text: {other:?}"),
        }
    }

    pub(crate) async fn echo(mut server: Transport) {
        while let Ok(Incoming::Text(text)) = server.stream.recv().await {
            if server.sink.feed(text).await.is_err() || server.sink.flush().await.is_err() {
                return;
            }
        }
    }

    pub(crate) async fn warm(from: &mut Transport, to: &mut Transport) {
        send(from, Bytes::from_static(b"warm")).await;
        text(to).await;
    }
}

// ---- fastwebsockets -------------------------------------------------------------------------

mod fw {
    use super::*;
    use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    pub(crate) type Ws = WebSocket<TcpStream>;

    async fn read_head(tcp: &mut TcpStream) -> String {
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut byte).await.expect("read"), 1, "EOF in head");
            head.push(byte[0]);
        }
        String::from_utf8(head).expect("head")
    }

    /// A minimal hand-written upgrade (fastwebsockets' own needs hyper).
    pub(crate) async fn pair(listener: &TcpListener) -> (Ws, Ws) {
        let (mut c, mut s) = tcp_pair(listener).await;
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let client = async {
            let request = format!(
                "GET /isp-etp/?module_name=bench HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            c.write_all(request.as_bytes()).await.expect("write");
            let head = read_head(&mut c).await;
            assert!(head.starts_with("HTTP/1.1 101"));
            WebSocket::after_handshake(c, Role::Client)
        };
        let server = async {
            let head = read_head(&mut s).await;
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("key")
                .to_owned();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            s.write_all(answer.as_bytes()).await.expect("write");
            WebSocket::after_handshake(s, Role::Server)
        };
        let (mut client, mut server) = tokio::join!(client, server);
        client.set_max_message_size(4 << 20);
        server.set_max_message_size(4 << 20);
        (client, server)
    }

    pub(crate) async fn echo(mut server: Ws) {
        while let Ok(frame) = server.read_frame().await {
            match frame.opcode {
                OpCode::Text => {
                    let payload = frame.payload.to_vec();
                    if server
                        .write_frame(Frame::text(Payload::Owned(payload)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                OpCode::Close => return,
                _ => {}
            }
        }
    }

    pub(crate) async fn round_trip(client: &mut Ws, payload: &[u8]) {
        client
            .write_frame(Frame::text(Payload::Borrowed(payload)))
            .await
            .expect("write");
        let frame = client.read_frame().await.expect("read");
        assert_eq!(frame.opcode, OpCode::Text);
    }

    pub(crate) async fn count(mut server: Ws, n: u64) {
        let mut seen = 0;
        while seen < n {
            let frame = server.read_frame().await.expect("read");
            if frame.opcode == OpCode::Text {
                seen += 1;
            }
        }
    }

    pub(crate) async fn send(client: &mut Ws, payload: &[u8]) {
        client
            .write_frame(Frame::text(Payload::Borrowed(payload)))
            .await
            .expect("write");
    }

    pub(crate) async fn warm(from: &mut Ws, to: &mut Ws) {
        send(from, b"warm").await;
        to.read_frame().await.expect("read");
    }
}

// ---- the parts ------------------------------------------------------------------------------

async fn measure_rtt(round_trip: impl AsyncFnMut()) -> Rtt {
    common::measure_rtt(RTT_WARMUP, RTT_ROUNDS, round_trip).await
}

async fn rtt_streams<W, M, E>(
    mut client: W,
    mut server: W,
    text: fn(Bytes) -> M,
    is_text: fn(&M) -> bool,
) -> Rtt
where
    W: Sink<M, Error = E> + Stream<Item = Result<M, E>> + Unpin + Send + 'static,
    M: Send + 'static,
    E: Debug + Send + 'static,
{
    let echo = tokio::spawn(async move {
        while let Some(Ok(message)) = server.next().await {
            if is_text(&message) && server.send(message).await.is_err() {
                return;
            }
        }
    });
    let payload = Bytes::from_static(b"0123456789abcdef");
    let rtt = measure_rtt(async || {
        client.send(text(payload.clone())).await.expect("send");
        let answer = client.next().await.expect("answer").expect("answer");
        assert!(is_text(&answer));
    })
    .await;
    drop(client);
    let _ = echo.await;
    rtt
}

async fn rtt(lib: Lib) -> Rtt {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    match lib {
        Lib::Tungstenite => {
            let (c, s) = tt::pair(&listener).await;
            rtt_streams(c, s, tt::text, tt::is_text).await
        }
        Lib::TokioWebsockets => {
            let (c, s) = tw::pair(&listener).await;
            rtt_streams(c, s, tw::text, tw::is_text).await
        }
        Lib::Fastwebsockets => {
            let (mut c, s) = fw::pair(&listener).await;
            let echo = tokio::spawn(fw::echo(s));
            let payload = *b"0123456789abcdef";
            let rtt = measure_rtt(async || fw::round_trip(&mut c, &payload).await).await;
            drop(c);
            let _ = echo.await;
            rtt
        }
        Lib::Ours => {
            let mut net = ours::Net::new().await;
            let (mut c, s) = net.pair().await;
            let echo = tokio::spawn(ours::echo(s));
            let payload = Bytes::from_static(b"0123456789abcdef");
            let rtt = measure_rtt(async || {
                ours::send(&mut c, payload.clone()).await;
                ours::text(&mut c).await;
            })
            .await;
            drop(c);
            let _ = echo.await;
            rtt
        }
    }
}

async fn flood_streams<W, M, E>(mut client: W, mut server: W, text: fn(Bytes) -> M) -> f64
where
    W: Sink<M, Error = E> + Stream<Item = Result<M, E>> + Unpin + Send + 'static,
    M: Send + 'static,
    E: Debug + Send + 'static,
{
    let counter = tokio::spawn(async move {
        for _ in 0..FLOOD_MESSAGES {
            server.next().await.expect("message").expect("message");
        }
        server
    });
    let payload = Bytes::from(vec![b'x'; FLOOD_SIZE]);
    let started = Instant::now();
    for sent in 1..=FLOOD_MESSAGES {
        client.feed(text(payload.clone())).await.expect("feed");
        if sent % FLUSH_EVERY == 0 {
            client.flush().await.expect("flush");
        }
    }
    client.flush().await.expect("flush");
    let _server = counter.await.expect("counter");
    FLOOD_MESSAGES as f64 / started.elapsed().as_secs_f64()
}

async fn flood(lib: Lib) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    match lib {
        Lib::Tungstenite => {
            let (c, s) = tt::pair(&listener).await;
            flood_streams(c, s, tt::text).await
        }
        Lib::TokioWebsockets => {
            let (c, s) = tw::pair(&listener).await;
            flood_streams(c, s, tw::text).await
        }
        Lib::Fastwebsockets => {
            let (mut c, s) = fw::pair(&listener).await;
            let counter = tokio::spawn(fw::count(s, FLOOD_MESSAGES));
            let payload = vec![b'x'; FLOOD_SIZE];
            let started = Instant::now();
            for _ in 0..FLOOD_MESSAGES {
                fw::send(&mut c, &payload).await;
            }
            counter.await.expect("counter");
            FLOOD_MESSAGES as f64 / started.elapsed().as_secs_f64()
        }
        Lib::Ours => {
            let mut net = ours::Net::new().await;
            let (mut c, mut s) = net.pair().await;
            let counter = tokio::spawn(async move {
                for _ in 0..FLOOD_MESSAGES {
                    ours::text(&mut s).await;
                }
                s
            });
            let payload = Bytes::from(vec![b'x'; FLOOD_SIZE]);
            let started = Instant::now();
            for sent in 1..=FLOOD_MESSAGES {
                c.sink.feed(payload.clone()).await.expect("feed");
                if sent % FLUSH_EVERY == 0 {
                    c.sink.flush().await.expect("flush");
                }
            }
            c.sink.flush().await.expect("flush");
            let _server = counter.await.expect("counter");
            FLOOD_MESSAGES as f64 / started.elapsed().as_secs_f64()
        }
    }
}

async fn warm_streams<W, M, E>(from: &mut W, to: &mut W, text: fn(Bytes) -> M)
where
    W: Sink<M, Error = E> + Stream<Item = Result<M, E>> + Unpin,
    E: Debug,
{
    from.send(text(Bytes::from_static(b"warm")))
        .await
        .expect("send");
    to.next().await.expect("recv").expect("recv");
}

/// Bytes per idle connection, both ends.
async fn memory(lib: Lib) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    // Warm up the runtime and the allocator.
    for _ in 0..20 {
        drop(tcp_pair(&listener).await);
    }
    let before = rss();
    let n = IDLE_CONNECTIONS;
    match lib {
        Lib::Tungstenite => {
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut c, mut s) = tt::pair(&listener).await;
                warm_streams(&mut c, &mut s, tt::text).await;
                warm_streams(&mut s, &mut c, tt::text).await;
                pairs.push((c, s));
            }
            let after = rss();
            drop(pairs);
            after.saturating_sub(before) as f64 / n as f64
        }
        Lib::TokioWebsockets => {
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut c, mut s) = tw::pair(&listener).await;
                warm_streams(&mut c, &mut s, tw::text).await;
                warm_streams(&mut s, &mut c, tw::text).await;
                pairs.push((c, s));
            }
            let after = rss();
            drop(pairs);
            after.saturating_sub(before) as f64 / n as f64
        }
        Lib::Fastwebsockets => {
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut c, mut s) = fw::pair(&listener).await;
                fw::warm(&mut c, &mut s).await;
                fw::warm(&mut s, &mut c).await;
                pairs.push((c, s));
            }
            let after = rss();
            drop(pairs);
            after.saturating_sub(before) as f64 / n as f64
        }
        Lib::Ours => {
            // The acceptor (its accept loop) before the baseline.
            let mut net = ours::Net::new().await;
            drop(net.pair().await);
            let before = rss();
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut c, mut s) = net.pair().await;
                ours::warm(&mut c, &mut s).await;
                ours::warm(&mut s, &mut c).await;
                pairs.push((c, s));
            }
            let after = rss();
            drop(pairs);
            after.saturating_sub(before) as f64 / n as f64
        }
    }
}

/// TCP connect + upgrade, sequential.
async fn handshake(lib: Lib) -> Rtt {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut net = ours::Net::new().await;
    let mut samples = Vec::with_capacity(HANDSHAKES);
    let started = Instant::now();
    for _ in 0..HANDSHAKES {
        let t = Instant::now();
        match lib {
            Lib::Tungstenite => drop(tt::pair(&listener).await),
            Lib::TokioWebsockets => drop(tw::pair(&listener).await),
            Lib::Fastwebsockets => drop(fw::pair(&listener).await),
            Lib::Ours => drop(net.pair().await),
        }
        samples.push(t.elapsed());
    }
    summarize(&mut samples, started.elapsed())
}

// ---- running and printing -------------------------------------------------------------------

/// Runs `bench` RUNS times per library, the libraries interleaved, each run on a fresh
/// runtime; returns the runs per library.
fn interleaved<T, F: Future<Output = T>>(
    runtime: fn() -> tokio::runtime::Runtime,
    bench: fn(Lib) -> F,
) -> Vec<(Lib, Vec<T>)> {
    let mut runs: Vec<(Lib, Vec<T>)> = libs().into_iter().map(|lib| (lib, Vec::new())).collect();
    for _ in 0..RUNS {
        for (lib, results) in &mut runs {
            results.push(runtime().block_on(bench(*lib)));
        }
    }
    runs
}

fn print_rtt(part: &str, runtime_name: &str, runs: Vec<(Lib, Vec<Rtt>)>) {
    for (lib, runs) in runs {
        let (_, median, _) = spread(runs.clone(), |r| r.p50.as_secs_f64());
        let p50 = spread(runs.clone(), |r| r.p50.as_secs_f64());
        let p99 = spread(runs.clone(), |r| r.p99.as_secs_f64());
        let ops = spread(runs, |r| r.ops_per_sec);
        println!(
            "{part:<9} {runtime_name:<14} {:<24} median run: {:>7.0} ops/s  p50 {:>6.1} µs  \
             p99 {:>6.1} µs   (p50 {:.1}–{:.1}, p99 {:.1}–{:.1} µs, {:.0}–{:.0} ops/s over {RUNS} runs)",
            lib.name(),
            median.ops_per_sec,
            us(median.p50),
            us(median.p99),
            us(p50.0.p50),
            us(p50.2.p50),
            us(p99.0.p99),
            us(p99.2.p99),
            ops.0.ops_per_sec,
            ops.2.ops_per_sec,
        );
    }
}

fn print_flood(runtime_name: &str, runs: Vec<(Lib, Vec<f64>)>) {
    for (lib, runs) in runs {
        let (min, median, max) = spread(runs, |r| *r);
        println!(
            "flood     {runtime_name:<14} {:<24} median run: {median:>9.0} msg/s   \
             ({min:.0}–{max:.0} msg/s over {RUNS} runs, 1 KiB messages)",
            lib.name(),
        );
    }
}

/// The libraries to run: `WS_LIBS=Ours,TokioWebsockets` picks some (default: all).
fn libs() -> Vec<Lib> {
    match std::env::var("WS_LIBS") {
        Ok(names) => names.split(',').map(Lib::from_name).collect(),
        Err(_) => LIBS.to_vec(),
    }
}

/// Each run in a fresh process (this program with `memory-once <lib>`).
fn run_memory() {
    let exe = std::env::current_exe().expect("current exe");
    for lib in libs() {
        let runs: Vec<f64> = (0..RUNS)
            .map(|_| {
                let out = std::process::Command::new(&exe)
                    .args(["memory-once", &format!("{lib:?}")])
                    .output()
                    .expect("run memory-once");
                assert!(out.status.success(), "memory-once failed: {out:?}");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("figure")
            })
            .collect();
        let (min, median, max) = spread(runs, |r| *r);
        println!(
            "memory    idle connection, both ends   {:<24} median: {:>5.1} KiB   \
             ({:.1}–{:.1} KiB over {RUNS} runs)",
            lib.name(),
            median / 1024.0,
            min / 1024.0,
            max / 1024.0,
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument picks the parts to run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("memory-once") {
        let lib = Lib::from_name(args.get(1).expect("library"));
        println!("{}", current_thread().block_on(memory(lib)));
        return;
    }
    let wants = |part: &str| args.is_empty() || args.iter().any(|p| p == part);
    if wants("memory") {
        run_memory();
    }
    if wants("rtt") {
        print_rtt(
            "rtt 16 B",
            "current_thread",
            interleaved(current_thread, rtt),
        );
        print_rtt("rtt 16 B", "multi_thread 2", interleaved(multi_thread, rtt));
    }
    if wants("flood") {
        print_flood("current_thread", interleaved(current_thread, flood));
        print_flood("multi_thread 2", interleaved(multi_thread, flood));
    }
    if wants("handshake") {
        print_rtt(
            "handshake",
            "current_thread",
            interleaved(current_thread, handshake),
        );
    }
}
