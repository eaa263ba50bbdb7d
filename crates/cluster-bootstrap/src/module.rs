//! [`Module`]: what a module is (its remote config, transport, endpoints, dependencies), and
//! [`Bootstrap::run`], which runs it.

use crate::address::{join_host_port, metrics_autodiscovery};
use crate::bootstrap::Bootstrap;
use crate::error::BootstrapError;
use crate::infra;
use cluster_client::typed::TypedConfig;
use cluster_client::{
    AddressConfiguration, BoxError, Bytes, Client, ClientState, ConfigData, EMPTY_TRANSPORT,
    EventHandler, GRPC_TRANSPORT, HTTP_TRANSPORT, LIB_VERSION, ModuleInfo, OfflineClient,
    RemoteConfigReceiver,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How a module serves its endpoints (isp-kit's `transport`).
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Transport {
    /// No endpoints: a worker, a consumer (`empty`).
    #[default]
    Empty,
    /// isp-kit's gRPC convention (`grpc`), on `grpcInnerAddress`.
    Grpc(Box<cluster_grpc::Router>),
    /// isp-kit's HTTP transport (`http`), on `grpcInnerAddress` too, as isp-kit serves it.
    Http(Box<cluster_http::Router>),
}

impl Transport {
    /// What `ModuleInfo::transport` says.
    fn name(&self) -> &'static str {
        match self {
            Self::Empty => EMPTY_TRANSPORT,
            Self::Grpc(_) => GRPC_TRANSPORT,
            Self::Http(_) => HTTP_TRANSPORT,
        }
    }

    /// The endpoints the module declares.
    fn descriptors(&self) -> Vec<cluster_client::EndpointDescriptor> {
        match self {
            Self::Empty => Vec::new(),
            Self::Grpc(router) => router.descriptors(),
            Self::Http(router) => router.descriptors(),
        }
    }
}

/// The remote config of a module that has none (Go: `struct{}`): an empty object, whose
/// schema allows any object; what [`Module::without_config`] declares. No default remote
/// config file is looked for.
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, JsonSchema,
)]
pub struct NoRemoteConfig {}

/// What the module is: its remote config (schema, default, receiver), its transport and
/// endpoints, and the [`EventHandler`] with the modules it requires and its routes receiver.
///
/// # Examples
/// ```
/// use cluster_bootstrap::Module;
/// use cluster_client::{EventHandler, RoundRobin, TypedConfig};
///
/// #[derive(Debug, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// struct Remote { workers: u32 }
///
/// let auth = RoundRobin::default();
/// let module = Module::new(TypedConfig::<Remote>::new())
///     .grpc(cluster_grpc::Router::new())
///     .handler(EventHandler::new().require_module("auth", auth.clone()));
/// # drop(module);
/// ```
pub struct Module<T> {
    remote: TypedConfig<T>,
    transport: Transport,
    handler: EventHandler,
    infra: axum::Router,
}

impl<T> std::fmt::Debug for Module<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("remote", &self.remote)
            .field("transport", &self.transport)
            .field("handler", &self.handler)
            .finish_non_exhaustive()
    }
}

impl Module<NoRemoteConfig> {
    /// A module without a remote config of its own ([`NoRemoteConfig`]), no endpoints and
    /// no dependencies: for a module whose settings are all local (or that has none).
    ///
    /// ```
    /// let module = cluster_bootstrap::Module::without_config().http(cluster_http::Router::new());
    /// # drop(module);
    /// ```
    #[must_use]
    pub fn without_config() -> Self {
        Self::new(TypedConfig::new())
    }
}

impl<T> Module<T>
where
    T: DeserializeOwned + Serialize + JsonSchema + Default + Send + Sync + 'static,
{
    /// A module with this remote config, no endpoints (`empty` transport) and no
    /// dependencies.
    #[must_use]
    pub fn new(remote: TypedConfig<T>) -> Self {
        Self {
            remote,
            transport: Transport::Empty,
            handler: EventHandler::new(),
            infra: axum::Router::new(),
        }
    }

    /// Serves `router`'s endpoints over isp-kit's gRPC (`transport: grpc`); the router is
    /// the endpoints the module declares.
    #[must_use]
    pub fn grpc(mut self, router: cluster_grpc::Router) -> Self {
        self.transport = Transport::Grpc(Box::new(router));
        self
    }

    /// Serves `router`'s endpoints over HTTP (`transport: http`), each declared with its
    /// method.
    #[must_use]
    pub fn http(mut self, router: cluster_http::Router) -> Self {
        self.transport = Transport::Http(Box::new(router));
        self
    }

    /// The handler with the modules the module requires and its routes receiver. Its remote
    /// config receiver, if any, is replaced by the module's [`TypedConfig`].
    #[must_use]
    pub fn handler(mut self, handler: EventHandler) -> Self {
        self.handler = handler;
        self
    }

    /// More routes on the infra server, beside `/internal/health` and `/internal/metrics`.
    #[must_use]
    pub fn infra_routes(mut self, router: axum::Router) -> Self {
        self.infra = self.infra.merge(router);
        self
    }
}

