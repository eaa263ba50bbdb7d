//! What the client costs a service: the private memory and tasks one more ready client adds
//! to a process that already runs a multi-threaded tokio runtime, against the floor of one
//! more bare WebSocket connection (the transport alone, no session) measured in the same run;
//! the private memory of a process with one ready client (multi-thread and current-thread);
//! and the size of that release binary.
//!
//! `cargo bench -p cluster-client --bench footprint` prints the figures. `FOOTPRINT_CLIENTS`
//! (default `40,200`) sets how many more clients are started, one measurement per count;
//! `FOOTPRINT_RUNS` (default 3) how many times each child runs (the median is printed).
//!
//! Why two counts: every client here takes the routing table, and every client that joins
//! adds an instance to it: with 40 more clients the table is a few KiB, with 200 it is ~35 KiB.
//! With tokio-websockets, which kept each connection's read buffer at the largest message it
//! read, that buffer was most of the figure at 200 (76 KiB per client); the WebSocket layer now
//! holds no buffer while idle, so both counts cost about the same. The floor is given the same
//! traffic: each bare connection receives one message of the size of the largest routing table
//! the clients received (an `ERROR_CONNECTION` event the fake service sends to them) before the
//! child measures.
//!
//! The clients run in a child process, the `idle_client` example (build it first:
//! `cargo build --release -p cluster-client --example idle_client`; the bench says so), so
//! that the fake config service (in this process) is not counted. Private memory is `RssAnon`
//! from `/proc/self/status`: what the process allocated and touched, without the file-backed
//! pages of its code, which every process running the same binary shares.

mod common;

use cluster_client::proto::payload::encode_routing_config;
use cluster_client::{AddressConfiguration, ConfigData, ModuleInfo};
use cluster_testkit::ErrorEvent;
use common::{WithA, idle_client_exe};
use std::collections::HashMap;
use std::time::Duration;

/// The length of the routing table of `instances` instances like the `idle_client` example's.
fn routing_table_len(instances: usize) -> usize {
    let info = ModuleInfo {
        module_name: "idle".into(),
        module_version: "1.0.0".into(),
        lib_version: "0.1.0".into(),
        grpc_outer_address: AddressConfiguration::new("127.0.4.100", "9000"),
        ..ModuleInfo::default()
    };
    let declarations = vec![info.backend_declaration(["A"]); instances];
    encode_routing_config(&declarations).len()
}

fn main() {
    let counts: Vec<usize> = std::env::var("FOOTPRINT_CLIENTS")
        .unwrap_or_else(|_| "40,200".to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("FOOTPRINT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let Some(exe) = idle_client_exe() else {
        println!(
            "no idle_client example binary: build it with \
             `cargo build --release -p cluster-client --example idle_client`"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Module `A` is ready, so the clients' required module has an address.
        let with_a =
            WithA::start(ConfigData::from_json("1.0.0", "{}", "{}").expect("config")).await;
        let (service, host) = (&with_a.service, with_a.host.clone());

        let mut one = HashMap::new();
        for clients in counts {
            let n = clients.to_string();
            let extra = median_of(runs, &exe, &host, &["--multi-thread", "--extra", &n]).await;
            // The floor's connections get one message as long as the largest routing table.
            let table = "x".repeat(routing_table_len(clients + 2));
            let feed = async {
                for _ in 0..runs.max(1) {
                    if service
                        .wait_connections("bare", clients, Duration::from_secs(60))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    service.send_error("bare", ErrorEvent::Connection, &table);
                    let _ = service
                        .wait_connections("bare", 0, Duration::from_secs(60))
                        .await;
                }
            };
            let bare_args = ["--multi-thread", "--bare", n.as_str()];
            let (bare, ()) = tokio::join!(median_of(runs, &exe, &host, &bare_args), feed);
            let per = |v: Option<u64>| v.map_or(f64::NAN, |v| v as f64 / clients as f64);
            let client_kib = per(extra.get("EXTRA_ANON_KIB=").copied());
            let bare_kib = per(bare.get("BARE_ANON_KIB=").copied());
            println!(
                "one more ready client, idle, in a multi_thread(2) process ({clients} more, median of {runs} runs):"
            );
            println!(
                "  private memory {client_kib:.1} KiB / client  (floor, one more bare WebSocket connection that received one {} KiB message: {bare_kib:.1} KiB; ours/floor {:.2}x)",
                table.len() / 1024,
                client_kib / bare_kib
            );
            println!(
                "  of which live heap {:.1} KiB / client  (floor: {:.1} KiB); the rest is what the allocator keeps",
                per(extra.get("EXTRA_HEAP_KIB=").copied()),
                per(bare.get("BARE_HEAP_KIB=").copied())
            );
            println!(
                "  tasks {:.2} / client  (floor: {:.2})",
                per(extra.get("EXTRA_TASKS=").copied()),
                per(bare.get("BARE_TASKS=").copied())
            );
            one = extra;
        }
        let current = median_of(runs, &exe, &host, &[]).await;
        for (label, figures) in [
            ("multi_thread(2)", &one),
            ("current_thread", &current),
        ] {
            println!(
                "process with one ready client, idle ({label}): private (RssAnon) {} KiB, file-backed {} KiB, VmRSS {} KiB",
                show(figures.get("RSS_ANON_KIB=")),
                show(figures.get("RSS_FILE_KIB=")),
                show(figures.get("RSS_READY_KIB=")),
            );
        }
        let size = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0);
        println!(
            "idle_client release binary: {:.2} MiB ({})",
            size as f64 / (1024.0 * 1024.0),
            exe.display()
        );
        with_a.close().await;
    });
}

fn show(v: Option<&u64>) -> String {
    v.map_or_else(|| "?".to_owned(), ToString::to_string)
}

/// Runs the child `runs` times with `args`; the median of each `KEY=value` figure it printed.
async fn median_of(
    runs: usize,
    exe: &std::path::Path,
    host: &str,
    args: &[&str],
) -> HashMap<String, u64> {
    let mut all: HashMap<String, Vec<u64>> = HashMap::new();
    for _ in 0..runs.max(1) {
        let out = child(exe, host, args).await;
        for line in out.lines() {
            if let Some((key, value)) = line.split_once('=')
                && let Ok(value) = value.parse()
            {
                all.entry(format!("{key}=")).or_default().push(value);
            }
        }
    }
    all.into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            (k, v[v.len() / 2])
        })
        .collect()
}

async fn child(exe: &std::path::Path, host: &str, args: &[&str]) -> String {
    let mut command = std::process::Command::new(exe);
    command.arg(host).arg("3").args(args);
    tokio::task::spawn_blocking(move || {
        let out = command.output().expect("spawn idle_client");
        if !out.status.success() {
            eprintln!(
                "idle_client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("child")
}
