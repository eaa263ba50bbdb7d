//! The layers without OpenTelemetry: request ids, the log line (with and without bodies),
//! panic recovery, and trace context doing nothing without a propagator.

use bytes::Bytes;
use cluster_pipeline::{
    ClientLayer, Echo, EndpointName, LogBody, LogLayer, Panic, PropagateRequestIdLayer,
    RecoverLayer, RequestId, RequestIdLayer, ServerLayer,
};
use cluster_testkit::logs::CapturedLogs;
use http_body_util::{BodyExt as _, Full};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tower::{Layer as _, ServiceExt as _, service_fn};
use tracing::Level;
use tracing::subscriber::DefaultGuard;

type Body = Full<Bytes>;

/// Logs of this thread (tests run on current-thread runtimes) into a buffer, at `level`.
fn capture(level: Level) -> (CapturedLogs, DefaultGuard) {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

fn internal_error(_: &Panic) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(Bytes::from_static(b"{}")));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn echo() -> impl tower::Service<
    http::Request<LogBody<Body>>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|request: http::Request<LogBody<Body>>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(http::Response::new(Body::new(body)))
    })
}

async fn call<S>(service: S, request: http::Request<Body>) -> (http::Response<()>, Bytes)
where
    S: tower::Service<http::Request<Body>, Response = http::Response<LogBody<Body>>>,
    S::Error: std::fmt::Debug,
{
    let response = service.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    // Read to the end: the line is written when the response body ends.
    let bytes = body.collect().await.unwrap().to_bytes();
    (http::Response::from_parts(parts, ()), bytes)
}

#[tokio::test]
async fn the_server_id_is_the_callers_or_new_and_echoed() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = Arc::clone(&seen);
        service_fn(move |request: http::Request<Body>| {
            let seen = Arc::clone(&seen);
            async move {
                let id = RequestId::from_extensions(request.extensions()).cloned();
                seen.lock().unwrap().push((
                    id.clone(),
                    RequestId::current(),
                    request.headers().get("x-request-id").cloned(),
                ));
                Ok::<_, Infallible>(http::Response::new(()))
            }
        })
    };
    let service = RequestIdLayer::new().layer(handler);
    let given = http::Request::builder()
        .header("x-request-id", "abc")
        .body(Body::default())
        .unwrap();
    let response = service.clone().oneshot(given).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc");
    let (id, current, header) = seen.lock().unwrap().pop().unwrap();
    assert_eq!(id.as_ref().map(RequestId::as_str), Some("abc"));
    assert_eq!(current, id);
    assert_eq!(header.unwrap(), "abc");

    for empty in [None, Some("")] {
        let mut request = http::Request::new(Body::default());
        if let Some(v) = empty {
            request
                .headers_mut()
                .insert("x-request-id", v.parse().unwrap());
        }
        let response = service.clone().oneshot(request).await.unwrap();
        let (id, _, header) = seen.lock().unwrap().pop().unwrap();
        let id = id.unwrap();
        assert_eq!(id.as_str().len(), 32);
        // The request's header is set to it, and the response echoes it.
        assert_eq!(header.unwrap(), id.as_str());
        assert_eq!(response.headers()["x-request-id"], id.as_str());
    }

    // Without the echo.
    let quiet = RequestIdLayer::new().echo(Echo::Never).layer(service_fn(
        |_r: http::Request<Body>| async { Ok::<_, Infallible>(http::Response::new(())) },
    ));
    let response = quiet
        .oneshot(http::Request::new(Body::default()))
        .await
        .unwrap();
    assert!(response.headers().get("x-request-id").is_none());

    // Only the ids the server made.
    let when_new = RequestIdLayer::new().echo(Echo::WhenNew).layer(service_fn(
        |_r: http::Request<Body>| async { Ok::<_, Infallible>(http::Response::new(())) },
    ));
    let given = http::Request::builder()
        .header("x-request-id", "abc")
        .body(Body::default())
        .unwrap();
    let response = when_new.clone().oneshot(given).await.unwrap();
    assert!(response.headers().get("x-request-id").is_none());
    let response = when_new
        .oneshot(http::Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn the_client_sends_the_given_the_current_or_a_new_id() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let sent = Arc::clone(&sent);
        PropagateRequestIdLayer.layer(service_fn(move |request: http::Request<()>| {
            sent.lock().unwrap().push(
                request.headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
            async { Ok::<_, Infallible>(()) }
        }))
    };
    let last = || sent.lock().unwrap().pop().unwrap();
    // A header already there.
    let request = http::Request::builder()
        .header("x-request-id", "set")
        .body(())
        .unwrap();
    client.clone().oneshot(request).await.unwrap();
    assert_eq!(last(), "set");
    // The caller's context, in the extensions.
    let mut request = http::Request::new(());
    request
        .extensions_mut()
        .insert(RequestId::parse("from-context").unwrap());
    client.clone().oneshot(request).await.unwrap();
    assert_eq!(last(), "from-context");
    // The call being served.
    let current = RequestId::parse("served").unwrap();
    current
        .scope(client.clone().oneshot(http::Request::new(())))
        .await
        .unwrap();
    assert_eq!(last(), "served");
    // None: a new one each time.
    client
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    client
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    let (a, b) = (last(), last());
    assert_eq!((a.len(), b.len()), (32, 32));
    assert_ne!(a, b);
}

