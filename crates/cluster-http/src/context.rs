//! The headers isp-kit uses, and what a handler sees of a call.

use crate::router::Endpoint;
use cluster_pipeline::RequestId;
use http::{HeaderMap, Method, Uri};
use std::net::SocketAddr;
use std::sync::Arc;

/// The request id: taken from the request, or made (32 lowercase hex digits), and echoed on
/// the response (Go: `requestid.Header`).
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name (the pipeline's).
pub(crate) const REQUEST_ID_HEADER: http::HeaderName = cluster_pipeline::REQUEST_ID_HEADER;

/// A new request id as isp-kit makes one (`requestid.Next`): 16 random bytes as 32 lowercase
/// hex digits (the request pipeline's generator, [`cluster_pipeline::new_request_id`]).
pub use cluster_pipeline::new_request_id;

/// The calling application's id, set by the gateway (Go: `grpc.ApplicationIdHeader`).
pub const APPLICATION_ID: &str = "x-application-identity";
/// The calling application's name, base64, set by the gateway (Go:
/// `grpc.ApplicationNameHeader`).
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

/// What a handler knows of the call it serves. (Its `Debug` lists the header names, not
/// their values, which may be tokens.)
#[derive(Clone)]
pub struct CallContext {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) request_id: RequestId,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) remote_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("endpoint", &self.endpoint.metric_label())
            .field("request_id", &self.request_id())
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

impl CallContext {
    /// A context for calling a handler directly (in unit tests): the request id is the one
    /// in `headers`, or a new one.
    #[must_use]
    pub fn new(endpoint: Endpoint, headers: HeaderMap) -> Self {
        let request_id = RequestId::from_headers(&headers).unwrap_or_default();
        Self {
            method: endpoint.method().clone(),
            uri: Uri::try_from(endpoint.route_path()).unwrap_or_default(),
            endpoint: Arc::new(endpoint),
            request_id,
            headers,
            remote_addr: None,
        }
    }

    /// The endpoint being called.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The request id: the request's `x-request-id`, or the one made for it (also on the
    /// response). Calls made with an [`HttpClient`](crate::HttpClient) while the handler
    /// runs send it on (it is [`RequestId::current`] then).
    #[must_use]
    pub fn request_id(&self) -> &str {
        self.request_id.as_str()
    }

    /// The request method.
    #[must_use]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request URI as it came (path and query).
    #[must_use]
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// All request headers (the identity headers the gateway sets pass through here).
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of a header, when present and printable.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The application id (`x-application-identity`), when present and an integer.
    #[must_use]
    pub fn application_id(&self) -> Option<i64> {
        self.header(APPLICATION_ID)?.parse().ok()
    }

    /// The user id (`x-user-identity`), when present and an integer.
    #[must_use]
    pub fn user_id(&self) -> Option<i64> {
        self.header(USER_ID)?.parse().ok()
    }

    /// The caller's address: axum's `ConnectInfo<SocketAddr>` of the request, which
    /// [`Server`](crate::Server) (`cluster-serve`) sets on every request, as axum's
    /// `into_make_service_with_connect_info` does; `None` when the router is served without
    /// it (through [`ServerBuilder::into_axum`](crate::ServerBuilder::into_axum), say).
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
}

/// The request id of a request, when no pipeline made it: its `x-request-id` when present,
/// not empty and printable, else a new one.
pub(crate) fn request_id_of(headers: &HeaderMap) -> RequestId {
    RequestId::from_headers(headers).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::HeaderValue;

    #[test]
    fn request_ids_are_32_lowercase_hex_and_new_each_time() {
        let a = new_request_id();
        let b = request_id_of(&HeaderMap::new());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn the_requests_id_is_kept_unless_empty_or_unprintable() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("given"));
        assert_eq!(request_id_of(&headers).as_str(), "given");
        headers.insert(REQUEST_ID, HeaderValue::from_static(""));
        assert_eq!(request_id_of(&headers).as_str().len(), 32);
        headers.insert(REQUEST_ID, HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(request_id_of(&headers).as_str().len(), 32);
    }

    #[test]
    fn debug_names_headers_without_their_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-token", HeaderValue::from_static("secret-token"));
        let ctx = CallContext::new(Endpoint::get("a"), headers);
        let text = format!("{ctx:?}");
        assert!(text.contains("x-user-token"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
    }
}
