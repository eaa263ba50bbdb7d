//! A W3C `traceparent` in: the request's span continues that trace, and a call made while
//! serving the request carries a `traceparent` of the same trace, child of the request's
//! span. A real OpenTelemetry SDK provider (spans kept in memory) and tracing-opentelemetry's
//! layer in a global subscriber, W3C Trace Context as the global propagator: what the
//! bootstrap sets up when `observability.tracing.enable` is on.

use bytes::Bytes;
use cluster_pipeline::{ClientLayer, LogBody, Panic, ServerLayer};
use cluster_testkit::spans::SpanRecorder;
use http_body_util::Full;
use opentelemetry::trace::{SpanKind, Status};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tower::{Layer as _, ServiceExt as _, service_fn};

type Body = Full<Bytes>;

/// A server whose handler calls another service (the "next module") through the client
/// pipeline; returns the headers that call sent.
async fn serve(request: http::Request<Body>) -> (http::Response<LogBody<Body>>, http::HeaderMap) {
    let sent = Arc::new(Mutex::new(http::HeaderMap::new()));
    let next = {
        let sent = Arc::clone(&sent);
        ClientLayer.layer(service_fn(move |call: http::Request<Body>| {
            *sent.lock().unwrap() = call.headers().clone();
            async { Ok::<_, Infallible>(http::Response::new(Body::new(Bytes::new()))) }
        }))
    };
    let handler = service_fn(move |_request: http::Request<LogBody<Body>>| {
        let next = next.clone();
        async move {
            let call = http::Request::builder()
                .uri("/next")
                .body(Body::new(Bytes::new()))
                .unwrap();
            next.oneshot(call).await.unwrap();
            Ok::<_, Infallible>(http::Response::new(Body::new(Bytes::from_static(b"{}"))))
        }
    });
    let service =
        ServerLayer::grpc(|_: &Panic| http::Response::new(Body::new(Bytes::new()))).layer(handler);
    let response = service.oneshot(request).await.unwrap();
    let headers = sent.lock().unwrap().clone();
    (response, headers)
}

fn traceparent(headers: &http::HeaderMap) -> Vec<String> {
    let value = headers
        .get("traceparent")
        .expect("a traceparent sent")
        .to_str()
        .unwrap();
    value.split('-').map(str::to_owned).collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_traceparent_in_is_the_trace_of_the_calls_made_while_serving() {
    let spans = SpanRecorder::global();
    let request = http::Request::builder()
        .uri("/isp.BackendService/Request")
        .header("proxy_method_name", "orders/api/create")
        .header("x-request-id", "req-1")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body(Body::new(Bytes::new()))
        .unwrap();
    let (response, sent) = serve(request).await;
    drop(response);

    // The call made inside the handler: same trace, its parent is the request's span.
    let out = traceparent(&sent);
    assert_eq!(out[0], "00");
    assert_eq!(out[1], TRACE_ID, "{out:?}");
    assert_ne!(out[2], PARENT_ID);
    assert_eq!(out[3], "01");
    assert!(sent["traceparent"].is_sensitive(), "never indexed by HPACK");
    // And the request id of the call being served.
    assert_eq!(sent["x-request-id"], "req-1");

    // The request's span: named after the endpoint, a server span, child of the caller's.
    let server = spans.named("orders/api/create");
    assert_eq!(server.len(), 1, "{server:?}");
    let server = &server[0];
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(server.parent_span_id.to_string(), PARENT_ID);
    assert_eq!(server.span_context.span_id().to_string(), out[2]);
    let attribute = |key: &str| {
        server
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("app.request_id").as_deref(), Some("req-1"));
    assert_eq!(attribute("endpoint").as_deref(), Some("orders/api/create"));
    assert_eq!(server.status, Status::Unset);
}

#[tokio::test]
async fn without_a_traceparent_the_request_starts_a_trace() {
    let spans = SpanRecorder::global();
    let request = http::Request::builder()
        .uri("/isp.BackendService/Request")
        .header("proxy_method_name", "orders/api/root")
        .body(Body::new(Bytes::new()))
        .unwrap();
    let (_response, sent) = serve(request).await;
    let out = traceparent(&sent);
    let server = &spans.named("orders/api/root")[0];
    assert_eq!(out[1], server.span_context.trace_id().to_string());
    assert_eq!(out[2], server.span_context.span_id().to_string());
    assert_eq!(server.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    // A new request id, made by the server, passed on.
    assert_eq!(sent["x-request-id"].len(), 32);
}

#[tokio::test]
async fn an_http_span_is_named_by_route_and_a_5xx_is_an_error() {
    let spans = SpanRecorder::global();
    let handler = service_fn(|request: http::Request<LogBody<Body>>| async move {
        let mut response = http::Response::new(Body::new(Bytes::new()));
        if request.uri().path() == "/fail" {
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
        }
        Ok::<_, Infallible>(response)
    });
    let service =
        ServerLayer::http(|_: &Panic| http::Response::new(Body::new(Bytes::new()))).layer(handler);
    for path in ["/ok", "/fail"] {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("{path}?q=1"))
            .body(Body::new(Bytes::new()))
            .unwrap();
        service.clone().oneshot(request).await.unwrap();
    }
    let ok = &spans.named("POST /ok")[0];
    assert_eq!(ok.span_kind, SpanKind::Server);
    assert_eq!(ok.status, Status::Unset);
    let attributes: Vec<(String, String)> = ok
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    for (key, value) in [
        ("http.method", "POST"),
        ("http.target", "/ok?q=1"),
        ("http.status_code", "200"),
    ] {
        assert!(
            attributes.iter().any(|(k, v)| k == key && v == value),
            "{key}: {attributes:?}"
        );
    }
    let failed = &spans.named("POST /fail")[0];
    assert!(matches!(failed.status, Status::Error { .. }));

    // A routed request, its endpoint named `METHOD /path` (cluster-http's names): the span
    // is named after it, `http.route` is the path.
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/routed?q=1")
        .body(Body::new(Bytes::new()))
        .unwrap();
    request
        .extensions_mut()
        .insert(cluster_pipeline::EndpointName::new("POST /routed"));
    service.oneshot(request).await.unwrap();
    let routed = &spans.named("POST /routed")[0];
    assert!(
        routed
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "http.route" && kv.value.as_str() == "/routed"),
        "{:?}",
        routed.attributes
    );
}
