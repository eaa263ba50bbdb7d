//! One log line per call, from the server's pipeline: endpoint, status, request id; at
//! DEBUG the bodies, secrets masked; never a metadata value. Logs captured by a global
//! subscriber into cluster-testkit's buffer (the server's tasks run on the runtime's threads).

use cluster_grpc::{ApiError, CallContext, CallError, GrpcClient, Server};
use cluster_testkit::logs::CapturedLogs;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_call_with_endpoint_status_and_request_id_and_no_secret() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,cluster_grpc=info,cluster_pipeline=debug,call_log=info",
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let router = cluster_grpc::Router::new()
        .handle(
            "auth/api/login",
            |ctx: CallContext, body: Value| async move {
                tracing::info!("inside the handler");
                if body["user"] == "nobody" {
                    return Err(ApiError::business(1001, "no such user"));
                }
                assert!(ctx.request_id().is_some());
                Ok(json!({"user": body["user"], "accessToken": "t-secret-token"}))
            },
        )
        .unwrap();
    let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
    let client = GrpcClient::new([server.local_addr().to_string()]);

    let ok: Value = client
        .invoke("auth/api/login")
        .metadata("x-user-token", "tok-secret")
        .request_id("rid-log")
        .json_body(&json!({"user": "ann", "password": "p@ss"}))
        .json()
        .await
        .unwrap();
    assert_eq!(ok["accessToken"], "t-secret-token");
    let err = client
        .invoke("auth/api/login")
        .json_body(&json!({"user": "nobody"}))
        .raw()
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Api { .. }), "{err:?}");

    // The line is written when the server has sent the answer's end.
    let lines = logs.wait_for("grpc handler: log", 2).await;
    server.shutdown().await.unwrap();
    let text = logs.text();
    assert_eq!(logs.count("grpc handler: log"), 2, "{text}");

    let ok_line = lines
        .iter()
        .find(|l| l.contains("request_id=rid-log"))
        .unwrap_or_else(|| panic!("{text}"));
    for part in [
        " INFO ",
        "cluster_pipeline::log",
        "endpoint=auth/api/login",
        "method=/isp.BackendService/Request",
        "status=0",
        "duration_ms=",
        r#"request_body={"password":"***","user":"ann"}"#,
        r#"response_body={"accessToken":"***","user":"ann"}"#,
    ] {
        assert!(ok_line.contains(part), "{part}: {ok_line}");
    }
    let failed = lines
        .iter()
        .find(|l| !l.contains("rid-log"))
        .unwrap_or_else(|| panic!("{text}"));
    // InvalidArgument, answered trailers-only; the client made a request id.
    assert!(failed.contains("status=3"), "{failed}");
    assert!(
        failed.contains(r#"request_body={"user":"nobody"}"#),
        "{failed}"
    );
    assert!(failed.ends_with("response_body="), "{failed}");

    // The handler runs in the pipeline's span, which carries the endpoint and the id.
    let inside = text
        .lines()
        .find(|l| l.contains("inside the handler") && l.contains("rid-log"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        inside.contains("grpc_call{endpoint=\"auth/api/login\" request_id=\"rid-log\"}")
            || inside.contains("grpc_call{endpoint=auth/api/login request_id=rid-log}"),
        "{inside}"
    );

    // No secret anywhere: not the metadata's token, not the bodies' values.
    for secret in ["tok-secret", "p@ss", "t-secret-token"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
}
