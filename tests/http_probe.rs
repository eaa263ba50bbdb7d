//! The HTTP probe (exactly what `cargo run --example http_probe` runs): its flags, and its
//! `serve` and `call` lines against each other on loopback.

use cluster_examples::Signal;
use cluster_examples::http_probe::{
    CallOptions, HttpProbeCommand, ServeOptions, parse_args, quiet_on_purpose_panics, run_call,
    run_serve,
};
use cluster_http::http::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A writer that sends each line it gets to a channel: the test awaits the served lines.
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

fn post(host: &str, path: &str, body: Option<&str>) -> CallOptions {
    CallOptions {
        body: body.map(str::to_owned),
        ..CallOptions::new(host, Method::POST, path)
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
        "--method",
        "put",
        "--path",
        "a/b",
        "--body",
        r#"{"x":1}"#,
        "--header",
        "x-user-identity=42",
        "--header",
        "x-note=a=b",
        "--request-id",
        "req-1",
        "--timeout",
        "2s",
        "--n",
        "3",
    ])
    .unwrap();
    assert_eq!(
        parsed,
        HttpProbeCommand::Call(CallOptions {
            hosts: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            method: Method::PUT,
            path: "a/b".into(),
            body: Some(r#"{"x":1}"#.into()),
            headers: vec![
                ("x-user-identity".into(), "42".into()),
                ("x-note".into(), "a=b".into())
            ],
            request_id: Some("req-1".into()),
            timeout: Some(Duration::from_secs(2)),
            n: 3,
        })
    );
    let HttpProbeCommand::Call(default) =
        parse_args(["call", "--hosts", "h:1", "--path", "p"]).unwrap()
    else {
        panic!("a call")
    };
    assert_eq!(default.method, Method::POST);
    assert_eq!((default.body, default.n), (None, 1));
    assert_eq!(
        parse_args(["serve", "--listen", "127.0.0.1:9"]).unwrap(),
        HttpProbeCommand::Serve(ServeOptions {
            listen: "127.0.0.1:9".into()
        })
    );
    assert_eq!(
        parse_args(Vec::<String>::new()).unwrap(),
        HttpProbeCommand::Help
    );
    let call = ["call", "--hosts", "h:1", "--path", "p"];
    for extra in [
        &["--body", "{"][..],
        &["--header", "novalue"],
        &["--header", "bad name=v"],
        &["--header", "x=line\nbreak"],
        &["--request-id", ""],
        &["--method", "GE T"],
        &["--n", "0"],
        &["--timeout", "soon"],
        &["--endpoint", "e"],
        &["--n"],
    ] {
        let args: Vec<&str> = call.iter().chain(extra).copied().collect();
        assert!(parse_args(args.clone()).is_err(), "{args:?}");
    }
    for bad in [
        vec!["call", "--path", "p"],
        vec!["call", "--hosts", "h:1"],
        vec!["serve", "--hosts", "h:1"],
        vec!["shout"],
    ] {
        assert!(parse_args(bad.clone()).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn serve_and_call_print_one_json_line_each() {
    // As the example does: fail/panic's panics are logged by the server, not by the hook.
    quiet_on_purpose_panics();
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
    let mut next_served =
        async || -> Value { serde_json::from_str(&served.recv().await.unwrap()).unwrap() };

    // echo/json, three times, with headers and a request id.
    let mut options = post(&host, "echo/json", Some(r#"{"hello":"<world>"}"#));
    options.n = 3;
    options.request_id = Some("req-7".into());
    options.headers = vec![
        ("x-user-identity".into(), "42".into()),
        ("x-user-token".into(), "secret".into()),
        ("authorization".into(), "Bearer abc".into()),
        ("cookie".into(), "session=s".into()),
        ("x-api-key".into(), "k".into()),
    ];
    let (failed, lines) = call_lines(&options).await;
    assert_eq!(failed, 0);
    assert_eq!(
        lines,
        vec![json!({"ok": true, "status": 200, "body": {"hello": "<world>"}}); 3]
    );
    for _ in 0..3 {
        let seen = next_served().await;
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["path"], "/echo/json");
        assert_eq!(seen["body"], json!({"hello": "<world>"}));
        let headers = &seen["headers"];
        assert_eq!(headers["x-user-identity"], "42");
        assert_eq!(headers["x-request-id"], "req-7");
        assert_eq!(headers["content-type"], "application/json");
        for secret in ["x-user-token", "authorization", "cookie", "x-api-key"] {
            assert_eq!(headers[secret], "***", "{secret}");
        }
    }
    // Without --request-id, each call has a new one.
    let (_, lines) = call_lines(&post(
        &host,
        "echo/json",
        Some(r#"{"user":"ann","password":"hunter2","nested":{"token":"t"}}"#),
    ))
    .await;
    assert_eq!(
        lines[0]["body"]["password"], "hunter2",
        "the caller gets its echo"
    );
    let seen = next_served().await;
    assert_eq!(
        seen["body"],
        json!({"user": "ann", "password": "***", "nested": {"token": "***"}}),
        "secret body fields are masked in what serve prints"
    );
    assert_eq!(seen["headers"]["x-request-id"].as_str().unwrap().len(), 32);

    // An empty body: Go's decoder says EOF; the request is printed all the same.
    let (failed, lines) = call_lines(&post(&host, "echo/json", None)).await;
    assert_eq!(failed, 1);
    assert_eq!(
        lines,
        [json!({"ok": false, "status": 400, "errorCode": 400,
                "errorMessage": "unmarshal json request body: EOF"})]
    );
    assert_eq!(next_served().await["body"], Value::Null);

    // math/sum: the answer, and the validation error with its details.
    let (_, lines) = call_lines(&post(&host, "math/sum", Some(r#"{"a":40,"B":2}"#))).await;
    assert_eq!(
        lines,
        [json!({"ok": true, "status": 200, "body": {"sum": 42}})]
    );
    assert_eq!(next_served().await["body"], json!({"a": 40, "B": 2}));
    let (failed, lines) = call_lines(&post(&host, "math/sum", Some(r#"{"a":1}"#))).await;
    assert_eq!(failed, 1);
    assert_eq!(
        lines,
        [json!({"ok": false, "status": 400, "errorCode": 400,
                "errorMessage": "invalid request body", "details": {"b": "B is a required field"}})]
    );
    assert_eq!(next_served().await["path"], "/math/sum");

    // The business error and the panic, each answered as isp-kit answers them.
    let (failed, lines) = call_lines(&post(&host, "fail/business", None)).await;
    assert_eq!(failed, 1);
    assert_eq!(
        lines,
        [json!({"ok": false, "status": 400, "errorCode": 1001,
                "errorMessage": "custom failure", "details": {"field": "x"}})]
    );
    assert_eq!(next_served().await["path"], "/fail/business");
    let mut twice = post(&host, "fail/panic", Some("{}"));
    twice.n = 2;
    let (failed, lines) = call_lines(&twice).await;
    assert_eq!(failed, 2);
    assert_eq!(
        lines,
        vec![
            json!({"ok": false, "status": 500, "errorCode": 900,
                "errorMessage": "internal service error"});
            2
        ],
        "the server lives on after a panic"
    );
    assert_eq!(next_served().await["path"], "/fail/panic");
    assert_eq!(next_served().await["path"], "/fail/panic");

    // The router's answers: neither printed.
    let (failed, lines) = call_lines(&post(&host, "no/such", None)).await;
    assert_eq!(failed, 1);
    assert_eq!(
        lines,
        [json!({"ok": false, "status": 404, "body": "404 page not found\n"})]
    );
    let (_, lines) = call_lines(&CallOptions::new(&host, Method::GET, "math/sum")).await;
    assert_eq!(
        lines,
        [json!({"ok": false, "status": 405, "body": "Method Not Allowed\n"})]
    );

    // The next line printed is the next routed call's.
    call_lines(&post(&host, "echo/json", Some(r#"{"last":true}"#))).await;
    assert_eq!(
        next_served().await["body"],
        json!({"last": true}),
        "nothing printed for the unrouted calls"
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
    let (failed, lines) = call_lines(&post(&dead, "echo/json", Some("{}"))).await;
    assert_eq!(failed, 1);
    assert_eq!(lines[0]["ok"], false);
    let error = lines[0]["error"].as_str().unwrap();
    assert!(error.contains(&dead), "{error}");
    assert!(lines[0].get("status").is_none());

    // A timeout is an error line too: a listener that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = post(
        &silent.local_addr().unwrap().to_string(),
        "echo/json",
        Some("{}"),
    );
    options.timeout = Some(Duration::from_millis(50));
    let (failed, lines) = call_lines(&options).await;
    assert_eq!(failed, 1);
    assert_eq!(
        lines,
        [json!({"ok": false, "error": "call timed out after 50ms"})]
    );
    drop(silent);
}
