//! What the Prometheus recorder renders, read back by a Prometheus text-format parser: the
//! names, help texts, types, labels and quantiles of isp-kit's metrics.

use cluster_metrics::app::{LogCounter, LogLevel};
use cluster_metrics::cluster::{ClusterMetrics, FailureCause, SessionState};
use cluster_metrics::grpc::{GrpcClientMetrics, GrpcServerMetrics, code};
use cluster_metrics::http::{HttpClientMetrics, HttpServerMetrics};
use cluster_metrics::prometheus::{self, Prometheus};
use cluster_metrics::{Kind, families, metrics};
use prometheus_parse::{Sample, Scrape, Value};
use std::time::Duration;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the text parses")
}

fn samples<'a>(scrape: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    scrape.samples.iter().filter(|s| s.metric == name).collect()
}

fn labels(sample: &Sample) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = sample
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.sort();
    pairs
}

fn value(scrape: &Scrape, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    samples(scrape, name)
        .into_iter()
        .find(|s| labels(s) == want)
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name}: not a single value: {other:?}"),
        })
}

fn quantiles(scrape: &Scrape, name: &str, want: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    let sample = samples(scrape, name)
        .into_iter()
        .find(|s| labels(s) == want)
        .unwrap_or_else(|| panic!("no {name} {want:?}"));
    let Value::Summary(qs) = &sample.value else {
        panic!("{name} is not a summary: {:?}", sample.value)
    };
    qs.iter().map(|q| (q.quantile, q.count)).collect()
}

/// Records one of everything through a fresh local recorder.
fn record_everything() -> (Prometheus, String) {
    let (prometheus, recorder) = prometheus::build();
    metrics::with_local_recorder(&recorder, || {
        let server = GrpcServerMetrics::with_endpoints(["a/ok", "a/never"]);
        server.observe("a/ok", 10, Duration::from_micros(2500), code::OK, Some(20));
        server.observe(
            "a/ok",
            30,
            Duration::from_micros(100),
            code::INVALID_ARGUMENT,
            None,
        );
        GrpcClientMetrics::new().observe_duration("b/call", Duration::from_millis(7));

        let http = HttpServerMetrics::new();
        http.observe(
            "GET",
            "/api/x",
            Duration::from_millis(3),
            404,
            Some((0, 12)),
        );
        let client = HttpClientMetrics::new();
        client.with_endpoint("svc", |m| {
            m.observe_duration(Duration::from_millis(4));
            m.observe_conn_establishment(Duration::from_nanos(1500));
            m.observe_request_writing(Duration::from_nanos(200));
            m.observe_dns_lookup(Duration::from_nanos(300));
            m.observe_response_reading(Duration::from_nanos(400));
            m.count_status_code(503);
            m.count_error(&"dial tcp 10.1.2.3:80: connect: connection refused");
        });

        let logs = LogCounter::new();
        logs.sampled(LogLevel::Info);
        logs.dropped(LogLevel::Debug);

        let cluster = ClusterMetrics::new();
        cluster.session_started();
        cluster.set_state(SessionState::Ready);
        cluster.session_ready(Duration::from_millis(42));
        cluster.session_failed(FailureCause::Disconnected);
        cluster.config_applied();
    });
    let text = prometheus.render();
    (prometheus, text)
}

#[test]
fn every_family_renders_with_go_s_name_help_and_type() {
    let (_, text) = record_everything();
    let scrape = parse(&text);
    for family in families() {
        let help = scrape.docs.get(family.name).map(String::as_str);
        assert_eq!(help, Some(family.help), "{}:\n{text}", family.name);
        let type_line = format!("# TYPE {} {}\n", family.name, family.kind.as_str());
        assert!(text.contains(&type_line), "{type_line}{text}");
    }
    // Counters keep their names: no `_total` is added.
    assert!(!text.contains("_count_total"), "{text}");
}

