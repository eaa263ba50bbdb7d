//! The client's `cluster_*` metrics, rendered by the Prometheus recorder and read back by a
//! text-format parser, along a session's life against the fake config service: ready, a
//! config refused, one applied, the connection dropped, closed.

use crate::common::*;
use cluster_client::typed::{ConfigOutcome, TypedConfig};
use cluster_client::{Client, ClientState, ConfigData, EventHandler};
use cluster_metrics::prometheus::{self, Prometheus};
use prometheus_parse::{Scrape, Value};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Conf {
    workers: u32,
}

const CONF_SCHEMA: &str = r#"{"type":"object","properties":{"workers":{"type":"integer"}}}"#;

/// The rendered metrics, parsed.
struct Metrics(Scrape);

impl Metrics {
    fn read(prometheus: &Prometheus) -> Self {
        let text = prometheus.render();
        Self(Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap())
    }

    /// The value of `name` with the one label `label` (or none).
    fn get(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let sample = self
            .0
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && match label {
                        Some((k, v)) => s.labels.len() == 1 && s.labels.get(k) == Some(v),
                        None => s.labels.is_empty(),
                    }
            })
            .unwrap_or_else(|| panic!("no {name} {label:?}"));
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    }

    fn state(&self, state: &str) -> f64 {
        self.get("cluster_session_state", Some(("state", state)))
    }

    /// The one state whose gauge is 1 (and every other is 0).
    fn current_state(&self) -> String {
        let states = [
            "idle",
            "connecting",
            "handshaking",
            "ready",
            "backing_off",
            "closed",
        ];
        let on: Vec<&str> = states
            .into_iter()
            .filter(|s| self.state(s) == 1.0)
            .collect();
        assert!(
            states
                .iter()
                .all(|s| self.state(s) == 1.0 || self.state(s) == 0.0)
        );
        assert_eq!(on.len(), 1, "{on:?}");
        on[0].to_owned()
    }

    fn failed(&self, cause: &str) -> f64 {
        self.get("cluster_sessions_failed_count", Some(("cause", cause)))
    }
}

#[test]
fn sessions_configs_and_failures_are_counted() {
    let (prometheus, recorder) = prometheus::build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    // On this thread's runtime, every task of the test records into `recorder`.
    cluster_metrics::metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let (service, listener) = service();
            let typed = TypedConfig::<Conf>::new().validate(|c: &Conf| {
                if c.workers > 0 {
                    Ok(())
                } else {
                    Err("workers must be > 0")
                }
            });
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

            // Built, not run: idle, nothing counted, every series there.
            let m = Metrics::read(&prometheus);
            assert_eq!(m.current_state(), "idle");
            assert_eq!(m.get("cluster_sessions_started_count", None), 0.0);
            assert_eq!(m.get("cluster_config_version", None), 0.0);
            for cause in [
                "connect",
                "ack_timeout",
                "ack_rejected",
                "wait_timeout",
                "server_error",
                "rejected",
                "pongs_missed",
                "disconnected",
            ] {
                assert_eq!(m.failed(cause), 0.0, "{cause}");
            }

            let run = spawn_run(&client, EventHandler::new().remote_config_receiver(typed));
            wait_ready(&client).await;
            let m = Metrics::read(&prometheus);
            assert_eq!(m.current_state(), "ready");
            assert_eq!(m.get("cluster_sessions_started_count", None), 1.0);
            assert_eq!(m.get("cluster_configs_applied_count", None), 1.0);
            assert_eq!(m.get("cluster_configs_refused_count", None), 0.0);
            assert_eq!(m.get("cluster_config_version", None), 1.0);
            assert_eq!(m.get("cluster_time_to_ready_ms_count", None), 1.0);

            // A config the module refuses: counted, the version stays.
            service.set_config("A", r#"{"workers":0}"#, None).unwrap();
            let outcome = config.wait_outcome(2).await;
            assert!(matches!(outcome, Some(ConfigOutcome::Rejected(_))));
            let m = Metrics::read(&prometheus);
            assert_eq!(m.get("cluster_configs_refused_count", None), 1.0);
            assert_eq!(m.get("cluster_configs_applied_count", None), 1.0);
            assert_eq!(m.get("cluster_config_version", None), 1.0);
            assert_eq!(m.current_state(), "ready");

            // One it applies: the version moves on.
            service.set_config("A", r#"{"workers":3}"#, None).unwrap();
            let outcome = config.wait_outcome(3).await;
            assert!(matches!(outcome, Some(ConfigOutcome::Applied(_))));
            let m = Metrics::read(&prometheus);
            assert_eq!(m.get("cluster_configs_applied_count", None), 2.0);
            assert_eq!(m.get("cluster_config_version", None), 2.0);

            // The connection dropped: a failure, by cause, and backing off.
            service.disconnect_module("A").await;
            wait_state(&client, "backing off after the drop", |s| {
                matches!(s, ClientState::BackingOff { failures: 1, .. })
            })
            .await;
            let m = Metrics::read(&prometheus);
            assert_eq!(m.failed("disconnected"), 1.0);
            assert_eq!(m.failed("connect"), 0.0);
            assert_eq!(m.current_state(), "backing_off");

            // Back: a second session, ready again.
            wait_ready(&client).await;
            let m = Metrics::read(&prometheus);
            assert_eq!(m.get("cluster_sessions_started_count", None), 2.0);
            assert_eq!(m.get("cluster_time_to_ready_ms_count", None), 2.0);

            close_and_join(&client, run).await;
            assert_eq!(Metrics::read(&prometheus).current_state(), "closed");
        });
    });
}
