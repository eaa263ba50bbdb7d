//! The admin API's error answers: a status and a JSON body, ours (`{"error"}`) or
//! isp-kit's (`{"errorCode", "errorMessage", "details"?}`), logged when sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An error answer: a status and a JSON body; logged when it is turned into a response.
pub(super) struct AdminError {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

impl AdminError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    pub(super) fn unknown_module(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("unknown module {name:?}: it never connected"),
        )
    }

    /// isp-kit's `apierrors.Error` of a business error (`InvalidArgument` → HTTP 400).
    pub(super) fn isp(code: u32, message: &str, details: Option<Value>) -> Self {
        let mut body = Map::new();
        body.insert("errorCode".into(), code.into());
        body.insert("errorMessage".into(), message.into());
        if let Some(details) = details {
            body.insert("details".into(), details);
        }
        Self {
            status: StatusCode::BAD_REQUEST,
            body: Value::Object(body),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status.as_u16(), body = %self.body, "admin request refused");
        (self.status, axum::Json(self.body)).into_response()
    }
}
