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

use bytes::{BufMut, Bytes, BytesMut};
use cluster_proto::event;
use cluster_proto::payload::{
    self, AddressConfiguration, BackendDeclaration, GRPC_TRANSPORT, PayloadError,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// The id of one client connection: [`cluster_etp::Conn::id`] of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// One event to send, once encoded, to each of its recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The event name.
    pub event: String,
    /// The event data (raw JSON, or plain text for the error events).
    pub payload: Bytes,
    /// The connections to send it to, in ascending id order.
    pub recipients: Vec<ConnId>,
}

impl Notification {
    fn new(event: impl Into<String>, payload: impl Into<Bytes>, recipients: Vec<ConnId>) -> Self {
        Self {
            event: event.into(),
            payload: payload.into(),
            recipients,
        }
    }
}

/// Which error event [`ClusterState::error_event`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorEvent {
    /// `ERROR_CONFIG`: the remote config is wrong.
    Config,
    /// `ERROR_CONNECTION`: something is wrong with the connection.
    Connection,
}

impl ErrorEvent {
    /// The event name on the wire.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Config => event::ERROR_CONFIG,
            Self::Connection => event::ERROR_CONNECTION,
        }
    }
}

/// The active remote config of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveConfig {
    /// The raw JSON, byte for byte as it is sent to the module.
    pub data: Bytes,
    /// Its version: 1 for the first config, one more for each change.
    pub version: u64,
}

impl ActiveConfig {
    /// The config parsed as JSON (`Value::Null` if it is not JSON, which only an unusual
    /// default config sent by a module can be).
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).unwrap_or(Value::Null)
    }
}

/// The config schema a module sent with `MODULE:SEND_CONFIG_SCHEMA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    /// The raw JSON schema, byte for byte as the module sent it.
    pub schema: Bytes,
    /// The module version sent with it.
    pub module_version: String,
}

/// A ready instance: the declaration its connection sent with `MODULE:READY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInstance {
    /// The connection the instance is bound to.
    pub conn: ConnId,
    /// Its declaration, as stored (see [`ClusterState::module_ready`] for the normalisation).
    pub declaration: BackendDeclaration,
}

/// What the state knows of one open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection id.
    pub id: ConnId,
    /// The module name the client gave when it connected.
    pub module: String,
    /// The peer address.
    pub peer: String,
    /// The declaration of its ready instance, once it sent `MODULE:READY`.
    pub ready: Option<BackendDeclaration>,
    /// The modules it required with `MODULE:SEND_REQUIREMENTS`.
    pub required_modules: Vec<String>,
    /// Whether it asked for the routing table.
    pub wants_routes: bool,
    /// Whether it is subscribed to config changes (it sent its schema).
    pub config_subscribed: bool,
}

/// Everything known of one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSnapshot {
    /// The module name.
    pub name: String,
    /// Its open connections, ascending.
    pub connections: Vec<ConnId>,
    /// Its ready instances, newest first.
    pub ready: Vec<ReadyInstance>,
    /// Its active config.
    pub config: Option<ActiveConfig>,
    /// Its stored schema.
    pub schema: Option<StoredSchema>,
}

/// How [`ClusterState::set_config`] treats the module's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// Validate against the stored schema; a module without a schema is refused.
    Validated,
    /// Store without validation (isp-config-service's `unsafe` flag). An unknown module is
    /// created, so a test can give a module its config before it ever connects.
    Unsafe,
}

/// The result of an accepted config update.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the notifications must be delivered"]
pub struct ConfigUpdate {
    /// The version of the active config after the update.
    pub version: u64,
    /// Whether the config changed (`false` when it was equal to the active one).
    pub changed: bool,
    /// `CONFIG:SEND_CONFIG_CHANGED` to the module's config subscribers (none if unchanged).
    pub notifications: Vec<Notification>,
}

/// One reason a config does not satisfy its module's schema.
///
/// It names the place and the rule, **never the offending value**: a refused config may hold
/// secrets (a `password` of the wrong type), and the issue goes into logs, error acks and admin
/// answers. The message says what the rule asks for (`the value is not of type "integer"`,
/// `the value is shorter than 8 characters`), with the value replaced by the words "the value".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    /// Where in the config: a JSON pointer (`""` for the whole config).
    pub instance_path: String,
    /// The JSON Schema keyword that failed (`type`, `minLength`, `required`, …).
    pub rule: String,
    /// What is wrong, without the value.
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.instance_path.is_empty() {
            "(root)"
        } else {
            &self.instance_path
        };
        write!(f, "{path}: {} (rule `{}`)", self.message, self.rule)
    }
}

impl ValidationIssue {
    /// The issue of one validation error, without the value that failed.
    fn of(error: &jsonschema::ValidationError<'_>) -> Self {
        use jsonschema::error::ValidationErrorKind as Kind;
        let rule = error.kind().keyword().to_owned();
        let message = match error.kind() {
            // These print a nested error or a free text that may quote the instance: say
            // only which rule failed.
            Kind::PropertyNames { .. }
            | Kind::FromUtf8 { .. }
            | Kind::Custom { .. }
            | Kind::RegexEngineFailure { .. }
            | Kind::BacktrackLimitExceeded { .. } => {
                format!("the value does not satisfy `{rule}`")
            }
            // Every other message names the value by the placeholder only (the rest comes
            // from the schema, or lists property names, never values).
            _ => error.masked_with("the value").to_string(),
        };
        Self {
            instance_path: error.instance_path().to_string(),
            rule,
            message,
        }
    }
}

/// Why a config update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigUpdateError {
    /// The new config is not a JSON object.
    #[error("config for module {module:?} is not a JSON object: {reason}")]
    NotAnObject {
        /// The module.
        module: String,
        /// What it is instead.
        reason: String,
    },
    /// A validated update for a module that sent no schema (or is unknown).
    #[error(
        "module {module:?} has no config schema (it never sent MODULE:SEND_CONFIG_SCHEMA); \
         use an unsafe update to store a config anyway"
    )]
    NoSchema {
        /// The module.
        module: String,
    },
    /// The stored schema is not a valid JSON Schema.
    #[error("the config schema of module {module:?} is not a valid JSON Schema: {reason}")]
    InvalidSchema {
        /// The module.
        module: String,
        /// What the schema compiler said.
        reason: String,
    },
    /// The config does not satisfy the schema.
    #[error("config for module {module:?} is invalid: {}", join_issues(.issues))]
    Invalid {
        /// The module.
        module: String,
        /// Every problem found.
        issues: Vec<ValidationIssue>,
    },
    /// The module name cannot be used on the wire (see [`event::check_module_name`]).
    #[error("invalid module name {module:?}: {reason}")]
    InvalidModuleName {
        /// The module name, cut to 64 characters.
        module: String,
        /// The rule it breaks.
        reason: event::ModuleNameError,
    },
    /// `CONFIG:SEND_CONFIG_CHANGED` with this config would be larger than
    /// [`Limits::max_frame_len`]: no client could read it.
    #[error(
        "config for module {module:?} is {len} bytes: its frame would exceed the outgoing \
         frame limit of {max} bytes"
    )]
    TooLarge {
        /// The module.
        module: String,
        /// The config's size in bytes.
        len: usize,
        /// [`Limits::max_frame_len`].
        max: usize,
    },
    /// The update was made against a version that is no longer the active one.
    #[error(
        "config for module {module:?} was updated against version {expected}, \
         but the active version is {active}"
    )]
    VersionConflict {
        /// The module.
        module: String,
        /// The version the caller updated.
        expected: u64,
        /// The active version (0: the module has no config).
        active: u64,
    },
}

