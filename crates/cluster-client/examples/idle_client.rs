//! One ready client, idle; prints its memory (Linux), and what more clients add.
//!
//! `cargo run --release -p cluster-client --example idle_client -- 127.0.0.1:9001 [seconds]
//! [--multi-thread] [--extra N]` connects to the config service at that host as module `idle`
//! (with a config receiver, a routes receiver and one required module, `A`), waits until it is
//! ready, idles for the given seconds (default 6, so pings run), then prints `RSS_BEFORE_KIB=`
//! (at start), `RSS_READY_KIB=`, `RSS_ANON_KIB=` and `RSS_FILE_KIB=` lines and `TASKS=` (the
//! runtime's live tasks). With `--extra N` it then starts N more clients the same way, waits
//! until all are ready, idles again, and prints `EXTRA_ANON_KIB=` and `EXTRA_TASKS=` (the
//! growth for all N), then closes them all. With `--bare N` it opens N bare WebSocket
//! connections to the host instead (the transport alone, no session, each read by one task:
//! the floor any client pays), named module `bare`, and prints `BARE_ANON_KIB=` and
//! `BARE_TASKS=` the same way. The runtime is current-thread unless
//! `--multi-thread` (2 workers, as a service's `#[tokio::main]` on this machine). The `ready`
//! bench runs it for the idle memory of a process with one ready client, the `footprint` bench
//! for what one more client costs.

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

/// Counts the bytes allocated and not yet freed, to tell live data from what the allocator
/// keeps (`HEAP_KIB=` and `EXTRA_HEAP_KIB=` lines).
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a side
// effect only.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_kib() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) / 1024
}

/// What the process holds at one point: private memory, live tasks, live heap.
struct Figures {
    anon: u64,
    tasks: usize,
    heap: usize,
}

impl Figures {
    /// Prints `<PREFIX>=n` and how much each figure grew since `self`.
    fn print_growth(&self, prefix: &str, n: usize) {
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        println!("{prefix}={n}");
        println!(
            "{prefix}_ANON_KIB={}",
            status_kib("RssAnon").saturating_sub(self.anon)
        );
        println!("{prefix}_TASKS={}", tasks.saturating_sub(self.tasks));
        println!("{prefix}_HEAP_KIB={}", heap_kib().saturating_sub(self.heap));
    }
}

const USAGE: &str = "usage: idle_client HOST [SECONDS] [--multi-thread] [--extra N] [--bare N]";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Starts one client of module `idle` at `host`; returns it and its run once it is ready.
async fn ready_client(
    host: &str,
    ip: &str,
) -> Result<
    (
        Client,
        tokio::task::JoinHandle<Result<(), cluster_client::ClientError>>,
    ),
    Error,
> {
    let module = ModuleInfo {
        module_name: "idle".into(),
        module_version: "1.0.0".into(),
        lib_version: "0.1.0".into(),
        grpc_outer_address: AddressConfiguration::new(ip, "9000"),
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
    Ok((client, run))
}

fn main() -> Result<(), Error> {
    let before = status_kib("VmRSS");
    let mut host = None;
    let mut idle = Duration::from_secs(6);
    let mut multi = false;
    let mut extra = 0usize;
    let mut bare = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--multi-thread" => multi = true,
            "--extra" => extra = args.next().ok_or(USAGE)?.parse()?,
            "--bare" => bare = args.next().ok_or(USAGE)?.parse()?,
            _ if host.is_none() => host = Some(arg),
            _ => idle = Duration::from_secs(arg.parse()?),
        }
    }
    let host = host.ok_or(USAGE)?;
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        let (client, run) = ready_client(&host, "127.0.0.3").await?;
        tokio::time::sleep(idle).await;
        client.healthcheck()?;
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let anon = status_kib("RssAnon");
        println!("RSS_BEFORE_KIB={before}");
        println!("RSS_READY_KIB={}", status_kib("VmRSS"));
        println!("RSS_ANON_KIB={anon}");
        println!("RSS_FILE_KIB={}", status_kib("RssFile"));
        println!("TASKS={tasks}");
        let heap = heap_kib();
        println!("HEAP_KIB={heap}");
        let mut more = Vec::with_capacity(extra);
        for i in 0..extra {
            let ip = format!("127.0.{}.{}", 4 + i / 250, 1 + i % 250);
            more.push(ready_client(&host, &ip).await?);
        }
        let base = Figures { anon, tasks, heap };
        if extra > 0 {
            tokio::time::sleep(idle).await;
            base.print_growth("EXTRA", extra);
        }
        let endpoint: cluster_client::Endpoint = host.parse()?;
        let connector =
            cluster_client::transport::ws::WsConnector::new(cluster_client::WsConfig::default())?;
        // Each bare connection reads (one task, as a client's), so what the peer sends lands
        // in its buffers as it would in a client's.
        let mut transports = Vec::with_capacity(bare);
        for _ in 0..bare {
            use cluster_client::Connector;
            let transport = connector.connect(&endpoint, "bare").await?;
            let mut stream = transport.stream;
            let reader = tokio::spawn(async move { while stream.recv().await.is_ok() {} });
            transports.push((transport.sink, reader));
        }
        if bare > 0 {
            tokio::time::sleep(idle).await;
            base.print_growth("BARE", bare);
        }
        for (sink, reader) in transports {
            drop(sink);
            reader.abort();
        }
        for (client, run) in more {
            client.close().await;
            run.await??;
        }
        client.close().await;
        run.await??;
        Ok(())
    })
}
