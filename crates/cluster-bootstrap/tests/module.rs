//! A module run by the bootstrap, in this process, against the fake config service over a
//! loopback WebSocket: its Go-shaped config, its declaration (endpoints, address,
//! metricsAutodiscovery), `/internal/health`, `/internal/metrics`, a remote config change
//! and its log level, the config service going away; offline mode; a hanging check.

mod common;

use cluster_bootstrap::{Bootstrap, Environment, LogLevel, Module};
use cluster_client::{ClientState, LIB_VERSION, TypedConfig};
use cluster_grpc::{ApiError, CallContext, GrpcClient, Router};
use common::{WAIT, fake_service, go_config, http_get, temp_dir, write};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tokio::sync::oneshot;

#[derive(Debug, Default, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Remote {
    greeting: String,
    log_level: Option<LogLevel>,
}

#[derive(Deserialize)]
struct Greet {
    name: String,
}

fn router(config: cluster_client::ConfigHandle<Remote>) -> Router {
    Router::new()
        .handle("orders/api/greet", move |_: CallContext, req: Greet| {
            let greeting = config.get().map(|c| c.greeting.clone()).unwrap_or_default();
            async move {
                Ok::<_, ApiError>(
                    serde_json::json!({ "text": format!("{greeting}, {}", req.name) }),
                )
            }
        })
        .unwrap()
        .handle(
            "orders/api/fail",
            |_: CallContext, _: serde_json::Value| async {
                Err::<serde_json::Value, _>(ApiError::business(1001, "no such order"))
            },
        )
        .unwrap()
        .handle(
            "orders/api/panic",
            |_: CallContext, _: serde_json::Value| async {
                if true {
                    panic!("a handler bug");
                }
                Ok::<_, ApiError>(serde_json::Value::Null)
            },
        )
        .unwrap()
}

async fn wait_state(state: &mut tokio::sync::watch::Receiver<ClientState>, ready: bool) {
    tokio::time::timeout(WAIT, state.wait_for(|s| s.is_ready() == ready))
        .await
        .expect("the module's state in time")
        .expect("the bootstrap is alive");
}

