//! Logs as isp-kit writes them: `tracing` events as JSON lines on stderr with zap's keys
//! (`level`, `ts`, `msg`, then the fields), human-readable lines in dev mode; the level from
//! the local `logLevel` and changeable while running ([`LogLevelHandle`]); a rotated file
//! beside stderr (`logFile`); isp-kit's sampling (`logs.sampling`) and its
//! `app_logs_sampling_status_count` metric.

pub(crate) mod format;
mod gate;
mod level;
mod writer;

pub use level::{LogLevel, LogLevelHandle, UnknownLogLevel};

pub(crate) use format::JsonLines;
pub(crate) use gate::Gate;
pub(crate) use writer::{Output, OutputError};

use crate::load::Environment;
use crate::local::LocalConfig;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;

/// A layer of the module's subscriber (the log output, the span exporter, Sentry).
pub(crate) type BoxLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The target of the line a fatal error writes: its `level` is `fatal`, as zap's.
pub(crate) const FATAL_TARGET: &str = "cluster_bootstrap::fatal";

/// The level a module starts at: `logLevel`, else `debug` in dev mode and `info` otherwise.
pub(crate) fn initial_level(local: Option<&LocalConfig>, env: &Environment) -> LogLevel {
    local.and_then(|l| l.log_level).unwrap_or(if env.is_dev() {
        LogLevel::Debug
    } else {
        LogLevel::Info
    })
}

/// The log output layer: JSON lines (or, in dev mode, human-readable lines) on stderr and the
/// `logFile`, behind the level and sampling gate.
///
/// # Errors
/// When the log file cannot be opened.
pub(crate) fn output_layer(
    local: &LocalConfig,
    env: &Environment,
    level: &LogLevelHandle,
) -> Result<BoxLayer, OutputError> {
    let dev = env.is_dev();
    // isp-kit: no file and no sampling in dev mode.
    let output = if dev || local.log_file.path.is_empty() {
        Output::stderr()
    } else {
        Output::stderr_and_file(&env.resolve(&local.log_file.path), &local.log_file)?
    };
    let sampling = (!dev && local.logs.sampling.enable).then(|| local.logs.sampling.clone());
    let gate = Gate::new(level.clone(), sampling.as_ref());
    Ok(if dev {
        tracing_subscriber::fmt::layer()
            .with_writer(output)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(gate)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .fmt_fields(format::JsonFields)
            .with_writer(output)
            .with_filter(gate)
            .boxed()
    })
}

/// Sets the process's subscriber to `layers` over a registry; `false` (and nothing changes)
/// when one is set already, in a test that runs several modules in one process, say.
pub(crate) fn install(layers: Vec<BoxLayer>) -> bool {
    let subscriber = Registry::default().with(layers);
    tracing::subscriber::set_global_default(subscriber).is_ok()
}
