//! isp-kit's gRPC metrics as a Prometheus server would scrape them: each test records into a
//! recorder of its own (entered around a current-thread runtime, so the server's and the
//! client's tasks record there) and reads the rendered text back with a text-format parser.

use cluster_grpc::{ApiError, CallContext, CallError, GrpcClient, Router, Server};
use cluster_metrics::prometheus::{self, Prometheus};
use cluster_metrics::scrape::Scraped;
use serde_json::{Value as Json, json};
use std::future::Future;

/// Runs `test` on a current-thread runtime inside a fresh local recorder; returns what renders
/// that recorder.
fn recorded<F: Future<Output = ()>>(test: impl FnOnce() -> F) -> Prometheus {
    let (prometheus, recorder) = prometheus::build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    cluster_metrics::metrics::with_local_recorder(&recorder, || rt.block_on(test()));
    prometheus
}

fn scrape(prometheus: &Prometheus) -> Scraped {
    Scraped::parse(prometheus.render())
}

fn router() -> Router {
    Router::new()
        .handle("m/ok", |_ctx: CallContext, body: Json| async move {
            Ok::<_, ApiError>(body)
        })
        .unwrap()
        .handle("m/business", |_ctx: CallContext, _body: Json| async move {
            Err::<Json, _>(ApiError::business(1001, "no"))
        })
        .unwrap()
        .handle("m/panic", |_ctx: CallContext, _body: Json| async move {
            if true {
                panic!("handler panics on purpose");
            }
            Ok::<Json, ApiError>(Json::Null)
        })
        .unwrap()
        .handle("m/never", |_ctx: CallContext, body: Json| async move {
            Ok::<_, ApiError>(body)
        })
        .unwrap()
}

const SERVER_FAMILIES: [&str; 4] = [
    "grpc_request_duration_ms",
    "grpc_request_body_size",
    "grpc_response_body_size",
    "grpc_status_code_count",
];

#[test]
fn the_server_records_each_routed_call_with_its_final_status() {
    let prometheus = recorded(|| async {
        let server = Server::bind(router(), "127.0.0.1:0").await.unwrap();
        let client = GrpcClient::builder()
            .metrics(false)
            .build([server.local_addr().to_string()]);
        let ok: Json = client
            .invoke("m/ok")
            .json_body(&json!({"a": 1}))
            .json()
            .await
            .unwrap();
        assert_eq!(ok, json!({"a": 1}));
        let err = client
            .invoke("m/business")
            .raw_body(&b"{}"[..])
            .raw()
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Api { .. }), "{err:?}");
        let err = client.invoke("m/panic").raw_body(&b"[]"[..]).raw().await;
        assert!(err.is_err());
        let err = client.invoke("m/unknown").raw().await.unwrap_err();
        assert!(
            matches!(&err, CallError::Status(s) if s.code() == cluster_grpc::tonic::Code::NotFound)
        );
        server.shutdown().await.unwrap();
    });
    let scraped = scrape(&prometheus);
    let text = &scraped.text;

    for (endpoint, code) in [
        ("m/ok", "OK"),
        ("m/business", "InvalidArgument"),
        ("m/panic", "Internal"),
    ] {
        let series = [("endpoint", endpoint)];
        assert_eq!(
            scraped.value(
                "grpc_status_code_count",
                &[("endpoint", endpoint), ("code", code)]
            ),
            Some(1.0),
            "{endpoint}\n{text}"
        );
        assert_eq!(
            scraped.quantiles("grpc_request_duration_ms", &series),
            [0.5, 0.9, 0.95, 0.99]
        );
        // A loopback call takes less than a millisecond: Go's `Milliseconds` says 1.
        assert_eq!(
            scraped.value("grpc_request_duration_ms_count", &series),
            Some(1.0)
        );
        let ms = scraped
            .value("grpc_request_duration_ms_sum", &series)
            .unwrap();
        assert!(ms >= 1.0 && ms.fract() == 0.0, "{ms}");
        assert_eq!(
            scraped.quantiles("grpc_request_body_size", &series),
            [0.5, 0.9, 0.95, 0.99]
        );
    }
    let body_sum =
        |endpoint| scraped.value("grpc_request_body_size_sum", &[("endpoint", endpoint)]);
    assert_eq!(body_sum("m/ok"), Some(7.0)); // {"a":1}
    assert_eq!(body_sum("m/business"), Some(2.0));
    assert_eq!(body_sum("m/panic"), Some(2.0));
    // A response body only where there was a response.
    let ok = [("endpoint", "m/ok")];
    assert_eq!(scraped.value("grpc_response_body_size_sum", &ok), Some(7.0));
    assert_eq!(
        scraped.value("grpc_response_body_size_count", &ok),
        Some(1.0)
    );
    assert!(
        scraped
            .find(
                "grpc_response_body_size_count",
                &[("endpoint", "m/business")]
            )
            .is_none()
    );

    // Nothing for the unknown endpoint, nor for the routed one never called (Go's `*Vec`).
    for sample in &scraped.scrape.samples {
        if SERVER_FAMILIES.iter().any(|f| sample.metric.starts_with(f)) {
            let endpoint = sample.labels.get("endpoint");
            assert!(
                !matches!(endpoint, Some("m/unknown" | "m/never")),
                "{sample:?}"
            );
        }
    }
    // The client's were off.
    assert!(!text.contains("grpc_client_request_duration_ms"), "{text}");
    assert_eq!(
        scraped
            .scrape
            .docs
            .get("grpc_status_code_count")
            .map(String::as_str),
        Some("Counter of statuses codes")
    );
}

#[test]
fn the_client_records_every_call_it_sends() {
    let prometheus = recorded(|| async {
        let server = Server::builder(router())
            .metrics(false)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let client = GrpcClient::new([server.local_addr().to_string()]);
        client.invoke("m/ok").json_body(&1).raw().await.unwrap();
        client.invoke("m/ok").json_body(&2).raw().await.unwrap();
        client.invoke("m/business").raw().await.unwrap_err();
        client.invoke("m/unknown").raw().await.unwrap_err();
        // No host to call: still a call, and an error.
        let nowhere = GrpcClient::new(Vec::<String>::new());
        let err = nowhere.invoke("m/ok").raw().await.unwrap_err();
        assert!(matches!(err, CallError::NoHosts));
        server.shutdown().await.unwrap();
    });
    let scraped = scrape(&prometheus);
    let text = &scraped.text;
    let count = |endpoint| {
        scraped.value(
            "grpc_client_request_duration_ms_count",
            &[("endpoint", endpoint)],
        )
    };
    assert_eq!(count("m/ok"), Some(3.0), "{text}");
    assert_eq!(count("m/business"), Some(1.0));
    assert_eq!(count("m/unknown"), Some(1.0));
    assert_eq!(
        scraped.quantiles("grpc_client_request_duration_ms", &[("endpoint", "m/ok")]),
        [0.5, 0.9, 0.95, 0.99]
    );
    assert_eq!(
        scraped
            .scrape
            .docs
            .get("grpc_client_request_duration_ms")
            .map(String::as_str),
        Some("The latencies of calling external services via GRPC")
    );
    // The server's were off.
    for family in SERVER_FAMILIES {
        assert!(
            !scraped
                .scrape
                .samples
                .iter()
                .any(|s| s.metric.starts_with(family)),
            "{family}\n{text}"
        );
    }
}
