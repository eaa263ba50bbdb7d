//! isp-kit's API errors (`http/apierrors`), what a handler may fail with, and why a call
//! failed.

use crate::json;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// The `errorCode` of an internal error (Go: `apierrors.ErrCodeInternal`).
pub const ERROR_CODE_INTERNAL: i64 = 900;
/// The `errorCode` of a request body that does not decode or validate (Go uses the HTTP
/// status, `http.StatusBadRequest`, as the code).
pub const ERROR_CODE_BAD_REQUEST: i64 = 400;
/// The message of an internal error (Go: `NewInternalServiceError`), also the answer to a
/// handler's plain error or panic.
pub const INTERNAL_SERVICE_ERROR: &str = "internal service error";
/// The message of a request body that fails its validation (Go: `JsonRequestExtractor`).
pub const INVALID_REQUEST_BODY: &str = "invalid request body";
/// The content type of every JSON body this crate writes.
pub const APPLICATION_JSON: &str = "application/json";

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An API error (Go: `apierrors.Error`): the HTTP status it is answered with, a code and a
/// message for the caller, and optional details.
///
/// Its body is isp-kit's, byte for byte: `{"errorCode":…,"errorMessage":…,"details":{…}}`
/// and a newline (Go's JSON encoder ends what it writes with one), `details` left out when
/// empty, `<`, `>`, `&`, U+2028 and U+2029 escaped as Go escapes them, with
/// `Content-Type: application/json`.
///
/// ```
/// use cluster_http::ApiError;
///
/// let error = ApiError::business(1001, "no such order").with_detail("orderId", 7);
/// assert_eq!(error.status().as_u16(), 400);
/// assert_eq!(
///     error.to_json(),
///     b"{\"errorCode\":1001,\"errorMessage\":\"no such order\",\"details\":{\"orderId\":7}}\n"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// The application's error code (`errorCode`); `0` means "not an API error" to a caller.
    #[serde(default)]
    pub error_code: i64,
    /// The message for the caller (`errorMessage`).
    #[serde(default)]
    pub error_message: String,
    /// Details (`details`), left out of the JSON when empty; `null` reads as empty.
    #[serde(
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub details: Map<String, Value>,
    /// The HTTP status it is answered with (not in the JSON; a caller reads it from the
    /// response).
    #[serde(skip, default = "default_status")]
    pub status: StatusCode,
}

fn default_status() -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "errorCode: {}, errorMessage: {} (http status {})",
            self.error_code,
            self.error_message,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// An error with any status (Go: `apierrors.New`).
    #[must_use]
    pub fn new(status: StatusCode, error_code: i64, error_message: impl Into<String>) -> Self {
        Self {
            error_code,
            error_message: error_message.into(),
            details: Map::new(),
            status,
        }
    }

    /// A business error: `400 Bad Request` (Go: `apierrors.NewBusinessError`).
    #[must_use]
    pub fn business(error_code: i64, error_message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error_code, error_message)
    }

    /// An internal error: `500`, errorCode 900, "internal service error" (Go:
    /// `apierrors.NewInternalServiceError`). Log the cause yourself: it never reaches the
    /// caller.
    #[must_use]
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ERROR_CODE_INTERNAL,
            INTERNAL_SERVICE_ERROR,
        )
    }

    /// A request the server cannot take: business error 400 with errorCode 400.
    #[must_use]
    pub fn bad_request(error_message: impl Into<String>) -> Self {
        Self::business(ERROR_CODE_BAD_REQUEST, error_message)
    }

    /// A request body that failed its validation: business error 400, errorCode 400,
    /// "invalid request body", one detail per field (see [`crate::validation`]).
    #[must_use]
    pub fn from_validation(errors: &validator::ValidationErrors) -> Self {
        Self::bad_request(INVALID_REQUEST_BODY).with_details(crate::validation::details(errors))
    }

    /// Replaces the details (Go: `WithDetails`).
    #[must_use]
    pub fn with_details(mut self, details: Map<String, Value>) -> Self {
        self.details = details;
        self
    }

    /// Adds one detail.
    #[must_use]
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The status it is answered with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body isp-kit writes: `{"errorCode":…,"errorMessage":…,"details":…}` and `\n`.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        // A map of JSON values always serialises.
        json::encode(self).unwrap_or_default()
    }

    /// The whole answer: its status, `Content-Type: application/json`, its body.
    #[must_use]
    pub fn to_response(&self) -> http::Response<Bytes> {
        let mut response = http::Response::new(Bytes::from(self.to_json()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(APPLICATION_JSON),
        );
        response
    }

    /// The API error an answer carries: a JSON object with a non-zero `errorCode` (what
    /// isp-kit's error handler writes), with the answer's status; `None` for anything else.
    #[must_use]
    pub fn from_body(status: StatusCode, body: &[u8]) -> Option<Self> {
        let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body[start] != b'{' {
            return None;
        }
        let mut error: Self = serde_json::from_slice(body).ok()?;
        if error.error_code == 0 {
            return None;
        }
        error.status = status;
        Some(error)
    }
}

