//! The same layers under an axum router (`Router::layer`, per route, as cluster-http's
//! server applies them): the matched route is the endpoint, and a panic is isp-kit's 500.

use axum::extract::MatchedPath;
use axum::routing::post;
use cluster_pipeline::{EndpointSource, LogLayer, Panic, RequestId, ServerLayer, TraceLayer};
use cluster_testkit::logs::CapturedLogs;
use tower::ServiceExt as _;

fn matched_path() -> EndpointSource {
    EndpointSource::from_fn(|head| {
        head.extensions
            .get::<MatchedPath>()
            .map(|path| path.as_str().to_owned())
    })
}

fn internal_error(_: &Panic) -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::from(
        r#"{"errorMessage":"internal service error","errorCode":900}"#,
    ));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[tokio::test]
async fn an_axum_router_gets_the_pipeline() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let router = axum::Router::new()
        .route(
            "/api/users/{id}",
            post(|| async {
                let id = RequestId::current().expect("the call's id is current");
                format!("{{\"requestId\":\"{id}\"}}")
            }),
        )
        .route(
            "/api/boom",
            post(|| async {
                if true {
                    panic!("handler bug");
                }
                ""
            }),
        )
        .layer(
            ServerLayer::http(internal_error)
                .log(LogLayer::http().endpoint(matched_path()))
                .trace(TraceLayer::http().endpoint(matched_path())),
        );

    let request = http::Request::post("/api/users/7")
        .header("x-request-id", "rid-axum")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "rid-axum");
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], br#"{"requestId":"rid-axum"}"#);

    let request = http::Request::post("/api/boom")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 500);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert!(body.starts_with(br#"{"errorMessage":"internal service error""#));

    let text = logs.text();
    assert!(
        text.contains("endpoint=/api/users/{id} method=POST status=200"),
        "{text}"
    );
    assert!(
        text.contains("endpoint=/api/boom method=POST status=500"),
        "{text}"
    );
    assert!(text.contains("panic=handler bug"), "{text}");
}
