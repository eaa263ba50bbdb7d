//! Unary HTTP call latency and throughput: a 100-byte JSON echo through our server and
//! client, against a bare axum handler called by a plain hyper client measured in the same
//! run (the floor), at concurrency 1 and 64, everything on loopback in one process on a
//! 2-worker tokio runtime.
//!
//! `cargo bench -p cluster-http --bench echo` (`BENCH_ROUNDS`, default 5, interleaved rounds
//! of `BENCH_SECS`, default 1, per stack; the medians are printed, and the ratios to the
//! floor as medians of the per-round ratios; `BENCH_STACKS=0,2` runs only those rows).
//!
//! The rows:
//! - 0, the floor: `axum::serve` with a `Json<Value>` echo handler (decodes the body, encodes
//!   the answer), called by hyper-util's pooled client that sends the body with
//!   `Content-Type: application/json` and decodes the answer into a `Value`.
//! - 1, cluster-http as a module runs it: our server and client with their defaults, metrics
//!   and request pipeline on (the process-wide Prometheus recorder installed first, as a
//!   module does; the recorder's upkeep runs after each of its rounds, off the call path).
//!   The handler is `Router::handle` of a `Value`: decode (keys folded), Go-style encode
//!   with a newline.
//! - 2, the same with the metrics off, server and client (pipeline on).
//! - 3, the same with the pipeline off, server and client (metrics on): against row 1, the
//!   pipeline's cost.
//! - 4, metrics and pipeline off, server and client.
//! - 5, our server (defaults), the plain client: the server's part.
//! - 6, the floor's server, our client (defaults): the client's part (the request id, the
//!   trace context check, host choice, the whole-call timeout, the metrics).
//! - 7, the floor's handler served by `cluster-serve` (what our server is built on: the
//!   connection cap, the timeouts, the body read whole before the route, the peer's
//!   address on each request), the plain client.
//! - 8, the floor with what isp-kit's convention adds to every call: the plain client sends
//!   a new `x-request-id` and waits within a 15 s timeout (a tokio timer per call).
//! - 9, row 6 without the client's timeout (`timeout(Duration::ZERO)`): the timer's part.
//!
//! No `tracing` subscriber and no OpenTelemetry propagator are installed: the pipeline's
//! figures are its own work (with a subscriber, the log line and the span cost what that
//! subscriber makes of them: `cargo bench -p cluster-pipeline --bench layers`).
//!
//! `cpu us/call` is the process's CPU time (both ends) per call, less moved by other load on
//! the machine than the rates; `allocs/call` the heap allocations per call, both ends (a
//! counting allocator wraps the system one, in every row alike), which load does not move
//! at all.

use axum::Json;
use bytes::Bytes;
use cluster_http::{ApiError, CallContext, Endpoint, HttpClient, Router, Server};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Plain = HyperClient<HttpConnector, Full<Bytes>>;

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator as it came.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn floor_router() -> axum::Router {
    axum::Router::new().route(
        "/echo/json",
        axum::routing::post(|Json(body): Json<Value>| async move { Json(body) }),
    )
}

async fn floor_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, floor_router()).await.unwrap() });
    addr
}

async fn floor_on_cluster_serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = cluster_serve::ServeConfig::new("bench").with_max_body_size(64 << 20);
    tokio::spawn(cluster_serve::serve(
        listener,
        floor_router(),
        config,
        std::future::pending(),
    ));
    addr
}

fn plain_client() -> Plain {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

async fn plain_call(client: Plain, uri: http::Uri, body: Bytes, isp: bool) {
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let response = if isp {
        // What isp-kit's convention adds to every call: a new request id, and a deadline.
        let id = cluster_http::new_request_id();
        request
            .headers_mut()
            .insert("x-request-id", http::HeaderValue::from_str(&id).unwrap());
        tokio::time::timeout(cluster_http::DEFAULT_TIMEOUT, client.request(request))
            .await
            .unwrap()
            .unwrap()
    } else {
        client.request(request).await.unwrap()
    };
    assert!(response.status().is_success());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let _: Value = serde_json::from_slice(&bytes).unwrap();
}

async fn our_call(client: HttpClient, body: Bytes) {
    let _: Value = client
        .post("echo/json")
        .raw_body(body)
        .json()
        .await
        .unwrap();
}

fn our_router() -> Router {
    Router::new()
        .handle(
            Endpoint::post("echo/json"),
            |_ctx: CallContext, body: Value| async move { Ok::<_, ApiError>(body) },
        )
        .unwrap()
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    p50: Duration,
    p99: Duration,
    rate: f64,
    cpu: f64,
    allocs: f64,
}

/// The process's CPU time so far (all threads), from `/proc/self/stat` (10 ms ticks).
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

async fn measure<F, Fut>(concurrency: usize, secs: f64, call: F) -> Figures
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    // Warm up: connections made, caches hot.
    let warm: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    call().await;
                }
            })
        })
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let cpu_start = cpu_time();
    let allocs_start = ALLOCATIONS.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    call().await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_start).as_secs_f64() * 1e6 / all.len() as f64;
    let allocs = (ALLOCATIONS.load(Ordering::Relaxed) - allocs_start) as f64 / all.len() as f64;
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        rate: all.len() as f64 / elapsed,
        cpu,
        allocs,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

