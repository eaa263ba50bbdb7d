//! [`LogLevel`] and the handle that changes it while the module runs.

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// A log level as isp-kit's config names it (`debug`, `info`, `warn`, `error`, `fatal`; any
/// case), plus `trace`, which Rust's `tracing` has and zap has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LogLevel {
    /// `trace`: everything.
    Trace,
    /// `debug`.
    Debug,
    /// `info`: the default (outside dev mode).
    Info,
    /// `warn` (also `warning`).
    Warn,
    /// `error`.
    Error,
    /// `fatal` (also zap's `dpanic` and `panic`): only what ends the process; `tracing`
    /// has no such level, so errors are kept as well.
    Fatal,
}

impl LogLevel {
    /// The name isp-kit writes in a log line's `level` (`debug`, `info`, `warn`, `error`,
    /// `fatal`; `trace` for ours).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Fatal => "fatal",
        }
    }

    /// The most verbose `tracing` level this lets through.
    #[must_use]
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            Self::Trace => tracing::Level::TRACE,
            Self::Debug => tracing::Level::DEBUG,
            Self::Info => tracing::Level::INFO,
            Self::Warn => tracing::Level::WARN,
            Self::Error | Self::Fatal => tracing::Level::ERROR,
        }
    }
}

impl LogLevel {
    const ALL: [Self; 6] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
        Self::Fatal,
    ];

    /// Whether an event at `level` passes when this is the module's level.
    #[must_use]
    pub fn allows(self, level: &tracing::Level) -> bool {
        *level <= self.tracing_level()
    }

    fn from_index(index: u8) -> Self {
        Self::ALL
            .get(usize::from(index))
            .copied()
            .unwrap_or(Self::Info)
    }

    fn index(self) -> u8 {
        // Six variants: the index always fits.
        Self::ALL.iter().position(|l| *l == self).unwrap_or(2) as u8
    }
}

/// The module's log level, shared by its log output and whoever changes it: isp-kit
/// services call `SetLevel` when their remote config carries a `logLevel`; here
/// [`LogLevelHandle::set`], or [`LogLevelHandle::follow`] in one line (see the crate's
/// example). Cloning gives another handle on the same level.
///
/// # Examples
/// ```
/// use cluster_bootstrap::{LogLevel, LogLevelHandle};
///
/// let level = LogLevelHandle::new(LogLevel::Info);
/// level.set(LogLevel::Debug);
/// assert_eq!(level.get(), LogLevel::Debug);
/// assert!(level.get().allows(&tracing::Level::DEBUG));
/// ```
#[derive(Debug, Clone)]
pub struct LogLevelHandle {
    level: Arc<AtomicU8>,
}

impl LogLevelHandle {
    /// A handle starting at `level`.
    #[must_use]
    pub fn new(level: LogLevel) -> Self {
        Self {
            level: Arc::new(AtomicU8::new(level.index())),
        }
    }

    /// The current level.
    #[must_use]
    pub fn get(&self) -> LogLevel {
        LogLevel::from_index(self.level.load(Ordering::Relaxed))
    }

    /// Changes the level; the next event sees it. Logged at `warn` when it changes (so the
    /// change shows at `warn` too).
    pub fn set(&self, level: LogLevel) {
        let old = LogLevel::from_index(self.level.swap(level.index(), Ordering::Relaxed));
        if old != level {
            // The log output caches which call sites it wants: ask again.
            tracing::callsite::rebuild_interest_cache();
            tracing::warn!(from = %old, to = %level, "log level changed");
        }
    }

    /// A callback for [`TypedConfig::inspect`](cluster_client::TypedConfig::inspect) that sets
    /// the level from each accepted remote config, when `level_of` finds one in it (a
    /// config without `logLevel` leaves the level as it is), as isp-kit services do:
    ///
    /// ```
    /// # use cluster_bootstrap::{LogLevel, LogLevelHandle};
    /// # use cluster_client::TypedConfig;
    /// #[derive(serde::Deserialize)]
    /// #[serde(rename_all = "camelCase")]
    /// struct Remote { log_level: Option<LogLevel> }
    ///
    /// let levels = LogLevelHandle::new(LogLevel::Info);
    /// let remote = TypedConfig::<Remote>::new().inspect(levels.follow(|c: &Remote| c.log_level));
    /// # drop(remote);
    /// ```
    pub fn follow<T, F>(&self, level_of: F) -> impl Fn(&T) + Send + Sync + 'static
    where
        F: Fn(&T) -> Option<LogLevel> + Send + Sync + 'static,
    {
        let handle = self.clone();
        move |config: &T| {
            if let Some(level) = level_of(config) {
                handle.set(level);
            }
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no log level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLogLevel;

impl fmt::Display for UnknownLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a log level (trace, debug, info, warn, error, fatal)")
    }
}

impl std::error::Error for UnknownLogLevel {}

impl FromStr for LogLevel {
    type Err = UnknownLogLevel;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" | "" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            "fatal" | "dpanic" | "panic" => Self::Fatal,
            _ => return Err(UnknownLogLevel),
        })
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LevelVisitor;
        impl serde::de::Visitor<'_> for LevelVisitor {
            type Value = LogLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a log level (trace, debug, info, warn, error, fatal)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<LogLevel, E> {
                text.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Other("a text"), &self))
            }
        }
        deserializer.deserialize_str(LevelVisitor)
    }
}

impl serde::Serialize for LogLevel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for LogLevel {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LogLevel".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["trace", "debug", "info", "warn", "error", "fatal"]
        })
    }
}
