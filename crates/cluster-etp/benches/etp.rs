//! Benchmarks of the ETP connection runtime ([`Conn`]) over loopback WebSocket, each against
//! its floor measured in the same run. A plain program that prints its figures (no criterion).
//!
//! ```text
//! cargo bench -p cluster-etp --bench etp                  # everything
//! cargo bench -p cluster-etp --bench etp -- rtt flood     # parts: rtt | rtt2p | flood | memory
//! ETP_RUNTIME=multi ETP_WORKERS=2 ETP_RUNS=7 cargo bench -p cluster-etp --bench etp -- rtt
//! ```
//!
//! - `rtt`: sequential emit-with-ack round trips, 16 B payload, one connection, both ends in
//!   this process: p50, p99, ops/s;
//! - `rtt2p`: the same with the server in another process (this program re-executed with
//!   `ETP_PEER=1`, on the same runtime flavour), as a service and its peer run;
//! - `flood`: fire-and-forget 1 KiB events client → server: events/s (every sender keeps at
//!   most `WINDOW` events in flight; the `Conn` client also awaits `Conn::writable` before
//!   each emit, as a producer should, where the bare senders wait in their transport's
//!   `feed`), beside the floor and beside bare tokio-tungstenite with the same traffic (the
//!   library the 1 M events/s target was set beside);
//! - `memory`: RSS delta over 1,000 idle connections, both ends in this process, read from
//!   `/proc/self/statm` (4 KiB pages): transports alone, then with a `Conn` on each end; each
//!   run in a fresh process.
//!
//! The floor of `rtt`, `rtt2p` and `flood` is the same traffic on the bare WebSocket
//! transports (`cluster_transport::ws`, our own WebSocket layer), without the runtime: one
//! task that owns both halves echoes each text message (feed, flush), and the flood's sender
//! flushes every 64 frames. Each round measures ours, then the floor, each in a fresh runtime;
//! the bench prints the medians over the rounds and `ours/floor`, the median of the per-round
//! ratios (the machine is shared and noisy: read the ratios, not the absolute figures).
//!
//! Settings (environment):
//! - `ETP_RUNTIME`: `current` (a current_thread runtime), `multi` (a multi-thread runtime, what
//!   services run under `#[tokio::main]`) or `both` (the default);
//! - `ETP_WORKERS`: the multi-thread runtime's workers (default 2, the machine's cores);
//! - `ETP_RUNS`: rounds per part (default 5);
//! - `ETP_CALLER`: where the client's code runs: `task` (the default: a spawned task, as a
//!   service's handlers and connections run) or `main` (inside `block_on`, as the body of
//!   `#[tokio::main]`; on a multi-thread runtime that thread is not a worker, so each wake-up
//!   between it and the connection's tasks crosses threads). Both ours and the floor.
//!
//! # Where the time goes, and the targets
//! A round trip in one process crosses four tasks with `Conn` (the caller, the client's
//! reader, the server's reader, and each side's writer) against two with the floor (the
//! caller, the echo task). What costs on a multi-thread runtime is not the work but a wake-up
//! that crosses threads (a futex wake, and on these shared 2-core machines, waiting for the
//! other thread to be scheduled), which is what made the multi-thread figures bimodal:
//! - a task woken from a worker goes to that worker's LIFO slot and runs there next, on the
//!   same thread: cheap. The caller, the readers and the handlers' acks stay on one worker;
//! - a task woken from outside the workers (from `block_on`, the body of `#[tokio::main]`)
//!   goes to the shared queue and wakes a parked worker: a thread hop each time. Before the
//!   runtime fed and flushed from the caller, `ETP_CALLER=main` paid two per round trip
//!   (caller → writer, reader → caller) against the floor's one.
//! - the writer task is now woken only to flush, once the caller's task yields (one flush
//!   per burst); a lone frame from outside the tasks is written out by the caller itself.
//!   What remains over the floor is the ETP work and one poll of each writer per round trip.
//!
//! The flood target (1 M events/s on the multi-thread runtime) is an absolute figure: the
//! floor, the bare library in the same run, reaches it only when the machine is quiet, and
//! ours follows the floor (read `ours/floor`). Per event, `Conn` adds to the floor's work the
//! UTF-8 check of `emit`, the handler table's lookup and the frame's parse on the receiving
//! side, which is why `ours/floor` stays under 1. On the multi-thread runtime the flood runs
//! three busy tasks to the floor's two: the emitting task encodes into the outbox, the
//! client's writer task feeds and writes on the other worker, the server's reader reads. The
//! outbox's shared buffer is what keeps the allocator out of that hand-off: with a frame
//! allocated on one worker and freed on the other, glibc's arena lock made a futex call every
//! four events and held the flood at 0.6 M events/s (`perf stat -e syscalls:sys_enter_futex`).
//! A flood on a current-thread runtime also checks that no wake-up is lost between the writer
//! task and the caller's task writing through the same socket: it once stalled for ever.
//!
//! With the same window and a copy per event, bare tokio-tungstenite floods as fast as our
//! own frame layer (1.2–1.5 M events/s on 2 workers on 2026-11-27, against the ~1.0 M/s it
//! showed without a window in `ws_libs`), so `ours/tokio-tungstenite` sits near `ours/floor`.
//! What `Conn` loses on 2 workers is the hand-off to its writer task. Pacing the producer
//! with `Conn::writable` and a 1 MiB high-water mark (the default since) keeps the frames it
//! queues from running megabytes ahead of the socket. On 2026-11-27, ours / floor on 2
//! workers: first, with the mark set per run, 0.76–0.88 paced at 0.5–2 MiB against 0.67–0.79
//! unpaced in the same runs (4 MiB, the window's size, as unpaced); then this build against
//! the one before, three interleaved runs, 0.95, 0.88, 0.86 against 0.68, 0.74, 0.70. Before that change, counted in the flood
//! (2026-11-27), 20–66% of the events were fed from the emitting task itself and the rest
//! went through the outbox in batches of 700–2,500 frames, each frame's bytes then crossing
//! to the writer's worker (the floor's sender touches its bytes on one core). Two policies
//! were tried and dropped that day: every frame through the outbox (0.68–0.69 M events/s
//! against 0.83–0.97 M), and a writer woken only to flush yielding once first so the
//! emitting task keeps the sink (0.75–0.84 M against 0.88–1.12 M); and a caller that finds
//! the sink idle feeding what is queued before its own frame, with or without the writer
//! lending the sink for one yield between batches (0.48–0.59 M, and 0.35–0.38 M with the
//! yield, against 0.78–1.09 M: once the transport refuses a frame, each emit takes the queue,
//! is refused again and puts it back; with callers queueing after a refusal until the writer
//! took the queue, feeding the queue from the caller matched the base, 0.61–0.68 of the
//! floor against 0.63–0.76, and lending for a yield stayed worse, 0.52–0.54). A trace of one
//! flood showed how the hand-off starts: the emitting task feeds bursts of ~384 events
//! itself, its writer flushing on the same worker once it yields, until the transport
//! refuses a frame (the socket is full); from then on the emitting task queues and the writer
//! feeds on the other worker, batch after batch of ~900 frames, for as long as the emitting
//! task keeps ahead. `valgrind --tool=callgrind`
//! (the threads serialized, so no hand-off cost) puts ours at 0.90 of the floor: the ETP
//! work itself is a tenth.

