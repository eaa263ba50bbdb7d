//! The client over real loopback sockets: balancing, failover to the next instance, typed
//! errors, timeouts, host lists, layers.

use bytes::Bytes;
use cluster_client::HostsUpgrader;
use cluster_http::{
    ApiError, CallContext, CallError, ClientService, Endpoint, HttpClient, Router, testing,
};
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A router whose one endpoint answers `name` and counts its calls.
fn named(name: &'static str, calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .handle_without_body(Endpoint::post("who"), move |_: CallContext| {
            calls.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, ApiError>(name) }
        })
        .unwrap()
}

#[tokio::test]
async fn calls_go_round_robin_and_past_a_dead_instance() {
    let (a_calls, b_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = testing::serve(named("a", a_calls.clone())).await;
    let b = testing::serve(named("b", b_calls.clone())).await;
    let dead = crate::common::closed_port().await;
    let client = HttpClient::new([dead.clone(), a.host(), b.host()]);
    for _ in 0..6 {
        let who: String = client.post("who").json().await.unwrap();
        assert!(who == "a" || who == "b");
    }
    assert_eq!(
        a_calls.load(Ordering::Relaxed) + b_calls.load(Ordering::Relaxed),
        6
    );
    assert!(a_calls.load(Ordering::Relaxed) >= 2 && b_calls.load(Ordering::Relaxed) >= 2);
    assert_eq!(client.paused_hosts(), [dead]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_answer_is_never_sent_to_another_instance() {
    let failing = Router::new()
        .handle_without_body(Endpoint::post("who"), |_: CallContext| async {
            Err::<(), _>(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, 503, "busy"))
        })
        .unwrap();
    let failing = testing::serve(failing).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let healthy = testing::serve(named("b", calls.clone())).await;
    let client = HttpClient::new([failing.host(), healthy.host()]);
    // The first call goes to the first host.
    let err = client.post("who").json::<String>().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.api_error().unwrap().error_message, "busy");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    failing.shutdown().await;
    healthy.shutdown().await;
}

#[tokio::test]
async fn failures_without_an_answer_say_why() {
    assert!(matches!(
        HttpClient::new(Vec::<String>::new()).post("x").raw().await,
        Err(CallError::NoHosts)
    ));
    let dead = crate::common::closed_port().await;
    let err = HttpClient::new([dead.clone()])
        .post("x")
        .raw()
        .await
        .unwrap_err();
    let CallError::Connect { host, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(host, &dead);
    assert!(err.to_string().contains("onnection refused"), "{err}");
    let err = HttpClient::new(["https://10.0.0.1:443"])
        .post("x")
        .raw()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad host address"), "{err}");
    assert!(matches!(
        HttpClient::new(["127.0.0.1:1"])
            .post("x")
            .header("bad header", "v")
            .raw()
            .await,
        Err(CallError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn statuses_without_isp_kits_body_and_timeouts() {
    let never = Router::new()
        .handle_without_body(Endpoint::post("never"), |_: CallContext| async {
            std::future::pending::<()>().await;
            Ok::<_, ApiError>(())
        })
        .unwrap();
    let server = testing::serve(never).await;
    let err = server
        .client()
        .post("no/such/path")
        .raw()
        .await
        .unwrap_err();
    let CallError::Status { status, body } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*status, &body[..]),
        (StatusCode::NOT_FOUND, &b"404 page not found\n"[..])
    );

    let client = HttpClient::builder()
        .timeout(Duration::from_millis(200))
        .build([server.host()]);
    let err = client.post("never").raw().await.unwrap_err();
    assert!(
        matches!(err, CallError::Timeout(d) if d == Duration::from_millis(200)),
        "{err:?}"
    );
    let err = server
        .client()
        .post("never")
        .timeout(Duration::from_millis(50))
        .raw()
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_host_list_follows_the_cluster() {
    let client = HttpClient::default();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.wait_for(2).await }
    });
    let mut watch = client.watch();
    client.upgrade(vec!["127.0.0.1:1".into()]);
    watch.changed().await.unwrap();
    assert_eq!(&**watch.borrow_and_update(), ["127.0.0.1:1"]);
    client.upgrade(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
    assert_eq!(&*waiting.await.unwrap(), ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(client.hosts(), ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(&*client.wait_for(0).await, ["127.0.0.1:1", "127.0.0.1:2"]);
}

#[tokio::test]
async fn a_handler_passes_a_callees_api_error_on() {
    let callee = testing::serve(crate::common::router()).await;
    let downstream = callee.client();
    let front = Router::new()
        .handle(
            Endpoint::post("front"),
            move |_: CallContext, body: Value| {
                let downstream = downstream.clone();
                async move {
                    let answer: Value = downstream
                        .post("orders/business")
                        .json_body(&body)
                        .json()
                        .await?;
                    Ok::<_, cluster_http::HandlerError>(answer)
                }
            },
        )
        .unwrap();
    let front = testing::serve(front).await;
    let err = front
        .client()
        .post("front")
        .json_body(&json!({}))
        .raw()
        .await
        .unwrap_err();
    let error = err.api_error().unwrap();
    assert_eq!(
        (error.status, error.error_code),
        (StatusCode::BAD_REQUEST, 1001)
    );
    front.shutdown().await;
    callee.shutdown().await;
}

#[tokio::test]
async fn a_layer_wraps_each_call_once() {
    // What the pipeline crate's client layer would do: add a header, see the answer.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let layer = tower::layer::layer_fn(move |inner: ClientService| {
        let counter = counter.clone();
        tower::util::MapResponse::new(
            tower::util::MapRequest::new(inner, |mut request: http::Request<Bytes>| {
                assert_eq!(request.uri(), "/orders/whoami");
                assert!(request.headers().contains_key("x-request-id"));
                request
                    .headers_mut()
                    .insert("x-application-identity", HeaderValue::from_static("9"));
                request
            }),
            move |response: http::Response<Bytes>| {
                counter.fetch_add(1, Ordering::Relaxed);
                response
            },
        )
    });
    let server = testing::serve(crate::common::router()).await;
    let dead = crate::common::closed_port().await;
    let client = HttpClient::builder()
        .layer(layer)
        .build([dead, server.host()]);
    let seen_by_server: Value = client.get("orders/whoami").json().await.unwrap();
    assert_eq!(seen_by_server["appId"], 9);
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    server.shutdown().await;
}