#[tokio::test]
async fn one_line_per_call_with_endpoint_status_and_request_id_and_no_header() {
    let (logs, _guard) = capture(Level::INFO);
    let service = ServerLayer::grpc(internal_error).layer(echo());
    let request = http::Request::builder()
        .method("POST")
        .uri("/isp.BackendService/Request")
        .header("proxy_method_name", "auth/api/login")
        .header("x-request-id", "rid-1")
        .header("x-user-token", "the-users-token")
        .body(Body::new(Bytes::from_static(br#"{"password":"p@ss"}"#)))
        .unwrap();
    let (response, body) = call(service, request).await;
    assert_eq!(&body[..], br#"{"password":"p@ss"}"#);
    assert_eq!(response.headers()["x-request-id"], "rid-1");
    let lines = logs.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    for part in [
        " INFO ",
        "cluster_pipeline::log",
        "grpc handler: log",
        "endpoint=auth/api/login",
        "method=/isp.BackendService/Request",
        "status=0",
        "duration_ms=",
        "request_id=rid-1",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    // Neither bodies (INFO) nor any header value.
    assert!(!line.contains("p@ss") && !line.contains("body"), "{line}");
    assert!(!line.contains("the-users-token"), "{line}");
}

#[tokio::test]
async fn a_grpc_response_dropped_before_its_end_is_logged_cancelled() {
    let (logs, _guard) = capture(Level::INFO);
    let service = ServerLayer::grpc(internal_error).layer(echo());
    let response = service
        .oneshot(http::Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(
        logs.count("grpc handler: log"),
        0,
        "written at the body's end"
    );
    drop(response);
    assert_eq!(logs.count("status=1 "), 1, "{}", logs.text());
}

#[tokio::test]
async fn at_debug_the_bodies_are_logged_masked() {
    let (logs, _guard) = capture(Level::DEBUG);
    let service = ServerLayer::http(internal_error).layer(echo());
    let request = http::Request::builder()
        .method("PUT")
        .uri("/api/users/7")
        .header("authorization", "Bearer the-token")
        .body(Body::new(Bytes::from_static(
            br#"{"user":"ann","password":"p@ss","nested":{"apiKey":"k-1"}}"#,
        )))
        .unwrap();
    let (response, _) = call(service, request).await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("http handler: log"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    for part in [
        "endpoint=/api/users/7",
        "method=PUT",
        "status=200",
        &format!("request_id={id}"),
        r#"request_body={"nested":{"apiKey":"***"},"password":"***","user":"ann"}"#,
        r#"response_body={"nested":{"apiKey":"***"},"password":"***","user":"ann"}"#,
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    for secret in ["p@ss", "k-1", "the-token"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
}

#[tokio::test]
async fn a_body_over_the_bound_or_not_json_is_not_logged() {
    let (logs, _guard) = capture(Level::DEBUG);
    let service = ServerLayer::http(internal_error)
        .log(LogLayer::http().max_body(8))
        .layer(echo());
    for body in [&b"0123456789"[..], b"token=t"] {
        let request = http::Request::new(Body::new(Bytes::copy_from_slice(body)));
        call(service.clone(), request).await;
    }
    let text = logs.text();
    assert!(
        text.contains("request_body=<10 bytes, over the 8 logged>"),
        "{text}"
    );
    assert!(text.contains("request_body=<7 bytes, not JSON>"), "{text}");
    assert!(!text.contains("token=t"), "{text}");
}

#[tokio::test]
async fn the_routers_endpoint_and_the_level_are_the_lines() {
    let (logs, _guard) = capture(Level::WARN);
    let handler = service_fn(|_request: http::Request<LogBody<Body>>| async {
        let mut response = http::Response::new(Body::default());
        response
            .extensions_mut()
            .insert(EndpointName::new("/api/users/{id}"));
        Ok::<_, Infallible>(response)
    });
    let service = ServerLayer::http(internal_error)
        .log(LogLayer::http().level(Level::WARN))
        .layer(handler);
    let request = http::Request::builder()
        .uri("/api/users/7")
        .body(Body::default())
        .unwrap();
    call(service, request).await;
    let text = logs.text();
    assert!(text.contains(" WARN "), "{text}");
    assert!(text.contains("endpoint=/api/users/{id}"), "{text}");
}

#[tokio::test]
async fn panics_in_call_or_in_the_future_are_answered_and_logged() {
    let (logs, _guard) = capture(Level::INFO);
    let handler = service_fn(|request: http::Request<LogBody<Body>>| {
        assert!(request.uri().path() != "/sync", "panics in call");
        async move {
            assert!(request.uri().path() != "/async", "panics in the future");
            Ok::<_, Infallible>(http::Response::new(Body::default()))
        }
    });
    let service = ServerLayer::http(internal_error).layer(handler);
    for path in ["/sync", "/async", "/fine"] {
        let request = http::Request::builder()
            .uri(path)
            .body(Body::default())
            .unwrap();
        let (response, _) = call(service.clone(), request).await;
        let expected = if path == "/fine" { 200 } else { 500 };
        assert_eq!(response.status(), expected, "{path}");
    }
    let text = logs.text();
    assert_eq!(logs.count("panic while serving a request"), 2, "{text}");
    assert!(text.contains("panic=panics in call"), "{text}");
    // The panic's line is in the request's span; the call's line says 500.
    assert!(
        text.contains("http_call{endpoint=\"/async\"")
            || text.contains("http_call{endpoint=/async"),
        "{text}"
    );
    assert_eq!(logs.count("status=500"), 2, "{text}");
    assert_eq!(logs.count("status=200"), 1, "{text}");
}

#[tokio::test]
async fn the_recover_layer_alone() {
    // Every test that reaches a callsite has a subscriber: one reached first without any
    // would be cached as uninteresting while tests run in parallel (tracing's callsite cache).
    let (logs, _guard) = capture(Level::ERROR);
    let service =
        RecoverLayer::new(internal_error).layer(service_fn(|_r: http::Request<Body>| async {
            if true {
                panic!("alone");
            }
            Ok::<_, Infallible>(http::Response::new(Body::default()))
        }));
    let response = service
        .oneshot(http::Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(logs.text().contains("panic=alone"), "{}", logs.text());
}

#[tokio::test]
async fn without_a_propagator_nothing_is_injected() {
    // No global propagator in this test binary: the no-op one.
    assert!(!cluster_pipeline::trace::propagation_enabled());
    let (_logs, _guard) = capture(Level::TRACE);
    let sent = Arc::new(Mutex::new(None));
    let client = {
        let sent = Arc::clone(&sent);
        ClientLayer.layer(service_fn(move |request: http::Request<()>| {
            *sent.lock().unwrap() = Some(request.headers().clone());
            async { Ok::<_, Infallible>(()) }
        }))
    };
    let span = tracing::info_span!("a_span");
    let request = http::Request::new(());
    tracing::Instrument::instrument(client.oneshot(request), span)
        .await
        .unwrap();
    let headers = sent.lock().unwrap().take().unwrap();
    assert!(headers.get("traceparent").is_none());
    assert_eq!(headers.len(), 1, "only the request id: {headers:?}");
    let mut map = http::HeaderMap::new();
    map.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    assert!(cluster_pipeline::trace::extract(&map).is_none());
}
