//! Shared test helpers: a router like an isp-kit module's, and a raw HTTP/1.1 exchange.
#![allow(dead_code, unreachable_pub)]

use cluster_http::validator::Validate;
use cluster_http::{ApiError, CallContext, Endpoint, HandlerError, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrder {
    #[validate(required)]
    pub name: Option<String>,
    #[validate(range(min = 1))]
    pub count: i64,
    #[validate(nested)]
    #[serde(default)]
    pub items: Vec<Item>,
}

#[derive(Debug, Deserialize, Validate)]
pub struct Item {
    #[validate(length(min = 1))]
    pub sku: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub order_id: i64,
    pub name: String,
}

/// Endpoints like a Go module's: echo, a business error, a validated body, a panic, a plain
/// error, a raw handler, one without a body, one without a response.
pub fn router() -> Router {
    Router::new()
        .handle(
            Endpoint::post("echo/json"),
            |_ctx: CallContext, body: Value| async move { Ok::<_, ApiError>(body) },
        )
        .unwrap()
        .handle(
            Endpoint::post("orders/business"),
            |_ctx: CallContext, _body: Value| async move {
                Err::<Value, _>(ApiError::business(1001, "no such order").with_detail("orderId", 7))
            },
        )
        .unwrap()
        .handle_validated(
            Endpoint::post("/orders/create"),
            |_ctx: CallContext, req: CreateOrder| async move {
                Ok::<_, ApiError>(Created {
                    order_id: req.count,
                    name: req.name.unwrap_or_default(),
                })
            },
        )
        .unwrap()
        .handle(
            Endpoint::post("orders/panic"),
            |_ctx: CallContext, _body: Value| async move {
                if true {
                    panic!("handler panics on purpose");
                }
                Ok::<Value, ApiError>(Value::Null)
            },
        )
        .unwrap()
        .handle(
            Endpoint::post("orders/plain"),
            |_ctx: CallContext, _body: Value| async move {
                Err::<Value, _>(HandlerError::other("a database went away at 10.1.2.3"))
            },
        )
        .unwrap()
        .handle_without_body(
            Endpoint::get("orders/whoami"),
            |ctx: CallContext| async move {
                Ok::<_, ApiError>(serde_json::json!({
                    "requestId": ctx.request_id(),
                    // The pipeline's (a client call made here would send it).
                    "current": cluster_pipeline::RequestId::current().map(|id| id.to_string()),
                    "appId": ctx.application_id(),
                    "method": ctx.method().as_str(),
                    "path": ctx.endpoint().route_path(),
                }))
            },
        )
        .unwrap()
        .handle(
            Endpoint::post("orders/forget"),
            |_ctx: CallContext, _body: Value| async move { Ok::<(), ApiError>(()) },
        )
        .unwrap()
        .handle_raw(
            Endpoint::put("orders/raw"),
            |_ctx: CallContext, body: bytes::Bytes| async move {
                let mut response = http::Response::new(body);
                *response.status_mut() = http::StatusCode::ACCEPTED;
                response
                    .headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/plain"));
                Ok::<_, ApiError>(response)
            },
        )
        .unwrap()
}

/// One request written as given on a new connection; the whole answer as text (the server
/// is asked to close).
pub async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

/// A closed loopback port: bound, then let go (connections to it are refused).
pub async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}
