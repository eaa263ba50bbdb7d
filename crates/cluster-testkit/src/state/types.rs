//! The values the state hands out (connections, configs, schemas, ready instances,
//! notifications) and the errors of the module events.

use bytes::Bytes;
use cluster_proto::event;
use cluster_proto::payload::{BackendDeclaration, PayloadError};
use serde_json::Value;
use std::fmt;

#[cfg(doc)]
use super::{ClusterState, Limits, MAX_REQUIRED_MODULES};

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
    pub(super) fn new(
        event: impl Into<String>,
        payload: impl Into<Bytes>,
        recipients: Vec<ConnId>,
    ) -> Self {
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