impl Bootstrap {
    /// Runs `module` until SIGINT or SIGTERM (see [`Bootstrap::run_until`]).
    ///
    /// # Errors
    /// See [`Bootstrap::run_until`].
    pub async fn run<T>(self, module: Module<T>) -> Result<(), BootstrapError>
    where
        T: DeserializeOwned + Serialize + JsonSchema + Default + Send + Sync + 'static,
    {
        let signal = crate::shutdown::shutdown_signal().map_err(BootstrapError::Infra)?;
        self.run_until(module, async move {
            let signal = signal.await;
            tracing::info!(signal = ?signal, "shutting down");
        })
        .await
    }

    /// Runs `module` until `shutdown` completes: binds the module's server (gRPC or HTTP,
    /// by its transport; none for `empty`) on `grpcInnerAddress` and the infra server on `infraServerPort`, joins the cluster
    /// (`ModuleInfo` with the endpoints, the outer address, `metricsAutodiscovery`, the
    /// schema of `T` and the default remote config) or, offline, applies
    /// `remoteConfigPath` once, and serves. Then it stops in order: the module leaves the
    /// cluster, the module's server drains the calls in flight, the infra server stops (health
    /// and metrics answer until then), the spans and Sentry events left are sent.
    ///
    /// # Errors
    /// A listener that cannot be bound, a default remote config that cannot be read or is
    /// refused, a cluster client that cannot be built or stops on an error, an offline config
    /// refused, a server that fails: each ends the run (the others are stopped first).
    pub async fn run_until<T, F>(self, module: Module<T>, shutdown: F) -> Result<(), BootstrapError>
    where
        T: DeserializeOwned + Serialize + JsonSchema + Default + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        // An error is logged by whoever takes it (`Fatal`, at `fatal`): not twice here.
        let result = self.run_inner(module, shutdown).await;
        self.guards.shutdown().await;
        result
    }

    async fn run_inner<T, F>(&self, module: Module<T>, shutdown: F) -> Result<(), BootstrapError>
    where
        T: DeserializeOwned + Serialize + JsonSchema + Default + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let local = &self.local;
        let Module {
            remote,
            transport,
            handler,
            infra: infra_extra,
        } = module;

        // Listeners first: the ports the module declares are the ones it got.
        let server_listener = match &transport {
            Transport::Grpc(_) | Transport::Http(_) => Some(
                bind(
                    "grpcInnerAddress",
                    &local.grpc_inner_address.ip,
                    local.grpc_inner_address.port,
                )
                .await?,
            ),
            Transport::Empty => None,
        };
        let infra_listener = bind("infraServerPort", &self.infra_ip(), local.infra_port()).await?;
        let infra_port = infra_listener
            .local_addr()
            .map_err(BootstrapError::Infra)?
            .port();
        let grpc_addr = match &server_listener {
            Some(listener) => Some(listener.local_addr().map_err(BootstrapError::Infra)?),
            None => None,
        };
        let infra_addr = infra_listener.local_addr().map_err(BootstrapError::Infra)?;
        self.listening
            .send_replace(Some(crate::bootstrap::Listening {
                server: grpc_addr,
                infra: infra_addr,
            }));
        let outer_port = match (local.grpc_outer_address.port, &server_listener) {
            (0, Some(listener)) => listener.local_addr().map_err(BootstrapError::Infra)?.port(),
            (port, _) => port,
        };

        let stop_infra = CancellationToken::new();
        let infra_router = infra::router(self.health.clone(), self.metrics, infra_extra);
        tracing::info!(
            infra_server_address = %join_host_port(&self.infra_ip(), infra_port),
            handlers = ?[infra::METRICS_PATH, infra::DESCRIPTIONS_PATH, infra::HEALTH_PATH],
            "run infra server"
        );
        let infra_stopped = stop_infra.clone();
        let mut infra_task = tokio::spawn(cluster_serve::serve(
            infra_listener,
            infra_router,
            infra::serve_config(),
            async move { infra_stopped.cancelled().await },
        ));

        let receiver = self.receiver(remote.clone())?;
        let handler =
            handler.remote_config_receiver_with_timeout(receiver, local.remote_config_timeout());
        let endpoints = transport.descriptors();
        let transport_name = transport.name();

        let result = if self.env.is_offline() {
            self.run_offline(
                transport,
                server_listener,
                handler,
                &mut infra_task,
                shutdown,
            )
            .await
        } else {
            let module_info = ModuleInfo {
                module_name: local.module_name.clone(),
                module_version: self.module_version.clone(),
                lib_version: LIB_VERSION.into(),
                grpc_outer_address: AddressConfiguration::new(
                    self.outer_ip.clone(),
                    outer_port.to_string(),
                ),
                transport: transport_name.into(),
                endpoints,
                metrics_autodiscovery: metrics_autodiscovery(local, &self.outer_ip, infra_port),
            };
            let config_data = self.config_data(&remote)?;
            let client = Client::builder(module_info, config_data, self.hosts.clone()).build()?;
            let health_client = client.clone();
            self.health.register("configServiceConnection", move || {
                let result = health_client
                    .healthcheck()
                    .map_err(|e| Box::new(e) as BoxError);
                async move { result }
            });
            self.run_clustered(
                client,
                transport,
                server_listener,
                handler,
                &mut infra_task,
                shutdown,
            )
            .await
        };

        // Health and metrics answer until the end.
        stop_infra.cancel();
        let infra_result = match infra_task.await {
            Ok(result) => result.map_err(BootstrapError::Infra),
            Err(join) => Err(BootstrapError::Infra(std::io::Error::other(join))),
        };
        tracing::info!("module stopped");
        result.and(infra_result)
    }

    async fn run_clustered<F>(
        &self,
        client: Client,
        transport: Transport,
        server_listener: Option<TcpListener>,
        handler: EventHandler,
        infra_task: &mut tokio::task::JoinHandle<std::io::Result<()>>,
        shutdown: F,
    ) -> Result<(), BootstrapError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // The server stops once the module has left the cluster.
        let mut left = client.state();
        let mut server_task = spawn_server(transport, server_listener, async move {
            // A dropped client (the sender gone) counts as closed too.
            let _ = left.wait_for(|s| *s == ClientState::Closed).await;
        })?;
        // The client's state, for `Bootstrap::cluster_state`.
        let mut state = client.state();
        let forward = self.state.clone();
        let health = self.health.clone();
        let forwarder = tokio::spawn(async move {
            loop {
                let current = state.borrow_and_update().clone();
                let closed = current == ClientState::Closed;
                forward.send_replace(current);
                health.invalidate();
                if closed || state.changed().await.is_err() {
                    break;
                }
            }
        });
        let run = client.run_until(handler, shutdown);
        tokio::pin!(run);
        let mut early = None;
        let result = tokio::select! {
            result = &mut run => result.map_err(BootstrapError::from),
            served = wait_some(&mut server_task) => {
                early = Some(server_outcome(served));
                client.close().await;
                run.await.map_err(BootstrapError::from)
            }
            served = &mut *infra_task => {
                let err = match served {
                    Ok(Ok(())) => std::io::Error::other("the infra server stopped"),
                    Ok(Err(err)) => err,
                    Err(join) => std::io::Error::other(join),
                };
                client.close().await;
                let _ = run.await;
                return Err(BootstrapError::Infra(err));
            }
        };
        let _ = forwarder.await;
        self.state.send_replace(ClientState::Closed);
        // The client is closed: the module's server (`shutdown_with`) drains and stops.
        let served = match early {
            Some(outcome) => outcome,
            None => match server_task.take() {
                Some(task) => server_outcome(task.await),
                None => Ok(()),
            },
        };
        // An early server stop is the error to report, not the client's closing.
        match served {
            Err(err) => Err(err),
            Ok(()) => result,
        }
    }

    async fn run_offline<F>(
        &self,
        transport: Transport,
        server_listener: Option<TcpListener>,
        handler: EventHandler,
        infra_task: &mut tokio::task::JoinHandle<std::io::Result<()>>,
        shutdown: F,
    ) -> Result<(), BootstrapError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let path = self.remote_config_path();
        tracing::info!(path = %path.display(), "offline: the remote config comes from a file");
        OfflineClient::new(&path).run(handler).await?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let mut server_task = spawn_server(transport, server_listener, async move {
            stopped.cancelled().await;
        })?;
        let outcome = tokio::select! {
            () = shutdown => Ok(()),
            served = wait_some(&mut server_task) => server_outcome(served),
            served = &mut *infra_task => Err(BootstrapError::Infra(match served {
                Ok(Ok(())) => std::io::Error::other("the infra server stopped"),
                Ok(Err(err)) => err,
                Err(join) => std::io::Error::other(join),
            })),
        };
        stop.cancel();
        if let Some(task) = server_task {
            server_outcome(task.await)?;
        }
        outcome
    }

    /// The IP the infra server listens on: `infraServerIp` when set, else every interface,
    /// as isp-kit's `:port`.
    fn infra_ip(&self) -> String {
        self.local
            .infra_server_ip
            .clone()
            .unwrap_or_else(|| "0.0.0.0".to_owned())
    }

    /// The receiver the client feeds: the typed config, behind `remoteConfigOverride`.
    fn receiver<T>(&self, remote: TypedConfig<T>) -> Result<Override<T>, BootstrapError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let overlay = match &self.local.remote_config_override {
            Some(text) if !text.expose().trim().is_empty() => {
                let value: serde_json::Value =
                    serde_json::from_str(text.expose()).map_err(|_| BootstrapError::Setting {
                        key: "remoteConfigOverride",
                        message: "not a JSON object".into(),
                    })?;
                if !value.is_object() {
                    return Err(BootstrapError::Setting {
                        key: "remoteConfigOverride",
                        message: "not a JSON object".into(),
                    });
                }
                Some(value)
            }
            _ => None,
        };
        Ok(Override { remote, overlay })
    }

    /// The schema of `T` and the default config: `defaultRemoteConfigPath`'s file when it
    /// exists (parsed and checked by the module's validation now, rather than at each
    /// handshake; sent as it is, as Go sends it), else `T::default()`.
    fn config_data<T>(&self, remote: &TypedConfig<T>) -> Result<ConfigData, BootstrapError>
    where
        T: DeserializeOwned + Serialize + JsonSchema + Default + Send + Sync + 'static,
    {
        let path = self.default_remote_config_path();
        let shown = path.display().to_string();
        let fail = |message: String| BootstrapError::DefaultRemoteConfig {
            path: shown.clone(),
            message,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let data = remote
                    .config_data_from_json(self.module_version.clone(), &bytes)
                    .map_err(|err| fail(err.to_string()))?;
                tracing::info!(path = %shown, "default remote config read");
                Ok(data)
            }
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound
                    && std::any::TypeId::of::<T>() == std::any::TypeId::of::<NoRemoteConfig>() =>
            {
                remote
                    .config_data(self.module_version.clone())
                    .map_err(|err| fail(err.to_string()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    path = %shown,
                    "no default remote config file: the default of the config type is sent instead \
                     (set defaultRemoteConfigPath, or run with APP_MODE=dev for conf/default_remote_config.json)"
                );
                remote.config_data(self.module_version.clone()).map_err(|err| {
                    fail(format!(
                        "the file does not exist, and the config type's default cannot serve: {err}"
                    ))
                })
            }
            Err(err) => Err(fail(format!("cannot be read: {err}"))),
        }
    }
}

