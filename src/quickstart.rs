//! The quickstart: a fake config service and two modules, told in plain words.
//!
//! [`quickstart`] is what `cargo run --example quickstart` runs; it lives in the library so
//! that the test suite runs exactly the same code (`tests/it/quickstart.rs`).

use cluster_client::typed::{ConfigHandle, TypedConfig};
use cluster_client::{
    AddressConfiguration, BoxError, Client, ClientError, ConfigData, EndpointDescriptor,
    EventHandler, ModuleInfo, RoundRobin, RoutingConfig,
};
use cluster_testkit::FakeConfigService;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the quickstart waits for any one step before it gives up with an error. Every
/// step takes about a millisecond on loopback; the bound only turns a bug into an error
/// instead of a hang.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The remote config of the quickstart's `orders` module. Its JSON Schema, derived from the
/// type, is what the module sends the config service, which validates every change with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// How the module greets its callers.
    pub greeting: String,
    /// How many workers process orders.
    pub workers: u32,
}

impl Default for OrdersConfig {
    /// The default config the module registers: the config service stores it as the module's
    /// config the first time the module connects.
    fn default() -> Self {
        Self {
            greeting: "hello".to_owned(),
            workers: 2,
        }
    }
}

/// The module that joins first: it requires `auth-service` and wants the routing table.
pub const ORDERS: &str = "orders";
/// The module that joins second.
pub const AUTH: &str = "auth-service";
/// The address `orders` declares.
pub const ORDERS_ADDRESS: (&str, &str) = ("127.0.0.1", "9001");
/// The address `auth-service` declares.
pub const AUTH_ADDRESS: (&str, &str) = ("127.0.0.1", "9101");

