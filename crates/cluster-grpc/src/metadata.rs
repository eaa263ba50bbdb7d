//! The metadata (HTTP/2 header) names isp-kit uses, and what a handler sees of a call.

use std::net::SocketAddr;
use tonic::metadata::MetadataMap;

/// The endpoint being called (Go: `grpc.ProxyMethodNameHeader`).
pub const PROXY_METHOD_NAME: &str = "proxy_method_name";
/// The request id: 32 lowercase hex digits, a new one per call unless the caller has one (Go:
/// `grpc.RequestIdHeader`).
pub const REQUEST_ID: &str = "x-request-id";
/// The calling application's id (Go: `grpc.ApplicationIdHeader`).
pub const APPLICATION_ID: &str = "x-application-identity";
/// The calling application's name (Go: `grpc.ApplicationNameHeader`).
pub const APPLICATION_NAME: &str = "x-application-name";
/// The user's id (Go: `grpc.UserIdHeader`).
pub const USER_ID: &str = "x-user-identity";
/// The device's id (Go: `grpc.DeviceIdHeader`).
pub const DEVICE_ID: &str = "x-device-identity";
/// The service's id (Go: `grpc.ServiceIdHeader`).
pub const SERVICE_ID: &str = "x-service-identity";
/// The domain's id (Go: `grpc.DomainIdHeader`).
pub const DOMAIN_ID: &str = "x-domain-identity";
/// The system's id (Go: `grpc.SystemIdHeader`).
pub const SYSTEM_ID: &str = "x-system-identity";
/// The user's token (Go: `grpc.UserTokenHeader`): a secret, never logged by this crate.
pub const USER_TOKEN: &str = "x-user-token";
/// The device's token (Go: `grpc.DeviceTokenHeader`): a secret, never logged by this crate.
pub const DEVICE_TOKEN: &str = "x-device-token";

/// What a handler knows of the call it serves.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub(crate) endpoint: String,
    pub(crate) metadata: MetadataMap,
    pub(crate) remote_addr: Option<SocketAddr>,
}

impl CallContext {
    /// A context for calling a handler directly (in unit tests).
    #[must_use]
    pub fn new(endpoint: impl Into<String>, metadata: MetadataMap) -> Self {
        Self {
            endpoint: endpoint.into(),
            metadata,
            remote_addr: None,
        }
    }

    /// The endpoint (`proxy_method_name`).
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// All request metadata (the identity headers pass through here as sent).
    #[must_use]
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// The first value of an ASCII metadata key, when present and printable.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(|v| v.to_str().ok())
    }

    /// The request id (`x-request-id`): behind [`Server`](crate::Server)'s pipeline always
    /// there, the caller's or the one the server made.
    #[must_use]
    pub fn request_id(&self) -> Option<&str> {
        self.get(REQUEST_ID)
    }

    /// The application id (`x-application-identity`), when present and an integer.
    #[must_use]
    pub fn application_id(&self) -> Option<i64> {
        self.get(APPLICATION_ID)?.parse().ok()
    }

    /// The user id (`x-user-identity`), when present and an integer.
    #[must_use]
    pub fn user_id(&self) -> Option<i64> {
        self.get(USER_ID)?.parse().ok()
    }

    /// The caller's address, when known.
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
}

/// A new request id as isp-kit makes one: 16 random bytes as 32 lowercase hex digits (the
/// pipeline's generator, [`cluster_pipeline::new_request_id`]).
#[must_use]
pub fn new_request_id() -> String {
    cluster_pipeline::new_request_id()
}
