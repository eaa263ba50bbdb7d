//! The server over real loopback sockets: answers, errors, validation, limits, panics, the
//! request id, JSON leniency, layers and shutdown.

use crate::common::Created;
use cluster_http::{
    ApiError, CallContext, CallError, Endpoint, HttpClient, REQUEST_ID, Router, Server, testing,
};
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn a_call_is_answered_with_json_and_a_newline() {
    let server = testing::serve(crate::common::router()).await;
    let client = server.client();
    let response = client
        .post("echo/json")
        .json_body(&json!({"a": [1, "<b>"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(&response.body()[..], b"{\"a\":[1,\"\\u003cb\\u003e\"]}\n");

    let created: Created = client
        .post("/orders/create")
        .json_body(&json!({"name": "ann", "count": 3}))
        .json()
        .await
        .unwrap();
    assert_eq!(
        created,
        Created {
            order_id: 3,
            name: "ann".into()
        }
    );

    // A handler without a body takes any body; the context has the call's facts.
    let whoami: Value = client
        .get("orders/whoami")
        .application_id(42)
        .raw_body("not json at all")
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["appId"], 42);
    assert_eq!(whoami["method"], "GET");
    assert_eq!(whoami["path"], "/orders/whoami");

    // `()`: 200 without a body or a content type (Go: a handler without a response).
    let response = client
        .post("orders/forget")
        .json_body(&1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.body().is_empty());
    assert!(response.headers().get("content-type").is_none());
    let unit: () = client
        .post("orders/forget")
        .json_body(&1)
        .json()
        .await
        .unwrap();
    assert_eq!(unit, ());

    // A raw handler answers what it likes; the request id is added.
    let response = client
        .put("orders/raw")
        .raw_body("as is")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.headers()[REQUEST_ID].len(), 32);
    assert_eq!(&response.body()[..], b"as is");
    server.shutdown().await;
}

#[tokio::test]
async fn a_business_error_reaches_the_caller_typed() {
    let server = testing::serve(crate::common::router()).await;
    let err = server
        .client()
        .post("orders/business")
        .json_body(&json!({}))
        .json::<Value>()
        .await
        .unwrap_err();
    let CallError::Api(error) = err else {
        panic!("{err:?}")
    };
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (error.error_code, &*error.error_message),
        (1001, "no such order")
    );
    assert_eq!(error.details["orderId"], 7);
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_fails_validation_gets_a_detail_per_field() {
    let server = testing::serve(crate::common::router()).await;
    let err = server
        .client()
        .post("orders/create")
        .json_body(&json!({"count": 0, "items": [{"sku": "a"}, {"sku": ""}]}))
        .json::<Created>()
        .await
        .unwrap_err();
    let error = err.api_error().unwrap();
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (error.error_code, &*error.error_message),
        (400, "invalid request body")
    );
    assert_eq!(
        Value::Object(error.details.clone()),
        json!({
            "name": "Name is a required field",
            "count": "Count must be 1 or greater",
            "items[1].sku": "Sku must be at least 1 character in length",
        })
    );
    // A body that does not decode is a 400 too, before validation.
    let err = server
        .client()
        .post("orders/create")
        .raw_body(r#"{"count":"x"}"#)
        .raw()
        .await
        .unwrap_err();
    let error = err.api_error().unwrap();
    assert_eq!(error.error_code, 400);
    assert!(
        error
            .error_message
            .starts_with("unmarshal json request body: invalid type: string \"x\""),
        "{error}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let server = Server::builder(crate::common::router())
        .max_body_size(1024)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = HttpClient::new([server.local_addr().to_string()]);
    let fits = format!("\"{}\"", "x".repeat(1022));
    let echoed: String = client
        .post("echo/json")
        .raw_body(fits.clone())
        .json()
        .await
        .unwrap();
    assert_eq!(echoed.len(), 1022);
    let over = format!("\"{}\"", "x".repeat(1023));
    let response = client
        .post("echo/json")
        .raw_body(over)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()["connection"], "close");
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(
        body,
        json!({"error": "the request body is larger than 1024 bytes"})
    );
    // The server goes on.
    let again: String = client
        .post("echo/json")
        .raw_body(fits)
        .json()
        .await
        .unwrap();
    assert_eq!(again.len(), 1022);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_handler_is_answered_500_and_the_server_lives_on() {
    let server = testing::serve(crate::common::router()).await;
    let client = server.client();
    for _ in 0..3 {
        let err = client
            .post("orders/panic")
            .json_body(&1)
            .raw()
            .await
            .unwrap_err();
        let error = err.api_error().unwrap();
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            (error.error_code, &*error.error_message),
            (900, "internal service error")
        );
        let ok: Value = client.post("echo/json").json_body(&1).json().await.unwrap();
        assert_eq!(ok, 1);
    }
    // A plain error hides its cause.
    let err = client
        .post("orders/plain")
        .json_body(&1)
        .raw()
        .await
        .unwrap_err();
    assert_eq!(
        err.api_error().unwrap().error_message,
        "internal service error"
    );
    assert!(!err.to_string().contains("10.1.2.3"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_request_id_is_kept_end_to_end() {
    let server = testing::serve(crate::common::router()).await;
    let client = server.client();
    let response = client
        .get("orders/whoami")
        .request_id("caller-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[REQUEST_ID], "caller-id-1");
    let seen: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(seen["requestId"], "caller-id-1");

    // Without one, the client makes one; the server sees it and echoes it.
    let response = client.get("orders/whoami").send().await.unwrap();
    let echoed = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    let seen: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(seen["requestId"], echoed);
    assert_eq!(echoed.len(), 32);

    // A caller without one (not our client) gets one made by the server, on errors too.
    let raw = crate::common::exchange(
        server.addr(),
        "POST /orders/business HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    let id = raw
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap();
    assert_eq!(id.len(), 32, "{raw}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_pipeline_can_be_turned_off_at_either_end() {
    // On at the server, off at the client: the client sends no id, the server makes one,
    // which is current while the handler runs and echoed.
    let on = testing::serve(crate::common::router()).await;
    let bare_client = HttpClient::builder().pipeline(false).build([on.host()]);
    let response = bare_client.get("orders/whoami").send().await.unwrap();
    let echoed = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    let seen: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(echoed.len(), 32);
    assert_eq!(
        (&seen["requestId"], &seen["current"]),
        (&json!(echoed), &json!(echoed))
    );
    on.shutdown().await;

    // Off at the server: the id is still the caller's (or a new one), echoed, but not
    // current (no call made in the handler passes it on), and no pipeline's answer.
    let off = Server::builder(crate::common::router())
        .pipeline(false)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = HttpClient::new([off.local_addr().to_string()]);
    let response = client
        .get("orders/whoami")
        .request_id("given-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[REQUEST_ID], "given-1");
    let seen: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(
        (&seen["requestId"], &seen["current"]),
        (&json!("given-1"), &Value::Null)
    );
    let bare_client = HttpClient::builder()
        .pipeline(false)
        .build([off.local_addr().to_string()]);
    let response = bare_client.get("orders/whoami").send().await.unwrap();
    let echoed = response.headers()[REQUEST_ID].to_str().unwrap();
    let seen: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!((echoed.len(), &seen["requestId"]), (32, &json!(echoed)));
    // A panic is still isp-kit's 500.
    let err = client
        .post("orders/panic")
        .json_body(&1)
        .raw()
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().error_code, 900);
    off.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_keys_match_fields_ignoring_case_unless_turned_off() {
    let server = testing::serve(crate::common::router()).await;
    let created: Created = server
        .client()
        .post("orders/create")
        .raw_body(r#"{"NAME":"ann","Count":2,"ITEMS":[{"SKU":"a"}]}"#)
        .json()
        .await
        .unwrap();
    assert_eq!(
        created,
        Created {
            order_id: 2,
            name: "ann".into()
        }
    );
    server.shutdown().await;

    let exact = testing::serve(crate::common::router().case_insensitive_fields(false)).await;
    let err = exact
        .client()
        .post("orders/create")
        .raw_body(r#"{"NAME":"ann","Count":2}"#)
        .raw()
        .await
        .unwrap_err();
    assert_eq!(
        err.api_error().unwrap().error_message,
        "unmarshal json request body: missing field `count` at line 1 column 24"
    );
    exact.shutdown().await;

    // The client reads answers the same way.
    let shouting = Router::new()
        .handle_without_body(Endpoint::get("x"), |_: CallContext| async {
            Ok::<_, ApiError>(json!({"ORDERID": 5, "Name": "bob"}))
        })
        .unwrap();
    let server = testing::serve(shouting).await;
    let created: Created = server.client().get("x").json().await.unwrap();
    assert_eq!(
        created,
        Created {
            order_id: 5,
            name: "bob".into()
        }
    );
    let strict = HttpClient::builder()
        .case_insensitive_fields(false)
        .build([server.host()]);
    assert!(matches!(
        strict.get("x").json::<Created>().await,
        Err(CallError::DecodeResponse(_))
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn the_router_declares_its_endpoints_with_their_methods() {
    let router = Router::new()
        .handle_without_body(
            Endpoint::get("orders/list").inner(),
            |_: CallContext| async { Ok::<_, ApiError>(()) },
        )
        .unwrap()
        .handle_without_body(
            Endpoint::post("/orders/create").user_auth_required(),
            |_: CallContext| async { Ok::<_, ApiError>(()) },
        )
        .unwrap();
    let declared = serde_json::to_value(router.descriptors()).unwrap();
    assert_eq!(
        declared,
        json!([
            {"path": "orders/list", "inner": true, "userAuthRequired": false, "httpMethod": "GET", "extra": null},
            {"path": "/orders/create", "inner": false, "userAuthRequired": true, "httpMethod": "POST", "extra": null},
        ])
    );
    let err = router
        .handle_without_body(Endpoint::post("orders/create"), |_: CallContext| async {
            Ok::<_, ApiError>(())
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a handler is already routed for POST /orders/create"
    );
}

#[tokio::test]
async fn a_layer_sees_every_request_before_the_router() {
    // What the pipeline crate's request id layer would do: set the id when missing.
    let layer = tower::util::MapRequestLayer::new(|mut request: axum::extract::Request| {
        request
            .headers_mut()
            .entry(REQUEST_ID)
            .or_insert(HeaderValue::from_static("from-the-layer"));
        request
    });
    let server = Server::builder(crate::common::router())
        .layer(layer)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let raw = crate::common::exchange(
        server.local_addr(),
        "GET /orders/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.contains("x-request-id: from-the-layer\r\n"), "{raw}");
    assert!(raw.contains("\"requestId\":\"from-the-layer\""), "{raw}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_shutdown_lets_the_call_in_flight_finish() {
    let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
    let entered_tx = std::sync::Mutex::new(Some(entered_tx));
    let (release, released) = tokio::sync::watch::channel(false);
    let router = Router::new()
        .handle_without_body(Endpoint::post("slow"), move |_: CallContext| {
            let mut released = released.clone();
            let entered = entered_tx.lock().unwrap().take();
            async move {
                if let Some(entered) = entered {
                    let _ = entered.send(());
                }
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, ApiError>("done")
            }
        })
        .unwrap();
    let server = Server::builder(router)
        .shutdown_grace(Duration::from_secs(30))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = HttpClient::new([server.local_addr().to_string()]);
    let call = tokio::spawn(async move { client.post("slow").json::<String>().await });
    entered.await.unwrap();
    server.start_shutdown();
    release.send_replace(true);
    assert_eq!(call.await.unwrap().unwrap(), "done");
    server.wait().await.unwrap();
}

#[tokio::test]
async fn the_callers_address_comes_from_the_connection() {
    let router = || {
        Router::new()
            .handle_without_body(Endpoint::get("peer"), |ctx: CallContext| async move {
                Ok::<_, ApiError>(ctx.remote_addr().map(|a| a.ip().to_string()))
            })
            .unwrap()
    };
    // `cluster-serve` gives it (axum's `ConnectInfo<SocketAddr>`), on every request of a
    // kept-alive connection.
    let server = testing::serve(router()).await;
    let client = server.client();
    for _ in 0..2 {
        let peer: Option<String> = client.get("peer").json().await.unwrap();
        assert_eq!(peer.as_deref(), Some("127.0.0.1"));
    }
    server.shutdown().await;
    // Served by axum with its connect info, the context has it as well.
    let app = Server::builder(router()).into_axum();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let client = HttpClient::new([addr.to_string()]);
    let peer: Option<String> = client.get("peer").json().await.unwrap();
    assert_eq!(peer.as_deref(), Some("127.0.0.1"));
    served.abort();
}
