//! isp-kit's `app_metrics`: how many log entries the sampler kept and dropped, by level.
//!
//! | name | type | labels | help |
//! |---|---|---|---|
//! | `app_logs_sampling_status_count` | counter | level, status | Count of logs statuses(dropped or sampled) |
//!
//! `level` is zap's lowercase name (`debug`, `info`, `warn`, `error`, `fatal`), `status`
//! `sampled` or `dropped`. As Go's `NewLogCounter` does, [`LogCounter::new`] makes the ten
//! series at once.

use crate::{Family, Kind, reg};
use metrics::{Counter, Label};

/// `app_logs_sampling_status_count`.
pub const LOGS_SAMPLING_STATUS_COUNT: &str = "app_logs_sampling_status_count";

/// The families of this module.
pub const FAMILIES: [Family; 1] = [Family {
    name: LOGS_SAMPLING_STATUS_COUNT,
    help: "Count of logs statuses(dropped or sampled)",
    kind: Kind::Counter,
    labels: &["level", "status"],
}];

/// Gives this module's help text to the current recorder.
pub fn describe() {
    FAMILIES[0].describe();
}

/// A log level counted by [`LogCounter`] (isp-kit's well-known levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
    /// `fatal`.
    Fatal,
}

impl LogLevel {
    /// Every level, in Go's order of `NewLogCounter` (fatal first).
    pub const ALL: [Self; 5] = [
        Self::Fatal,
        Self::Error,
        Self::Warn,
        Self::Info,
        Self::Debug,
    ];

    /// zap's name of the level: `debug`, `info`, `warn`, `error`, `fatal`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Fatal => "fatal",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Fatal => 0,
            Self::Error => 1,
            Self::Warn => 2,
            Self::Info => 3,
            Self::Debug => 4,
        }
    }
}

/// Counts the log entries a sampler kept and dropped (Go: `app_metrics.LogCounter`).
#[derive(Debug, Clone)]
pub struct LogCounter {
    sampled: [Counter; 5],
    dropped: [Counter; 5],
}

impl Default for LogCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogCounter {
    /// Describes the family and registers its ten series with the current recorder.
    #[must_use]
    pub fn new() -> Self {
        describe();
        let make = |status: &'static str| {
            LogLevel::ALL.map(|level| {
                reg::counter(
                    LOGS_SAMPLING_STATUS_COUNT,
                    vec![
                        Label::from_static_parts("level", level.as_str()),
                        Label::from_static_parts("status", status),
                    ],
                )
            })
        };
        Self {
            sampled: make("sampled"),
            dropped: make("dropped"),
        }
    }

    /// An entry at `level` was written.
    pub fn sampled(&self, level: LogLevel) {
        self.sampled[level.index()].increment(1);
    }

    /// An entry at `level` was dropped by the sampler.
    pub fn dropped(&self, level: LogLevel) {
        self.dropped[level.index()].increment(1);
    }
}
