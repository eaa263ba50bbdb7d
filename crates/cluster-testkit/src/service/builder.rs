//! [`FakeConfigServiceBuilder`]: the settings a service is built with.

use super::FakeConfigService;
use super::runtime::{Inner, Shared, make_handlers};
use crate::state::{ClusterState, Limits};
use cluster_etp::ConnConfig;
use cluster_transport::memory::{MemoryConfig, MemoryNetwork};
use cluster_transport::ws::WsServerConfig;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::watch;

/// Builds a [`FakeConfigService`] with non-default settings.
#[derive(Debug, Clone)]
pub struct FakeConfigServiceBuilder {
    recording: bool,
    limits: Limits,
    conn_config: ConnConfig,
    ws_config: WsServerConfig,
    memory_config: MemoryConfig,
}

impl Default for FakeConfigServiceBuilder {
    fn default() -> Self {
        Self {
            recording: true,
            limits: Limits::default(),
            conn_config: ConnConfig::default(),
            ws_config: WsServerConfig::default(),
            memory_config: MemoryConfig::default(),
        }
    }
}

impl FakeConfigServiceBuilder {
    /// Whether every frame is recorded per connection (default `true`). Switch it off for
    /// load tests: nothing is then kept per frame, and a closed connection leaves nothing.
    #[must_use]
    pub fn recording(mut self, on: bool) -> Self {
        self.recording = on;
        self
    }

    /// What the service accepts so that no frame it sends is larger than a client can read
    /// (default [`Limits::default`]: frames of at most 4 MiB, declarations of at most 256 KiB
    /// and 4,096 endpoints). See [`Limits`].
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The settings of each connection (default [`ConnConfig::default`]).
    #[must_use]
    pub fn conn_config(mut self, config: ConnConfig) -> Self {
        self.conn_config = config;
        self
    }

    /// The settings of WebSocket listeners (default [`WsServerConfig::default`]: 1 MiB
    /// messages, as the Go server).
    #[must_use]
    pub fn ws_config(mut self, config: WsServerConfig) -> Self {
        self.ws_config = config;
        self
    }

    /// The settings of the in-memory network (default [`MemoryConfig::default`]).
    #[must_use]
    pub fn memory_config(mut self, config: MemoryConfig) -> Self {
        self.memory_config = config;
        self
    }

    /// Builds the service. It listens nowhere until asked to.
    #[must_use]
    pub fn build(self) -> FakeConfigService {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| Shared {
            me: weak.clone(),
            inner: Mutex::new(Inner {
                state: ClusterState::with_limits(self.limits),
                conns: HashMap::new(),
                history: BTreeMap::new(),
                recording: self.recording,
                next_seq: 0,
                refuse: false,
                ack_faults: HashMap::new(),
                event_faults: HashMap::new(),
                delay_line: None,
                held: HashMap::new(),
                reaper: None,
                listeners: Vec::new(),
            }),
            changed,
            handlers: make_handlers(weak.clone()),
            conn_config: self.conn_config,
            ws_config: self.ws_config,
            network: MemoryNetwork::with_config(self.memory_config),
        });
        FakeConfigService { shared }
    }
}
