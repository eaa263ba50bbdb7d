//! The local config: the keys and defaults of isp-kit's `bootstrap.ClusteredLocalConfig`, so a
//! Go module's `config.yml` works unchanged.
//!
//! Keys are matched without regard to case (`grpcOuterAddress`, `GrpcOuterAddress` and
//! `grpcouteraddress` are one key), as isp-kit's config does; keys this struct does not know
//! are left for the module's own section ([`Bootstrap::read`](crate::Bootstrap::read)).

use crate::duration::GoDuration;
use crate::logs::LogLevel;
use cluster_client::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The default of [`LogFile::max_size_mb`]: 512, isp-kit's.
pub const DEFAULT_LOG_FILE_MAX_SIZE_MB: u64 = 512;
/// The default of [`LogFile::max_backups`]: 4, isp-kit's.
pub const DEFAULT_LOG_FILE_MAX_BACKUPS: usize = 4;
/// The default of [`Sampling::max_per_second`]: 1000, isp-kit's.
pub const DEFAULT_SAMPLING_MAX_PER_SECOND: u64 = 1000;
/// The default of [`Sampling::pass_every`]: 100, isp-kit's.
pub const DEFAULT_SAMPLING_PASS_EVERY: u64 = 100;
/// The default of [`LocalConfig::healthcheck_handler_timeout`]: 1 s, isp-kit's.
pub const DEFAULT_HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// The path `metricsAutodiscovery` declares for Prometheus (`__metrics_path__`).
pub const METRICS_PATH: &str = "/internal/metrics";

/// A module's local config, as isp-kit's `ClusteredLocalConfig` (key names in camelCase, as
/// its Go modules' `config.yml` writes them).
///
/// Required, as in Go: `moduleName`, `grpcInnerAddress.ip`, `grpcInnerAddress.port`,
/// `grpcOuterAddress.port`, and `configServiceAddress` unless the module runs offline
/// (`CLUSTER_MODE=offline`). Everything else has isp-kit's default.
///
/// One difference, for tests and several modules on one machine: a port `0` is a port the
/// system picks. `grpcInnerAddress.port: 0` binds an ephemeral port, and then
/// `grpcOuterAddress.port: 0` declares that port and an absent `infraServerPort` binds an
/// ephemeral one too (Go would take `0` as missing).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LocalConfig {
    /// `moduleName`: the module's name in the cluster.
    pub module_name: String,
    /// `configServiceAddress`: the config service hosts. Required unless offline.
    #[serde(default)]
    pub config_service_address: Option<ConfigServiceAddress>,
    /// `grpcOuterAddress`: the address other modules dial.
    pub grpc_outer_address: GrpcOuterAddress,
    /// `grpcInnerAddress`: the address the module's server listens on.
    pub grpc_inner_address: GrpcInnerAddress,
    /// `infraServerPort`: the port of `/internal/health` and `/internal/metrics`; absent,
    /// `grpcInnerAddress.port + 1`, as in Go.
    #[serde(default)]
    pub infra_server_port: Option<u16>,
    /// `infraServerIp` (ours, not isp-kit's): the interface of the infra server. Absent,
    /// every interface, as Go's `:port`; set it to `127.0.0.1` to keep health and metrics on
    /// the machine.
    #[serde(default)]
    pub infra_server_ip: Option<String>,
    /// `logLevel`: `debug`, `info`, `warn`, `error` (any case; also `trace`, `fatal`).
    /// Absent: `info`, or `debug` in dev mode, as isp-kit.
    #[serde(default)]
    pub log_level: Option<LogLevel>,
    /// `logFile`: a file the logs also go to, with rotation (not in dev mode, as in Go).
    #[serde(default)]
    pub log_file: LogFile,
    /// `logs.sampling`: isp-kit's log sampling (not in dev mode, as in Go).
    #[serde(default)]
    pub logs: Logs,
    /// `remoteConfigReceiverTimeout`: how long applying a remote config may take. Absent or
    /// zero: [`cluster_client::DEFAULT_CONFIG_APPLY_TIMEOUT`].
    #[serde(default)]
    pub remote_config_receiver_timeout: GoDuration,
    /// `defaultRemoteConfigPath`: the default remote config, a JSON file. Absent:
    /// `conf/default_remote_config.json` in dev mode, `default_remote_config.json` beside
    /// the binary otherwise, as in Go.
    #[serde(default)]
    pub default_remote_config_path: Option<String>,
    /// `remoteConfigPath`: the remote config of an offline module, a JSON file. Absent:
    /// `./conf/config.json` in dev mode, `conf/config.json` beside the binary otherwise,
    /// as in Go.
    #[serde(default)]
    pub remote_config_path: Option<String>,
    /// `remoteConfigOverride`: a JSON object merged over every remote config the module
    /// receives (leaf by leaf), as isp-kit's `rc.Config` does.
    #[serde(default)]
    pub remote_config_override: Option<Secret<String>>,
    /// `healthcheckHandlerTimeout`: the bound of each health check. Absent or zero:
    /// [`DEFAULT_HEALTHCHECK_TIMEOUT`] (1 s).
    #[serde(default)]
    pub healthcheck_handler_timeout: GoDuration,
    /// `metricsAutodiscovery`: declare the metrics address to the config service.
    #[serde(default)]
    pub metrics_autodiscovery: MetricsAutodiscoveryConfig,
    /// `observability`: tracing and Sentry.
    #[serde(default)]
    pub observability: Observability,
    /// `migrationsDirPath`: where the module's database migrations are (isp-kit's
    /// `BaseBootstrap.MigrationsDir`); the bootstrap only resolves it, see
    /// [`Bootstrap::migrations_dir`](crate::Bootstrap::migrations_dir).
    #[serde(default)]
    pub migrations_dir_path: Option<String>,
}

