//! A Rust module that deploys like a Go isp-kit module, in one call: what isp-kit's
//! `bootstrap` package does for Go, with the same files, keys, endpoints, metric names and
//! log keys, so one manifest, dashboard and alert serve Go and Rust modules alike.
//!
//! - **Local config**: `conf/config_dev.yml` with `APP_MODE=dev`, else `config.yml` beside the
//!   binary, or `APP_CONFIG_PATH`; every key overridable by an environment variable
//!   (`APP_CONFIG_ENV_PREFIX`); isp-kit's keys and defaults ([`LocalConfig`]), and the
//!   module's own section ([`Bootstrap::read`]). A Go module's `config.yml` works unchanged.
//! - **Logs**: JSON lines on stderr with zap's keys (`level`, `ts`, `msg`), human-readable in
//!   dev mode; the level from `logLevel`, changeable while running ([`LogLevelHandle`]);
//!   `logFile` with rotation; `logs.sampling`.
//! - **Infra server** on `infraServerPort`: `/internal/health` ([`Health`], isp-kit's JSON and
//!   statuses), `/internal/metrics` (Prometheus text, isp-kit's metric names),
//!   `/internal/metrics/descriptions`.
//! - **Metrics**: the gRPC and HTTP servers and clients under isp-kit's names
//!   (`grpc_request_duration_ms`, `http_status_code_count`, …), the cluster client's, the
//!   process's (`cluster-metrics`).
//! - **`metricsAutodiscovery`** declared in `MODULE:READY`, as isp-config-service expects it.
//! - **Lifecycle**: [`Bootstrap::run`] runs the infra server, the cluster client (or, with
//!   `CLUSTER_MODE=offline`, the remote config from a file) and the module's gRPC or HTTP
//!   server ([`Module::grpc`], [`Module::http`]); SIGINT or SIGTERM ends it in order (leave
//!   the cluster, drain the calls in flight, stop the servers). `main` returns `Result<(), `[`Fatal`]`>`: any error is logged at `fatal` and the
//!   process exits with status 1.
//! - **Observability**: `observability.tracing` (OpenTelemetry over OTLP/HTTP) and
//!   `observability.sentry` (errors and panics), off unless enabled.
//!
//! # Example
//! ```no_run
//! use cluster_bootstrap::{Bootstrap, Fatal, LogLevel, Module};
//! use cluster_client::TypedConfig;
//! use cluster_grpc::{ApiError, CallContext, Router};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
//! #[serde(rename_all = "camelCase")]
//! struct Remote {
//!     greeting: String,
//!     log_level: Option<LogLevel>,
//! }
//!
//! #[derive(Deserialize)]
//! struct Hello {
//!     name: String,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Fatal> {
//!     let boot = Bootstrap::new(env!("CARGO_PKG_VERSION"))?;
//!     // The remote config's `logLevel` sets the log level, as isp-kit services do.
//!     let remote = TypedConfig::<Remote>::new().inspect(boot.log_level().follow(|c: &Remote| c.log_level));
//!     let config = remote.handle();
//!     let router = Router::new().handle("hello/api/greet", move |_: CallContext, req: Hello| {
//!         let greeting = config.get().map(|c| c.greeting.clone()).unwrap_or_default();
//!         async move { Ok::<_, ApiError>(format!("{greeting}, {}!", req.name)) }
//!     })?;
//!     boot.run(Module::new(remote).grpc(router)).await?;
//!     Ok(())
//! }
//! ```
//!
//! The module's folder, as a Go module's: `conf/config_dev.yml` (or `config.yml` beside the
//! binary in production) and `conf/default_remote_config.json`, the default remote config
//! (absent: `Remote::default()`). A test can give its own environment, with no process-wide
//! variable: [`Bootstrap::with_environment`] and [`Environment::from_vars`].
//!
//! # What differs from Go, and why
//! - A port `0` binds a port the system picks (Go takes `0` as missing): tests and several
//!   modules on one machine; [`Bootstrap::listening`] says which.
//! - `/internal/health` bounds each check by `healthcheckHandlerTimeout` and reports the one
//!   that hung, where Go answers a bare `503 timeout` ([`health`]); the cached answer is
//!   dropped when the cluster session changes state, so a probe sees it at once.
//! - A missing `defaultRemoteConfigPath` file is not an error: the type's default is sent.
//!   A file that does not parse, or that the module's validation refuses, is an error at
//!   start, not at every handshake.
//! - `infraServerIp` (not isp-kit's) keeps the infra server on one interface; absent, every
//!   interface, as Go.
//! - No `/internal/debug/pprof/` (Go's profiler).
//!
//! # Layout
//! - [`load`]: the file and the environment, layered; [`local`]: isp-kit's keys.
//! - [`Bootstrap`]: the setup (logs, metrics, observability, health); [`Module`] and
//!   [`Bootstrap::run`]: the lifecycle.
//! - [`logs`], [`health`], [`infra`]; [`shutdown_signal`] for programs without the bootstrap.

mod address;
mod bootstrap;
pub mod duration;
mod error;
mod guards;
pub mod health;
pub mod infra;
pub mod load;
pub mod local;
pub mod logs;
mod module;
// Public for the crate's own tests of tracing and Sentry, which need processes of their own
// (they set OpenTelemetry's and Sentry's globals); not an API.
#[doc(hidden)]
pub mod observability;
mod shutdown;

pub use bootstrap::{Bootstrap, Listening};
pub use duration::GoDuration;
pub use error::{BootstrapError, BoxError, Fatal};
pub use health::Health;
pub use load::{ConfigError, Environment, LocalSource};
pub use local::LocalConfig;
pub use logs::{LogLevel, LogLevelHandle};
pub use module::{Module, NoRemoteConfig, Transport};
pub use shutdown::{Signal, shutdown_signal};
