//! The server's pipeline seen from a plain tonic client: the request id a server makes is
//! echoed (one the caller sent is not), and a panic outside the handlers is answered as
//! isp-kit answers one.

use cluster_grpc::tonic::codegen::http;
use cluster_grpc::tonic::{self, Code};
use cluster_grpc::{ApiError, CallContext, Message, REQUEST_PATH, Router, Server};
use cluster_pipeline::LogBody;
use std::convert::Infallible;
use tokio::sync::mpsc;
use tower::{Layer as _, ServiceExt as _};

async fn call(
    addr: std::net::SocketAddr,
    request_id: Option<&str>,
) -> Result<tonic::Response<Message>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(Message::bytes(&b"{}"[..]));
    request
        .metadata_mut()
        .insert("proxy_method_name", "who/am/i".parse().unwrap());
    if let Some(id) = request_id {
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<Message, Message>::default();
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(REQUEST_PATH),
        codec,
    )
    .await
}

#[tokio::test]
async fn a_request_id_the_server_makes_is_echoed_and_the_handlers() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let router = Router::new()
        .handle_raw("who/am/i", move |ctx: CallContext, m: Message| {
            tx.send(ctx.request_id().map(str::to_owned)).unwrap();
            async move { Ok::<_, ApiError>(m) }
        })
        .unwrap();
    let server = Server::bind(router, "127.0.0.1:0").await.unwrap();

    let response = call(server.local_addr(), None).await.unwrap();
    let echoed = response.metadata().get("x-request-id").unwrap();
    let made = seen.recv().await.unwrap().unwrap();
    assert_eq!(made.len(), 32);
    assert_eq!(echoed, made.as_str());

    let response = call(server.local_addr(), Some("callers-id")).await.unwrap();
    assert!(response.metadata().get("x-request-id").is_none());
    assert_eq!(seen.recv().await.unwrap().as_deref(), Some("callers-id"));

    // Without the pipeline: the id is the caller's or none, never echoed.
    let router = Router::new()
        .handle_raw("who/am/i", |ctx: CallContext, m: Message| async move {
            assert!(ctx.request_id().is_none());
            Ok::<_, ApiError>(m)
        })
        .unwrap();
    let bare = Server::builder(router)
        .pipeline(false)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let response = call(bare.local_addr(), None).await.unwrap();
    assert!(response.metadata().get("x-request-id").is_none());
    bare.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panic_outside_the_handlers_is_internal() {
    let panicking = tower::service_fn(
        |_request: http::Request<LogBody<tonic::body::Body>>| async move {
            if true {
                panic!("in a layer, say");
            }
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        },
    );
    let service = cluster_grpc::pipeline().layer(panicking);
    let request = http::Request::builder()
        .uri(REQUEST_PATH)
        .header("proxy_method_name", "a/b")
        .body(tonic::body::Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "internal service error");
}