impl LocalConfig {
    /// The infra server's port: `infraServerPort`, else `grpcInnerAddress.port + 1`
    /// (`0`, the system's pick, when the inner port is `0`).
    #[must_use]
    pub fn infra_port(&self) -> u16 {
        match (self.infra_server_port, self.grpc_inner_address.port) {
            (Some(port), _) => port,
            (None, 0) => 0,
            (None, inner) => inner.saturating_add(1),
        }
    }

    /// `healthcheckHandlerTimeout`, with its default.
    #[must_use]
    pub fn healthcheck_timeout(&self) -> Duration {
        self.healthcheck_handler_timeout
            .non_zero()
            .unwrap_or(DEFAULT_HEALTHCHECK_TIMEOUT)
    }

    /// `remoteConfigReceiverTimeout`, with its default.
    #[must_use]
    pub fn remote_config_timeout(&self) -> Duration {
        self.remote_config_receiver_timeout
            .non_zero()
            .unwrap_or(cluster_client::DEFAULT_CONFIG_APPLY_TIMEOUT)
    }
}

/// `configServiceAddress`: one or several config service hosts, isp-kit's way: `ip` and
/// `port` are lists separated by `;`, pairwise (`ip: "10.0.0.1;10.0.0.2"`,
/// `port: "9001;9001"`).
///
/// An `ip` may also carry a scheme, `wss://config.local`, for TLS (Go has none).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConfigServiceAddress {
    /// `ip`: hosts, separated by `;`.
    pub ip: String,
    /// `port`: ports, separated by `;`, one for each host.
    pub port: String,
}

impl ConfigServiceAddress {
    /// The hosts as the cluster client takes them (`ip:port`, or `wss://host:port`).
    ///
    /// # Errors
    /// When `ip` and `port` do not have as many entries, or one is empty (the message says
    /// which).
    pub fn hosts(&self) -> Result<Vec<String>, String> {
        let ips: Vec<&str> = self.ip.split(';').map(str::trim).collect();
        let ports: Vec<&str> = self.port.split(';').map(str::trim).collect();
        if ips.len() != ports.len() {
            return Err(format!(
                "{} host(s) in `ip` but {} port(s) in `port`: separate both with `;`, one port for each host",
                ips.len(),
                ports.len()
            ));
        }
        ips.iter()
            .zip(&ports)
            .enumerate()
            .map(|(i, (ip, port))| {
                if ip.is_empty() || port.is_empty() {
                    return Err(format!("entry {} of `ip`/`port` is empty", i + 1));
                }
                // `[::1]` stays as written; a bare IPv6 address gets its brackets.
                if ip.contains("://") || ip.starts_with('[') || !ip.contains(':') {
                    Ok(format!("{ip}:{port}"))
                } else {
                    Ok(format!("[{ip}]:{port}"))
                }
            })
            .collect()
    }
}

/// `grpcOuterAddress`: what other modules dial.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct GrpcOuterAddress {
    /// `ip`: empty means the address this machine reaches the config service from, as
    /// isp-kit resolves it.
    #[serde(default)]
    pub ip: String,
    /// `port`: the port other modules dial (`0`: the port the inner address was bound to).
    pub port: u16,
}

/// `grpcInnerAddress`: what the module's server listens on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct GrpcInnerAddress {
    /// `ip`: the interface (`0.0.0.0` for all).
    pub ip: String,
    /// `port`: the port (`0`: one the system picks).
    pub port: u16,
}