// The transport benches' helpers (runtimes, summaries, resident memory), shared by path.
#[path = "../../cluster-transport/benches/common/mod.rs"]
mod common;
use bytes::Bytes;
use cluster_etp::{Conn, ConnConfig, Handlers, Reply};
use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{Acceptor, CLOSE_NORMAL, Connector, Endpoint, Incoming, Transport};
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

const DEFAULT_RUNS: usize = 5;
const RTT_WARMUP: usize = 2_000;
const RTT_ROUNDS: usize = 20_000;
const FLOOD_EVENTS: u64 = 300_000;
const FLOOD_SIZE: usize = 1024;
const WINDOW: u64 = 4_096;
const IDLE_CONNECTIONS: usize = 1_000;

/// `RTT_WARMUP` round trips of `$round_trip`, then `RTT_ROUNDS` timed ones: their rate and
/// percentiles. (A macro rather than an async closure, so the bench's future stays `Send`.)
macro_rules! measure {
    ($round_trip:block) => {{
        for _ in 0..RTT_WARMUP {
            $round_trip
        }
        let mut samples = Vec::with_capacity(RTT_ROUNDS);
        let started = Instant::now();
        for _ in 0..RTT_ROUNDS {
            let t = Instant::now();
            $round_trip
            samples.push(t.elapsed());
        }
        summarize(&mut samples, started.elapsed())
    }};
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
    let rtt = measure!({
        let answer = client.emit_with_ack("ECHO", &payload).await.expect("ack");
        assert_eq!(answer.len(), payload.len());
    });
    client.close(CLOSE_NORMAL, "done").await;
    server.closed().await;
    rtt
}

