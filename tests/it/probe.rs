//! The probe (exactly what `cargo run --example probe` runs) against an in-process fake config
//! service on the in-memory network, in virtual time: its flags, its lines, its exits.

use cluster_client::{AddressConfiguration, Client, ConfigData, EventHandler, ModuleInfo};
use cluster_examples::Signal;
use cluster_examples::probe::{
    Command, DEFAULT_SCHEMA, Probe, ProbeOptions, ProbeReport, StopReason, config_line, help,
    hosts_line, parse_args, parse_duration, ready_line, routes_line, unready_line,
};
use cluster_testkit::{FakeConfigService, MemoryListener};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Generous bound (virtual time) for anything awaited.
const WAIT: Duration = Duration::from_secs(60);

/// A writer that hands each complete line to a channel, so a test can await lines.
struct LineWriter {
    partial: Vec<u8>,
    lines: mpsc::UnboundedSender<String>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8(line[..line.len() - 1].to_vec()).expect("utf-8 output");
            // The test may have stopped listening; the probe must not care.
            let _ = self.lines.send(line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A probe running against `listener`, its output lines, and the trigger of its shutdown.
struct Running {
    lines: mpsc::UnboundedReceiver<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ProbeReport>,
}

impl Running {
    fn start(listener: &MemoryListener, mut options: ProbeOptions) -> Self {
        options.hosts = vec![listener.host.clone()];
        let (tx, lines) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let probe = Probe::new(options)
            .connector(listener.connector.clone())
            .seed(3);
        let out = LineWriter {
            partial: Vec::new(),
            lines: tx,
        };
        let task = tokio::spawn(async move {
            let shutdown = async move {
                // A dropped sender never shuts the probe down: only `stop` does.
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
                Signal::Interrupt
            };
            probe.run(out, shutdown).await.expect("the probe runs")
        });
        Self {
            lines,
            stop: Some(stop),
            task,
        }
    }

    /// The next line, parsed.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("a line in time")
            .expect("the probe is still writing");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Lines until one of `kind` comes; returns the lines before it and that line.
    async fn until(&mut self, kind: &str) -> (Vec<Value>, Value) {
        let mut before = Vec::new();
        loop {
            let line = self.next().await;
            if line["kind"] == kind {
                return (before, line);
            }
            before.push(line);
        }
    }

    async fn stop(mut self) -> (ProbeReport, Vec<String>) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
        self.finish().await
    }

    async fn finish(mut self) -> (ProbeReport, Vec<String>) {
        let report = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the probe ends in time")
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            rest.push(line);
        }
        (report, rest)
    }
}

fn module(name: &str, ip: &str, port: &str) -> ModuleInfo {
    ModuleInfo {
        module_name: name.to_owned(),
        module_version: "2.0.0".to_owned(),
        lib_version: "0.1.0".to_owned(),
        grpc_outer_address: AddressConfiguration::new(ip, port),
        ..ModuleInfo::default()
    }
}

/// Starts module `B` at 127.0.0.2:7000 and waits until it is ready.
async fn start_b(service: &FakeConfigService, listener: &MemoryListener) -> Client {
    let b = Client::builder(
        module("B", "127.0.0.2", "7000"),
        ConfigData::from_json("2.0.0", DEFAULT_SCHEMA, "{}").unwrap(),
        [listener.host.clone()],
    )
    .connector_arc(listener.connector.clone())
    .seed(1)
    .build()
    .unwrap();
    let run = b.clone();
    tokio::spawn(async move { run.run(EventHandler::new()).await });
    service.wait_ready_instances("B", 1, WAIT).await.unwrap();
    b
}