#[test]
fn grpc_series_have_isp_kit_labels_quantiles_sums_and_counts() {
    let (_, text) = record_everything();
    let scrape = parse(&text);
    let ok = [("endpoint", "a/ok")];
    let qs = quantiles(&scrape, "grpc_request_duration_ms", &ok);
    let objectives: Vec<f64> = qs.iter().map(|q| q.0).collect();
    assert_eq!(objectives, [0.5, 0.9, 0.95, 0.99]);
    // 2.5 ms is 2, 0.1 ms is 1 (Go's `metrics.Milliseconds`).
    assert_eq!(
        value(&scrape, "grpc_request_duration_ms_sum", &ok),
        Some(3.0)
    );
    assert_eq!(
        value(&scrape, "grpc_request_duration_ms_count", &ok),
        Some(2.0)
    );
    assert_eq!(
        value(&scrape, "grpc_request_body_size_sum", &ok),
        Some(40.0)
    );
    // The response size only when there was a response.
    assert_eq!(
        value(&scrape, "grpc_response_body_size_count", &ok),
        Some(1.0)
    );
    for (code, n) in [("OK", 1.0), ("InvalidArgument", 1.0)] {
        assert_eq!(
            value(
                &scrape,
                "grpc_status_code_count",
                &[("endpoint", "a/ok"), ("code", code)]
            ),
            Some(n),
            "{text}"
        );
    }
    assert_eq!(
        value(
            &scrape,
            "grpc_client_request_duration_ms_sum",
            &[("endpoint", "b/call")]
        ),
        Some(7.0)
    );
    // An endpoint never called shows nothing (Go's `*Vec`).
    assert!(!text.contains("a/never"), "{text}");
}

