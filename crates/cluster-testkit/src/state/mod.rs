//! The state of the fake config service, without IO: modules, configs, schemas, ready
//! instances and subscriptions (docs/protocol.md §6).
//!
//! [`ClusterState`] is a plain data structure. Its inputs are the three module events, a
//! connection coming and going, and the admin operations; every input that changes what some
//! connection should know returns the [`Notification`]s to send, **in the order they must be
//! sent**. Whoever drives it (the [`crate::service`]) delivers them before feeding the next
//! input, so each subscriber receives the notifications of change *k* before those of change
//! *k + 1*. (The real isp-config-service makes no such promise: it fans changes out through a
//! replicated event table, one goroutine per message.)
//!
//! # Orders, as the real service produces them
//! - Address lists (`<m>_MODULE_CONNECTED`) and the routing table (`CONFIG:SEND_ROUTES_*`)
//!   list ready instances **newest first**: isp-config-service reads its `backend` table
//!   `ORDER BY created_at DESC`, and the golden frames show it (`fixtures/go-session-frames.jsonl`,
//!   connection 3). An instance that sends `MODULE:READY` again on the same connection keeps
//!   its place (the real service upserts the row by connection id; `created_at` stays).
//! - When an instance comes or goes, routing subscribers get `CONFIG:SEND_ROUTES_CHANGED`
//!   first, then the module's dependents get `<m>_MODULE_CONNECTED` (the order of the golden
//!   frames; the real service sends both concurrently).
//! - On `MODULE:SEND_REQUIREMENTS`: one `<m>_MODULE_CONNECTED` per required module, in the
//!   order given (duplicates once), then `CONFIG:SEND_ROUTES_WHEN_CONNECTED` if routes are
//!   wanted.
//!
//! # Layout
//! - `types`: the values the state hands out and the errors of the module events;
//! - `registry`: connections, requirements, ready instances, subscriptions and the getters;
//! - `configs`: schemas, config updates and their validation, error events;
//! - `sizes`: the [`Limits`], frame sizes, and the address lists and routing table.

mod configs;
mod registry;
mod sizes;
mod types;

pub use configs::{ConfigUpdate, ConfigUpdateError, UpdateMode, ValidationIssue};
pub use sizes::{
    DEFAULT_MAX_DECLARATION_LEN, DEFAULT_MAX_ENDPOINTS, DEFAULT_MAX_FRAME_LEN, Limits,
    MAX_REQUIRED_MODULES, frame_len,
};
pub use types::{
    ActiveConfig, ConnId, ConnectionInfo, ErrorEvent, HandleError, ModuleSnapshot, Notification,
    ReadyInstance, StoredSchema,
};

use bytes::Bytes;
use cluster_proto::payload::BackendDeclaration;
use sizes::address_json_len;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// `name` for an error message: at most 64 characters (a refused name may be long).
fn shown_name(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

struct SchemaEntry {
    stored: StoredSchema,
    /// The compiled schema, or why it does not compile. Compiled when stored, so a config
    /// update only validates.
    validator: Result<jsonschema::Validator, String>,
}

#[derive(Default)]
struct ModuleEntry {
    connections: BTreeSet<ConnId>,
    config: Option<ActiveConfig>,
    schema: Option<SchemaEntry>,
    config_subscribers: BTreeSet<ConnId>,
    /// Ready instances of this module: readiness sequence → connection.
    instances: BTreeMap<u64, ConnId>,
    /// The sum of the ready instances' address JSON lengths ([`Instance::address_len`]): the
    /// module's address list's size, but for its brackets and commas. Kept as instances come
    /// and go, so a `MODULE:READY` checks the list's size without encoding every address
    /// (which made N instances arriving at once cost O(N²)).
    addresses_len: usize,
}

struct Instance {
    seq: u64,
    declaration: BackendDeclaration,
    /// The declaration's JSON, encoded once: routing tables are joined from these.
    json: Bytes,
    /// The length of its address's JSON in the module's address list.
    address_len: usize,
}

struct ConnEntry {
    module: String,
    peer: String,
    /// Boxed: most connections of a big fan-out are not ready instances, and the map entry
    /// stays small.
    instance: Option<Box<Instance>>,
    required: Vec<String>,
    routes: bool,
    config_subscribed: bool,
}

/// The fake config service's state. See the [module docs](self).
#[derive(Default)]
pub struct ClusterState {
    modules: BTreeMap<String, ModuleEntry>,
    conns: HashMap<ConnId, ConnEntry>,
    /// Connections that required a module, by the required module's name.
    dependents: HashMap<String, BTreeSet<ConnId>>,
    routing_subscribers: BTreeSet<ConnId>,
    /// All ready instances: readiness sequence → connection (ascending = oldest first).
    ready: BTreeMap<u64, ConnId>,
    /// The sum of the ready instances' JSON lengths: the routing table's size, but for its
    /// brackets and commas.
    ready_json_len: usize,
    next_seq: u64,
    limits: Limits,
}

impl fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterState")
            .field("modules", &self.modules.keys().collect::<Vec<_>>())
            .field("connections", &self.conns.len())
            .field("ready_instances", &self.ready.len())
            .finish()
    }
}

impl ClusterState {
    /// An empty state with the default [`Limits`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state with these limits.
    #[must_use]
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits it enforces.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// What the tests of the submodules share.
#[cfg(test)]
mod test_support {
    use super::{ClusterState, ConfigUpdate, ConfigUpdateError, Notification, UpdateMode};
    use bytes::Bytes;

    pub(crate) const SCHEMA: &str = r#"{"version":"1.0.0","schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"someString":{"type":"string"}}},"config":{}}"#;

    pub(crate) fn ready_json(module: &str, ip: &str) -> String {
        format!(
            r#"{{"moduleName":"{module}","version":"1.0.0","libVersion":"1.0.0","endpoints":null,"requiredModules":[],"address":{{"ip":"{ip}","port":"9999"}}}}"#
        )
    }

    /// [`ClusterState::set_config`] of a JSON literal.
    pub(crate) fn set(
        s: &mut ClusterState,
        mode: UpdateMode,
        module: &str,
        json: &'static [u8],
        expected_version: Option<u64>,
    ) -> Result<ConfigUpdate, ConfigUpdateError> {
        s.set_config(module, Bytes::from_static(json), expected_version, mode)
    }

    pub(crate) fn single(mut n: Vec<Notification>) -> Notification {
        assert_eq!(n.len(), 1, "{n:?}");
        n.remove(0)
    }
}
