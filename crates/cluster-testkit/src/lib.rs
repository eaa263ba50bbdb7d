//! A fake isp-config-service, for testing isp cluster clients: in memory, or on a loopback
//! WebSocket that real Go isp-kit services can be pointed at.
//!
//! It does for modules what isp-config-service does (docs/protocol.md §6): it records each module
//! that connects, hands out its active remote config and stores its schema, answers required
//! modules with the addresses of their ready instances and the routing table to those who want
//! it, and tells every subscriber when instances come and go or a config changes. On top, a
//! test API in the spirit of wiremock: inspect what the service knows and every frame it
//! received and sent, change configs, push error events, drop connections, stop and restart,
//! inject faults on acks and events, and await conditions with readable failure reports.
//!
//! What it does **not** do: persistence, config variables (`_Var(…)`),
//! config history, clustering between real nodes (several listeners of one service share one
//! state instead). It depends on `cluster-proto`, `cluster-transport`, `cluster-etp` and, with
//! the admin API (feature `admin`), `cluster-serve`, never on the client, so the client's own
//! tests can use it.
//!
//! # Layout
//! - [`state`]: the pure state (no IO): modules, configs, schemas, ready instances,
//!   subscriptions; every input returns the notifications to send, in order.
//! - [`service`]: [`FakeConfigService`]: listeners, one [`Conn`](cluster_etp::Conn)
//!   per client, delivery of notifications (encoded once, fanned out), the test API.
//! - [`declared`]: ready instances declared without a client
//!   ([`FakeConfigService::declare_instance`]).
//! - [`logs`]: a buffer a `tracing` subscriber writes into, for tests that check the logs.
//! - [`admin`] (feature `admin`): the admin HTTP API over a service (served by `cluster_serve`), with
//!   isp-config-service's HTTP paths and its metrics autodiscovery;
//!   `src/bin/fake-config-service.rs`: the service as a program, for Go services under
//!   development.
//!
//! # Features
//! | feature | gives | brings |
//! |---|---|---|
//! | none | [`FakeConfigService`] in memory and on loopback WebSocket, [`state`], [`declared`], [`logs`], [`duration`] | the transports, `jsonschema` |
//! | `admin` | [`admin`]: the admin HTTP API (our routes, isp-config-service's, metrics autodiscovery), its server and limits | `axum`, `hyper` (via `cluster-serve`), `serde` |
//! | `bin` (default; implies `admin`) | the `fake-config-service` program, and the tests and the scale bench that start it | `tracing-subscriber`, `libc`, `clap` |
//! | `otel` | `spans`: the spans a test's calls made, in memory | OpenTelemetry's SDK, `tracing-opentelemetry` |
//!
//! The workspace depends on the testkit without its default features: a crate that only needs
//! the in-memory fake builds no HTTP server, and one that serves the admin API asks for
//! `admin`. `bin` is a feature rather than a crate of its own so that
//! `cargo run -p cluster-testkit --bin fake-config-service` stays the command, and the tests and
//! bench that start the program keep finding it (`CARGO_BIN_EXE_*` is only set within one
//! package).
//!
//! # Cost
//! What a connection costs the service and how fast a change reaches N modules are measured by
//! `benches/fanout.rs` and `benches/scale.rs`; the figures are in the repository's
//! `docs/performance.md`.
//!
//! # Limits, against hostile or broken peers
//! Every limit has a default that a test can change; none lets a peer make the service send a
//! frame no client can read, log without bound, or hold its resources forever.
//!
//! | limit | default | where |
//! |---|---|---|
//! | largest frame sent (routing table, address list, config, error text) | 4 MiB, the clients' inbound limit | [`Limits::max_frame_len`] |
//! | one `MODULE:READY` declaration | 256 KiB of JSON, 4,096 endpoints | [`Limits::max_declaration_len`], [`Limits::max_endpoints`] |
//! | modules one connection requires | 1,024 | [`state::MAX_REQUIRED_MODULES`] |
//! | largest message received | 1 MiB (WebSocket, as isp-config-service; in memory the same) | [`FakeConfigServiceBuilder::ws_config`], [`FakeConfigServiceBuilder::memory_config`] |
//! | warnings one connection can cause | 5 per 10 s, then a summary line with the count | [`cluster_etp::ConnConfig::log_limit`] via [`FakeConfigServiceBuilder::conn_config`] |
//! | admin API: head / body / stalled-write timeouts, body size, connections, shutdown | 10 s / 10 s / 10 s, 4 MiB, 256, 5 s | [`admin::AdminConfig`] |
//!
//! - A `MODULE:READY` whose declaration is over its limits, or that would take the routing
//!   table or the module's address list over the frame limit, gets an error ack and changes
//!   nothing (the instance it would replace stays). Without that bound, a few large
//!   declarations once made the routing table larger than every client could read, and every
//!   module that wants routes failed its handshake for good.
//! - Module names that cannot travel in an event name (`x||y`, `__ack_x`, control characters;
//!   [`cluster_proto::event::check_module_name`]) are refused everywhere: a connection under
//!   such a name is closed with 1008 ([`service::CLOSE_INVALID_MODULE_NAME`]; the WebSocket
//!   upgrade refuses it with 400 before that), a requirement gets an error ack, an admin path
//!   gets 400, and every event is checked with
//!   [`cluster_proto::event::check_event_name`] before it is sent.
//! - No config value reaches a log, an error ack or an admin answer: a refused config is
//!   reported by place and rule ([`ValidationIssue`]); an accepted change is logged at INFO
//!   with its version, size and hash (`SecretMasker::fingerprint`, taken of the masked form
//!   so that it gives nothing away about a secret), and with its content, secrets masked, at
//!   DEBUG only.
//!
//! # Orders on the wire
//! `CONFIG:SEND_CONFIG_WHEN_CONNECTED` goes out before the ack of `MODULE:SEND_CONFIG_SCHEMA`;
//! `<m>_MODULE_CONNECTED` (one per required module, in the order asked) and
//! `CONFIG:SEND_ROUTES_WHEN_CONNECTED` before the ack of `MODULE:SEND_REQUIREMENTS`. Address
//! lists and routing tables list the newest ready instance first, as isp-config-service does.
//! Each connection receives change notifications in the order the changes happened (the real
//! service does not promise that). See [`service`] for the deliberate deviations.
//!
//! # Example
//! Start the service, hand its host and connector to a client, and drive it. The client here
//! is the raw ETP connection runtime; an isp cluster client takes `listener.url()`
//! (`mem://…`) in its host list and `listener.connector` as its transport.
//! ```
//! use cluster_testkit::FakeConfigService;
//! use cluster_etp::{Conn, ConnConfig, Handlers};
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let service = FakeConfigService::new();
//! let listener = service.listen_memory().unwrap();
//!
//! let transport = listener.connector.connect(&listener.endpoint(), "my-module").await.unwrap();
//! let client = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
//! let schema = br#"{"version":"1.0.0","schema":{"type":"object","properties":{"a":{"type":"integer"}}},"config":{"a":1}}"#;
//! let ack = client.emit_with_ack("MODULE:SEND_CONFIG_SCHEMA", schema).await.unwrap();
//! assert_eq!(&ack[..], b"ok");
//! assert_eq!(service.active_config("my-module").unwrap().version, 1);
//!
//! // An admin changes the config: validated against the schema the module sent.
//! assert!(service.set_config("my-module", r#"{"a":"two"}"#, Some(1)).is_err());
//! let change = service.set_config("my-module", r#"{"a":2}"#, Some(1)).unwrap();
//! assert_eq!((change.version, change.notified), (2, 1));
//! let sent = service
//!     .wait_event("my-module", "CONFIG:SEND_CONFIG_CHANGED", Duration::from_secs(1))
//!     .await
//!     .unwrap();
//! assert_eq!(&sent.data()[..], br#"{"a":2}"#);
//!
//! // Real Go services connect over WebSocket.
//! let addr = service.listen_ws("127.0.0.1:0").await.unwrap();
//! assert!(addr.ip().is_loopback());
//! client.close(1000, "done").await;
//! service.wait_connections("my-module", 0, Duration::from_secs(1)).await.unwrap();
//! # });
//! ```

#[cfg(feature = "admin")]
pub mod admin;
pub mod declared;
pub mod duration;
pub mod logs;
pub mod service;
#[cfg(feature = "otel")]
pub mod spans;
pub mod state;

pub use declared::{DeclareError, DeclaredInstance};
pub use service::{
    ConfigChange, Direction, FakeConfigService, FakeConfigServiceBuilder, Fault, MemoryListener,
    RecordedFrame, Target, WaitError,
};
pub use state::{
    ActiveConfig, ConfigUpdateError, ConnId, ConnectionInfo, ErrorEvent, Limits, ModuleSnapshot,
    ReadyInstance, StoredSchema, ValidationIssue,
};
