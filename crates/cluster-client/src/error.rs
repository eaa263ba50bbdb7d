//! The client's errors: the caller's misuse apart from the peer's faults.

use crate::state::ClientState;
use cluster_proto::event::ModuleNameError;
use cluster_transport::SetupError;

/// The error type receivers return: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What [`ClientBuilder::build`](crate::ClientBuilder::build) and
/// [`Client::run`](crate::Client::run) report. (A health check that fails is not an error of
/// the client's: it is [`SessionInactive`], a state.)
///
/// Only the caller's faults are errors, and the settings are checked when the client is
/// built: the peer's faults (a refused connection, an error ack, a missing event, a
/// disconnect) are logged and answered by a reconnect, as the Go client does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The host list is empty.
    #[error(
        "no config service hosts given: give at least one host:port (Go's configServiceAddress)"
    )]
    NoHosts,
    /// A host entry is not `ip:port`, `ws://host:port` or `wss://host:port` (or `tcp://`,
    /// `mem://` with a matching connector). `reason` says what to write instead. User info
    /// (`user:password@`) is never repeated in `input`.
    #[error("invalid host {input:?}: {reason}")]
    InvalidHost {
        /// The entry as given (user info replaced by `***`).
        input: String,
        /// What is wrong with it, and what to write instead.
        reason: String,
    },
    /// The module's own name cannot be used on the wire (see
    /// [`check_module_name`](cluster_proto::event::check_module_name)): the config service
    /// refuses such a connection, or its events would not parse.
    #[error("invalid module name {name:?}: {error}")]
    InvalidModuleName {
        /// The name.
        name: String,
        /// The rule it breaks.
        error: ModuleNameError,
    },
    /// A module the [`EventHandler`](crate::EventHandler) requires has a name that cannot be
    /// used on the wire (its `<name>_MODULE_CONNECTED` event would not parse).
    #[error("invalid required module name {name:?}: {error}")]
    InvalidRequiredModule {
        /// The name.
        name: String,
        /// The rule it breaks.
        error: ModuleNameError,
    },
    /// The WebSocket connector cannot be set up from the caller's settings: a CA file or PEM
    /// that does not read or parse, a `wss://` host that is not a valid TLS server name. The
    /// [`SetupError`] says which, with the underlying error as its source. Shown as the
    /// `SetupError` itself (`cannot read CA file …: …`), so that a printer that walks the
    /// sources does not repeat it.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// [`Client::run`](crate::Client::run) was called while another run of the same client is
    /// going on.
    #[error("the client is already running")]
    AlreadyRunning,
}

/// [`Client::healthcheck`](crate::Client::healthcheck) failed: the session is not active (the
/// module is not ready). `state` says where the client stands instead (idle, connecting,
/// backing off and why, closed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("session inactive: {state}")]
pub struct SessionInactive {
    /// The client's state when the check ran.
    pub state: ClientState,
}

/// What [`OfflineClient::run`](crate::OfflineClient::run) reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// The config file could not be read.
    #[error("read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config receiver refused the config, panicked, or ran out of time.
    #[error("receive config: {0}")]
    Receiver(String),
}