const NAMES: [&str; 10] = [
    "floor: axum + hyper client",
    "cluster-http (defaults)",
    "cluster-http, metrics off",
    "cluster-http, pipeline off",
    "cluster-http, metrics+pipeline off",
    "our server, plain client",
    "plain server, our client",
    "axum on cluster-serve, plain client",
    "floor + request id + timeout",
    "plain server, our client, no timeout",
];

fn main() {
    let rounds: usize = env("BENCH_ROUNDS", 5);
    let secs: f64 = env("BENCH_SECS", 1.0);
    let only: Option<Vec<usize>> = std::env::var("BENCH_STACKS")
        .ok()
        .map(|s| s.split(',').filter_map(|i| i.trim().parse().ok()).collect());
    let runs = |i: usize| only.as_ref().is_none_or(|o| o.contains(&i));
    // As a module does, before any server or client exists.
    let prometheus = cluster_metrics::prometheus::install().expect("install the recorder");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let body = Bytes::from(format!(r#"{{"data":"{}"}}"#, "x".repeat(89)));
        assert_eq!(body.len(), 100);
        let floor = floor_server().await;
        let on_serve = floor_on_cluster_serve().await;
        let server = |metrics: bool, pipeline: bool| {
            Server::builder(our_router())
                .metrics(metrics)
                .pipeline(pipeline)
                .bind("127.0.0.1:0")
        };
        let defaults = server(true, true).await.unwrap();
        let unmetered = server(false, true).await.unwrap();
        let unpiped = server(true, false).await.unwrap();
        let bare = server(false, false).await.unwrap();
        let uri = |addr: SocketAddr| -> http::Uri {
            format!("http://{addr}/echo/json").parse().unwrap()
        };
        println!(
            "unary 100-byte JSON echo over HTTP/1.1, loopback, 2 worker threads; {rounds} interleaved rounds of {secs} s per stack, medians"
        );
        for concurrency in [1usize, 64] {
            let plain = plain_client();
            let ours = |addr: SocketAddr, metrics: bool, pipeline: bool| {
                HttpClient::builder()
                    .metrics(metrics)
                    .pipeline(pipeline)
                    .build([addr.to_string()])
            };
            let clients = [
                None,
                Some(ours(defaults.local_addr(), true, true)),
                Some(ours(unmetered.local_addr(), false, true)),
                Some(ours(unpiped.local_addr(), true, false)),
                Some(ours(bare.local_addr(), false, false)),
                None,
                Some(ours(floor, true, true)),
                None,
                None,
                Some(
                    HttpClient::builder()
                        .timeout(Duration::ZERO)
                        .build([floor.to_string()]),
                ),
            ];
            let mut results: Vec<Vec<Figures>> = vec![Vec::new(); NAMES.len()];
            for round in 0..rounds {
                let mut order: Vec<usize> = (0..NAMES.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    if !runs(i) {
                        continue;
                    }
                    let b = body.clone();
                    let figures = match &clients[i] {
                        None => {
                            let target = match i {
                                0 | 8 => uri(floor),
                                5 => uri(defaults.local_addr()),
                                _ => uri(on_serve),
                            };
                            let client = plain.clone();
                            let isp = i == 8;
                            measure(concurrency, secs, move || {
                                plain_call(client.clone(), target.clone(), b.clone(), isp)
                            })
                            .await
                        }
                        Some(client) => {
                            let client = client.clone();
                            measure(concurrency, secs, move || our_call(client.clone(), b.clone()))
                                .await
                        }
                    };
                    // The summaries' upkeep (a background thread's every 5 s in a module),
                    // off the call path.
                    prometheus.run_upkeep();
                    results[i].push(figures);
                }
            }
            println!();
            println!(
                "{:<38} {:>5} {:>9} {:>9} {:>10} {:>11} {:>11} | {:>8} {:>8} {:>8}",
                "stack",
                "conc",
                "p50 us",
                "p99 us",
                "calls/s",
                "cpu us/call",
                "allocs/call",
                "p50 x",
                "rate x",
                "cpu x"
            );
            for (i, name) in NAMES.iter().enumerate() {
                let row = &results[i];
                if row.is_empty() {
                    continue;
                }
                let med = |f: fn(&Figures) -> f64| median(row.iter().map(f).collect());
                // Ratios to the floor: medians of the per-round ratios.
                let ratio = |f: fn(&Figures) -> f64| {
                    median(
                        row.iter()
                            .zip(&results[0])
                            .map(|(ours, floor)| f(ours) / f(floor))
                            .collect(),
                    )
                };
                println!(
                    "{:<38} {:>5} {:>9.1} {:>9.1} {:>10.0} {:>11.1} {:>11.1} | {:>8.2} {:>8.2} {:>8.2}",
                    name,
                    concurrency,
                    med(|f| us(f.p50)),
                    med(|f| us(f.p99)),
                    med(|f| f.rate),
                    med(|f| f.cpu),
                    med(|f| f.allocs),
                    ratio(|f| us(f.p50)),
                    ratio(|f| f.rate),
                    ratio(|f| f.cpu),
                );
            }
        }
    });
}