/// Runs the quickstart and tells `out` what happens, one line per step:
///
/// 1. a fake config service starts on a real WebSocket listener (`127.0.0.1:0`);
/// 2. module `orders` joins it: registered, initial config, `auth-service`'s addresses (none
///    yet), routing table, ready;
/// 3. an admin changes `orders`' config through the service and the module applies it; a
///    change that breaks the module's schema is refused by the service;
/// 4. module `auth-service` comes up: `orders`' balancer and routing table follow;
/// 5. both modules close and the service stops.
///
/// Every step waits for the event it reports (channels and the testkit's await helpers, no
/// sleeps), so the lines come in this order every time. It takes a few milliseconds.
///
/// # Errors
/// When the service cannot listen, a client does not start, a step takes longer than
/// [`STEP_TIMEOUT`], or `out` cannot be written to.
pub async fn quickstart(mut out: impl Write) -> Result<(), BoxError> {
    let started = Instant::now();

    // 1. The config service, on a real loopback WebSocket.
    let service = FakeConfigService::new();
    let addr = service.listen_ws("127.0.0.1:0").await?;
    let host = addr.to_string();
    writeln!(
        out,
        "1. A fake config service listens on ws://{host}/isp-etp/ (where isp-config-service serves modules)."
    )?;

    // 2. `orders` joins.
    let orders = Orders::new(&host)?;
    writeln!(
        out,
        "2. Module {ORDERS:?} starts: it requires {AUTH:?} and wants the routing table."
    )?;
    let orders_run = spawn_run(&orders.client, orders.handler.clone());
    let requirements = step(
        "orders to register",
        service.wait_event(ORDERS, "MODULE:SEND_REQUIREMENTS", STEP_TIMEOUT),
    )
    .await??;
    writeln!(
        out,
        "   {ORDERS} registered: it sent its config schema (derived from OrdersConfig) and its requirements {}.",
        requirements.text()
    )?;
    let mut config = orders.config.clone();
    let initial = step("the initial config", config.wait())
        .await?
        .ok_or("the config receiver is gone")?;
    writeln!(
        out,
        "   {ORDERS} received its initial config: {} (its own default: the service had no config for it yet).",
        serde_json::to_string(&*initial)?
    )?;
    let hosts = step("auth-service's addresses", orders.hosts.wait_len(1)).await?;
    writeln!(
        out,
        "   {ORDERS} received the addresses of {AUTH}: {}.",
        describe_hosts(&hosts[0])
    )?;
    let routes = step("the routing table", orders.routes.wait_len(1)).await?;
    writeln!(
        out,
        "   {ORDERS} received the routing table: {}.",
        describe_routes(&routes[0])
    )?;
    step("orders to be ready", wait_ready(&orders.client)).await??;
    orders.client.healthcheck()?;
    writeln!(
        out,
        "   {ORDERS} is ready: it declared itself at {}:{} and its health check passes.",
        ORDERS_ADDRESS.0, ORDERS_ADDRESS.1
    )?;

    // 3. An admin changes the config; the module applies it.
    let new_config = r#"{"greeting":"bonjour","workers":4}"#;
    let change = service.set_config(ORDERS, new_config, None)?;
    writeln!(
        out,
        "3. An admin changes {ORDERS}' config through the config service (version {}): {new_config}",
        change.version
    )?;
    let applied = step("the changed config", config.changed())
        .await?
        .ok_or("the config receiver is gone")?;
    writeln!(
        out,
        "   {ORDERS} applied the new config: greeting {:?}, {} workers.",
        applied.greeting, applied.workers
    )?;
    let broken = r#"{"greeting":"hi","workers":"many"}"#;
    match service.set_config(ORDERS, broken, None) {
        Err(refused) => writeln!(
            out,
            "   The config service refuses {broken}, which breaks {ORDERS}' schema: {refused}."
        )?,
        Ok(change) => {
            return Err(format!(
                "the service accepted a config that breaks the schema (version {})",
                change.version
            )
            .into());
        }
    }

    // 4. A second module comes up: `orders` follows.
    let auth = Client::new(
        module(AUTH, AUTH_ADDRESS, "auth/api/login"),
        ConfigData::from_json(
            "1.0.0",
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#,
            "{}",
        )?,
        [host.clone()],
    )?;
    writeln!(
        out,
        "4. Module {AUTH:?} comes up at {}:{}.",
        AUTH_ADDRESS.0, AUTH_ADDRESS.1
    )?;
    let auth_run = spawn_run(&auth, EventHandler::new());
    step("auth-service to be ready", wait_ready(&auth)).await??;
    writeln!(out, "   {AUTH} is ready.")?;
    let auth_host = format!("{}:{}", AUTH_ADDRESS.0, AUTH_ADDRESS.1);
    let hosts = step(
        "orders to learn auth-service's address",
        orders
            .hosts
            .wait_until(|lists| lists.last().is_some_and(|list| list.contains(&auth_host))),
    )
    .await?;
    writeln!(
        out,
        "   {ORDERS} received the addresses of {AUTH}: {}; its balancer now picks {}.",
        describe_hosts(hosts.last().map_or(&[][..], Vec::as_slice)),
        orders.balancer.next()?
    )?;
    let routes = step(
        "orders' routing table to list auth-service",
        orders.routes.wait_until(|tables| {
            tables
                .last()
                .is_some_and(|table| table.iter().any(|d| d.module_name == AUTH))
        }),
    )
    .await?;
    writeln!(
        out,
        "   {ORDERS}' routing table now lists {}.",
        describe_routes(routes.last().map_or(&[][..], Vec::as_slice))
    )?;

    // 5. Close everything.
    auth.close().await;
    orders.client.close().await;
    auth_run.await??;
    orders_run.await??;
    // The service sees the closes a moment later; stopping before would close them again.
    for name in [AUTH, ORDERS] {
        service.wait_connections(name, 0, STEP_TIMEOUT).await?;
    }
    service.stop().await;
    writeln!(
        out,
        "5. Both modules closed their sessions and the config service stopped ({} ms in all).",
        started.elapsed().as_millis()
    )?;
    out.flush()?;
    Ok(())
}

/// Bounds one step by [`STEP_TIMEOUT`].
async fn step<T>(what: &str, future: impl Future<Output = T>) -> Result<T, BoxError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| format!("timed out after {STEP_TIMEOUT:?} waiting for {what}").into())
}

async fn wait_ready(client: &Client) -> Result<(), BoxError> {
    let mut state = client.state();
    state.wait_for(|s| s.is_ready()).await?;
    Ok(())
}