#[tokio::test(start_paused = true)]
async fn prints_config_hosts_routes_then_ready_and_follows_changes() {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    let b = start_b(&service, &listener).await;

    let Command::Run(options) = parse_args(
        [
            "--module",
            "A",
            "--config",
            "--routes",
            "--require",
            "B",
            "--endpoints",
            "a/api/one,a/api/two",
            "--default-config",
            r#"{"x":1,"nested":{"y":[1,2]}}"#,
        ]
        .map(String::from),
    )
    .unwrap() else {
        panic!("not a run")
    };
    let mut probe = Running::start(&listener, options);

    // The handshake's three first events come in any order, all before ready. The routing
    // change caused by the probe's own MODULE:READY may come before or after its ready line
    // (the fake service sends it before the ack; docs/protocol.md leaves the order free).
    let (before, ready) = probe.until("ready").await;
    assert!(ready["us"].as_u64().is_some(), "{ready}");
    let count = |kind: &str| before.iter().filter(|l| l["kind"] == kind).count();
    assert_eq!((count("config"), count("hosts")), (1, 1), "{before:?}");
    assert!((1..=2).contains(&count("routes")), "{before:?}");
    let of = |kind: &str| before.iter().find(|l| l["kind"] == kind).cloned().unwrap();
    assert_eq!(
        of("config"),
        json!({"kind":"config","data":{"x":1,"nested":{"y":[1,2]}}})
    );
    assert_eq!(
        of("hosts"),
        json!({"kind":"hosts","module":"B","hosts":["127.0.0.2:7000"]})
    );
    let routes = of("routes");
    assert_eq!(routes["data"].as_array().unwrap().len(), 1, "{routes}");
    assert_eq!(routes["data"][0]["moduleName"], "B");
    assert_eq!(
        routes["data"][0]["address"],
        json!({"ip":"127.0.0.2","port":"7000"})
    );

    // What the probe declared: the flags' defaults and its endpoints.
    let declared = service.wait_ready_instances("A", 1, WAIT).await.unwrap();
    assert_eq!(
        declared[0].address,
        AddressConfiguration::new("127.0.0.1", "9999")
    );
    assert_eq!(declared[0].version, "1.0.0");
    let paths: Vec<&str> = declared[0]
        .endpoints
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(paths, ["a/api/one", "a/api/two"]);
    assert_eq!(
        service.schema("A").unwrap().schema,
        DEFAULT_SCHEMA.as_bytes()
    );

    // A config change: printed byte for byte.
    service
        .set_config("A", r#"{"x": 2, "nested": {"y": []}}"#, None)
        .unwrap();
    let (_, config) = probe.until("config").await;
    assert_eq!(
        config,
        json!({"kind":"config","data":{"x":2,"nested":{"y":[]}}})
    );

    // B goes away: its hosts line is empty.
    b.close().await;
    let (_, hosts) = probe.until("hosts").await;
    assert_eq!(hosts, json!({"kind":"hosts","module":"B","hosts":[]}));

    // The session drops: unready, then ready again after the reconnect.
    service.disconnect_module("A").await;
    let (_, unready) = probe.until("unready").await;
    let (_, again) = probe.until("ready").await;
    // Virtual time: nothing elapses but the reconnect delay (1 s after a ready session).
    let us = |line: &Value| line["us"].as_u64().unwrap();
    assert!(us(&unready) >= us(&ready));
    assert!(us(&again) - us(&unready) >= 1_000_000, "{unready} {again}");

    let (report, _) = probe.stop().await;
    assert_eq!(
        report,
        ProbeReport {
            stopped_by: StopReason::Signal(Signal::Interrupt),
            was_ready: true,
            exit_code: 0
        }
    );
    service.wait_connections("A", 0, WAIT).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reject_config_keeps_it_unready() {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    let mut options = ProbeOptions::new("A");
    options.reject_config = true; // implies a config receiver
    options.ready_exit = true;
    options.duration = Some(Duration::from_secs(5));
    let probe = Running::start(&listener, options);
    let (report, lines) = probe.finish().await;

    assert_eq!(
        report,
        ProbeReport {
            stopped_by: StopReason::Duration,
            was_ready: false,
            exit_code: 1
        },
        "--ready-exit without ever being ready exits 1"
    );
    // Every session got its config, printed it, rejected it, and retried: 1 s, then 2 s.
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line, r#"{"kind":"config","data":{}}"#);
    }
    let schemas = service.received("A");
    let schemas = schemas
        .iter()
        .filter(|f| f.event() == "MODULE:SEND_CONFIG_SCHEMA")
        .count();
    assert_eq!(schemas, lines.len());
    assert!(service.ready_instances("A").is_empty());
    assert!(
        !service
            .received("A")
            .iter()
            .any(|f| f.event() == "MODULE:READY")
    );
}

#[tokio::test(start_paused = true)]
async fn ready_exit_closes_and_exits_once_ready() {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    let mut options = ProbeOptions::new("A");
    options.ready_exit = true;
    let probe = Running::start(&listener, options);
    let (report, lines) = probe.finish().await;
    assert_eq!(
        report,
        ProbeReport {
            stopped_by: StopReason::Ready,
            was_ready: true,
            exit_code: 0
        }
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    let ready: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(ready["kind"], "ready");
    // Closed cleanly: the service saw the instance come and go.
    service.wait_connections("A", 0, WAIT).await.unwrap();
    assert!(service.ready_instances("A").is_empty());
}

#[tokio::test(start_paused = true)]
async fn duration_stops_a_ready_probe_with_status_0() {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    let mut options = ProbeOptions::new("A");
    options.duration = Some(parse_duration("7s").unwrap());
    let started = tokio::time::Instant::now();
    let (report, lines) = Running::start(&listener, options).finish().await;
    assert_eq!(report.stopped_by, StopReason::Duration);
    assert_eq!((report.was_ready, report.exit_code), (true, 0));
    assert_eq!(started.elapsed(), Duration::from_secs(7));
    assert_eq!(lines.len(), 1, "{lines:?}");
}

#[tokio::test]
async fn an_unusable_host_is_an_error() {
    let mut options = ProbeOptions::new("A");
    options.hosts = vec!["tcp://127.0.0.1:1".to_owned()];
    let err = Probe::new(options)
        .run(Vec::new(), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot start"), "{err}");

    let mut options = ProbeOptions::new("A");
    options.schema = "{not json".to_owned();
    let err = Probe::new(options)
        .run(Vec::new(), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--schema"), "{err}");
}

fn run(args: &[&str]) -> Result<ProbeOptions, String> {
    match parse_args(args.iter().map(|a| (*a).to_owned())) {
        Ok(Command::Run(options)) => Ok(options),
        Ok(Command::Help) => Err("help".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

#[test]
fn flags_and_their_defaults() {
    assert_eq!(run(&["--module", "A"]).unwrap(), ProbeOptions::new("A"));
    let defaults = ProbeOptions::new("A");
    assert_eq!(defaults.hosts, ["127.0.0.1:9001"]);
    assert_eq!((defaults.ip.as_str(), defaults.port), ("127.0.0.1", 9999));
    assert_eq!(defaults.default_config, "{}");
    assert_eq!(defaults.version, "1.0.0");
    assert_eq!(defaults.duration, None);

    let all = run(&[
        "--module=M",
        "--hosts",
        "10.0.0.1:9001, 10.0.0.2:9001",
        "--hosts=wss://cfg:443",
        "--config",
        "--reject-config",
        "--routes",
        "--require",
        "A,,B",
        "--require=C",
        "--ip",
        "10.1.1.1",
        "--port",
        "8080",
        "--endpoints",
        "m/api/x",
        "--default-config",
        r#"{"a":"b=c"}"#,
        "--schema",
        r#"{"type":"object"}"#,
        "--version",
        "3.1.4",
        "--duration",
        "1m30s",
        "--ready-exit",
    ])
    .unwrap();
    assert_eq!(
        all,
        ProbeOptions {
            module: "M".into(),
            hosts: vec![
                "10.0.0.1:9001".into(),
                "10.0.0.2:9001".into(),
                "wss://cfg:443".into()
            ],
            config: true,
            reject_config: true,
            routes: true,
            require: vec!["A".into(), "B".into(), "C".into()],
            ip: "10.1.1.1".into(),
            port: 8080,
            endpoints: vec!["m/api/x".into()],
            default_config: r#"{"a":"b=c"}"#.into(),
            schema: r#"{"type":"object"}"#.into(),
            version: "3.1.4".into(),
            duration: Some(Duration::from_secs(90)),
            ready_exit: true,
        }
    );
    // A scalar flag given twice keeps the last value.
    assert_eq!(run(&["--module", "A", "--module=B"]).unwrap().module, "B");
    assert_eq!(run(&["--module", "A", "--help"]), Err("help".to_owned()));
    assert_eq!(run(&["-h"]), Err("help".to_owned()));
}

#[test]
fn usage_errors_name_the_flag() {
    let cases: [(&[&str], &str); 9] = [
        (
            &[],
            "the following required arguments were not provided:\n  --module <NAME>",
        ),
        (
            &["--module", ""],
            "a value is required for '--module <NAME>'",
        ),
        (&["--module"], "a value is required for '--module <NAME>'"),
        (
            &["--module", "A", "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        (
            &["--module", "A", "--port", "99999"],
            "invalid value '99999' for '--port <PORT>'",
        ),
        (
            &["--module", "A", "--schema", "{"],
            "invalid value '{' for '--schema <JSON>': not JSON",
        ),
        (
            &["--module", "A", "--duration", "soon"],
            "invalid value 'soon' for '--duration <D>': \"soon\" is not a duration",
        ),
        (
            &["--module", "A", "--routes=yes"],
            "unexpected value 'yes' for '--routes'",
        ),
        (
            &["--module", "A", "--hosts", ","],
            "--hosts needs at least one host",
        ),
    ];
    for (args, expected) in cases {
        let err = run(args).unwrap_err();
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(err.contains("--help"), "{args:?} points at --help: {err}");
    }
}

#[test]
fn help_shows_every_flag_its_default_the_output_and_the_exit_statuses() {
    let help = help();
    for flag in [
        "--module <NAME>",
        "--hosts <H[,H]>",
        "--config",
        "--reject-config",
        "--routes",
        "--require <M[,M]>",
        "--ip <IP>",
        "--port <PORT>",
        "--endpoints <P[,P]>",
        "--default-config <JSON>",
        "--schema <JSON>",
        "--version <V>",
        "--duration <D>",
        "--ready-exit",
        "-h, --help",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    for text in [
        "[default: 127.0.0.1:9001]",
        "[default: 127.0.0.1]",
        "[default: 9999]",
        "[default: {}]",
        "[default: any object]",
        "[default: 1.0.0]",
        "[default: until SIGINT/SIGTERM]",
        r#"{"kind":"config","data":<config>}"#,
        r#"{"kind":"unready","us":N}"#,
        "RUST_LOG",
        "EXIT STATUS",
        "2 usage error",
        "Careful: the probe is a module",
    ] {
        assert!(help.contains(text), "{text} missing:\n{help}");
    }
}

#[test]
fn durations_as_go_writes_them() {
    let ok = [
        ("7s", Duration::from_secs(7)),
        ("500ms", Duration::from_millis(500)),
        ("1m30s", Duration::from_secs(90)),
        ("1.5h", Duration::from_secs(5400)),
        ("250us", Duration::from_micros(250)),
        ("3", Duration::from_secs(3)),
        ("0.5", Duration::from_millis(500)),
        ("2m", Duration::from_secs(120)),
        ("1h30m", Duration::from_secs(5400)),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_duration(text).unwrap(), expected, "{text}");
    }
    for bad in ["", "s", "-1s", "-1", "7 s", "1d", "nan", "inf", "1..2s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn lines_are_one_json_object_each() {
    // Byte for byte, line breaks (whitespace between tokens) turned into spaces.
    assert_eq!(
        config_line(b"{\n  \"b\": 1,\r\n  \"a\": \"x\\ny\"\n}"),
        "{\"kind\":\"config\",\"data\":{   \"b\": 1,    \"a\": \"x\\ny\" }}"
    );
    // Not JSON: kept as a string, still one line.
    assert_eq!(
        config_line(b"oops\n"),
        r#"{"kind":"config","data":"oops\n"}"#
    );
    assert_eq!(
        hosts_line("A", &["10.0.0.1:80".into(), "[::1]:80".into()]),
        r#"{"kind":"hosts","module":"A","hosts":["10.0.0.1:80","[::1]:80"]}"#
    );
    assert_eq!(
        hosts_line("A", &[]),
        r#"{"kind":"hosts","module":"A","hosts":[]}"#
    );
    let declaration = module("B", "10.0.0.2", "7000").backend_declaration(["A"]);
    assert_eq!(
        routes_line(&vec![declaration]),
        r#"{"kind":"routes","data":[{"moduleName":"B","version":"2.0.0","libVersion":"0.1.0","endpoints":null,"requiredModules":[{"name":"A","required":true}],"address":{"ip":"10.0.0.2","port":"7000"}}]}"#
    );
    assert_eq!(routes_line(&Vec::new()), r#"{"kind":"routes","data":[]}"#);
    assert_eq!(ready_line(12), r#"{"kind":"ready","us":12}"#);
    assert_eq!(unready_line(34), r#"{"kind":"unready","us":34}"#);
}

/// A writer that blocks on its first write until the test releases it, like a stdout pipe
/// that nobody reads; then it passes every line on to the test.
struct BlockedWriter {
    release: Option<std::sync::mpsc::Receiver<()>>,
    lines: LineWriter,
}

impl Write for BlockedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(release) = self.release.take() {
            // Blocks this thread until released (or the test is gone).
            let _ = release.recv();
        }
        self.lines.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The probe's own runtime is current-thread: a blocking write on it would freeze everything.
// It runs on a thread of its own here, so that a frozen probe fails the test instead of
// hanging it.
#[tokio::test]
async fn an_unread_stdout_does_not_freeze_the_session() {
    const REAL_WAIT: Duration = Duration::from_secs(20);
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    let (release, blocked) = std::sync::mpsc::channel();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let out = BlockedWriter {
        release: Some(blocked),
        lines: LineWriter {
            partial: Vec::new(),
            lines: tx,
        },
    };
    let mut options = ProbeOptions::new("A");
    options.hosts = vec![listener.host.clone()];
    options.config = true;
    let (stop, stopped) = oneshot::channel::<()>();
    let (done, report) = oneshot::channel();
    let probe = Probe::new(options)
        .connector(listener.connector.clone())
        .seed(3);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shutdown = async move {
            let _ = stopped.await;
            Signal::Interrupt
        };
        let _ = done.send(runtime.block_on(probe.run(out, shutdown)));
    });
    // The config line is written before the session can go on, and it blocks the writer:
    // the session still gets ready.
    let ready = service.wait_ready_instances("A", 1, REAL_WAIT).await;
    release.send(()).unwrap();
    ready.expect("the probe became ready while its stdout was blocked");
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("ready") {
        let line = tokio::time::timeout(REAL_WAIT, lines.recv())
            .await
            .expect("a line")
            .expect("the probe writes");
        let line: Value = serde_json::from_str(&line).unwrap();
        kinds.push(line["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds,
        ["config", "ready"],
        "every line written once released"
    );
    stop.send(()).unwrap();
    let report = tokio::time::timeout(REAL_WAIT, report)
        .await
        .expect("the probe ends")
        .unwrap()
        .expect("the probe runs");
    assert!(report.was_ready);
}