/// `logFile`: a file the logs also go to (not in dev mode), rotated by size.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LogFile {
    /// `path`: the file; empty: no file.
    #[serde(default)]
    pub path: String,
    /// `maxSizeMb`: the size at which the file is rotated (default 512).
    #[serde(default = "default_max_size_mb")]
    pub max_size_mb: u64,
    /// `maxBackups`: rotated files kept (default 4).
    #[serde(default = "default_max_backups")]
    pub max_backups: usize,
    /// `compress`: gzip the rotated files (default true).
    #[serde(default = "default_true")]
    pub compress: bool,
}

impl Default for LogFile {
    fn default() -> Self {
        Self {
            path: String::new(),
            max_size_mb: DEFAULT_LOG_FILE_MAX_SIZE_MB,
            max_backups: DEFAULT_LOG_FILE_MAX_BACKUPS,
            compress: true,
        }
    }
}

/// `logs`: isp-kit's log settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Logs {
    /// `sampling`.
    #[serde(default)]
    pub sampling: Sampling,
}

/// `logs.sampling`: zap's sampler, as isp-kit configures it: in each second, of the lines with
/// the same level and message the first `maxPerSecond` pass, then one in `passEvery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Sampling {
    /// `enable` (default false).
    #[serde(default)]
    pub enable: bool,
    /// `maxPerSecond` (default 1000).
    #[serde(default = "default_max_per_second")]
    pub max_per_second: u64,
    /// `passEvery` (default 100).
    #[serde(default = "default_pass_every")]
    pub pass_every: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            enable: false,
            max_per_second: DEFAULT_SAMPLING_MAX_PER_SECOND,
            pass_every: DEFAULT_SAMPLING_PASS_EVERY,
        }
    }
}

/// `metricsAutodiscovery`: when enabled, the module declares where Prometheus scrapes it,
/// in `MODULE:READY`, and the config service lists it at `/internal/metrics/autodiscovery`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct MetricsAutodiscoveryConfig {
    /// `enable` (default false).
    #[serde(default)]
    pub enable: bool,
    /// `address`: the `host:port` to scrape; empty: the outer IP and the infra server's port.
    #[serde(default)]
    pub address: String,
    /// `additionalLabels`: labels added to `app` and `__metrics_path__`. (Their keys come
    /// lower-cased, as isp-kit's config lower-cases every key.)
    #[serde(default)]
    pub additional_labels: BTreeMap<String, String>,
}

/// `observability`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Observability {
    /// `sentry`.
    #[serde(default)]
    pub sentry: SentryConfig,
    /// `tracing`.
    #[serde(default)]
    pub tracing: TracingConfig,
}

/// `observability.sentry`: errors and panics to Sentry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SentryConfig {
    /// `enable` (default false).
    #[serde(default)]
    pub enable: bool,
    /// `dsn`: required when enabled.
    #[serde(default)]
    pub dsn: Secret<String>,
    /// `environment`.
    #[serde(default)]
    pub environment: String,
    /// `tags`: added to isp-kit's (`version`, `instanceId`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `observability.tracing`: spans to an OpenTelemetry collector over OTLP/HTTP.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TracingConfig {
    /// `enable` (default false).
    #[serde(default)]
    pub enable: bool,
    /// `address`: the collector's `host:port` (OTLP/HTTP, plain HTTP as in Go, e.g.
    /// `localhost:4318`); an address with `http://` or `https://` is taken as written.
    #[serde(default)]
    pub address: String,
    /// `environment`: `deployment.environment`.
    #[serde(default)]
    pub environment: String,
    /// `attributes`: resource attributes added to isp-kit's.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_max_size_mb() -> u64 {
    DEFAULT_LOG_FILE_MAX_SIZE_MB
}

fn default_max_backups() -> usize {
    DEFAULT_LOG_FILE_MAX_BACKUPS
}

fn default_true() -> bool {
    true
}

fn default_max_per_second() -> u64 {
    DEFAULT_SAMPLING_MAX_PER_SECOND
}

fn default_pass_every() -> u64 {
    DEFAULT_SAMPLING_PASS_EVERY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(ip: &str, port: &str) -> ConfigServiceAddress {
        ConfigServiceAddress {
            ip: ip.into(),
            port: port.into(),
        }
    }

    #[test]
    fn config_service_hosts_pair_up() {
        assert_eq!(
            address("10.0.0.1;10.0.0.2", "9001;9002").hosts().unwrap(),
            ["10.0.0.1:9001", "10.0.0.2:9002"]
        );
        assert_eq!(
            address("wss://config.local", "443").hosts().unwrap(),
            ["wss://config.local:443"]
        );
        assert_eq!(address("::1", "9001").hosts().unwrap(), ["[::1]:9001"]);
        let err = address("a;b", "9001").hosts().unwrap_err();
        assert!(
            err.contains("2 host(s)") && err.contains("1 port(s)"),
            "{err}"
        );
        assert!(
            address("a;", "1;2")
                .hosts()
                .unwrap_err()
                .contains("entry 2")
        );
    }
}
