//! [`BootstrapError`] and [`Fatal`], what `main` returns.

use crate::load::ConfigError;
use crate::logs::FATAL_TARGET;
use std::fmt;
use std::sync::OnceLock;

/// A boxed error, as the receivers and checks return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a module could not start, or stopped on a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The local config file or a key in it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A setting that reads but cannot be used (hosts that do not pair up, say).
    #[error("local config: {key}: {message}")]
    Setting {
        /// The key (`configServiceAddress`).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The log file cannot be opened.
    #[error(transparent)]
    Logs(#[from] crate::logs::OutputError),
    /// Tracing or Sentry could not be set up.
    #[error("observability: {0}")]
    Observability(String),
    /// Another metrics recorder is installed in this process.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A listener could not be bound.
    #[error("bind {what} {address}: {source}")]
    Bind {
        /// `grpcInnerAddress` or `infraServerPort`.
        what: &'static str,
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The address other modules dial could not be found (`grpcOuterAddress.ip` is empty,
    /// and no route to the config service tells this machine's address).
    #[error(
        "grpcOuterAddress.ip is empty and this machine's address towards {host} is unknown: {source}"
    )]
    OuterAddress {
        /// The config service host it was resolved against.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The default remote config (`defaultRemoteConfigPath`) cannot be read or is refused.
    #[error("default remote config {path}: {message}")]
    DefaultRemoteConfig {
        /// The file.
        path: String,
        /// What is wrong (never the config's values).
        message: String,
    },
    /// The cluster client could not be built or stopped on an error.
    #[error("cluster client: {0}")]
    Client(#[from] cluster_client::ClientError),
    /// The offline client could not apply the config file.
    #[error("offline config: {0}")]
    Offline(#[from] cluster_client::OfflineError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[source] cluster_grpc::ServeError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[source] std::io::Error),
    /// The infra server failed.
    #[error("infra server: {0}")]
    Infra(#[source] std::io::Error),
}

/// What a module's `main` returns: any error, which on its way out is logged at `fatal`
/// (zap's level, in the JSON lines), sent to Sentry when enabled, and then printed by Rust
/// (`Error: …` with its causes) before the process exits with status 1, as isp-kit's
/// `boot.Fatal` does for Go modules.
///
/// ```no_run
/// # async fn demo() -> Result<(), cluster_bootstrap::Fatal> {
/// let boot = cluster_bootstrap::Bootstrap::new("1.0.0")?; // a bad config file ends here
/// # drop(boot); Ok(()) }
/// ```
pub struct Fatal(BoxError);

impl Fatal {
    /// The error.
    #[must_use]
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E: Into<BoxError>> From<E> for Fatal {
    fn from(error: E) -> Self {
        let error = error.into();
        let text = chain(&*error);
        tracing::error!(target: FATAL_TARGET, "{text}");
        if let Some(report) = FATAL_REPORT.get() {
            report(&text);
        }
        Self(error)
    }
}

/// Who else hears of a fatal error (Sentry, when the first bootstrap of the process has it).
static FATAL_REPORT: OnceLock<FatalReport> = OnceLock::new();

type FatalReport = Box<dyn Fn(&str) + Send + Sync>;

/// Sends fatal errors to `report` as well as to the log (the first call in a process wins).
pub(crate) fn report_fatal_to(report: impl Fn(&str) + Send + Sync + 'static) {
    let _ = FATAL_REPORT.set(Box::new(report));
}

/// The error and its causes, `: `-separated (a cause already in its error's text is not
/// repeated).
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl fmt::Debug for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(&*self.0))
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(&*self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_prints_the_chain_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let err = BootstrapError::Bind {
            what: "infraServerPort",
            address: "127.0.0.1:9554".into(),
            source: io,
        };
        let fatal = Fatal::from(err);
        assert_eq!(
            format!("{fatal:?}"),
            "bind infraServerPort 127.0.0.1:9554: address in use"
        );
    }
}
