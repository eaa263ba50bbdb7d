#![allow(unreachable_pub)] // test-only modules
//! The README's headline example runs against the fake config service (in memory, virtual
//! time) and its module becomes ready. `tests/readme/example.rs` is the README's block with
//! three mechanical substitutions; `the_copy_is_the_readme_example` fails as soon as the two
//! differ otherwise, so the README cannot show code that does not work.

#[allow(unused_imports)] // `Client` is used by the README's `Client::new`, substituted here
#[rustfmt::skip] // byte for byte the README's block
#[path = "readme/example.rs"]
mod example;

use cluster_testkit::FakeConfigService;
use cluster_testkit::declared::instance;
use std::time::Duration;

/// Generous virtual-time bound for anything awaited.
const WAIT: Duration = Duration::from_secs(60);

/// What the copy replaces in the README's block, in order.
const SUBSTITUTIONS: [(&str, &str); 3] = [
    ("#[tokio::main]\nasync fn main()", "pub async fn main()"),
    ("Client::new(", "super::harness::client_new("),
    ("tokio::signal::ctrl_c()", "super::harness::ctrl_c()"),
];

/// What the example calls instead of dialing the hosts and waiting for Ctrl-C.
mod harness {
    use cluster_client::transport::{Connector, Endpoint, Transport, TransportError};
    use cluster_client::{Client, ClientError, ConfigData, ModuleInfo, async_trait};
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;

    /// The fake service to dial and the test's Ctrl-C, for the example on this thread.
    pub struct Env {
        pub connector: Arc<dyn Connector>,
        pub target: Endpoint,
        pub ctrl_c: Option<oneshot::Receiver<()>>,
        pub dialed: Arc<Mutex<Vec<String>>>,
    }

    thread_local! {
        static ENV: RefCell<Option<Env>> = const { RefCell::new(None) };
    }

    pub fn install(env: Env) {
        ENV.with(|e| *e.borrow_mut() = Some(env));
    }

    /// Dials the fake service whatever the host, recording the host asked for.
    struct Redirect {
        inner: Arc<dyn Connector>,
        target: Endpoint,
        dialed: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Connector for Redirect {
        async fn connect(
            &self,
            endpoint: &Endpoint,
            module_name: &str,
        ) -> Result<Transport, TransportError> {
            self.dialed.lock().unwrap().push(endpoint.to_string());
            self.inner.connect(&self.target, module_name).await
        }
    }

    /// `Client::new`, with the hosts checked as given and every dial sent to the fake service.
    pub fn client_new<const N: usize>(
        module: ModuleInfo,
        config_data: ConfigData,
        hosts: [&str; N],
    ) -> Result<Client, ClientError> {
        let redirect = ENV.with(|e| {
            let env = e.borrow();
            let env = env.as_ref().expect("harness installed");
            Redirect {
                inner: env.connector.clone(),
                target: env.target.clone(),
                dialed: env.dialed.clone(),
            }
        });
        Client::builder(module, config_data, hosts)
            .connector(redirect)
            .build()
    }

    /// `tokio::signal::ctrl_c`, resolved by the test.
    pub async fn ctrl_c() -> std::io::Result<()> {
        let rx = ENV.with(|e| e.borrow_mut().as_mut().and_then(|env| env.ctrl_c.take()));
        match rx {
            Some(rx) => rx.await.map_err(std::io::Error::other),
            None => std::future::pending().await,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_readme_example_becomes_ready_against_the_fake_service() {
    let service = FakeConfigService::new();
    let listener = service.listen_memory().unwrap();
    // The example requires `auth`: one ready instance, without a second client.
    let _auth = service
        .declare_instance(instance("auth", "10.0.0.7", "9000", &["auth/api/login"]))
        .await
        .unwrap();
    let (ctrl_c, signal) = tokio::sync::oneshot::channel();
    let dialed = std::sync::Arc::default();
    harness::install(harness::Env {
        connector: listener.connector.clone(),
        target: listener.endpoint(),
        ctrl_c: Some(signal),
        dialed: std::sync::Arc::clone(&dialed),
    });

    let check = async {
        let ready = service
            .wait_ready_instances("orders", 1, WAIT)
            .await
            .unwrap();
        assert_eq!(ready[0].address.to_string(), "10.0.0.5:9000");
        // The service stored the example's default config, which its validation accepts.
        let stored = service.active_config("orders").unwrap();
        assert_eq!(stored.json()["workers"], 4);
        ctrl_c.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(example::main(), check);
    result.unwrap();
    // `run_until` closed the client when the example's future ended.
    service.wait_connections("orders", 0, WAIT).await.unwrap();
    let dialed = dialed.lock().unwrap().clone();
    assert!(
        dialed[0] == "ws://10.0.0.1:9001" || dialed[0] == "ws://10.0.0.2:9001",
        "{dialed:?}"
    );
}

#[test]
fn the_copy_is_the_readme_example() {
    let readme = include_str!("../README.md");
    let section = readme
        .find("## A short example")
        .expect("the README has its example section");
    let open = "```rust,no_run\n";
    let start = readme[section..].find(open).expect("a rust block") + section + open.len();
    let end = readme[start..].find("\n```").expect("the block ends") + start + 1;
    let mut expected = readme[start..end].to_owned();
    for (from, to) in SUBSTITUTIONS {
        assert_eq!(
            expected.matches(from).count(),
            1,
            "the README example must contain {from:?} exactly once"
        );
        expected = expected.replace(from, to);
    }
    let copy: String = include_str!("readme/example.rs")
        .lines()
        .skip_while(|line| line.starts_with("//"))
        .flat_map(|line| [line, "\n"])
        .collect();
    assert!(
        copy == expected,
        "tests/readme/example.rs is not the README example with the substitutions; \
         copy the README block again. Expected:\n{expected}"
    );
}
