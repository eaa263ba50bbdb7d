//! The session sees the wire in arrival order: what a scripted server sends in one burst is
//! handled in that order, and the acks the server asks for are sent.

use crate::common::*;
use bytes::Bytes;
use cluster_client::{Client, ClientState, EventHandler};
use cluster_etp::{Handlers, Reply};

#[tokio::test(start_paused = true)]
async fn an_error_event_just_before_the_ready_ack_fails_the_handshake() {
    let server = scripted(|events| {
        Handlers::new().on_unknown(move |conn, name, _data| {
            record(&events, conn, name);
            if name == "MODULE:READY" {
                // Queued before the ack that the reader sends once this handler returns: on
                // the wire, the error event comes first.
                let _ = conn.emit("ERROR_CONNECTION", b"instance refused");
            }
            Reply::ack("ok")
        })
    });
    let client = server.client("B", "10.0.0.2");
    let run = spawn_run(&client, EventHandler::new());
    let failed = wait_state(&client, "backing off", |s| {
        matches!(s, ClientState::BackingOff { .. })
    })
    .await;
    let ClientState::BackingOff { cause, .. } = failed else {
        unreachable!()
    };
    assert!(
        cause.contains("ERROR_CONNECTION") && cause.contains("instance refused"),
        "{cause}"
    );
    assert_eq!(
        server
            .events
            .all()
            .iter()
            .filter(|(_, e)| e == "MODULE:READY")
            .count(),
        1
    );
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn an_event_sent_with_ack_is_acknowledged_with_empty_data() {
    let answers: Recorder<Result<Bytes, String>> = Recorder::new();
    let server = {
        let answers = answers.clone();
        scripted(move |events| {
            let answers = answers.clone();
            Handlers::new().on_unknown(move |conn, name, _data| {
                record(&events, conn, name);
                if name != "MODULE:SEND_REQUIREMENTS" {
                    return Reply::ack("ok");
                }
                // Ack the requirements only once the client acked an event of ours.
                let ack = conn.emit_with_ack("SOMETHING_NEW", b"{}");
                let answers = answers.clone();
                Reply::later(async move {
                    answers.push(ack.await.map_err(|e| e.to_string()));
                    Bytes::from_static(b"ok")
                })
            })
        })
    };
    let client = server.client("B", "10.0.0.2");
    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    assert_eq!(answers.all(), [Ok(Bytes::new())]);
    close_and_join(&client, run).await;
}

/// A server that emits events with ack as fast as the client reads and never reads the acks:
/// the client's writes never finish, so its acks pile up until reading pauses.
mod hoarding {
    use async_trait::async_trait;
    use bytes::Bytes;
    use cluster_client::transport::{Incoming, MessageSink, MessageStream};
    use cluster_client::{Connector, Endpoint, Transport, TransportError};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every event name is this long, so each ack the client owes is about as long.
    pub(crate) const NAME_LEN: usize = 64 << 10;

    #[derive(Clone, Default)]
    pub(crate) struct Hoarder {
        pub(crate) reads: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Connector for Hoarder {
        async fn connect(&self, _: &Endpoint, _: &str) -> Result<Transport, TransportError> {
            Ok(Transport {
                sink: Box::new(NeverWrites),
                stream: Box::new(Flood(self.reads.clone())),
                peer: "hoarder".into(),
            })
        }
    }

    struct NeverWrites;

    #[async_trait]
    impl MessageSink for NeverWrites {
        async fn feed(&mut self, _: Bytes) -> Result<(), TransportError> {
            std::future::pending().await
        }
        async fn flush(&mut self) -> Result<(), TransportError> {
            std::future::pending().await
        }
        async fn ping(&mut self, _: Bytes) -> Result<(), TransportError> {
            std::future::pending().await
        }
        async fn close(&mut self, _: u16, _: &str) -> Result<(), TransportError> {
            std::future::pending().await
        }
    }

    /// The most messages the flood sends.
    pub(crate) const MAX_READS: usize = 64;

    struct Flood(Arc<AtomicUsize>);

    #[async_trait]
    impl MessageStream for Flood {
        async fn recv(&mut self) -> Result<Incoming, TransportError> {
            // Enough for the pause to show, and a bound, so that a client that did not pause
            // fails the count instead of reading for ever.
            if self.0.load(Ordering::SeqCst) >= MAX_READS {
                return std::future::pending().await;
            }
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            let name = "E".repeat(NAME_LEN);
            Ok(Incoming::Text(Bytes::from(format!("{name}||{n}"))))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn reading_pauses_while_the_acks_owed_to_a_server_that_does_not_read_pile_up() {
    use std::sync::atomic::Ordering;
    let hoarder = hoarding::Hoarder::default();
    let client = Client::builder(module("B", "10.0.0.2"), config_data("{}"), ["hoarder:1"])
        .connector_arc(std::sync::Arc::new(hoarder.clone()))
        .ack_timeout(std::time::Duration::from_secs(3600))
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());
    // Let virtual time pass with every task idle: the client must have stopped reading.
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    let reads = hoarder.reads.load(Ordering::SeqCst);
    // 1 MiB of acks of ~64 KiB each: reading pauses after about 16 (plus the one in flight).
    assert!((16..=18).contains(&reads), "{reads} messages read");
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert_eq!(hoarder.reads.load(Ordering::SeqCst), reads, "still paused");
    drop(run);
}

/// A transport whose writes fail at once: the client ends the session and backs off.
mod broken {
    use async_trait::async_trait;
    use bytes::Bytes;
    use cluster_client::transport::{Incoming, MessageSink, MessageStream};
    use cluster_client::{Connector, Endpoint, Transport, TransportError};

    pub(crate) struct BrokenWrites;

    fn gone() -> TransportError {
        TransportError::Lost {
            reason: "write side gone".into(),
            source: None,
        }
    }

    #[async_trait]
    impl Connector for BrokenWrites {
        async fn connect(&self, _: &Endpoint, _: &str) -> Result<Transport, TransportError> {
            Ok(Transport {
                sink: Box::new(Sink),
                stream: Box::new(Silent),
                peer: "broken".into(),
            })
        }
    }

    struct Sink;

    #[async_trait]
    impl MessageSink for Sink {
        async fn feed(&mut self, _: Bytes) -> Result<(), TransportError> {
            Err(gone())
        }
        async fn flush(&mut self) -> Result<(), TransportError> {
            Err(gone())
        }
        async fn ping(&mut self, _: Bytes) -> Result<(), TransportError> {
            Err(gone())
        }
        async fn close(&mut self, _: u16, _: &str) -> Result<(), TransportError> {
            Err(gone())
        }
    }

    struct Silent;

    #[async_trait]
    impl MessageStream for Silent {
        async fn recv(&mut self) -> Result<Incoming, TransportError> {
            std::future::pending().await
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_ends_the_session_at_once() {
    let client = Client::builder(module("B", "10.0.0.2"), config_data("{}"), ["broken:1"])
        .connector_arc(std::sync::Arc::new(broken::BrokenWrites))
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());
    let t0 = tokio::time::Instant::now();
    let failed = wait_state(&client, "backing off", |s| {
        matches!(s, ClientState::BackingOff { .. })
    })
    .await;
    assert_eq!(
        t0.elapsed(),
        std::time::Duration::ZERO,
        "no ack timeout waited"
    );
    let ClientState::BackingOff { cause, .. } = failed else {
        unreachable!()
    };
    assert!(
        cause.contains("write failed") && cause.contains("write side gone"),
        "{cause}"
    );
    // No close could be written, so none is waited for: closing now (the failed session's
    // end is finished first) takes no time, not the 1 s a close answer may take.
    let t1 = tokio::time::Instant::now();
    close_and_join(&client, run).await;
    assert_eq!(
        t1.elapsed(),
        std::time::Duration::ZERO,
        "waited for a close answer"
    );
}

/// A transport that records what the client writes and answers its close (or not).
mod recording {
    use async_trait::async_trait;
    use bytes::Bytes;
    use cluster_client::transport::{CloseInfo, Incoming, MessageSink, MessageStream};
    use cluster_client::{Connector, Endpoint, Transport, TransportError};
    use std::sync::{Arc, Mutex};
    use tokio::sync::Notify;

    #[derive(Default)]
    pub(crate) struct Wire {
        /// What was fed, and the close as `CLOSE <code> <reason>`.
        pub(crate) written: Mutex<Vec<String>>,
        pub(crate) fed: Notify,
        closed: Notify,
    }

    pub(crate) struct Recording {
        pub(crate) wire: Arc<Wire>,
        /// The peer answers the client's close (a close handshake), or never reads again.
        pub(crate) answers_close: bool,
        /// Writing the close fails (after it is recorded), as over a broken connection.
        pub(crate) close_fails: bool,
    }

    #[async_trait]
    impl Connector for Recording {
        async fn connect(&self, _: &Endpoint, _: &str) -> Result<Transport, TransportError> {
            Ok(Transport {
                sink: Box::new(Sink {
                    wire: Arc::clone(&self.wire),
                    close_fails: self.close_fails,
                }),
                stream: Box::new(Stream {
                    wire: Arc::clone(&self.wire),
                    answers_close: self.answers_close,
                }),
                peer: "recording".into(),
            })
        }
    }

    struct Sink {
        wire: Arc<Wire>,
        close_fails: bool,
    }

    #[async_trait]
    impl MessageSink for Sink {
        async fn feed(&mut self, text: Bytes) -> Result<(), TransportError> {
            let text = String::from_utf8_lossy(&text).into_owned();
            self.wire.written.lock().unwrap().push(text);
            self.wire.fed.notify_one();
            Ok(())
        }
        async fn flush(&mut self) -> Result<(), TransportError> {
            Ok(())
        }
        async fn ping(&mut self, _: Bytes) -> Result<(), TransportError> {
            Ok(())
        }
        async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
            let close = format!("CLOSE {code} {reason}");
            self.wire.written.lock().unwrap().push(close);
            if self.close_fails {
                return Err(TransportError::Lost {
                    reason: "reset while closing".into(),
                    source: None,
                });
            }
            self.wire.closed.notify_one();
            Ok(())
        }
    }

    struct Stream {
        wire: Arc<Wire>,
        answers_close: bool,
    }

    #[async_trait]
    impl MessageStream for Stream {
        async fn recv(&mut self) -> Result<Incoming, TransportError> {
            if !self.answers_close {
                return std::future::pending().await;
            }
            self.wire.closed.notified().await;
            Ok(Incoming::Closed(CloseInfo {
                code: Some(1000),
                reason: String::new(),
            }))
        }
    }
}

/// Closing the client sends a normal close (1000, "client closed") and waits for the
/// config service's answer: not at all when it answers, [`CLOSE_TIMEOUT`] (1 s) at most
/// when it never does, and not at all when the close could not be written (no answer can
/// come).
///
/// [`CLOSE_TIMEOUT`]: cluster_etp::CLOSE_TIMEOUT
#[tokio::test(start_paused = true)]
async fn closing_sends_1000_and_waits_for_the_answer_at_most_the_close_timeout() {
    let timeout = cluster_etp::CLOSE_TIMEOUT;
    let zero = std::time::Duration::ZERO;
    for (answers_close, close_fails, expected) in [
        (true, false, zero),
        (false, false, timeout),
        (false, true, zero),
    ] {
        let wire = std::sync::Arc::new(recording::Wire::default());
        let connector = recording::Recording {
            wire: std::sync::Arc::clone(&wire),
            answers_close,
            close_fails,
        };
        let client = Client::builder(module("B", "10.0.0.2"), config_data("{}"), ["rec:1"])
            .connector_arc(std::sync::Arc::new(connector))
            .build()
            .unwrap();
        let run = spawn_run(&client, EventHandler::new());
        // The session started its handshake (the service never answers it).
        tokio::time::timeout(WAIT, wire.fed.notified())
            .await
            .expect("the client wrote its first frame");
        let t0 = tokio::time::Instant::now();
        close_and_join(&client, run).await;
        let waited = t0.elapsed();
        let written = wire.written.lock().unwrap().clone();
        assert_eq!(
            written.last().map(String::as_str),
            Some("CLOSE 1000 client closed"),
            "{written:?}"
        );
        assert_eq!(
            written.iter().filter(|w| w.starts_with("CLOSE")).count(),
            1,
            "{written:?}"
        );
        assert_eq!(
            waited, expected,
            "answers_close: {answers_close}, close_fails: {close_fails}"
        );
    }
}
