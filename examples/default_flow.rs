//! The default usage flow of isp-kit's Go `cluster` package (its README, "Default usage
//! flow"), ported one for one.
//!
//! ```text
//! cargo run -p cluster-testkit --bin fake-config-service       # in another terminal
//! cargo run --example default_flow -- --hosts 127.0.0.1:9001    # or a real isp-config-service
//! ```
//!
//! | Go (README) | here |
//! |---|---|
//! | `cluster.ModuleInfo{ModuleName: "noop-service", Version: "1.0.0", EndpointsResolver: cluster.Endpoints(…)}` | [`module_info`] |
//! | `defaultRemoteConfig`, `rc.GenerateConfigSchema(…)`, `cluster.ConfigData{…}` | [`RemoteConfig`] (`Default` + `JsonSchema`), `config_data_for::<RemoteConfig>` |
//! | `remoteConfigUpdater.ReceiveConfig(ctx, []byte)` | [`RemoteConfigUpdater`]: `RemoteConfigReceiver::receive_config` |
//! | `routesHandler.ReceiveRoutes(ctx, cluster.RoutingConfig)` | [`RoutesHandler`]: `RoutesReceiver::receive_routes` |
//! | `cluster.NewClient(moduleInfo, configData, hosts, timeout, logger)` | `Client::new` + `remote_config_receiver_with_timeout` |
//! | `client.Default()` (a gRPC client, a `HostsUpgrader`) | `RoundRobin` (a `HostsUpgrader`): `auth_service.next()` is the address to call |
//! | `cluster.NewEventHandler().RemoteConfigReceiver(…).RoutesReceiver(…).RequireModule("auth-service", …)` | `EventHandler::new().remote_config_receiver_with_timeout(…).routes_receiver(…).require_module("auth-service", …)` |
//! | `application.AddRunners(… clusterCli.Run(ctx, eventHandler) …)` | a task running `client.run(handler)` |
//! | `application.AddClosers(clusterCli, authServiceCli)`, `shutdown.On(…)` | [`Application::run_until`]: SIGINT/SIGTERM, then `client.close()` |
//!
//! Logs go to stderr (`RUST_LOG`, default `info`).

use cluster_client::typed::config_data_for;
use cluster_client::{
    AddressConfiguration, BoxError, Bytes, Client, ClientError, EndpointDescriptor, EventHandler,
    ModuleInfo, RemoteConfigReceiver, RoundRobin, RoutesReceiver, RoutingConfig, async_trait,
};
use cluster_examples::Signal;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const USAGE: &str = "\
default_flow: isp-kit's default cluster usage flow, in Rust

USAGE:
    cargo run --example default_flow -- [--hosts H[,H]]

    --hosts H[,H]   config service hosts: ip:port (WebSocket), ws://… or wss://…
                    (default 127.0.0.1:9001, where fake-config-service listens)
    -h, --help      print this help

It runs until SIGINT or SIGTERM, then closes its session and exits 0.
";

/// The module name (Go: `ModuleName: "noop-service"`).
pub(crate) const MODULE_NAME: &str = "noop-service";
/// The module this one calls (Go: `RequireModule("auth-service", authServiceCli)`).
pub(crate) const AUTH_SERVICE: &str = "auth-service";
/// The address other modules reach this one at (in Go it comes from the app config's
/// `grpcOuterAddress`).
pub(crate) const OUTER_ADDRESS: (&str, &str) = ("127.0.0.1", "9000");
/// How long one config application may take (Go: the `remoteConfigReceiverTimeout` app
/// config, default 5 s).
pub(crate) const REMOTE_CONFIG_RECEIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The remote config (Go: `defaultRemoteConfig` and its schema, `rc.GenerateConfigSchema`).
/// `Default` is the default remote config; the schema is derived from the type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RemoteConfig {
    /// The log level of the module.
    pub(crate) log_level: String,
    /// How many requests the module handles at once.
    pub(crate) max_concurrency: u32,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            log_level: "info".to_owned(),
            max_concurrency: 16,
        }
    }
}

/// Go: `remoteConfigUpdater`: handles and applies each new remote config.
pub(crate) struct RemoteConfigUpdater {
    current: watch::Sender<Option<Arc<RemoteConfig>>>,
}

#[async_trait]
impl RemoteConfigReceiver for RemoteConfigUpdater {
    async fn receive_config(&self, remote_config: Bytes) -> Result<(), BoxError> {
        // handle & update the new remote config; an error rejects it (and fails the handshake
        // when it is the first config of a session, as in Go)
        let config: RemoteConfig = serde_json::from_slice(&remote_config)?;
        tracing::info!(?config, "remote config received");
        self.current.send_replace(Some(Arc::new(config)));
        Ok(())
    }
}

/// Go: `routesHandler`: looks at each module of the routing table.
pub(crate) struct RoutesHandler;