async fn flood() -> f64 {
    let mut net = Net::new().await;
    let (c, s) = net.pair().await;
    let tally = Tally::new();
    let counter = tally.clone();
    let handlers = Handlers::new().on("EVENT", move |_, data| {
        debug_assert_eq!(data.len(), FLOOD_SIZE);
        counter.count();
        Reply::default()
    });
    let (client, server) = spawn_pair(c, s, handlers);
    let payload = vec![b'x'; FLOOD_SIZE];
    let started = Instant::now();
    for sent in 0..FLOOD_EVENTS {
        while tally.window_full(sent) {
            tally.progress.notified().await;
        }
        // As a producer should: at the pace the queue drains (see `Conn::writable`).
        client.writable().await;
        client.emit("EVENT", &payload).expect("emit");
    }
    tally.all_received().await;
    let elapsed = started.elapsed();
    client.close(CLOSE_NORMAL, "done").await;
    server.closed().await;
    FLOOD_EVENTS as f64 / elapsed.as_secs_f64()
}

/// What a flood's receiving end counted, and how the sender waits on it.
#[derive(Clone)]
struct Tally {
    received: Arc<AtomicU64>,
    progress: Arc<Notify>,
}

impl Tally {
    fn new() -> Self {
        Self {
            received: Arc::new(AtomicU64::new(0)),
            progress: Arc::new(Notify::new()),
        }
    }

    /// One more event received; the sender hears of every 256th and of the last.
    fn count(&self) {
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(256) || n == FLOOD_EVENTS {
            self.progress.notify_one();
        }
    }

    /// `WINDOW` events or more of the `sent` are in flight.
    fn window_full(&self, sent: u64) -> bool {
        sent - self.received.load(Ordering::Relaxed) >= WINDOW
    }

    async fn all_received(&self) {
        while self.received.load(Ordering::Relaxed) < FLOOD_EVENTS {
            self.progress.notified().await;
        }
    }
}

/// The writing end of a bare flood (the floor's, tokio-tungstenite's).
trait FloodSink {
    async fn feed(&mut self, frame: Bytes);
    async fn flush(&mut self);
}

impl FloodSink for Transport {
    async fn feed(&mut self, frame: Bytes) {
        self.sink.feed(frame).await.expect("feed");
    }

    async fn flush(&mut self) {
        self.sink.flush().await.expect("flush");
    }
}

impl FloodSink for tungstenite::Ws {
    async fn feed(&mut self, frame: Bytes) {
        futures_util::SinkExt::feed(self, tungstenite::text(frame))
            .await
            .expect("feed");
    }

    async fn flush(&mut self) {
        futures_util::SinkExt::flush(self).await.expect("flush");
    }
}

/// Sends the bare flood: a copy of the frame per event (as `emit` encodes one), flushed
/// every 64 frames and whenever the window is full; returns once every event was received,
/// with the rate.
async fn bare_flood(sink: &mut impl FloodSink, tally: &Tally) -> f64 {
    let mut frame = b"EVENT||0||".to_vec();
    frame.resize(FLOOD_SIZE + 10, b'x');
    let started = Instant::now();
    let mut unflushed = 0;
    for sent in 0..FLOOD_EVENTS {
        if tally.window_full(sent) {
            sink.flush().await;
            unflushed = 0;
            while tally.window_full(sent) {
                tally.progress.notified().await;
            }
        }
        sink.feed(Bytes::copy_from_slice(&frame)).await;
        unflushed += 1;
        if unflushed == 64 {
            sink.flush().await;
            unflushed = 0;
        }
    }
    sink.flush().await;
    tally.all_received().await;
    FLOOD_EVENTS as f64 / started.elapsed().as_secs_f64()
}

