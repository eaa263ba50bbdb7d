//! The bootstrap as a process sees it: SIGTERM ends a module in order (it leaves the cluster,
//! then its gRPC server drains the call in flight, then it exits 0); a bad config file or a
//! port taken ends it with the error and status 1, as `main() -> Result<(), Fatal>` does.
//!
//! The module runs in a child process: this test binary again, told by an environment
//! variable to run [`child`] as the module's `main`.

#![cfg(unix)]

mod common;

use cluster_bootstrap::{Bootstrap, Fatal, Module};
use cluster_client::TypedConfig;
use cluster_grpc::{ApiError, CallContext, GrpcClient, Router};
use common::{WAIT, fake_service, go_config, temp_dir, write};
use std::process::{ExitCode, Stdio, Termination};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Set in the child: which module `main` to run.
const CHILD: &str = "CLUSTER_BOOTSTRAP_TEST_CHILD";
/// What the child prints when the slow call has reached its handler.
const IN_FLIGHT: &str = "CHILD: call in flight";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Remote {
    greeting: String,
}

/// The module's `main`, in the child process (a no-op in a normal test run).
#[test]
fn child() {
    let Ok(kind) = std::env::var(CHILD) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        match kind.as_str() {
            "serve" => serve().await,
            _ => Bootstrap::new("1.0.0").map(drop).map_err(Fatal::from),
        }
    });
    // What Rust does with what `main` returns: `Error: {:?}` on stderr, status 1.
    let code = result.report();
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
}

/// A module whose endpoint `slow/api/wait` answers once a line arrives on stdin.
async fn serve() -> Result<(), Fatal> {
    let boot = Bootstrap::new("1.0.0")?;
    let stdin = Arc::new(tokio::sync::Mutex::new(
        BufReader::new(tokio::io::stdin()).lines(),
    ));
    let router = Router::new().handle(
        "slow/api/wait",
        move |_: CallContext, _: serde_json::Value| {
            let stdin = Arc::clone(&stdin);
            async move {
                println!("{IN_FLIGHT}");
                let line = stdin.lock().await.next_line().await.ok().flatten();
                Ok::<_, ApiError>(serde_json::json!({ "released": line.is_some() }))
            }
        },
    )?;
    boot.run(Module::new(TypedConfig::<Remote>::new()).grpc(router))
        .await?;
    Ok(())
}

fn kill(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id().expect("the child runs")).unwrap();
    // SAFETY: `kill` on the pid of a child we hold (not yet waited for).
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill {pid}");
}

fn spawn_child(kind: &str, config: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD, kind)
        .env("APP_CONFIG_PATH", config)
        .env_remove("APP_MODE")
        .env_remove("CLUSTER_MODE")
        .env_remove("APP_CONFIG_ENV_PREFIX")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Runs the child to its end: its status code and what it wrote on stderr.
async fn run_child(kind: &str, config: &std::path::Path) -> (Option<i32>, String) {
    let child = spawn_child(kind, config);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the child ends in time")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_cluster_then_drains_the_call_in_flight() {
    let (service, ws) = fake_service().await;
    let dir = temp_dir("sigterm");
    let config = write(&dir, "config.yml", &go_config("slow", ws.port()));
    let mut child = spawn_child("serve", &config);
    // Its logs, read so that the pipe never fills.
    let stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdin = child.stdin.take().unwrap();

    let declared = service
        .wait_ready_instances("slow", 1, WAIT)
        .await
        .expect("the module joins");
    let address = format!("{}:{}", declared[0].address.ip, declared[0].address.port);
    let client = GrpcClient::new([address]);
    let call = tokio::spawn(async move {
        client
            .invoke("slow/api/wait")
            .json_body(&1)
            .json::<serde_json::Value>()
            .await
    });
    let reached = tokio::time::timeout(WAIT, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            // libtest's `test child ... ` may start the line.
            if line.ends_with(IN_FLIGHT) {
                return true;
            }
        }
        false
    })
    .await;
    if reached != Ok(true) {
        kill(&child, libc::SIGKILL);
        let logs = logs.await.unwrap();
        panic!(
            "the call did not reach its handler ({:?}); the child's logs:\n{}",
            call.await,
            logs.join("\n")
        );
    }

    kill(&child, libc::SIGTERM);
    service
        .wait_connections("slow", 0, WAIT)
        .await
        .expect("the module leaves the cluster");
    assert!(
        !call.is_finished(),
        "the call is still in flight when the module has left"
    );

    stdin.write_all(b"finish\n").await.unwrap();
    let answer = tokio::time::timeout(WAIT, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer["released"], true);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let logs = logs.await.unwrap();
    let position = |needle: &str| {
        logs.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{}", logs.join("\n")))
    };
    assert!(position("\"shutting down\"") < position("grpc server: shutting down"));
    assert!(position("grpc server: shutting down") < position("\"module stopped\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_files_end_the_process_with_the_error_and_status_1() {
    let dir = temp_dir("bad");
    let good = go_config("bad", 9001);
    let cases = [
        ("missing.yml", None, "cannot be read"),
        (
            "no_key.yml",
            Some(good.replace("moduleName: bad\n", "")),
            "moduleName: missing",
        ),
        (
            "wrong_type.yml",
            Some(good.replace("port: 0\nmoduleName", "port: hunter2-secret\nmoduleName")),
            "grpcInnerAddress.port: expected an integer from 0 to 65535",
        ),
        (
            "not_yaml.yml",
            Some("moduleName: [unclosed\n".to_owned()),
            "not valid YAML",
        ),
        (
            "secret.yml",
            Some(good.replace(
                "logLevel: info",
                "logLevel: info\nobservability:\n  sentry:\n    enable: s3cr3t-dsn-value",
            )),
            "observability.sentry.enable: expected true or false",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        if let Some(text) = text {
            write(&dir, name, &text);
        }
        let (code, stderr) = run_child("bad", &path).await;
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name} names the file: {stderr}"
        );
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("s3cr3t"),
            "{name} shows no value: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_taken_ends_the_process_with_status_1() {
    let (_service, ws) = fake_service().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = temp_dir("taken");
    let config = write(
        &dir,
        "config.yml",
        &go_config("taken", ws.port()).replace(
            "infraServerIp: 127.0.0.1",
            &format!("infraServerIp: 127.0.0.1\ninfraServerPort: {port}"),
        ),
    );
    let (code, stderr) = run_child("serve", &config).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("bind infraServerPort 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"level\":\"fatal\""),
        "logged at fatal: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
