//! The cluster client's own metrics (no Go counterpart), in isp-kit's style: subsystem
//! `cluster`, no namespace.
//!
//! | name | type | labels | help |
//! |---|---|---|---|
//! | `cluster_session_state` | gauge | state | The state of the config service session (1 for the current state, 0 for the others) |
//! | `cluster_sessions_started_count` | counter | | Counter of config service sessions started (dials) |
//! | `cluster_sessions_failed_count` | counter | cause | Counter of config service sessions ended by a failure, by cause |
//! | `cluster_configs_applied_count` | counter | | Counter of remote configs applied |
//! | `cluster_configs_refused_count` | counter | | Counter of remote configs refused by the module |
//! | `cluster_time_to_ready_ms` | summary | | The latency from dialing the config service to MODULE:READY acknowledged |
//! | `cluster_config_version` | gauge | | The sequence number of the remote config the module runs on (0: none yet) |
//!
//! `state` is one of [`SessionState`]'s six labels, `cause` one of [`FailureCause`]'s eight:
//! the label sets are bounded, and every series exists from the start (at 0), so that
//! `increase(…[5m])` and alerts see the first failure.

use crate::{Family, Kind, milliseconds, reg};
use metrics::{Counter, Gauge, Histogram, Key, Label};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// `cluster_session_state`.
pub const SESSION_STATE: &str = "cluster_session_state";
/// `cluster_sessions_started_count`.
pub const SESSIONS_STARTED_COUNT: &str = "cluster_sessions_started_count";
/// `cluster_sessions_failed_count`.
pub const SESSIONS_FAILED_COUNT: &str = "cluster_sessions_failed_count";
/// `cluster_configs_applied_count`.
pub const CONFIGS_APPLIED_COUNT: &str = "cluster_configs_applied_count";
/// `cluster_configs_refused_count`.
pub const CONFIGS_REFUSED_COUNT: &str = "cluster_configs_refused_count";
/// `cluster_time_to_ready_ms`.
pub const TIME_TO_READY_MS: &str = "cluster_time_to_ready_ms";
/// `cluster_config_version`.
pub const CONFIG_VERSION: &str = "cluster_config_version";

/// The families of this module.
pub const FAMILIES: [Family; 7] = [
    Family {
        name: SESSION_STATE,
        help: "The state of the config service session (1 for the current state, 0 for the others)",
        kind: Kind::Gauge,
        labels: &["state"],
    },
    Family {
        name: SESSIONS_STARTED_COUNT,
        help: "Counter of config service sessions started (dials)",
        kind: Kind::Counter,
        labels: &[],
    },
    Family {
        name: SESSIONS_FAILED_COUNT,
        help: "Counter of config service sessions ended by a failure, by cause",
        kind: Kind::Counter,
        labels: &["cause"],
    },
    Family {
        name: CONFIGS_APPLIED_COUNT,
        help: "Counter of remote configs applied",
        kind: Kind::Counter,
        labels: &[],
    },
    Family {
        name: CONFIGS_REFUSED_COUNT,
        help: "Counter of remote configs refused by the module",
        kind: Kind::Counter,
        labels: &[],
    },
    Family {
        name: TIME_TO_READY_MS,
        help: "The latency from dialing the config service to MODULE:READY acknowledged",
        kind: Kind::Summary,
        labels: &[],
    },
    Family {
        name: CONFIG_VERSION,
        help: "The sequence number of the remote config the module runs on (0: none yet)",
        kind: Kind::Gauge,
        labels: &[],
    },
];

/// Gives this module's help texts to the current recorder.
pub fn describe() {
    FAMILIES.iter().for_each(Family::describe);
}

/// The session's state, as the `state` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// No run of the client is going on: `idle`.
    Idle,
    /// Dialing: `connecting`.
    Connecting,
    /// Registering the module: `handshaking`.
    Handshaking,
    /// The module is ready: `ready`.
    Ready,
    /// Waiting before the next session: `backing_off`.
    BackingOff,
    /// The client was closed: `closed`.
    Closed,
}

