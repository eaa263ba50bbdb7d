//! Our own admin routes (see the [admin docs](super)): `/modules…` and `/routes`.

use super::{AdminError, is_known, raw_json};
use crate::service::FakeConfigService;
use crate::state::{ConfigUpdateError, ConnectionInfo, ErrorEvent};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cluster_proto::event;
use cluster_proto::payload::{self, BackendDeclaration};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;

/// `router` with our routes added.
pub(super) fn add_routes(router: Router<FakeConfigService>) -> Router<FakeConfigService> {
    router
        .route("/modules", get(list_modules))
        .route("/modules/{name}/config", get(get_config).put(put_config))
        .route("/modules/{name}/error", post(send_error))
        .route("/modules/{name}/disconnect", post(disconnect))
        .route("/routes", get(routing_table))
}

/// A module name from the path: decoded, and one a module could have.
struct ModuleName(String);

impl<S: Send + Sync> FromRequestParts<S> for ModuleName {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, format!("bad path: {e}")))?;
        event::check_module_name(&name).map_err(|reason| {
            AdminError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid module name: {reason}"),
            )
        })?;
        Ok(Self(name))
    }
}

fn json_response(body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// The query parameters, refusing any not in `allowed`.
fn query_params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, AdminError> {
    let Query(params) = query
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, format!("bad query string: {e}")))?;
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown query parameter {unknown:?} (known: {allowed:?})"),
        ));
    }
    Ok(params)
}

fn parse_flag(name: &str, value: Option<&String>) -> Result<bool, AdminError> {
    match value.map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("" | "true" | "1") => Ok(true),
        Some(other) => Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} must be true or false, not {other:?}"),
        )),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModuleView {
    name: String,
    connections: Vec<ConnectionView>,
    instances: Vec<BackendDeclaration>,
    config_version: Option<u64>,
    config: Option<Box<RawValue>>,
    schema: Option<Box<RawValue>>,
    module_version: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionView {
    id: u64,
    peer: String,
    ready: bool,
    required_modules: Vec<String>,
    require_routes: bool,
    config_subscribed: bool,
}

impl From<ConnectionInfo> for ConnectionView {
    fn from(info: ConnectionInfo) -> Self {
        Self {
            id: info.id.0,
            peer: info.peer,
            ready: info.ready.is_some(),
            required_modules: info.required_modules,
            require_routes: info.wants_routes,
            config_subscribed: info.config_subscribed,
        }
    }
}

async fn list_modules(State(service): State<FakeConfigService>) -> axum::Json<Vec<ModuleView>> {
    let views = service
        .modules()
        .into_iter()
        .filter_map(|name| {
            let snapshot = service.module(&name)?;
            let connections = snapshot
                .connections
                .iter()
                .filter_map(|id| service.connection(*id))
                .map(ConnectionView::from)
                .collect();
            Some(ModuleView {
                connections,
                instances: snapshot.ready.into_iter().map(|i| i.declaration).collect(),
                config_version: snapshot.config.as_ref().map(|c| c.version),
                config: snapshot.config.as_ref().map(|c| raw_json(&c.data)),
                schema: snapshot.schema.as_ref().map(|s| raw_json(&s.schema)),
                module_version: snapshot.schema.map(|s| s.module_version),
                name,
            })
        })
        .collect();
    axum::Json(views)
}

async fn get_config(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
) -> Result<Response, AdminError> {
    match service.active_config(&name) {
        Some(config) => Ok(json_response(config.data)),
        None if is_known(&service, &name) => Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("module {name:?} has no config yet"),
        )),
        None => Err(AdminError::unknown_module(&name)),
    }
}

async fn put_config(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let params = query_params(query, &["version", "unsafe"])?;
    let version = params
        .get("version")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                AdminError::new(
                    StatusCode::BAD_REQUEST,
                    format!("version must be a non-negative integer, not {v:?}"),
                )
            })
        })
        .transpose()?;
    let unsafe_update = parse_flag("unsafe", params.get("unsafe"))?;
    if !unsafe_update && !is_known(&service, &name) {
        return Err(AdminError::unknown_module(&name));
    }
    let result = if unsafe_update {
        service.set_config_unsafe(&name, body, version)
    } else {
        service.set_config(&name, body, version)
    };
    match result {
        Ok(change) => Ok(axum::Json(json!({
            "version": change.version,
            "changed": change.changed,
            "notified": change.notified,
        }))
        .into_response()),
        Err(err) => Err(config_error(&err)),
    }
}

fn config_error(err: &ConfigUpdateError) -> AdminError {
    match err {
        ConfigUpdateError::Invalid { issues, .. } => AdminError {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "error": err.to_string(),
                "issues": issues
                    .iter()
                    .map(|i| json!({ "instancePath": i.instance_path, "message": i.message }))
                    .collect::<Vec<_>>(),
            }),
        },
        ConfigUpdateError::VersionConflict { active, .. } => AdminError {
            status: StatusCode::CONFLICT,
            body: json!({ "error": err.to_string(), "activeVersion": active }),
        },
        ConfigUpdateError::TooLarge { .. } => {
            AdminError::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())
        }
        // NotAnObject, NoSchema, InvalidSchema and whatever comes later: the request cannot
        // succeed as it is.
        _ => AdminError::new(StatusCode::BAD_REQUEST, err.to_string()),
    }
}

async fn send_error(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Result<axum::Json<Value>, AdminError> {
    let params = query_params(query, &["event"])?;
    let kind = match params.get("event").map(String::as_str) {
        Some("ERROR_CONFIG") => ErrorEvent::Config,
        Some("ERROR_CONNECTION") => ErrorEvent::Connection,
        Some(other) => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                format!("event must be ERROR_CONFIG or ERROR_CONNECTION, not {other:?}"),
            ));
        }
        None => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "the event query parameter is required: ERROR_CONFIG or ERROR_CONNECTION",
            ));
        }
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| AdminError::new(StatusCode::BAD_REQUEST, "the error text must be UTF-8"))?;
    let max = service.limits().max_frame_len;
    if crate::state::frame_len(kind.name(), text.len()) > max {
        return Err(AdminError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the error text would make a frame over the outgoing limit of {max} bytes"),
        ));
    }
    if !is_known(&service, &name) {
        return Err(AdminError::unknown_module(&name));
    }
    let sent = service.send_error(&name, kind, text);
    Ok(axum::Json(json!({ "sent": sent })))
}

async fn disconnect(
    State(service): State<FakeConfigService>,
    ModuleName(name): ModuleName,
) -> Result<axum::Json<Value>, AdminError> {
    if !is_known(&service, &name) {
        return Err(AdminError::unknown_module(&name));
    }
    let closed = service.disconnect_module(&name).await;
    Ok(axum::Json(json!({ "closed": closed })))
}

async fn routing_table(State(service): State<FakeConfigService>) -> Response {
    let table: Vec<BackendDeclaration> = service
        .routing_table()
        .into_iter()
        .map(|i| i.declaration)
        .collect();
    json_response(payload::encode_routing_config(&table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_or_refuse() {
        let v = |s: &str| Some(s.to_owned());
        assert!(!parse_flag("unsafe", None).unwrap_or(true));
        assert!(parse_flag("unsafe", v("").as_ref()).unwrap_or(false));
        assert!(parse_flag("unsafe", v("true").as_ref()).unwrap_or(false));
        assert!(!parse_flag("unsafe", v("0").as_ref()).unwrap_or(true));
        let err = parse_flag("unsafe", v("yes").as_ref())
            .err()
            .map(|e| e.status);
        assert_eq!(err, Some(StatusCode::BAD_REQUEST));
    }
}