/// What a handler may fail with.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// An API error: answered with its status and body, logged at WARN below 500, at ERROR
    /// from 500.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Any other error: logged at ERROR, and answered `500` with isp-kit's internal service
    /// error, the cause hidden (Go's `ErrorHandler` does the same).
    #[error(transparent)]
    Other(BoxError),
}

impl HandlerError {
    /// Wraps any error as [`HandlerError::Other`].
    pub fn other(error: impl Into<BoxError>) -> Self {
        Self::Other(error.into())
    }
}

/// A handler that calls another module can return that call's error with `?`: an API error
/// the callee answered ([`CallError::Api`]) is passed on as it came (same status, code,
/// message and details); every other failure (no host, a timeout, a status without isp-kit's
/// body, a transport error) is [`HandlerError::Other`]: logged, and answered with the
/// internal service error, as an isp-kit handler returning its client's error is.
impl From<CallError> for HandlerError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Api(error) => Self::Api(error),
            other => Self::Other(Box::new(other)),
        }
    }
}

/// Why a call failed (client side).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No host to call.
    #[error("http client: no hosts to call")]
    NoHosts,
    /// The callee answered with isp-kit's error body (a non-zero `errorCode`).
    #[error("{0}")]
    Api(ApiError),
    /// The callee answered with a status other than 2xx, without isp-kit's error body.
    #[error("http status {}: {}", .status.as_u16(), String::from_utf8_lossy(.body))]
    Status {
        /// The status.
        status: StatusCode,
        /// The body, as it came.
        body: Bytes,
    },
    /// The call took longer than its timeout.
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// No host could be connected to (each was tried once); the last failure. (Its text
    /// holds the whole chain of causes.)
    #[error("http client: connect to {host}: {}", crate::client::chain(&**.error))]
    Connect {
        /// The last host tried.
        host: String,
        /// Why connecting to it failed.
        error: BoxError,
    },
    /// The request or response failed on the way, after a connection was made (the callee
    /// may have handled the request: it is not sent to another host). (Its text holds the
    /// whole chain of causes.)
    #[error("http client: {}", crate::client::chain(&**.0))]
    Transport(BoxError),
    /// The response body was over the client's limit.
    #[error("http client: response body over {0} bytes")]
    ResponseTooLarge(usize),
    /// The request could not be made: a path, header name or value that HTTP does not allow.
    #[error("http client: invalid request: {0}")]
    InvalidRequest(String),
    /// The request body did not encode to JSON.
    #[error("marshal json request body: {0}")]
    EncodeRequest(serde_json::Error),
    /// The response body did not decode into the type asked for.
    #[error("unmarshal json response body: {0}")]
    DecodeResponse(serde_json::Error),
}

impl CallError {
    /// The error for a non-2xx answer: [`CallError::Api`] when the body is isp-kit's error,
    /// else [`CallError::Status`].
    #[must_use]
    pub fn from_response(status: StatusCode, body: Bytes) -> Self {
        match ApiError::from_body(status, &body) {
            Some(error) => Self::Api(error),
            None => Self::Status { status, body },
        }
    }

    /// The status the callee answered, when it answered.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api(error) => Some(error.status),
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API error, when the callee answered with one.
    #[must_use]
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api(error) => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_reads_back_with_the_answers_status() {
        let error = ApiError::new(StatusCode::CONFLICT, 7, "taken").with_detail("a", "b");
        let back = ApiError::from_body(StatusCode::CONFLICT, &error.to_json()).unwrap();
        assert_eq!(back, error);
        assert!(ApiError::from_body(StatusCode::BAD_REQUEST, b"{\"errorCode\":0}").is_none());
        assert!(ApiError::from_body(StatusCode::BAD_REQUEST, b"[1]").is_none());
        assert!(ApiError::from_body(StatusCode::NOT_FOUND, b"404 page not found\n").is_none());
        let null_details = br#"{"errorCode":3,"errorMessage":"x","details":null}"#;
        assert!(
            ApiError::from_body(StatusCode::BAD_REQUEST, null_details)
                .unwrap()
                .details
                .is_empty()
        );
    }

    #[test]
    fn only_a_callees_api_error_passes_through_a_handler() {
        let api = ApiError::new(StatusCode::CONFLICT, 7, "taken");
        match HandlerError::from(CallError::Api(api.clone())) {
            HandlerError::Api(error) => assert_eq!(error, api),
            other => panic!("{other:?}"),
        }
        let status = CallError::Status {
            status: StatusCode::BAD_GATEWAY,
            body: Bytes::new(),
        };
        assert!(matches!(HandlerError::from(status), HandlerError::Other(_)));
        assert!(matches!(
            HandlerError::from(CallError::Timeout(Duration::from_secs(1))),
            HandlerError::Other(_)
        ));
    }
}
