//! One log line per routed call, from the server's pipeline: endpoint, method, status, request
//! id; at DEBUG the bodies, secrets masked; never a header value. Logs captured by a global
//! subscriber into cluster-testkit's buffer (the server's tasks run on the runtime's threads).

use cluster_http::{ApiError, CallContext, CallError, Endpoint, HttpClient, Router, Server};
use cluster_testkit::logs::CapturedLogs;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_call_with_endpoint_method_status_and_request_id_and_no_secret() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,cluster_http=info,cluster_pipeline=debug,call_log=info",
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let router = Router::new()
        .handle(
            Endpoint::post("auth/api/login"),
            |ctx: CallContext, body: Value| async move {
                tracing::info!("inside the handler");
                if body["user"] == "nobody" {
                    return Err(ApiError::business(1001, "no such user"));
                }
                assert_eq!(ctx.header("x-auth-token"), Some("tok-secret"));
                Ok(json!({"user": body["user"], "accessToken": "t-secret-token"}))
            },
        )
        .unwrap();
    let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
    let client = HttpClient::new([server.local_addr().to_string()]);

    let ok: Value = client
        .post("auth/api/login")
        .header("x-auth-token", "tok-secret")
        .request_id("rid-log")
        .json_body(&json!({"user": "ann", "password": "p@ss"}))
        .json()
        .await
        .unwrap();
    assert_eq!(ok["accessToken"], "t-secret-token");
    let err = client
        .post("auth/api/login")
        .json_body(&json!({"user": "nobody"}))
        .raw()
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Api(_)), "{err:?}");
    // Answered by the router, before the pipeline (as Go's router): no line.
    let missing = client.get("auth/api/missing").send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // The line is written when the server has sent the answer's end.
    let lines = logs.wait_for("http handler: log", 2).await;
    server.shutdown().await.unwrap();
    let text = logs.text();
    assert_eq!(logs.count("http handler: log"), 2, "{text}");

    let ok_line = lines
        .iter()
        .find(|l| l.contains("request_id=rid-log"))
        .unwrap_or_else(|| panic!("{text}"));
    for part in [
        " INFO ",
        "cluster_pipeline::log",
        "endpoint=POST /auth/api/login",
        "method=POST",
        "status=200",
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
    // The business error's status; the client made a request id (32 hex digits).
    assert!(failed.contains("status=400"), "{failed}");
    let id = failed
        .split("request_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{failed}"));
    assert_eq!(id.len(), 32, "{failed}");
    assert!(
        failed.contains(r#"request_body={"user":"nobody"}"#),
        "{failed}"
    );
    assert!(failed.contains(r#""errorCode":1001"#), "{failed}");

    // The handler runs in the pipeline's span, which carries the endpoint and the id.
    let inside = text
        .lines()
        .find(|l| l.contains("inside the handler") && l.contains("rid-log"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        inside.contains("http_call{endpoint=\"POST /auth/api/login\" request_id=\"rid-log\"}")
            || inside.contains("http_call{endpoint=POST /auth/api/login request_id=rid-log}"),
        "{inside}"
    );
    // One span per call: the pipeline's, no second one of the crate's own.
    assert_eq!(inside.matches("http_call").count(), 1, "{inside}");

    // No secret anywhere: not the header's token, not the bodies' values.
    for secret in ["tok-secret", "p@ss", "t-secret-token"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
}
