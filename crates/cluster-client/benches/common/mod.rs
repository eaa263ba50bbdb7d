//! What the client's benches share: a fake config service on loopback WebSocket with one ready
//! instance of the required module `A`, and the `idle_client` example binary.
// Each bench uses a part of it.
#![allow(dead_code)]

use cluster_client::{
    AddressConfiguration, Client, ClientError, ConfigData, EventHandler, ModuleInfo,
};
use cluster_testkit::FakeConfigService;
use tokio::task::JoinHandle;

/// A module named `name` at `ip`:9000.
pub(crate) fn module(name: &str, ip: &str) -> ModuleInfo {
    ModuleInfo {
        module_name: name.to_owned(),
        module_version: "1.0.0".to_owned(),
        lib_version: "0.1.0".to_owned(),
        grpc_outer_address: AddressConfiguration::new(ip, "9000"),
        ..ModuleInfo::default()
    }
}

/// Waits until `client` is ready.
pub(crate) async fn until_ready(client: &Client) {
    let mut state = client.state();
    state
        .wait_for(|s| s.is_ready())
        .await
        .expect("client state");
}

/// A fake config service listening on loopback WebSocket, with module `A` ready.
pub(crate) struct WithA {
    pub(crate) service: FakeConfigService,
    /// The service's `host:port`.
    pub(crate) host: String,
    a: Client,
    run_a: JoinHandle<Result<(), ClientError>>,
}

impl WithA {
    /// Starts the service and a client of `A` (with `config`), and waits until it is ready.
    pub(crate) async fn start(config: ConfigData) -> Self {
        let service = FakeConfigService::builder().recording(false).build();
        let addr = service.listen_ws("127.0.0.1:0").await.expect("listen");
        let host = addr.to_string();
        let a =
            Client::new(module("A", "127.0.0.2"), config, [host.clone()]).expect("valid settings");
        let run_a = tokio::spawn({
            let a = a.clone();
            async move { a.run(EventHandler::new()).await }
        });
        until_ready(&a).await;
        Self {
            service,
            host,
            a,
            run_a,
        }
    }

    /// Closes `A`'s client.
    pub(crate) async fn close(self) {
        self.a.close().await;
        self.run_a.await.expect("run task").expect("run");
    }
}

/// The `idle_client` example next to the running bench (`target/<profile>/examples/`).
pub(crate) fn idle_client_exe() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let path = dir.join("examples").join("idle_client");
    path.exists().then_some(path)
}