fn join_issues(issues: &[ValidationIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a module event was refused: its text is what the ack carries instead of `ok`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The payload is not the JSON it should be (the real service says
    /// `unmarshal event data: …`).
    #[error("unmarshal event data: {0}")]
    Payload(#[from] PayloadError),
    /// The connection is not registered (it already went away).
    #[error("unknown connection {0}")]
    UnknownConnection(ConnId),
    /// `MODULE:SEND_REQUIREMENTS` names a module whose name cannot be used on the wire:
    /// `<name>_MODULE_CONNECTED` would not decode as what it is (see
    /// [`event::check_module_name`]).
    #[error("invalid required module name {name:?}: {reason}")]
    InvalidModuleName {
        /// The name, cut to 64 characters.
        name: String,
        /// The rule it breaks.
        reason: event::ModuleNameError,
    },
    /// The `MODULE:READY` declaration is larger than [`Limits::max_declaration_len`].
    #[error("declaration too large: {len} bytes (at most {max})")]
    DeclarationTooLarge {
        /// Its size, as stored.
        len: usize,
        /// [`Limits::max_declaration_len`].
        max: usize,
    },
    /// The `MODULE:READY` declaration has more endpoints than [`Limits::max_endpoints`].
    #[error("too many endpoints: {count} (at most {max})")]
    TooManyEndpoints {
        /// How many it has.
        count: usize,
        /// [`Limits::max_endpoints`].
        max: usize,
    },
    /// A frame the service must send would be larger than [`Limits::max_frame_len`]: with
    /// this declaration, the routing table or the module's address list; with this schema
    /// message, the config it answers with.
    #[error(
        "the {what} would be a frame of {len} bytes, over the outgoing frame limit of {max} \
         bytes"
    )]
    FrameTooLarge {
        /// Which frame: `routing table`, `address list`, `config`.
        what: &'static str,
        /// The frame's size.
        len: usize,
        /// [`Limits::max_frame_len`].
        max: usize,
    },
    /// `MODULE:SEND_REQUIREMENTS` names more modules than a connection may require (see
    /// [`ClusterState::module_requirements`]).
    #[error("too many required modules: {count} (at most {max})")]
    TooManyRequiredModules {
        /// How many the message names, or how many distinct modules the connection would
        /// require with it.
        count: usize,
        /// [`MAX_REQUIRED_MODULES`].
        max: usize,
    },
}

/// The most modules one connection may require (per `MODULE:SEND_REQUIREMENTS` message and in
/// total): 1,024.
pub const MAX_REQUIRED_MODULES: usize = 1024;

/// The default of [`Limits::max_frame_len`]: 4 MiB, the client's inbound message limit (the
/// Go client's and ours).
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 << 20;
/// The default of [`Limits::max_declaration_len`]: 256 KiB.
pub const DEFAULT_MAX_DECLARATION_LEN: usize = 256 << 10;
/// The default of [`Limits::max_endpoints`]: 4,096.
pub const DEFAULT_MAX_ENDPOINTS: usize = 4096;

/// What the state accepts, so that no frame it produces is larger than a client can read.
///
/// The routing table is every ready instance's declaration: without a bound, a few large
/// declarations make `CONFIG:SEND_ROUTES_*` larger than the clients' inbound limit, and every
/// module that wants routes then fails its handshake, again and again. So a `MODULE:READY`
/// is refused (error ack, nothing changes) when its declaration is over
/// [`max_declaration_len`](Self::max_declaration_len) bytes or
/// [`max_endpoints`](Self::max_endpoints) endpoints, or when the routing table or the module's
/// address list with it would not fit in a frame of [`max_frame_len`](Self::max_frame_len)
/// bytes. Configs are held to the same frame limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame sent, in bytes, whole (`event||0||data`): default
    /// [`DEFAULT_MAX_FRAME_LEN`], 4 MiB, the clients' inbound message limit. Set it to the
    /// smallest inbound limit of the clients in the test.
    pub max_frame_len: usize,
    /// The largest `MODULE:READY` declaration, in bytes of its JSON as stored: default
    /// [`DEFAULT_MAX_DECLARATION_LEN`], 256 KiB (real declarations are a few KiB: one line per
    /// endpoint).
    pub max_declaration_len: usize,
    /// The most endpoints in one declaration: default [`DEFAULT_MAX_ENDPOINTS`], 4,096.
    pub max_endpoints: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_declaration_len: DEFAULT_MAX_DECLARATION_LEN,
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
        }
    }
}

/// The size of the frame `event||0||data` for `data_len` bytes of data.
#[must_use]
pub fn frame_len(event: &str, data_len: usize) -> usize {
    // The ack id 0 is one digit; empty data is sent without its separator.
    event.len() + 3 + if data_len == 0 { 0 } else { 2 + data_len }
}

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