impl SessionState {
    /// Every state, in the order above.
    pub const ALL: [Self; 6] = [
        Self::Idle,
        Self::Connecting,
        Self::Handshaking,
        Self::Ready,
        Self::BackingOff,
        Self::Closed,
    ];

    /// The label value: `idle`, `connecting`, `handshaking`, `ready`, `backing_off`, `closed`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Handshaking => "handshaking",
            Self::Ready => "ready",
            Self::BackingOff => "backing_off",
            Self::Closed => "closed",
        }
    }
}

/// Why a session failed, as the `cause` label says it: [`FailureCause::Connect`] for a dial
/// that failed, and the kinds of the session's errors (`SessionError::kind` in
/// `cluster-proto`) for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCause {
    /// The dial failed: `connect`.
    Connect,
    /// An emit was not acknowledged in time: `ack_timeout`.
    AckTimeout,
    /// The config service refused an emit: `ack_rejected`.
    AckRejected,
    /// A first event (config, routes, addresses) did not come in time: `wait_timeout`.
    WaitTimeout,
    /// The config service sent an error event during the handshake: `server_error`.
    ServerError,
    /// The module refused a first event (its initial config, say): `rejected`.
    Rejected,
    /// Pongs stopped coming: `pongs_missed`.
    PongsMissed,
    /// The connection ended: `disconnected`.
    Disconnected,
}

impl FailureCause {
    /// Every cause, in the order above.
    pub const ALL: [Self; 8] = [
        Self::Connect,
        Self::AckTimeout,
        Self::AckRejected,
        Self::WaitTimeout,
        Self::ServerError,
        Self::Rejected,
        Self::PongsMissed,
        Self::Disconnected,
    ];

    /// The label value (`connect`, `ack_timeout`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::AckTimeout => "ack_timeout",
            Self::AckRejected => "ack_rejected",
            Self::WaitTimeout => "wait_timeout",
            Self::ServerError => "server_error",
            Self::Rejected => "rejected",
            Self::PongsMissed => "pongs_missed",
            Self::Disconnected => "disconnected",
        }
    }

    /// The cause whose label is `label`.
    ///
    /// ```
    /// use cluster_metrics::cluster::FailureCause;
    /// assert_eq!(FailureCause::from_label("pongs_missed"), Some(FailureCause::PongsMissed));
    /// assert_eq!(FailureCause::from_label("other"), None);
    /// ```
    #[must_use]
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == label)
    }
}

/// The cluster client's metrics. The gauges and counters are registered when it is made (so
/// every series exists from the start), the time-to-ready summary at the first ready session.
///
/// One client per process, as in isp-kit: two clients recording through the same recorder
/// share the series.
pub struct ClusterMetrics {
    states: [Gauge; SessionState::ALL.len()],
    /// The state whose gauge is 1; the lock keeps the two writes of a change together.
    current: Mutex<SessionState>,
    started: Counter,
    failed: [Counter; FailureCause::ALL.len()],
    applied: Counter,
    refused: Counter,
    time_to_ready: OnceLock<Histogram>,
    version: Gauge,
    versions: AtomicU64,
}

