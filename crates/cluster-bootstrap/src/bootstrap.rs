//! [`Bootstrap`]: the module's setup, before it runs.

use crate::address;
use crate::error::{BootstrapError, report_fatal_to};
use crate::guards::Guards;
use crate::health::Health;
use crate::load::{ConfigError, Environment, LocalSource};
use crate::local::LocalConfig;
use crate::logs::{self, LogLevelHandle};
use crate::observability::Identity;
use cluster_client::ClientState;
use cluster_metrics::prometheus::Prometheus;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// A module set up as isp-kit's `bootstrap.New` sets up a Go module: its local config read
/// (file and environment), its logs on stderr (and `logFile`), its metrics recorder, tracing
/// and Sentry when the config enables them, and its health checks. Then
/// [`Bootstrap::run`] runs the module: the infra server, the cluster client (or the offline
/// one) and the module's gRPC or HTTP server, until SIGINT or SIGTERM.
///
/// See the [crate docs](crate) for a whole module.
pub struct Bootstrap {
    pub(crate) env: Environment,
    pub(crate) source: LocalSource,
    pub(crate) local: LocalConfig,
    pub(crate) module_version: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) outer_ip: String,
    pub(crate) level: LogLevelHandle,
    pub(crate) logs_installed: bool,
    pub(crate) health: Health,
    pub(crate) metrics: &'static Prometheus,
    pub(crate) guards: Guards,
    pub(crate) state: tokio::sync::watch::Sender<ClientState>,
    pub(crate) listening: tokio::sync::watch::Sender<Option<Listening>>,
}

