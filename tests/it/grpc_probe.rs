//! The gRPC probe (exactly what `cargo run --example grpc_probe` runs): its flags, and its
//! `serve` and `call` lines against each other on loopback.

use cluster_examples::Signal;
use cluster_examples::grpc_probe::{
    CallOptions, GrpcProbeCommand, ServeOptions, parse_args, run_call, run_serve,
};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

struct Lines(mpsc::UnboundedSender<String>, Vec<u8>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while let Some(end) = self.1.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.1.drain(..=end).collect();
            let _ = self
                .0
                .send(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn call(host: &str, endpoint: &str, body: Option<&str>) -> CallOptions {
    CallOptions {
        hosts: vec![host.to_owned()],
        endpoint: endpoint.to_owned(),
        body: body.map(str::to_owned),
        metadata: Vec::new(),
        app_id: None,
        timeout: None,
        n: 1,
    }
}

async fn call_lines(options: &CallOptions) -> (usize, Vec<Value>) {
    let mut out = Vec::new();
    let failed = run_call(options, &mut out).await.unwrap();
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (failed, lines)
}

#[test]
fn flags() {
    let parsed = parse_args([
        "call",
        "--hosts",
        "127.0.0.1:1, 127.0.0.1:2",
        "--endpoint",
        "a/b",
        "--body",
        r#"{"x":1}"#,
        "--md",
        "x-user-identity=42",
        "--app-id",
        "7",
        "--timeout",
        "2s",
        "--n",
        "3",
    ])
    .unwrap();
    assert_eq!(
        parsed,
        GrpcProbeCommand::Call(CallOptions {
            hosts: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            endpoint: "a/b".into(),
            body: Some(r#"{"x":1}"#.into()),
            metadata: vec![("x-user-identity".into(), "42".into())],
            app_id: Some(7),
            timeout: Some(Duration::from_secs(2)),
            n: 3,
        })
    );
    assert_eq!(
        parse_args(["serve", "--listen", "127.0.0.1:9"]).unwrap(),
        GrpcProbeCommand::Serve(ServeOptions {
            listen: "127.0.0.1:9".into()
        })
    );
    assert_eq!(
        parse_args(Vec::<String>::new()).unwrap(),
        GrpcProbeCommand::Help
    );
    for bad in [
        vec!["call", "--endpoint", "a"],
        vec!["call", "--hosts", "h:1"],
        vec!["call", "--hosts", "h:1", "--endpoint", "e", "--body", "{"],
        vec![
            "call",
            "--hosts",
            "h:1",
            "--endpoint",
            "e",
            "--md",
            "novalue",
        ],
        vec!["call", "--hosts", "h:1", "--endpoint", "e", "--n", "0"],
        vec![
            "call",
            "--hosts",
            "h:1",
            "--endpoint",
            "e",
            "--timeout",
            "soon",
        ],
        vec!["serve", "--hosts", "h:1"],
        vec!["shout"],
    ] {
        assert!(parse_args(bad.clone()).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn serve_and_call_print_one_json_line_each() {
    let (tx, mut served) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        run_serve(
            &ServeOptions {
                listen: "127.0.0.1:0".into(),
            },
            Lines(tx, Vec::new()),
            async move {
                let _ = stopped.await;
                Signal::Terminate
            },
        )
        .await
        .unwrap()
    });
    let first: Value = serde_json::from_str(&served.recv().await.unwrap()).unwrap();
    let host = first["listening"].as_str().unwrap().to_owned();

    // echo/json, three times, with metadata and an application id.
    let mut options = call(&host, "echo/json", Some(r#"{"hello":"world"}"#));
    options.n = 3;
    options.app_id = Some(7);
    options.metadata = vec![
        ("x-user-identity".into(), "42".into()),
        ("x-user-token".into(), "secret".into()),
        ("authorization".into(), "Bearer abc".into()),
        ("x-api-key".into(), "k".into()),
    ];
    let (failed, lines) = call_lines(&options).await;
    assert_eq!(failed, 0);
    assert_eq!(
        lines,
        vec![json!({"ok": true, "body": {"hello": "world"}}); 3]
    );
    for _ in 0..3 {
        let seen: Value = serde_json::from_str(&served.recv().await.unwrap()).unwrap();
        assert_eq!(seen["endpoint"], "echo/json");
        assert_eq!(seen["body"], json!({"hello": "world"}));
        assert_eq!(seen["metadata"]["x-user-identity"], "42");
        assert_eq!(seen["metadata"]["x-application-identity"], "7");
        assert_eq!(seen["metadata"]["x-user-token"], "***");
        assert_eq!(seen["metadata"]["authorization"], "***");
        assert_eq!(seen["metadata"]["x-api-key"], "***");
        assert_eq!(seen["metadata"]["x-request-id"].as_str().unwrap().len(), 32);
    }
    let (_, lines) = call_lines(&call(
        &host,
        "echo/json",
        Some(r#"{"user":"ann","password":"hunter2","nested":{"token":"t"}}"#),
    ))
    .await;
    assert_eq!(
        lines[0]["body"]["password"], "hunter2",
        "the caller gets its echo"
    );
    let seen: Value = serde_json::from_str(&served.recv().await.unwrap()).unwrap();
    assert_eq!(
        seen["body"],
        json!({"user": "ann", "password": "***", "nested": {"token": "***"}}),
        "secret body fields are masked in what serve prints"
    );

    let (_, lines) = call_lines(&call(&host, "math/sum", Some(r#"{"a":40,"b":2}"#))).await;
    assert_eq!(lines, [json!({"ok": true, "body": {"sum": 42}})]);
    let (failed, lines) = call_lines(&call(&host, "math/sum", Some(r#"{"a":1.5}"#))).await;
    assert_eq!(failed, 1);
    assert_eq!(lines[0]["grpcCode"], "InvalidArgument");
    assert_eq!(lines[0]["errorCode"], 400);

    let (failed, lines) = call_lines(&call(&host, "fail/business", None)).await;
    assert_eq!(failed, 1);
    assert_eq!(
        lines,
        [
            json!({"ok": false, "grpcCode": "InvalidArgument", "errorCode": 1001,
                "errorMessage": "custom failure", "details": {"field": "x"}})
        ]
    );
    let (_, lines) = call_lines(&call(&host, "no/such", None)).await;
    assert_eq!(
        lines,
        [
            json!({"ok": false, "grpcCode": "NotFound", "errorMessage": "handler not found for endpoint no/such"})
        ]
    );

    stop.send(()).unwrap();
    assert_eq!(server.await.unwrap().to_string(), host);
}

#[tokio::test]
async fn a_call_that_reaches_no_server_says_why() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (failed, lines) = call_lines(&call(&dead, "echo/json", Some("{}"))).await;
    assert_eq!(failed, 1);
    assert_eq!(lines[0]["ok"], false);
    assert_eq!(lines[0]["grpcCode"], "Unavailable");
}
