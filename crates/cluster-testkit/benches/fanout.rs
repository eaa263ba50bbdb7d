//! Fan-out bench: how fast one config change reaches N connected modules, and what one
//! connection costs the service.
//! The Go stack's figures and the floors to compare with: `docs/performance.md`.
//!
//! The service runs in this process on a loopback WebSocket; the N clients run in a child
//! process (this same binary with `--fanout-client`), so the service's memory is measured
//! alone and neither process needs more than N file descriptors. Each round sets a new config
//! carrying its send time (wall clock, same machine); the child reports, per round, when the
//! last of its N connections had it and the median per-connection latency.
//!
//! A second part runs the same fan-out over the in-memory transport with the clients in this
//! process: what the service itself costs, without sockets.
//!
//! `cargo bench -p cluster-testkit --bench fanout`; `FANOUT_N` (default 10000) and
//! `FANOUT_ROUNDS` (default 20) change the size, `FANOUT_MODE=ws|memory` runs one part.

use bytes::Bytes;
use cluster_etp::{Conn, ConnConfig, Handlers, Reply};
use cluster_testkit::FakeConfigService;
use cluster_transport::ws::{WsConfig, WsConnector};
use cluster_transport::{Connector, Endpoint};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SCHEMA: &[u8] =
    br#"{"version":"1.0.0","schema":{"type":"object"},"config":{"seq":0,"sentAt":0}}"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--fanout-client") {
        client(&args[at + 1], args[at + 2].parse().expect("n"));
    } else {
        // WebSocket first: its memory figure wants a fresh process.
        let mode = std::env::var("FANOUT_MODE").unwrap_or_default();
        if mode != "memory" {
            server();
        }
        if mode != "ws" {
            memory();
        }
    }
}

/// The same fan-out over the in-memory transport, clients in this process: what the service
/// itself costs, without sockets.
fn memory() {
    let n = env_usize("FANOUT_N", 10_000);
    let rounds = env_usize("FANOUT_ROUNDS", 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let service = FakeConfigService::builder().recording(false).build();
        let listener = service.listen_memory().expect("bind");
        let endpoint = listener.endpoint();
        let received = Arc::new(AtomicUsize::new(0));
        let all_in = Arc::new(tokio::sync::Notify::new());
        let handlers = {
            let received = received.clone();
            let all_in = all_in.clone();
            Handlers::new().on("CONFIG:SEND_CONFIG_CHANGED", move |_, _| {
                if received.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    all_in.notify_one();
                }
                Reply::default()
            })
        };
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let transport = listener
                .connector
                .connect(&endpoint, "fanout")
                .await
                .expect("connect");
            let conn = Conn::spawn(transport, handlers.clone(), ConnConfig::default());
            // Waiting for the ack also lets the service accept (the memory backlog is bounded).
            let ack = conn
                .emit_with_ack_timeout("MODULE:SEND_CONFIG_SCHEMA", SCHEMA, Duration::from_secs(30))
                .await
                .expect("ack");
            assert_eq!(&ack[..], b"ok");
            conns.push(conn);
        }
        let mut times = Vec::new();
        for round in 1..=rounds {
            received.store(0, Ordering::Release);
            let started = std::time::Instant::now();
            let change = service
                .set_config("fanout", format!(r#"{{"seq":{round}}}"#), None)
                .expect("set");
            assert_eq!(change.notified, n);
            all_in.notified().await;
            if round > 1 {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "fanout (in-memory transport, clients in process, multi-thread runtime, 2 workers; {} rounds): one config change reaching {n} connections: p50 {:.2} ms (min {:.2}, max {:.2})",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.0),
            percentile(&times, 1.0)
        );
        for conn in &conns {
            conn.start_close(1000, "bench done");
        }
        service.stop().await;
    });
}

