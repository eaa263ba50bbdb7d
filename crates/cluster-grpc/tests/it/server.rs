//! The server's behaviour seen through our client: unknown endpoints, bodies that do not
//! decode, failing and panicking handlers, timeouts, metadata, limits and shutdown.

use cluster_grpc::tonic::{Code, Status};
use cluster_grpc::{
    ApiError, CallContext, CallError, DuplicateEndpoint, Endpoint, GrpcClient, HandlerError,
    Message, Router, Server, testing,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

fn echo_router() -> Router {
    Router::new()
        .handle("echo/json", |_ctx: CallContext, body: Value| async move {
            Ok::<_, ApiError>(body)
        })
        .unwrap()
}

#[tokio::test]
async fn unknown_endpoint_is_not_found_without_detail() {
    let server = testing::serve(echo_router()).await;
    let err = server
        .client()
        .invoke("no/such")
        .json::<Value>()
        .await
        .unwrap_err();
    let CallError::Status(status) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "handler not found for endpoint no/such");
    assert!(status.details().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_business_error_400() {
    let server = testing::serve(echo_router()).await;
    for body in [&b""[..], b"{", b"\xff"] {
        let err = server
            .client()
            .invoke("echo/json")
            .raw_body(body)
            .json::<Value>()
            .await
            .unwrap_err();
        let CallError::Api { code, error } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*code, Code::InvalidArgument);
        assert_eq!(error.error_code, 400);
        assert!(
            error
                .error_message
                .starts_with("unmarshal json request body: "),
            "{error:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn failing_handlers_answer_as_isp_kit() {
    let server = testing::serve(crate::common::go_like_router()).await;
    let client = server.client();

    let err = client
        .invoke("fail/business")
        .json::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.grpc_code(), Some(Code::InvalidArgument));
    let api = err.api_error().unwrap();
    assert_eq!(
        (api.error_code, api.error_message.as_str()),
        (1001, "custom failure")
    );
    assert_eq!(api.details["field"], "x");

    let err = client
        .invoke("fail/internal")
        .json::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.grpc_code(), Some(Code::Internal));
    assert_eq!(err.api_error().unwrap().error_code, 900);

    // A plain error and a status: no detail, and they decode cleanly as plain statuses.
    let err = client
        .invoke("fail/plain")
        .json::<Value>()
        .await
        .unwrap_err();
    let CallError::Status(status) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "internal service error")
    );
    let err = client
        .invoke("fail/status")
        .json::<Value>()
        .await
        .unwrap_err();
    let CallError::Status(status) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "denied")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_is_internal_and_the_server_lives_on() {
    let server = testing::serve(crate::common::go_like_router()).await;
    let client = server.client();
    for _ in 0..3 {
        let err = client
            .invoke("fail/panic")
            .json::<Value>()
            .await
            .unwrap_err();
        let CallError::Status(status) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (status.code(), status.message()),
            (Code::Internal, "internal service error")
        );
        let ok: Value = client
            .invoke("echo/json")
            .json_body(&json!({"a": 1}))
            .json()
            .await
            .unwrap();
        assert_eq!(ok, json!({"a": 1}));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_past_its_timeout_fails_with_timeout() {
    let (entered, mut entered_rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .handle_raw("slow", move |_ctx: CallContext, _m: Message| {
            let entered = entered.clone();
            async move {
                entered.send(()).unwrap();
                std::future::pending::<()>().await;
                Ok::<_, Status>(Message::default())
            }
        })
        .unwrap();
    let server = testing::serve(router).await;
    let err = server
        .client()
        .invoke("slow")
        .timeout(Duration::from_millis(200))
        .message()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Timeout(d) if d == Duration::from_millis(200)),
        "{err:?}"
    );
    assert_eq!(err.grpc_code(), Some(Code::DeadlineExceeded));
    entered_rx.recv().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn identity_metadata_and_request_ids_pass_through() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .handle_without_body("whoami", move |ctx: CallContext| {
            let tx = tx.clone();
            async move {
                tx.send((
                    ctx.endpoint().to_owned(),
                    ctx.request_id().map(str::to_owned),
                    ctx.application_id(),
                    ctx.user_id(),
                    ctx.get("x-custom").map(str::to_owned),
                ))
                .unwrap();
                Ok::<_, ApiError>(())
            }
        })
        .unwrap();
    let server = testing::serve(router).await;
    let client = server.client();

    // Ours: a new 32-hex id per call.
    let _: Value = client.invoke("whoami").json().await.unwrap();
    let _: Value = client.invoke("whoami").json().await.unwrap();
    let (endpoint, a, app, user, custom) = rx.recv().await.unwrap();
    let (_, b, ..) = rx.recv().await.unwrap();
    assert_eq!(endpoint, "whoami");
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len(), 32);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_ne!(a, b);
    assert_eq!((app, user, custom), (None, None, None));

    // The caller's: given directly, or in the metadata.
    let _: Value = client
        .invoke("whoami")
        .request_id("caller-id")
        .application_id(7)
        .metadata("x-user-identity", "42")
        .metadata("X-Custom", "v")
        .json()
        .await
        .unwrap();
    let (_, id, app, user, custom) = rx.recv().await.unwrap();
    assert_eq!(id.as_deref(), Some("caller-id"));
    assert_eq!(
        (app, user, custom.as_deref()),
        (Some(7), Some(42), Some("v"))
    );
    let _: Value = client
        .invoke("whoami")
        .metadata("x-request-id", "md-id")
        .json()
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap().1.as_deref(), Some("md-id"));

    let err = client
        .invoke("whoami")
        .metadata("bad key", "v")
        .raw()
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidMetadata(_)), "{err:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_router_is_the_declaration_and_refuses_duplicates() {
    let router = Router::new()
        .handle("auth/api/login", |_c: CallContext, v: Value| async move {
            Ok::<_, ApiError>(v)
        })
        .unwrap()
        .handle_raw(
            Endpoint::new("auth/internal/check")
                .inner()
                .user_auth_required()
                .http_method("GET"),
            |_c: CallContext, m: Message| async move { Ok::<_, Status>(m) },
        )
        .unwrap();
    let d = router.descriptors();
    assert_eq!(router.paths(), ["auth/api/login", "auth/internal/check"]);
    assert!(!d[0].inner && !d[0].user_auth_required && d[0].http_method.is_empty());
    assert!(d[1].inner && d[1].user_auth_required);
    assert_eq!(d[1].http_method, "GET");
    let err = router
        .handle("auth/api/login", |_c: CallContext, v: Value| async move {
            Ok::<_, ApiError>(v)
        })
        .unwrap_err();
    assert_eq!(err, DuplicateEndpoint("auth/api/login".into()));
    assert_eq!(
        err.to_string(),
        "handler for endpoint auth/api/login is already provided"
    );
}

