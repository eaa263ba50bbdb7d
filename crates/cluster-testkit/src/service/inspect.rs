//! Inspection: what the service knows (modules, connections, instances, configs) and the
//! frames it recorded ([`RecordedFrame`], by [`Target`]).

use super::FakeConfigService;
use super::runtime::Inner;
use crate::state::{
    ActiveConfig, ConnId, ConnectionInfo, ModuleSnapshot, ReadyInstance, StoredSchema,
};
use bytes::Bytes;
use cluster_proto::payload::BackendDeclaration;
use std::fmt;
use std::sync::Arc;

/// Which way a recorded frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → service: an event the service received (and dispatched).
    Received,
    /// Service → client: an event the service emitted. Recorded when the event is queued on
    /// the connection (handed to its writer), not when it is written to the socket: a client
    /// that vanishes at that moment may never get a frame recorded as sent. An event held
    /// back by [`Fault::Delay`](super::Fault::Delay) is recorded when the delay ends and
    /// it is queued.
    Sent,
    /// Service → client: the service's answer to a received event ([`RecordedFrame::event`]
    /// is the answered event). It goes out as `__ack_<event>` when the event asked for an ack
    /// (the Go client always does); the handler cannot tell, so it is recorded either way.
    /// Recorded when the answer is handed to the connection, like [`Direction::Sent`]. An ack
    /// is not an event: [`FakeConfigService::wait_event`] does not count it.
    Acked,
}

/// One frame as the service recorded it: received when its handler ran, sent when it was
/// queued on the connection (see [`Direction`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    pub(super) seq: u64,
    pub(super) conn: ConnId,
    pub(super) direction: Direction,
    pub(super) event: Arc<str>,
    pub(super) data: Bytes,
}

impl RecordedFrame {
    /// The order of recording across the whole service (ascending, from 1).
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The connection.
    #[must_use]
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Which way it went.
    #[must_use]
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The event name (for [`Direction::Acked`], the answered event).
    #[must_use]
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The event data (for [`Direction::Acked`], the ack data: `ok` or the error text).
    #[must_use]
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The data as text (lossy), for assertions and messages.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

impl fmt::Display for RecordedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::Received => "<-",
            Direction::Sent => "->",
            Direction::Acked => "-> ack",
        };
        const SHOWN: usize = 120;
        let text = self.text();
        let cut = text
            .char_indices()
            .nth(SHOWN)
            .map_or(text.as_str(), |(i, _)| &text[..i]);
        let more = if cut.len() < text.len() { "…" } else { "" };
        write!(f, "{} {arrow} {} {cut}{more}", self.conn, self.event)
    }
}

/// Whose frames: one connection's, or those of every connection of a module (open or closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One connection.
    Conn(ConnId),
    /// Every connection of a module, in recording order.
    Module(String),
}

impl From<ConnId> for Target {
    fn from(conn: ConnId) -> Self {
        Self::Conn(conn)
    }
}

impl From<&str> for Target {
    fn from(module: &str) -> Self {
        Self::Module(module.to_owned())
    }
}

impl From<String> for Target {
    fn from(module: String) -> Self {
        Self::Module(module)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conn(conn) => write!(f, "{conn}"),
            Self::Module(module) => write!(f, "module {module:?}"),
        }
    }
}

impl FakeConfigService {
    // ----- inspection -----

    /// The names of the known modules, sorted: every module with an open connection, a config
    /// or a schema. A module that never had a config or schema is forgotten when its last
    /// connection closes (see
    /// [`ClusterState::disconnect`](crate::state::ClusterState::disconnect)).
    #[must_use]
    pub fn modules(&self) -> Vec<String> {
        self.shared.lock().state.module_names()
    }

    /// Everything known of `module`: connections, ready instances, config, schema.
    #[must_use]
    pub fn module(&self, module: &str) -> Option<ModuleSnapshot> {
        self.shared.lock().state.module(module)
    }

    /// The open connections of `module`, ascending by id.
    #[must_use]
    pub fn connections(&self, module: &str) -> Vec<ConnectionInfo> {
        let inner = self.shared.lock();
        inner
            .state
            .connections_of(module)
            .into_iter()
            .filter_map(|id| inner.state.connection(id))
            .collect()
    }

    /// One open connection.
    #[must_use]
    pub fn connection(&self, id: ConnId) -> Option<ConnectionInfo> {
        self.shared.lock().state.connection(id)
    }

    /// The number of open connections, all modules together.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.lock().state.connection_count()
    }

    /// The declarations of `module`'s ready instances, newest first.
    #[must_use]
    pub fn ready_instances(&self, module: &str) -> Vec<BackendDeclaration> {
        self.shared
            .lock()
            .state
            .ready_instances(module)
            .into_iter()
            .map(|i| i.declaration)
            .collect()
    }

    /// The routing table as it would be sent now: every ready instance, newest first.
    #[must_use]
    pub fn routing_table(&self) -> Vec<ReadyInstance> {
        self.shared.lock().state.routing_table()
    }

    /// The schema `module` sent, with its module version.
    #[must_use]
    pub fn schema(&self, module: &str) -> Option<StoredSchema> {
        self.shared.lock().state.schema(module)
    }

    /// The active config of `module` and its version.
    #[must_use]
    pub fn active_config(&self, module: &str) -> Option<ActiveConfig> {
        self.shared.lock().state.active_config(module)
    }

    /// The frames recorded for `target` (both directions), in order. Empty when recording is
    /// off. Sent frames are recorded when queued on the connection, not when written (see
    /// [`Direction::Sent`]).
    #[must_use]
    pub fn frames(&self, target: impl Into<Target>) -> Vec<RecordedFrame> {
        self.shared.lock().frames(&target.into())
    }

    /// The frames `target` sent to the service.
    #[must_use]
    pub fn received(&self, target: impl Into<Target>) -> Vec<RecordedFrame> {
        let mut frames = self.frames(target);
        frames.retain(|f| f.direction == Direction::Received);
        frames
    }

    /// The frames the service sent to `target`: events and acks, recorded when queued on the
    /// connection (see [`Direction::Sent`]).
    #[must_use]
    pub fn sent(&self, target: impl Into<Target>) -> Vec<RecordedFrame> {
        let mut frames = self.frames(target);
        frames.retain(|f| f.direction != Direction::Received);
        frames
    }

    /// Switches frame recording on or off (see
    /// [`FakeConfigServiceBuilder::recording`](super::FakeConfigServiceBuilder::recording)).
    ///
    pub fn set_recording(&self, on: bool) {
        self.shared.lock().recording = on;
    }

    /// Forgets every recorded frame and the records of closed connections.
    pub fn clear_recorded(&self) {
        let mut inner = self.shared.lock();
        inner.history.clear();
        for slot in inner.conns.values_mut() {
            slot.record.frames.clear();
        }
    }
}

impl Inner {
    pub(super) fn frames(&self, target: &Target) -> Vec<RecordedFrame> {
        let records = self
            .conns
            .iter()
            .map(|(id, slot)| (*id, &slot.record))
            .chain(self.history.iter().map(|(id, record)| (*id, record)));
        let mut frames: Vec<RecordedFrame> = records
            .filter(|(id, record)| match target {
                Target::Conn(conn) => id == conn,
                Target::Module(module) => &*record.module == module.as_str(),
            })
            .flat_map(|(_, record)| record.frames.iter().cloned())
            .collect();
        frames.sort_unstable_by_key(|f| f.seq);
        frames
    }
}
