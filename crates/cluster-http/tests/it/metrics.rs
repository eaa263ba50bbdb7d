//! isp-kit's HTTP metrics as a Prometheus server would scrape them: each test records into a
//! recorder of its own (entered around a current-thread runtime, so that the server's and the
//! client's tasks record there) and reads the rendered text back with a text-format parser.

use cluster_http::{CallError, HttpClient, Server};
use cluster_metrics::prometheus::{self, Prometheus};
use cluster_metrics::scrape::Scraped;
use serde_json::json;
use std::future::Future;

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

const SERVER_FAMILIES: [&str; 4] = [
    "http_request_duration_ms",
    "http_request_body_size",
    "http_response_body_size",
    "http_status_code_count",
];

#[test]
fn the_server_records_each_routed_call_with_its_final_status() {
    let prometheus = recorded(|| async {
        let server = Server::bind(crate::common::router(), "127.0.0.1:0")
            .await
            .unwrap();
        let client = HttpClient::builder()
            .metrics(false)
            .build([server.local_addr().to_string()]);
        let ok: serde_json::Value = client
            .post("echo/json")
            .json_body(&json!({"a": 1}))
            .json()
            .await
            .unwrap();
        assert_eq!(ok, json!({"a": 1}));
        client
            .post("orders/business")
            .raw_body("{}")
            .raw()
            .await
            .unwrap_err();
        client
            .post("orders/panic")
            .raw_body("[]")
            .raw()
            .await
            .unwrap_err();
        client
            .post("orders/create")
            .raw_body(r#"{"count":0}"#)
            .raw()
            .await
            .unwrap_err();
        let err = client.post("no/such").raw().await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
        let err = client.get("echo/json").raw().await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(405));
        server.shutdown().await.unwrap();
    });
    let scraped = scrape(&prometheus);
    let text = &scraped.text;

    for (endpoint, code) in [
        ("POST /echo/json", "200"),
        ("POST /orders/business", "400"),
        ("POST /orders/panic", "500"),
        ("POST /orders/create", "400"),
    ] {
        let series = [("method", "POST"), ("endpoint", endpoint)];
        let counted = [("method", "POST"), ("endpoint", endpoint), ("code", code)];
        assert_eq!(
            scraped.value("http_status_code_count", &counted),
            Some(1.0),
            "{endpoint}\n{text}"
        );
        assert_eq!(
            scraped.quantiles("http_request_duration_ms", &series),
            [0.5, 0.9, 0.95, 0.99]
        );
        assert_eq!(
            scraped.value("http_request_duration_ms_count", &series),
            Some(1.0)
        );
        // A loopback call takes less than a millisecond: Go's `Milliseconds` says 1.
        let ms = scraped
            .value("http_request_duration_ms_sum", &series)
            .unwrap();
        assert!(ms >= 1.0 && ms.fract() == 0.0, "{ms}");
    }
    let sum = |family: &str, endpoint: &str| {
        scraped.value(family, &[("method", "POST"), ("endpoint", endpoint)])
    };
    assert_eq!(
        sum("http_request_body_size_sum", "POST /echo/json"),
        Some(7.0)
    ); // {"a":1}
    assert_eq!(
        sum("http_response_body_size_sum", "POST /echo/json"),
        Some(8.0)
    ); // and \n
    assert_eq!(
        sum("http_request_body_size_sum", "POST /orders/panic"),
        Some(2.0)
    );
    assert_eq!(
        sum("http_response_body_size_sum", "POST /orders/panic"),
        Some(br#"{"errorCode":900,"errorMessage":"internal service error"}"#.len() as f64 + 1.0)
    );
    // Nothing for an unknown path or another method (Go's router answers those before its
    // endpoints), nor for the routed endpoints never called.
    for sample in &scraped.scrape.samples {
        if SERVER_FAMILIES.iter().any(|f| sample.metric.starts_with(f)) {
            let endpoint = sample.labels.get("endpoint").unwrap();
            assert!(
                [
                    "POST /echo/json",
                    "POST /orders/business",
                    "POST /orders/panic",
                    "POST /orders/create"
                ]
                .contains(&endpoint),
                "{sample:?}"
            );
        }
    }
    assert!(!text.contains("http_client_"), "{text}");
    assert_eq!(
        scraped
            .scrape
            .docs
            .get("http_status_code_count")
            .map(String::as_str),
        Some("Counter of statuses codes")
    );
}

#[test]
fn the_client_records_every_call_it_sends() {
    let prometheus = recorded(|| async {
        let server = Server::builder(crate::common::router())
            .metrics(false)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let dead = crate::common::closed_port().await;
        let client = HttpClient::new([dead, server.local_addr().to_string()]);
        client.post("echo/json").json_body(&1).raw().await.unwrap();
        client.post("/echo/json").json_body(&2).raw().await.unwrap();
        client
            .post("orders/business")
            .raw_body("{}")
            .raw()
            .await
            .unwrap_err();
        client.post("no/such?x=1").raw().await.unwrap_err();
        let nowhere = HttpClient::new(Vec::<String>::new());
        let err = nowhere.post("echo/json").raw().await.unwrap_err();
        assert!(matches!(err, CallError::NoHosts));
        server.shutdown().await.unwrap();
    });
    let scraped = scrape(&prometheus);
    let text = &scraped.text;
    let series = |endpoint| [("endpoint", endpoint)];
    let count =
        |endpoint| scraped.value("http_client_request_duration_ms_count", &series(endpoint));
    // The label is the path with its leading `/`, without the query.
    assert_eq!(count("/echo/json"), Some(3.0), "{text}");
    assert_eq!(count("/orders/business"), Some(1.0));
    assert_eq!(count("/no/such"), Some(1.0));
    let code = |endpoint, code| {
        scraped.value(
            "http_client_status_code_count",
            &[("endpoint", endpoint), ("code", code)],
        )
    };
    assert_eq!(code("/echo/json", "200"), Some(2.0));
    assert_eq!(code("/orders/business", "400"), Some(1.0));
    assert_eq!(code("/no/such", "404"), Some(1.0));
    assert_eq!(
        scraped.value(
            "http_client_error_count",
            &[
                ("endpoint", "/echo/json"),
                ("error", "http client: no hosts to call")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    // The connections made (one to the dead host, which failed, and one to the server),
    // and each response read.
    let connects = scraped
        .value("http_client_connect_duration_count", &series("/echo/json"))
        .unwrap();
    assert!(connects >= 2.0, "{text}");
    assert_eq!(
        scraped.value(
            "http_client_response_read_duration_count",
            &series("/echo/json")
        ),
        Some(2.0)
    );
    assert_eq!(
        scraped.quantiles("http_client_request_duration_ms", &series("/echo/json")),
        [0.5, 0.9, 0.95, 0.99]
    );
    // IP hosts are not resolved; the server's metrics were off.
    assert!(!text.contains("http_client_dns_duration_count"), "{text}");
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
