//! Benchmarks of the ETP connection runtime ([`Conn`]) over loopback WebSocket. A plain
//! program that prints its figures (no criterion).
//!
//! ```text
//! cargo bench -p cluster-transport --bench etp                 # everything
//! cargo bench -p cluster-transport --bench etp -- memory       # one part: rtt | flood | memory | floor
//! ```
//!
//! - `rtt`: sequential emit-with-ack round trips, 16 B payload, one connection: ops/s, p50, p99;
//! - `flood`: fire-and-forget 1 KiB events client → server: events/s and MiB/s (the client
//!   keeps at most `WINDOW` events in flight so the unbounded queue stays small);
//! - `memory`: RSS delta over 1,000 idle connections, both ends in this process, read from
//!   `/proc/self/statm` (4 KiB pages): transports alone, then with a `Conn` on each end.
//!
//! - `floor`: `rtt` and `flood` on the raw WebSocket transports without the runtime, to tell
//!   the runtime's cost from the transport's and the machine's.
//!
//! `rtt` and `flood` run on a current_thread runtime and on a 2-worker multi-thread runtime.
//! Each part runs `RUNS` times; the median run is printed with the min and max.

mod common;
use bytes::Bytes;
use cluster_transport::conn::{Conn, ConnConfig, Handlers, Reply};
use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{Acceptor, CLOSE_NORMAL, Connector, Endpoint, Incoming, Transport};
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const RUNS: usize = 5;
const RTT_WARMUP: usize = 2_000;
const RTT_ROUNDS: usize = 20_000;
const FLOOD_EVENTS: u64 = 300_000;
const FLOOD_SIZE: usize = 1024;
const WINDOW: u64 = 4_096;
const IDLE_CONNECTIONS: usize = 1_000;

struct Net {
    acceptor: WsAcceptor,
    connector: WsConnector,
    endpoint: Endpoint,
}

impl Net {
    async fn new() -> Self {
        let acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
            .await
            .expect("bind");
        let endpoint: Endpoint = format!("127.0.0.1:{}", acceptor.local_addr().port())
            .parse()
            .expect("endpoint");
        let connector = WsConnector::new(WsConfig::default()).expect("connector");
        Self {
            acceptor,
            connector,
            endpoint,
        }
    }

    /// One connected (client, server) pair of transports.
    async fn pair(&mut self) -> (Transport, Transport) {
        let (client, accepted) = tokio::join!(
            self.connector.connect(&self.endpoint, "bench"),
            self.acceptor.accept()
        );
        (
            client.expect("connect"),
            accepted.expect("accept").transport,
        )
    }
}

fn spawn_pair(client: Transport, server: Transport, handlers: Handlers) -> (Conn, Conn) {
    (
        Conn::spawn(client, Handlers::new(), ConnConfig::default()),
        Conn::spawn(server, handlers, ConnConfig::default()),
    )
}

async fn rtt() -> Rtt {
    let mut net = Net::new().await;
    let (c, s) = net.pair().await;
    let (client, server) = spawn_pair(c, s, Handlers::new().on("ECHO", |_, data| Reply::Ack(data)));
    let payload = [b'x'; 16];
    let rtt = measure_rtt(RTT_WARMUP, RTT_ROUNDS, async || {
        let answer = client.emit_with_ack("ECHO", &payload).await.expect("ack");
        assert_eq!(answer.len(), payload.len());
    })
    .await;
    client.close(CLOSE_NORMAL, "done").await;
    server.closed().await;
    rtt
}

async fn flood() -> f64 {
    let mut net = Net::new().await;
    let (c, s) = net.pair().await;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let (count, notify) = (Arc::clone(&received), Arc::clone(&progress));
    let handlers = Handlers::new().on("EVENT", move |_, data| {
        debug_assert_eq!(data.len(), FLOOD_SIZE);
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 256 == 0 || n == FLOOD_EVENTS {
            notify.notify_one();
        }
        Reply::default()
    });
    let (client, server) = spawn_pair(c, s, handlers);
    let payload = vec![b'x'; FLOOD_SIZE];
    let started = Instant::now();
    for sent in 0..FLOOD_EVENTS {
        while sent - received.load(Ordering::Relaxed) >= WINDOW {
            progress.notified().await;
        }
        client.emit("EVENT", &payload).expect("emit");
    }
    while received.load(Ordering::Relaxed) < FLOOD_EVENTS {
        progress.notified().await;
    }
    let elapsed = started.elapsed();
    client.close(CLOSE_NORMAL, "done").await;
    server.closed().await;
    FLOOD_EVENTS as f64 / elapsed.as_secs_f64()
}

