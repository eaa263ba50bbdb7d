//! `observability.sentry` end to end: error lines, fatal errors and panics reach a fake
//! Sentry (on loopback) as isp-kit sends them; info lines do not.
#![cfg(feature = "sentry")]

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use cluster_bootstrap::local::SentryConfig;
use cluster_bootstrap::observability::sentry::{FLUSH_TIMEOUT, SentryGuard, sentry};
use cluster_bootstrap::observability::{BoxedLayer, Identity};
use serde_json::Value;
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt as _;

/// How long a test waits for what it expects.
const WAIT: Duration = Duration::from_secs(10);

/// Each test binds its client to the process's hub (for the panic integration): one at a
/// time.
static ONE_CLIENT_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A fake Sentry: the events of the envelopes posted to `/api/1/envelope/`.
struct FakeSentry {
    port: u16,
    events: mpsc::Receiver<Value>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeSentry {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, events) = mpsc::channel();
        let app = Router::new().route(
            "/api/1/envelope/",
            post(move |body: Bytes| {
                let sender = sender.clone();
                async move {
                    for event in events_of(&body) {
                        let _ = sender.send(event);
                    }
                    "{}"
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            events,
            _runtime: runtime,
        }
    }

    fn dsn(&self) -> String {
        format!("http://public@127.0.0.1:{}/1", self.port)
    }

    /// The next event, waiting at most [`WAIT`].
    fn next(&self) -> Value {
        self.events
            .recv_timeout(WAIT)
            .expect("an event reaches the fake Sentry")
    }

    /// The events that have arrived.
    fn arrived(&self) -> Vec<Value> {
        self.events.try_iter().collect()
    }
}

/// The event items of an envelope: a header line, then items, each a header line (with the
/// payload's `length`, or none: up to the next line break) and a payload.
fn events_of(body: &[u8]) -> Vec<Value> {
    fn line(bytes: &[u8]) -> (&[u8], &[u8]) {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(end) => (&bytes[..end], &bytes[end + 1..]),
            None => (bytes, &[]),
        }
    }
    let (_envelope_header, mut rest) = line(body);
    let mut events = Vec::new();
    while !rest.is_empty() {
        let (item_header, after) = line(rest);
        rest = after;
        if item_header.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let header: Value = serde_json::from_slice(item_header).expect("an item header");
        let payload = match header["length"].as_u64() {
            Some(length) => {
                let (payload, after) = rest.split_at(usize::try_from(length).unwrap());
                rest = after.strip_prefix(b"\n").unwrap_or(after);
                payload
            }
            None => {
                let (payload, after) = line(rest);
                rest = after;
                payload
            }
        };
        if header["type"] == "event" {
            events.push(serde_json::from_slice(payload).expect("an event"));
        }
    }
    events
}

fn identity() -> Identity {
    Identity {
        module_name: "isp-test-service".into(),
        module_version: "1.2.3".into(),
        instance_id: "10.0.0.7".into(),
    }
}

fn set_up(dsn: String) -> (BoxedLayer, SentryGuard) {
    let mut config = SentryConfig::default();
    config.enable = true;
    config.dsn = dsn.into();
    config.environment = "stage".into();
    config.tags.insert("team".into(), "platform".into());
    sentry(&config, &identity()).unwrap().expect("enabled")
}

/// The event's level: Sentry leaves `error`, the default, out.
fn level(event: &Value) -> &str {
    event["level"].as_str().unwrap_or("error")
}

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused by upstream")
    }
}

impl std::error::Error for Refused {}

