//! `observability.tracing` end to end: a span made through `tracing` under the OTLP layer
//! reaches a fake OTLP/HTTP collector (on loopback) with isp-kit's resource.
#![cfg(feature = "otlp")]

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use cluster_bootstrap::local::TracingConfig;
use cluster_bootstrap::observability::tracing::{SHUTDOWN_TIMEOUT, otlp};
use cluster_bootstrap::observability::{Identity, ObservabilityError};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// How long a test waits for what it expects.
const WAIT: Duration = Duration::from_secs(10);

/// A fake OTLP/HTTP collector: each request to `POST /v1/traces`, decoded, with its
/// `Content-Type`.
struct Collector {
    address: String,
    requests: mpsc::Receiver<(String, ExportTraceServiceRequest)>,
    _runtime: tokio::runtime::Runtime,
}

fn collector() -> Collector {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (sender, requests) = mpsc::channel();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sender = sender.clone();
            async move {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                let _ = sender.send((content_type, request));
                (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });
    Collector {
        address,
        requests,
        _runtime: runtime,
    }
}

fn identity() -> Identity {
    Identity {
        module_name: "isp-test-service".into(),
        module_version: "1.2.3".into(),
        instance_id: "10.0.0.7".into(),
    }
}

fn text(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        any_value::Value::IntValue(number) => Some(number.to_string()),
        any_value::Value::BoolValue(flag) => Some(flag.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(&kv.value)?)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn a_tracing_span_arrives_with_isp_kits_resource_after_shutdown() {
    let collector = collector();
    let mut config = TracingConfig::default();
    config.enable = true;
    config.address = collector.address.clone();
    config.environment = "stage".into();
    config.attributes.insert("team".into(), "platform".into());
    let (layer, guard) = otlp(&config, &identity()).unwrap().expect("enabled");

    let subscriber = tracing_subscriber::registry().with(layer);
    let traceparent = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("handle_request", answer = 42);
        let _entered = span.enter();
        tracing::info!("inside");
        tracing::info_span!("child").in_scope(|| {});
        // The exporter's own stack is left out.
        tracing::info_span!(target: "hyper::proto::h1", "parse_headers").in_scope(|| {});
        // The global propagator is W3C Trace Context.
        let mut carrier = HashMap::new();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&span.context(), &mut carrier)
        });
        carrier.remove("traceparent")
    });
    guard.shutdown().expect("the spans were exported");

    // The spans arrive by the end of the shutdown; take the requests until both are seen.
    let deadline = Instant::now() + WAIT;
    let mut spans: Vec<Span> = Vec::new();
    let mut resource = BTreeMap::new();
    let mut scope_name = String::new();
    while !(spans.iter().any(|s| s.name == "handle_request")
        && spans.iter().any(|s| s.name == "child"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let (content_type, request) = collector
            .requests
            .recv_timeout(left)
            .expect("the spans reach the collector");
        assert_eq!(content_type, "application/x-protobuf");
        for resource_spans in request.resource_spans {
            resource.extend(attributes(
                &resource_spans.resource.unwrap_or_default().attributes,
            ));
            for scope_spans in resource_spans.scope_spans {
                scope_name = scope_spans.scope.unwrap_or_default().name;
                spans.extend(scope_spans.spans);
            }
        }
    }

    assert_eq!(resource["service.name"], "isp-test-service");
    assert_eq!(resource["service.version"], "1.2.3");
    assert_eq!(resource["service.instance.id"], "10.0.0.7");
    assert_eq!(resource["deployment.environment"], "stage");
    assert_eq!(resource["team"], "platform");
    assert_eq!(scope_name, "cluster-bootstrap");

    let parent = spans.iter().find(|s| s.name == "handle_request").unwrap();
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    assert!(
        !spans.iter().any(|s| s.name == "parse_headers"),
        "{spans:?}"
    );
    assert_eq!(attributes(&parent.attributes)["answer"], "42");
    assert!(
        parent.events.iter().any(|event| event.name == "inside"),
        "{:?}",
        parent.events
    );
    assert_eq!(child.trace_id, parent.trace_id);
    assert_eq!(child.parent_span_id, parent.span_id);
    assert_eq!(
        traceparent.as_deref(),
        Some(format!("00-{}-{}-01", hex(&parent.trace_id), hex(&parent.span_id)).as_str())
    );
}

#[test]
fn a_collector_that_never_answers_holds_up_shutdown_no_longer_than_the_bound() {
    // Connections are accepted (by the kernel) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = TracingConfig::default();
    config.enable = true;
    config.address = format!("http://{}", silent.local_addr().unwrap());
    let (layer, guard) = otlp(&config, &identity()).unwrap().expect("enabled");

    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("lost").in_scope(|| {});
    });
    let started = Instant::now();
    let result = guard.shutdown();
    let took = started.elapsed();
    assert!(
        matches!(result, Err(ObservabilityError::TracingShutdown(_))),
        "{result:?}"
    );
    assert!(took < SHUTDOWN_TIMEOUT + Duration::from_secs(2), "{took:?}");
    drop(silent);
}
