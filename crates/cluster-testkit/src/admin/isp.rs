//! The isp-config-service paths of the admin API (see the [admin docs](super)): the same
//! requests and answers as isp-config-service v3, over the fake's state.

use super::{AdminError, is_known, null_raw, raw_json};
use crate::service::FakeConfigService;
use crate::state::{ConfigUpdateError, ConnId, ReadyInstance};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use cluster_proto::payload::BackendDeclaration;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// `router` with the isp-config-service paths.
pub(super) fn add_routes(router: Router<FakeConfigService>) -> Router<FakeConfigService> {
    router
        .route(
            "/config/config/get_active_config_by_module_name",
            post(get_active_config),
        )
        .route(
            "/config/config/create_update_config",
            post(create_update_config),
        )
        .route("/config/module/get_modules_info", post(modules_info))
        .route("/config/routing/get_routes", post(routes))
        // The real service's infra server answers it for any method (`InfraServer.Handle`);
        // the two in use: POST (its swagger docs), GET (Prometheus, the service's own test).
        .route(
            "/internal/metrics/autodiscovery",
            get(metrics_autodiscovery).post(metrics_autodiscovery),
        )
}

/// Go's zero `time.Time` as isp-kit encodes it: the fake records no times.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// isp-config-service's error codes (`domain/errors.go`).
mod isp_code {
    pub(super) const BAD_REQUEST: u32 = 400;
    pub(super) const MODULE_NOT_FOUND: u32 = 2001;
    pub(super) const CONFIG_NOT_FOUND: u32 = 2002;
    pub(super) const INVALID_CONFIG: u32 = 2003;
    pub(super) const VERSION_CONFLICT: u32 = 2004;
    pub(super) const SCHEMA_NOT_FOUND: u32 = 2005;
}

/// `domain.Config` (plus `isChanged` for `CreateUpdateConfigResponse`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspConfig {
    id: String,
    name: String,
    module_id: String,
    valid: bool,
    data: Box<RawValue>,
    version: u64,
    active: bool,
    created_at: &'static str,
    updated_at: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_changed: Option<bool>,
}

impl IspConfig {
    fn new(module: &str, data: &[u8], version: u64) -> Self {
        Self {
            id: module.to_owned(),
            name: module.to_owned(),
            module_id: module.to_owned(),
            // Go validates only when listing a module's configs; these two paths say `true`.
            valid: true,
            data: raw_json(data),
            version,
            active: true,
            created_at: GO_ZERO_TIME,
            updated_at: GO_ZERO_TIME,
            is_changed: None,
        }
    }
}

/// `domain.Connection`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspConnection {
    id: String,
    module_name: String,
    lib_version: String,
    version: String,
    address: IspAddress,
    endpoints: Vec<IspEndpoint>,
    established_at: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspAddress {
    ip: String,
    port: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspEndpoint {
    path: String,
    inner: bool,
}

impl IspConnection {
    fn new(conn: ConnId, declaration: BackendDeclaration) -> Self {
        let mut endpoints: Vec<IspEndpoint> = declaration
            .endpoints
            .into_iter()
            .map(|e| IspEndpoint {
                path: e.path,
                inner: e.inner,
            })
            .collect();
        endpoints.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            id: conn.0.to_string(),
            module_name: declaration.module_name,
            lib_version: declaration.lib_version,
            version: declaration.version,
            address: IspAddress {
                ip: declaration.address.ip,
                port: declaration.address.port,
            },
            endpoints,
            established_at: GO_ZERO_TIME,
        }
    }

    fn from_ready(instance: ReadyInstance) -> Self {
        Self::new(instance.conn, instance.declaration)
    }
}

/// `domain.ModuleInfo`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IspModuleInfo {
    id: String,
    name: String,
    active: bool,
    last_connected_at: Option<&'static str>,
    last_disconnected_at: Option<&'static str>,
    config_schema: Option<Box<RawValue>>,
    status: Option<Vec<IspConnection>>,
    created_at: &'static str,
}

/// Decodes an isp request body, or answers as isp-kit does when it cannot.
fn isp_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| {
        AdminError::isp(
            isp_code::BAD_REQUEST,
            "invalid request body",
            Some(json!({ "body": e.to_string() })),
        )
    })
}

fn isp_required(field: &str) -> AdminError {
    AdminError::isp(
        isp_code::BAD_REQUEST,
        "invalid request body",
        Some(json!({ field: "required" })),
    )
}

/// `domain.GetByModuleNameRequest`.
#[derive(Deserialize)]
struct GetByModuleNameRequest {
    #[serde(rename = "moduleName", alias = "ModuleName", default)]
    module_name: Option<String>,
}

async fn get_active_config(
    State(service): State<FakeConfigService>,
    body: Bytes,
) -> Result<axum::Json<IspConfig>, AdminError> {
    let request: GetByModuleNameRequest = isp_body(&body)?;
    let name = request
        .module_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| isp_required("moduleName"))?;
    if !is_known(&service, &name) {
        return Err(AdminError::isp(
            isp_code::MODULE_NOT_FOUND,
            "module not found",
            None,
        ));
    }
    let config = service.active_config(&name).ok_or_else(|| {
        AdminError::isp(isp_code::CONFIG_NOT_FOUND, "active config not found", None)
    })?;
    Ok(axum::Json(IspConfig::new(
        &name,
        &config.data,
        config.version,
    )))
}

/// `domain.CreateUpdateConfigRequest`.
#[derive(Deserialize)]
struct CreateUpdateConfigRequest {
    #[serde(rename = "id", alias = "Id", default)]
    id: Option<String>,
    #[serde(rename = "name", alias = "Name", default)]
    name: Option<String>,
    #[serde(rename = "moduleId", alias = "ModuleId", default)]
    module_id: Option<String>,
    #[serde(rename = "version", alias = "Version", default)]
    version: Option<u64>,
    #[serde(rename = "data", alias = "Data", default)]
    data: Option<Box<RawValue>>,
    #[serde(rename = "unsafe", alias = "Unsafe", default)]
    unsafe_update: Option<bool>,
}

