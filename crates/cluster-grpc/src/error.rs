//! Errors on the wire, as isp-kit's `apierrors` shapes them, and the errors of this crate.
//!
//! An API error travels as a gRPC status (the code says the kind: `InvalidArgument` for a
//! business error, `Internal` for an internal one) whose `grpc-status-details-bin` is a
//! `google.rpc.Status` with one detail: an `Any` of type `type.googleapis.com/isp.Message`
//! whose `BytesBody` is the JSON `{"errorCode":…,"errorMessage":…,"details":{…}}` (`details`
//! left out when empty).

use crate::message::{Body, MESSAGE_TYPE_URL, Message, RpcStatus};
use bytes::Bytes;
use prost::Message as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;
use tonic::{Code, Status};

/// The `errorCode` of an internal error (Go: `apierrors.ErrCodeInternal`).
pub const ERROR_CODE_INTERNAL: i64 = 900;
/// The `errorCode` of a request body that does not decode or validate.
pub const ERROR_CODE_BAD_REQUEST: i64 = 400;
/// The message of an internal error (Go: `NewInternalServiceError`), also the status message
/// of a handler's plain error or panic.
pub const INTERNAL_SERVICE_ERROR: &str = "internal service error";

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An API error (Go: `apierrors.Error`): a code and message for the caller, optional details,
/// and the gRPC status code it travels with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// The application's error code (`errorCode`); `0` means "not an API error" to isp-kit.
    #[serde(default)]
    pub error_code: i64,
    /// The message for the caller (`errorMessage`); also the gRPC status message.
    #[serde(default)]
    pub error_message: String,
    /// Details (`details`), left out of the JSON when empty; `null` reads as empty.
    #[serde(
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub details: Map<String, Value>,
    /// The gRPC status code it travels with (not in the JSON).
    #[serde(skip, default = "default_code")]
    pub grpc_code: Code,
}

fn default_code() -> Code {
    Code::Unknown
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "errorCode: {}, errorMessage: {}",
            self.error_code, self.error_message
        )
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// An error with any gRPC code (Go: `apierrors.New`).
    #[must_use]
    pub fn new(grpc_code: Code, error_code: i64, error_message: impl Into<String>) -> Self {
        Self {
            error_code,
            error_message: error_message.into(),
            details: Map::new(),
            grpc_code,
        }
    }

    /// A business error: `InvalidArgument` (Go: `apierrors.NewBusinessError`).
    #[must_use]
    pub fn business(error_code: i64, error_message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, error_code, error_message)
    }

    /// An internal error: `Internal`, errorCode 900, "internal service error" (Go:
    /// `apierrors.NewInternalServiceError`). Log the cause yourself: it never reaches the
    /// caller.
    #[must_use]
    pub fn internal() -> Self {
        Self::new(Code::Internal, ERROR_CODE_INTERNAL, INTERNAL_SERVICE_ERROR)
    }

    /// A request that does not decode: business error 400.
    #[must_use]
    pub fn bad_request(error_message: impl Into<String>) -> Self {
        Self::business(ERROR_CODE_BAD_REQUEST, error_message)
    }

    /// Replaces the details.
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

    /// The JSON body of the detail: `{"errorCode":…,"errorMessage":…,"details":…}`.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        // A map of JSON values always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The `grpc-status-details-bin` bytes: a `google.rpc.Status` with the code, the message
    /// and one `isp.Message` detail holding [`ApiError::to_json`].
    #[must_use]
    pub fn status_details(&self) -> Bytes {
        let detail = Message::bytes(self.to_json());
        RpcStatus {
            code: self.grpc_code as i32,
            message: self.error_message.clone(),
            details: vec![prost_types::Any {
                type_url: MESSAGE_TYPE_URL.to_owned(),
                value: detail.encode_to_vec(),
            }],
        }
        .encode_to_vec()
        .into()
    }

    /// The gRPC status this error travels as (Go: `GrpcStatusError`).
    #[must_use]
    pub fn to_status(&self) -> Status {
        Status::with_details(
            self.grpc_code,
            self.error_message.clone(),
            self.status_details(),
        )
    }

    /// The API error a status carries (Go: `apierrors.FromError`): the first `isp.Message`
    /// detail whose JSON decodes with a non-zero `errorCode`; `None` otherwise (no details,
    /// undecodable details, another detail type, or errorCode 0).
    #[must_use]
    pub fn from_status(status: &Status) -> Option<Self> {
        let details = status.details();
        if details.is_empty() {
            return None;
        }
        let rpc = RpcStatus::decode(details).ok()?;
        let any = rpc
            .details
            .iter()
            .find(|any| any.type_url.rsplit('/').next() == Some("isp.Message"))?;
        let message = Message::decode(&any.value[..]).ok()?;
        let Some(Body::BytesBody(json)) = message.body else {
            return None;
        };
        let mut error: Self = serde_json::from_slice(&json).ok()?;
        if error.error_code == 0 {
            return None;
        }
        error.grpc_code = status.code();
        Some(error)
    }
}