fn server() {
    let n = env_usize("FANOUT_N", 10_000);
    let rounds = env_usize("FANOUT_ROUNDS", 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // On a worker thread, as a test task would be: wake-ups then go to the worker's queue.
    let part = runtime.spawn(async move {
        let ws = cluster_transport::ws::WsServerConfig::default();
        let service = FakeConfigService::builder()
            .recording(false)
            .ws_config(ws)
            .build();
        let addr = service.listen_ws("127.0.0.1:0").await.expect("bind");
        let rss_before = rss_bytes();
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["--fanout-client", &addr.to_string(), &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the client process");
        let mut to_child = child.stdin.take().expect("stdin");
        let mut from_child = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let started = std::time::Instant::now();
        let line = tokio::task::block_in_place(|| from_child.next())
            .expect("child line")
            .expect("child io");
        assert_eq!(line, "connected", "child said {line}");
        let connect_time = started.elapsed();
        service
            .wait_connections("fanout", n, Duration::from_secs(60))
            .await
            .expect("all connected");
        let rss_after = rss_bytes();
        let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / n as f64;
        // What stays once malloc gives back the free memory the handshakes left in its arenas.
        // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
        unsafe { libc::malloc_trim(0) };
        let rss_trimmed = rss_bytes();
        let per_conn_live = (rss_trimmed.saturating_sub(rss_before)) as f64 / n as f64;
        println!(
            "fanout: {n} modules connected and handshaked in {:.2} s; service RSS {:.1} MiB -> {:.1} MiB: {:.2} KiB per connection ({:.2} KiB after malloc_trim)",
            connect_time.as_secs_f64(),
            rss_before as f64 / 1048576.0,
            rss_after as f64 / 1048576.0,
            per_conn / 1024.0,
            per_conn_live / 1024.0
        );
        let mut completions = Vec::new();
        let mut medians = Vec::new();
        for round in 1..=rounds {
            let config = format!(r#"{{"seq":{round},"sentAt":{}}}"#, now_ns());
            let set = std::time::Instant::now();
            let change = service.set_config("fanout", config, None).expect("set");
            let queued = set.elapsed();
            assert_eq!(change.notified, n);
            let line = tokio::task::block_in_place(|| from_child.next())
                .expect("child line")
                .expect("child io");
            let mut parts = line.split_whitespace();
            let (Some("round"), Some(r), Some(all), Some(median)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                panic!("child said {line}");
            };
            assert_eq!(r.parse::<usize>().unwrap(), round);
            let all: f64 = all.parse().unwrap();
            let median: f64 = median.parse().unwrap();
            if round > 1 {
                // The first round warms caches and allocators.
                completions.push(all);
                medians.push(median);
            }
            eprintln!(
                "round {round}: queued in {:.2} ms, last connection had it after {all:.2} ms, median connection after {median:.2} ms",
                queued.as_secs_f64() * 1e3
            );
        }
        completions.sort_by(f64::total_cmp);
        medians.sort_by(f64::total_cmp);
        println!(
            "fanout: one config change reaching {n} connections (multi-thread runtime, 2 workers; {} rounds): all reached p50 {:.2} ms (min {:.2}, max {:.2}); per-connection latency median-of-rounds p50 {:.2} ms",
            completions.len(),
            percentile(&completions, 0.5),
            percentile(&completions, 0.0),
            percentile(&completions, 1.0),
            percentile(&medians, 0.5),
        );
        writeln!(to_child, "done").ok();
        drop(to_child);
        let _ = tokio::task::block_in_place(|| child.wait());
        service.stop().await;
    });
    runtime.block_on(part).expect("the WebSocket part panicked");
}

fn client(addr: &str, n: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let endpoint: Endpoint = addr.parse().expect("addr");
        let connector: Arc<dyn Connector> =
            Arc::new(WsConnector::new(WsConfig::default()).expect("connector"));
        // Per round: latencies (ms) of each connection.
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let got = Arc::new(AtomicUsize::new(0));
        let round_done = Arc::new(tokio::sync::Notify::new());
        let handlers = {
            let latencies = latencies.clone();
            let got = got.clone();
            let round_done = round_done.clone();
            Handlers::new().on("CONFIG:SEND_CONFIG_CHANGED", move |_, data: Bytes| {
                let received = now_ns();
                let text = std::str::from_utf8(&data).unwrap_or("");
                let sent: u128 = text
                    .split("\"sentAt\":")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('}').parse().ok())
                    .unwrap_or(received);
                let ms = (received.saturating_sub(sent)) as f64 / 1e6;
                latencies.lock().unwrap().push(ms);
                if got.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    round_done.notify_one();
                }
                Reply::default()
            })
        };
        let mut conns = Vec::with_capacity(n);
        let mut connect_ms = Vec::with_capacity(n);
        let mut ack_ms = Vec::with_capacity(n);
        let batch = 100;
        for start in (0..n).step_by(batch) {
            let mut joins = Vec::new();
            for _ in start..(start + batch).min(n) {
                let connector = connector.clone();
                let endpoint = endpoint.clone();
                let handlers = handlers.clone();
                joins.push(tokio::spawn(async move {
                    let t0 = std::time::Instant::now();
                    let transport = connector.connect(&endpoint, "fanout").await.expect("connect");
                    let connected = t0.elapsed();
                    let conn = Conn::spawn(transport, handlers, ConnConfig::default());
                    let ack = conn
                        .emit_with_ack_timeout(
                            "MODULE:SEND_CONFIG_SCHEMA",
                            SCHEMA,
                            Duration::from_secs(30),
                        )
                        .await
                        .expect("schema ack");
                    assert_eq!(&ack[..], b"ok");
                    (conn, connected, t0.elapsed())
                }));
            }
            for join in joins {
                let (conn, connected, acked) = join.await.expect("client task");
                connect_ms.push(connected.as_secs_f64() * 1e3);
                ack_ms.push(acked.as_secs_f64() * 1e3);
                conns.push(conn);
            }
        }
        connect_ms.sort_by(f64::total_cmp);
        ack_ms.sort_by(f64::total_cmp);
        eprintln!(
            "client: connect p50 {:.2} ms p99 {:.2} ms; connect + schema ack p50 {:.2} ms p99 {:.2} ms",
            percentile(&connect_ms, 0.5),
            percentile(&connect_ms, 0.99),
            percentile(&ack_ms, 0.5),
            percentile(&ack_ms, 0.99)
        );
        println!("connected");
        std::io::stdout().flush().ok();
        let mut round = 0;
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        });
        tokio::pin!(stdin);
        loop {
            tokio::select! {
                _ = &mut stdin => break,
                () = round_done.notified() => {
                    round += 1;
                    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
                    got.store(0, Ordering::Release);
                    all.sort_by(f64::total_cmp);
                    println!("round {round} {:.3} {:.3}", percentile(&all, 1.0), percentile(&all, 0.5));
                    std::io::stdout().flush().ok();
                }
            }
        }
        for conn in &conns {
            conn.start_close(1000, "bench done");
        }
    });
}
