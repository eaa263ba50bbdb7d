//! The ETP connection runtime over the in-memory transport, under a paused clock.
//!
//! A test either runs a [`Conn`] on both ends, or a [`Conn`] on one end and the raw
//! [`Transport`] on the other, to see and forge the exact frames on the wire.

use bytes::Bytes;
use cluster_etp::{CLOSE_QUEUE_OVERFLOW, Conn, ConnConfig, ConnError, Handlers, Reply, SendError};
use cluster_transport::memory::{self, Faults};
use cluster_transport::{CLOSE_NORMAL, Incoming, Transport};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const SECOND: Duration = Duration::from_secs(1);

/// Handlers that forward `(event, data)` of every event to a channel, acking `ok`.
fn forwarding() -> (Handlers, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handlers = Handlers::new().on_unknown(move |_, event, data| {
        let _ = tx.send((event.to_owned(), data));
        Reply::ack("ok")
    });
    (handlers, rx)
}

/// Two connections: (client, server, faults).
fn conns(client: Handlers, server: Handlers) -> (Conn, Conn, Faults) {
    let (c, s, faults) = memory::pair();
    (
        Conn::spawn(c, client, ConnConfig::default()),
        Conn::spawn(s, server, ConnConfig::default()),
        faults,
    )
}

/// A connection on the client end and the raw server end.
fn conn_and_raw(handlers: Handlers, config: ConnConfig) -> (Conn, Transport, Faults) {
    let (c, s, faults) = memory::pair();
    (Conn::spawn(c, handlers, config), s, faults)
}

/// Awaits `future`, failing the test instead of hanging if it does not finish within 30 s of
/// the (paused, auto-advancing) clock.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("timed out: the awaited event never happened")
}

async fn send_raw(t: &mut Transport, text: &str) {
    t.sink
        .feed(Bytes::copy_from_slice(text.as_bytes()))
        .await
        .unwrap();
    t.sink.flush().await.unwrap();
}