/// The floor: the same round trip on the raw WebSocket transports, no ETP runtime (the server
/// echoes each text message from one task that owns both halves).
async fn floor_rtt() -> Rtt {
    let mut net = Net::new().await;
    let (mut client, mut server) = net.pair().await;
    let echo = tokio::spawn(async move {
        while let Ok(Incoming::Text(text)) = server.stream.recv().await {
            if server.sink.feed(text).await.is_err() || server.sink.flush().await.is_err() {
                break;
            }
        }
    });
    let frame = Bytes::from_static(b"ECHO||1||xxxxxxxxxxxxxxxx");
    let mut round_trip = async || {
        client.sink.feed(frame.clone()).await.expect("feed");
        client.sink.flush().await.expect("flush");
        match client.stream.recv().await {
            Ok(Incoming::Text(text)) => text,
            other => panic!("unexpected {other:?}"),
        }
    };
    let rtt = measure_rtt(RTT_WARMUP, RTT_ROUNDS, async || {
        round_trip().await;
    })
    .await;
    client
        .sink
        .close(CLOSE_NORMAL, "done")
        .await
        .expect("close");
    let _ = client.stream.recv().await;
    let _ = echo.await;
    rtt
}

/// The floor of `flood`: the raw transports, the sender feeding and flushing every 64 frames
/// (and whenever the window is full), the receiver counting.
async fn floor_flood() -> f64 {
    let mut net = Net::new().await;
    let (mut client, mut server) = net.pair().await;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let (count, notify) = (Arc::clone(&received), Arc::clone(&progress));
    let sink = tokio::spawn(async move {
        while let Ok(Incoming::Text(text)) = server.stream.recv().await {
            debug_assert_eq!(text.len(), FLOOD_SIZE + 10);
            let n = count.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 256 == 0 || n == FLOOD_EVENTS {
                notify.notify_one();
            }
        }
    });
    let mut frame = b"EVENT||0||".to_vec();
    frame.resize(FLOOD_SIZE + 10, b'x');
    let frame = Bytes::from(frame);
    let started = Instant::now();
    let mut unflushed = 0;
    for sent in 0..FLOOD_EVENTS {
        if sent - received.load(Ordering::Relaxed) >= WINDOW {
            client.sink.flush().await.expect("flush");
            unflushed = 0;
            while sent - received.load(Ordering::Relaxed) >= WINDOW {
                progress.notified().await;
            }
        }
        // A copy per event, as `emit` encodes one.
        client
            .sink
            .feed(Bytes::copy_from_slice(&frame))
            .await
            .expect("feed");
        unflushed += 1;
        if unflushed == 64 {
            client.sink.flush().await.expect("flush");
            unflushed = 0;
        }
    }
    client.sink.flush().await.expect("flush");
    while received.load(Ordering::Relaxed) < FLOOD_EVENTS {
        progress.notified().await;
    }
    let elapsed = started.elapsed();
    client
        .sink
        .close(CLOSE_NORMAL, "done")
        .await
        .expect("close");
    let _ = client.stream.recv().await;
    let _ = sink.await;
    FLOOD_EVENTS as f64 / elapsed.as_secs_f64()
}

async fn warm(from: &mut Transport, to: &mut Transport) {
    from.sink
        .feed(Bytes::from_static(b"WARM||0"))
        .await
        .expect("feed");
    from.sink.flush().await.expect("flush");
    to.stream.recv().await.expect("recv");
}

/// Bytes per connection (both ends): (transports only, conn runtime on top).
async fn memory() -> (f64, f64) {
    let mut net = Net::new().await;
    // Warm up the runtime, the allocator and the acceptor.
    for _ in 0..20 {
        let (c, s) = net.pair().await;
        let (client, server) = spawn_pair(c, s, Handlers::new());
        client.emit_with_ack("PING", b"").await.expect("ack");
        client.close(CLOSE_NORMAL, "").await;
        server.closed().await;
    }
    let before = rss();
    let mut pairs = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let (mut c, mut s) = net.pair().await;
        // One message each way, so the transports' buffers are in use before we measure.
        warm(&mut c, &mut s).await;
        warm(&mut s, &mut c).await;
        pairs.push((c, s));
    }
    let transports = rss();
    let handlers = Handlers::new().on("HELLO", |_, _| Reply::Ack(Bytes::from_static(b"ok")));
    let mut conns = Vec::with_capacity(IDLE_CONNECTIONS);
    for (c, s) in pairs {
        conns.push(spawn_pair(c, s, handlers.clone()));
    }
    // One round trip each, so every task has run and every buffer exists.
    for (client, _) in &conns {
        client.emit_with_ack("HELLO", b"x").await.expect("ack");
    }
    let with_conns = rss();
    let n = IDLE_CONNECTIONS as f64;
    let result = (
        transports.saturating_sub(before) as f64 / n,
        with_conns.saturating_sub(transports) as f64 / n,
    );
    for (client, server) in &conns {
        client.start_close(CLOSE_NORMAL, "");
        server.closed().await;
    }
    result
}

