//! Two modules talking HTTP through the cluster, as isp-kit modules with `transport: http`
//! do: `inventory` serves `POST inventory/api/reserve` (validated) and `GET
//! inventory/api/stock`; `orders` serves `POST orders/api/create` (validated), requires
//! `inventory`, and calls it at the address the config service delivers. A caller (what
//! isp-kit's gateway would be) calls `orders` and sees isp-kit's answers: the order, the
//! 400 of a request that fails validation with its details, `inventory`'s business error
//! passed on by `orders` as it came, a 405 and a 404 from the router.
//!
//! Everything runs in one process on loopback: a fake config service (WebSocket), and each
//! module a [`Router`] on a [`Server`] plus a cluster [`Client`] that declares the router's
//! endpoints (each with its method) and the server's address; `orders`' [`HttpClient`] is
//! the `HostsUpgrader` of `inventory`. [`http_modules`] tells the story in plain words; the
//! test suite runs it (`tests/it/http_modules.rs`).

use cluster_client::{
    AddressConfiguration, BoxError, Client, ClientError, ConfigData, EventHandler, HTTP_TRANSPORT,
    ModuleInfo,
};
use cluster_http::validator::Validate;
use cluster_http::{ApiError, CallContext, CallError, Endpoint, HttpClient, Router, Server};
use cluster_testkit::FakeConfigService;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The longest any step may take before the story fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The module that keeps the stock.
pub const INVENTORY: &str = "inventory";
/// The module that takes orders and calls `inventory`.
pub const ORDERS: &str = "orders";
/// `inventory`'s endpoint that reserves items.
pub const RESERVE: &str = "inventory/api/reserve";
/// `inventory`'s endpoint that lists the stock.
pub const STOCK: &str = "inventory/api/stock";
/// `orders`' endpoint.
pub const CREATE: &str = "orders/api/create";
/// `inventory`'s business error: no such item.
pub const UNKNOWN_SKU: i64 = 2001;
/// `inventory`'s business error: not enough of it.
pub const OUT_OF_STOCK: i64 = 2002;

/// `POST inventory/api/reserve`'s request.
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[validate(crate = "cluster_http::validator")]
#[serde(rename_all = "camelCase")]
pub struct ReserveRequest {
    /// The item.
    #[validate(length(min = 1))]
    pub sku: String,
    /// How many.
    #[validate(range(min = 1, max = 100))]
    pub count: u32,
}

/// `POST inventory/api/reserve`'s response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The reservation.
    pub reservation_id: String,
    /// The item.
    pub sku: String,
    /// How many.
    pub count: u32,
    /// The request id `inventory` saw (the caller's, passed on by `orders`).
    pub request_id: String,
}

/// `POST orders/api/create`'s request.
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[validate(crate = "cluster_http::validator")]
#[serde(rename_all = "camelCase")]
pub struct CreateOrder {
    /// The item.
    #[validate(length(min = 1))]
    pub sku: String,
    /// How many.
    #[validate(range(min = 1, max = 100))]
    pub count: u32,
    /// Who orders, an email address.
    #[validate(email)]
    pub customer: String,
}

/// `POST orders/api/create`'s response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// The order.
    pub order_id: String,
    /// Who ordered.
    pub customer: String,
    /// What `inventory` reserved for it.
    pub reservation: Reservation,
}

/// What the story saw, for the tests.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The endpoints `inventory` declared, as the config service got them: `METHOD path`.
    pub declared: Vec<String>,
    /// The orders created.
    pub orders: Vec<Order>,
    /// The answer to an order that fails `orders`' validation.
    pub invalid: Option<ApiError>,
    /// The answer to an order of an unknown item: `inventory`'s error, passed on.
    pub unknown: Option<ApiError>,
    /// The status and `Allow` header of `GET orders/api/create`.
    pub wrong_method: Option<(u16, String)>,
    /// The status and body of a path `orders` does not serve.
    pub unknown_path: Option<(u16, String)>,
    /// The stock at the end, by item.
    pub stock: BTreeMap<String, u32>,
}

fn schema() -> Result<ConfigData, BoxError> {
    Ok(ConfigData::from_json(
        "1.0.0",
        r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#,
        "{}",
    )?)
}

/// `inventory`'s router, with its stock: apples and pears.
#[must_use]
pub fn inventory_router() -> Router {
    let stock = Arc::new(Mutex::new(BTreeMap::from([
        ("apple".to_owned(), 10_u32),
        ("pear".to_owned(), 3),
    ])));
    let reservations = Arc::new(AtomicU64::new(0));
    let listed = Arc::clone(&stock);
    Router::new()
        .handle_validated(
            Endpoint::post(RESERVE),
            move |ctx: CallContext, req: ReserveRequest| {
                let result = reserve(&stock, &reservations, &ctx, req);
                async move { result }
            },
        )
        .expect("distinct endpoints")
        .handle_without_body(Endpoint::get(STOCK), move |_: CallContext| {
            let stock = listed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            async move { Ok::<_, ApiError>(stock) }
        })
        .expect("distinct endpoints")
}

