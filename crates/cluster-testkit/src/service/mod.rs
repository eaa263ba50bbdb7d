//! The fake config service: listeners, connections and the delivery of notifications, on top
//! of the pure [`ClusterState`](crate::state::ClusterState).
//!
//! One [`FakeConfigService`] holds one state behind one `std` mutex (never held across an
//! `await`). Each listener ([`FakeConfigService::listen_memory`],
//! [`FakeConfigService::listen_ws`]) runs one task that accepts clients; each client is a
//! [`Conn`](cluster_etp::Conn) whose handlers (`MODULE:SEND_CONFIG_SCHEMA`,
//! `MODULE:SEND_REQUIREMENTS`, `MODULE:READY`) are synchronous
//! ([`Reply::Ack`](cluster_etp::Reply::Ack)): they run in arrival order, change the
//! state under the lock and queue the resulting notifications before they return, so
//!
//! - what a handler emits to its own connection goes out **before** its ack
//!   (`CONFIG:SEND_CONFIG_WHEN_CONNECTED` before the ack of the schema, as the real service);
//! - each subscriber receives notifications in the order the changes happened (change *k*'s
//!   are queued before change *k + 1* is even computed).
//!
//! A notification is encoded once and the same [`Bytes`](bytes::Bytes) is queued to each recipient
//! ([`Conn::emit_encoded`](cluster_etp::Conn::emit_encoded)), so one config change
//! reaches thousands of connections fast.
//!
//! # Layout
//! - `mod.rs`: the [`FakeConfigService`] handle and the close codes it sends;
//! - `builder.rs`: [`FakeConfigServiceBuilder`];
//! - `runtime.rs`: the shared state behind the handles, the accept loop of each listener, the
//!   handlers of each connection, the delivery of notifications (faults, delay line) and the
//!   reaper of ended connections;
//! - the test API, grouped by what it does: `listen.rs` (listeners, [`MemoryListener`]),
//!   `inspect.rs` (the state and the recorded frames: [`RecordedFrame`], [`Target`]),
//!   `control.rs` (configs, errors, disconnects, stop and restart, [`Fault`]s), `wait.rs`
//!   (await helpers, [`WaitError`]).
//!
//! # Deviations from isp-config-service, on purpose
//! - Notifications are immediate (the real service polls a replicated event table every
//!   500 ms); use [`FakeConfigService::fault_event`] with [`Fault::Delay`] to add lag.
//! - So the `CONFIG:SEND_ROUTES_CHANGED` / `<m>_MODULE_CONNECTED` caused by a connection's own
//!   `MODULE:READY` reach it **before** the ack of `MODULE:READY` (the real service sends them
//!   later, after the ack). docs/protocol.md leaves this order free.
//! - Config variables (`_Var(name)` in isp-config-service) are not supported: configs are sent
//!   as stored.

mod builder;
mod control;
mod inspect;
mod listen;
mod runtime;
mod wait;

pub use builder::FakeConfigServiceBuilder;
pub use control::{ConfigChange, Fault};
pub use inspect::{Direction, RecordedFrame, Target};
pub use listen::MemoryListener;
pub use wait::WaitError;

use runtime::Shared;
use std::fmt;
use std::sync::Arc;

/// Close code sent to clients when the service stops (1001, "going away").
pub use cluster_transport::CLOSE_GOING_AWAY;
/// Close code sent to a client while connections are refused (1013, "try again later").
pub use cluster_transport::CLOSE_TRY_AGAIN_LATER;
/// Close code sent to a client whose module name cannot be used on the wire (1008, "policy
/// violation"; see [`cluster_proto::event::check_module_name`]). The WebSocket listener
/// refuses such names at the upgrade already; this catches every other transport.
pub const CLOSE_INVALID_MODULE_NAME: u16 = cluster_transport::CLOSE_POLICY_VIOLATION;
/// The host part of in-memory listener addresses: `fake-config-service:<port>`.
pub const MEMORY_HOST: &str = "fake-config-service";

/// A fake isp-config-service for tests: see the [crate docs](crate).
///
/// Cloning gives another handle to the same service. When the last handle is dropped the
/// listeners stop and every connection is closed (1001).
#[derive(Clone)]
pub struct FakeConfigService {
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeConfigService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("FakeConfigService")
            .field("state", &inner.state)
            .field(
                "listeners",
                &inner.listeners.iter().map(|l| &l.addr).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for FakeConfigService {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeConfigService {
    /// A service with the default settings (recording on). It listens nowhere until asked to.
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for other settings.
    #[must_use]
    pub fn builder() -> FakeConfigServiceBuilder {
        FakeConfigServiceBuilder::default()
    }
}