fn run_rtt<F: Future<Output = Rtt>>(
    name: &str,
    runtime: fn() -> tokio::runtime::Runtime,
    bench: fn() -> F,
) {
    let runs: Vec<(f64, Duration, Duration)> = (0..RUNS)
        .map(|_| {
            let r = runtime().block_on(bench());
            (r.ops_per_sec, r.p50, r.p99)
        })
        .collect();
    let (_, median, _) = spread(runs.clone(), |r| r.1.as_secs_f64());
    let p50 = spread(runs.clone(), |r| r.1.as_secs_f64());
    let p99 = spread(runs.clone(), |r| r.2.as_secs_f64());
    let ops = spread(runs, |r| r.0);
    println!(
        "rtt   {name:<24} median run: {:>8.0} ops/s  p50 {:>5.1} µs  p99 {:>5.1} µs   \
         (p50 {:.1}–{:.1} µs, p99 {:.1}–{:.1} µs, ops/s {:.0}–{:.0} over {RUNS} runs)",
        median.0,
        us(median.1),
        us(median.2),
        us(p50.0.1),
        us(p50.2.1),
        us(p99.0.2),
        us(p99.2.2),
        ops.0.0,
        ops.2.0,
    );
}

fn run_flood<F: Future<Output = f64>>(
    name: &str,
    runtime: fn() -> tokio::runtime::Runtime,
    bench: fn() -> F,
) {
    let runs: Vec<f64> = (0..RUNS).map(|_| runtime().block_on(bench())).collect();
    let (min, median, max) = spread(runs, |r| *r);
    let mib = |events: f64| events * FLOOD_SIZE as f64 / f64::from(1u32 << 20);
    println!(
        "flood {name:<24} median run: {median:>9.0} events/s  {:>6.0} MiB/s   \
         ({min:.0}–{max:.0} events/s over {RUNS} runs, 1 KiB events)",
        mib(median),
    );
}

/// Each run in a fresh process (this program with `memory-once`), so no run reuses the heap
/// another one grew.
fn run_memory() {
    let exe = std::env::current_exe().expect("current exe");
    let runs: Vec<(f64, f64)> = (0..RUNS)
        .map(|_| {
            let out = std::process::Command::new(&exe)
                .arg("memory-once")
                .output()
                .expect("run memory-once");
            assert!(out.status.success(), "memory-once failed: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut figures = text
                .split_whitespace()
                .map(|f| f.parse::<f64>().expect("figure"));
            (
                figures.next().expect("transports"),
                figures.next().expect("conns"),
            )
        })
        .collect();
    let (min, median, max) = spread(runs.clone(), |r| r.0 + r.1);
    println!(
        "memory per idle connection, both ends (median of {RUNS}): {:.1} KiB total = {:.1} KiB \
         transports + {:.1} KiB conn runtime   (totals {:.1}–{:.1} KiB)",
        kib(median.0 + median.1),
        kib(median.0),
        kib(median.1),
        kib(min.0 + min.1),
        kib(max.0 + max.1),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument picks the parts to run.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if parts.iter().any(|p| p == "memory-once") {
        let (transports, conns) = current_thread().block_on(memory());
        println!("{transports} {conns}");
        return;
    }
    let wants = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    // Memory first, before the other parts grow the heap.
    if wants("memory") {
        run_memory();
    }
    if wants("rtt") {
        run_rtt("conn current_thread", current_thread, rtt);
        run_rtt("conn multi_thread", multi_thread, rtt);
    }
    if wants("floor") || wants("rtt") && parts.is_empty() {
        run_rtt("raw ws current_thread", current_thread, floor_rtt);
        run_rtt("raw ws multi_thread", multi_thread, floor_rtt);
    }
    if wants("flood") {
        run_flood("conn current_thread", current_thread, flood);
        run_flood("conn multi_thread", multi_thread, flood);
    }
    if wants("floor") || wants("flood") && parts.is_empty() {
        run_flood("raw ws current_thread", current_thread, floor_flood);
        run_flood("raw ws multi_thread", multi_thread, floor_flood);
    }
}
