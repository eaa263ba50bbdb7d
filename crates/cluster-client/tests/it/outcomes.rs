//! What applications and tests can wait for: a config applied or rejected, a required
//! module's hosts, and a refused live config that keeps the module out of the cluster.

use crate::common::*;
use cluster_client::typed::{ConfigOutcome, TypedConfig};
use cluster_client::{Client, ClientState, ConfigData, EventHandler, RoundRobin};
use cluster_testkit::declared::instance;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Conf {
    workers: u32,
}

const CONF_SCHEMA: &str = r#"{"type":"object","properties":{"workers":{"type":"integer"}}}"#;

fn typed() -> TypedConfig<Conf> {
    TypedConfig::<Conf>::new().validate(|c: &Conf| {
        if c.workers > 0 {
            Ok(())
        } else {
            Err("workers must be > 0")
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_refused_live_config_is_visible_and_keeps_the_module_out_after_a_reconnect() {
    let (service, listener) = service();
    let typed = typed();
    let config = typed.handle();
    let client = Client::builder(
        module("A", "10.0.0.1"),
        ConfigData::from_json("1.0.0", CONF_SCHEMA, r#"{"workers":1}"#).unwrap(),
        [listener.url()],
    )
    .connector_arc(listener.connector.clone())
    .seed(7)
    .build()
    .unwrap();
    let run = spawn_run(&client, EventHandler::new().remote_config_receiver(typed));
    wait_ready(&client).await;
    let Some(ConfigOutcome::Applied(first)) = config.wait_outcome(1).await else {
        panic!("the default config is applied");
    };
    assert_eq!(first.workers, 1);

    // The schema allows 0, the module does not: config #2 is rejected, visibly.
    service.set_config("A", r#"{"workers":0}"#, None).unwrap();
    let Some(ConfigOutcome::Rejected(rejection)) = config.wait_outcome(2).await else {
        panic!("config 2 is rejected");
    };
    assert_eq!(rejection.seq, 2);
    assert!(
        rejection.error.contains("workers must be > 0"),
        "{rejection}"
    );
    assert_eq!(config.last_rejection(), Some(rejection));
    assert_eq!(config.get().unwrap().workers, 1, "the old config stays");
    assert!(client.healthcheck().is_ok(), "still ready, as in Go");

    // The service keeps it and sends it at the next connection: the handshake fails, again
    // and again, and the state says why.
    service.disconnect_module("A").await;
    // (failure 1 is the disconnect itself.)
    for failures in 2..=3 {
        let state = wait_state(
            &client,
            "backing off after a refused config",
            |s| matches!(s, ClientState::BackingOff { failures: f, .. } if *f == failures),
        )
        .await;
        let ClientState::BackingOff { cause, .. } = &state else {
            unreachable!()
        };
        assert!(
            cause.contains("rejected by the application") && cause.contains("workers must be > 0"),
            "{state}"
        );
        let err = client.healthcheck().unwrap_err();
        assert!(err.to_string().contains("workers must be > 0"), "{err}");
    }
    assert!(
        service.ready_instances("A").is_empty(),
        "out of the cluster"
    );

    // An admin fixes the config: the module is back.
    service.set_config("A", r#"{"workers":3}"#, None).unwrap();
    wait_ready(&client).await;
    assert_eq!(config.get().unwrap().workers, 3);
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn refusing_its_own_default_config_says_so() {
    #[derive(
        Debug, Default, serde::Serialize, Deserialize, cluster_client::schemars::JsonSchema,
    )]
    struct Workers {
        workers: u32,
    }
    let (service, listener) = service();
    // `config_data_for` does not know the validation: the default (workers: 0) goes out.
    let config_data = cluster_client::config_data_for::<Workers>("1.0.0").unwrap();
    let client = Client::builder(module("A", "10.0.0.1"), config_data, [listener.url()])
        .connector_arc(listener.connector.clone())
        .build()
        .unwrap();
    let typed = TypedConfig::<Workers>::new().validate(|c: &Workers| {
        if c.workers > 0 {
            Ok(())
        } else {
            Err("workers must be > 0")
        }
    });
    let run = spawn_run(&client, EventHandler::new().remote_config_receiver(typed));
    let state = wait_backing_off(&client).await;
    let shown = state.to_string();
    assert!(shown.contains("workers must be > 0"), "{shown}");
    assert!(
        shown.contains("this is the module's own default config"),
        "{shown}"
    );
    assert!(service.ready_instances("A").is_empty());
    close_and_join(&client, run).await;
}

#[tokio::test(start_paused = true)]
async fn a_round_robin_waits_for_the_required_module() {
    let (service, listener) = service();
    let auth = RoundRobin::default();
    let client = builder(&listener, module("A", "10.0.0.1"), "{}")
        .build()
        .unwrap();
    let run = spawn_run(
        &client,
        EventHandler::new().require_module("auth", auth.clone()),
    );
    wait_ready(&client).await;
    assert_eq!(auth.size(), 0);
    let waiting = tokio::spawn({
        let auth = auth.clone();
        async move { auth.wait_for(2).await }
    });
    let one = service
        .declare_instance(instance("auth", "10.0.0.7", "9000", &[]))
        .await
        .unwrap();
    let _two = service
        .declare_instance(instance("auth", "10.0.0.8", "9000", &[]))
        .await
        .unwrap();
    let hosts = within("two auth hosts", waiting).await.unwrap();
    assert_eq!(hosts.len(), 2);
    assert!(hosts.contains(&"10.0.0.7:9000".to_owned()));
    let mut watch = auth.watch();
    one.remove().await;
    within("one host left", watch.wait_for(|h| h.len() == 1))
        .await
        .unwrap();
    assert_eq!(auth.next().unwrap(), "10.0.0.8:9000");
    close_and_join(&client, run).await;
}
