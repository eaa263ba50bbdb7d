//! [`Router`]: a module's endpoints, and the declaration the cluster gets from them.

use crate::error::{ApiError, HandlerError};
use crate::message::Message;
use crate::metadata::CallContext;
use cluster_client::EndpointDescriptor;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// A handler, type-erased: a call context and the request message in, a message or an error
/// out.
pub(crate) type BoxHandler = Arc<
    dyn Fn(CallContext, Message) -> BoxFuture<'static, Result<Message, HandlerError>> + Send + Sync,
>;

/// [`Router::handle`] was given a path that is already routed (Go's `Mux.Handle` panics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handler for endpoint {0} is already provided")]
pub struct DuplicateEndpoint(pub String);

/// An endpoint to route, with how it is declared to the cluster. Made from a path (`"a/b"`:
/// outer, no user auth, no HTTP method, no extra), or built with the methods below.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint(EndpointDescriptor);

impl Endpoint {
    /// An endpoint at `path`: outer (exposed through the gateway), no user auth, no HTTP method
    /// (a config service fills `POST` for gRPC modules), no extra.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self(EndpointDescriptor::new(path))
    }

    /// Internal: not exposed through the gateway (`inner: true`).
    #[must_use]
    pub fn inner(mut self) -> Self {
        self.0.inner = true;
        self
    }

    /// The caller must be an authenticated user (`userAuthRequired: true`).
    #[must_use]
    pub fn user_auth_required(mut self) -> Self {
        self.0.user_auth_required = true;
        self
    }

    /// The HTTP method the gateway exposes it with (`httpMethod`).
    #[must_use]
    pub fn http_method(mut self, method: impl Into<String>) -> Self {
        self.0.http_method = method.into();
        self
    }

    /// Free-form metadata (`extra`).
    #[must_use]
    pub fn extra(mut self, extra: Map<String, Value>) -> Self {
        self.0.extra = Some(extra);
        self
    }

    /// The descriptor declared in `MODULE:READY`.
    #[must_use]
    pub fn descriptor(&self) -> &EndpointDescriptor {
        &self.0
    }
}

impl From<&str> for Endpoint {
    fn from(path: &str) -> Self {
        Self::new(path)
    }
}

impl From<String> for Endpoint {
    fn from(path: String) -> Self {
        Self::new(path)
    }
}

impl From<EndpointDescriptor> for Endpoint {
    fn from(descriptor: EndpointDescriptor) -> Self {
        Self(descriptor)
    }
}

/// A module's endpoints (Go: `grpc.Mux` with `endpoint.Wrapper`).
///
/// [`Router::handle`] routes typed JSON handlers: the request's `BytesBody` is decoded with
/// serde (a body that does not decode is a business error 400, as in isp-kit, whose message
/// starts `unmarshal json request body: `), the handler's value is encoded to JSON in the
/// response's `BytesBody`. [`Router::handle_raw`] routes handlers of whole [`Message`]s.
///
/// The router is also the module's declaration: [`Router::descriptors`] is the endpoint list
/// for [`ModuleInfo::endpoints`](cluster_client::ModuleInfo), in the order routed.
#[derive(Clone, Default)]
pub struct Router {
    pub(crate) routes: HashMap<String, BoxHandler>,
    endpoints: Vec<Endpoint>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// An empty router.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes a typed JSON handler.
    ///
    /// # Errors
    /// [`DuplicateEndpoint`] when the path is already routed.
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
        let handler = Arc::new(handler);
        let boxed: BoxHandler = Arc::new(move |ctx: CallContext, message: Message| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let body = message.bytes_body();
                let request: Req = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad_request(format!("unmarshal json request body: {e}"))
                })?;
                let response = handler(ctx, request).await.map_err(Into::into)?;
                let json = serde_json::to_vec(&response).map_err(HandlerError::other)?;
                Ok(Message::bytes(json))
            }) as BoxFuture<'static, _>
        });
        self.insert(endpoint.into(), boxed)
    }

    /// Routes a typed handler that takes no request body (the body is not read, so any body,
    /// even an empty one, is accepted: isp-kit's wrapper does the same for a handler without
    /// a body parameter); its value is encoded to JSON as with [`Router::handle`].
    ///
    /// # Errors
    /// [`DuplicateEndpoint`] when the path is already routed.
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
        let boxed: BoxHandler = Arc::new(move |ctx: CallContext, _message: Message| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let response = handler(ctx).await.map_err(Into::into)?;
                let json = serde_json::to_vec(&response).map_err(HandlerError::other)?;
                Ok(Message::bytes(json))
            }) as BoxFuture<'static, _>
        });
        self.insert(endpoint.into(), boxed)
    }

    /// Routes a handler of whole messages (any body arm in, any out).
    ///
    /// # Errors
    /// [`DuplicateEndpoint`] when the path is already routed.
    pub fn handle_raw<E, F, Fut>(
        self,
        endpoint: impl Into<Endpoint>,
        handler: F,
    ) -> Result<Self, DuplicateEndpoint>
    where
        E: Into<HandlerError> + Send + 'static,
        F: Fn(CallContext, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Message, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: BoxHandler = Arc::new(move |ctx: CallContext, message: Message| {
            let fut = handler(ctx, message);
            Box::pin(async move { fut.await.map_err(Into::into) }) as BoxFuture<'static, _>
        });
        self.insert(endpoint.into(), boxed)
    }

    fn insert(
        mut self,
        endpoint: Endpoint,
        handler: BoxHandler,
    ) -> Result<Self, DuplicateEndpoint> {
        let path = endpoint.0.path.clone();
        if self.routes.contains_key(&path) {
            return Err(DuplicateEndpoint(path));
        }
        self.routes.insert(path, handler);
        self.endpoints.push(endpoint);
        Ok(self)
    }

    /// The endpoint descriptors for `ModuleInfo::endpoints`, in the order routed.
    #[must_use]
    pub fn descriptors(&self) -> Vec<EndpointDescriptor> {
        self.endpoints.iter().map(|e| e.0.clone()).collect()
    }

    /// The routed paths, in the order routed.
    #[must_use]
    pub fn paths(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.0.path.as_str()).collect()
    }
}