/// What a handler may fail with.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// An API error: its status, with the detail.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A gRPC status, sent as it is (isp-kit passes a handler's status through).
    #[error("gRPC status {:?}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    /// Any other error: logged, and answered `Internal` "internal service error" without a
    /// detail, as isp-kit does.
    #[error(transparent)]
    Other(BoxError),
}

impl HandlerError {
    /// Wraps any error as [`HandlerError::Other`].
    pub fn other(error: impl Into<BoxError>) -> Self {
        Self::Other(error.into())
    }
}

/// A handler that calls another module can return that call's error with `?`: what the callee
/// answered is passed on as it came, as an isp-kit handler returning a call's error does (its
/// status passes through): [`CallError::Api`] as the same API error and code,
/// [`CallError::Status`] as the same status, a timeout as `DeadlineExceeded`. The caller's own
/// failures (no host, a body that does not encode or decode, bad metadata) are
/// [`HandlerError::Other`]: logged, and answered `Internal`.
impl From<CallError> for HandlerError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Api { code, mut error } => {
                error.grpc_code = code;
                Self::Api(error)
            }
            CallError::Status(status) => Self::Status(status),
            CallError::Timeout(after) => Self::Status(Status::deadline_exceeded(format!(
                "call timed out after {after:?}"
            ))),
            other => Self::Other(Box::new(other)),
        }
    }
}

/// Why a call failed (client side).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No host to call (Go: "empty hosts array").
    #[error("grpc client: client is not initialized properly: empty hosts array")]
    NoHosts,
    /// The callee answered with an API error (its status carried the isp detail).
    #[error("{error} (grpc code {code:?})")]
    Api {
        /// The gRPC code it came with.
        code: Code,
        /// The decoded error.
        error: ApiError,
    },
    /// The callee (or the transport) answered with a plain gRPC status, without an isp detail.
    #[error("gRPC status {:?}: {}", .0.code(), .0.message())]
    Status(Status),
    /// The call took longer than its timeout.
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The request body did not encode to JSON.
    #[error("marshal to json request body: {0}")]
    EncodeRequest(serde_json::Error),
    /// The response body did not decode into the type asked for.
    #[error("unmarshal response body: {0}")]
    DecodeResponse(serde_json::Error),
    /// A metadata key or value is not valid in an HTTP/2 header.
    #[error("invalid metadata {0:?}")]
    InvalidMetadata(String),
}

impl CallError {
    /// The error from a status: [`CallError::Api`] when it carries an isp detail, else
    /// [`CallError::Status`].
    #[must_use]
    pub fn from_status(status: Status) -> Self {
        match ApiError::from_status(&status) {
            Some(error) => Self::Api {
                code: status.code(),
                error,
            },
            None => Self::Status(status),
        }
    }

    /// The gRPC code, when the callee answered (or the transport failed with one).
    #[must_use]
    pub fn grpc_code(&self) -> Option<Code> {
        match self {
            Self::Api { code, .. } => Some(*code),
            Self::Status(s) => Some(s.code()),
            Self::Timeout(_) => Some(Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// The API error, when the callee answered with one.
    #[must_use]
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_error_passes_through_a_handler_as_the_callee_answered_it() {
        let api = ApiError::business(1001, "custom failure").with_detail("field", "x");
        let from_status = CallError::from_status(api.to_status());
        match HandlerError::from(from_status) {
            HandlerError::Api(error) => assert_eq!(error, api),
            other => panic!("{other:?}"),
        }
        let plain = CallError::from_status(Status::not_found("no such thing"));
        match HandlerError::from(plain) {
            HandlerError::Status(status) => {
                assert_eq!(
                    (status.code(), status.message()),
                    (Code::NotFound, "no such thing")
                );
            }
            other => panic!("{other:?}"),
        }
        match HandlerError::from(CallError::Timeout(Duration::from_secs(1))) {
            HandlerError::Status(status) => assert_eq!(status.code(), Code::DeadlineExceeded),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            HandlerError::from(CallError::NoHosts),
            HandlerError::Other(_)
        ));
    }
}
