//! What the layers cost per call, alone: an echo service over `http` types (reads a 100-byte
//! request body, answers a 100-byte one) called in a loop on a current-thread runtime, bare
//! and under each layer, and under the whole `ServerLayer::grpc`; each call's response body
//! is read to its end (where the log line is written). The bare row's time (request made,
//! service called, bodies read) is subtracted from the others: the figures are nanoseconds
//! a call added by the layer.
//!
//! `cargo bench -p cluster-pipeline --bench layers` (`BENCH_ROUNDS`, default 5;
//! `BENCH_CALLS` per round and row, default 100000; medians of the rounds).
//!
//! Four settings, as a module runs:
//! - no subscriber (the floor of the layers' own work: `tracing` checks an atomic);
//! - a fmt subscriber at INFO writing to `io::sink` (the log line formatted, the span made);
//! - the same at DEBUG (the bodies copied, parsed, masked, printed);
//! - a registry with tracing-opentelemetry's layer over an SDK provider that exports
//!   nothing, W3C propagation, and a `traceparent` on every request (no log output).
//!
//! Figures (2026-12-08, release, 3 runs of the default command on 2 cores shared with other
//! builds; ns added per call, ranges):
//!
//! | setting | request id | log | trace | recover | all four |
//! |---|---|---|---|---|---|
//! | no subscriber | 250–380 | 20–70 | 0–110 | ≈ 0 | 390–510 |
//! | fmt at INFO, to a sink | 280–310 | 1,470–1,600 | 790–1,090 | ≈ 0 | 2,600–2,930 |
//! | fmt at DEBUG (bodies) | 190–420 | 1,800–1,880 | 740–800 | ≈ 0 | 2,970–3,050 |
//! | OpenTelemetry, traceparent in | 120–340 | 320–450 | 2,070–2,260 | ≈ 0 | 2,800–3,820 |
//!
//! The bare service itself takes 670–990 ns a call (the request built, two 100-byte bodies
//! read); differences under ~100 ns are within the noise. The request id row includes the
//! echoed response header (`Echo::Always`, the default).

use bytes::Bytes;
use cluster_pipeline::{
    LogBody, LogLayer, Panic, RecoverLayer, RequestIdLayer, ServerLayer, TraceLayer,
};
use http_body_util::{BodyExt as _, Full};
use opentelemetry::trace::TracerProvider as _;
use std::convert::Infallible;
use std::time::Instant;
use tower::{Layer, Service, ServiceExt as _, service_fn};
use tracing_subscriber::layer::SubscriberExt as _;

type Body = Full<Bytes>;

fn body() -> Bytes {
    Bytes::from(format!(r#"{{"data":"{}"}}"#, "x".repeat(89)))
}

fn request(traceparent: bool) -> http::Request<Body> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri("/isp.BackendService/Request")
        .header("proxy_method_name", "bench/echo")
        .header("x-request-id", "0123456789abcdef0123456789abcdef")
        .header("content-type", "application/grpc");
    if traceparent {
        builder = builder.header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }
    builder.body(Body::new(body())).unwrap()
}

fn panic_answer(_: &Panic) -> http::Response<Body> {
    http::Response::new(Body::default())
}

/// Runs `calls` calls through `service`; ns per call.
async fn measure<S, ResB>(service: &mut S, calls: u32, traceparent: bool) -> f64
where
    S: Service<http::Request<Body>, Response = http::Response<ResB>>,
    S::Error: std::fmt::Debug,
    ResB: http_body::Body,
    ResB::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..calls {
        let request = request(traceparent);
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(calls)
}

macro_rules! echo {
    ($req:ty) => {
        service_fn(|request: http::Request<$req>| async move {
            let _ = request.into_body().collect().await.unwrap();
            Ok::<_, Infallible>(http::Response::new(Body::new(body())))
        })
    };
}

/// One setting's rows: median ns per call, bare and added by each layer.
fn rows(rt: &tokio::runtime::Runtime, rounds: usize, calls: u32, traceparent: bool) -> Vec<f64> {
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); 6];
    for _ in 0..rounds {
        rt.block_on(async {
            let mut bare = echo!(Body);
            let mut request_id = RequestIdLayer::new().layer(echo!(Body));
            let mut log = LogLayer::grpc().layer(echo!(LogBody<Body>));
            let mut trace = TraceLayer::grpc().layer(echo!(Body));
            let mut recover = RecoverLayer::new(panic_answer).layer(echo!(Body));
            let mut all_four = ServerLayer::grpc(panic_answer).layer(echo!(LogBody<Body>));
            all[0].push(measure(&mut bare, calls, traceparent).await);
            all[1].push(measure(&mut request_id, calls, traceparent).await);
            all[2].push(measure(&mut log, calls, traceparent).await);
            all[3].push(measure(&mut trace, calls, traceparent).await);
            all[4].push(measure(&mut recover, calls, traceparent).await);
            all[5].push(measure(&mut all_four, calls, traceparent).await);
        });
    }
    all.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let calls: u32 = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let fmt = |level| {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::sink)
            .finish()
    };
    let mut settings: Vec<(&str, Vec<f64>)> = Vec::new();
    settings.push(("no subscriber", rows(&rt, rounds, calls, false)));
    settings.push((
        "fmt at INFO, to a sink",
        tracing::subscriber::with_default(fmt(tracing::Level::INFO), || {
            rows(&rt, rounds, calls, false)
        }),
    ));
    settings.push((
        "fmt at DEBUG (bodies), to a sink",
        tracing::subscriber::with_default(fmt(tracing::Level::DEBUG), || {
            rows(&rt, rounds, calls, false)
        }),
    ));
    // Last: the propagator is global.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracked_inactivity(false)
            .with_tracer(provider.tracer("bench")),
    );
    settings.push((
        "OpenTelemetry, traceparent in",
        tracing::subscriber::with_default(otel, || rows(&rt, rounds, calls, true)),
    ));

    println!(
        "ns per call added to a bare echo service (medians of {rounds} rounds of {calls} calls)"
    );
    println!(
        "{:<34} {:>8} {:>10} {:>8} {:>8} {:>8} {:>10}",
        "setting", "bare", "request id", "log", "trace", "recover", "all four"
    );
    for (name, v) in settings {
        let bare = v[0];
        println!(
            "{name:<34} {bare:>8.0} {:>10.0} {:>8.0} {:>8.0} {:>8.0} {:>10.0}",
            v[1] - bare,
            v[2] - bare,
            v[3] - bare,
            v[4] - bare,
            v[5] - bare
        );
    }
}