fn spawn_run(client: &Client, handler: EventHandler) -> JoinHandle<Result<(), ClientError>> {
    let client = client.clone();
    tokio::spawn(async move { client.run(handler).await })
}

fn module(name: &str, (ip, port): (&str, &str), endpoint: &str) -> ModuleInfo {
    ModuleInfo {
        module_name: name.to_owned(),
        module_version: "1.0.0".to_owned(),
        lib_version: env!("CARGO_PKG_VERSION").to_owned(),
        grpc_outer_address: AddressConfiguration::new(ip, port),
        endpoints: vec![EndpointDescriptor::new(endpoint)],
        ..ModuleInfo::default()
    }
}

fn describe_hosts(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "none yet".to_owned()
    } else {
        hosts.join(", ")
    }
}

fn describe_routes(routes: &[cluster_client::BackendDeclaration]) -> String {
    if routes.is_empty() {
        return "no module instance is ready yet".to_owned();
    }
    let mut entries: Vec<String> = routes
        .iter()
        .map(|d| {
            let endpoints: Vec<&str> = d.endpoints.iter().map(|e| e.path.as_str()).collect();
            format!(
                "{} at {} ({})",
                d.module_name,
                d.address,
                endpoints.join(", ")
            )
        })
        .collect();
    // The service lists the newest instance first; sorted, the line reads the same every run.
    entries.sort();
    entries.join("; ")
}

/// The `orders` module: its client, handler and what its receivers got.
struct Orders {
    client: Client,
    handler: EventHandler,
    config: ConfigHandle<OrdersConfig>,
    hosts: History<Vec<String>>,
    routes: History<RoutingConfig>,
    balancer: RoundRobin,
}

impl Orders {
    fn new(host: &str) -> Result<Self, BoxError> {
        let typed = TypedConfig::<OrdersConfig>::new().validate(|c: &OrdersConfig| {
            if c.workers == 0 {
                Err("workers must be at least 1")
            } else {
                Ok(())
            }
        });
        let config = typed.handle();
        // The default config, checked against the validation: a default the module would
        // refuse is an error here rather than a module that never becomes ready.
        let config_data = typed.config_data("1.0.0")?;
        let hosts = History::new();
        let routes = History::new();
        let balancer = RoundRobin::default();
        let handler = EventHandler::new()
            .remote_config_receiver(typed)
            .routes_receiver({
                let routes = routes.clone();
                move |table: RoutingConfig| {
                    routes.push(table);
                    async { Ok::<(), Infallible>(()) }
                }
            })
            .require_module(AUTH, {
                let hosts = hosts.clone();
                let balancer = balancer.clone();
                move |list: Vec<String>| {
                    cluster_client::HostsUpgrader::upgrade(&balancer, list.clone());
                    hosts.push(list);
                }
            });
        let client = Client::new(
            module(ORDERS, ORDERS_ADDRESS, "orders/api/create"),
            config_data,
            [host.to_owned()],
        )?;
        Ok(Self {
            client,
            handler,
            config,
            hosts,
            routes,
            balancer,
        })
    }
}

/// Every value a receiver got, in order, awaitable.
struct History<T> {
    seen: std::sync::Arc<watch::Sender<Vec<T>>>,
}

impl<T> Clone for History<T> {
    fn clone(&self) -> Self {
        Self {
            seen: self.seen.clone(),
        }
    }
}

impl<T: Clone> History<T> {
    fn new() -> Self {
        Self {
            seen: std::sync::Arc::new(watch::channel(Vec::new()).0),
        }
    }

    fn push(&self, value: T) {
        self.seen.send_modify(|seen| seen.push(value));
    }

    async fn wait_len(&self, n: usize) -> Vec<T> {
        self.wait_until(|seen| seen.len() >= n).await
    }

    async fn wait_until(&self, done: impl Fn(&[T]) -> bool) -> Vec<T> {
        let mut rx = self.seen.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        match rx.wait_for(|seen| done(seen)).await {
            Ok(seen) => seen.clone(),
            Err(_) => Vec::new(),
        }
    }
}
