//! The client against the fake config service, in memory, under a paused clock: the
//! isp-config-service acceptance scenario and every failure path of a session.

use crate::common::*;
use bytes::Bytes;
use cluster_client::{
    BoxError, Client, ClientState, EventHandler, RemoteConfigReceiver, RoutingConfig, async_trait,
};
use cluster_testkit::{ErrorEvent, Fault, MemoryListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const SCHEMA_EVENT: &str = "MODULE:SEND_CONFIG_SCHEMA";
const REQUIREMENTS_EVENT: &str = "MODULE:SEND_REQUIREMENTS";
const READY_EVENT: &str = "MODULE:READY";
const CONFIG_WHEN_CONNECTED: &str = "CONFIG:SEND_CONFIG_WHEN_CONNECTED";

fn received_events(service: &cluster_testkit::FakeConfigService, module: &str) -> Vec<String> {
    service
        .received(module)
        .iter()
        .map(|f| f.event().to_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn acceptance_scenario_two_a_and_b_requiring_a() {
    let (service, listener) = service();
    let a1 = builder(&listener, module("A", "127.0.9.1"), "{}")
        .build()
        .unwrap();
    let run_a1 = spawn_run(
        &a1,
        EventHandler::new().remote_config_receiver(Configs::new()),
    );
    wait_ready(&a1).await;
    let a2 = builder(&listener, module("A", "127.0.9.2"), "{}")
        .build()
        .unwrap();
    let run_a2 = spawn_run(
        &a2,
        EventHandler::new().remote_config_receiver(Configs::new()),
    );
    wait_ready(&a2).await;
    service.wait_ready_instances("A", 2, WAIT).await.unwrap();

    let (handler, watched) = watching("A");
    let b_default = r#"{"db":{"password":"p@ss","host":"h"},"someString":"first"}"#;
    let b = builder(&listener, module("B", "127.0.9.3"), b_default)
        .build()
        .unwrap();
    let run_b = spawn_run(&b, handler);
    wait_ready(&b).await;
    assert!(b.healthcheck().is_ok());
    service.wait_ready_instances("B", 1, WAIT).await.unwrap();

    // What B told the service, byte for byte as the Go client says it.
    let sent: Vec<(String, String)> = service
        .received("B")
        .iter()
        .map(|f| (f.event().to_owned(), f.text()))
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0].0, SCHEMA_EVENT);
    assert_eq!(
        sent[0].1,
        format!(r#"{{"version":"1.0.0","schema":{SCHEMA},"config":{b_default}}}"#)
    );
    assert_eq!(
        sent[1],
        (
            REQUIREMENTS_EVENT.to_owned(),
            r#"{"requiredModules":["A"],"requireRoutes":true}"#.to_owned()
        )
    );
    assert_eq!(
        sent[2],
        (
            READY_EVENT.to_owned(),
            r#"{"moduleName":"B","version":"1.0.0","libVersion":"1.0.0","endpoints":[{"path":"b/api/one","inner":false,"userAuthRequired":false,"extra":null}],"requiredModules":[{"name":"A","required":true}],"address":{"ip":"127.0.9.3","port":"9999"}}"#.to_owned()
        )
    );

    // B's config is updated.
    let new_config = r#"{"someString":"second","nested":{"a||b":"x||y"}}"#;
    service.set_config("B", new_config, None).unwrap();
    watched.configs.wait_len(2).await;

    // One A leaves.
    close_and_join(&a2, run_a2).await;
    watched.hosts.wait_len(2).await;
    watched.routes.wait_len(3).await;

    assert_eq!(watched.configs.all(), [b_default, new_config]);
    assert_eq!(
        watched.hosts.all(),
        [
            vec!["127.0.9.2:9999".to_owned(), "127.0.9.1:9999".to_owned()],
            vec!["127.0.9.1:9999".to_owned()],
        ]
    );
    let tables: Vec<Vec<(String, String)>> = watched
        .routes
        .all()
        .iter()
        .map(|t| {
            t.iter()
                .map(|d| (d.module_name.clone(), d.address.ip.clone()))
                .collect()
        })
        .collect();
    let entry = |m: &str, ip: &str| (m.to_owned(), ip.to_owned());
    assert_eq!(
        tables,
        [
            vec![entry("A", "127.0.9.2"), entry("A", "127.0.9.1")],
            vec![
                entry("B", "127.0.9.3"),
                entry("A", "127.0.9.2"),
                entry("A", "127.0.9.1")
            ],
            vec![entry("B", "127.0.9.3"), entry("A", "127.0.9.1")],
        ]
    );

    b.close().await;
    close_and_join(&a1, run_b).await;
    run_a1.await.unwrap().unwrap();
    service.wait_connections("A", 0, WAIT).await.unwrap();
    service.wait_connections("B", 0, WAIT).await.unwrap();
    assert_eq!(*b.state().borrow(), ClientState::Closed);
}

mockall::mock! {
    Receiver {}
    #[async_trait]
    impl RemoteConfigReceiver for Receiver {
        async fn receive_config(&self, config: Bytes) -> Result<(), BoxError>;
    }
}

#[tokio::test(start_paused = true)]
async fn rejected_initial_config_keeps_the_module_not_ready_and_retries() {
    let (service, listener) = service();
    let mut receiver = MockReceiver::new();
    let mut seq = mockall::Sequence::new();
    receiver
        .expect_receive_config()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err("invalid config: workers must be > 0".into()));
    receiver
        .expect_receive_config()
        .withf(|c| &c[..] == b"{}")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let client = builder(&listener, module("D", "10.0.0.4"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(receiver),
    );

    let failed = wait_backing_off(&client).await;
    let ClientState::BackingOff {
        delay, failures, ..
    } = failed
    else {
        unreachable!()
    };
    assert_eq!((delay, failures), (Duration::from_secs(1), 1));
    assert!(client.healthcheck().is_err());
    // The first session never declared the module ready: the refusal (the config comes
    // before the schema's ack) is taken before the ack is read.
    assert_eq!(received_events(&service, "D"), [SCHEMA_EVENT]);

    wait_ready(&client).await;
    assert_eq!(
        received_events(&service, "D"),
        [SCHEMA_EVENT, SCHEMA_EVENT, REQUIREMENTS_EVENT, READY_EVENT]
    );
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn server_refusing_connections_means_backoff_until_it_accepts() {
    let (service, listener) = service();
    service.refuse_connections(true);
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let mut states = client.state();
    let run = spawn_run(&client, EventHandler::new());

    let mut delays = Vec::new();
    while delays.len() < 3 {
        within("a backoff", states.changed()).await.unwrap();
        if let ClientState::BackingOff { delay, .. } = *states.borrow_and_update() {
            delays.push(delay);
        }
    }
    assert_eq!(delays[0], Duration::from_secs(1));
    for (i, d) in delays.iter().enumerate().skip(1) {
        let base = 2f64.powi(i as i32);
        assert!(
            d.as_secs_f64() <= base && d.as_secs_f64() > base * 0.8,
            "{delays:?}"
        );
    }
    assert!(service.ready_instances("A").is_empty());

    service.refuse_connections(false);
    wait_ready(&client).await;
    service.wait_ready_instances("A", 1, WAIT).await.unwrap();
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn missing_ack_fails_the_session_after_the_ack_timeout() {
    let (service, listener) = service();
    service.fault_ack(READY_EVENT, Some(Fault::Swallow));
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .ack_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());

    service.wait_event("A", READY_EVENT, WAIT).await.unwrap();
    let sent_at = Instant::now();
    wait_backing_off(&client).await;
    assert_eq!(sent_at.elapsed(), Duration::from_millis(500));
    // The session closed its connection: the instance is gone.
    service.wait_ready_instances("A", 0, WAIT).await.unwrap();

    service.clear_faults();
    wait_ready(&client).await;
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn error_event_during_handshake_fails_it_at_once() {
    let (service, listener) = service();
    // Hold the initial config back: the client waits for it.
    service.fault_event(CONFIG_WHEN_CONNECTED, Some(Fault::Swallow));
    let client = builder(&listener, module("B", "10.0.0.2"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(Configs::new()),
    );
    service
        .wait_event("B", REQUIREMENTS_EVENT, WAIT)
        .await
        .unwrap();

    let t0 = Instant::now();
    assert_eq!(service.send_error("B", ErrorEvent::Config, "bad config"), 1);
    wait_backing_off(&client).await;
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "no waiting for the config timeout"
    );
    assert!(!received_events(&service, "B").contains(&READY_EVENT.to_owned()));

    service.clear_faults();
    wait_ready(&client).await;
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn error_events_after_ready_are_logged_and_the_session_goes_on() {
    let (service, listener) = service();
    let configs = Configs::new();
    let client = builder(&listener, module("B", "10.0.0.2"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(configs.clone()),
    );
    wait_ready(&client).await;
    let conn = service.connections("B")[0].id;

    assert_eq!(
        service.send_error("B", ErrorEvent::Connection, "overloaded"),
        1
    );
    assert_eq!(service.send_error("B", ErrorEvent::Config, "bad config"), 1);
    service
        .set_config("B", r#"{"someString":"after"}"#, None)
        .unwrap();
    assert_eq!(configs.wait_len(2).await[1], r#"{"someString":"after"}"#);
    assert!(client.healthcheck().is_ok());
    assert_eq!(service.connections("B")[0].id, conn, "same connection");
    close_and_join(&client, run).await;
}

/// A config receiver that misbehaves on chosen calls (numbered from 0) and is fine on the
/// others, recording starts, ends and drops.
#[derive(Clone)]
struct Flaky {
    calls: Arc<AtomicUsize>,
    log: Recorder<String>,
    on: &'static [usize],
    bad: Misbehaviour,
}

#[derive(Clone, Copy)]
enum Misbehaviour {
    Sleep(Duration),
    Panic,
}

struct Finish(Recorder<String>, usize, bool);

impl Drop for Finish {
    fn drop(&mut self) {
        let what = if self.2 { "end" } else { "dropped" };
        self.0.push(format!("{what} {}", self.1));
    }
}

#[async_trait]
impl RemoteConfigReceiver for Flaky {
    async fn receive_config(&self, _config: Bytes) -> Result<(), BoxError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log.push(format!("start {n}"));
        let mut finish = Finish(self.log.clone(), n, false);
        if self.on.contains(&n) {
            match self.bad {
                Misbehaviour::Sleep(d) => tokio::time::sleep(d).await,
                Misbehaviour::Panic => panic!("receiver bug"),
            }
        }
        finish.2 = true;
        Ok(())
    }
}

/// Starts module B on `listener` with a [`Flaky`] config receiver, each call bounded by
/// `timeout` (`None`: the default bound). Returns the client, its run and the receiver's log.
fn start_flaky(
    listener: &MemoryListener,
    on: &'static [usize],
    bad: Misbehaviour,
    timeout: Option<Duration>,
) -> (Client, Run, Recorder<String>) {
    let receiver = Flaky {
        calls: Arc::new(AtomicUsize::new(0)),
        log: Recorder::new(),
        on,
        bad,
    };
    let log = receiver.log.clone();
    let handler = match timeout {
        Some(timeout) => EventHandler::new().remote_config_receiver_with_timeout(receiver, timeout),
        None => EventHandler::new().remote_config_receiver(receiver),
    };
    let client = builder(listener, module("B", "10.0.0.2"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(&client, handler);
    (client, run, log)
}

#[tokio::test(start_paused = true)]
async fn too_slow_initial_config_is_cancelled_and_retried() {
    let (_service, listener) = service();
    let (client, run, log) = start_flaky(
        &listener,
        &[0],
        Misbehaviour::Sleep(Duration::from_secs(10)),
        Some(Duration::from_secs(2)),
    );
    let t0 = Instant::now();
    wait_backing_off(&client).await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(2),
        "bounded by the handler timeout"
    );
    wait_ready(&client).await;
    // The slow application was dropped before the next one started.
    assert_eq!(log.all(), ["start 0", "dropped 0", "start 1", "end 1"]);
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn too_slow_config_change_is_cancelled_and_the_client_survives() {
    let (service, listener) = service();
    let (client, run, log) = start_flaky(
        &listener,
        &[1],
        Misbehaviour::Sleep(Duration::from_secs(10)),
        Some(Duration::from_secs(2)),
    );
    wait_ready(&client).await;
    service
        .set_config("B", r#"{"someString":"slow"}"#, None)
        .unwrap();
    log.wait_len(4).await;
    service
        .set_config("B", r#"{"someString":"fast"}"#, None)
        .unwrap();
    log.wait_len(6).await;
    assert_eq!(
        log.all(),
        [
            "start 0",
            "end 0",
            "start 1",
            "dropped 1",
            "start 2",
            "end 2"
        ]
    );
    assert!(client.healthcheck().is_ok());
    assert_eq!(service.connections("B").len(), 1);
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn panicking_receiver_is_reported_and_the_client_survives() {
    let (service, listener) = service();
    // Panics on the initial config of the first session and on the first change.
    let (client, run, log) = start_flaky(&listener, &[0, 2], Misbehaviour::Panic, None);
    wait_backing_off(&client).await;
    wait_ready(&client).await;
    service
        .set_config("B", r#"{"someString":"boom"}"#, None)
        .unwrap();
    log.wait_len(6).await;
    service
        .set_config("B", r#"{"someString":"fine"}"#, None)
        .unwrap();
    log.wait_len(8).await;
    assert_eq!(
        log.all(),
        [
            "start 0",
            "dropped 0",
            "start 1",
            "end 1",
            "start 2",
            "dropped 2",
            "start 3",
            "end 3"
        ]
    );
    assert!(client.healthcheck().is_ok());
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn panicking_hosts_upgrader_fails_the_handshake_but_not_the_client() {
    let (service, listener) = service();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let client = builder(&listener, module("B", "10.0.0.2"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().require_module("A", move |_hosts: Vec<String>| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("upgrader bug");
            }
        }),
    );
    wait_backing_off(&client).await;
    wait_ready(&client).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(service.ready_instances("B").len(), 1);
    close_and_join(&client, run).await;
}

/// Holds the client at one stage of the handshake, then breaks the connection there.
#[tokio::test(start_paused = true)]
async fn disconnect_at_every_stage_reconnects_and_gets_ready() {
    enum Hold {
        Ack(&'static str),
        Event(&'static str),
        Ready,
    }
    let stages = [
        ("schema sent", Hold::Ack(SCHEMA_EVENT), SCHEMA_EVENT),
        (
            "requirements sent",
            Hold::Ack(REQUIREMENTS_EVENT),
            REQUIREMENTS_EVENT,
        ),
        (
            "awaiting the config",
            Hold::Event(CONFIG_WHEN_CONNECTED),
            REQUIREMENTS_EVENT,
        ),
        ("ready sent", Hold::Ack(READY_EVENT), READY_EVENT),
        ("ready", Hold::Ready, READY_EVENT),
    ];
    for (stage, hold, reached) in stages {
        let (service, listener) = service();
        match hold {
            Hold::Ack(event) => service.fault_ack(event, Some(Fault::Swallow)),
            Hold::Event(event) => service.fault_event(event, Some(Fault::Swallow)),
            Hold::Ready => {}
        }
        let client = builder(&listener, module("B", "10.0.0.2"), "{}")
            .build()
            .unwrap();
        let run = spawn_run(
            &client,
            EventHandler::new().remote_config_receiver(Configs::new()),
        );
        service.wait_event("B", reached, WAIT).await.unwrap();
        if matches!(hold, Hold::Ready) {
            wait_ready(&client).await;
        }
        service.clear_faults();
        let first = service.memory_network().connection(0).await;
        first.faults.sever();
        wait_backing_off(&client).await;
        wait_ready(&client).await;
        let second = within("a second dial", service.memory_network().connection(1)).await;
        assert!(
            second.faults.is_open(),
            "stage {stage}: ready on the new connection"
        );
        service.wait_ready_instances("B", 1, WAIT).await.unwrap();
        close_and_join(&client, run).await;
    }
}

#[tokio::test(start_paused = true)]
async fn server_closing_the_connection_means_reconnect_after_one_second() {
    let (service, listener) = service();
    let client = builder(&listener, module("B", "10.0.0.2"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    assert_eq!(service.disconnect_module("B").await, 1);
    let backoff = wait_backing_off(&client).await;
    assert!(
        matches!(backoff, ClientState::BackingOff { delay, .. } if delay == Duration::from_secs(1))
    );
    wait_ready(&client).await;
    service.wait_ready_instances("B", 1, WAIT).await.unwrap();
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn half_open_connection_is_detected_by_missed_pongs() {
    let (service, listener) = service();
    let counter = PingCounter::default();
    let client = builder(&listener, module("B", "10.0.0.2"), "{}")
        .connector(counter.connector(listener.connector.clone()))
        .build()
        .unwrap();
    let run = spawn_run(&client, EventHandler::new());
    wait_ready(&client).await;
    let ready_at = Instant::now();
    let conn = service.memory_network().connection(0).await;
    // A ping every 5 s, each answered while the link flows.
    tokio::time::sleep(Duration::from_secs(32)).await;
    assert_eq!((counter.pings(), counter.pongs()), (6, 6));
    assert!(client.healthcheck().is_ok());

    conn.faults.stall();
    // The pings of 35 s and 40 s go unanswered; the second pong deadline (43 s) ends the
    // session, and the health check fails at that very instant: the close, which the
    // stalled peer never answers (up to 1 s), goes on during the backoff.
    wait_state(&client, "not ready", |s| !s.is_ready()).await;
    assert_eq!(ready_at.elapsed(), Duration::from_secs(43));
    assert!(client.healthcheck().is_err());
    assert!(
        matches!(*client.state().borrow(), ClientState::BackingOff { .. }),
        "{:?}",
        *client.state().borrow()
    );
    assert_eq!((counter.pings(), counter.pongs()), (8, 6));

    wait_ready(&client).await;
    let second = service.memory_network().connection(1).await;
    assert!(second.faults.is_open());
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn slow_routes_backlog_does_not_keep_a_new_session_from_ready() {
    let (service, listener) = service();
    // (entries, whether B is among them) of each table applied, 300 ms each.
    let tables = Recorder::<(usize, bool)>::new();
    let t = tables.clone();
    let b = builder(&listener, module("B", "10.0.0.2"), "{}")
        .build()
        .unwrap();
    let run_b = spawn_run(
        &b,
        EventHandler::new().routes_receiver(move |routes: RoutingConfig| {
            let t = t.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                t.push((routes.len(), routes.iter().any(|d| d.module_name == "B")));
                Ok::<(), BoxError>(())
            }
        }),
    );
    wait_ready(&b).await;
    // Ten instances of A get ready at once: ten routing tables, 3 s of work for B.
    let mut others = Vec::new();
    for i in 0..10 {
        let a = builder(&listener, module("A", &format!("10.0.1.{i}")), "{}")
            .build()
            .unwrap();
        others.push((a.clone(), spawn_run(&a, EventHandler::new())));
    }
    service.wait_ready_instances("A", 10, WAIT).await.unwrap();
    // B's session ends with most of that backlog still queued.
    assert_eq!(service.disconnect_module("B").await, 1);
    wait_backing_off(&b).await;
    wait_ready(&b).await;
    // The new session's initial table did not wait behind the old session's (1 s limit):
    // ready on the first reconnect.
    let dials = service
        .memory_network()
        .connections()
        .iter()
        .filter(|c| c.module_name == "B")
        .count();
    assert_eq!(dials, 2, "ready on the first reconnect");
    assert!(
        tables.all().contains(&(10, false)),
        "the new session's initial table: {:?}",
        tables.all()
    );
    close_and_join(&b, run_b).await;
    for (a, run) in others {
        close_and_join(&a, run).await;
    }
}

#[tokio::test(start_paused = true)]
async fn huge_timeouts_mean_no_deadline() {
    let (_service, listener) = service();
    let client = builder(&listener, module("B", "10.0.0.2"), "{}")
        .ack_timeout(Duration::MAX)
        .event_timeout(Duration::MAX)
        .config_arrival_wait(Duration::MAX)
        .ping_interval(Duration::MAX)
        .pong_timeout(Duration::MAX)
        .build()
        .unwrap();
    let configs = Configs::new();
    let run = spawn_run(
        &client,
        EventHandler::new()
            .remote_config_receiver_with_timeout(configs.clone(), Duration::MAX)
            .routes_receiver_with_timeout(Recorder::<RoutingConfig>::new(), Duration::MAX),
    );
    wait_ready(&client).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(client.healthcheck().is_ok());
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn config_burst_ends_with_the_last_config_and_never_goes_back() {
    let (service, listener) = service();
    let applied = Recorder::<u32>::new();
    let a = applied.clone();
    let client = builder(&listener, module("B", "10.0.0.2"), r#"{"someString":"0"}"#)
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(move |config: Bytes| {
            let a = a.clone();
            async move {
                let value: serde_json::Value = serde_json::from_slice(&config)?;
                let n: u32 = value["someString"].as_str().unwrap_or("x").parse()?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                a.push(n);
                Ok::<(), BoxError>(())
            }
        }),
    );
    wait_ready(&client).await;
    for i in 1..=1000 {
        service
            .set_config("B", format!(r#"{{"someString":"{i}"}}"#), None)
            .unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut rx = applied.all();
    while rx.last() != Some(&1000) {
        rx = applied.wait_len(rx.len() + 1).await;
    }
    assert!(
        rx.windows(2).all(|w| w[0] < w[1]),
        "never older after newer: {rx:?}"
    );
    assert_eq!(rx[0], 0);
    assert!(
        rx.len() < 1001,
        "queued configs were coalesced ({} applied)",
        rx.len()
    );
    assert!(client.healthcheck().is_ok());
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn close_during_a_config_application_cancels_it_before_returning() {
    let (service, listener) = service();
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Recorder::<()>::new();
    let (d, s) = (dropped.clone(), started.clone());
    let client = builder(&listener, module("B", "10.0.0.2"), r#"{"someString":"0"}"#)
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver_with_timeout(
            move |config: Bytes| {
                let (d, s) = (d.clone(), s.clone());
                async move {
                    if config.as_ref() != br#"{"someString":"0"}"# {
                        let _flag = DropFlag(d);
                        s.push(());
                        std::future::pending::<()>().await;
                    }
                    Ok::<(), BoxError>(())
                }
            },
            Duration::from_secs(3600),
        ),
    );
    wait_ready(&client).await;
    service
        .set_config("B", r#"{"someString":"1"}"#, None)
        .unwrap();
    started.wait_len(1).await;
    assert!(!dropped.load(Ordering::SeqCst));
    client.close().await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "cancelled before close returned"
    );
    assert_eq!(*client.state().borrow(), ClientState::Closed);
    run.await.unwrap().unwrap();
    service.wait_connections("B", 0, WAIT).await.unwrap();
    assert!(
        !service
            .memory_network()
            .connection(0)
            .await
            .faults
            .is_open()
    );
}