/// The floor: the same round trip on the raw WebSocket transports, no ETP runtime (the server
/// echoes each text message from one task that owns both halves).
async fn floor_rtt() -> Rtt {
    let mut net = Net::new().await;
    let (mut client, server) = net.pair().await;
    let echo = tokio::spawn(raw_echo(server));
    let frame = Bytes::from_static(b"ECHO||1||xxxxxxxxxxxxxxxx");
    let rtt = measure!({
        raw_round_trip(&mut client, &frame).await;
    });
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
    let tally = Tally::new();
    let counter = tally.clone();
    let sink = tokio::spawn(async move {
        while let Ok(Incoming::Text(text)) = server.stream.recv().await {
            debug_assert_eq!(text.len(), FLOOD_SIZE + 10);
            counter.count();
        }
    });
    let rate = bare_flood(&mut client, &tally).await;
    client
        .sink
        .close(CLOSE_NORMAL, "done")
        .await
        .expect("close");
    let _ = client.stream.recv().await;
    let _ = sink.await;
    rate
}

/// The issue's reference for `flood`: the same traffic on bare tokio-tungstenite (the library
/// the transport used first, whose multi-thread flood the 1 M events/s target was set beside):
/// the sender copies each frame, feeds it, and flushes every 64 frames and whenever the
/// window is full; a task on the other end counts.
async fn tungstenite_flood() -> f64 {
    use futures_util::StreamExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (mut client, mut server) = tungstenite::pair(&listener).await;
    let tally = Tally::new();
    let counter = tally.clone();
    let sink = tokio::spawn(async move {
        while let Some(Ok(message)) = server.next().await {
            if !tungstenite::is_text(&message) {
                break;
            }
            debug_assert_eq!(message.len(), FLOOD_SIZE + 10);
            counter.count();
        }
    });
    let rate = bare_flood(&mut client, &tally).await;
    client.close(None).await.expect("close");
    let _ = sink.await;
    rate
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

/// The runtimes the bench runs on, from `ETP_RUNTIME` and `ETP_WORKERS`.
#[derive(Clone, Copy, Debug)]
enum Flavor {
    Current,
    Multi(usize),
}

impl Flavor {
    fn runtime(self) -> tokio::runtime::Runtime {
        match self {
            Self::Current => current_thread(),
            Self::Multi(workers) => multi_thread_with(workers),
        }
    }

    /// Runs `bench` in a fresh runtime: as a spawned task, as a service's code runs, or with
    /// `ETP_CALLER=main` inside `block_on` itself, as `main` under `#[tokio::main]` does (on a
    /// multi-thread runtime that thread is not one of the workers: every wake-up between it and
    /// a task crosses threads).
    fn run<F>(self, bench: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime();
        match std::env::var("ETP_CALLER").as_deref() {
            Ok("main") => runtime.block_on(bench),
            Ok("task") | Err(_) => {
                runtime.block_on(async { tokio::spawn(bench).await.expect("bench task") })
            }
            Ok(other) => panic!("ETP_CALLER={other}: task or main"),
        }
    }

    fn name(self) -> String {
        match self {
            Self::Current => "current_thread".to_owned(),
            Self::Multi(workers) => format!("multi_thread({workers})"),
        }
    }

    /// How a peer process is told to build the same runtime (`ETP_RUNTIME`, `ETP_WORKERS`).
    fn env(self) -> [(&'static str, String); 2] {
        match self {
            Self::Current => [
                ("ETP_RUNTIME", "current".into()),
                ("ETP_WORKERS", "1".into()),
            ],
            Self::Multi(w) => [
                ("ETP_RUNTIME", "multi".into()),
                ("ETP_WORKERS", w.to_string()),
            ],
        }
    }
}

/// The settings from the environment (see the module docs).
struct Settings {
    runs: usize,
    flavors: Vec<Flavor>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a valid value")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let runs = env_or("ETP_RUNS", DEFAULT_RUNS).max(1);
        let workers = env_or("ETP_WORKERS", 2usize).max(1);
        let flavors = match std::env::var("ETP_RUNTIME").as_deref() {
            Ok("current") => vec![Flavor::Current],
            Ok("multi") => vec![Flavor::Multi(workers)],
            Ok("both") | Err(_) => vec![Flavor::Current, Flavor::Multi(workers)],
            Ok(other) => panic!("ETP_RUNTIME={other}: current, multi or both"),
        };
        Self { runs, flavors }
    }
}

/// ours / floor, per round.
fn ratio(ours: f64, floor: f64) -> f64 {
    ours / floor
}

/// Round trips of ours and of the floor, one of each per round, interleaved, each in a fresh
/// runtime; prints the medians over the rounds and the median of the per-round ratios.
fn compare_rtt(what: &str, flavor: Flavor, runs: usize, mut round: impl FnMut(Side) -> Rtt) {
    let mut ours = Vec::with_capacity(runs);
    let mut floor = Vec::with_capacity(runs);
    for _ in 0..runs {
        ours.push(round(Side::Conn));
        floor.push(round(Side::Floor));
    }
    let med = |v: &[Rtt], key: fn(&Rtt) -> f64| spread(v.iter().map(key).collect(), |x| *x);
    let p50 = |r: &Rtt| us(r.p50);
    let p99 = |r: &Rtt| us(r.p99);
    let ops = |r: &Rtt| r.ops_per_sec;
    let per_round = |key: fn(&Rtt) -> f64| {
        let ratios: Vec<f64> = ours
            .iter()
            .zip(&floor)
            .map(|(o, f)| ratio(key(o), key(f)))
            .collect();
        spread(ratios, |x| *x).1
    };
    let (o50, f50, o99, f99) = (
        med(&ours, p50),
        med(&floor, p50),
        med(&ours, p99),
        med(&floor, p99),
    );
    println!(
        "{what:<5} {:<18} conn  p50 {:>5.1} µs  p99 {:>6.1} µs  {:>6.0} ops/s | floor p50 {:>5.1} µs  \
         p99 {:>6.1} µs  {:>6.0} ops/s | ours/floor p50 {:.2}  p99 {:.2}   (medians of {runs} rounds; \
         conn p50 {:.1}–{:.1}, p99 {:.1}–{:.1}; floor p50 {:.1}–{:.1}, p99 {:.1}–{:.1})",
        flavor.name(),
        o50.1,
        o99.1,
        med(&ours, ops).1,
        f50.1,
        f99.1,
        med(&floor, ops).1,
        per_round(p50),
        per_round(p99),
        o50.0,
        o50.2,
        o99.0,
        o99.2,
        f50.0,
        f50.2,
        f99.0,
        f99.2,
    );
}

/// Flood rates of ours, of the floor and of bare tokio-tungstenite, interleaved as in
/// [`compare_rtt`]; prints the medians and the medians of the per-round ratios.
fn compare_flood(flavor: Flavor, runs: usize) {
    let mut ours = Vec::with_capacity(runs);
    let mut floor = Vec::with_capacity(runs);
    let mut reference = Vec::with_capacity(runs);
    for _ in 0..runs {
        ours.push(flavor.run(flood()));
        floor.push(flavor.run(floor_flood()));
        reference.push(flavor.run(tungstenite_flood()));
    }
    let per_round = |of: &[f64]| {
        let ratios: Vec<f64> = ours.iter().zip(of).map(|(o, f)| ratio(*o, *f)).collect();
        spread(ratios, |x| *x).1
    };
    let (to_floor, to_reference) = (per_round(&floor), per_round(&reference));
    let (o, f, t) = (
        spread(ours, |x| *x),
        spread(floor, |x| *x),
        spread(reference, |x| *x),
    );
    let m = |events: f64| events / 1e6;
    println!(
        "flood {:<18} conn {:>5.2} M events/s | floor {:>5.2} M events/s | ours/floor {:.2} | \
         tokio-tungstenite {:>5.2} M events/s | ours/tokio-tungstenite {:.2}   (medians of {runs} \
         rounds, 1 KiB events; conn {:.2}–{:.2}, floor {:.2}–{:.2}, tokio-tungstenite {:.2}–{:.2})",
        flavor.name(),
        m(o.1),
        m(f.1),
        to_floor,
        m(t.1),
        to_reference,
        m(o.0),
        m(o.2),
        m(f.0),
        m(f.2),
        m(t.0),
        m(t.2),
    );
}

/// Which side of a comparison a round measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// `Conn` on both ends.
    Conn,
    /// The bare transports (our `ws` module), no runtime.
    Floor,
}

