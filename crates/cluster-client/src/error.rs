//! The client's errors: the caller's misuse apart from the peer's faults.

use cluster_transport::{EndpointParseError, TransportError};

/// The error type receivers return: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What [`Client::run`](crate::Client::run) and [`Client::healthcheck`](crate::Client::healthcheck)
/// report.
///
/// Only the caller's faults end [`Client::run`](crate::Client::run) with an error: the peer's
/// faults (a refused connection, an error ack, a missing event, a disconnect) are logged and
/// answered by a reconnect, as the Go client does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The host list is empty.
    #[error("no config service hosts given")]
    NoHosts,
    /// A host entry is not `ip:port`, `ws://host:port` or `wss://host:port` (or `tcp://`,
    /// `mem://` with a matching connector).
    #[error(transparent)]
    InvalidHost(#[from] EndpointParseError),
    /// The module name is empty: the config service refuses such a connection (Go sends it
    /// all the same and fails every session).
    #[error("the module name is empty")]
    EmptyModuleName,
    /// The connector cannot be set up (a TLS setting that does not load, say).
    #[error("cannot set up the connector: {0}")]
    Connector(#[from] TransportError),
    /// [`Client::run`](crate::Client::run) was called while another run of the same client is
    /// going on.
    #[error("the client is already running")]
    AlreadyRunning,
    /// [`Client::healthcheck`](crate::Client::healthcheck): the session is not active (not
    /// ready).
    #[error("session inactive")]
    SessionInactive,
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