async fn create_update_config(
    State(service): State<FakeConfigService>,
    body: Bytes,
) -> Result<axum::Json<IspConfig>, AdminError> {
    let request: CreateUpdateConfigRequest = isp_body(&body)?;
    request
        .name
        .as_ref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| isp_required("name"))?;
    let module = request
        .module_id
        .filter(|m| !m.is_empty())
        .ok_or_else(|| isp_required("moduleId"))?;
    let id = request.id.unwrap_or_default();
    if !id.is_empty() && id != module {
        return Err(AdminError::isp(
            isp_code::CONFIG_NOT_FOUND,
            "config not found",
            None,
        ));
    }
    // The real service checks the version of an update (an `id` is given) only.
    let version = (!id.is_empty()).then(|| request.version.unwrap_or(0));
    let data = request.data.unwrap_or_else(null_raw);
    let data = Bytes::copy_from_slice(data.get().as_bytes());
    let unsafe_update = request.unsafe_update.unwrap_or(false);
    if !unsafe_update && !is_known(&service, &module) {
        return Err(AdminError::isp(
            isp_code::SCHEMA_NOT_FOUND,
            "config schema not found",
            None,
        ));
    }
    let result = if unsafe_update {
        service.set_config_unsafe(&module, data.clone(), version)
    } else {
        service.set_config(&module, data.clone(), version)
    };
    let change = result.map_err(|err| isp_config_error(&err))?;
    let data = if change.changed {
        data
    } else {
        service
            .active_config(&module)
            .map_or(data, |active| active.data)
    };
    let mut config = IspConfig::new(&module, &data, change.version);
    config.is_changed = Some(change.changed);
    Ok(axum::Json(config))
}

fn isp_config_error(err: &ConfigUpdateError) -> AdminError {
    match err {
        ConfigUpdateError::Invalid { issues, .. } => {
            let details: Map<String, Value> = issues
                .iter()
                .map(|i| {
                    let field = if i.instance_path.is_empty() {
                        "(root)".to_owned()
                    } else {
                        i.instance_path.clone()
                    };
                    (field, Value::from(i.message.clone()))
                })
                .collect();
            AdminError::isp(
                isp_code::INVALID_CONFIG,
                "invalid config",
                Some(Value::Object(details)),
            )
        }
        ConfigUpdateError::VersionConflict { .. } => AdminError::isp(
            isp_code::VERSION_CONFLICT,
            "someone has updated the config",
            None,
        ),
        ConfigUpdateError::NoSchema { .. } => {
            AdminError::isp(isp_code::SCHEMA_NOT_FOUND, "config schema not found", None)
        }
        ConfigUpdateError::InvalidModuleName { reason, .. } => AdminError::isp(
            isp_code::BAD_REQUEST,
            "invalid request body",
            Some(json!({ "moduleId": reason.to_string() })),
        ),
        // NotAnObject, InvalidSchema, and whatever comes later: the config cannot be checked.
        _ => AdminError::isp(
            isp_code::INVALID_CONFIG,
            "invalid config",
            Some(json!({ "(root)": err.to_string() })),
        ),
    }
}

async fn modules_info(State(service): State<FakeConfigService>) -> axum::Json<Vec<IspModuleInfo>> {
    let infos = service
        .modules()
        .into_iter()
        .filter_map(|name| {
            let snapshot = service.module(&name)?;
            let status: Vec<IspConnection> = snapshot
                .ready
                .into_iter()
                .map(IspConnection::from_ready)
                .collect();
            Some(IspModuleInfo {
                id: name.clone(),
                active: !status.is_empty(),
                last_connected_at: None,
                last_disconnected_at: None,
                config_schema: snapshot.schema.map(|s| raw_json(&s.schema)),
                status: (!status.is_empty()).then_some(status),
                created_at: GO_ZERO_TIME,
                name,
            })
        })
        .collect();
    axum::Json(infos)
}

async fn routes(State(service): State<FakeConfigService>) -> axum::Json<Vec<IspConnection>> {
    axum::Json(
        service
            .routing_table()
            .into_iter()
            .map(IspConnection::from_ready)
            .collect(),
    )
}

/// `domain.PrometheusTargets`: one target group of Prometheus' HTTP service discovery.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PrometheusTargets {
    targets: [String; 1],
    /// `null` when empty: a Go client sends a nil map as `null`, and the real service
    /// answers with the map as stored.
    labels: Option<BTreeMap<String, String>>,
}

/// `/internal/metrics/autodiscovery` (`domain.AutodiscoveryResponse`): the ready instances
/// that declared `metricsAutodiscovery`, by module name, then newest first.
async fn metrics_autodiscovery(
    State(service): State<FakeConfigService>,
) -> axum::Json<Vec<PrometheusTargets>> {
    // Newest first; the stable sort keeps that order within a module.
    let mut declared: Vec<BackendDeclaration> = service
        .routing_table()
        .into_iter()
        .map(|instance| instance.declaration)
        .filter(|declaration| declaration.metrics_autodiscovery.is_some())
        .collect();
    declared.sort_by(|a, b| a.module_name.cmp(&b.module_name));
    axum::Json(
        declared
            .into_iter()
            .filter_map(|declaration| declaration.metrics_autodiscovery)
            .map(|metrics| PrometheusTargets {
                targets: [metrics.address],
                labels: (!metrics.labels.is_empty()).then_some(metrics.labels),
            })
            .collect(),
    )
}
