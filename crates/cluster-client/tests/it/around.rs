//! What sits around the session: typed configs with their derived schema, and the RoundRobin
//! balancer following a required module, end to end against the fake service.

use crate::common::*;
use cluster_client::typed::{TypedConfig, config_data_from, json_schema_for};
use cluster_client::{Client, EventHandler, HostsUpgrader, RoundRobin};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct Remote {
    workers: u32,
    db: Db,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct Db {
    host: String,
    password: String,
}

#[tokio::test(start_paused = true)]
async fn typed_config_schema_validation_and_live_handle() {
    let (service, listener) = service();
    let accepted = Recorder::<u32>::new();
    let acc = accepted.clone();
    let typed = TypedConfig::<Remote>::new()
        .validate(|c: &Remote| {
            if c.workers == 0 {
                Err("workers must be > 0")
            } else {
                Ok(())
            }
        })
        .on_config(move |c| {
            let acc = acc.clone();
            async move {
                acc.push(c.workers);
                Ok::<(), std::convert::Infallible>(())
            }
        });
    let live = typed.handle();
    let default = Remote {
        workers: 2,
        db: Db {
            host: "db".into(),
            password: "secret".into(),
        },
    };
    let client = Client::builder(
        module("T", "10.0.0.9"),
        config_data_from("1.0.0", &default).unwrap(),
        [listener.host.clone()],
    )
    .connector_arc(listener.connector.clone())
    .build()
    .unwrap();
    let run = spawn_run(&client, EventHandler::new().remote_config_receiver(typed));
    wait_ready(&client).await;
    assert_eq!(*live.get().unwrap(), default);

    // The service stored the derived draft-07 schema and validates updates with it.
    let stored = service.schema("T").unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&stored.schema).unwrap();
    assert_eq!(schema, json_schema_for::<Remote>());
    assert!(
        service
            .set_config(
                "T",
                r#"{"workers":"many","db":{"host":"h","password":"p"}}"#,
                None
            )
            .is_err()
    );
    // Valid for the schema, refused by the application: the live handle keeps the old one.
    service
        .set_config(
            "T",
            r#"{"workers":0,"db":{"host":"h","password":"p"}}"#,
            None,
        )
        .unwrap();
    service
        .set_config(
            "T",
            r#"{"workers":5,"db":{"host":"h","password":"p"}}"#,
            None,
        )
        .unwrap();
    assert_eq!(accepted.wait_len(2).await, [2, 5]);
    assert_eq!(live.get().unwrap().workers, 5);
    client.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn round_robin_follows_the_required_module() {
    let (service, listener) = service();
    let a1 = builder(&listener, module("A", "10.0.1.1"), "{}")
        .build()
        .unwrap();
    let a2 = builder(&listener, module("A", "10.0.1.2"), "{}")
        .build()
        .unwrap();
    let run_a1 = spawn_run(&a1, EventHandler::new());
    let run_a2 = spawn_run(&a2, EventHandler::new());
    service.wait_ready_instances("A", 2, WAIT).await.unwrap();

    let lb = RoundRobin::with_seed(Vec::<String>::new(), 1);
    let upgrades = Recorder::<Vec<String>>::new();
    let (l, u) = (lb.clone(), upgrades.clone());
    let b = builder(&listener, module("B", "10.0.1.3"), "{}")
        .build()
        .unwrap();
    let run_b = spawn_run(
        &b,
        EventHandler::new().require_module("A", move |hosts: Vec<String>| {
            l.upgrade(hosts.clone());
            u.push(hosts);
        }),
    );
    wait_ready(&b).await;
    let picks: HashSet<String> = (0..4).map(|_| lb.next().unwrap()).collect();
    assert_eq!(
        picks,
        HashSet::from(["10.0.1.1:9999".to_owned(), "10.0.1.2:9999".to_owned()])
    );

    a1.close().await;
    run_a1.await.unwrap().unwrap();
    upgrades.wait_len(2).await;
    assert_eq!(lb.next().unwrap(), "10.0.1.2:9999");
    assert_eq!(lb.next().unwrap(), "10.0.1.2:9999");

    for (client, run) in [(a2, run_a2), (b, run_b)] {
        client.close().await;
        run.await.unwrap().unwrap();
    }
}