impl std::fmt::Debug for ClusterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMetrics")
            .field(
                "state",
                &*self.current.lock().unwrap_or_else(PoisonError::into_inner),
            )
            .field("config_version", &self.config_version())
            .finish_non_exhaustive()
    }
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterMetrics {
    /// Describes the families and registers the handles with the current recorder; the state
    /// is `idle`, the config version 0.
    #[must_use]
    pub fn new() -> Self {
        // Once a process: the help texts do not change, and the recorder of
        // `prometheus` supplies them at registration anyway (a client is built on the way
        // to ready: this is part of that path).
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(describe);
        // Static keys: registering them builds nothing (a client is built on the way to
        // ready).
        let states = SessionState::ALL.map(|s| {
            reg::gauge_key(&Key::from_static_parts(
                SESSION_STATE,
                &STATE_LABELS[index(s)],
            ))
        });
        states[0].set(1.0);
        for gauge in &states[1..] {
            gauge.set(0.0);
        }
        let failed = FailureCause::ALL.map(|c| {
            // Registered, the series shows 0 until the first failure (no `absolute(0)`:
            // another client of the process may have counted already).
            reg::counter_key(&Key::from_static_parts(
                SESSIONS_FAILED_COUNT,
                &CAUSE_LABELS[cause_index(c)],
            ))
        });
        let counter = |name| reg::counter_key(&Key::from_static_name(name));
        let version = reg::gauge_key(&Key::from_static_name(CONFIG_VERSION));
        version.set(0.0);
        Self {
            states,
            current: Mutex::new(SessionState::Idle),
            started: counter(SESSIONS_STARTED_COUNT),
            failed,
            applied: counter(CONFIGS_APPLIED_COUNT),
            refused: counter(CONFIGS_REFUSED_COUNT),
            time_to_ready: OnceLock::new(),
            version,
            versions: AtomicU64::new(0),
        }
    }

    /// The session is now in `state`: its gauge becomes 1, the previous one's 0.
    pub fn set_state(&self, state: SessionState) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if *current != state {
            self.states[index(*current)].set(0.0);
            self.states[index(state)].set(1.0);
            *current = state;
        }
    }

    /// A session starts: the client dials a config service host.
    pub fn session_started(&self) {
        self.started.increment(1);
    }

    /// A session failed (or its dial did).
    pub fn session_failed(&self, cause: FailureCause) {
        let at = FailureCause::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap_or_default();
        self.failed[at].increment(1);
    }

    /// A session became ready `elapsed` after its dial started (`cluster_time_to_ready_ms`).
    pub fn session_ready(&self, elapsed: Duration) {
        self.time_to_ready
            .get_or_init(|| reg::histogram(TIME_TO_READY_MS, Vec::new()))
            .record(milliseconds(elapsed));
    }

    /// The module applied a remote config: the version becomes the next sequence number
    /// (1 for the first); returns it.
    pub fn config_applied(&self) -> u64 {
        self.applied.increment(1);
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        // Exact below 2^53 configs.
        #[allow(clippy::cast_precision_loss)]
        self.version.set(version as f64);
        version
    }

    /// The module refused a remote config (it keeps running on the previous one).
    pub fn config_refused(&self) {
        self.refused.increment(1);
    }

    /// The sequence number of the config applied last (0: none yet).
    #[must_use]
    pub fn config_version(&self) -> u64 {
        self.versions.load(Ordering::Relaxed)
    }
}

/// The `state` label of each state, in the order of [`SessionState::ALL`].
static STATE_LABELS: [[Label; 1]; 6] = {
    const fn label(i: usize) -> [Label; 1] {
        [Label::from_static_parts(
            "state",
            SessionState::ALL[i].as_str(),
        )]
    }
    [label(0), label(1), label(2), label(3), label(4), label(5)]
};

/// The `cause` label of each cause, in the order of [`FailureCause::ALL`].
static CAUSE_LABELS: [[Label; 1]; 8] = {
    const fn label(i: usize) -> [Label; 1] {
        [Label::from_static_parts(
            "cause",
            FailureCause::ALL[i].as_str(),
        )]
    }
    [
        label(0),
        label(1),
        label(2),
        label(3),
        label(4),
        label(5),
        label(6),
        label(7),
    ]
};

fn cause_index(cause: FailureCause) -> usize {
    FailureCause::ALL
        .iter()
        .position(|c| *c == cause)
        .unwrap_or_default()
}

fn index(state: SessionState) -> usize {
    SessionState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_documented_ones() {
        let states: Vec<&str> = SessionState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            states,
            [
                "idle",
                "connecting",
                "handshaking",
                "ready",
                "backing_off",
                "closed"
            ]
        );
        for cause in FailureCause::ALL {
            assert_eq!(FailureCause::from_label(cause.as_str()), Some(cause));
        }
    }

    #[test]
    fn versions_count_up_from_one() {
        let metrics = ClusterMetrics::new();
        assert_eq!(metrics.config_version(), 0);
        assert_eq!(metrics.config_applied(), 1);
        metrics.config_refused();
        assert_eq!(metrics.config_applied(), 2);
        assert_eq!(metrics.config_version(), 2);
    }
}