impl Side {
    /// The module name a two-process client gives, which tells the peer what to run.
    fn module(self) -> &'static str {
        match self {
            Self::Conn => "conn",
            Self::Floor => "floor",
        }
    }
}

/// The peer process of `rtt2p`: serves echoes on a loopback WebSocket until its stdin ends.
/// It prints its port on stdout; a client with module name `conn` gets a `Conn` echoing
/// `ECHO` events with their ack, `floor` a bare echo of each text message.
fn peer_process(flavor: Flavor) {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    flavor.runtime().block_on(async {
        let mut acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
            .await
            .expect("bind");
        println!("{}", acceptor.local_addr().port());
        loop {
            let accepted = acceptor.accept().await.expect("accept");
            if accepted.module_name == Side::Conn.module() {
                let echo = Handlers::new().on("ECHO", |_, data| Reply::Ack(data));
                let _conn = Conn::spawn(accepted.transport, echo, ConnConfig::default());
            } else {
                tokio::spawn(raw_echo(accepted.transport));
            }
        }
    });
}

/// Echoes each text message as the floor's server does.
async fn raw_echo(mut server: Transport) {
    while let Ok(Incoming::Text(text)) = server.stream.recv().await {
        if server.sink.feed(text).await.is_err() || server.sink.flush().await.is_err() {
            break;
        }
    }
}

