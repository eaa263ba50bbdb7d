//! Logs as isp-kit writes them (work in progress).

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

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
