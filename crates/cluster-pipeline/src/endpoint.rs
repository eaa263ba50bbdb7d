//! Which transport a layer serves, and where a request's endpoint comes from.

use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The header isp-kit's gRPC convention names the endpoint with (Go:
/// `grpc.ProxyMethodNameHeader`).
pub const PROXY_METHOD_NAME: HeaderName = HeaderName::from_static("proxy_method_name");

/// The transport a layer serves: it decides the span's name and attributes, how the log line
/// reads the status, and the default [`EndpointSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// isp-kit's gRPC convention: the endpoint in `proxy_method_name`, the status in
    /// `grpc-status`.
    Grpc,
    /// HTTP: the endpoint is the matched route, the status the HTTP status.
    Http,
}

/// A request's endpoint as a router matched it (for HTTP, the route's path pattern), as an
/// extension: a router puts it in the request's extensions (when the layers wrap each route)
/// or in the response's (when they wrap the whole router: the log line reads it there).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointName(Arc<str>);

impl EndpointName {
    /// The endpoint `name`.
    #[must_use]
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request's head, borrowed, for an [`EndpointSource::Fn`].
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions.
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    #[must_use]
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

/// A function that names a request's endpoint.
pub type EndpointFn = Arc<dyn Fn(&RequestHead<'_>) -> Option<String> + Send + Sync>;

/// Where the span and the log line find a request's endpoint.
#[derive(Clone)]
pub enum EndpointSource {
    /// A request header, when it is printable ASCII (gRPC: `proxy_method_name`).
    Header(HeaderName),
    /// The request's [`EndpointName`] extension, else the URI's path (HTTP). The log line
    /// takes a response's [`EndpointName`] over both.
    Extension,
    /// A function of the request's head.
    Fn(EndpointFn),
    /// One name for every request: for a service that serves one endpoint, as a router
    /// that makes one service per route does (nothing is put in the request for it).
    Name(EndpointName),
}

impl EndpointSource {
    /// The default of a protocol: [`Header`](Self::Header)`(proxy_method_name)` for gRPC,
    /// [`Extension`](Self::Extension) for HTTP.
    #[must_use]
    pub fn of(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Grpc => Self::Header(PROXY_METHOD_NAME),
            Protocol::Http => Self::Extension,
        }
    }

    /// A function of the request's head.
    pub fn from_fn(f: impl Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static) -> Self {
        Self::Fn(Arc::new(f))
    }

    /// The endpoint of `request`, borrowed where it can be.
    #[must_use]
    pub fn resolve<'a, B>(&'a self, request: &'a Request<B>) -> Option<Cow<'a, str>> {
        match self {
            Self::Header(name) => request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(Cow::Borrowed),
            Self::Extension => Some(Cow::Borrowed(
                request
                    .extensions()
                    .get::<EndpointName>()
                    .map_or_else(|| request.uri().path(), EndpointName::as_str),
            )),
            Self::Fn(f) => f(&RequestHead::of(request)).map(Cow::Owned),
            Self::Name(name) => Some(Cow::Borrowed(name.as_str())),
        }
    }
}

impl fmt::Debug for EndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Self::Extension => f.write_str("Extension"),
            Self::Fn(_) => f.write_str("Fn(..)"),
            Self::Name(name) => f.debug_tuple("Name").field(name).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_where_the_protocol_puts_them() {
        let request = Request::builder()
            .uri("/api/users/7?x=1")
            .header("proxy_method_name", "auth/api/login")
            .body(())
            .unwrap();
        let grpc = EndpointSource::of(Protocol::Grpc);
        let http = EndpointSource::of(Protocol::Http);
        assert_eq!(grpc.resolve(&request).as_deref(), Some("auth/api/login"));
        assert_eq!(http.resolve(&request).as_deref(), Some("/api/users/7"));
        let mut routed = request;
        routed
            .extensions_mut()
            .insert(EndpointName::new("/api/users/{id}"));
        assert_eq!(http.resolve(&routed).as_deref(), Some("/api/users/{id}"));
        let custom = EndpointSource::from_fn(|head| Some(head.method.to_string()));
        assert_eq!(custom.resolve(&routed).as_deref(), Some("GET"));
        let named = EndpointSource::Name(EndpointName::new("POST /api/users/{id}"));
        assert_eq!(
            named.resolve(&routed).as_deref(),
            Some("POST /api/users/{id}")
        );
        let none = Request::new(());
        assert_eq!(grpc.resolve(&none), None);
    }
}
