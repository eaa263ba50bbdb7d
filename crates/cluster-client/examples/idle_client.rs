//! One ready client on a current-thread runtime, idle; prints its `VmRSS` (Linux).
//!
//! `cargo run --release -p cluster-client --example idle_client -- 127.0.0.1:9001 [seconds]`
//! connects to the config service at that host as module `idle` (with a config receiver, a
//! routes receiver and one required module, `A`), waits until it is ready, idles for the given
//! seconds (default 6, so pings run), then prints `RSS_BEFORE_KIB=` (at start), `RSS_READY_KIB=`,
//! `RSS_ANON_KIB=` and `RSS_FILE_KIB=` lines and closes. The `ready` bench runs it to measure the idle memory of
//! a process with one ready client.

use cluster_client::{
    AddressConfiguration, Bytes, Client, ConfigData, EventHandler, ModuleInfo, RoutingConfig,
};
use std::convert::Infallible;
use std::time::Duration;

/// A `kB` field of `/proc/self/status` (`VmRSS`, `RssAnon`, `RssFile`), 0 where unknown.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let before = status_kib("VmRSS");
    let mut args = std::env::args().skip(1);
    let host = args.next().ok_or("usage: idle_client HOST [SECONDS]")?;
    let idle = Duration::from_secs(args.next().map_or(Ok(6), |s| s.parse())?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let module = ModuleInfo {
            module_name: "idle".into(),
            module_version: "1.0.0".into(),
            lib_version: "0.1.0".into(),
            grpc_outer_address: AddressConfiguration::new("127.0.0.3", "9000"),
            ..ModuleInfo::default()
        };
        let config = ConfigData::from_json(
            "1.0.0",
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#,
            r#"{"workers":1}"#,
        )?;
        let handler = EventHandler::new()
            .remote_config_receiver(|_config: Bytes| async { Ok::<(), Infallible>(()) })
            .routes_receiver(|_routes: RoutingConfig| async { Ok::<(), Infallible>(()) })
            .require_module("A", |_hosts: Vec<String>| {});
        let client = Client::new(module, config, [host])?;
        let run = tokio::spawn({
            let client = client.clone();
            async move { client.run(handler).await }
        });
        let mut state = client.state();
        state.wait_for(|s| s.is_ready()).await?;
        tokio::time::sleep(idle).await;
        client.healthcheck()?;
        println!("RSS_BEFORE_KIB={before}");
        println!("RSS_READY_KIB={}", status_kib("VmRSS"));
        println!("RSS_ANON_KIB={}", status_kib("RssAnon"));
        println!("RSS_FILE_KIB={}", status_kib("RssFile"));
        client.close().await;
        run.await??;
        Ok(())
    })
}
