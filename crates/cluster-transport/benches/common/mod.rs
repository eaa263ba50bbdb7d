//! What the transport benches and `cluster-etp`'s bench (which includes this file by path)
//! share: runtimes, round-trip summaries, resident memory, and the arithmetic of their reports.

#![allow(dead_code)] // each bench uses its own part

pub(crate) mod tungstenite;

use std::time::Duration;

/// The page size `/proc/self/statm` counts in.
pub(crate) const PAGE: u64 = 4096;

/// Round trips: rate and latency percentiles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rtt {
    pub(crate) ops_per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// The rate and percentiles of `samples`, taken over `total`.
pub(crate) fn summarize(samples: &mut [Duration], total: Duration) -> Rtt {
    samples.sort_unstable();
    Rtt {
        ops_per_sec: samples.len() as f64 / total.as_secs_f64(),
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    }
}

/// `warmup` round trips, then `rounds` timed ones: their rate and percentiles.
pub(crate) async fn measure_rtt(
    warmup: usize,
    rounds: usize,
    mut round_trip: impl AsyncFnMut(),
) -> Rtt {
    for _ in 0..warmup {
        round_trip().await;
    }
    let mut samples = Vec::with_capacity(rounds);
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        round_trip().await;
        samples.push(t.elapsed());
    }
    summarize(&mut samples, started.elapsed())
}

/// This process's resident memory in bytes.
pub(crate) fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm resident pages");
    pages * PAGE
}

/// A current-thread runtime.
pub(crate) fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A multi-threaded runtime with 2 workers (the machine's cores).
pub(crate) fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// (min, median, max) of `values` by `key`.
pub(crate) fn spread<T: Copy>(mut values: Vec<T>, key: impl Fn(&T) -> f64) -> (T, T, T) {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
}

/// `d` in microseconds.
pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `bytes` in KiB.
pub(crate) fn kib(bytes: f64) -> f64 {
    bytes / 1024.0
}

/// A multi-threaded runtime with `workers` workers.
pub(crate) fn multi_thread_with(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Our WebSocket transports over loopback: an acceptor (its accept loop running) and a
/// connector to it.
pub(crate) struct Net {
    acceptor: cluster_transport::ws::WsAcceptor,
    connector: cluster_transport::ws::WsConnector,
    endpoint: cluster_transport::Endpoint,
}

impl Net {
    pub(crate) async fn new() -> Self {
        let acceptor = cluster_transport::ws::WsAcceptor::bind(
            "127.0.0.1:0",
            cluster_transport::ws::WsServerConfig::default(),
        )
        .await
        .expect("bind");
        let endpoint: cluster_transport::Endpoint =
            format!("127.0.0.1:{}", acceptor.local_addr().port())
                .parse()
                .expect("endpoint");
        let connector =
            cluster_transport::ws::WsConnector::new(cluster_transport::ws::WsConfig::default())
                .expect("connector");
        Self {
            acceptor,
            connector,
            endpoint,
        }
    }

    /// One connected (client, server) pair of transports.
    pub(crate) async fn pair(
        &mut self,
    ) -> (cluster_transport::Transport, cluster_transport::Transport) {
        use cluster_transport::{Acceptor, Connector};
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