#[test]
fn an_error_line_arrives_as_an_event_and_an_info_line_does_not() {
    let _one = ONE_CLIENT_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let fake = FakeSentry::start();
    let (layer, guard) = set_up(fake.dsn());

    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(answer = 42, "just information");
        tracing::warn!("just a warning");
        // The bootstrap's fatal line is `capture_fatal`'s to send.
        tracing::error!(target: "cluster_bootstrap::fatal", "the end");
        tracing::info_span!("grpc_call", request_id = "req-1", endpoint = "a/b").in_scope(|| {
            let cause = Refused;
            tracing::error!(
                error = &cause as &dyn std::error::Error,
                code = 7,
                "call failed"
            );
        });
    });
    // Sent in order: once flushed, everything sent has arrived.
    assert!(guard.flush(FLUSH_TIMEOUT));
    let events = fake.arrived();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];

    assert_eq!(level(event), "error");
    assert_eq!(event["message"], "call failed");
    assert_eq!(event["server_name"], "isp-test-service");
    assert_eq!(event["environment"], "stage");
    assert_eq!(event["release"], "undefined");
    assert_eq!(event["logger"], "observability_sentry");
    let tags = &event["tags"];
    assert_eq!(tags["version"], "1.2.3");
    assert_eq!(tags["instanceId"], "10.0.0.7");
    assert_eq!(tags["team"], "platform");
    // The line's fields and its span's, isp-kit's `requestId` among them.
    assert_eq!(tags["code"], "7");
    assert_eq!(tags["requestId"], "req-1");
    assert_eq!(tags["endpoint"], "a/b");
    assert_eq!(tags["error"], "connection refused by upstream");
    let exception = &event["exception"]["values"][0];
    assert_eq!(exception["type"], "Refused");
    assert_eq!(exception["value"], "connection refused by upstream");
    // Go drops the environment integration: no OS, device or runtime contexts.
    assert!(
        event.get("contexts").is_none_or(|c| c.get("os").is_none()),
        "{event:#}"
    );
    assert!(!event.to_string().contains("public@"), "{event:#}");
}

#[test]
fn a_fatal_error_arrives_with_level_fatal() {
    let _one = ONE_CLIENT_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let fake = FakeSentry::start();
    let (_layer, guard) = set_up(fake.dsn());

    guard.capture_fatal("create local config: moduleName is required");
    // Flushed: the event has arrived.
    let events = fake.arrived();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(level(event), "fatal");
    assert_eq!(
        event["message"],
        "create local config: moduleName is required"
    );
    assert_eq!(event["server_name"], "isp-test-service");
    assert_eq!(event["tags"]["version"], "1.2.3");
}

#[test]
fn a_panic_arrives_through_the_panic_integration() {
    let _one = ONE_CLIENT_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let fake = FakeSentry::start();
    let (_layer, _guard) = set_up(fake.dsn());

    let result = std::panic::catch_unwind(|| panic!("the answer is not 42"));
    assert!(result.is_err());
    // The panic hook captured and flushed.
    let event = fake.next();
    assert_eq!(level(&event), "fatal");
    let exception = &event["exception"]["values"][0];
    assert_eq!(exception["type"], "panic");
    assert_eq!(exception["value"], "the answer is not 42");
    assert_eq!(exception["mechanism"]["handled"], false);
    assert_eq!(event["server_name"], "isp-test-service");
    assert_eq!(event["tags"]["instanceId"], "10.0.0.7");
}

#[test]
fn a_sentry_that_never_answers_holds_up_flush_no_longer_than_its_timeout() {
    let _one = ONE_CLIENT_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Connections are accepted (by the kernel) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (layer, guard) = set_up(format!("http://public@127.0.0.1:{port}/1"));

    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        // One stalls the sending thread, ten fill its queue, the rest are dropped: a plain
        // flush would now block on the full queue.
        for n in 0..20 {
            tracing::error!(n, "lost");
        }
    });
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    assert!(!guard.flush(timeout));
    assert!(started.elapsed() < timeout + Duration::from_secs(2));

    // Dropping the guard flushes (at most FLUSH_TIMEOUT) and never joins the stalled thread.
    let started = Instant::now();
    drop(guard);
    assert!(started.elapsed() < FLUSH_TIMEOUT + Duration::from_secs(2));
    drop(silent);
}