async fn recv_raw(t: &mut Transport) -> String {
    match within(t.stream.recv()).await.unwrap() {
        Incoming::Text(text) => String::from_utf8(text.to_vec()).unwrap(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn emits_both_ways() {
    let (client_handlers, mut at_client) = forwarding();
    let (server_handlers, mut at_server) = forwarding();
    let (client, server, _faults) = conns(client_handlers, server_handlers);

    client.emit("C2S", b"from client").unwrap();
    server.emit("S2C", b"from server").unwrap();
    server.emit("EMPTY", b"").unwrap();

    assert_eq!(
        within(at_server.recv()).await.unwrap(),
        ("C2S".to_owned(), Bytes::from_static(b"from client"))
    );
    assert_eq!(
        within(at_client.recv()).await.unwrap(),
        ("S2C".to_owned(), Bytes::from_static(b"from server"))
    );
    assert_eq!(
        within(at_client.recv()).await.unwrap(),
        ("EMPTY".to_owned(), Bytes::new())
    );
    assert_ne!(client.id(), server.id());
    assert_eq!(client.peer(), "memory-server");
}

#[tokio::test(start_paused = true)]
async fn emits_exact_frames_without_ack() {
    let (client, mut raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    client.emit("MODULE:READY", b"{\"a||b\":1}").unwrap();
    client.emit("E", b"").unwrap();
    client
        .emit_encoded(Bytes::from_static(b"PRE||0||encoded"))
        .unwrap();
    assert_eq!(recv_raw(&mut raw).await, "MODULE:READY||0||{\"a||b\":1}");
    assert_eq!(recv_raw(&mut raw).await, "E||0");
    assert_eq!(recv_raw(&mut raw).await, "PRE||0||encoded");
}

#[tokio::test(start_paused = true)]
async fn emit_with_ack_resolves_to_the_handler_bytes() {
    let server_handlers = Handlers::new()
        .on("UPPER", |_, data| Reply::ack(data.to_ascii_uppercase()))
        .on("EMPTY", |_, _| Reply::default());
    let (client, _server, _faults) = conns(Handlers::new(), server_handlers);

    let answer = client
        .emit_with_ack("UPPER", b"hello||world")
        .await
        .unwrap();
    assert_eq!(answer, Bytes::from_static(b"HELLO||WORLD"));
    assert_eq!(
        within(client.emit_with_ack("EMPTY", b"x")).await.unwrap(),
        Bytes::new()
    );
    assert_eq!(client.pending_acks(), 0);
}

#[tokio::test(start_paused = true)]
async fn ack_ids_count_from_one_per_connection() {
    for _connection in 0..2 {
        let (client, mut raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
        let first = client.emit_with_ack("A", b"1");
        let second = client.emit_with_ack("B", b"");
        let third = client.emit_with_ack("C", b"3");
        assert_eq!(
            [first.ack_id(), second.ack_id(), third.ack_id()],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(recv_raw(&mut raw).await, "A||1||1");
        assert_eq!(recv_raw(&mut raw).await, "B||2");
        assert_eq!(recv_raw(&mut raw).await, "C||3||3");
        // Acks answered out of order still reach the right futures.
        send_raw(&mut raw, "__ack_C||3||three").await;
        send_raw(&mut raw, "__ack_A||1||one").await;
        send_raw(&mut raw, "__ack_B||2").await;
        assert_eq!(within(first).await.unwrap(), Bytes::from_static(b"one"));
        assert_eq!(within(second).await.unwrap(), Bytes::new());
        assert_eq!(within(third).await.unwrap(), Bytes::from_static(b"three"));
    }
}

#[tokio::test(start_paused = true)]
async fn late_ack_after_the_future_was_dropped_is_ignored() {
    let (client, mut raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    let forgotten = client.emit_with_ack("E", b"x");
    assert_eq!(client.pending_acks(), 1);
    drop(forgotten);
    assert_eq!(client.pending_acks(), 0);
    assert_eq!(recv_raw(&mut raw).await, "E||1||x");
    send_raw(&mut raw, "__ack_E||1||late").await;

    let next = client.emit_with_ack("E", b"y");
    assert_eq!(recv_raw(&mut raw).await, "E||2||y");
    send_raw(&mut raw, "__ack_E||2||fresh").await;
    assert_eq!(within(next).await.unwrap(), Bytes::from_static(b"fresh"));
    assert!(!client.is_closed());
}

#[tokio::test(start_paused = true)]
async fn acks_for_unknown_ids_are_ignored_and_never_dispatched() {
    let dispatched = Arc::new(AtomicUsize::new(0));
    let (on_ack_name, on_unknown) = (Arc::clone(&dispatched), Arc::clone(&dispatched));
    let handlers = Handlers::new()
        .on("__ack_E", move |_, _| {
            on_ack_name.fetch_add(1, Ordering::SeqCst);
            Reply::default()
        })
        .on_unknown(move |_, _, _| {
            on_unknown.fetch_add(1, Ordering::SeqCst);
            Reply::default()
        });
    let (client, mut raw, _faults) = conn_and_raw(handlers, ConnConfig::default());
    let pending = client.emit_with_ack("E", b"x");
    assert_eq!(recv_raw(&mut raw).await, "E||1||x");

    send_raw(&mut raw, "__ack_E||99||wrong id").await;
    send_raw(&mut raw, "__ack_OTHER||0").await;
    send_raw(&mut raw, "__ack_E||1||right").await;
    assert_eq!(within(pending).await.unwrap(), Bytes::from_static(b"right"));
    assert_eq!(dispatched.load(Ordering::SeqCst), 0);
    assert_eq!(client.pending_acks(), 0);
}

#[tokio::test(start_paused = true)]
async fn pending_acks_fail_with_closed_when_the_peer_severs() {
    let (client, _raw, faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    let first = client.emit_with_ack("E", b"1");
    let second = client.emit_with_ack("E", b"2");
    faults.sever();
    assert!(matches!(within(first).await, Err(ConnError::Closed)));
    assert!(matches!(within(second).await, Err(ConnError::Closed)));
    let end = within(client.closed()).await;
    assert!(end.by_peer && !end.normal && end.close.is_none(), "{end:?}");
    assert!(client.is_closed());
    assert_eq!(client.pending_acks(), 0);
    assert!(matches!(
        client.emit("E", b""),
        Err(ConnError::Send(SendError::Closed))
    ));
    assert!(matches!(
        within(client.emit_with_ack("E", b"")).await,
        Err(ConnError::Send(SendError::Closed))
    ));
    assert!(matches!(
        client.ping(SECOND).await,
        Err(ConnError::Send(SendError::Closed))
    ));
}

#[tokio::test(start_paused = true)]
async fn malformed_frame_goes_to_on_error_and_the_next_frame_is_handled() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&errors);
    let (tx, mut events) = mpsc::unbounded_channel();
    let handlers = Handlers::new()
        .on("E", move |_, data| {
            let _ = tx.send(data);
            Reply::ack("handled")
        })
        .on_error(move |_, err| seen.lock().unwrap().push(err.to_string()));
    let (client, mut raw, _faults) = conn_and_raw(handlers, ConnConfig::default());

    send_raw(&mut raw, "no separator at all").await;
    send_raw(&mut raw, "E||-1||bad id").await;
    send_raw(&mut raw, "E||7||good").await;
    assert_eq!(
        within(events.recv()).await.unwrap(),
        Bytes::from_static(b"good")
    );
    assert_eq!(recv_raw(&mut raw).await, "__ack_E||7||handled");
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("no `||` separator"), "{errors:?}");
    assert!(errors[1].contains("invalid ack id"), "{errors:?}");
    assert!(!client.is_closed());
}

#[tokio::test(start_paused = true)]
async fn unknown_events_go_to_the_fallback() {
    // Default fallback: ack with empty data.
    let (_client, mut raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    send_raw(&mut raw, "NOBODY||5||x").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_NOBODY||5");

    // A custom fallback gets the name and answers.
    let handlers = Handlers::new()
        .on("KNOWN", |_, _| Reply::ack("known"))
        .on_unknown(|_, event, data| {
            let mut answer = format!("unknown {event} ").into_bytes();
            answer.extend_from_slice(&data);
            Reply::ack(answer)
        });
    let (_client, mut raw, _faults) = conn_and_raw(handlers, ConnConfig::default());
    send_raw(&mut raw, "WHO||1||me").await;
    send_raw(&mut raw, "KNOWN||2").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_WHO||1||unknown WHO me");
    assert_eq!(recv_raw(&mut raw).await, "__ack_KNOWN||2||known");
}

#[tokio::test(start_paused = true)]
async fn sync_handlers_see_events_in_arrival_order() {
    let (server_handlers, mut at_server) = forwarding();
    let (client, _server, _faults) = conns(Handlers::new(), server_handlers);
    for i in 0..1000u32 {
        if i % 2 == 0 {
            client.emit("E", i.to_string().as_bytes()).unwrap();
        } else {
            // Acked or not, the order is the same.
            drop(client.emit_with_ack("E", i.to_string().as_bytes()));
        }
    }
    for i in 0..1000u32 {
        let (_, data) = within(at_server.recv()).await.unwrap();
        assert_eq!(data, Bytes::from(i.to_string()));
    }
}

#[tokio::test(start_paused = true)]
async fn later_handlers_run_concurrently_up_to_the_bound() {
    const BOUND: usize = 4;
    const EVENTS: u32 = 50;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    let server_handlers = Handlers::new().on("WORK", move |_, data| {
        let (running, peak) = (Arc::clone(&r), Arc::clone(&p));
        Reply::later(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Simulated work, on the paused clock.
            tokio::time::sleep(Duration::from_millis(10)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            data
        })
    });
    let (c, s, _faults) = memory::pair();
    let client = Conn::spawn(c, Handlers::new(), ConnConfig::default());
    let config = ConnConfig {
        max_concurrent_handlers: BOUND,
        ..ConnConfig::default()
    };
    let _server = Conn::spawn(s, server_handlers, config);

    let acks: Vec<_> = (0..EVENTS)
        .map(|i| client.emit_with_ack("WORK", i.to_string().as_bytes()))
        .collect();
    let started = tokio::time::Instant::now();
    for (i, ack) in acks.into_iter().enumerate() {
        assert_eq!(within(ack).await.unwrap(), Bytes::from(i.to_string()));
    }
    assert_eq!(peak.load(Ordering::SeqCst), BOUND);
    assert_eq!(running.load(Ordering::SeqCst), 0);
    // 50 jobs of 10 ms, 4 at a time: 13 rounds.
    assert_eq!(started.elapsed(), Duration::from_millis(130));
}

#[tokio::test(start_paused = true)]
async fn a_handler_emits_arrive_before_its_ack() {
    let handlers = Handlers::new()
        .on("SYNC", |conn, _| {
            conn.emit("PUSH", b"sync").unwrap();
            Reply::ack("ok")
        })
        .on("ASYNC", |conn, _| {
            let conn = conn.clone();
            Reply::later(async move {
                tokio::task::yield_now().await;
                conn.emit("PUSH", b"async").unwrap();
                Bytes::from_static(b"ok")
            })
        });
    let (_client, mut raw, _faults) = conn_and_raw(handlers, ConnConfig::default());
    send_raw(&mut raw, "SYNC||1||x").await;
    assert_eq!(recv_raw(&mut raw).await, "PUSH||0||sync");
    assert_eq!(recv_raw(&mut raw).await, "__ack_SYNC||1||ok");
    send_raw(&mut raw, "ASYNC||2||x").await;
    assert_eq!(recv_raw(&mut raw).await, "PUSH||0||async");
    assert_eq!(recv_raw(&mut raw).await, "__ack_ASYNC||2||ok");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_survived() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&errors);
    let handlers = Handlers::new()
        .on("BOOM", |_, _| panic!("sync boom"))
        .on("LATER_BOOM", |_, _| {
            Reply::later(async {
                tokio::task::yield_now().await;
                panic!("async boom")
            })
        })
        .on("FINE", |_, _| Reply::ack("fine"))
        .on_error(move |_, err| {
            if let ConnError::HandlerPanicked { event, message } = err {
                seen.lock().unwrap().push(format!("{event}: {message}"));
            }
        });
    let (client, mut raw, _faults) = conn_and_raw(handlers, ConnConfig::default());
    send_raw(&mut raw, "BOOM||1||x").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_BOOM||1");
    send_raw(&mut raw, "LATER_BOOM||2||x").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_LATER_BOOM||2");
    send_raw(&mut raw, "BOOM||0||no ack wanted").await;
    send_raw(&mut raw, "FINE||3").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_FINE||3||fine");
    assert_eq!(
        *errors.lock().unwrap(),
        [
            "BOOM: sync boom",
            "LATER_BOOM: async boom",
            "BOOM: sync boom"
        ]
    );
    assert!(!client.is_closed());
}

#[tokio::test(start_paused = true)]
async fn ping_measures_the_round_trip_and_times_out_when_stalled() {
    let (client, _server, faults) = conns(Handlers::new(), Handlers::new());
    assert_eq!(client.ping(SECOND).await.unwrap(), Duration::ZERO);

    faults.delay(Duration::from_millis(5));
    assert_eq!(
        client.ping(SECOND).await.unwrap(),
        Duration::from_millis(10)
    );
    faults.delay(Duration::ZERO);

    faults.stall();
    let started = tokio::time::Instant::now();
    assert!(matches!(
        client.ping(Duration::from_secs(3)).await,
        Err(ConnError::PingTimeout(t)) if t == Duration::from_secs(3)
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    faults.release();
    // The late pong of the timed-out ping is ignored; a new ping works.
    assert!(client.ping(SECOND).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn ack_timeout_forgets_the_ack() {
    let (client, mut raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    let started = tokio::time::Instant::now();
    let result = client.emit_with_ack_timeout("E", b"x", SECOND).await;
    assert!(matches!(result, Err(ConnError::AckTimeout(t)) if t == SECOND));
    assert_eq!(started.elapsed(), SECOND);
    assert_eq!(client.pending_acks(), 0);
    assert_eq!(recv_raw(&mut raw).await, "E||1||x");
}

#[tokio::test(start_paused = true)]
async fn close_flushes_queued_frames_first_and_is_idempotent() {
    let (server_handlers, mut at_server) = forwarding();
    let (client, server, faults) = conns(Handlers::new(), server_handlers);
    for i in 0..100u32 {
        client.emit("E", i.to_string().as_bytes()).unwrap();
    }
    tokio::join!(
        client.close(CLOSE_NORMAL, "bye"),
        client.close(4000, "other")
    );
    client.close(4001, "again").await;
    for i in 0..100u32 {
        assert_eq!(
            within(at_server.recv()).await.unwrap().1,
            Bytes::from(i.to_string())
        );
    }
    let ours = within(client.closed()).await;
    assert!(!ours.by_peer && ours.normal, "{ours:?}");
    assert_eq!(ours.close.unwrap().reason, "bye");
    let theirs = within(server.closed()).await;
    assert!(theirs.by_peer && theirs.normal, "{theirs:?}");
    assert_eq!(theirs.close.unwrap().code, Some(CLOSE_NORMAL));
    assert!(matches!(
        client.emit("E", b""),
        Err(ConnError::Send(SendError::Closed))
    ));
    // Both ends dropped their sinks and streams: every task of both connections is gone.
    assert!(!faults.is_open());
}

#[tokio::test(start_paused = true)]
async fn close_cancels_running_handlers_and_leaves_nothing_running() {
    let probe = Arc::new(());
    let started = Arc::new(tokio::sync::Notify::new());
    let (held, notify) = (Arc::clone(&probe), Arc::clone(&started));
    let handlers = Handlers::new().on("FOREVER", move |_, _| {
        let held = Arc::clone(&held);
        let notify = Arc::clone(&notify);
        Reply::later(async move {
            let _held = held;
            notify.notify_one();
            std::future::pending::<()>().await;
            Bytes::new()
        })
    });
    let (client, server, faults) = memory::pair();
    let client = Conn::spawn(client, Handlers::new(), ConnConfig::default());
    let server = Conn::spawn(server, handlers, ConnConfig::default());
    let pending = client.emit_with_ack("FOREVER", b"");
    started.notified().await;
    assert_eq!(
        Arc::strong_count(&probe),
        3,
        "handler table + running future"
    );

    server.close(CLOSE_NORMAL, "shutting down").await;
    assert_eq!(
        Arc::strong_count(&probe),
        1,
        "the handler future or the table survived close"
    );
    assert!(matches!(within(pending).await, Err(ConnError::Closed)));
    within(client.closed()).await;
    assert!(!faults.is_open());
}

#[tokio::test(start_paused = true)]
async fn close_gives_up_on_a_silent_peer() {
    let (client, _raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    // The raw end never reads, so it never answers our close.
    let started = tokio::time::Instant::now();
    client.close(CLOSE_NORMAL, "bye").await;
    assert_eq!(started.elapsed(), cluster_etp::CLOSE_TIMEOUT);
    assert!(!within(client.closed()).await.by_peer);
}

#[tokio::test(start_paused = true)]
async fn closed_tells_why() {
    // Normal close by the peer.
    let (client, server, _faults) = conns(Handlers::new(), Handlers::new());
    server.close(CLOSE_NORMAL, "done").await;
    let end = within(client.closed()).await;
    assert!(end.by_peer && end.normal, "{end:?}");
    assert_eq!(end.close.as_ref().map(|c| c.reason.as_str()), Some("done"));
    assert!(client.is_closed());

    // Abnormal close by the peer: any code but 1000.
    let (client, server, _faults) = conns(Handlers::new(), Handlers::new());
    server.close(4001, "going away badly").await;
    let end = within(client.closed()).await;
    assert!(end.by_peer && !end.normal, "{end:?}");
    assert_eq!(end.close.unwrap().code, Some(4001));
    let ours = within(server.closed()).await;
    assert!(!ours.by_peer && !ours.normal, "{ours:?}");

    // Severed: abnormal, no close handshake, on both ends.
    let (client, server, faults) = conns(Handlers::new(), Handlers::new());
    faults.sever();
    for conn in [&client, &server] {
        let end = within(conn.closed()).await;
        assert!(end.by_peer && !end.normal && end.close.is_none(), "{end:?}");
        assert!(!end.reason.is_empty());
    }

    // The network closed normally on behalf of both ends.
    let (client, _server, faults) = conns(Handlers::new(), Handlers::new());
    faults.close_normally();
    let end = within(client.closed()).await;
    assert!(end.by_peer && end.normal, "{end:?}");

    // The transport dropped by the peer without a close looks broken.
    let (client, raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    drop(raw);
    let end = within(client.closed()).await;
    assert!(end.by_peer && !end.normal, "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn closed_resolves_for_every_clone_and_every_call() {
    let (client, server, _faults) = conns(Handlers::new(), Handlers::new());
    let clone = server.clone();
    let waiter = tokio::spawn(async move { clone.closed().await });
    client.close(CLOSE_NORMAL, "").await;
    let first = waiter.await.unwrap();
    assert_eq!(first, within(server.closed()).await);
    assert_eq!(first, within(server.closed()).await);
}

#[tokio::test(start_paused = true)]
async fn invalid_event_names_are_refused() {
    let (client, _raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    for bad in ["", "A||B", "__ack_E"] {
        assert!(matches!(
            client.emit(bad, b""),
            Err(ConnError::Send(SendError::InvalidEventName(_)))
        ));
        let ack = client.emit_with_ack(bad, b"");
        assert_eq!(ack.ack_id(), None);
        assert!(matches!(
            within(ack).await,
            Err(ConnError::Send(SendError::InvalidEventName(_)))
        ));
    }
    assert!(!client.is_closed());
}

#[tokio::test(start_paused = true)]
async fn one_handler_table_serves_many_connections() {
    let handlers = Handlers::new().on("WHO", |conn, _| Reply::ack(conn.id().to_string()));
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (c, s, _faults) = memory::pair();
        servers.push(Conn::spawn(s, handlers.clone(), ConnConfig::default()));
        clients.push(Conn::spawn(c, Handlers::new(), ConnConfig::default()));
    }
    for (client, server) in clients.iter().zip(&servers) {
        let answer = within(client.emit_with_ack("WHO", b"")).await.unwrap();
        assert_eq!(answer, Bytes::from(server.id().to_string()));
    }
}

#[tokio::test(start_paused = true)]
async fn an_oversized_message_ends_the_connection_with_1009() {
    // The server's stream refuses a message over its limit and closes with 1009.
    let config = memory::MemoryConfig {
        server_max_message_size: 16,
        ..memory::MemoryConfig::default()
    };
    let (c, s, _faults) = memory::pair_with(&config);
    let client = Conn::spawn(c, Handlers::new(), ConnConfig::default());
    let server = Conn::spawn(s, Handlers::new(), ConnConfig::default());
    let pending = client.emit_with_ack("BIG", &[b'x'; 64]);
    assert!(matches!(within(pending).await, Err(ConnError::Closed)));
    let end = within(client.closed()).await;
    assert!(end.by_peer && !end.normal, "{end:?}");
    assert_eq!(end.close.and_then(|c| c.code), Some(1009));
    let end = within(server.closed()).await;
    assert!(
        !end.normal && end.reason.contains("over the limit"),
        "{end:?}"
    );
}

/// A sink that records what the writer does with it, and a stream that never yields.
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    flushed: mpsc::UnboundedSender<()>,
}

#[cluster_transport::async_trait]
impl cluster_transport::MessageSink for Recorder {
    async fn feed(&mut self, text: Bytes) -> Result<(), cluster_transport::TransportError> {
        self.log
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&text).into_owned());
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), cluster_transport::TransportError> {
        self.log.lock().unwrap().push("FLUSH".to_owned());
        let _ = self.flushed.send(());
        Ok(())
    }

    async fn ping(&mut self, _payload: Bytes) -> Result<(), cluster_transport::TransportError> {
        Ok(())
    }

    async fn close(
        &mut self,
        code: u16,
        _reason: &str,
    ) -> Result<(), cluster_transport::TransportError> {
        self.log.lock().unwrap().push(format!("CLOSE {code}"));
        Ok(())
    }
}

struct Silent;

#[cluster_transport::async_trait]
impl cluster_transport::MessageStream for Silent {
    async fn recv(&mut self) -> Result<Incoming, cluster_transport::TransportError> {
        std::future::pending().await
    }
}

/// A transport whose sink is a [`Recorder`]: the transport, the log, and a receiver that
/// gets one message per flush.
fn recorded() -> (
    Transport,
    Arc<Mutex<Vec<String>>>,
    mpsc::UnboundedReceiver<()>,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (flushed, flushes) = mpsc::unbounded_channel();
    let transport = Transport {
        sink: Box::new(Recorder {
            log: Arc::clone(&log),
            flushed,
        }),
        stream: Box::new(Silent),
        peer: "recorder".to_owned(),
    };
    (transport, log, flushes)
}

#[tokio::test(start_paused = true)]
async fn the_writer_flushes_once_per_burst_or_per_batch() {
    let (transport, log, mut flushes) = recorded();
    let config = ConnConfig {
        flush_batch: 64,
        ..ConnConfig::default()
    };
    let conn = Conn::spawn(transport, Handlers::new(), config);
    // 150 frames queued before the writer first runs: 64 + 64 + 22, a flush after each.
    for i in 0..150 {
        conn.emit("E", format!("{i}").as_bytes()).unwrap();
    }
    for _ in 0..3 {
        within(flushes.recv()).await.unwrap();
    }
    // One more frame later: its own burst, its own flush.
    conn.emit("E", b"alone").unwrap();
    within(flushes.recv()).await.unwrap();
    conn.close(CLOSE_NORMAL, "bye").await;

    let log = log.lock().unwrap().clone();
    let mut expected: Vec<String> = Vec::new();
    for i in 0..150 {
        expected.push(format!("E||0||{i}"));
        if i == 63 || i == 127 || i == 149 {
            expected.push("FLUSH".to_owned());
        }
    }
    expected.extend(["E||0||alone", "FLUSH", "CLOSE 1000"].map(str::to_owned));
    assert_eq!(log, expected);
}

/// Frames queued behind others are encoded into one shared buffer, frames encoded by the
/// caller are queued as they are: the writer sends both kinds in the order they were queued.
#[tokio::test(start_paused = true)]
async fn frames_encoded_in_place_and_by_the_caller_keep_their_order() {
    let (transport, log, mut flushes) = recorded();
    let conn = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
    // All queued before the writer first runs.
    conn.emit("A", b"1").unwrap();
    conn.emit_encoded(Bytes::from_static(b"B||0||2")).unwrap();
    let ask = conn.emit_with_ack("C", &[b'x'; 3000]);
    conn.emit("D", b"").unwrap();
    conn.emit_encoded(Bytes::from_static(b"E||0||5")).unwrap();
    conn.emit("F", "ü".as_bytes()).unwrap();
    within(flushes.recv()).await.unwrap();
    drop(ask);
    conn.close(CLOSE_NORMAL, "bye").await;

    let log = log.lock().unwrap().clone();
    let expected = [
        "A||0||1".to_owned(),
        "B||0||2".to_owned(),
        format!("C||1||{}", "x".repeat(3000)),
        "D||0".to_owned(),
        "E||0||5".to_owned(),
        "F||0||ü".to_owned(),
        "FLUSH".to_owned(),
        "CLOSE 1000".to_owned(),
    ];
    assert_eq!(log, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_emitters_on_two_threads_each_get_their_own_ack() {
    let server_handlers =
        Handlers::new()
            .on("SYNC", |_, data| Reply::Ack(data))
            .on("ASYNC", |conn, data| {
                let conn = conn.clone();
                Reply::later(async move {
                    tokio::task::yield_now().await;
                    conn.emit("NOISE", b"n").unwrap();
                    data
                })
            });
    let (client, server, faults) = conns(Handlers::new(), server_handlers);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    let event = if i % 2 == 0 { "SYNC" } else { "ASYNC" };
                    let data = format!("{t}-{i}");
                    let answer = client.emit_with_ack(event, data.as_bytes()).await.unwrap();
                    assert_eq!(answer, Bytes::from(data));
                }
            })
        })
        .collect();
    for task in tasks {
        within(task).await.unwrap();
    }
    assert_eq!(client.pending_acks(), 0);
    within(server.close(CLOSE_NORMAL, "done")).await;
    assert!(within(client.closed()).await.normal);
    assert!(!faults.is_open());
}

// ---------------------------------------------------------------------------------------------
// Review fixes.

/// While every handler slot is busy the reader still reads acks, so a `Later`
/// handler that waits for the ack of its own `emit_with_ack` finishes even at bound 1.
#[tokio::test(start_paused = true)]
async fn a_later_handler_awaiting_an_ack_completes_while_the_slot_is_busy() {
    let server_handlers = Handlers::new().on("ASK", |conn, data| {
        let conn = conn.clone();
        Reply::later(async move { conn.emit_with_ack("Q", &data).await.unwrap() })
    });
    let client_handlers = Handlers::new().on("Q", |_, data| Reply::ack(data.to_ascii_uppercase()));
    let (c, s, _faults) = memory::pair();
    let client = Conn::spawn(c, client_handlers, ConnConfig::default());
    let config = ConnConfig {
        max_concurrent_handlers: 1,
        ..ConnConfig::default()
    };
    let _server = Conn::spawn(s, server_handlers, config);
    // The first runs; the second waits for the slot while the ack of the first's question
    // comes in behind it.
    let first = client.emit_with_ack("ASK", b"a");
    let second = client.emit_with_ack("ASK", b"b");
    assert_eq!(within(first).await.unwrap(), Bytes::from_static(b"A"));
    assert_eq!(within(second).await.unwrap(), Bytes::from_static(b"B"));
    assert_eq!(
        within(client.emit_with_ack("ASK", b"c")).await.unwrap(),
        Bytes::from_static(b"C")
    );
}

/// Pings work both ways while the only handler slot is busy and one more event
/// waits for it; the reader stops reading only once it would have to hold a second event.
#[tokio::test(start_paused = true)]
async fn pings_are_answered_while_the_handler_slot_is_busy() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (called_tx, mut called) = mpsc::unbounded_channel();
    let gate = Arc::clone(&release);
    let server_handlers = Handlers::new().on("HOLD", move |_, data| {
        let _ = called_tx.send(data.clone());
        let gate = Arc::clone(&gate);
        Reply::later(async move {
            gate.acquire().await.unwrap().forget();
            data
        })
    });
    let (c, s, _faults) = memory::pair();
    let client = Conn::spawn(c, Handlers::new(), ConnConfig::default());
    let config = ConnConfig {
        max_concurrent_handlers: 1,
        ..ConnConfig::default()
    };
    let server = Conn::spawn(s, server_handlers, config);

    let first = client.emit_with_ack("HOLD", b"1");
    let second = client.emit_with_ack("HOLD", b"2");
    // Both sync parts ran: the first future holds the slot, the second waits for it.
    assert_eq!(within(called.recv()).await.unwrap(), "1");
    assert_eq!(within(called.recv()).await.unwrap(), "2");
    assert!(server.ping(SECOND).await.is_ok(), "our pong was not read");
    assert!(
        client.ping(SECOND).await.is_ok(),
        "the peer's ping was not read"
    );

    // A third event is held unread-on: from then on the reader waits, pings go unanswered.
    let third = client.emit_with_ack("HOLD", b"3");
    assert!(matches!(
        client.ping(SECOND).await,
        Err(ConnError::PingTimeout(_))
    ));
    assert!(called.try_recv().is_err(), "the third event ran too early");

    release.add_permits(3);
    assert_eq!(within(first).await.unwrap(), "1");
    assert_eq!(within(second).await.unwrap(), "2");
    assert_eq!(within(third).await.unwrap(), "3");
    assert_eq!(within(called.recv()).await.unwrap(), "3");
    assert!(client.ping(SECOND).await.is_ok());
}

/// The data of a frame, owned by something whose drop takes a while (say, a pool that closes
/// its connections): the slow destructor widens the window in which a task could still be
/// dropping it after `close()` returned.
struct SlowOwner {
    text: Vec<u8>,
    drop_time: Duration,
    _alive: Arc<()>,
}

impl AsRef<[u8]> for SlowOwner {
    fn as_ref(&self) -> &[u8] {
        &self.text
    }
}

impl Drop for SlowOwner {
    fn drop(&mut self) {
        std::thread::sleep(self.drop_time);
    }
}

/// When `close()` returns, the handler tasks have dropped everything they held
/// (their future, the frame, the handler table), on a multi-thread runtime too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_nothing_a_handler_held_is_alive() {
    for _round in 0..20 {
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let table_probe = Arc::new(());
        let in_table = Arc::clone(&table_probe);
        let handlers = Handlers::new().on("HOLD", move |_, _| {
            let _ = &in_table;
            let started = started_tx.clone();
            Reply::later(async move {
                let _ = started.send(());
                std::future::pending::<Bytes>().await
            })
        });
        let (c, mut raw, _faults) = {
            let (c, s, faults) = memory::pair();
            (Conn::spawn(c, handlers, ConnConfig::default()), s, faults)
        };
        let mut frames = Vec::new();
        for i in 0..4 {
            let alive = Arc::new(());
            frames.push(Arc::downgrade(&alive));
            // Different drop times, so that whichever task ends last, another is still busy.
            let owner = SlowOwner {
                text: format!("HOLD||0||{i}").into_bytes(),
                drop_time: Duration::from_millis(10 * (i + 1)),
                _alive: alive,
            };
            raw.sink.feed(Bytes::from_owner(owner)).await.unwrap();
        }
        raw.sink.flush().await.unwrap();
        for _ in 0..4 {
            within(started.recv()).await.unwrap();
        }
        // The raw end answers our close at once (its stream echoes it).
        let answering =
            tokio::spawn(
                async move { while let Ok(Incoming::Text(_)) = raw.stream.recv().await {} },
            );
        let table = Arc::downgrade(&table_probe);
        drop(table_probe);
        within(c.close(CLOSE_NORMAL, "bye")).await;
        assert!(table.upgrade().is_none(), "the handler table is alive");
        for frame in &frames {
            assert!(frame.upgrade().is_none(), "a handler's frame is alive");
        }
        within(answering).await.unwrap();
    }
}

/// Every emit that returned `Ok` is delivered before our close, however the emit
/// and the close race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_that_returned_ok_is_sent_before_the_close() {
    for _round in 0..20 {
        let received = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&received);
        let server_handlers = Handlers::new().on("E", move |_, _| {
            count.fetch_add(1, Ordering::SeqCst);
            Reply::default()
        });
        let (client, server, _faults) = conns(Handlers::new(), server_handlers);
        let (going_tx, going) = tokio::sync::oneshot::channel();
        let emitter = {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut going_tx = Some(going_tx);
                let mut sent = 0usize;
                while client.emit("E", b"x").is_ok() {
                    sent += 1;
                    if sent == 100
                        && let Some(tx) = going_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                sent
            })
        };
        going.await.unwrap();
        within(client.close(CLOSE_NORMAL, "bye")).await;
        let sent = emitter.join().unwrap();
        let end = within(server.closed()).await;
        assert!(end.normal, "{end:?}");
        assert_eq!(
            received.load(Ordering::SeqCst),
            sent,
            "an emit that returned Ok was lost"
        );
    }
}

/// A sink whose close fails as on a broken transport (frames still go through).
struct BrokenOnClose;

#[cluster_transport::async_trait]
impl cluster_transport::MessageSink for BrokenOnClose {
    async fn feed(&mut self, _text: Bytes) -> Result<(), cluster_transport::TransportError> {
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), cluster_transport::TransportError> {
        Ok(())
    }

    async fn ping(&mut self, _payload: Bytes) -> Result<(), cluster_transport::TransportError> {
        Ok(())
    }

    async fn close(
        &mut self,
        _code: u16,
        _reason: &str,
    ) -> Result<(), cluster_transport::TransportError> {
        Err(cluster_transport::TransportError::Lost {
            reason: "TCP write failed".to_owned(),
            source: Some(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )),
        })
    }
}

/// A close that could not be written is not reported as a normal close.
#[tokio::test(start_paused = true)]
async fn a_close_that_could_not_be_sent_is_not_normal() {
    let transport = Transport {
        sink: Box::new(BrokenOnClose),
        stream: Box::new(Silent),
        peer: "broken".to_owned(),
    };
    let conn = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
    conn.emit("E", b"x").unwrap();
    conn.close(CLOSE_NORMAL, "bye").await;
    let end = within(conn.closed()).await;
    assert!(
        !end.normal && !end.by_peer && end.close.is_none(),
        "{end:?}"
    );
    assert!(end.reason.contains("connection reset by peer"), "{end:?}");
}

/// A handler reply that is not UTF-8 cannot travel in a text message: the ack goes
/// out empty and the connection stays.
#[tokio::test(start_paused = true)]
async fn a_non_utf8_reply_is_acked_empty_and_the_connection_stays() {
    let handlers = Handlers::new()
        .on("BIN", |_, _| Reply::ack(vec![b'a', 0xff, 0xfe]))
        .on("LATER_BIN", |_, _| {
            Reply::later(async { Bytes::from_static(&[0xc3]) })
        })
        .on("TEXT", |_, _| Reply::ack("fine"));
    let (client, mut raw, _faults) = conn_and_raw(handlers, ConnConfig::default());
    send_raw(&mut raw, "BIN||1").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_BIN||1");
    send_raw(&mut raw, "LATER_BIN||2").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_LATER_BIN||2");
    send_raw(&mut raw, "TEXT||3").await;
    assert_eq!(recv_raw(&mut raw).await, "__ack_TEXT||3||fine");
    assert!(!client.is_closed());
}

/// Data that is not UTF-8 cannot travel in a text message: it is refused with a
/// typed error before it is queued, and the connection stays.
#[tokio::test(start_paused = true)]
async fn non_utf8_data_is_refused_and_the_connection_stays() {
    let (client, mut raw, _faults) = conn_and_raw(Handlers::new(), ConnConfig::default());
    assert!(matches!(
        client.emit("E", b"ok\xff"),
        Err(ConnError::Send(SendError::NotUtf8 { valid_up_to: 2 }))
    ));
    assert!(matches!(
        client.emit_encoded(Bytes::from_static(b"E||0||\xc3")),
        Err(ConnError::Send(SendError::NotUtf8 { valid_up_to: 6 }))
    ));
    let refused = client.emit_with_ack("E", b"\xfe");
    assert_eq!(refused.ack_id(), None);
    assert!(matches!(
        within(refused).await,
        Err(ConnError::Send(SendError::NotUtf8 { valid_up_to: 0 }))
    ));
    assert_eq!(client.queued_bytes(), 0);

    client.emit("E", "still here ✓".as_bytes()).unwrap();
    assert_eq!(recv_raw(&mut raw).await, "E||0||still here ✓");
    // No ack id was used up by the refused emit.
    let next = client.emit_with_ack("E", b"");
    assert_eq!(next.ack_id(), Some(1));
    assert_eq!(recv_raw(&mut raw).await, "E||1");
    assert!(!client.is_closed());
}

/// `writable` resolves at once while the write queue is at or under the high-water mark,
/// waits while it is over (the peer does not read), resolves once the peer has read it down,
/// and resolves when the connection ends.
#[tokio::test(start_paused = true)]
async fn writable_waits_while_the_queue_is_over_the_high_water_mark() {
    const HIGH_WATER: usize = 4 << 10;
    const EVENTS: usize = 16;
    let small_buffers = memory::MemoryConfig {
        capacity: 1,
        ..memory::MemoryConfig::default()
    };
    let (client, mut peer, faults) = memory::pair_with(&small_buffers);
    let config = ConnConfig {
        queued_bytes_high_water: HIGH_WATER,
        ..ConnConfig::default()
    };
    let conn = Conn::spawn(client, Handlers::new(), config);
    within(conn.writable()).await;

    // The peer does not read: past the first frames the transport takes, the queue grows.
    let data = vec![b'x'; 1 << 10];
    for _ in 0..EVENTS {
        conn.emit("E", &data).unwrap();
    }
    assert!(conn.queued_bytes() > HIGH_WATER, "{}", conn.queued_bytes());
    // The paused clock moves on only once every task waits: nothing drains the queue.
    assert!(
        tokio::time::timeout(Duration::from_secs(10), conn.writable())
            .await
            .is_err()
    );

    // The peer reads: `writable` resolves once the queue is down to the mark.
    let read = tokio::spawn(async move {
        for _ in 0..EVENTS {
            match peer.stream.recv().await {
                Ok(Incoming::Text(text)) => assert_eq!(text.len(), "E||0||".len() + 1024),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        peer
    });
    within(conn.writable()).await;
    assert!(conn.queued_bytes() <= HIGH_WATER);
    let _peer = within(read).await.unwrap();

    // Over the mark again, then the connection is severed: `writable` resolves.
    for _ in 0..EVENTS {
        conn.emit("E", &data).unwrap();
    }
    assert!(conn.queued_bytes() > HIGH_WATER, "{}", conn.queued_bytes());
    let waiting = tokio::spawn({
        let conn = conn.clone();
        async move { conn.writable().await }
    });
    // Everything else runs first: the writer has fed what it could and waits, and so does
    // `waiting` (the severing, not the writer's work, is what must wake it).
    tokio::task::yield_now().await;
    assert!(conn.queued_bytes() > HIGH_WATER, "{}", conn.queued_bytes());
    assert!(!waiting.is_finished());
    faults.sever();
    within(waiting).await.unwrap();
    within(conn.closed()).await;
    assert!(conn.emit("E", b"").is_err());
}

/// A peer that sends requests and never reads the answers is slowed down to its
/// own reading pace. The write queue stays at about the high-water mark instead of growing
/// without bound, the connection stays, and everything is answered once the peer reads.
#[tokio::test(start_paused = true)]
async fn a_peer_that_does_not_read_is_back_pressured() {
    const REPLY: usize = 64 << 10;
    const FRAME: usize = REPLY + "BIG||0||".len();
    const HIGH_WATER: usize = 256 << 10;
    const REQUESTS: usize = 1000;
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let reply = vec![b'x'; REPLY];
    let handlers = Handlers::new().on("REQ", move |conn, _| {
        count.fetch_add(1, Ordering::SeqCst);
        conn.emit("BIG", &reply).unwrap();
        Reply::default()
    });
    let small_buffers = memory::MemoryConfig {
        capacity: 8,
        ..memory::MemoryConfig::default()
    };
    let (client, server, _faults) = memory::pair_with(&small_buffers);
    let config = ConnConfig {
        queued_bytes_high_water: HIGH_WATER,
        ..ConnConfig::default()
    };
    let server = Conn::spawn(server, handlers, config);
    let Transport {
        sink: mut client_sink,
        stream: mut client_stream,
        ..
    } = client;
    let mut flood = tokio::spawn(async move {
        for _ in 0..REQUESTS {
            client_sink
                .feed(Bytes::from_static(b"REQ||0"))
                .await
                .unwrap();
            client_sink.flush().await.unwrap();
        }
        client_sink
    });

    // The client does not read, so the flood cannot finish: the paused clock moves on only
    // once every task waits.
    assert!(
        tokio::time::timeout(Duration::from_secs(10), &mut flood)
            .await
            .is_err()
    );
    let stalled = handled.load(Ordering::SeqCst);
    assert!(stalled < 30, "{stalled} requests were handled");
    let queued = server.queued_bytes();
    assert!(
        queued > HIGH_WATER && queued <= HIGH_WATER + FRAME,
        "{queued} bytes queued"
    );
    assert!(!server.is_closed());

    // The client reads at last: every request is answered, in order, and the queue empties.
    for _ in 0..REQUESTS {
        match within(client_stream.recv()).await.unwrap() {
            Incoming::Text(text) => assert_eq!(text.len(), FRAME),
            other => panic!("expected an answer, got {other:?}"),
        }
    }
    let _client_sink = within(flood).await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), REQUESTS);
    assert_eq!(server.queued_bytes(), 0);
    assert!(!server.is_closed());
}

/// Past `max_queued_bytes` an emit is refused with `QueueFull` and the connection
/// is closed with 1008 after what was queued.
#[tokio::test(start_paused = true)]
async fn over_the_queue_limit_emits_fail_and_the_connection_closes_with_1008() {
    const REPLY: usize = 64 << 10;
    const FRAME: usize = REPLY + "BIG||0||".len();
    const LIMIT: usize = 1 << 20;
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    let reply = vec![b'x'; REPLY];
    let handlers = Handlers::new().on("BURST", move |conn, _| {
        for accepted in 0..100 {
            if let Err(err) = conn.emit("BIG", &reply) {
                let _ = errors_tx.send((accepted, err, conn.queued_bytes()));
                break;
            }
        }
        Reply::default()
    });
    let small_buffers = memory::MemoryConfig {
        capacity: 8,
        ..memory::MemoryConfig::default()
    };
    let (mut client, server, _faults) = memory::pair_with(&small_buffers);
    let config = ConnConfig {
        max_queued_bytes: LIMIT,
        ..ConnConfig::default()
    };
    let server = Conn::spawn(server, handlers, config);
    send_raw(&mut client, "BURST||0").await;

    let (accepted, err, queued) = within(errors.recv()).await.unwrap();
    assert!(
        matches!(err, ConnError::QueueFull { limit: LIMIT, .. }),
        "{err}"
    );
    // The first frames went to the transport from the handler's task (the writer was idle),
    // as many as its channel holds; only what the transport could not take is queued, and
    // the limit bounds that.
    assert_eq!(accepted, small_buffers.capacity + LIMIT / FRAME);
    assert!(queued <= LIMIT, "{queued} bytes queued");
    assert!(server.is_closed());
    assert!(matches!(
        server.emit("E", b""),
        Err(ConnError::Send(SendError::Closed))
    ));

    // The client reads at last: what was accepted, then the close.
    let mut received = 0;
    let close = loop {
        match within(client.stream.recv()).await.unwrap() {
            Incoming::Text(text) => {
                assert_eq!(text.len(), FRAME);
                received += 1;
            }
            Incoming::Closed(info) => break info,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(received, accepted);
    assert_eq!(close.code, Some(CLOSE_QUEUE_OVERFLOW));
    let end = within(server.closed()).await;
    assert!(!end.by_peer && !end.normal, "{end:?}");
    assert_eq!(end.close.and_then(|c| c.code), Some(CLOSE_QUEUE_OVERFLOW));
    assert_eq!(server.queued_bytes(), 0);
}

/// A sink whose `try_feed` fails (what a caller feeding from its own task meets), recording
/// whether that was called outside any task (the test's body: the caller) rather than from
/// the writer task; everything else goes to the in-memory sink.
struct TryFeedFails(
    Box<dyn cluster_transport::MessageSink>,
    Arc<std::sync::atomic::AtomicBool>,
);

#[cluster_transport::async_trait]
impl cluster_transport::MessageSink for TryFeedFails {
    async fn feed(&mut self, text: Bytes) -> Result<(), cluster_transport::TransportError> {
        self.0.feed(text).await
    }
    fn try_feed(&mut self, _: Bytes) -> Result<Option<Bytes>, cluster_transport::TransportError> {
        if tokio::task::try_id().is_none() {
            self.1.store(true, Ordering::SeqCst);
        }
        Err(cluster_transport::TransportError::Lost {
            reason: "try_feed broke".into(),
            source: None,
        })
    }
    async fn flush(&mut self) -> Result<(), cluster_transport::TransportError> {
        self.0.flush().await
    }
    async fn ping(&mut self, payload: Bytes) -> Result<(), cluster_transport::TransportError> {
        self.0.ping(payload).await
    }
    async fn close(
        &mut self,
        code: u16,
        reason: &str,
    ) -> Result<(), cluster_transport::TransportError> {
        self.0.close(code, reason).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_feed_from_the_callers_task_ends_the_connection_with_its_error() {
    let (c, _s, _faults) = memory::pair();
    let by_caller = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c = Transport {
        sink: Box::new(TryFeedFails(c.sink, Arc::clone(&by_caller))),
        ..c
    };
    let conn = Conn::spawn(c, Handlers::new(), ConnConfig::default());
    // Let the writer start and lend its sink: the emit below is fed from this task.
    tokio::task::yield_now().await;
    conn.emit("EVENT", b"x").unwrap();
    let end = within(conn.closed()).await;
    assert!(!end.normal, "{end:?}");
    assert!(end.reason.contains("try_feed broke"), "{end:?}");
    assert!(
        by_caller.load(Ordering::SeqCst),
        "the failing try_feed ran in the writer task, not the caller's"
    );
}

/// A WebSocket connection over loopback: (client, server) transports.
async fn ws_pair() -> (Transport, Transport) {
    use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
    use cluster_transport::{Acceptor, Connector, Endpoint};
    let mut acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
        .await
        .unwrap();
    let endpoint: Endpoint = format!("127.0.0.1:{}", acceptor.local_addr().port())
        .parse()
        .unwrap();
    let connector = WsConnector::new(WsConfig::default()).unwrap();
    let (c, s) = tokio::join!(connector.connect(&endpoint, "ws"), acceptor.accept());
    (c.unwrap(), s.unwrap().transport)
}

/// Our close stops the reader before it dispatches events it has read already: three
/// events come in one write (one read over WebSocket, the two last buffered); the handler of
/// the first starts the close, and the two others are never handled.
#[tokio::test]
async fn a_close_started_by_a_handler_drops_the_events_already_read() {
    let (mut client, server) = ws_pair().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let handlers = Handlers::new().on("E", move |conn, _| {
        count.fetch_add(1, Ordering::SeqCst);
        conn.start_close(CLOSE_NORMAL, "enough");
        Reply::default()
    });
    let server = Conn::spawn(server, handlers, ConnConfig::default());
    for n in 1..=3 {
        client
            .sink
            .feed(Bytes::from(format!("E||0||{n}")))
            .await
            .unwrap();
    }
    client.sink.flush().await.unwrap();
    // The server's close is the first thing it sends (the transport answers it).
    match within(client.stream.recv()).await {
        Ok(Incoming::Closed(info)) => assert_eq!(info.code, Some(CLOSE_NORMAL)),
        other => panic!("{other:?}"),
    }
    within(server.closed()).await;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

/// A flood of events over loopback WebSocket, the sender keeping at most `WINDOW` in flight
/// (the etp bench's flood), on a current-thread runtime: every event arrives.
#[tokio::test]
async fn a_windowed_flood_over_websocket_arrives_whole_on_one_thread() {
    use std::sync::atomic::AtomicU64;
    const EVENTS: u64 = 40_000;
    const WINDOW: u64 = 4_096;
    let (c, s) = ws_pair().await;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let (count, notify) = (Arc::clone(&received), Arc::clone(&progress));
    let handlers = Handlers::new().on("EVENT", move |_, _| {
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 256 == 0 || n == EVENTS {
            notify.notify_one();
        }
        Reply::default()
    });
    let client = Conn::spawn(c, Handlers::new(), ConnConfig::default());
    let server = Conn::spawn(s, handlers, ConnConfig::default());
    let payload = vec![b'x'; 1024];
    let flood = async {
        for sent in 0..EVENTS {
            while sent - received.load(Ordering::Relaxed) >= WINDOW {
                progress.notified().await;
            }
            client.emit("EVENT", &payload).unwrap();
        }
        while received.load(Ordering::Relaxed) < EVENTS {
            progress.notified().await;
        }
    };
    let delivered = tokio::time::timeout(Duration::from_secs(60), flood).await;
    assert!(
        delivered.is_ok(),
        "stalled: {} of {EVENTS} events arrived, {} bytes queued",
        received.load(Ordering::Relaxed),
        client.queued_bytes()
    );
    client.close(CLOSE_NORMAL, "done").await;
    within(server.closed()).await;
}