fn reserve(
    stock: &Mutex<BTreeMap<String, u32>>,
    reservations: &AtomicU64,
    ctx: &CallContext,
    req: ReserveRequest,
) -> Result<Reservation, ApiError> {
    let mut stock = stock.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(left) = stock.get_mut(&req.sku) else {
        return Err(ApiError::business(UNKNOWN_SKU, "unknown sku").with_detail("sku", req.sku));
    };
    if *left < req.count {
        return Err(ApiError::business(OUT_OF_STOCK, "not enough stock")
            .with_detail("sku", req.sku)
            .with_detail("available", *left));
    }
    *left -= req.count;
    let n = reservations.fetch_add(1, Ordering::Relaxed) + 1;
    Ok(Reservation {
        reservation_id: format!("r-{n}"),
        sku: req.sku,
        count: req.count,
        request_id: ctx.request_id().to_owned(),
    })
}

/// `orders`' router: `POST orders/api/create` reserves the items in `inventory` (whose
/// instances `inventory` follows) and answers the order; an API error of `inventory` is
/// answered as it came.
#[must_use]
pub fn orders_router(inventory: HttpClient) -> Router {
    let orders = Arc::new(AtomicU64::new(0));
    Router::new()
        .handle_validated(
            Endpoint::post(CREATE),
            move |ctx: CallContext, req: CreateOrder| {
                let inventory = inventory.clone();
                let orders = Arc::clone(&orders);
                async move {
                    let reservation: Reservation = inventory
                        .post(RESERVE)
                        // The caller's request id goes on, as isp-kit's client sends it.
                        .request_id(ctx.request_id())
                        .json_body(&ReserveRequest {
                            sku: req.sku,
                            count: req.count,
                        })
                        .json()
                        .await?; // inventory's API error, passed on as it came
                    let n = orders.fetch_add(1, Ordering::Relaxed) + 1;
                    Ok::<_, CallError>(Order {
                        order_id: format!("o-{n}"),
                        customer: req.customer,
                        reservation,
                    })
                }
            },
        )
        .expect("one endpoint")
}

/// One module: its server, its cluster client, the client's run.
struct RunningModule {
    client: Client,
    run: JoinHandle<Result<(), ClientError>>,
    server: Server,
}

/// A module as isp-kit's bootstrap would start it: the listener first (its address is what
/// the module declares), then the declaration and the cluster client, then the server,
/// which stops once the module has left the cluster.
async fn start_module(
    config_host: &str,
    name: &str,
    router: Router,
    handler: EventHandler,
) -> Result<RunningModule, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let module = ModuleInfo {
        module_name: name.to_owned(),
        module_version: "1.0.0".to_owned(),
        lib_version: env!("CARGO_PKG_VERSION").to_owned(),
        transport: HTTP_TRANSPORT.to_owned(),
        // isp-kit's HTTP modules declare their address as `grpcOuterAddress` too.
        grpc_outer_address: AddressConfiguration::new(
            addr.ip().to_string(),
            addr.port().to_string(),
        ),
        endpoints: router.descriptors(),
        ..ModuleInfo::default()
    };
    let client = Client::new(module, schema()?, [config_host.to_owned()])?;
    let server = Server::builder(router)
        .shutdown_with(&client)
        .serve(listener)?;
    let run = tokio::spawn({
        let client = client.clone();
        async move { client.run(handler).await }
    });
    Ok(RunningModule {
        client,
        run,
        server,
    })
}

impl RunningModule {
    /// Leaves the cluster, then waits for the server to stop.
    async fn stop(self, name: &str) -> Result<(), BoxError> {
        self.client.close().await;
        self.run.await??;
        step(&format!("{name}'s server to stop"), self.server.wait()).await??;
        Ok(())
    }
}

async fn step<T>(what: &str, future: impl Future<Output = T>) -> Result<T, BoxError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| format!("timed out after {STEP_TIMEOUT:?} waiting for {what}").into())
}

/// The API error of a call that must fail with one.
fn api_error<T: std::fmt::Debug>(result: Result<T, CallError>) -> Result<ApiError, BoxError> {
    match result {
        Err(CallError::Api(error)) => Ok(error),
        other => Err(format!("expected an API error, got {other:?}").into()),
    }
}

