//! The client's life: hosts and failover, backoff, close, drop, settings errors, logs.

use crate::common::*;
use cluster_client::proto::event::ModuleNameError;
use cluster_client::transport::{Transport, TransportError};
use cluster_client::{
    BackoffConfig, Client, ClientError, ClientState, Connector, Endpoint, EventHandler, ModuleInfo,
    SetupError, TlsConfig, async_trait,
};
use cluster_etp::{Handlers, Reply};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Dials through `inner`, recording each endpoint dialed (refused ones included).
struct Dials {
    inner: Arc<dyn Connector>,
    log: Recorder<String>,
}

#[async_trait]
impl Connector for Dials {
    async fn connect(
        &self,
        endpoint: &Endpoint,
        module: &str,
    ) -> Result<Transport, TransportError> {
        self.log.push(endpoint.authority());
        self.inner.connect(endpoint, module).await
    }
}

fn backoff_states(client: &Client) -> Recorder<(Duration, u32)> {
    let rec = Recorder::new();
    let r = rec.clone();
    let mut rx = client.state();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if let ClientState::BackingOff {
                delay, failures, ..
            } = *rx.borrow_and_update()
            {
                r.push((delay, failures));
            }
        }
    });
    rec
}

#[tokio::test(start_paused = true)]
async fn failover_across_three_hosts_with_one_down() {
    let (service, first) = service();
    let third = service.listen_memory().unwrap();
    let down = "fake-config-service:1".to_owned();
    let hosts = vec![first.host.clone(), down.clone(), third.host.clone()];
    let dials = Recorder::new();
    let client = Client::builder(module("A", "10.0.0.1"), config_data("{}"), hosts.clone())
        .connector(Dials {
            inner: service.connector(),
            log: dials.clone(),
        })
        .seed(3)
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());

    // Six sessions: each ready one is cut by the service; the down host fails to connect.
    let mut ready_hosts = Vec::new();
    while dials.all().len() < 6 {
        let state = wait_ready(&client).await;
        let ClientState::Ready { host, .. } = state else {
            unreachable!()
        };
        ready_hosts.push(host.to_string());
        service.disconnect_all().await;
        wait_state(&client, "backing off", |s| {
            matches!(s, ClientState::BackingOff { .. })
        })
        .await;
    }
    let dialed = dials.all();
    let start = hosts.iter().position(|h| *h == dialed[0]).unwrap();
    for (i, host) in dialed.iter().enumerate() {
        assert_eq!(
            *host,
            hosts[(start + i) % 3],
            "round-robin from a seeded start: {dialed:?}"
        );
    }
    assert!(dialed.contains(&down));
    assert!(
        ready_hosts.iter().all(|h| !h.contains(":1")),
        "{ready_hosts:?}"
    );
    assert!(ready_hosts.iter().any(|h| h.ends_with(&first.host)));
    assert!(ready_hosts.iter().any(|h| h.ends_with(&third.host)));
    client.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn all_hosts_down_then_one_back() {
    let (service, first) = service();
    let second = service.listen_memory().unwrap();
    service.stop().await;
    let client = Client::builder(
        module("A", "10.0.0.1"),
        config_data("{}"),
        [first.host.clone(), second.host.clone()],
    )
    .connector_arc(service.connector())
    .backoff(BackoffConfig {
        jitter: 0.0,
        max: Duration::from_secs(8),
        ..BackoffConfig::default()
    })
    .seed(11)
    .build()
    .unwrap();
    let backoffs = backoff_states(&client);
    let run = spawn_run(&client, EventHandler::new());

    let seen = backoffs.wait_len(6).await;
    let delays: Vec<u64> = seen.iter().map(|(d, _)| d.as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 8, 8], "exponential, capped");
    assert_eq!(seen[5].1, 6, "failures counted");

    service.restart().await.unwrap();
    wait_ready(&client).await;
    service.wait_ready_instances("A", 1, WAIT).await.unwrap();
    // Once ready for a ping interval (virtual time), the backoff starts over.
    tokio::time::sleep(BackoffConfig::default().stable_after).await;
    service.disconnect_all().await;
    let seen = backoffs.wait_len(7).await;
    assert_eq!(seen[6], (Duration::from_secs(1), 1));
    wait_ready(&client).await;
    client.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_server_that_drops_every_ready_session_at_once_gets_a_growing_backoff() {
    let (service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .backoff(BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        })
        .build()
        .unwrap();
    let backoffs = backoff_states(&client);
    let run = spawn_run(&client, EventHandler::new());
    for _ in 0..4 {
        wait_ready(&client).await;
        service.disconnect_all().await;
        wait_state(&client, "backing off", |s| {
            matches!(s, ClientState::BackingOff { .. })
        })
        .await;
    }
    let delays: Vec<u64> = backoffs.all().iter().map(|(d, _)| d.as_secs()).collect();
    assert_eq!(
        delays,
        [1, 2, 4, 8],
        "ready for no time at all is no reason to come back in 1 s"
    );
    client.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_before_run_is_honoured() {
    let (service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    client.close().await;
    client.close().await;
    assert_eq!(*client.state().borrow(), ClientState::Closed);
    let t0 = Instant::now();
    client.run(EventHandler::new()).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(
        service.memory_network().connections().is_empty(),
        "never dialed"
    );
    assert_eq!(*client.state().borrow(), ClientState::Closed);
}

#[tokio::test(start_paused = true)]
async fn run_after_close_is_ok() {
    let (service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    client.start_close();
    client.run(EventHandler::new()).await.unwrap();
    assert_eq!(*client.state().borrow(), ClientState::Closed);
    assert!(service.memory_network().connections().is_empty());
}

#[tokio::test(start_paused = true)]
async fn close_during_backoff_returns_at_once() {
    let (service, listener) = service();
    service.refuse_connections(true);
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());
    wait_state(&client, "backing off", |s| {
        matches!(s, ClientState::BackingOff { .. })
    })
    .await;
    let t0 = Instant::now();
    client.close().await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "no waiting for the backoff");
    run.await.unwrap().unwrap();
    assert_eq!(*client.state().borrow(), ClientState::Closed);
    let dials = service.memory_network().connections().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        service.memory_network().connections().len(),
        dials,
        "no dial after close"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_run_closes_the_connection_and_allows_a_new_run() {
    let (service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    service.wait_connections("A", 0, WAIT).await.unwrap();
    assert_eq!(*client.state().borrow(), ClientState::Idle);
    assert!(client.healthcheck().is_err());

    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    client.close().await;
    run.await.unwrap().unwrap();
}

fn build_error(info: ModuleInfo, hosts: &[&str]) -> ClientError {
    Client::new(info, config_data("{}"), hosts.iter().copied()).unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn unusable_settings_are_errors_when_the_client_is_built() {
    let info = || module("A", "10.0.0.1");
    assert!(matches!(build_error(info(), &[]), ClientError::NoHosts));
    let err = build_error(info(), &["127.0.0.1"]);
    assert!(matches!(err, ClientError::InvalidHost { .. }), "{err}");
    assert!(
        err.to_string().contains("host:port"),
        "says what to write: {err}"
    );
    let err = build_error(info(), &["mem://a:1"]);
    assert!(
        err.to_string().contains("default WebSocket connector"),
        "{err}"
    );
    // A path: the error says what to write instead.
    let err = build_error(info(), &["ws://127.0.0.1:9001/api/"]);
    assert_eq!(
        err.to_string(),
        "invalid host \"ws://127.0.0.1:9001/api/\": must not have a path: use 127.0.0.1:9001 \
         (the client adds /isp-etp/ itself)"
    );
    let err = build_error(info(), &["wss://config.internal:9443/etp"]);
    assert!(
        err.to_string()
            .contains("must not have a path: use wss://config.internal:9443"),
        "{err}"
    );
    // User info is refused and never repeated (it may hold a password).
    let err = build_error(info(), &["ws://user:hunter2@127.0.0.1:9001"]);
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("user info"), "{err}");
    let err = build_error(info(), &["ws://user:hunter2@127.0.0.1:9001/x"]);
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // The module's own name follows the wire's rules (issue 9), checked before any dial.
    for (name, rule) in [
        ("", ModuleNameError::Empty),
        ("a||b", ModuleNameError::Separator),
        ("__ack_x", ModuleNameError::AckPrefix),
        ("a\nb", ModuleNameError::Control),
    ] {
        let err = build_error(module(name, "10.0.0.1"), &["127.0.0.1:9001"]);
        assert!(
            matches!(&err, ClientError::InvalidModuleName { name: n, error } if n == name && *error == rule),
            "{name:?}: {err}"
        );
    }
    let long = "m".repeat(257);
    assert!(matches!(
        build_error(module(&long, "10.0.0.1"), &["127.0.0.1:9001"]),
        ClientError::InvalidModuleName {
            error: ModuleNameError::TooLong,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_tls_setting_that_does_not_load_is_an_error_when_the_client_is_built() {
    let err = Client::builder(
        module("A", "10.0.0.1"),
        config_data("{}"),
        ["wss://config.internal:9443"],
    )
    .tls(TlsConfig::new().add_ca_file("/nonexistent/cluster-client/ca.pem"))
    .build()
    .unwrap_err();
    match &err {
        ClientError::Setup(SetupError::ReadCaFile { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a setup error reading the CA file, got {other:?}"),
    }
    assert!(err.to_string().contains("CA file"), "{err}");
    // The chain goes down to the io::Error, each step once (the client's error is the
    // SetupError itself, transparent).
    let io = std::error::Error::source(&err).expect("the io::Error is the source");
    assert!(io.downcast_ref::<std::io::Error>().is_some(), "{io:?}");
    assert!(!err.to_string().starts_with("cannot set up"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_wss_host_that_is_no_server_name_is_a_setup_error_when_the_client_is_built() {
    let err = Client::builder(
        module("A", "10.0.0.1"),
        config_data("{}"),
        ["wss://no!such:9443"],
    )
    .build()
    .unwrap_err();
    assert!(
        matches!(&err, ClientError::Setup(SetupError::ServerName { name, .. }) if name == "no!such"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_url_the_fake_service_prints_is_a_host() {
    // `fake-config-service` prints `ws://127.0.0.1:9001/isp-etp/`: accepted as it is.
    for host in [
        "ws://127.0.0.1:9001/isp-etp/",
        "ws://127.0.0.1:9001/isp-etp",
        "127.0.0.1:9001/isp-etp/",
        "ws://127.0.0.1:9001/",
    ] {
        let client = Client::new(module("A", "10.0.0.1"), config_data("{}"), [host]).unwrap();
        assert_eq!(
            client.hosts()[0].to_string(),
            "ws://127.0.0.1:9001",
            "{host}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn bad_required_module_names_fail_run_before_any_dial() {
    let (service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let handler = EventHandler::new()
        .require_module("auth", |_: Vec<String>| {})
        .require_module("bad||name", |_: Vec<String>| {});
    let err = handler.check().unwrap_err();
    assert!(
        matches!(err, ClientError::InvalidRequiredModule { .. }),
        "{err}"
    );
    let err = client.run(handler).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::InvalidRequiredModule { name, error: ModuleNameError::Separator } if name == "bad||name"),
        "{err}"
    );
    assert!(
        service.memory_network().connections().is_empty(),
        "never dialed"
    );
    // The client is still usable with a good handler.
    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn a_second_run_is_an_error() {
    let (_service, listener) = service();
    let info = || module("A", "10.0.0.1");
    let client = builder(&listener, info(), "{}").build().unwrap();
    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    assert!(matches!(
        client.run(EventHandler::new()).await,
        Err(ClientError::AlreadyRunning)
    ));
    assert!(client.healthcheck().is_ok(), "the first run goes on");
    client.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_until_closes_the_client_when_shutdown_completes() {
    let (service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let configs = Configs::new();
    let handler = EventHandler::new().remote_config_receiver(configs.clone());
    // The application itself is the shutdown future: it ends once it saw its config.
    let seen = client
        .run_until(handler, async {
            configs.wait_len(1).await;
            service.wait_ready_instances("A", 1, WAIT).await.unwrap();
        })
        .await;
    seen.unwrap();
    assert_eq!(*client.state().borrow(), ClientState::Closed);
    assert!(client.is_closed());
    service.wait_connections("A", 0, WAIT).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_until_returns_the_run_error_and_drops_the_shutdown_future() {
    let (_service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let handler = EventHandler::new().require_module("x||y", |_: Vec<String>| {});
    let err = client
        .run_until(handler, async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::InvalidRequiredModule { .. }),
        "{err}"
    );
    assert!(dropped.load(Ordering::SeqCst));

    // Closed from elsewhere: run_until returns Ok without its shutdown future.
    let run = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .run_until(EventHandler::new(), std::future::pending())
                .await
        })
    };
    wait_ready(&client).await;
    client.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unpolled_run_leaves_the_client_idle_and_says_so() {
    let (service, listener) = service();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let run = client.run(EventHandler::new()); // never polled yet
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(*client.state().borrow(), ClientState::Idle);
    let err = client.healthcheck().unwrap_err();
    assert!(
        err.to_string().contains("idle: no run is being polled"),
        "the health check says why: {err}"
    );
    // No run is going on: close returns at once, as documented.
    let t0 = Instant::now();
    client.close().await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(*client.state().borrow(), ClientState::Closed);
    // The future polled now returns at once, without dialing.
    run.await.unwrap();
    assert!(service.memory_network().connections().is_empty());
}

#[tokio::test(start_paused = true)]
async fn states_read_right() {
    let (service, listener) = service();
    service.refuse_connections(true);
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());
    let state = wait_backing_off(&client).await;
    // The remaining delay in human form, not an `Instant`.
    let debug = format!("{state:?}");
    assert!(debug.contains("next_in: 1"), "{debug}");
    assert!(
        !debug.contains("tv_sec") && !debug.contains("Instant"),
        "{debug}"
    );
    let shown = state.to_string();
    assert!(
        shown.starts_with("backing off: next session in 1"),
        "{shown}"
    );
    assert!(shown.contains("1 failure(s) in a row"), "{shown}");
    assert!(shown.contains("connect"), "the cause: {shown}");
    let err = client.healthcheck().unwrap_err();
    assert!(err.to_string().contains("backing off"), "{err}");
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn ack_with_error_text_fails_the_session() {
    let server = scripted(|events| {
        Handlers::new().on_unknown(move |conn, name, _data| {
            record(&events, conn, name);
            if name == "MODULE:SEND_CONFIG_SCHEMA" {
                Reply::ack("handle onModuleConfigSchema: missing variables in initial config: [x]")
            } else {
                Reply::ack("ok")
            }
        })
    });
    let client = server.client("C", "10.0.0.3");
    let run = spawn_run(&client, EventHandler::new());
    let failed = wait_state(&client, "backing off", |s| {
        matches!(s, ClientState::BackingOff { .. })
    })
    .await;
    assert!(matches!(
        failed,
        ClientState::BackingOff { failures: 1, .. }
    ));
    let seen = server.events.wait_len(2).await;
    // The Go client carries on after an error ack; this one stops: the schema was not stored.
    assert_eq!(seen[0].1, "MODULE:SEND_CONFIG_SCHEMA");
    assert_eq!(seen[1].1, "MODULE:SEND_CONFIG_SCHEMA");
    assert_ne!(seen[0].0, seen[1].0, "retried on a new connection");
    client.close().await;
    run.await.unwrap().unwrap();
}
