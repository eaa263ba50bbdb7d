//! [`Router`]: a module's endpoints, and the declaration the cluster gets from them.

use crate::context::CallContext;
use crate::error::{APPLICATION_JSON, ApiError, HandlerError};
use crate::json::{self, Decode};
use bytes::Bytes;
use cluster_client::{EndpointDescriptor, REQUIRED_ADMIN_PERMISSION};
use cluster_pipeline::EndpointName;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::any::TypeId;
use std::future::Future;
use std::sync::Arc;
use validator::Validate;

/// A handler, type-erased: the call's context and body in, a response or an error out.
pub(crate) type BoxHandler = Arc<
    dyn Fn(CallContext, Bytes, Decode) -> BoxFuture<'static, Result<Response, HandlerError>>
        + Send
        + Sync,
>;

/// A whole response, body in memory.
pub type Response = http::Response<Bytes>;

/// A method and path routed twice (Go's `httprouter` panics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a handler is already routed for {method} {path}")]
pub struct DuplicateEndpoint {
    /// The method.
    pub method: Method,
    /// The path as served (with its leading `/`).
    pub path: String,
}

/// An endpoint to route: a method and a path, and how it is declared to the cluster.
///
/// The path is declared as given (`orders/api/create` or `/orders/api/create`) and served
/// with a leading `/` (`POST /orders/api/create`), which is where isp-kit's gateway sends
/// it: it adds the `/` a declared path lacks. Paths match exactly (no `:param` or `*`
/// patterns), after percent-decoding, as Go's router matches `URL.Path`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    method: Method,
    descriptor: EndpointDescriptor,
    route_path: String,
    metric_label: String,
}

impl Endpoint {
    /// An endpoint served for `method` at `path`: outer (exposed through the gateway), no
    /// user auth, no extra; declared with `httpMethod` set to `method`.
    #[must_use]
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let path = path.into();
        let route_path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
        let mut descriptor = EndpointDescriptor::new(path);
        descriptor.http_method = method.as_str().to_owned();
        Self {
            // Go's router labels an endpoint's metrics "METHOD /path".
            metric_label: format!("{method} {route_path}"),
            method,
            descriptor,
            route_path,
        }
    }

    /// `GET path`.
    #[must_use]
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// `POST path`.
    #[must_use]
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    /// `PUT path`.
    #[must_use]
    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }

    /// `DELETE path`.
    #[must_use]
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    /// `PATCH path`.
    #[must_use]
    pub fn patch(path: impl Into<String>) -> Self {
        Self::new(Method::PATCH, path)
    }

    /// Internal: not exposed through the gateway (`inner: true`).
    #[must_use]
    pub fn inner(mut self) -> Self {
        self.descriptor.inner = true;
        self
    }

    /// The caller must be an authenticated user (`userAuthRequired: true`).
    #[must_use]
    pub fn user_auth_required(mut self) -> Self {
        self.descriptor.user_auth_required = true;
        self
    }

    /// Free-form metadata (`extra`), replacing any set before.
    #[must_use]
    pub fn extra(mut self, extra: Map<String, Value>) -> Self {
        self.descriptor.extra = Some(extra);
        self
    }

    /// The admin permission the gateway requires (`extra.reqAdminPerm`, Go:
    /// `cluster.RequireAdminPermission`).
    #[must_use]
    pub fn require_admin_permission(mut self, permission: impl Into<String>) -> Self {
        self.descriptor.extra.get_or_insert_with(Map::new).insert(
            REQUIRED_ADMIN_PERMISSION.to_owned(),
            permission.into().into(),
        );
        self
    }

    /// The method.
    #[must_use]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path as declared.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.descriptor.path
    }

    /// The path as served: the declared one with a leading `/`.
    #[must_use]
    pub fn route_path(&self) -> &str {
        &self.route_path
    }

    /// The `endpoint` label of its metrics: `METHOD /path`, as Go's router gives it.
    #[must_use]
    pub fn metric_label(&self) -> &str {
        &self.metric_label
    }

    /// The descriptor declared in `MODULE:READY`.
    #[must_use]
    pub fn descriptor(&self) -> &EndpointDescriptor {
        &self.descriptor
    }
}

impl From<(Method, &str)> for Endpoint {
    fn from((method, path): (Method, &str)) -> Self {
        Self::new(method, path)
    }
}

impl From<(Method, String)> for Endpoint {
    fn from((method, path): (Method, String)) -> Self {
        Self::new(method, path)
    }
}

/// One routed endpoint.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) endpoint: Arc<Endpoint>,
    /// The endpoint as the request pipeline names it (its log line, its span):
    /// [`Endpoint::metric_label`], `METHOD /path`.
    pub(crate) name: EndpointName,
    pub(crate) handler: BoxHandler,
}