/// The preamble of every module-event handler: decodes the payload with `decode`, then finds
/// the sending connection's entry. The payload is checked first, so a malformed payload is
/// reported as such even from a connection that already went away.
fn decode_from<'a, T>(
    conns: &'a mut HashMap<ConnId, ConnEntry>,
    conn: ConnId,
    data: &[u8],
    decode: fn(&[u8]) -> Result<T, PayloadError>,
) -> Result<(T, &'a mut ConnEntry), HandleError> {
    let payload = decode(data)?;
    let entry = conns
        .get_mut(&conn)
        .ok_or(HandleError::UnknownConnection(conn))?;
    Ok((payload, entry))
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

    /// The size of the routing table's JSON if the ready instances' JSON lengths summed to
    /// `json_len` over `count` instances.
    fn routing_len(json_len: usize, count: usize) -> usize {
        2 + json_len + count.saturating_sub(1)
    }

    // ----- inputs: connections and module events -----

    /// A client of `module` connected from `peer`: the module is recorded. Connecting an id
    /// twice replaces nothing (the first registration stays). The name is not checked here:
    /// the service refuses names that [`event::check_module_name`] refuses before it calls
    /// this.
    pub fn connect(&mut self, conn: ConnId, module: &str, peer: &str) {
        if self.conns.contains_key(&conn) {
            return;
        }
        self.conns.insert(
            conn,
            ConnEntry {
                module: module.to_owned(),
                peer: peer.to_owned(),
                instance: None,
                required: Vec::new(),
                routes: false,
                config_subscribed: false,
            },
        );
        self.modules
            .entry(module.to_owned())
            .or_default()
            .connections
            .insert(conn);
    }

    /// `MODULE:SEND_CONFIG_SCHEMA`: stores the sent config as the module's active config
    /// (version 1) if it has none yet, subscribes the connection to config changes, stores the
    /// schema and module version. Returns `CONFIG:SEND_CONFIG_WHEN_CONNECTED` for the
    /// connection (to be sent before the ack).
    ///
    /// The default config is stored byte for byte and is **not** validated against the schema
    /// (the real service does not validate it either).
    ///
    /// # Errors
    /// [`HandleError`] for a payload that is not a `ConfigData`, a config whose
    /// `CONFIG:SEND_CONFIG_WHEN_CONNECTED` would be over [`Limits::max_frame_len`], or an
    /// unknown connection; nothing changes then.
    pub fn config_schema(
        &mut self,
        conn: ConnId,
        data: &[u8],
    ) -> Result<Vec<Notification>, HandleError> {
        let (config_data, entry) =
            decode_from(&mut self.conns, conn, data, payload::decode_config_data)?;
        let config_len = self
            .modules
            .get(&entry.module)
            .and_then(|m| m.config.as_ref())
            .map_or(config_data.config.get().len(), |c| c.data.len());
        let len = frame_len(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, config_len);
        if len > self.limits.max_frame_len {
            return Err(HandleError::FrameTooLarge {
                what: "config",
                len,
                max: self.limits.max_frame_len,
            });
        }
        entry.config_subscribed = true;
        let module = self.modules.entry(entry.module.clone()).or_default();
        let config = module
            .config
            .get_or_insert_with(|| ActiveConfig {
                data: Bytes::copy_from_slice(config_data.config.get().as_bytes()),
                version: 1,
            })
            .data
            .clone();
        module.config_subscribers.insert(conn);
        let schema = config_data.schema.get().as_bytes();
        let same_schema = module
            .schema
            .as_ref()
            .is_some_and(|s| s.stored.schema == schema);
        if same_schema {
            if let Some(s) = module.schema.as_mut() {
                s.stored.module_version = config_data.version;
            }
        } else {
            module.schema = Some(SchemaEntry {
                validator: compile_schema(config_data.schema.get()),
                stored: StoredSchema {
                    schema: Bytes::copy_from_slice(schema),
                    module_version: config_data.version,
                },
            });
        }
        Ok(vec![Notification::new(
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED,
            config,
            vec![conn],
        )])
    }

    /// `MODULE:SEND_REQUIREMENTS`: for each required module, `<m>_MODULE_CONNECTED` with its
    /// ready instances' addresses (`[]` if none or unknown) and a subscription; if routes are
    /// wanted, `CONFIG:SEND_ROUTES_WHEN_CONNECTED` and a subscription. Sending requirements
    /// again adds to the subscriptions (as the real service does: it never leaves a room).
    ///
    /// The `<m>_MODULE_CONNECTED` events follow the order of the names in the message, each
    /// name once (its first place counts); names required by an earlier message are answered
    /// again.
    ///
    /// A connection requires at most [`MAX_REQUIRED_MODULES`] modules: a message with more
    /// names than that, or one that would take the connection's distinct required modules over
    /// it, is refused with [`HandleError::TooManyRequiredModules`] before anything changes.
    /// (The Go client sends the handful of modules a service calls; the cap keeps a hostile or
    /// broken peer from making the service do unbounded work and queue unbounded frames under
    /// its one lock. The real service would fail too, on its database, with some error text.)
    ///
    /// A required name that [`event::check_module_name`] refuses (empty, `||`, a leading
    /// `__ack_`, control characters, over 256 bytes) is refused with
    /// [`HandleError::InvalidModuleName`]: `<name>_MODULE_CONNECTED` would not decode as what
    /// it is.
    ///
    /// # Errors
    /// [`HandleError`] for a payload that is not a `ModuleRequirements`, too many required
    /// modules, an invalid module name or an unknown connection; nothing changes then.
    pub fn module_requirements(
        &mut self,
        conn: ConnId,
        data: &[u8],
    ) -> Result<Vec<Notification>, HandleError> {
        let (requirements, entry) = decode_from(
            &mut self.conns,
            conn,
            data,
            payload::decode_module_requirements,
        )?;
        let asked = requirements.required_modules.len();
        if asked > MAX_REQUIRED_MODULES {
            return Err(HandleError::TooManyRequiredModules {
                count: asked,
                max: MAX_REQUIRED_MODULES,
            });
        }
        // The names of this message, in order, each once.
        let mut seen = HashSet::with_capacity(asked);
        let order: Vec<&str> = requirements
            .required_modules
            .iter()
            .map(String::as_str)
            .filter(|m| seen.insert(*m))
            .collect();
        let already: HashSet<&str> = entry.required.iter().map(String::as_str).collect();
        let added: Vec<&str> = order
            .iter()
            .copied()
            .filter(|m| !already.contains(m))
            .collect();
        if let Some((name, reason)) = order
            .iter()
            .find_map(|m| event::check_module_name(m).err().map(|e| (*m, e)))
        {
            return Err(HandleError::InvalidModuleName {
                name: shown_name(name),
                reason,
            });
        }
        let total = entry.required.len() + added.len();
        if total > MAX_REQUIRED_MODULES {
            return Err(HandleError::TooManyRequiredModules {
                count: total,
                max: MAX_REQUIRED_MODULES,
            });
        }
        entry.required.extend(added.iter().map(|m| (*m).to_owned()));
        for module in &order {
            match self.dependents.get_mut(*module) {
                Some(set) => {
                    set.insert(conn);
                }
                None => {
                    self.dependents
                        .insert((*module).to_owned(), BTreeSet::from([conn]));
                }
            }
        }
        if requirements.require_routes {
            entry.routes = true;
            self.routing_subscribers.insert(conn);
        }
        let mut notifications = Vec::with_capacity(order.len() + 1);
        for module in order {
            notifications.push(Notification::new(
                event::module_connected(module),
                self.addresses_payload(module),
                vec![conn],
            ));
        }
        if requirements.require_routes {
            notifications.push(Notification::new(
                event::CONFIG_SEND_ROUTES_WHEN_CONNECTED,
                self.routing_payload(),
                vec![conn],
            ));
        }
        Ok(notifications)
    }

    /// `MODULE:READY`: stores the declaration as the connection's ready instance (replacing
    /// its previous one in place), then returns `CONFIG:SEND_ROUTES_CHANGED` for every
    /// routing subscriber (the connection itself included) and `<m>_MODULE_CONNECTED` for
    /// every connection that requires the module.
    ///
    /// The declaration is stored as sent, except (as the real service does) that a `grpc`
    /// module's endpoints without an HTTP method get `POST`. An **empty** transport is left
    /// empty (the real service stores `grpc`, but it did not exist in the reference version
    /// whose frames we replay: keeping it empty keeps the routing table byte-identical for the
    /// reference client, which never sends the field).
    ///
    /// The declaration is refused when it breaks the [`Limits`]: over
    /// [`Limits::max_endpoints`] endpoints or [`Limits::max_declaration_len`] bytes, or when
    /// the routing table or the module's address list with it would not fit a frame of
    /// [`Limits::max_frame_len`] bytes (every client that wants routes would then fail its
    /// handshake). The instance it replaces, if any, stays.
    ///
    /// # Errors
    /// [`HandleError`] for a payload that is not a `BackendDeclaration`, a declaration over the
    /// limits, or an unknown connection; nothing changes then.
    pub fn module_ready(
        &mut self,
        conn: ConnId,
        data: &[u8],
    ) -> Result<Vec<Notification>, HandleError> {
        let mut declaration = payload::decode_backend_declaration(data)?;
        let entry = self
            .conns
            .get(&conn)
            .ok_or(HandleError::UnknownConnection(conn))?;
        let limits = self.limits;
        if declaration.endpoints.len() > limits.max_endpoints {
            return Err(HandleError::TooManyEndpoints {
                count: declaration.endpoints.len(),
                max: limits.max_endpoints,
            });
        }
        if declaration.transport == GRPC_TRANSPORT {
            for endpoint in &mut declaration.endpoints {
                if endpoint.http_method.is_empty() {
                    "POST".clone_into(&mut endpoint.http_method);
                }
            }
        }
        let json = Bytes::from(declaration.to_json());
        if json.len() > limits.max_declaration_len {
            return Err(HandleError::DeclarationTooLarge {
                len: json.len(),
                max: limits.max_declaration_len,
            });
        }
        // The routing table and the module's address list as they would be with it.
        let old = entry.instance.as_deref();
        let count = self.ready.len() + usize::from(old.is_none());
        let json_len = self.ready_json_len - old.map_or(0, |i| i.json.len()) + json.len();
        let routes = frame_len(
            event::CONFIG_SEND_ROUTES_WHEN_CONNECTED,
            Self::routing_len(json_len, count),
        );
        if routes > limits.max_frame_len {
            return Err(HandleError::FrameTooLarge {
                what: "routing table",
                len: routes,
                max: limits.max_frame_len,
            });
        }
        let address_len = address_json_len(&declaration.address);
        let addresses = self.addresses_len_with(&entry.module, old, address_len);
        let addresses = frame_len(&event::module_connected(&entry.module), addresses);
        if addresses > limits.max_frame_len {
            return Err(HandleError::FrameTooLarge {
                what: "address list",
                len: addresses,
                max: limits.max_frame_len,
            });
        }
        let Some(entry) = self.conns.get_mut(&conn) else {
            return Err(HandleError::UnknownConnection(conn));
        };
        let (seq, old_address_len) = match &entry.instance {
            Some(instance) => (instance.seq, instance.address_len),
            None => {
                self.next_seq += 1;
                (self.next_seq, 0)
            }
        };
        self.ready_json_len = json_len;
        entry.instance = Some(Box::new(Instance {
            seq,
            declaration,
            json,
            address_len,
        }));
        let module = entry.module.clone();
        self.ready.insert(seq, conn);
        let entry = self.modules.entry(module.clone()).or_default();
        entry.instances.insert(seq, conn);
        entry.addresses_len = entry.addresses_len - old_address_len + address_len;
        Ok(self.instances_changed(&module))
    }

    /// The connection is gone: its ready instance is dropped and its subscriptions end. If it
    /// was ready, returns the same notifications as [`ClusterState::module_ready`] (to the
    /// remaining subscribers). Disconnecting an unknown id does nothing.
    ///
    /// When it was the module's last connection and the module has neither a config nor a
    /// schema (it never sent `MODULE:SEND_CONFIG_SCHEMA` and no config was set for it), the
    /// module is forgotten: [`ClusterState::module_names`] no longer lists it.
    pub fn disconnect(&mut self, conn: ConnId) -> Vec<Notification> {
        let Some(entry) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        self.routing_subscribers.remove(&conn);
        for required in &entry.required {
            if let Some(set) = self.dependents.get_mut(required) {
                set.remove(&conn);
                if set.is_empty() {
                    self.dependents.remove(required);
                }
            }
        }
        let Some(module) = self.modules.get_mut(&entry.module) else {
            return Vec::new();
        };
        module.connections.remove(&conn);
        module.config_subscribers.remove(&conn);
        if let Some(instance) = &entry.instance {
            module.instances.remove(&instance.seq);
            module.addresses_len -= instance.address_len;
            self.ready.remove(&instance.seq);
            self.ready_json_len -= instance.json.len();
        }
        // A module that has nothing left to remember is forgotten, so peers that connect under
        // ever new names do not grow the state; one with a config or a schema stays (as in the
        // real service).
        if module.connections.is_empty() && module.config.is_none() && module.schema.is_none() {
            self.modules.remove(&entry.module);
        }
        match entry.instance {
            Some(_) => self.instances_changed(&entry.module),
            None => Vec::new(),
        }
    }

    // ----- inputs: admin operations -----

    /// Makes `config` the module's active config, as an admin would.
    ///
    /// In the order the real service checks: `config` must be a JSON object; unless `mode` is
    /// [`UpdateMode::Unsafe`], it must satisfy the module's schema (validated per the schema's
    /// `$schema`, draft-07 when it names none or one we do not know — isp-config-service
    /// validates draft-07); a config equal to the active one (as JSON values: key order and
    /// spacing do not matter) changes nothing; if `expected_version` is given it must be the
    /// active version (optimistic locking: 0 stands for "no config yet"). The new config gets
    /// the next version and is sent byte for byte as given to every config subscriber.
    ///
    /// Before all that, the module name must pass [`event::check_module_name`], and the
    /// config must fit a frame of [`Limits::max_frame_len`] bytes.
    ///
    /// A refusal names the place in the config and the rule it breaks, never the value (see
    /// [`ValidationIssue`]).
    ///
    /// # Errors
    /// A [`ConfigUpdateError`]; nothing changes then.
    pub fn set_config(
        &mut self,
        module: &str,
        config: Bytes,
        expected_version: Option<u64>,
        mode: UpdateMode,
    ) -> Result<ConfigUpdate, ConfigUpdateError> {
        event::check_module_name(module).map_err(|reason| {
            ConfigUpdateError::InvalidModuleName {
                module: shown_name(module),
                reason,
            }
        })?;
        // A module's later instances get it as `CONFIG:SEND_CONFIG_WHEN_CONNECTED`, the
        // longer of the two config events.
        if frame_len(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, config.len())
            > self.limits.max_frame_len
        {
            return Err(ConfigUpdateError::TooLarge {
                module: module.to_owned(),
                len: config.len(),
                max: self.limits.max_frame_len,
            });
        }
        let value: Value =
            serde_json::from_slice(&config).map_err(|e| ConfigUpdateError::NotAnObject {
                module: module.to_owned(),
                reason: e.to_string(),
            })?;
        if !value.is_object() {
            return Err(ConfigUpdateError::NotAnObject {
                module: module.to_owned(),
                reason: format!("it is {}", json_kind(&value)),
            });
        }
        if mode == UpdateMode::Validated {
            let schema = self
                .modules
                .get(module)
                .and_then(|m| m.schema.as_ref())
                .ok_or_else(|| ConfigUpdateError::NoSchema {
                    module: module.to_owned(),
                })?;
            let validator =
                schema
                    .validator
                    .as_ref()
                    .map_err(|reason| ConfigUpdateError::InvalidSchema {
                        module: module.to_owned(),
                        reason: reason.clone(),
                    })?;
            let issues: Vec<ValidationIssue> = validator
                .iter_errors(&value)
                .map(|e| ValidationIssue::of(&e))
                .collect();
            if !issues.is_empty() {
                return Err(ConfigUpdateError::Invalid {
                    module: module.to_owned(),
                    issues,
                });
            }
        }
        let entry = self.modules.entry(module.to_owned()).or_default();
        if let Some(active) = &entry.config
            && serde_json::from_slice::<Value>(&active.data).is_ok_and(|old| old == value)
        {
            return Ok(ConfigUpdate {
                version: active.version,
                changed: false,
                notifications: Vec::new(),
            });
        }
        let active_version = entry.config.as_ref().map_or(0, |c| c.version);
        if let Some(expected) = expected_version
            && expected != active_version
        {
            return Err(ConfigUpdateError::VersionConflict {
                module: module.to_owned(),
                expected,
                active: active_version,
            });
        }
        let version = active_version + 1;
        entry.config = Some(ActiveConfig {
            data: config.clone(),
            version,
        });
        let recipients: Vec<ConnId> = entry.config_subscribers.iter().copied().collect();
        let notifications = if recipients.is_empty() {
            Vec::new()
        } else {
            vec![Notification::new(
                event::CONFIG_SEND_CONFIG_CHANGED,
                config,
                recipients,
            )]
        };
        Ok(ConfigUpdate {
            version,
            changed: true,
            notifications,
        })
    }

    /// `ERROR_CONFIG` or `ERROR_CONNECTION` with `text` to every open connection of `module`
    /// (`None` when it has none).
    #[must_use]
    pub fn error_event(&self, module: &str, kind: ErrorEvent, text: &str) -> Option<Notification> {
        let recipients: Vec<ConnId> = self
            .modules
            .get(module)?
            .connections
            .iter()
            .copied()
            .collect();
        (!recipients.is_empty()).then(|| {
            Notification::new(
                kind.name(),
                Bytes::copy_from_slice(text.as_bytes()),
                recipients,
            )
        })
    }

    // ----- getters -----

    /// The names of the known modules, sorted: those with an open connection, a config or a
    /// schema (see [`ClusterState::disconnect`]).
    #[must_use]
    pub fn module_names(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    /// Everything known of `module`.
    #[must_use]
    pub fn module(&self, module: &str) -> Option<ModuleSnapshot> {
        let entry = self.modules.get(module)?;
        Some(ModuleSnapshot {
            name: module.to_owned(),
            connections: entry.connections.iter().copied().collect(),
            ready: self.ready_instances(module),
            config: entry.config.clone(),
            schema: entry.schema.as_ref().map(|s| s.stored.clone()),
        })
    }

    /// The module's active config.
    #[must_use]
    pub fn active_config(&self, module: &str) -> Option<ActiveConfig> {
        self.modules.get(module)?.config.clone()
    }

    /// The module's stored schema.
    #[must_use]
    pub fn schema(&self, module: &str) -> Option<StoredSchema> {
        Some(self.modules.get(module)?.schema.as_ref()?.stored.clone())
    }

    /// The module's ready instances, newest first.
    #[must_use]
    pub fn ready_instances(&self, module: &str) -> Vec<ReadyInstance> {
        let Some(entry) = self.modules.get(module) else {
            return Vec::new();
        };
        entry
            .instances
            .values()
            .rev()
            .filter_map(|conn| self.instance_of(*conn))
            .collect()
    }

    /// Every ready instance, newest first: the routing table.
    #[must_use]
    pub fn routing_table(&self) -> Vec<ReadyInstance> {
        self.ready
            .values()
            .rev()
            .filter_map(|conn| self.instance_of(*conn))
            .collect()
    }

    /// The open connections of `module`, ascending.
    #[must_use]
    pub fn connections_of(&self, module: &str) -> Vec<ConnId> {
        self.modules
            .get(module)
            .map(|m| m.connections.iter().copied().collect())
            .unwrap_or_default()
    }

    /// What is known of an open connection.
    #[must_use]
    pub fn connection(&self, conn: ConnId) -> Option<ConnectionInfo> {
        let entry = self.conns.get(&conn)?;
        Some(ConnectionInfo {
            id: conn,
            module: entry.module.clone(),
            peer: entry.peer.clone(),
            ready: entry.instance.as_ref().map(|i| i.declaration.clone()),
            required_modules: entry.required.clone(),
            wants_routes: entry.routes,
            config_subscribed: entry.config_subscribed,
        })
    }

    /// The number of open connections.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Every open connection id, ascending.
    #[must_use]
    pub fn connection_ids(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    // ----- internals -----

    fn instance_of(&self, conn: ConnId) -> Option<ReadyInstance> {
        let instance = self.conns.get(&conn)?.instance.as_ref()?;
        Some(ReadyInstance {
            conn,
            declaration: instance.declaration.clone(),
        })
    }

    /// The notifications for "the ready instances of `module` changed".
    fn instances_changed(&self, module: &str) -> Vec<Notification> {
        let mut notifications = Vec::new();
        if !self.routing_subscribers.is_empty() {
            notifications.push(Notification::new(
                event::CONFIG_SEND_ROUTES_CHANGED,
                self.routing_payload(),
                self.routing_subscribers.iter().copied().collect(),
            ));
        }
        if let Some(dependents) = self.dependents.get(module)
            && !dependents.is_empty()
        {
            notifications.push(Notification::new(
                event::module_connected(module),
                self.addresses_payload(module),
                dependents.iter().copied().collect(),
            ));
        }
        notifications
    }

    fn addresses_payload(&self, module: &str) -> Bytes {
        let addresses: Vec<AddressConfiguration> = self
            .modules
            .get(module)
            .map(|m| {
                m.instances
                    .values()
                    .rev()
                    .filter_map(|conn| self.conns.get(conn)?.instance.as_ref())
                    .map(|i| i.declaration.address.clone())
                    .collect()
            })
            .unwrap_or_default();
        Bytes::from(payload::encode_addresses(&addresses))
    }

    /// The size of `module`'s address list if one of its connections, whose ready instance is
    /// `old` (if any), declared an address of `address_len` bytes of JSON.
    fn addresses_len_with(
        &self,
        module: &str,
        old: Option<&Instance>,
        address_len: usize,
    ) -> usize {
        let (sum, count) = self
            .modules
            .get(module)
            .map_or((0, 0), |m| (m.addresses_len, m.instances.len()));
        let (others_len, others) = match old {
            Some(old) => (sum - old.address_len, count - 1),
            None => (sum, count),
        };
        2 + address_len + others_len + others
    }

    /// The routing table's JSON, joined from each instance's JSON encoded once at READY (the
    /// same bytes `payload::encode_routing_config` gives).
    fn routing_payload(&self) -> Bytes {
        let instances: Vec<&Bytes> = self
            .ready
            .values()
            .rev()
            .filter_map(|conn| Some(&self.conns.get(conn)?.instance.as_ref()?.json))
            .collect();
        let len = 2 + instances.iter().map(|j| j.len() + 1).sum::<usize>();
        let mut buf = BytesMut::with_capacity(len);
        buf.put_u8(b'[');
        for (i, json) in instances.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            buf.put_slice(json);
        }
        buf.put_u8(b']');
        buf.freeze()
    }
}

/// The length of `address`'s JSON as an element of an address list.
fn address_json_len(address: &AddressConfiguration) -> usize {
    payload::encode_addresses(std::slice::from_ref(address)).len() - 2
}

/// Compiles a schema: the draft its `$schema` names, draft-07 when it names none or an
/// unknown one. No remote `$ref` is fetched (jsonschema is built without its resolvers).
fn compile_schema(raw: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let draft = match jsonschema::Draft::Draft7.detect(&schema) {
        jsonschema::Draft::Unknown => jsonschema::Draft::Draft7,
        known => known,
    };
    jsonschema::options()
        .with_draft(draft)
        .build(&schema)
        .map_err(|e| e.to_string())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpdateMode::{Unsafe, Validated};

    const SCHEMA: &str = r#"{"version":"1.0.0","schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"someString":{"type":"string"}}},"config":{}}"#;

    fn ready_json(module: &str, ip: &str) -> String {
        format!(
            r#"{{"moduleName":"{module}","version":"1.0.0","libVersion":"1.0.0","endpoints":null,"requiredModules":[],"address":{{"ip":"{ip}","port":"9999"}}}}"#
        )
    }

    /// [`ClusterState::set_config`] of a JSON literal.
    fn set(
        s: &mut ClusterState,
        mode: UpdateMode,
        module: &str,
        json: &'static [u8],
        expected_version: Option<u64>,
    ) -> Result<ConfigUpdate, ConfigUpdateError> {
        s.set_config(module, Bytes::from_static(json), expected_version, mode)
    }

    fn single(mut n: Vec<Notification>) -> Notification {
        assert_eq!(n.len(), 1, "{n:?}");
        n.remove(0)
    }

    #[test]
    fn schema_stores_initial_config_once_and_answers_with_active_config() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p1");
        let n = single(s.config_schema(ConnId(1), SCHEMA.as_bytes()).unwrap());
        assert_eq!(n.event, event::CONFIG_SEND_CONFIG_WHEN_CONNECTED);
        assert_eq!(&n.payload[..], b"{}");
        assert_eq!(n.recipients, vec![ConnId(1)]);
        assert_eq!(s.active_config("A").unwrap().version, 1);
        let schema = s.schema("A").unwrap();
        assert_eq!(schema.module_version, "1.0.0");
        assert!(schema.schema.starts_with(br#"{"$schema""#));

        // A second instance with another default config gets the stored one.
        s.connect(ConnId(2), "A", "p2");
        let other = r#"{"version":"1.1.0","schema":{},"config":{"x":1}}"#;
        let n = single(s.config_schema(ConnId(2), other.as_bytes()).unwrap());
        assert_eq!(&n.payload[..], b"{}");
        assert_eq!(s.schema("A").unwrap().module_version, "1.1.0");
        assert_eq!(&s.schema("A").unwrap().schema[..], b"{}");
        assert!(s.connection(ConnId(2)).unwrap().config_subscribed);
    }

    #[test]
    fn default_config_is_kept_byte_for_byte() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "B", "p");
        let data = r#"{"version":"1","schema":{},"config":{ "b" :2, "a":1 }}"#;
        let n = single(s.config_schema(ConnId(1), data.as_bytes()).unwrap());
        assert_eq!(&n.payload[..], br#"{ "b" :2, "a":1 }"#);
    }

    #[test]
    fn malformed_payloads_are_refused_without_change() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        let err = s.config_schema(ConnId(1), b"{not json").unwrap_err();
        assert!(
            err.to_string().starts_with("unmarshal event data: "),
            "{err}"
        );
        assert!(s.active_config("A").is_none());
        assert!(s.module_requirements(ConnId(1), b"[1]").is_err());
        assert!(s.module_ready(ConnId(1), b"").is_err());
        assert!(s.ready_instances("A").is_empty());
        assert!(matches!(
            s.module_ready(ConnId(9), ready_json("A", "1").as_bytes()),
            Err(HandleError::UnknownConnection(ConnId(9)))
        ));
        // The payload is checked before the connection.
        assert!(matches!(
            s.module_ready(ConnId(9), b""),
            Err(HandleError::Payload(_))
        ));
    }

    #[test]
    fn requirements_answer_each_module_once_then_routes() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        s.module_ready(ConnId(1), ready_json("A", "10.0.0.1").as_bytes())
            .unwrap();
        s.connect(ConnId(2), "B", "p");
        let n = s
            .module_requirements(
                ConnId(2),
                br#"{"requiredModules":["A","C","A"],"requireRoutes":true}"#,
            )
            .unwrap();
        let events: Vec<&str> = n.iter().map(|n| n.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "A_MODULE_CONNECTED",
                "C_MODULE_CONNECTED",
                event::CONFIG_SEND_ROUTES_WHEN_CONNECTED
            ]
        );
        assert_eq!(&n[0].payload[..], br#"[{"ip":"10.0.0.1","port":"9999"}]"#);
        assert_eq!(&n[1].payload[..], b"[]");
        assert_eq!(
            n[2].payload,
            payload::encode_routing_config(&[payload::decode_backend_declaration(
                ready_json("A", "10.0.0.1").as_bytes()
            )
            .unwrap()])
        );
        let info = s.connection(ConnId(2)).unwrap();
        assert_eq!(info.required_modules, ["A", "C"]);
        assert!(info.wants_routes);
    }

    #[test]
    fn instances_are_listed_newest_first_and_ready_again_keeps_its_place() {
        let mut s = ClusterState::new();
        for (id, ip) in [(1, "10.0.0.1"), (2, "10.0.0.2"), (3, "10.0.0.3")] {
            s.connect(ConnId(id), "A", "p");
            s.module_ready(ConnId(id), ready_json("A", ip).as_bytes())
                .unwrap();
        }
        let ips = |s: &ClusterState| -> Vec<String> {
            s.ready_instances("A")
                .into_iter()
                .map(|i| i.declaration.address.ip)
                .collect()
        };
        assert_eq!(ips(&s), ["10.0.0.3", "10.0.0.2", "10.0.0.1"]);
        s.module_ready(ConnId(2), ready_json("A", "10.0.0.22").as_bytes())
            .unwrap();
        assert_eq!(ips(&s), ["10.0.0.3", "10.0.0.22", "10.0.0.1"]);
        assert_eq!(s.routing_table().len(), 3);
    }

    #[test]
    fn ready_and_disconnect_notify_routes_then_dependents() {
        let mut s = ClusterState::new();
        s.connect(ConnId(10), "B", "p");
        s.module_requirements(
            ConnId(10),
            br#"{"requiredModules":["A"],"requireRoutes":true}"#,
        )
        .unwrap();
        s.connect(ConnId(11), "C", "p");
        s.module_requirements(ConnId(11), br#"{"requiredModules":["A"]}"#)
            .unwrap();
        s.connect(ConnId(1), "A", "p");
        let n = s
            .module_ready(ConnId(1), ready_json("A", "10.0.0.1").as_bytes())
            .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].event, event::CONFIG_SEND_ROUTES_CHANGED);
        assert_eq!(n[0].recipients, [ConnId(10)]);
        assert_eq!(n[1].event, "A_MODULE_CONNECTED");
        assert_eq!(n[1].recipients, [ConnId(10), ConnId(11)]);

        // A connection that never became ready leaves silently.
        s.connect(ConnId(2), "A", "p");
        assert!(s.disconnect(ConnId(2)).is_empty());

        let n = s.disconnect(ConnId(1));
        assert_eq!(n.len(), 2);
        assert_eq!(&n[0].payload[..], b"[]");
        assert_eq!(&n[1].payload[..], b"[]");
        assert!(s.ready_instances("A").is_empty());
        assert!(
            s.disconnect(ConnId(1)).is_empty(),
            "second disconnect is a no-op"
        );

        // A gone subscriber is not notified any more.
        s.disconnect(ConnId(10));
        s.connect(ConnId(3), "A", "p");
        let n = s
            .module_ready(ConnId(3), ready_json("A", "10.0.0.3").as_bytes())
            .unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].recipients, [ConnId(11)]);
    }

    #[test]
    fn the_routing_table_size_is_tracked_through_ready_again_and_disconnect() {
        let mut s = ClusterState::new();
        let check = |s: &ClusterState| {
            let len = ClusterState::routing_len(s.ready_json_len, s.ready.len());
            assert_eq!(len, s.routing_payload().len());
        };
        for (id, ip) in [(1, "10.0.0.1"), (2, "10.0.0.2"), (3, "10.0.0.3")] {
            s.connect(ConnId(id), "A", "p");
            s.module_ready(ConnId(id), ready_json("A", ip).as_bytes())
                .unwrap();
            check(&s);
        }
        s.module_ready(ConnId(2), ready_json("A", "10.0.0.222").as_bytes())
            .unwrap();
        check(&s);
        s.disconnect(ConnId(1));
        check(&s);
        s.disconnect(ConnId(2));
        s.disconnect(ConnId(3));
        check(&s);
        assert_eq!(s.ready_json_len, 0);
    }

    #[test]
    fn grpc_endpoints_get_post_and_empty_transport_stays_empty() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        let grpc = r#"{"moduleName":"A","transport":"grpc","endpoints":[{"path":"x"},{"path":"y","httpMethod":"GET"}],"address":{"ip":"1","port":"2"}}"#;
        s.module_ready(ConnId(1), grpc.as_bytes()).unwrap();
        let d = &s.ready_instances("A")[0].declaration;
        assert_eq!(d.endpoints[0].http_method, "POST");
        assert_eq!(d.endpoints[1].http_method, "GET");

        s.connect(ConnId(2), "B", "p");
        let old =
            r#"{"moduleName":"B","endpoints":[{"path":"x"}],"address":{"ip":"1","port":"2"}}"#;
        s.module_ready(ConnId(2), old.as_bytes()).unwrap();
        let d = &s.ready_instances("B")[0].declaration;
        assert_eq!(d.transport, "");
        assert_eq!(d.endpoints[0].http_method, "");
    }

    fn state_with_schema() -> ClusterState {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        s.config_schema(ConnId(1), SCHEMA.as_bytes()).unwrap();
        s.connect(ConnId(2), "A", "p");
        s.config_schema(ConnId(2), SCHEMA.as_bytes()).unwrap();
        s
    }

    #[test]
    fn config_update_bumps_version_and_notifies_subscribers() {
        let mut s = state_with_schema();
        let new = Bytes::from_static(br#"{"someString":"v"}"#);
        let u = s
            .set_config("A", new.clone(), Some(1), UpdateMode::Validated)
            .unwrap();
        assert!(u.changed);
        assert_eq!(u.version, 2);
        let n = single(u.notifications);
        assert_eq!(n.event, event::CONFIG_SEND_CONFIG_CHANGED);
        assert_eq!(n.payload, new);
        assert_eq!(n.recipients, [ConnId(1), ConnId(2)]);
        assert_eq!(s.active_config("A").unwrap().version, 2);
    }

    #[test]
    fn equal_config_changes_nothing_even_with_other_spacing() {
        let mut s = state_with_schema();
        let first = set(&mut s, Validated, "A", br#"{"a":1,"b":2}"#, None).unwrap();
        assert_eq!(first.version, 2);
        let u = set(&mut s, Validated, "A", br#"{ "b": 2, "a": 1 }"#, Some(1)).unwrap();
        assert!(!u.changed);
        assert_eq!(u.version, 2);
        assert!(u.notifications.is_empty());
        assert_eq!(&s.active_config("A").unwrap().data[..], br#"{"a":1,"b":2}"#);
    }

    #[test]
    fn stale_version_is_refused() {
        let mut s = state_with_schema();
        let first = set(&mut s, Validated, "A", br#"{"a":1}"#, Some(1)).unwrap();
        assert_eq!(first.version, 2);
        let err = set(&mut s, Validated, "A", br#"{"a":2}"#, Some(1)).unwrap_err();
        assert_eq!(
            err,
            ConfigUpdateError::VersionConflict {
                module: "A".into(),
                expected: 1,
                active: 2
            }
        );
        assert_eq!(&s.active_config("A").unwrap().data[..], br#"{"a":1}"#);
    }

    #[test]
    fn invalid_config_lists_every_issue() {
        let mut s = state_with_schema();
        let err = set(&mut s, Validated, "A", br#"{"someString":5}"#, None).unwrap_err();
        let ConfigUpdateError::Invalid { issues, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].instance_path, "/someString");
        assert!(
            issues[0].message.contains("string"),
            "{}",
            issues[0].message
        );
        assert!(err.to_string().contains("/someString: "), "{err}");
        assert_eq!(s.active_config("A").unwrap().version, 1);

        // Unsafe stores it anyway.
        let u = set(&mut s, Unsafe, "A", br#"{"someString":5}"#, None).unwrap();
        assert_eq!(u.version, 2);
    }

    #[test]
    fn schema_without_dollar_schema_is_draft7() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        // `dependencies` is a draft-07 keyword (gone in 2020-12).
        let data =
            r#"{"version":"1","schema":{"type":"object","dependencies":{"a":["b"]}},"config":{}}"#;
        s.config_schema(ConnId(1), data.as_bytes()).unwrap();
        let err = set(&mut s, Validated, "A", br#"{"a":1}"#, None).unwrap_err();
        assert!(matches!(err, ConfigUpdateError::Invalid { .. }), "{err:?}");
        let ok = set(&mut s, Validated, "A", br#"{"a":1,"b":2}"#, None).unwrap();
        assert!(ok.changed);
    }

    #[test]
    fn no_schema_invalid_schema_and_non_objects_are_refused() {
        let mut s = ClusterState::new();
        let cfg = Bytes::from_static(b"{}");
        assert!(matches!(
            s.set_config("X", cfg.clone(), None, UpdateMode::Validated),
            Err(ConfigUpdateError::NoSchema { .. })
        ));
        assert!(s.module("X").is_none());
        assert!(matches!(
            set(&mut s, Unsafe, "X", b"[1]", None),
            Err(ConfigUpdateError::NotAnObject { .. })
        ));
        assert!(matches!(
            set(&mut s, Unsafe, "X", b"{", None),
            Err(ConfigUpdateError::NotAnObject { .. })
        ));
        // Unsafe pre-seeds an unknown module; its first instance gets this config.
        let u = set(&mut s, Unsafe, "X", br#"{"seed":1}"#, Some(0)).unwrap();
        assert_eq!(u.version, 1);
        s.connect(ConnId(1), "X", "p");
        let data = r#"{"version":"1","schema":{"type":"object","minProperties":"x"},"config":{}}"#;
        let n = single(s.config_schema(ConnId(1), data.as_bytes()).unwrap());
        assert_eq!(&n.payload[..], br#"{"seed":1}"#);
        assert!(matches!(
            s.set_config("X", cfg, None, UpdateMode::Validated),
            Err(ConfigUpdateError::InvalidSchema { .. })
        ));
    }

    #[test]
    fn error_events_go_to_every_open_connection_of_the_module() {
        let mut s = ClusterState::new();
        assert!(s.error_event("A", ErrorEvent::Config, "x").is_none());
        s.connect(ConnId(1), "A", "p");
        s.connect(ConnId(2), "A", "p");
        s.connect(ConnId(3), "B", "p");
        let n = s.error_event("A", ErrorEvent::Connection, "bad").unwrap();
        assert_eq!(n.event, event::ERROR_CONNECTION);
        assert_eq!(&n.payload[..], b"bad");
        assert_eq!(n.recipients, [ConnId(1), ConnId(2)]);
        s.disconnect(ConnId(1));
        s.disconnect(ConnId(2));
        assert!(s.error_event("A", ErrorEvent::Config, "x").is_none());
        assert_eq!(s.connection_ids(), [ConnId(3)]);
    }

    #[test]
    fn required_modules_are_answered_in_the_order_given() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "B", "p");
        let n = s
            .module_requirements(ConnId(1), br#"{"requiredModules":["C","A","C"]}"#)
            .unwrap();
        let events: Vec<&str> = n.iter().map(|n| n.event.as_str()).collect();
        assert_eq!(events, ["C_MODULE_CONNECTED", "A_MODULE_CONNECTED"]);
        assert_eq!(
            s.connection(ConnId(1)).unwrap().required_modules,
            ["C", "A"]
        );

        // Again, with a known name after a new one: answered in this message's order, each
        // stored once.
        let n = s
            .module_requirements(ConnId(1), br#"{"requiredModules":["D","C"]}"#)
            .unwrap();
        let events: Vec<&str> = n.iter().map(|n| n.event.as_str()).collect();
        assert_eq!(events, ["D_MODULE_CONNECTED", "C_MODULE_CONNECTED"]);
        assert_eq!(
            s.connection(ConnId(1)).unwrap().required_modules,
            ["C", "A", "D"]
        );
    }

    fn requirements(names: impl Iterator<Item = String>) -> Vec<u8> {
        let names: Vec<String> = names.map(|n| format!("{n:?}")).collect();
        format!(r#"{{"requiredModules":[{}]}}"#, names.join(",")).into_bytes()
    }

    #[test]
    fn too_many_required_modules_are_refused_without_change() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "B", "p");
        // A 1 MiB frame's worth of names: refused at once, nothing subscribed.
        let huge = requirements((0..250_000).map(|i| format!("m{i}")));
        let err = s.module_requirements(ConnId(1), &huge).unwrap_err();
        assert!(
            matches!(
                err,
                HandleError::TooManyRequiredModules {
                    count: 250_000,
                    max: MAX_REQUIRED_MODULES
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "too many required modules: 250000 (at most 1024)"
        );
        assert!(s.connection(ConnId(1)).unwrap().required_modules.is_empty());
        assert!(s.dependents.is_empty());

        // Exactly the cap is fine; one more distinct module later is not.
        let full = requirements((0..MAX_REQUIRED_MODULES).map(|i| format!("m{i}")));
        assert_eq!(
            s.module_requirements(ConnId(1), &full).unwrap().len(),
            MAX_REQUIRED_MODULES
        );
        let again = requirements(["m0".to_owned(), "m1".to_owned()].into_iter());
        assert_eq!(s.module_requirements(ConnId(1), &again).unwrap().len(), 2);
        let one_more = requirements(["m0".to_owned(), "new".to_owned()].into_iter());
        assert!(matches!(
            s.module_requirements(ConnId(1), &one_more),
            Err(HandleError::TooManyRequiredModules {
                count: 1025,
                max: MAX_REQUIRED_MODULES
            })
        ));
        assert!(!s.dependents.contains_key("new"));
        assert_eq!(
            s.connection(ConnId(1)).unwrap().required_modules.len(),
            MAX_REQUIRED_MODULES
        );
    }

    #[test]
    fn modules_with_nothing_to_remember_are_forgotten_when_their_last_connection_goes() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "ephemeral", "p");
        s.connect(ConnId(2), "ephemeral", "p");
        s.module_ready(ConnId(2), ready_json("ephemeral", "1").as_bytes())
            .unwrap();
        s.connect(ConnId(3), "with-schema", "p");
        s.config_schema(ConnId(3), SCHEMA.as_bytes()).unwrap();
        let seeded = set(&mut s, Unsafe, "seeded", b"{}", None).unwrap();
        assert!(seeded.notifications.is_empty());
        s.connect(ConnId(4), "seeded", "p");

        s.disconnect(ConnId(1));
        assert!(s.module("ephemeral").is_some(), "one connection is left");
        for id in 2..=4 {
            s.disconnect(ConnId(id));
        }
        assert_eq!(s.module_names(), ["seeded", "with-schema"]);
        assert!(s.module("ephemeral").is_none());
        assert_eq!(s.active_config("seeded").unwrap().version, 1);
        assert!(s.schema("with-schema").is_some());

        // Many peers under ever new names leave nothing behind.
        for id in 10..1010 {
            s.connect(ConnId(id), &format!("random-{id}"), "p");
            s.module_requirements(ConnId(id), br#"{"requiredModules":["x"]}"#)
                .unwrap();
            s.disconnect(ConnId(id));
        }
        assert_eq!(s.module_names().len(), 2);
        assert!(s.dependents.is_empty());
    }

    /// The running sum behind the address-list size check stays the size of the list the
    /// dependents get, as instances become ready, re-declare and go away.
    #[test]
    fn address_list_size_follows_instances() {
        let mut s = ClusterState::new();
        let check = |s: &ClusterState| {
            let actual = s.addresses_payload("A").len();
            let module = &s.modules["A"];
            let expected = if module.instances.is_empty() {
                2
            } else {
                2 + module.addresses_len + module.instances.len() - 1
            };
            assert_eq!(expected, actual);
        };
        for i in 1..=5 {
            s.connect(ConnId(i), "A", "p");
            s.module_ready(
                ConnId(i),
                ready_json("A", &format!("10.0.0.{i}")).as_bytes(),
            )
            .unwrap();
            check(&s);
        }
        s.module_ready(ConnId(3), ready_json("A", "10.0.0.333").as_bytes())
            .unwrap();
        check(&s);
        for i in [2, 5, 1] {
            s.disconnect(ConnId(i));
            check(&s);
        }
    }
}