#[test]
fn http_series_use_decimal_codes_nanoseconds_and_sanitized_errors() {
    let (_, text) = record_everything();
    let scrape = parse(&text);
    let route = [("method", "GET"), ("endpoint", "/api/x")];
    assert_eq!(
        value(&scrape, "http_request_duration_ms_sum", &route),
        Some(3.0)
    );
    assert_eq!(
        value(
            &scrape,
            "http_status_code_count",
            &[("method", "GET"), ("endpoint", "/api/x"), ("code", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            "http_client_connect_duration_sum",
            &[("endpoint", "svc")]
        ),
        Some(1500.0)
    );
    assert_eq!(
        value(
            &scrape,
            "http_client_status_code_count",
            &[("endpoint", "svc"), ("code", "503")]
        ),
        Some(1.0)
    );
    assert!(
        text.contains(r#"error="dial tcp xxx.xxx.xxx.xxx:xxxx:80: connect: connection refused""#),
        "{text}"
    );
    assert!(!text.contains("10.1.2.3"), "{text}");
}

#[test]
fn log_counter_shows_its_ten_series() {
    let (_, text) = record_everything();
    let scrape = parse(&text);
    let series = samples(&scrape, "app_logs_sampling_status_count");
    assert_eq!(series.len(), 10, "{text}");
    assert_eq!(
        value(
            &scrape,
            "app_logs_sampling_status_count",
            &[("level", "info"), ("status", "sampled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            "app_logs_sampling_status_count",
            &[("level", "fatal"), ("status", "dropped")]
        ),
        Some(0.0)
    );
}

#[test]
fn cluster_series_exist_from_the_start() {
    let (_, text) = record_everything();
    let scrape = parse(&text);
    for state in SessionState::ALL {
        let want = if state == SessionState::Ready {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            value(
                &scrape,
                "cluster_session_state",
                &[("state", state.as_str())]
            ),
            Some(want),
            "{text}"
        );
    }
    for cause in FailureCause::ALL {
        let want = if cause == FailureCause::Disconnected {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            value(
                &scrape,
                "cluster_sessions_failed_count",
                &[("cause", cause.as_str())]
            ),
            Some(want)
        );
    }
    assert_eq!(
        value(&scrape, "cluster_sessions_started_count", &[]),
        Some(1.0)
    );
    assert_eq!(value(&scrape, "cluster_config_version", &[]), Some(1.0));
    assert_eq!(
        value(&scrape, "cluster_configs_refused_count", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "cluster_time_to_ready_ms_sum", &[]),
        Some(42.0)
    );
}

#[test]
fn sum_and_count_add_up_across_renders() {
    let (prometheus, recorder) = prometheus::build();
    // Handles are taken at the first call, from the recorder current then; once taken, they
    // record into it from anywhere.
    let server = GrpcServerMetrics::new();
    metrics::with_local_recorder(&recorder, || {
        server.observe("e", 1, Duration::from_millis(5), code::OK, None);
    });
    let endpoint = [("endpoint", "e")];
    for round in 1..=3u32 {
        let calls = if round == 1 { 9 } else { 10 };
        for _ in 0..calls {
            server.observe("e", 1, Duration::from_millis(5), code::OK, None);
        }
        let scrape = parse(&prometheus.render());
        let n = f64::from(round * 10);
        assert_eq!(
            value(&scrape, "grpc_request_duration_ms_count", &endpoint),
            Some(n)
        );
        assert_eq!(
            value(&scrape, "grpc_request_duration_ms_sum", &endpoint),
            Some(5.0 * n)
        );
        let median = quantiles(&scrape, "grpc_request_duration_ms", &endpoint)[0].1;
        assert!((median - 5.0).abs() < 0.01, "{median}");
    }
}

#[test]
fn process_series_are_go_s() {
    let (prometheus, _) = prometheus::build();
    let scrape = parse(&prometheus.render());
    for name in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_threads",
    ] {
        let value = value(&scrape, name, &[]).unwrap_or_else(|| panic!("no {name}"));
        assert!(value >= 0.0, "{name} {value}");
    }
    assert_eq!(
        scrape
            .docs
            .get("process_resident_memory_bytes")
            .map(String::as_str),
        Some("Resident memory size in bytes.")
    );
    assert!(value(&scrape, "process_start_time_seconds", &[]).unwrap() > 1.6e9);
}

#[test]
fn descriptions_list_each_family_with_its_labels() {
    let (prometheus, recorder) = prometheus::build();
    metrics::with_local_recorder(&recorder, || {
        let _ = GrpcServerMetrics::new();
        // A family of the application's: its help, and labels once a key is registered.
        metrics::describe_counter!("orders_created", "Orders created");
        metrics::counter!("orders_created", "shop" => "a").increment(1);
        metrics::gauge!("undescribed", "x" => "1", "y" => "2").set(1.0);
    });
    let text = prometheus.descriptions();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        r#"Desc{fqName: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", constLabels: {}, variableLabels: {}}, type: counter"#
    );
    for want in [
        r#"Desc{fqName: "grpc_request_duration_ms", help: "The latency of the GRPC requests", constLabels: {}, variableLabels: {endpoint}}, type: summary"#,
        r#"Desc{fqName: "grpc_status_code_count", help: "Counter of statuses codes", constLabels: {}, variableLabels: {endpoint,code}}, type: counter"#,
        r#"Desc{fqName: "orders_created", help: "Orders created", constLabels: {}, variableLabels: {shop}}, type: counter"#,
        r#"Desc{fqName: "undescribed", help: "", constLabels: {}, variableLabels: {x,y}}, type: gauge"#,
    ] {
        assert!(lines.contains(&want), "{want}\n{text}");
    }
    // The client's family was not described: not listed.
    assert!(!text.contains("grpc_client_request_duration_ms"), "{text}");
    let kinds = [Kind::Counter, Kind::Gauge, Kind::Summary].map(Kind::as_str);
    assert!(
        lines
            .iter()
            .all(|l| kinds.iter().any(|k| l.ends_with(&format!("type: {k}")))),
        "{text}"
    );
}

#[test]
fn help_comes_with_the_first_registration_even_undescribed() {
    let (prometheus, recorder) = prometheus::build();
    metrics::with_local_recorder(&recorder, || {
        // Registered through the facade without this crate's describe.
        metrics::histogram!("grpc_request_duration_ms", "endpoint" => "raw").record(3.0);
    });
    let scrape = parse(&prometheus.render());
    assert_eq!(
        scrape
            .docs
            .get("grpc_request_duration_ms")
            .map(String::as_str),
        Some("The latency of the GRPC requests")
    );
    assert!(
        prometheus
            .descriptions()
            .contains("variableLabels: {endpoint}}, type: summary")
    );
}