/// `/internal/health` answers `status` with the cluster session's check at `check`.
async fn assert_session_health(infra: SocketAddr, status: u16, check: &str) {
    let (got, body) = http_get(infra, "/internal/health").await;
    assert_eq!(got, status, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], check, "{body}");
    assert_eq!(
        health["details"]["configServiceConnection"][0]["status"], check,
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_shaped_module_joins_declares_and_serves_health_and_metrics() {
    let (service, ws) = fake_service().await;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin_task = tokio::spawn(cluster_testkit::admin::serve(
        admin,
        service.clone(),
        async {
            let _ = admin_stopped.await;
        },
    ));

    let dir = temp_dir("joins");
    // `error`: the test's output stays readable (the level is changed below).
    let config = write(
        &dir,
        "conf/config.yml",
        &go_config("orders", ws.port()).replace("logLevel: info", "logLevel: error"),
    );
    let default = write(
        &dir,
        "conf/default_remote_config.json",
        r#"{"greeting":"hello"}"#,
    );
    // Overrides as isp-kit takes them: every variable a key, a `.` nesting.
    let env = Environment::from_vars([
        ("APP_CONFIG_PATH", config.display().to_string()),
        ("MODULENAME", "orders-rs".into()),
        ("DEFAULTREMOTECONFIGPATH", default.display().to_string()),
        ("METRICSAUTODISCOVERY.ADDITIONALLABELS.ZONE", "a".into()),
    ])
    .with_current_dir(&dir);

    let boot = Bootstrap::with_environment("1.2.3", env).unwrap();
    assert_eq!(boot.local_config().module_name, "orders-rs");
    let levels = boot.log_level().clone();
    let remote = TypedConfig::<Remote>::new().inspect(levels.follow(|c: &Remote| c.log_level));
    let config = remote.handle();
    let module = Module::new(remote).grpc(router(config.clone()));
    let mut state = boot.cluster_state();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(boot.run_until(module, async {
        let _ = stopped.await;
    }));
    wait_state(&mut state, true).await;

    // What it declared.
    let declared = service.ready_instances("orders-rs");
    assert_eq!(declared.len(), 1, "{declared:?}");
    let declaration = &declared[0];
    assert_eq!(declaration.version, "1.2.3");
    assert_eq!(declaration.lib_version, LIB_VERSION);
    assert_eq!(declaration.transport, "grpc");
    let mut paths: Vec<&str> = declaration
        .endpoints
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["orders/api/fail", "orders/api/greet", "orders/api/panic"]
    );
    assert_eq!(declaration.address.ip, "127.0.0.1");
    let grpc_addr: SocketAddr = format!("{}:{}", declaration.address.ip, declaration.address.port)
        .parse()
        .unwrap();
    let discovery = declaration
        .metrics_autodiscovery
        .as_ref()
        .expect("declared");
    assert_eq!(discovery.labels["app"], "orders-rs");
    assert_eq!(discovery.labels["__metrics_path__"], "/internal/metrics");
    assert_eq!(discovery.labels["team"], "core");
    assert_eq!(discovery.labels["zone"], "a");
    let infra: SocketAddr = discovery.address.parse().unwrap();
    assert_eq!(infra.ip().to_string(), "127.0.0.1");
    assert_eq!(
        config.get().unwrap().greeting,
        "hello",
        "the default config came back"
    );

    // The fake lists it for Prometheus.
    let (status, body) = http_get(admin_addr, "/internal/metrics/autodiscovery").await;
    assert_eq!(status, 200);
    let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(targets[0]["targets"][0], discovery.address, "{targets}");
    assert_eq!(targets[0]["labels"]["app"], "orders-rs");

    // Health: the cluster session passes.
    assert_session_health(infra, 200, "pass").await;

    // Calls, then their metrics under isp-kit's names.
    let client = GrpcClient::new([grpc_addr.to_string()]);
    let greeted: serde_json::Value = client
        .invoke("orders/api/greet")
        .json_body(&serde_json::json!({"name": "ann"}))
        .json()
        .await
        .unwrap();
    assert_eq!(greeted["text"], "hello, ann");
    let failed = client
        .invoke("orders/api/fail")
        .json_body(&1)
        .raw()
        .await
        .unwrap_err();
    assert_eq!(failed.api_error().unwrap().error_code, 1001);
    let panicked = client
        .invoke("orders/api/panic")
        .json_body(&1)
        .raw()
        .await
        .unwrap_err();
    assert_eq!(
        panicked.grpc_code(),
        Some(cluster_grpc::tonic::Code::Internal)
    );

    let (status, text) = http_get(infra, "/internal/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let sample = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
            .value
            .clone()
    };
    use prometheus_parse::Value as V;
    for (code, endpoint) in [
        ("OK", "orders/api/greet"),
        ("InvalidArgument", "orders/api/fail"),
        ("Internal", "orders/api/panic"),
    ] {
        assert_eq!(
            sample(
                "grpc_status_code_count",
                &[("endpoint", endpoint), ("code", code)]
            ),
            V::Counter(1.0),
            "{code}"
        );
    }
    match sample(
        "grpc_request_duration_ms",
        &[("endpoint", "orders/api/greet")],
    ) {
        V::Summary(quantiles) => {
            let qs: Vec<f64> = quantiles.iter().map(|q| q.quantile).collect();
            assert_eq!(qs, [0.5, 0.9, 0.95, 0.99]);
        }
        other => panic!("a summary: {other:?}"),
    }
    assert_eq!(
        sample(
            "grpc_request_duration_ms_count",
            &[("endpoint", "orders/api/greet")]
        ),
        V::Untyped(1.0)
    );
    sample(
        "grpc_client_request_duration_ms",
        &[("endpoint", "orders/api/fail")],
    );
    assert_eq!(
        sample("cluster_session_state", &[("state", "ready")]),
        V::Gauge(1.0)
    );
    sample("process_resident_memory_bytes", &[]);
    let (status, descriptions) = http_get(infra, "/internal/metrics/descriptions").await;
    assert_eq!(status, 200);
    assert!(
        descriptions.contains("grpc_request_duration_ms"),
        "{descriptions}"
    );

    // A remote config change reaches the module, with its log level.
    assert_eq!(levels.get(), LogLevel::Error);
    service
        .set_config("orders-rs", r#"{"greeting":"hi","logLevel":"warn"}"#, None)
        .unwrap();
    // The module's second config (the first was the default).
    let outcome = tokio::time::timeout(WAIT, config.wait_outcome(2))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, cluster_client::ConfigOutcome::Applied(_)),
        "{outcome:?}"
    );
    assert_eq!(config.get().unwrap().greeting, "hi");
    assert_eq!(levels.get(), LogLevel::Warn);

    // The config service goes away: the health check fails, at once.
    service.stop().await;
    wait_state(&mut state, false).await;
    assert_session_health(infra, 500, "fail").await;

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = stop_admin.send(());
    admin_task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mode_applies_the_remote_config_file_without_a_config_service() {
    let dir = temp_dir("offline");
    let config = write(
        &dir,
        "conf/config_dev.yml",
        &go_config("offline-rs", 0)
            .replace("logLevel: info", "logLevel: error")
            .replace("configServiceAddress:\n  ip: 127.0.0.1\n  port: 0\n", ""),
    );
    write(&dir, "conf/config.json", r#"{"greeting":"from the file"}"#);
    let env = Environment::from_vars([("APP_MODE", "dev"), ("CLUSTER_MODE", "offline")])
        .with_current_dir(&dir);
    let boot = Bootstrap::with_environment("1.0.0", env).unwrap();
    assert!(boot.config_service_hosts().is_empty());
    let remote = TypedConfig::<Remote>::new();
    let mut handle = remote.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(boot.run_until(
        Module::new(remote).grpc(router(handle.clone())),
        async {
            let _ = stopped.await;
        },
    ));
    let applied = tokio::time::timeout(WAIT, handle.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(applied.greeting, "from the file");
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = (config, std::fs::remove_dir_all(&dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_check_that_hangs_is_cut_by_the_timeout() {
    let dir = temp_dir("hangs");
    write(
        &dir,
        "conf/config_dev.yml",
        &go_config("hangs-rs", 0)
            .replace("logLevel: info", "logLevel: error")
            .replace("configServiceAddress:\n  ip: 127.0.0.1\n  port: 0\n", "")
            .replace(
                "metricsAutodiscovery:\n  enable: true",
                "metricsAutodiscovery:\n  enable: false",
            )
            .replace(
                "moduleName: hangs-rs",
                "moduleName: hangs-rs\ninfraServerPort: 0",
            ),
    );
    write(&dir, "conf/config.json", r#"{"greeting":"x"}"#);
    let env = Environment::from_vars([("APP_MODE", "dev"), ("CLUSTER_MODE", "offline")])
        .with_current_dir(&dir);
    let boot = Bootstrap::with_environment("1.0.0", env).unwrap();
    boot.health().register("database", std::future::pending);
    boot.health().register("queue", || async { Ok(()) });
    let mut listening = boot.listening();
    let remote = TypedConfig::<Remote>::new();
    let mut handle = remote.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(boot.run_until(Module::new(remote), async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(WAIT, handle.wait())
        .await
        .unwrap()
        .unwrap();
    let infra = tokio::time::timeout(WAIT, listening.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .infra;
    let (status, body) = http_get(infra, "/internal/health").await;
    assert_eq!(status, 500, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "fail");
    assert_eq!(
        report["details"]["database"][0]["output"],
        "timed out after 500ms"
    );
    assert_eq!(report["details"]["queue"][0]["status"], "pass");
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_remote_config_that_does_not_fit_names_the_key_not_the_value() {
    let dir = temp_dir("default");
    let config = write(
        &dir,
        "config.yml",
        &go_config("default-rs", 1).replace("logLevel: info", "logLevel: error"),
    );
    let default = write(
        &dir,
        "default_remote_config.json",
        r#"{"greting": "s3cr3t-typo", "logLevel": "info"}"#,
    );
    let env = Environment::from_vars([
        ("APP_CONFIG_PATH", config.display().to_string()),
        ("DEFAULTREMOTECONFIGPATH", default.display().to_string()),
    ]);
    let boot = Bootstrap::with_environment("1.0.0", env).unwrap();
    let err = boot
        .run_until(
            Module::new(TypedConfig::<Remote>::new()),
            std::future::pending(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&default.display().to_string()), "{err}");
    assert!(err.contains("missing field `greeting`"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_module_declares_its_methods_and_serves_on_the_inner_address() {
    let (service, ws) = fake_service().await;
    let dir = temp_dir("http");
    let config = write(
        &dir,
        "config.yml",
        &go_config("billing-rs", ws.port()).replace("logLevel: info", "logLevel: error"),
    );
    let env = Environment::from_vars([("APP_CONFIG_PATH", config.display().to_string())]);
    let boot = Bootstrap::with_environment("2.0.0", env).unwrap();
    let mut state = boot.cluster_state();
    let router = cluster_http::Router::new()
        .handle(
            cluster_http::Endpoint::post("billing/api/total"),
            |_: cluster_http::CallContext, items: Vec<u32>| async move {
                Ok::<_, cluster_http::ApiError>(
                    serde_json::json!({ "total": items.iter().sum::<u32>() }),
                )
            },
        )
        .unwrap()
        .handle_without_body(
            cluster_http::Endpoint::get("billing/api/ping").inner(),
            |_: cluster_http::CallContext| async { Ok::<_, cluster_http::ApiError>("pong") },
        )
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(boot.run_until(
        Module::new(TypedConfig::<Remote>::new()).http(router),
        async {
            let _ = stopped.await;
        },
    ));
    wait_state(&mut state, true).await;

    let declared = service.ready_instances("billing-rs");
    let declaration = &declared[0];
    assert_eq!(declaration.transport, "http");
    let mut methods: Vec<(String, String)> = declaration
        .endpoints
        .iter()
        .map(|e| (e.path.clone(), e.http_method.clone()))
        .collect();
    methods.sort();
    assert_eq!(
        methods,
        [
            ("billing/api/ping".to_owned(), "GET".to_owned()),
            ("billing/api/total".to_owned(), "POST".to_owned())
        ]
    );
    let address = format!("{}:{}", declaration.address.ip, declaration.address.port);
    let client = cluster_http::HttpClient::new([address]);
    let total: serde_json::Value = client
        .post("billing/api/total")
        .json_body(&[1, 2, 3])
        .json()
        .await
        .unwrap();
    assert_eq!(total["total"], 6);

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