#[async_trait]
impl RoutesReceiver for RoutesHandler {
    async fn receive_routes(&self, routes: RoutingConfig) -> Result<(), BoxError> {
        for module in &routes {
            // handle each module's info
            tracing::info!(
                module = %module.module_name,
                address = %module.address,
                endpoints = module.endpoints.len(),
                "route"
            );
        }
        Ok(())
    }
}

/// Go: `cluster.ModuleInfo{…}` with one endpoint, `/api/foo`, not inner.
pub(crate) fn module_info() -> ModuleInfo {
    ModuleInfo {
        module_name: MODULE_NAME.to_owned(),
        module_version: "1.0.0".to_owned(),
        lib_version: env!("CARGO_PKG_VERSION").to_owned(),
        grpc_outer_address: AddressConfiguration::new(OUTER_ADDRESS.0, OUTER_ADDRESS.1),
        endpoints: vec![EndpointDescriptor {
            path: "/api/foo".to_owned(),
            inner: false,
            ..EndpointDescriptor::default()
        }],
        ..ModuleInfo::default()
    }
}

/// The running module (Go: `app.Application` with its runner and closers).
pub(crate) struct Application {
    /// Go: `clusterCli`.
    pub(crate) client: Client,
    /// Go: `authServiceCli`: it follows `auth-service`'s ready instances.
    pub(crate) auth_service: RoundRobin,
    /// The latest remote config the module applied.
    pub(crate) config: watch::Receiver<Option<Arc<RemoteConfig>>>,
    runner: JoinHandle<Result<(), ClientError>>,
}

impl Application {
    /// Builds the client and the handler and starts the runner (Go: everything in `main` up to
    /// `application.Run()`). Must be called inside a tokio runtime.
    pub(crate) fn start(hosts: Vec<String>) -> Result<Self, BoxError> {
        let config_data = config_data_for::<RemoteConfig>("1.0.0")?;
        let cluster_cli = Client::new(module_info(), config_data, hosts)?;

        // Implements `HostsUpgrader`: it will have auth-service's addresses.
        let auth_service_cli = RoundRobin::default();

        let (current, config) = watch::channel(None);
        let event_handler = EventHandler::new()
            .remote_config_receiver_with_timeout(
                RemoteConfigUpdater { current },
                REMOTE_CONFIG_RECEIVER_TIMEOUT,
            )
            .routes_receiver(RoutesHandler)
            .require_module(AUTH_SERVICE, auth_service_cli.clone());

        let runner = tokio::spawn({
            let cluster_cli = cluster_cli.clone();
            async move { cluster_cli.run(event_handler).await }
        });
        Ok(Self {
            client: cluster_cli,
            auth_service: auth_service_cli,
            config,
            runner,
        })
    }

    /// Runs until `shutdown` resolves (Go: `shutdown.On`, waiting for SIGINT and SIGTERM),
    /// then closes the client (Go: `application.Shutdown()` calling the closers). Each config
    /// the module applies is logged with the address it would call `auth-service` at.
    ///
    /// Returns early with the runner's error if the run ends by itself (it cannot start).
    pub(crate) async fn run_until(
        mut self,
        shutdown: impl Future<Output = Signal>,
    ) -> Result<(), BoxError> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                result = &mut self.runner => {
                    result??;
                    return Ok(());
                }
                signal = &mut shutdown => {
                    tracing::info!(?signal, "shutting down...");
                    break;
                }
                changed = self.config.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let config = self.config.borrow_and_update().clone();
                    // A request handler would call `self.auth_service.next()` per call.
                    let auth = self.auth_service.next().map_err(|e| e.to_string());
                    tracing::info!(?config, ?auth, "running with a new config");
                }
            }
        }
        self.client.close().await; // nothing of the client runs after this
        self.runner.await??;
        tracing::info!("shutdown completed");
        Ok(())
    }
}

fn parse_hosts(args: impl IntoIterator<Item = String>) -> Result<Option<Vec<String>>, String> {
    let mut hosts = vec!["127.0.0.1:9001".to_owned()];
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--hosts" => args.next().ok_or("--hosts needs a value")?,
            _ => match arg.strip_prefix("--hosts=") {
                Some(value) => value.to_owned(),
                None => return Err(format!("unknown argument {arg:?}")),
            },
        };
        hosts = value
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
    }
    Ok(Some(hosts))
}

#[tokio::main]
async fn main() -> ExitCode {
    let hosts = match parse_hosts(std::env::args().skip(1)) {
        Ok(Some(hosts)) => hosts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("default_flow: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    cluster_examples::init_logs("info");
    let result = async {
        let shutdown = cluster_examples::shutdown_signal()?;
        Application::start(hosts)?.run_until(shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("default_flow: {err}");
            ExitCode::FAILURE
        }
    }
}
