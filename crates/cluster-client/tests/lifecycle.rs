//! The client's life: hosts and failover, backoff, close, drop, settings errors, logs.

mod common;

use cluster_client::transport::conn::{Handlers, Reply};
use cluster_client::transport::{Transport, TransportError};
use cluster_client::{
    BackoffConfig, Client, ClientError, ClientState, Connector, Endpoint, EventHandler, async_trait,
};
use common::*;
use std::sync::Arc;
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
        .build();
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
    .build();
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
        .build();
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
    let client = builder(&listener, module("A", "10.0.0.1"), "{}").build();
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
async fn run_after_close_is_ok_even_with_unusable_settings() {
    let bad_host = Client::new(module("A", "10.0.0.1"), config_data("{}"), ["127.0.0.1"]);
    bad_host.close().await;
    bad_host.run(EventHandler::new()).await.unwrap();
    let no_hosts = Client::new(
        module("A", "10.0.0.1"),
        config_data("{}"),
        Vec::<String>::new(),
    );
    no_hosts.start_close();
    no_hosts.run(EventHandler::new()).await.unwrap();
    assert_eq!(*no_hosts.state().borrow(), ClientState::Closed);
}

#[tokio::test(start_paused = true)]
async fn close_during_backoff_returns_at_once() {
    let (service, listener) = service();
    service.refuse_connections(true);
    let client = builder(&listener, module("A", "10.0.0.1"), "{}").build();
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
    let client = builder(&listener, module("A", "10.0.0.1"), "{}").build();
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

#[tokio::test(start_paused = true)]
async fn unusable_settings_are_errors() {
    let (service, listener) = service();
    let info = || module("A", "10.0.0.1");
    let none = Client::new(info(), config_data("{}"), Vec::<String>::new());
    assert!(matches!(
        none.run(EventHandler::new()).await,
        Err(ClientError::NoHosts)
    ));
    let bad = Client::new(info(), config_data("{}"), ["127.0.0.1"]);
    assert!(matches!(
        bad.run(EventHandler::new()).await,
        Err(ClientError::InvalidHost(_))
    ));
    let mem = Client::new(info(), config_data("{}"), ["mem://a:1"]);
    let err = mem.run(EventHandler::new()).await.unwrap_err();
    assert!(
        err.to_string().contains("default WebSocket connector"),
        "{err}"
    );

    // The server refuses a connection without a module name: caught before any dial.
    let nameless = builder(&listener, module("", "10.0.0.1"), "{}").build();
    assert!(matches!(
        nameless.run(EventHandler::new()).await,
        Err(ClientError::EmptyModuleName)
    ));
    assert!(
        service.memory_network().connections().is_empty(),
        "never dialed"
    );

    let client = builder(&listener, info(), "{}").build();
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
    let client = Client::builder(
        module("C", "10.0.0.3"),
        config_data("{}"),
        [server.host.clone()],
    )
    .connector_arc(server.connector.clone())
    .build();
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