/// A module's endpoints (Go: `router.Router` with `endpoint.DefaultWrapper`), and its
/// declaration.
///
/// - [`Router::handle`]: a typed JSON handler. The body is decoded into the request type
///   (see [`json`] for how: Go's leniency about key case included, unless
///   [`Router::case_insensitive_fields`] turns it off); a body that does not decode is
///   answered `400` with errorCode 400, `unmarshal json request body: …`. The value returned
///   is written as JSON with a newline, `Content-Type: application/json`; `()` writes no
///   body (Go: a handler without a response, or returning `nil`).
/// - [`Router::handle_validated`]: the same, and the request is validated (`validator`'s
///   [`Validate`]) before the handler runs: a failure is answered `400` with errorCode 400,
///   `invalid request body` and one detail per field ([`crate::validation`]).
/// - [`Router::handle_without_body`]: no request body (it is not read).
/// - [`Router::handle_raw`]: the body as it came in, a whole [`Response`] out.
///
/// Handlers return `Result<_, E>` with `E: Into<HandlerError>`: an [`ApiError`] is answered
/// as it is, any other error with isp-kit's internal service error (and logged), as is a
/// panic.
///
/// The router is also the module's declaration: [`Router::descriptors`] is the endpoint list
/// for [`ModuleInfo::endpoints`](cluster_client::ModuleInfo), with `httpMethod` set, in the
/// order routed.
#[derive(Clone)]
pub struct Router {
    pub(crate) routes: Vec<Route>,
    pub(crate) decode: Decode,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "endpoints",
                &self.routes.iter().map(|r| &*r.endpoint).collect::<Vec<_>>(),
            )
            .field("decode", &self.decode)
            .finish()
    }
}

impl Router {
    /// An empty router (keys matched ignoring case, as Go does).
    #[must_use]
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            decode: Decode::default(),
        }
    }

    /// Whether JSON object keys match struct fields ignoring case when no field has the
    /// exact name (default `true`, Go's behaviour; `false`: serde's exact names). See
    /// [`json`].
    #[must_use]
    pub fn case_insensitive_fields(mut self, on: bool) -> Self {
        self.decode.fold_case = on;
        self
    }

    /// Routes a typed JSON handler.
    ///
    /// # Errors
    /// [`DuplicateEndpoint`] when the method and path are already routed.
    pub fn handle<Req, Resp, E, F, Fut>(
        self,
        endpoint: impl Into<Endpoint>,
        handler: F,
    ) -> Result<Self, DuplicateEndpoint>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        self.typed(endpoint, handler, |_: &Req| Ok(()))
    }

    /// Routes a typed JSON handler whose request is validated before it runs.
    ///
    /// The derive of `validator` names its crate `::validator`: depend on `validator = "0.20"`
    /// or tell the derive where it is with `#[validate(crate = "cluster_http::validator")]`.
    /// For isp-kit's `validate:"required"` on a field that may be missing, use an `Option`
    /// and `#[validate(required)]` (serde fails a missing non-`Option` field before the
    /// validation, with the decoding error).
    ///
    /// ```
    /// use cluster_http::validator::Validate;
    /// use cluster_http::{ApiError, CallContext, Endpoint, Router};
    ///
    /// #[derive(serde::Deserialize, Validate)]
    /// #[validate(crate = "cluster_http::validator")]
    /// #[serde(rename_all = "camelCase")]
    /// struct NewOrder {
    ///     #[validate(required)]
    ///     customer_id: Option<i64>,
    ///     #[validate(range(min = 1, max = 100))]
    ///     count: u32,
    /// }
    ///
    /// let router = Router::new()
    ///     .handle_validated(Endpoint::post("orders/api/create"), |_: CallContext, req: NewOrder| async move {
    ///         Ok::<_, ApiError>(req.count)
    ///     })
    ///     .unwrap();
    /// # drop(router);
    /// ```
    ///
    /// # Errors
    /// [`DuplicateEndpoint`] when the method and path are already routed.
    pub fn handle_validated<Req, Resp, E, F, Fut>(
        self,
        endpoint: impl Into<Endpoint>,
        handler: F,
    ) -> Result<Self, DuplicateEndpoint>
    where
        Req: DeserializeOwned + Validate + Send + 'static,
        Resp: Serialize + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        self.typed(endpoint, handler, |req: &Req| {
            req.validate()
                .map_err(|errors| ApiError::from_validation(&errors))
        })
    }

    fn typed<Req, Resp, E, F, Fut>(
        self,
        endpoint: impl Into<Endpoint>,
        handler: F,
        check: fn(&Req) -> Result<(), ApiError>,
    ) -> Result<Self, DuplicateEndpoint>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: BoxHandler = Arc::new(move |ctx: CallContext, body: Bytes, decode: Decode| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let request: Req = json::decode(&body, decode).map_err(|e| {
                    ApiError::bad_request(format!("unmarshal json request body: {e}"))
                })?;
                check(&request)?;
                let response = handler(ctx, request).await.map_err(Into::into)?;
                json_response(&response)
            }) as BoxFuture<'static, _>
        });
        self.insert(endpoint.into(), boxed)
    }

    /// Routes a typed handler that takes no request body (the body is not read: any body is
    /// accepted, as by an isp-kit handler without a body parameter); its value is written as
    /// with [`Router::handle`].
    ///
    /// # Errors
    /// [`DuplicateEndpoint`] when the method and path are already routed.
    pub fn handle_without_body<Resp, E, F, Fut>(
        self,
        endpoint: impl Into<Endpoint>,
        handler: F,
    ) -> Result<Self, DuplicateEndpoint>
    where
        Resp: Serialize + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
        F: Fn(CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: BoxHandler = Arc::new(move |ctx: CallContext, _body: Bytes, _: Decode| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let response = handler(ctx).await.map_err(Into::into)?;
                json_response(&response)
            }) as BoxFuture<'static, _>
        });
        self.insert(endpoint.into(), boxed)
    }

    /// Routes a handler of the raw body, which answers a whole [`Response`] (status, headers
    /// and body as it likes; the server adds `x-request-id` when the handler did not).
    ///
    /// # Errors
    /// [`DuplicateEndpoint`] when the method and path are already routed.
    pub fn handle_raw<E, F, Fut>(
        self,
        endpoint: impl Into<Endpoint>,
        handler: F,
    ) -> Result<Self, DuplicateEndpoint>
    where
        E: Into<HandlerError> + Send + 'static,
        F: Fn(CallContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: BoxHandler = Arc::new(move |ctx: CallContext, body: Bytes, _: Decode| {
            let handler = Arc::clone(&handler);
            Box::pin(async move { handler(ctx, body).await.map_err(Into::into) })
                as BoxFuture<'static, _>
        });
        self.insert(endpoint.into(), boxed)
    }

    fn insert(
        mut self,
        endpoint: Endpoint,
        handler: BoxHandler,
    ) -> Result<Self, DuplicateEndpoint> {
        let taken = self.routes.iter().any(|r| {
            r.endpoint.method == endpoint.method && r.endpoint.route_path == endpoint.route_path
        });
        if taken {
            return Err(DuplicateEndpoint {
                method: endpoint.method,
                path: endpoint.route_path,
            });
        }
        self.routes.push(Route {
            name: EndpointName::new(endpoint.metric_label()),
            endpoint: Arc::new(endpoint),
            handler,
        });
        Ok(self)
    }

    /// The endpoint descriptors for `ModuleInfo::endpoints`, in the order routed, each with
    /// its `httpMethod` (which isp-kit requires of every endpoint of an `http` module).
    #[must_use]
    pub fn descriptors(&self) -> Vec<EndpointDescriptor> {
        self.routes
            .iter()
            .map(|r| r.endpoint.descriptor.clone())
            .collect()
    }

    /// The routed endpoints, in the order routed.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.routes.iter().map(|r| &*r.endpoint)
    }
}

