//! The isp cluster protocol as pure Rust: it does no IO and reads no clock.
//!
//! Go microservices built on isp-kit join their cluster by speaking ETP v4 over WebSocket to
//! isp-config-service. This crate holds everything about that protocol that can be said
//! without a socket or a timer: the frame codec, the event names, the JSON payloads, secret
//! masking for logs, the reconnect policy, and the client side of one connection as a
//! sans-IO state machine ([`session::Session`]). Time is always an argument; randomness is
//! always seeded. The runtime crates (`cluster-transport`, `cluster-etp`, `cluster-client`) drive it.
//!
//! # Layout
//! - [`frame`]: the ETP frame codec (`name||ackId||data`), zero-copy decoding.
//! - [`event`]: the event names, as the Go peers spell them.
//! - [`payload`]: the JSON payloads (`ModuleInfo`, `ConfigData`, `BackendDeclaration`, …).
//! - [`secrets`]: masking of secret values in configs before they are logged.
//! - [`backoff`]: which host to dial next and how long to wait first.
//! - [`duration`]: durations as Go writes them (`1m30s`), for config files and command lines.
//! - [`session`]: the handshake and keep-alive of one client connection.
//! - [`wire`]: the wire rules the client's session and the server-side runtime share.
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use cluster_proto::{event, frame::{self, Frame}};
//!
//! let mut buf = Vec::new();
//! frame::encode(event::MODULE_READY, 3, br#"{"moduleName":"A"}"#, &mut buf);
//! let decoded = Frame::decode(Bytes::from(buf)).unwrap();
//! assert_eq!(decoded.name(), event::MODULE_READY);
//! assert_eq!(decoded.ack_id(), 3);
//! ```

pub mod backoff;
pub mod duration;
pub mod event;
pub mod frame;
pub mod payload;
pub mod rng;
pub mod secrets;
pub mod session;
pub mod wire;

pub use frame::{DecodeError, Frame};
pub use payload::{
    AddressConfiguration, BackendDeclaration, ConfigData, EndpointDescriptor, MetricsAutodiscovery,
    ModuleDependency, ModuleInfo, ModuleRequirements, PayloadError, PayloadKind, RoutingConfig,
};
pub use secrets::SecretMasker;
