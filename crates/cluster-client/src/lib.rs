//! The isp cluster client: a module joins its cluster by talking to isp-config-service, as
//! Go services do with isp-kit's `cluster` package, on the wire byte for byte.
//!
//! A [`Client`] registers the module (its config schema and default config, the modules it
//! requires, whether it wants routes), waits for its remote config, routes and the addresses
//! of the modules it requires, declares the module ready, and keeps the session alive, moving
//! to the next config service host when one fails. An [`EventHandler`] says who receives what.
//! The names are the Go ones in Rust case, so users of both recognise them.
//!
//! What it does not do: serve your module's own endpoints, or call other modules (a
//! [`RoundRobin`] gives you the addresses to call; the `cluster-grpc` crate of this repository
//! does both, isp-kit's way).
//!
//! # Example: the default flow
//! ```no_run
//! use cluster_client::typed::TypedConfig;
//! use cluster_client::{AddressConfiguration, Client, EventHandler, ModuleInfo, RoundRobin, RoutingConfig};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
//! struct RemoteConfig {
//!     workers: u32,
//! }
//!
//! // The default config: a config service that has none for the module stores it and sends
//! // it back, so it must pass the validation (`TypedConfig::config_data` checks it).
//! impl Default for RemoteConfig {
//!     fn default() -> Self {
//!         Self { workers: 4 }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let module = ModuleInfo {
//!         module_name: "orders".into(),
//!         module_version: "1.0.0".into(),
//!         lib_version: "0.1.0".into(),
//!         grpc_outer_address: AddressConfiguration::new("10.0.0.5", "9000"),
//!         ..ModuleInfo::default()
//!     };
//!     // The remote config, parsed and validated; `config` always holds the latest valid one.
//!     let typed = TypedConfig::<RemoteConfig>::new()
//!         .validate(|c: &RemoteConfig| if c.workers > 0 { Ok(()) } else { Err("workers must be > 0") });
//!     let config_data = typed.config_data("1.0.0")?; // schema + checked default
//!     let mut config = typed.handle();
//!     // The addresses of the `auth` module's instances, kept up to date.
//!     let auth = RoundRobin::default();
//!     let handler = EventHandler::new()
//!         .remote_config_receiver(typed)
//!         .routes_receiver(|routes: RoutingConfig| async move {
//!             println!("{} module instances in the cluster", routes.len());
//!             Ok::<(), std::convert::Infallible>(())
//!         })
//!         .require_module("auth", auth.clone());
//!
//!     // Bad hosts or module names are errors here, before anything runs.
//!     // `ip:port` is ws://; wss://name:port is TLS.
//!     let client = Client::new(module, config_data, ["10.0.0.1:9001", "10.0.0.2:9001"])?;
//!
//!     // The application: here, it waits for the first config and says what it got.
//!     tokio::spawn(async move {
//!         if let Some(first) = config.wait().await {
//!             println!("running {} workers; auth at {:?}", first.workers, auth.next());
//!         }
//!     });
//!
//!     // Runs the sessions until Ctrl-C, then closes the client and returns once nothing of
//!     // it runs; if the client stops first (it cannot start), its error is returned here.
//!     client
//!         .run_until(handler, async {
//!             tokio::signal::ctrl_c().await.ok();
//!         })
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! [`Client::run`] is there for the other shapes (spawned, in a `select!`): see its docs.
//!
//! # Receivers run inside the session task
//! The receivers are awaited by the task that drives the session (one application at a time,
//! as in Go's serial config handling), so they must not block the thread: a blocking receiver
//! stalls the acks and pings of the session too. Put blocking work in
//! `tokio::task::spawn_blocking` (Go runs each receiver in a goroutine of its own).
//!
//! # Layout
//! - [`client`](Client): [`Client`] (`run_until`, `run`, `close`, `healthcheck`, `state`)
//!   and its builder, which checks the settings.
//! - `driver`: the run loop (hosts, backoff) and the task that drives the sans-IO
//!   [`Session`](cluster_proto::session::Session) over one connection.
//! - `apply`: serial, time-bounded application of the receivers (latest-wins for configs).
//! - [`handler`]: [`EventHandler`] and the receiver traits.
//! - [`typed`]: typed configs, their live handle, and [`ConfigData`] from a type.
//! - [`lb`]: [`RoundRobin`]. [`offline`]: [`OfflineClient`].
//!
//! # Logs
//! With `tracing`: one `session` span per session (`session_id`, `host`), an `event_id` per
//! received event, configs logged only with their secrets masked ([`Client::secret_masker`]).
//!
//! # Metrics
//! Through the `metrics` facade, in isp-kit's naming style (`cluster-metrics`'s `cluster`
//! module lists them): `cluster_session_state{state}` (1 for the current state),
//! `cluster_sessions_started_count`, `cluster_sessions_failed_count{cause}` (a bounded set of
//! causes: `connect` and [`SessionError::kind`]), `cluster_configs_applied_count`,
//! `cluster_configs_refused_count`, `cluster_config_version` (the sequence number of the
//! config applied last, 1 for the first) and `cluster_time_to_ready_ms` (from the dial to
//! `MODULE:READY` acknowledged). The gauges and counters are registered with the recorder
//! current when the client is built: install it first (`cluster_metrics::prometheus::install`).
//!
//! # Testing
//! Point the client at `cluster-testkit`'s fake config service: its in-memory listener
//! (`listener.url()`, `mem://…`, with its connector through [`ClientBuilder::connector_arc`])
//! and `tokio::time::pause()`, or its WebSocket listener. What a test can await instead of
//! sleeping: [`Client::state`] (a watch; `BackingOff` says why), [`ConfigHandle::wait`],
//! [`ConfigHandle::wait_outcome`] (config N applied or rejected), [`RoundRobin::wait_for`]
//! (N hosts of a required module); on the service's side, its `wait_*` helpers, and
//! `declare_instance` gives a required module ready instances without a second client.