/// Runs the story, writing what happens to `out`.
///
/// # Errors
/// When a step fails, ends otherwise than told, or takes longer than [`STEP_TIMEOUT`].
pub async fn http_modules(mut out: impl Write) -> Result<Report, BoxError> {
    let mut report = Report::default();
    let service = FakeConfigService::new();
    let config_host = service.listen_ws("127.0.0.1:0").await?.to_string();
    writeln!(out, "1. A fake config service listens on {config_host}.")?;

    let inventory = start_module(
        &config_host,
        INVENTORY,
        inventory_router(),
        EventHandler::new(),
    )
    .await?;
    let declared = service
        .wait_ready_instances(INVENTORY, 1, STEP_TIMEOUT)
        .await?;
    report.declared = declared[0]
        .endpoints
        .iter()
        .map(|e| format!("{} {}", e.http_method, e.path))
        .collect();
    writeln!(
        out,
        "2. {INVENTORY} serves HTTP at {} and joins the cluster with transport {:?}, declaring {}.",
        inventory.server.local_addr(),
        declared[0].transport,
        report.declared.join(", ")
    )?;

    // orders: its HttpClient follows inventory's instances (it is the HostsUpgrader).
    let to_inventory = HttpClient::default();
    let orders = start_module(
        &config_host,
        ORDERS,
        orders_router(to_inventory.clone()),
        EventHandler::new().require_module(INVENTORY, to_inventory.clone()),
    )
    .await?;
    let hosts = step("inventory's address", to_inventory.wait_for(1)).await?;
    service
        .wait_ready_instances(ORDERS, 1, STEP_TIMEOUT)
        .await?;
    writeln!(
        out,
        "3. {ORDERS} serves POST {CREATE} at {} and requires {INVENTORY}; the cluster delivers its address: {hosts:?}.",
        orders.server.local_addr()
    )?;

    // The caller: what isp-kit's gateway would be, calling orders where it listens.
    let caller = HttpClient::new([orders.server.local_addr().to_string()]);
    writeln!(
        out,
        "4. A caller (where isp-kit's gateway would be) calls {ORDERS}:"
    )?;
    let order: Order = caller
        .post(CREATE)
        .request_id("order-1")
        .json_body(&serde_json::json!({"sku": "apple", "count": 2, "customer": "ann@example.com"}))
        .json()
        .await?;
    writeln!(
        out,
        "   2 apples for ann: {} with reservation {} from {INVENTORY}, which saw the caller's request id {:?}.",
        order.order_id, order.reservation.reservation_id, order.reservation.request_id
    )?;
    report.orders.push(order);

    // Go's decoder matches keys to fields ignoring case; so does the router, by default.
    let order: Order = caller
        .post(CREATE)
        .raw_body(r#"{"SKU":"pear","Count":1,"Customer":"bob@example.com"}"#)
        .json()
        .await?;
    writeln!(
        out,
        "   {{\"SKU\":\"pear\",\"Count\":1,…}} is read as Go reads it (keys ignoring case): {} for {}.",
        order.order_id, order.customer
    )?;
    report.orders.push(order);

    let invalid = api_error(
        caller
            .post(CREATE)
            .json_body(&serde_json::json!({"sku": "", "count": 0, "customer": "nobody"}))
            .json::<Order>()
            .await,
    )?;
    writeln!(
        out,
        "   An order that fails validation: {} {}, errorCode {}, {:?}, details {}.",
        invalid.status.as_u16(),
        invalid.status.canonical_reason().unwrap_or_default(),
        invalid.error_code,
        invalid.error_message,
        serde_json::Value::Object(invalid.details.clone())
    )?;
    report.invalid = Some(invalid);

    let unknown = api_error(
        caller
            .post(CREATE)
            .json_body(
                &serde_json::json!({"sku": "plum", "count": 1, "customer": "cid@example.com"}),
            )
            .json::<Order>()
            .await,
    )?;
    writeln!(
        out,
        "   Plums: {INVENTORY}'s business error, passed on by {ORDERS} as it came: {} errorCode {}, {:?}, details {}.",
        unknown.status.as_u16(),
        unknown.error_code,
        unknown.error_message,
        serde_json::Value::Object(unknown.details.clone())
    )?;
    report.unknown = Some(unknown);

    let wrong = caller.get(CREATE).send().await?;
    let allow = wrong
        .headers()
        .get(cluster_http::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    writeln!(
        out,
        "   GET {CREATE}: {} with Allow: {allow}, as Go's router answers.",
        wrong.status().as_u16()
    )?;
    report.wrong_method = Some((wrong.status().as_u16(), allow));
    let missing = caller.post("orders/api/cancel").send().await?;
    let body = String::from_utf8_lossy(missing.body()).into_owned();
    writeln!(
        out,
        "   POST orders/api/cancel: {} {:?}.",
        missing.status().as_u16(),
        body
    )?;
    report.unknown_path = Some((missing.status().as_u16(), body));

    report.stock = to_inventory.get(STOCK).json().await?;
    writeln!(
        out,
        "5. GET {STOCK} (no body) through {ORDERS}' client: {:?}.",
        report.stock
    )?;

    orders.stop(ORDERS).await?;
    inventory.stop(INVENTORY).await?;
    service.stop().await;
    writeln!(
        out,
        "6. Both modules leave the cluster; their servers stopped after them."
    )?;
    Ok(report)
}
