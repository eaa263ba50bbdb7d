//! The two-module gRPC story (exactly what `cargo run --example grpc_modules` runs): calls are
//! balanced over both `auth-service` instances, and all succeed on the remaining one after the
//! other leaves.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_calls_auth_service_through_the_cluster_and_survives_an_instance_leaving() {
    let mut out = Vec::new();
    let report = cluster_examples::grpc_modules::grpc_modules(&mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    // Round-robin over both instances while both were up.
    assert_eq!(report.before.len(), 4, "{text}");
    assert!(report.before.iter().any(|i| i == "auth-1"), "{text}");
    assert!(report.before.iter().any(|i| i == "auth-2"), "{text}");
    for pair in report.before.windows(2) {
        assert_ne!(pair[0], pair[1], "{text}");
    }
    // After auth-1 left, every call reached auth-2.
    assert_eq!(report.after, ["auth-2", "auth-2", "auth-2"], "{text}");
    assert!(text.contains("errorCode: 1001"), "{text}");
    assert!(text.contains("5. Everyone leaves"), "{text}");
}
