//! A `traceparent` in: the HTTP call the handler makes to another module carries the same
//! trace, as a child of the handler's server span, and the same request id. OpenTelemetry as
//! the bootstrap sets it up with `observability.tracing.enable`: an SDK tracer provider
//! (spans kept in memory here), W3C Trace Context as the global propagator,
//! tracing-opentelemetry's layer in the global subscriber.

use bytes::Bytes;
use cluster_http::{
    ApiError, CallContext, Endpoint, HandlerError, HttpClient, Response, Router, Server,
};
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Debug, Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Spans {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

impl Spans {
    /// The spans named `name` once `n` have ended (the server ends a span when the answer's
    /// body has been sent, around the time the client reads it).
    async fn ended(&self, name: &str, n: usize) -> Vec<SpanData> {
        for _ in 0..200 {
            let found: Vec<SpanData> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.name == name)
                .cloned()
                .collect();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no {n} spans {name}: {:?}", self.0.lock().unwrap());
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_and_the_request_id_pass_on_to_the_call_the_handler_makes() {
    let spans = Spans::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
    )
    .unwrap();

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
