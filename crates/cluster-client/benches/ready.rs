//! New client → ready against the fake config service over loopback WebSocket (config +
//! routes + one required module), and the idle memory of a process running one ready client.
//! The Go stack's figures and the floors to compare with: `docs/performance.md`.
//!
//! `cargo bench -p cluster-client --bench ready` prints the figures. Options (environment):
//! `READY_SESSIONS` (default 400, the first 10 % are warm-up), `READY_RUNTIME`
//! (`current_thread`, the default, or `multi_thread`).
//!
//! Sessions alternate (in ABBA order) between a client whose metrics go to a Prometheus recorder (isp-kit's
//! as the bootstrap installs it, here a local one: `metrics::with_local_recorder` around the
//! client's build, where its handles are taken) and one with no recorder; both p50s and their
//! ratio are printed, so that the cost of the metrics is read from one run. `READY_AA=1` builds
//! both halves without a recorder: the ratio then shows the noise alone.
//!
//! The memory figure comes from a child process, the `idle_client` example (built by
//! `cargo bench`, or `cargo build --release -p cluster-client --example idle_client`), that
//! runs one ready client on a current-thread runtime, idles 6 s, and reports `VmRSS` from
//! `/proc/self/status`.

mod common;

use cluster_client::typed::config_data_for;
use cluster_client::{Bytes, Client, ConfigData, EventHandler, RoutingConfig};
use common::{WithA, idle_client_exe, module, until_ready};
use std::convert::Infallible;
use std::time::{Duration, Instant};

#[derive(Default, serde::Serialize, schemars::JsonSchema)]
struct Remote {
    workers: u32,
    name: String,
}

fn handler() -> EventHandler {
    EventHandler::new()
        .remote_config_receiver(|_config: Bytes| async { Ok::<(), Infallible>(()) })
        .routes_receiver(|_routes: RoutingConfig| async { Ok::<(), Infallible>(()) })
        .require_module("A", |_hosts: Vec<String>| {})
}

/// A new client; `config` is the module's `ConfigData`, derived once at start (as a service
/// does) and cloned here.
fn client(host: &str, name: &str, config: &ConfigData) -> Client {
    Client::new(module(name, "127.0.0.2"), config.clone(), [host.to_owned()])
        .expect("valid settings")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let sessions: usize = std::env::var("READY_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let multi = std::env::var("READY_RUNTIME").is_ok_and(|v| v == "multi_thread");
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");

    rt.block_on(async {
        // The required module: one ready instance of A.
        let config = config_data_for::<Remote>("1.0.0").expect("schema");
        let with_a = WithA::start(config.clone()).await;
        let host = with_a.host.clone();

        let warmup = sessions / 10;
        let mut times = Vec::with_capacity(sessions);
        let mut with_metrics = Vec::with_capacity(sessions / 2);
        let mut without = Vec::with_capacity(sessions / 2);
        let (prometheus, recorder) = cluster_metrics::prometheus::build();
        let control = std::env::var("READY_AA").is_ok_and(|v| v == "1");
        for i in 0..sessions + warmup {
            // ABBA order: each kind follows each kind as often (a session pays for the
            // close of the one before it; plain alternation biased the second kind by ~2 %).
            let metrics_on = matches!(i % 4, 1 | 2);
            let started = Instant::now();
            let b = if metrics_on && !control {
                cluster_metrics::metrics::with_local_recorder(&recorder, || {
                    client(&host, "B", &config)
                })
            } else {
                client(&host, "B", &config)
            };
            let run = tokio::spawn({
                let b = b.clone();
                async move { b.run(handler()).await }
            });
            until_ready(&b).await;
            let took = started.elapsed();
            if i >= warmup {
                times.push(took);
                if metrics_on {
                    with_metrics.push(took);
                } else {
                    without.push(took);
                }
            }
            b.close().await;
            run.await.expect("run task").expect("run");
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "new client -> ready (config + routes + 1 required module, loopback WebSocket, {} runtime, {} sessions):",
            if multi { "multi_thread(2)" } else { "current_thread" },
            times.len()
        );
        println!(
            "  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  mean {:.3} ms  min {:.3} ms  max {:.3} ms",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.90)),
            ms(percentile(&times, 0.99)),
            ms(mean),
            ms(times[0]),
            ms(times[times.len() - 1]),
        );

        with_metrics.sort();
        without.sort();
        let (on, off) = (percentile(&with_metrics, 0.50), percentile(&without, 0.50));
        println!(
            "  metrics: p50 {:.3} ms with a Prometheus recorder, {:.3} ms without (sessions in ABBA order): {:.3}x",
            ms(on),
            ms(off),
            on.as_secs_f64() / off.as_secs_f64()
        );
        assert!(
            control || prometheus.render().contains("cluster_sessions_started_count"),
            "the recorder saw the sessions"
        );

        // Idle memory of a separate, lean process running one ready client.
        let child = match idle_client_exe() {
            Some(exe) => process_output(exe, &host).await,
            None => "no idle_client example binary: build it with \
                     `cargo build --release -p cluster-client --example idle_client`"
                .to_owned(),
        };
        let value = |key: &str| -> Option<u64> {
            child
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        match (value("RSS_BEFORE_KIB="), value("RSS_READY_KIB=")) {
            (Some(before), Some(ready)) => println!(
                "idle process with one ready client (idle_client example, current_thread runtime): \
                 VmRSS {:.2} MiB ({ready} KiB: anon {} KiB, file {} KiB; {before} KiB at start)",
                ready as f64 / 1024.0,
                value("RSS_ANON_KIB=").unwrap_or(0),
                value("RSS_FILE_KIB=").unwrap_or(0),
            ),
            _ => println!("RSS child failed: {child}"),
        }

        with_a.close().await;
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the `idle_client` example against `host`; returns its stdout.
async fn process_output(exe: std::path::PathBuf, host: &str) -> String {
    let host = host.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(exe)
            .arg(host)
            .output()
            .expect("spawn the idle client");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("child")
}