/// A handler's value as the response: JSON and a newline (`application/json`), or no body
/// for `()`.
fn json_response<Resp: Serialize + 'static>(value: &Resp) -> Result<Response, HandlerError> {
    if TypeId::of::<Resp>() == TypeId::of::<()>() {
        return Ok(Response::new(Bytes::new()));
    }
    let body = json::encode(value).map_err(HandlerError::other)?;
    let mut response = Response::new(Bytes::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(APPLICATION_JSON),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_declared_as_given_and_served_with_a_slash() {
        let a = Endpoint::post("orders/api/create").inner();
        assert_eq!(a.path(), "orders/api/create");
        assert_eq!(a.route_path(), "/orders/api/create");
        assert_eq!(a.metric_label(), "POST /orders/api/create");
        assert_eq!(a.descriptor().http_method, "POST");
        assert!(a.descriptor().inner);
        let b = Endpoint::get("/x").require_admin_permission("read");
        assert_eq!((b.path(), b.route_path()), ("/x", "/x"));
        assert_eq!(
            b.descriptor().extra.as_ref().unwrap()["reqAdminPerm"],
            "read"
        );
    }

    #[test]
    fn one_handler_per_method_and_served_path() {
        let ok = |_: CallContext| async { Ok::<_, ApiError>(()) };
        let router = Router::new()
            .handle_without_body(Endpoint::get("a"), ok)
            .unwrap()
            .handle_without_body(Endpoint::post("a"), ok)
            .unwrap();
        let err = router
            .clone()
            .handle_without_body(Endpoint::get("/a"), ok)
            .unwrap_err();
        assert_eq!(err.to_string(), "a handler is already routed for GET /a");
        let methods: Vec<_> = router
            .descriptors()
            .into_iter()
            .map(|d| d.http_method)
            .collect();
        assert_eq!(methods, ["GET", "POST"]);
    }
}