mod apply;
mod client;
mod driver;
mod error;
pub mod handler;
pub mod lb;
pub mod offline;
mod secret;
mod state;
pub mod typed;

pub use client::{Client, ClientBuilder, DEFAULT_CONFIG_ARRIVAL_WAIT};
pub use error::{BoxError, ClientError, OfflineError, SessionInactive};
pub use handler::{
    DEFAULT_CONFIG_APPLY_TIMEOUT, DEFAULT_ROUTES_APPLY_TIMEOUT, EventHandler, HostsUpgrader,
    RemoteConfigReceiver, RoutesReceiver,
};
pub use lb::{NoHostsToBalance, RoundRobin};
pub use offline::OfflineClient;
pub use secret::{MASK, Secret};
pub use state::ClientState;

/// The version of these crates, for [`ModuleInfo::lib_version`]: what a Go module declares as
/// its isp-kit version (`kitVersion()`), a Rust module declares as this.
pub const LIB_VERSION: &str = env!("CARGO_PKG_VERSION");
pub use typed::{
    ConfigHandle, ConfigOutcome, ConfigRejection, TypedConfig, TypedConfigError, config_data_for,
};

// What users need from the lower crates, so that one dependency is enough.
pub use async_trait::async_trait;
pub use bytes::Bytes;
/// The protocol crate, for everything else (frames, event names, the session state machine).
pub use cluster_proto as proto;
pub use cluster_proto::backoff::BackoffConfig;
pub use cluster_proto::payload::{
    AddressConfiguration, BackendDeclaration, ConfigData, EMPTY_TRANSPORT, EndpointDescriptor,
    GRPC_TRANSPORT, HTTP_TRANSPORT, MetricsAutodiscovery, ModuleDependency, ModuleInfo,
    ModuleRequirements, REQUIRED_ADMIN_PERMISSION, RoutingConfig,
};
pub use cluster_proto::secrets::SecretMasker;
pub use cluster_proto::session::{SessionError, SessionTimeouts};
/// The transport crate, for everything else (connection runtime, in-memory transport).
pub use cluster_transport as transport;
pub use cluster_transport::log_limit::LogLimit;
pub use cluster_transport::tls::TlsConfig;
pub use cluster_transport::ws::WsConfig;
pub use cluster_transport::{Connector, Endpoint, Scheme, SetupError, Transport, TransportError};
/// schemars 1, to derive `JsonSchema` for [`TypedConfig::config_data`] and
/// [`typed::config_data_for`].
///
/// Depending on `schemars` yourself is optional: with `cluster-client` alone in
/// `Cargo.toml`, derive through this re-export and tell the derive where schemars is with
/// `#[schemars(crate = "cluster_client::schemars")]` (without it, the derive's code names a
/// `schemars` crate of your own). A `schemars = "1"` dependency of your own works as well, as
/// long as it resolves to the same major version.
///
/// ```
/// # mod schemars {} // no `schemars` crate in scope: only the re-export is used
/// use cluster_client::schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
/// #[schemars(crate = "cluster_client::schemars")]
/// struct RemoteConfig {
///     #[schemars(range(min = 1))]
///     workers: u32,
/// }
///
/// let schema = cluster_client::typed::json_schema_for::<RemoteConfig>();
/// assert_eq!(schema["properties"]["workers"]["minimum"], 1, "{schema}");
/// ```
pub use schemars;