/// `rtt` and the floor's round trip with the server in another process (this program,
/// re-executed with `ETP_PEER=1`, on the same runtime flavour).
fn run_rtt_two_processes(flavor: Flavor, runs: usize) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = std::process::Command::new(exe)
        .env("ETP_PEER", "1")
        .envs(flavor.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the peer process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("the peer's port");
    let endpoint: Endpoint = format!("127.0.0.1:{}", line.trim())
        .parse()
        .expect("endpoint");
    compare_rtt("rtt2p", flavor, runs, |side| {
        let endpoint = endpoint.clone();
        flavor.run(async move { rtt_to(&endpoint, side).await })
    });
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Round trips to a peer process.
async fn rtt_to(endpoint: &Endpoint, side: Side) -> Rtt {
    let connector = WsConnector::new(WsConfig::default()).expect("connector");
    let mut transport = connector
        .connect(endpoint, side.module())
        .await
        .expect("connect");
    let payload = [b'x'; 16];
    match side {
        Side::Conn => {
            let client = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
            let rtt = measure!({
                let answer = client.emit_with_ack("ECHO", &payload).await.expect("ack");
                assert_eq!(answer.len(), payload.len());
            });
            client.close(CLOSE_NORMAL, "done").await;
            rtt
        }
        Side::Floor => {
            let frame = Bytes::from_static(b"ECHO||1||xxxxxxxxxxxxxxxx");
            let rtt = measure!({
                raw_round_trip(&mut transport, &frame).await;
            });
            let _ = transport.sink.close(CLOSE_NORMAL, "done").await;
            let _ = transport.stream.recv().await;
            rtt
        }
    }
}

/// One bare round trip: feed, flush, wait for the echo.
async fn raw_round_trip(client: &mut Transport, frame: &Bytes) -> Bytes {
    client.sink.feed(frame.clone()).await.expect("feed");
    client.sink.flush().await.expect("flush");
    match client.stream.recv().await {
        Ok(Incoming::Text(text)) => text,
        other => panic!("unexpected {other:?}"),
    }
}

/// Each run in a fresh process (this program with `memory-once`), so no run reuses the heap
/// another one grew.
fn run_memory(rounds: usize) {
    let exe = std::env::current_exe().expect("current exe");
    let runs: Vec<(f64, f64)> = (0..rounds)
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
        "memory per idle connection, both ends (median of {rounds}): {:.1} KiB total = {:.1} KiB \
         transports + {:.1} KiB conn runtime   (totals {:.1}–{:.1} KiB)",
        kib(median.0 + median.1),
        kib(median.0),
        kib(median.1),
        kib(min.0 + min.1),
        kib(max.0 + max.1),
    );
}

fn main() {
    let settings = Settings::from_env();
    if std::env::var_os("ETP_PEER").is_some() {
        peer_process(settings.flavors[0]);
        return;
    }
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
    let runs = settings.runs;
    // Memory first, before the other parts grow the heap.
    if wants("memory") {
        run_memory(runs);
    }
    for &flavor in &settings.flavors {
        if wants("rtt") {
            compare_rtt("rtt", flavor, runs, |side| match side {
                Side::Conn => flavor.run(rtt()),
                Side::Floor => flavor.run(floor_rtt()),
            });
        }
        if wants("rtt2p") {
            run_rtt_two_processes(flavor, runs);
        }
        if wants("flood") {
            compare_flood(flavor, runs);
        }
    }
}
