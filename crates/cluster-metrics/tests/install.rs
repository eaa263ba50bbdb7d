//! The process-wide recorder: installed once, found again, recording what the facade records.

use cluster_metrics::grpc::{GrpcClientMetrics, code};
use cluster_metrics::prometheus::{self, CONTENT_TYPE};
use std::time::Duration;

#[test]
fn install_is_idempotent_and_global() {
    assert!(prometheus::installed().is_none());
    let first = prometheus::install().unwrap();
    let again = prometheus::install().unwrap();
    assert!(std::ptr::eq(first, again));
    assert!(std::ptr::eq(prometheus::installed().unwrap(), first));

    // Threads other than this one record into it: it is the global recorder.
    std::thread::spawn(|| {
        let client = GrpcClientMetrics::new();
        client.observe_duration("x/y", Duration::from_millis(9));
        cluster_metrics::grpc::GrpcEndpointMetrics::new("x/y").count_status_code(code::UNAVAILABLE);
    })
    .join()
    .unwrap();
    let text = first.render();
    assert!(
        text.contains(r#"grpc_client_request_duration_ms_sum{endpoint="x/y"} 9"#),
        "{text}"
    );
    assert!(
        text.contains(r#"grpc_status_code_count{endpoint="x/y",code="Unavailable"} 1"#),
        "{text}"
    );
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
}