/// Where a running module listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listening {
    /// The module's server on `grpcInnerAddress`: gRPC for a `grpc` module, HTTP for an
    /// `http` one (isp-kit serves both there); `None` for an `empty` module.
    pub server: Option<std::net::SocketAddr>,
    /// The infra server (`infraServerPort`).
    pub infra: std::net::SocketAddr,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("config", &self.source.path())
            .field("module_name", &self.local.module_name)
            .field("module_version", &self.module_version)
            .field("dev", &self.env.is_dev())
            .field("offline", &self.env.is_offline())
            .field("level", &self.level.get())
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// Sets the module up from this process's environment (see [`Bootstrap::with_environment`]).
    ///
    /// # Errors
    /// See [`Bootstrap::with_environment`].
    pub fn new(module_version: impl Into<String>) -> Result<Self, BootstrapError> {
        Self::with_environment(module_version, Environment::from_process())
    }

    /// Sets the module up from `env`: reads the local config ([`Environment::config_path`],
    /// the environment over it), installs the process's `tracing` subscriber (JSON lines on
    /// stderr, human-readable in dev mode; if a subscriber is installed already, as in a test
    /// running several modules, it is kept and this module's level handle changes nothing),
    /// the process's metrics recorder (shared by every bootstrap of the process, as isp-kit's
    /// default registry), tracing and Sentry when enabled.
    ///
    /// # Errors
    /// [`BootstrapError::Config`] for the file or a key; [`BootstrapError::Setting`] when
    /// `configServiceAddress` is missing (unless offline) or its hosts do not pair up;
    /// [`BootstrapError::OuterAddress`]; [`BootstrapError::Logs`] for the log file;
    /// [`BootstrapError::Metrics`]; [`BootstrapError::Observability`].
    pub fn with_environment(
        module_version: impl Into<String>,
        env: Environment,
    ) -> Result<Self, BootstrapError> {
        let module_version = module_version.into();
        let source = LocalSource::load(&env)?;
        let local: LocalConfig = source.read()?;
        let hosts = if env.is_offline() {
            Vec::new()
        } else {
            let address = local
                .config_service_address
                .as_ref()
                .ok_or(BootstrapError::Setting {
                    key: "configServiceAddress",
                    message: "missing (required unless CLUSTER_MODE=offline): \
                                  configServiceAddress: {ip: 10.0.0.1, port: 9001}"
                        .into(),
                })?;
            address.hosts().map_err(|message| BootstrapError::Setting {
                key: "configServiceAddress",
                message,
            })?
        };
        let outer_ip = if env.is_offline() {
            local.grpc_outer_address.ip.clone()
        } else {
            address::outer_ip(&local, hosts.first().map(String::as_str)).map_err(|source| {
                BootstrapError::OuterAddress {
                    host: hosts.first().cloned().unwrap_or_default(),
                    source,
                }
            })?
        };
        let metrics = cluster_metrics::prometheus::install()
            .map_err(|err| BootstrapError::Metrics(err.to_string()))?;
        let level = LogLevelHandle::new(logs::initial_level(Some(&local), &env));
        let identity = Identity {
            module_name: local.module_name.clone(),
            module_version: module_version.clone(),
            instance_id: outer_ip.clone(),
        };
        let mut layers = vec![logs::output_layer(&local, &env, &level)?];
        let guards = Guards::setup(&local.observability, &identity, &mut layers)
            .map_err(BootstrapError::Observability)?;
        let logs_installed = logs::install(layers);
        if let Some(report) = guards.fatal_reporter() {
            report_fatal_to(report);
        }
        let health = Health::new(local.healthcheck_timeout());
        tracing::info!(
            config = %source.path().display(),
            module_name = %local.module_name,
            module_version = %module_version,
            dev = env.is_dev(),
            offline = env.is_offline(),
            level = %level.get(),
            "local config loaded"
        );
        if !logs_installed {
            tracing::warn!(
                "a tracing subscriber was installed before the bootstrap: it is kept, and the \
                 module's logLevel, logFile and sampling do not apply"
            );
        }
        Ok(Self {
            env,
            source,
            local,
            module_version,
            hosts,
            outer_ip,
            level,
            logs_installed,
            health,
            metrics,
            guards,
            state: tokio::sync::watch::channel(ClientState::Idle).0,
            listening: tokio::sync::watch::channel(None).0,
        })
    }

    /// Where the module listens, once [`Bootstrap::run`] has bound its servers (`None`
    /// before): the ports the system picked for a `0`, say.
    #[must_use]
    pub fn listening(&self) -> tokio::sync::watch::Receiver<Option<Listening>> {
        self.listening.subscribe()
    }

    /// The cluster client's state while [`Bootstrap::run`] runs (`Idle` before, `Closed`
    /// after; offline, `Idle` throughout): take it before `run`, to wait until the module is
    /// ready, say.
    #[must_use]
    pub fn cluster_state(&self) -> tokio::sync::watch::Receiver<ClientState> {
        self.state.subscribe()
    }

    /// The local config (isp-kit's keys).
    #[must_use]
    pub fn local_config(&self) -> &LocalConfig {
        &self.local
    }

    /// Reads the module's own section of the local config: the whole file (and the
    /// environment over it) as `T`, fields matched to keys without regard to case, keys `T`
    /// does not have ignored (isp-kit modules read theirs with `boot.App.Config().Read`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`]: a key missing, or a value of the wrong type.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.source.read()
    }

    /// The environment the module was set up from.
    #[must_use]
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The log level, to change it while the module runs (see
    /// [`LogLevelHandle::follow`] for a remote config's `logLevel`).
    #[must_use]
    pub fn log_level(&self) -> &LogLevelHandle {
        &self.level
    }

    /// Whether the bootstrap's `tracing` subscriber is the process's (false when one was
    /// installed before it).
    #[must_use]
    pub fn logs_installed(&self) -> bool {
        self.logs_installed
    }

    /// The health checks of `/internal/health`; register the module's own here.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The process's metrics (what `/internal/metrics` renders).
    #[must_use]
    pub fn metrics(&self) -> &'static Prometheus {
        self.metrics
    }

    /// The module's version, as given.
    #[must_use]
    pub fn module_version(&self) -> &str {
        &self.module_version
    }

    /// The config service hosts (`configServiceAddress`), as the client dials them; empty
    /// offline.
    #[must_use]
    pub fn config_service_hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The IP other modules dial (`grpcOuterAddress.ip`, else the one resolved towards the
    /// config service).
    #[must_use]
    pub fn outer_ip(&self) -> &str {
        &self.outer_ip
    }

    /// The module's database migrations folder, as isp-kit resolves it: `migrationsDirPath`,
    /// else `./migrations` in dev mode and `migrations` beside the binary otherwise.
    #[must_use]
    pub fn migrations_dir(&self) -> PathBuf {
        self.env.file(
            self.local.migrations_dir_path.as_deref(),
            "migrations",
            "migrations",
        )
    }

    /// The default remote config file: `defaultRemoteConfigPath`, else
    /// `conf/default_remote_config.json` in dev mode and `default_remote_config.json` beside
    /// the binary otherwise.
    #[must_use]
    pub fn default_remote_config_path(&self) -> PathBuf {
        self.env.file(
            self.local.default_remote_config_path.as_deref(),
            "conf/default_remote_config.json",
            "default_remote_config.json",
        )
    }

    /// The remote config of an offline module: `remoteConfigPath`, else `conf/config.json`
    /// (in dev mode from the current folder, otherwise beside the binary).
    #[must_use]
    pub fn remote_config_path(&self) -> PathBuf {
        self.env.file(
            self.local.remote_config_path.as_deref(),
            "conf/config.json",
            "conf/config.json",
        )
    }
}
