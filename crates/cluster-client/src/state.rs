//! The state a client handle and its run share: where the client stands ([`ClientState`]),
//! what it is configured with, and the channels between the handle and the run loop. Its own
//! module so that the handle (`client.rs`) and the run loop (`driver.rs`) both depend on it and
//! not on each other.

use cluster_metrics::cluster::{ClusterMetrics, SessionState};
use cluster_proto::backoff::BackoffConfig;
use cluster_proto::session::SessionTimeouts;
use cluster_proto::{ConfigData, ModuleInfo, SecretMasker};
use cluster_transport::log_limit::LogLimit;
use cluster_transport::ws::WsConfig;
use cluster_transport::{Connector, Endpoint};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where a client stands, as [`Client::state`](crate::Client::state) reports it.
///
/// `Display` says it in words (`backing off: next session in 1.5s (2 failures in a row;
/// last: …)`); `Debug` shows the remaining backoff delay in the same human form rather than
/// a raw `Instant`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// Not running: no [`Client::run`](crate::Client::run) future is being polled. Either none was made yet, the
    /// one made was never polled (a future does nothing until polled: spawn it, or use
    /// [`Client::run_until`](crate::Client::run_until)), or it was dropped.
    Idle,
    /// Dialing `host`.
    Connecting {
        /// The config service host, as an endpoint URL (`ws://127.0.0.1:9001`).
        host: Arc<str>,
    },
    /// Connected; registering the module (schema, requirements, first events, ready).
    Handshaking {
        /// The config service host.
        host: Arc<str>,
        /// The id of the session in the logs.
        session_id: String,
    },
    /// The module is ready: the session is active and the health check passes.
    Ready {
        /// The config service host.
        host: Arc<str>,
        /// The id of the session in the logs.
        session_id: String,
    },
    /// The last session ended (it failed, was disconnected, or could not connect); the next
    /// starts at `until`. The client enters this state the moment the session ends: the
    /// health check fails from then on, while the old connection is still being closed.
    BackingOff {
        /// When the next session starts.
        until: tokio::time::Instant,
        /// The delay that was chosen.
        delay: Duration,
        /// How many sessions in a row have ended since the last one that stayed ready for
        /// `BackoffConfig::stable_after`, counting the one that just ended: 1 after the first
        /// failure and after such a session ends, then 2, 3, … while sessions fail (or drop as
        /// soon as they are ready). It is the backoff's step: the delay grows with it.
        failures: u32,
        /// Why the last session ended, as logged: the connect error, or the session's error
        /// (`CONFIG:SEND_CONFIG_WHEN_CONNECTED rejected by the application: config is invalid:
        /// …` when the application refused the config the service holds, which the service
        /// sends again at every reconnect, keeping the module out of the cluster until an admin
        /// fixes it).
        cause: Arc<str>,
    },
    /// The client was closed: it will not connect again.
    Closed,
}

impl ClientState {
    /// Whether the session is active (ready).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }
}

/// The time left until `until`, rounded to the millisecond (for humans).
fn remaining(until: tokio::time::Instant) -> Duration {
    let left = until.saturating_duration_since(tokio::time::Instant::now());
    Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle => f.write_str(
                "idle: no run is being polled (spawn `Client::run`, or await `Client::run_until`)",
            ),
            Self::Connecting { host } => write!(f, "connecting to {host}"),
            Self::Handshaking { host, session_id } => {
                write!(f, "handshaking with {host} (session {session_id})")
            }
            Self::Ready { host, session_id } => {
                write!(f, "ready on {host} (session {session_id})")
            }
            Self::BackingOff {
                until,
                failures,
                cause,
                ..
            } => write!(
                f,
                "backing off: next session in {:?} ({failures} failure(s) in a row; last: {cause})",
                remaining(*until)
            ),
            Self::Closed => f.write_str("closed"),
        }
    }
}

impl fmt::Debug for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle => f.write_str("Idle"),
            Self::Connecting { host } => f.debug_struct("Connecting").field("host", host).finish(),
            Self::Handshaking { host, session_id } => f
                .debug_struct("Handshaking")
                .field("host", host)
                .field("session_id", session_id)
                .finish(),
            Self::Ready { host, session_id } => f
                .debug_struct("Ready")
                .field("host", host)
                .field("session_id", session_id)
                .finish(),
            Self::BackingOff {
                until,
                delay,
                failures,
                cause,
            } => f
                .debug_struct("BackingOff")
                .field("next_in", &remaining(*until))
                .field("delay", delay)
                .field("failures", failures)
                .field("cause", cause)
                .finish(),
            Self::Closed => f.write_str("Closed"),
        }
    }
}

/// Everything a client is configured with.
pub(crate) struct Settings {
    pub(crate) module_info: ModuleInfo,
    pub(crate) config_data: ConfigData,
    pub(crate) hosts: Vec<String>,
    pub(crate) connector: Option<Arc<dyn Connector>>,
    pub(crate) ws_config: Option<WsConfig>,
    pub(crate) timeouts: SessionTimeouts,
    pub(crate) config_arrival_wait: Duration,
    pub(crate) backoff: BackoffConfig,
    pub(crate) seed: Option<u64>,
    pub(crate) masker: Arc<SecretMasker>,
    pub(crate) log_limit: LogLimit,
}

/// What the client handle and its run share.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    /// The hosts, parsed once by [`ClientBuilder::build`](crate::ClientBuilder::build).
    pub(crate) endpoints: Vec<Endpoint>,
    /// The connector, set up once by [`ClientBuilder::build`](crate::ClientBuilder::build).
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) cancel: CancellationToken,
    pub(crate) state: watch::Sender<ClientState>,
    pub(crate) running: watch::Sender<bool>,
    /// The client's metrics (`cluster_*`), registered when the client was built.
    pub(crate) metrics: ClusterMetrics,
}

impl Shared {
    pub(crate) fn set_state(&self, state: ClientState) {
        self.metrics.set_state(metric_state(&state));
        self.state.send_replace(state);
    }

    /// `Idle` becomes `Closed` (a closed client that no run is ending).
    pub(crate) fn closed_if_idle(&self) {
        self.state.send_if_modified(|s| {
            let idle = *s == ClientState::Idle;
            if idle {
                self.metrics.set_state(SessionState::Closed);
                *s = ClientState::Closed;
            }
            idle
        });
    }
}

/// The `state` label of `state`.
fn metric_state(state: &ClientState) -> SessionState {
    match state {
        ClientState::Idle => SessionState::Idle,
        ClientState::Connecting { .. } => SessionState::Connecting,
        ClientState::Handshaking { .. } => SessionState::Handshaking,
        ClientState::Ready { .. } => SessionState::Ready,
        ClientState::BackingOff { .. } => SessionState::BackingOff,
        ClientState::Closed => SessionState::Closed,
    }
}
