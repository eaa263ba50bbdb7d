//! Two modules talking gRPC through the cluster, as isp-kit modules do: `orders` requires
//! `auth-service`, receives its instances' addresses from the config service, calls
//! `auth/api/login` on them round-robin, and keeps working when one of the two `auth-service`
//! instances goes away.
//!
//! Everything runs in one process on loopback: a fake config service (WebSocket), two
//! `auth-service` instances (each a [`Router`] on a [`Server`] plus a cluster [`Client`] that
//! declares the router's endpoints and the server's address), and `orders` (a cluster client
//! whose [`GrpcClient`] is the `HostsUpgrader` of `auth-service`). [`grpc_modules`] tells the
//! story in plain words; the test suite runs it (`tests/it/grpc_modules.rs`).

use cluster_client::{
    BoxError, Client, ClientError, ConfigData, EventHandler, GRPC_TRANSPORT, ModuleInfo,
};
use cluster_grpc::{ApiError, CallContext, GrpcClient, Router, Server};
use cluster_testkit::FakeConfigService;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Write;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The longest any step may take before the story fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The module that serves logins.
pub const AUTH: &str = "auth-service";
/// The module that calls it.
pub const ORDERS: &str = "orders";
/// The endpoint `orders` calls.
pub const LOGIN: &str = "auth/api/login";

/// `auth/api/login`'s request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// Who logs in.
    pub user: String,
}

/// `auth/api/login`'s response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// A token.
    pub token: String,
    /// Which instance answered.
    pub instance: String,
}

/// What the story saw, for the tests.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The instances that answered while both were up, in call order.
    pub before: Vec<String>,
    /// The instances that answered after the first went away.
    pub after: Vec<String>,
}

fn schema() -> Result<ConfigData, BoxError> {
    Ok(ConfigData::from_json(
        "1.0.0",
        r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#,
        "{}",
    )?)
}

/// The router of one `auth-service` instance.
#[must_use]
pub fn auth_router(instance: &str) -> Router {
    let instance = instance.to_owned();
    Router::new()
        .handle(LOGIN, move |_ctx: CallContext, req: LoginRequest| {
            let instance = instance.clone();
            async move {
                if req.user.is_empty() {
                    return Err(ApiError::business(1001, "empty user").with_detail("field", "user"));
                }
                Ok(LoginResponse {
                    token: format!("token-of-{}", req.user),
                    instance,
                })
            }
        })
        .expect("one endpoint")
}

struct AuthInstance {
    client: Client,
    run: JoinHandle<Result<(), ClientError>>,
    server: Server,
}

async fn start_auth(config_host: &str, instance: &str) -> Result<AuthInstance, BoxError> {
    let router = auth_router(instance);
    let endpoints = router.descriptors();
    // The server first, on a free loopback port: its address is what the module declares.
    let builder = Server::builder(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let module = ModuleInfo {
        module_name: AUTH.to_owned(),
        module_version: "1.0.0".to_owned(),
        lib_version: env!("CARGO_PKG_VERSION").to_owned(),
        transport: GRPC_TRANSPORT.to_owned(),
        grpc_outer_address: cluster_client::AddressConfiguration::new(
            addr.ip().to_string(),
            addr.port().to_string(),
        ),
        endpoints,
        ..ModuleInfo::default()
    };
    let client = Client::new(module, schema()?, [config_host.to_owned()])?;
    // The server stops once the module has left the cluster.
    let server = builder.shutdown_with(&client).serve(listener)?;
    let run = tokio::spawn({
        let client = client.clone();
        async move { client.run(EventHandler::new()).await }
    });
    Ok(AuthInstance {
        client,
        run,
        server,
    })
}

async fn step<T>(what: &str, future: impl Future<Output = T>) -> Result<T, BoxError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| format!("timed out after {STEP_TIMEOUT:?} waiting for {what}").into())
}

async fn login(auth: &GrpcClient, user: &str) -> Result<LoginResponse, BoxError> {
    Ok(auth
        .invoke(LOGIN)
        .json_body(&LoginRequest {
            user: user.to_owned(),
        })
        .application_id(1)
        .json()
        .await?)
}

/// Runs the story, writing what happens to `out`.
///
/// # Errors
/// When a step fails or takes longer than [`STEP_TIMEOUT`].
pub async fn grpc_modules(mut out: impl Write) -> Result<Report, BoxError> {
    let service = FakeConfigService::new();
    let config_host = service.listen_ws("127.0.0.1:0").await?.to_string();
    writeln!(out, "1. A fake config service listens on {config_host}.")?;

    let first = start_auth(&config_host, "auth-1").await?;
    let second = start_auth(&config_host, "auth-2").await?;
    writeln!(
        out,
        "2. Two {AUTH} instances serve {LOGIN} over gRPC at {} and {}, and join the cluster declaring it.",
        first.server.local_addr(),
        second.server.local_addr()
    )?;

    // orders: its GrpcClient follows auth-service's instances (it is the HostsUpgrader).
    let auth = GrpcClient::new(Vec::<String>::new());
    let mut hosts = auth.watch();
    let orders = Client::new(
        ModuleInfo {
            module_name: ORDERS.to_owned(),
            module_version: "1.0.0".to_owned(),
            lib_version: env!("CARGO_PKG_VERSION").to_owned(),
            transport: GRPC_TRANSPORT.to_owned(),
            grpc_outer_address: cluster_client::AddressConfiguration::new("127.0.0.1", "9"),
            ..ModuleInfo::default()
        },
        schema()?,
        [config_host.clone()],
    )?;
    let orders_run = tokio::spawn({
        let orders = orders.clone();
        let handler = EventHandler::new().require_module(AUTH, auth.clone());
        async move { orders.run(handler).await }
    });
    let both = step(
        "both auth-service instances",
        hosts.wait_for(|h| h.len() == 2),
    )
    .await??
    .clone();
    writeln!(
        out,
        "3. {ORDERS} requires {AUTH}; the cluster delivers its instances: {both:?}."
    )?;

    let mut report = Report::default();
    for user in ["ann", "bob", "cid", "dan"] {
        let answer = step("a login", login(&auth, user)).await??;
        writeln!(
            out,
            "   {ORDERS} → {LOGIN} for {user}: {} from {}.",
            answer.token, answer.instance
        )?;
        report.before.push(answer.instance);
    }
    let refused = login(&auth, "").await.map_err(|e| e.to_string());
    writeln!(
        out,
        "   An empty user is refused with the API error: {}.",
        refused.err().unwrap_or_default()
    )?;

    first.client.close().await;
    first.run.await??;
    step("auth-1's server to stop", first.server.wait()).await??;
    let one = step("the new host list", hosts.wait_for(|h| h.len() == 1))
        .await??
        .clone();
    writeln!(
        out,
        "4. auth-1 leaves the cluster and stops serving; {ORDERS} is told: {one:?}."
    )?;

    for user in ["eve", "fay", "gus"] {
        let answer = step("a login", login(&auth, user)).await??;
        writeln!(
            out,
            "   {ORDERS} → {LOGIN} for {user}: {} from {}.",
            answer.token, answer.instance
        )?;
        report.after.push(answer.instance);
    }

    orders.close().await;
    orders_run.await??;
    second.client.close().await;
    second.run.await??;
    step("auth-2's server to stop", second.server.wait()).await??;
    service.stop().await;
    writeln!(
        out,
        "5. Everyone leaves; the servers stopped with their modules."
    )?;
    Ok(report)
}