/// The module's typed config, with `remoteConfigOverride` merged over each config it gets.
struct Override<T> {
    remote: TypedConfig<T>,
    overlay: Option<serde_json::Value>,
}

#[cluster_client::async_trait]
impl<T> RemoteConfigReceiver for Override<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    async fn receive_config(&self, config: Bytes) -> Result<(), BoxError> {
        let config = match &self.overlay {
            None => config,
            Some(overlay) => {
                let mut value: serde_json::Value = serde_json::from_slice(&config)
                    .map_err(|_| "the remote config is not a JSON object")?;
                merge(&mut value, overlay);
                Bytes::from(serde_json::to_vec(&value)?)
            }
        };
        self.remote.receive_config(config).await
    }
}

/// Merges `overlay` over `base` leaf by leaf: objects merge, anything else replaces.
fn merge(base: &mut serde_json::Value, overlay: &serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(base), serde_json::Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

async fn bind(what: &'static str, ip: &str, port: u16) -> Result<TcpListener, BootstrapError> {
    let shown = join_host_port(ip, port);
    let listener = TcpListener::bind((ip, port))
        .await
        .map_err(|source| BootstrapError::Bind {
            what,
            address: shown.clone(),
            source,
        })?;
    Ok(listener)
}

/// A server's task: until it stops, and why.
type ServerTask = tokio::task::JoinHandle<Result<(), BootstrapError>>;

/// Starts the server of a `grpc` or `http` module on its listener, until `stop`; `None` for
/// an `empty` one.
fn spawn_server(
    transport: Transport,
    listener: Option<TcpListener>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<ServerTask>, BootstrapError> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let addr = listener.local_addr().map_err(BootstrapError::Infra)?;
    match transport {
        Transport::Empty => Ok(None),
        Transport::Grpc(router) => {
            tracing::info!(grpc_inner_address = %addr, "run grpc server");
            let server = cluster_grpc::Server::builder(*router)
                .shutdown_on(stop)
                .serve(listener)
                .map_err(BootstrapError::Infra)?;
            Ok(Some(tokio::spawn(async move {
                server.wait().await.map_err(BootstrapError::Grpc)
            })))
        }
        Transport::Http(router) => {
            tracing::info!(http_address = %addr, "run http server");
            let server = cluster_http::Server::builder(*router)
                .shutdown_on(stop)
                .serve(listener)
                .map_err(BootstrapError::Infra)?;
            Ok(Some(tokio::spawn(async move {
                server.wait().await.map_err(BootstrapError::Http)
            })))
        }
    }
}

/// A server task's outcome, as the run reports it.
fn server_outcome(
    served: Result<Result<(), BootstrapError>, tokio::task::JoinError>,
) -> Result<(), BootstrapError> {
    match served {
        Ok(result) => result,
        Err(join) => Err(BootstrapError::Infra(std::io::Error::other(join))),
    }
}

/// Waits for the task if there is one, forever otherwise.
async fn wait_some<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_merges_leaf_by_leaf() {
        let mut base = serde_json::json!({"db": {"host": "a", "port": 1}, "list": [1, 2]});
        merge(
            &mut base,
            &serde_json::json!({"db": {"host": "b"}, "list": [3], "new": true}),
        );
        assert_eq!(
            base,
            serde_json::json!({"db": {"host": "b", "port": 1}, "list": [3], "new": true})
        );
    }

    #[derive(Debug, Default, Serialize, serde::Deserialize, JsonSchema)]
    struct Remote {
        workers: u32,
    }

    /// A module without a remote config sends `{}` and says nothing of the default file it
    /// does not need; one with a config type warns where it looked.
    #[test]
    fn only_a_module_with_a_config_type_warns_of_a_missing_default_file() {
        let dir = std::env::temp_dir().join(format!("boot-no-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            "configServiceAddress: {ip: 127.0.0.1, port: 1}\n\
             grpcOuterAddress: {ip: 127.0.0.1, port: 0}\n\
             grpcInnerAddress: {ip: 127.0.0.1, port: 0}\n\
             moduleName: m\n\
             defaultRemoteConfigPath: absent.json\n",
        )
        .unwrap();
        let env =
            crate::Environment::from_vars([("APP_CONFIG_PATH", config.display().to_string())])
                .with_current_dir(&dir);
        let boot = Bootstrap::with_environment("1.0.0", env).unwrap();

        let logs = cluster_testkit::logs::CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let (none, some) = tracing::subscriber::with_default(subscriber, || {
            let none = boot
                .config_data(&TypedConfig::<NoRemoteConfig>::new())
                .unwrap();
            let quiet = logs.count("no default remote config file");
            let some = boot.config_data(&TypedConfig::<Remote>::new()).unwrap();
            assert_eq!(quiet, 0, "{}", logs.text());
            (none, some)
        });
        assert_eq!(
            logs.count("no default remote config file"),
            1,
            "{}",
            logs.text()
        );
        assert_eq!(none.config.get(), "{}");
        assert!(
            some.config.get().contains("\"workers\":0"),
            "{}",
            some.config.get()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
