//! A `traceparent` in: the call the handler makes to another module carries the same trace,
//! as a child of the handler's server span, and the same request id. OpenTelemetry as the
//! bootstrap sets it up with `observability.tracing.enable`: an SDK tracer provider (spans
//! kept in memory here), W3C Trace Context as the global propagator, tracing-opentelemetry's
//! layer in the global subscriber.

use cluster_grpc::tonic::metadata::MetadataMap;
use cluster_grpc::{ApiError, CallContext, GrpcClient, HandlerError, Message, Router, Server};
use cluster_testkit::spans::SpanRecorder;
use opentelemetry::trace::{SpanId, SpanKind};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_and_the_request_id_pass_on_to_the_call_the_handler_makes() {
    let spans = SpanRecorder::global();

    // Module B records what it receives.
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<MetadataMap>();
    let b = Router::new()
        .handle_raw("b/api/echo", move |ctx: CallContext, m: Message| {
            let seen_tx = seen_tx.clone();
            async move {
                seen_tx.send(ctx.metadata().clone()).unwrap();
                Ok::<_, ApiError>(m)
            }
        })
        .unwrap();
    let b = Server::bind(b, "127.0.0.1:0").await.unwrap();
    // Module A calls B while serving a call.
    let to_b = GrpcClient::new([b.local_addr().to_string()]);
    let a = Router::new()
        .handle("a/api/call", move |_ctx: CallContext, body: Value| {
            let to_b = to_b.clone();
            async move {
                let echoed: Value = to_b.invoke("b/api/echo").json_body(&body).json().await?;
                Ok::<_, HandlerError>(echoed)
            }
        })
        .unwrap();
    let a = Server::bind(a, "127.0.0.1:0").await.unwrap();

    let caller = GrpcClient::new([a.local_addr().to_string()]);
    let answer: Value = caller
        .invoke("a/api/call")
        .metadata("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .request_id("rid-trace")
        .json_body(&json!({"n": 1}))
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"n": 1}));

    let md = seen.recv().await.unwrap();
    let out: Vec<&str> = md
        .get("traceparent")
        .expect("the call to B carries a traceparent")
        .to_str()
        .unwrap()
        .split('-')
        .collect();
    assert_eq!(out[1], TRACE_ID, "{out:?}");
    assert_ne!(out[2], PARENT_ID);
    // isp-kit's client passes the caller's request id on.
    assert_eq!(md.get("x-request-id").unwrap(), "rid-trace");

    // A's server span: child of the caller's context, named after the endpoint; the call
    // to B was made in it; B's span is its child.
    let a_span = spans.ended("a/api/call", 1).await.remove(0);
    assert_eq!(a_span.span_kind, SpanKind::Server);
    assert_eq!(a_span.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(a_span.parent_span_id.to_string(), PARENT_ID);
    assert_eq!(a_span.span_context.span_id().to_string(), out[2]);
    assert!(
        a_span
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "app.request_id" && kv.value.as_str() == "rid-trace"),
        "{:?}",
        a_span.attributes
    );
    let b_span = spans.ended("b/api/echo", 1).await.remove(0);
    assert_eq!(b_span.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(b_span.parent_span_id, a_span.span_context.span_id());

    // A call from outside any span, without a traceparent: a new trace, none sent.
    let _: Value = caller
        .invoke("a/api/call")
        .json_body(&1)
        .json()
        .await
        .unwrap();
    let md = seen.recv().await.unwrap();
    let next = md.get("traceparent").unwrap().to_str().unwrap().to_owned();
    assert!(!next.contains(TRACE_ID), "{next}");
    assert_ne!(a_span.span_context.span_id(), SpanId::INVALID);

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
