//! A peer cannot make a connection log without bound: floods of malformed frames give a few
//! lines and a summary with the count.

// The transport crate's test helpers (log capture, raw WebSocket peers), shared by path.
#[path = "../../cluster-transport/tests/common/mod.rs"]
mod common;
use bytes::Bytes;
use cluster_etp::{Conn, ConnConfig, Handlers, Reply};
use cluster_transport::log_limit::{DEFAULT_LOG_BURST, LogLimit};
use cluster_transport::{Incoming, memory};
use common::Captured;
use std::time::Duration;

const FLOOD: usize = 10_000;

/// Sends `FLOOD` malformed frames, then `SYNC||1||x`, and waits for its ack: every frame before
/// it was handled.
async fn flood_malformed(peer: &mut cluster_transport::Transport) {
    for i in 0..FLOOD {
        peer.sink
            .feed(Bytes::from(format!("garbage {i} without a separator")))
            .await
            .unwrap();
    }
    peer.sink
        .feed(Bytes::from_static(b"SYNC||1||x"))
        .await
        .unwrap();
    peer.sink.flush().await.unwrap();
    loop {
        match peer.stream.recv().await.unwrap() {
            Incoming::Text(text) if text.starts_with(b"__ack_SYNC||1") => break,
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_malformed_frames_logs_a_few_lines_and_a_count() {
    let (logs, _guard) = Captured::install(tracing::Level::INFO);
    let (server, mut peer, _faults) = memory::pair();
    let handlers = Handlers::new().on("SYNC", |_, _| Reply::ack(Bytes::from_static(b"ok")));
    let server = Conn::spawn(server, handlers, ConnConfig::default());
    flood_malformed(&mut peer).await;

    let during = logs.lines();
    let warnings = during
        .iter()
        .filter(|l| l.contains("connection error"))
        .count();
    assert_eq!(warnings, DEFAULT_LOG_BURST as usize, "{during:#?}");

    server.close(1000, "done").await;
    let lines = logs.lines();
    assert!(lines.len() <= DEFAULT_LOG_BURST as usize + 3, "{lines:#?}");
    let summary: Vec<&String> = lines.iter().filter(|l| l.contains("suppressed")).collect();
    assert_eq!(summary.len(), 1, "{lines:#?}");
    let expected = format!("suppressed={}", FLOOD - DEFAULT_LOG_BURST as usize);
    assert!(summary[0].contains(&expected), "{}", summary[0]);
}

#[tokio::test(start_paused = true)]
async fn each_interval_logs_a_few_lines_again_after_the_summary_of_the_last() {
    let (logs, _guard) = Captured::install(tracing::Level::INFO);
    let (server, mut peer, _faults) = memory::pair();
    let limit = LogLimit {
        burst: 2,
        interval: Duration::from_secs(60),
    };
    let config = ConnConfig {
        log_limit: limit,
        ..ConnConfig::default()
    };
    let handlers = Handlers::new().on("SYNC", |_, _| Reply::ack(Bytes::from_static(b"ok")));
    let _server = Conn::spawn(server, handlers, config);
    flood_malformed(&mut peer).await;
    tokio::time::advance(limit.interval).await;
    flood_malformed(&mut peer).await;

    let lines = logs.lines();
    let warnings = lines
        .iter()
        .filter(|l| l.contains("connection error"))
        .count();
    assert_eq!(warnings, 4, "{lines:#?}");
    let summaries: Vec<&String> = lines.iter().filter(|l| l.contains("suppressed")).collect();
    assert_eq!(summaries.len(), 1, "{lines:#?}");
    assert!(summaries[0].contains(&format!("suppressed={}", FLOOD - 2)));
}