#[tokio::test]
async fn the_streaming_method_is_unimplemented() {
    let server = testing::serve(echo_router()).await;
    let mut conn = crate::common::RawH2::connect(server.addr()).await;
    let headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/isp.BackendService/RequestStream"),
        (":authority", ""),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    let response = conn.request(&headers, &[0, 0, 0, 0, 0]).await;
    assert_eq!(response.status_header("grpc-status"), Some("12"));
    drop(conn);
    server.shutdown().await;
}

#[tokio::test]
async fn messages_over_the_limit_are_refused() {
    let server = Server::builder(echo_router())
        .max_message_size(1024)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = GrpcClient::new([server.local_addr().to_string()]);
    let big = "x".repeat(2048);
    let err = client
        .invoke("echo/json")
        .json_body(&big)
        .raw()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.grpc_code(),
            Some(Code::ResourceExhausted | Code::OutOfRange)
        ),
        "{err:?}"
    );
    let ok: String = client
        .invoke("echo/json")
        .json_body("small")
        .json()
        .await
        .unwrap();
    assert_eq!(ok, "small");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_calls_in_progress_finish() {
    let release = Arc::new(Notify::new());
    let (entered, mut entered_rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .handle_without_body("wait", {
            let release = release.clone();
            move |_ctx: CallContext| {
                let release = release.clone();
                let entered = entered.clone();
                async move {
                    entered.send(()).unwrap();
                    release.notified().await;
                    Ok::<_, ApiError>("done")
                }
            }
        })
        .unwrap();
    let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
    let client = GrpcClient::new([server.local_addr().to_string()]);
    let call = tokio::spawn(async move { client.invoke("wait").json::<String>().await });
    entered_rx.recv().await.unwrap();
    server.start_shutdown();
    release.notify_one();
    assert_eq!(call.await.unwrap().unwrap(), "done");
    server.wait().await.unwrap();
}

#[tokio::test]
async fn a_client_that_ignores_the_shutdown_is_cut_after_the_grace_period() {
    let server = Server::builder(echo_router())
        .shutdown_grace(Duration::from_millis(100))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    // A connection that never reads again, so never acknowledges the GOAWAY's ping.
    let conn = crate::common::RawH2::connect(server.local_addr()).await;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("the grace period bounds the shutdown")
        .unwrap();
    drop(conn);
}

#[tokio::test]
async fn the_server_stops_when_the_cluster_client_closes() {
    use cluster_client::{Client, ConfigData, ModuleInfo};
    let router = echo_router();
    let client = Client::new(
        ModuleInfo {
            module_name: "m".into(),
            endpoints: router.descriptors(),
            ..ModuleInfo::default()
        },
        ConfigData::from_json("1.0.0", "{}", "{}").unwrap(),
        ["127.0.0.1:1"],
    )
    .unwrap();
    let server = Server::builder(router)
        .shutdown_with(&client)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let grpc = GrpcClient::new([server.local_addr().to_string()]);
    let v: i64 = grpc.invoke("echo/json").json_body(&5).json().await.unwrap();
    assert_eq!(v, 5);
    client.close().await;
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("the server follows the client's close")
        .unwrap();
}

#[tokio::test]
async fn handler_error_conversions() {
    let e: HandlerError = ApiError::business(1, "m").into();
    assert!(matches!(e, HandlerError::Api(_)));
    let e: HandlerError = Status::not_found("x").into();
    assert!(matches!(e, HandlerError::Status(_)));
    let e = HandlerError::other(std::io::Error::other("io"));
    assert_eq!(e.to_string(), "io");
}
