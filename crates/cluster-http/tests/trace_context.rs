//! A `traceparent` in: the HTTP call the handler makes to another module carries the same
//! trace, as a child of the handler's server span, and the same request id. OpenTelemetry as
//! the bootstrap sets it up with `observability.tracing.enable`: an SDK tracer provider
//! (spans kept in memory here), W3C Trace Context as the global propagator,
//! tracing-opentelemetry's layer in the global subscriber.

use bytes::Bytes;
use cluster_http::{
    ApiError, CallContext, Endpoint, HandlerError, HttpClient, Response, Router, Server,
};
use cluster_testkit::spans::{SpanRecorder, attribute};
use opentelemetry::trace::{SpanId, SpanKind, Status};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_and_the_request_id_pass_on_to_the_call_the_handler_makes() {
    let spans = SpanRecorder::global();

    // Module B records the headers it receives.
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<http::HeaderMap>();
    let b = Router::new()
        .handle_raw(
            Endpoint::post("b/api/echo"),
            move |ctx: CallContext, body: Bytes| {
                let seen_tx = seen_tx.clone();
                async move {
                    seen_tx.send(ctx.headers().clone()).unwrap();
                    Ok::<_, ApiError>(Response::new(body))
                }
            },
        )
        .unwrap();
    let b = Server::bind(b, "127.0.0.1:0").await.unwrap();
    // Module A calls B while serving a call.
    let to_b = HttpClient::new([b.local_addr().to_string()]);
    let a = Router::new()
        .handle(
            Endpoint::post("a/api/call"),
            move |_ctx: CallContext, body: Value| {
                let to_b = to_b.clone();
                async move {
                    let echoed: Value = to_b.post("b/api/echo").json_body(&body).json().await?;
                    Ok::<_, HandlerError>(echoed)
                }
            },
        )
        .unwrap();
    let a = Server::bind(a, "127.0.0.1:0").await.unwrap();

    let caller = HttpClient::new([a.local_addr().to_string()]);
    let answer: Value = caller
        .post("a/api/call")
        .header("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .request_id("rid-trace")
        .json_body(&json!({"n": 1}))
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"n": 1}));

    let headers = seen.recv().await.unwrap();
    let out: Vec<&str> = headers
        .get("traceparent")
        .expect("the call to B carries a traceparent")
        .to_str()
        .unwrap()
        .split('-')
        .collect();
    assert_eq!(out[1], TRACE_ID, "{out:?}");
    assert_ne!(out[2], PARENT_ID);
    // isp-kit's client passes the request id of the call being served on.
    assert_eq!(headers.get("x-request-id").unwrap(), "rid-trace");

    // A's server span: child of the caller's context, named after the endpoint; the call
    // to B was made in it; B's span is its child.
    let a_span = spans.ended("POST /a/api/call", 1).await.remove(0);
    assert_eq!(a_span.span_kind, SpanKind::Server);
    assert_eq!(a_span.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(a_span.parent_span_id.to_string(), PARENT_ID);
    assert_eq!(a_span.span_context.span_id().to_string(), out[2]);
    assert_eq!(a_span.status, Status::Unset);
    for (key, value) in [
        ("app.request_id", "rid-trace"),
        ("http.route", "/a/api/call"),
        ("http.method", "POST"),
        ("http.status_code", "200"),
    ] {
        assert_eq!(
            attribute(&a_span, key).as_deref(),
            Some(value),
            "{key}: {:?}",
            a_span.attributes
        );
    }
    let b_span = spans.ended("POST /b/api/echo", 1).await.remove(0);
    assert_eq!(b_span.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(b_span.parent_span_id, a_span.span_context.span_id());
    assert_eq!(
        attribute(&b_span, "app.request_id").as_deref(),
        Some("rid-trace")
    );

    // A call from outside any span, without a traceparent or a request id: a new trace,
    // and the id the caller's client made, passed on by A.
    let response = caller
        .post("a/api/call")
        .json_body(&1)
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    let headers = seen.recv().await.unwrap();
    let next = headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!next.contains(TRACE_ID), "{next}");
    assert_eq!(headers["x-request-id"], id.as_str());
    let second = spans
        .ended("POST /a/api/call", 2)
        .await
        .into_iter()
        .find(|s| s.span_context.trace_id().to_string() != TRACE_ID)
        .unwrap();
    assert_eq!(second.parent_span_id, SpanId::INVALID);

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
