//! Scale bench: N module sessions against one `fake-config-service` process, over loopback
//! WebSocket. It prints its figures; it is not a test.
//! The Go stack's figures and the floors to compare with: `docs/performance.md`.
//!
//! For each N (default 1,000 then 10,000):
//! 1. starts the `fake-config-service` binary (a fresh process, `RUST_LOG=warn`) on
//!    `127.0.0.1:0`, and one instance of module `dep` that goes ready;
//! 2. runs N sessions of module `bench` in this process, each scripted as the Go client:
//!    connect, `MODULE:SEND_CONFIG_SCHEMA` (ack), `MODULE:SEND_REQUIREMENTS` requiring `dep`
//!    (ack), wait for its config and `dep`'s address list, `MODULE:READY` (ack). By default
//!    all N sessions start at once (a burst, as after a restart of the service);
//!    `SCALE_CONCURRENCY=128` lets at most 128 be in their handshake at once. A session
//!    whose connect is refused or reset (the server closes sockets past its cap of pending
//!    handshakes, 1,024) dials again after a pause, as a module does; the bench prints those
//!    redials and the kernel's listen-queue overflow and SYN-cookie counts;
//!    it reports the wall time until all N are ready, the per-session handshake time, and the
//!    server's RSS growth per connection (`/proc/<pid>/statm`, before the sessions, once all
//!    are ready, and again after a quiet pause of 2 s: what stays once the burst's transient
//!    memory went back);
//! 3. fan-out: after one warm-up round, `SCALE_ROUNDS` times (default 30), changes `bench`'s
//!    config through the admin API (`PUT /modules/bench/config`, on one kept-alive HTTP
//!    connection, as the floor's control connection below) and measures the time from
//!    sending the request until the last of the N connections had the change (every change
//!    has the same size on the wire);
//! 4. SIGTERM to the server: the time until it has closed all N connections and exited.
//!
//! 5. the loopback floors of step 3, for comparison: the same N and rounds, with nothing but
//!    tokio and TCP. Each floor is two more processes, this bench executable re-executed:
//!    a `floor-server`, which accepts one control connection and plain TCP connections on
//!    127.0.0.1 and, whenever the control connection sends a byte, writes as many bytes as
//!    our fan-out frame has on the wire (the WebSocket frame of `CONFIG:SEND_CONFIG_CHANGED`,
//!    header included) to every connection; and `floor-clients`, which holds the control
//!    connection and N clients (a process of its own, as our sessions are, with the same
//!    runtime of 2 workers) and, for each round asked on its stdin, sends the byte and
//!    answers with the time until the last connection had read them all. Two shapes of
//!    server: `direct` (one task writes to the N sockets in turn) and `tasks` (one writer
//!    task per connection, woken through its own channel: the shape of the service's
//!    per-connection queues). Each floor client sends one byte once connected and waits for
//!    the server's byte (dialing again past a second without it): in a burst the SYN queue
//!    fills, the kernel answers with SYN cookies and keeps no state, and a client that only
//!    waited to read would wait forever if its final ACK was dropped (it was: 1,000 silent
//!    clients connecting at once left ~200 never accepted); data carries the ACK again. The
//!    floor server answers each connection's byte in a task of its own and never counts
//!    its connections (a client that gave up on one may leave it behind, taken later): the
//!    clients know when all N are in.
//!
//! The rounds of step 3 and of the two floors are interleaved (ours, `direct`, `tasks`, each
//! iteration starting one further along), all three sets of connections open at once, so
//! that what else runs on this shared machine weighs on the three alike: run after run, the
//! floors moved by a third (47–68 ms at N = 10,000) when each ran on its own a minute apart,
//! and the ratio with them. It prints our p50 over each floor's, and the CPU per round of
//! each side's server and clients processes.
//!
//! Each process raises its soft open-file limit to the hard one (20,000 here: no process
//! holds more than N connections).
//!
//! # Targets, and where the floors are
//! - Memory: the aim is at most 8 KiB of server RSS per connection, all-ready and settled:
//!   met since the WebSocket layer holds no buffer while a connection is idle (it was 9–10 KiB
//!   with tokio-websockets' 8 KiB read buffer per connection, 4 KiB of it touched). What one
//!   connection holds now: the ETP runtime's shared state and its two tasks, the WebSocket
//!   halves (an idle reader waits by polling them, with no boxed future), the service's entries (the connection's state, its
//!   ready instance, the reaper's future), and what the allocator keeps of the burst's
//!   transient handshake memory, less so the larger N.
//! - Fan-out: the aim is at most 1.2 times the `tasks` floor. Met by the medians (2026-11-27,
//!   interleaved rounds; `docs/performance.md` has each run): N = 10,000 1.15 (14 runs, 0.96–1.24),
//!   N = 1,000 1.18 (13 runs, 1.03–1.25). The same bench against the library before this
//!   round of work, run for run beside it: at N = 10,000 medians 1.27 and 1.23 (two sets of 6
//!   runs; ours 1.20 and 1.15 in the same sets, the first before `poll_recv` below); at
//!   N = 1,000 1.19 against 1.13 (5 runs of 15 rounds).
//!   What took it there:
//!   - the sessions share one handler table, as each module process has one (see
//!     [`handlers`]): a table per session, out of the cache at each event, was 8% of the
//!     clients' CPU, a cost no module pays;
//!   - the reader's stop is a flag and a waker in the connection's shared state, not a
//!     oneshot channel polled twice per message (4% of the clients' CPU);
//!   - the reader waits by polling the WebSocket stream (`MessageStream::poll_recv`), not
//!     through a boxed `recv` future per message (~6%);
//!   - a lone frame is written with `send`, not a `writev` of one buffer (the VFS layer of
//!     `writev` was ~4% of the service's CPU more than `sendto`'s);
//!   - the fields a send and a read touch come first in the connection's state, the outbox
//!     and the WebSocket socket, and the sink's per-frame check reads a flag beside the lock.
//!
//!   What is left is structure, not one hot spot: per message, one of our clients finds four
//!   structures out of the cache (its task, the connection's shared state, the stream's box,
//!   the socket's shared state) where a floor client finds two (its task and tokio's I/O
//!   slot); per connection, the service's task and the writer task both touch the outbox and
//!   the socket, and the WebSocket layer allocates the frame's write buffer, where the floor
//!   pushes into a channel. Profiles: 66–74% of the service's CPU is the kernel's loopback
//!   send (which also does the receiving side's TCP work), against 80–85% for the floor's.
//!
//!   Other ways to write a fan-out, measured (2026-11-27), against the shape kept, where the
//!   service's task feeds each idle connection and that connection's writer task writes:
//!   - every write from the service's task (one thread, as the `direct` floor): 104 ms
//!     against 74 (one run at N = 10,000), server CPU 100 ms per round, since a loopback
//!     write also does the receiving side's TCP work on the writing thread;
//!   - the same up to tokio's cooperative budget, then the writer tasks: 66 ms against 74
//!     (one run), by less than the noise between runs then, and at the price of an API whose
//!     behaviour hangs on tokio's budget: not kept;
//!   - every encoded frame only queued, fed and written by the writer tasks: 84 ms against
//!     74 (one run); then, with interleaved rounds, 5 runs each alternating with the shape
//!     kept: median 1.19 of the floor against 1.13;
//!   - a lone frame held as its header and a reference to its payload, without a write
//!     buffer (no allocation per connection): 1.28 and 1.33 against 1.18 and 1.19, likely
//!     because the shared frame's reference count then moves between the workers for each
//!     connection (and two slices take a `writev`).
//!
//! `cargo bench -p cluster-testkit --bench scale`; `SCALE_N=1000,5000` picks the sizes,
//! `SCALE_ROUNDS` the rounds of each side.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use cluster_etp::{Conn, ConnConfig, Handlers, Reply};
use cluster_proto::{event, frame};
use cluster_transport::ws::{WsConfig, WsConnector};
use cluster_transport::{Connector, Endpoint};
use common::ChildGuard;
use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

const WAIT: Duration = Duration::from_secs(30);
/// The quiet pause before the settled memory figure.
const SETTLE: Duration = Duration::from_secs(2);
const SCHEMA: &[u8] =
    br#"{"version":"1.0.0","schema":{"type":"object"},"config":{"round":0,"pad":"0123456789"}}"#;
const REQUIREMENTS: &[u8] = br#"{"requiredModules":["dep"],"requireRoutes":false}"#;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn env_usize(name: &str, default: usize) -> usize {
    env_list(name, &[default])[0]
}

/// Raises the soft open-file limit to the hard one; returns the soft limit after.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; the soft limit may rise up to the hard one.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
    }
    limit.rlim_cur
}

fn rss_bytes(pid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// CPU time (user + system) of process `pid`, from `/proc/<pid>/stat` (clock ticks).
fn cpu_of(pid: u32) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz.max(1))
}

/// CPU time (user + system) of this process.
fn own_cpu() -> Duration {
    // SAFETY: `usage` is a valid, writable rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A counter of the kernel's TCP extensions (`TcpExt:` in `/proc/net/netstat`), 0 if absent.
fn tcp_ext(counter: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let at = names.split_whitespace().position(|n| n == counter);
        return at
            .and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
            .unwrap_or(0);
    }
    0
}

/// The kernel's count of connections dropped because a listen queue was full.
fn listen_overflows() -> u64 {
    tcp_ext("ListenOverflows")
}

/// The kernel's count of SYN cookies sent (SYNs answered without a queued request, because
/// the listener's SYN queue was full).
fn syncookies_sent() -> u64 {
    tcp_ext("SyncookiesSent")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// The server process; killed if the bench fails before it stopped it.
struct Server {
    child: ChildGuard,
    pid: u32,
    ws: SocketAddr,
    admin: SocketAddr,
}

impl Server {
    fn start() -> Self {
        let mut child = common::spawn_service_binary(Stdio::inherit());
        let stdout = child.stdout.take().expect("stdout");
        let lines: Vec<String> = std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map_while(Result::ok)
            .collect();
        let (ws, admin) = common::bound_addresses(&lines);
        Self {
            pid: child.id(),
            ws,
            admin,
            child: ChildGuard(Some(child)),
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.0.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        child.wait().ok()?.code()
    }
}

/// An HTTP/1.1 connection to the admin API, kept open across requests (as the floor's control
/// connection is): a round's time is then the service's, not a TCP handshake's.
struct Admin {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    addr: SocketAddr,
}

impl Admin {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        Self {
            stream: tokio::io::BufReader::new(stream),
            addr,
        }
    }

    /// One request; returns the status and the body.
    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&request)
            .await
            .expect("write");
        let mut status = 0;
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.expect("read");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some(code) = header.strip_prefix("HTTP/1.1 ") {
                status = code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            } else if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Counts config changes arriving at the N connections of a round.
struct FanOut {
    arrived: AtomicUsize,
    target: usize,
    last: Mutex<Option<Instant>>,
    done: Notify,
    /// The size of the last change's payload (bytes).
    payload: AtomicUsize,
}

impl FanOut {
    fn new(target: usize) -> Self {
        Self {
            arrived: AtomicUsize::new(0),
            target,
            last: Mutex::new(None),
            done: Notify::new(),
            payload: AtomicUsize::new(0),
        }
    }

    fn arrive(&self) {
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            *self.last.lock().expect("lock") = Some(Instant::now());
            self.done.notify_one();
        }
    }
}

/// What one session has received so far.
#[derive(Default)]
struct Progress {
    config: AtomicBool,
    hosts: AtomicBool,
    failed: Mutex<Option<String>>,
    changed: Notify,
}

/// The sessions' progress by connection id, for the handlers all sessions share.
#[derive(Default)]
struct Sessions(Mutex<HashMap<u64, Arc<Progress>>>);

impl Sessions {
    /// The progress of `conn`'s session (made by whichever comes first: the session or its
    /// first event).
    fn of(&self, conn: &Conn) -> Arc<Progress> {
        self.0
            .lock()
            .expect("lock")
            .entry(conn.id())
            .or_default()
            .clone()
    }
}

/// One handler table for all N sessions, as each module process has one. A table per session
/// (a map, its keys and closures) would be out of the cache at every event of a fan-out to
/// 10,000 sessions in one process: a cost a module, whose one connection's table stays warm,
/// does not pay, and which the floor's clients do not have (their profile had the lookup at
/// 8% of the clients' CPU).
fn handlers(sessions: &Arc<Sessions>, fan_out: &Arc<FanOut>) -> Handlers {
    let on = |flag: fn(&Progress) -> &AtomicBool| {
        let sessions = sessions.clone();
        move |conn: &Conn, _: Bytes| {
            let progress = sessions.of(conn);
            flag(&progress).store(true, Ordering::Release);
            progress.changed.notify_one();
            Reply::default()
        }
    };
    let on_error = {
        let sessions = sessions.clone();
        move |conn: &Conn, data: Bytes| {
            let progress = sessions.of(conn);
            *progress.failed.lock().expect("lock") =
                Some(String::from_utf8_lossy(&data).into_owned());
            progress.changed.notify_one();
            Reply::default()
        }
    };
    let fan_out = fan_out.clone();
    Handlers::new()
        .on("CONFIG:SEND_CONFIG_WHEN_CONNECTED", on(|p| &p.config))
        .on("dep_MODULE_CONNECTED", on(|p| &p.hosts))
        .on(event::CONFIG_SEND_CONFIG_CHANGED, move |_, data: Bytes| {
            fan_out.payload.store(data.len(), Ordering::Relaxed);
            fan_out.arrive();
            Reply::default()
        })
        .on("ERROR_CONFIG", on_error.clone())
        .on("ERROR_CONNECTION", on_error)
}

/// One module session, scripted as the Go client; returns the connection once ready.
async fn session(
    connector: Arc<dyn Connector>,
    endpoint: Endpoint,
    index: usize,
    handlers: Handlers,
    sessions: Arc<Sessions>,
    redials: Arc<AtomicUsize>,
) -> Result<Conn, String> {
    // As a module does: a refused or reset connect is dialed again after a pause. In a burst
    // the server closes sockets past its cap of pending handshakes
    // (`WsServerConfig::max_pending_handshakes`) at once.
    let given_up = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(10);
    let transport = loop {
        match connector.connect(&endpoint, "bench").await {
            Ok(transport) => break transport,
            Err(e) if Instant::now() + pause > given_up => return Err(format!("connect: {e}")),
            Err(_) => {
                redials.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    };
    let conn = Conn::spawn(transport, handlers, ConnConfig::default());
    let progress = sessions.of(&conn);
    let ack = |event: &'static str, data: Vec<u8>| {
        let conn = conn.clone();
        async move {
            match conn.emit_with_ack_timeout(event, &data, WAIT).await {
                Ok(ack) if &ack[..] == b"ok" => Ok(()),
                Ok(ack) => Err(format!("{event}: {}", String::from_utf8_lossy(&ack))),
                Err(e) => Err(format!("{event}: {e}")),
            }
        }
    };
    ack("MODULE:SEND_CONFIG_SCHEMA", SCHEMA.to_vec()).await?;
    ack("MODULE:SEND_REQUIREMENTS", REQUIREMENTS.to_vec()).await?;
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(error) = progress.failed.lock().expect("lock").clone() {
                return Err(error);
            }
            if progress.config.load(Ordering::Acquire) && progress.hosts.load(Ordering::Acquire) {
                return Ok(());
            }
            progress.changed.notified().await;
        }
    })
    .await;
    waited.map_err(|_| "no config or address list".to_owned())??;
    let ready = format!(
        r#"{{"moduleName":"bench","version":"1.0.0","libVersion":"1.0.0","endpoints":null,"requiredModules":[{{"name":"dep","required":true}}],"address":{{"ip":"127.0.0.2","port":"{}"}}}}"#,
        10_000 + index
    );
    ack("MODULE:READY", ready.into_bytes()).await?;
    Ok(conn)
}

async fn dep_instance(connector: &Arc<dyn Connector>, endpoint: &Endpoint) -> Conn {
    let transport = connector.connect(endpoint, "dep").await.expect("dep");
    let conn = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
    for (event, data) in [
        ("MODULE:SEND_CONFIG_SCHEMA", &br#"{"version":"1","schema":{},"config":{}}"#[..]),
        ("MODULE:SEND_REQUIREMENTS", br#"{"requiredModules":[],"requireRoutes":false}"#),
        (
            "MODULE:READY",
            br#"{"moduleName":"dep","version":"1","libVersion":"1","endpoints":null,"requiredModules":[],"address":{"ip":"127.0.0.3","port":"9000"}}"#,
        ),
    ] {
        let ack = conn.emit_with_ack_timeout(event, data, WAIT).await.expect("dep ack");
        assert_eq!(&ack[..], b"ok", "{event}");
    }
    conn
}

/// One round's figures.
#[derive(Clone, Copy, Default)]
struct Round {
    /// From the trigger until the last connection had the change (ms).
    ms: f64,
    /// CPU time of the server process and of the clients' process in the round.
    server_cpu: Duration,
    client_cpu: Duration,
}

/// The figures of one side's rounds, printed as one line.
#[derive(Default)]
struct Rounds(Vec<Round>);

impl Rounds {
    fn p50(&self) -> f64 {
        let mut all: Vec<f64> = self.0.iter().map(|r| r.ms).collect();
        all.sort_by(f64::total_cmp);
        percentile(&all, 0.5)
    }

    /// `p50 … ms (min …, max …); CPU per round: server … ms, clients … ms`.
    fn describe(&self) -> String {
        let mut all: Vec<f64> = self.0.iter().map(|r| r.ms).collect();
        all.sort_by(f64::total_cmp);
        let per_round = |cpu: Duration| ms(cpu) / self.0.len().max(1) as f64;
        format!(
            "p50 {:.2} ms (min {:.2}, max {:.2}); CPU per round: server {:.1} ms, clients {:.1} ms",
            percentile(&all, 0.5),
            percentile(&all, 0.0),
            percentile(&all, 1.0),
            per_round(self.0.iter().map(|r| r.server_cpu).sum()),
            per_round(self.0.iter().map(|r| r.client_cpu).sum()),
        )
    }
}

/// Our side: the service process, its `dep` instance, the N ready sessions (in this process)
/// and the admin connection that makes the changes.
struct Ours {
    n: usize,
    server: Server,
    dep: Conn,
    conns: Vec<Conn>,
    fan_out: Arc<FanOut>,
    admin: Admin,
    /// When the PUT was answered, per round (ms).
    answered: Vec<f64>,
    rounds: Rounds,
    /// Rounds made so far (the config carries the number).
    made: usize,
}

impl Ours {
    /// Steps 1 and 2: starts the service and brings the N sessions to ready; prints the
    /// handshake and memory figures.
    async fn start(n: usize, concurrency: usize) -> Self {
        let server = Server::start();
        eprintln!("scale N={n}: server pid {}", server.pid);
        let connector: Arc<dyn Connector> =
            Arc::new(WsConnector::new(WsConfig::default()).expect("connector"));
        let endpoint: Endpoint = server.ws.to_string().parse().expect("endpoint");
        let dep = dep_instance(&connector, &endpoint).await;
        let rss_before = rss_bytes(server.pid);

        let fan_out = Arc::new(FanOut::new(n));
        let sessions = Arc::new(Sessions::default());
        let handlers = handlers(&sessions, &fan_out);
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let redials = Arc::new(AtomicUsize::new(0));
        let (server_cpu, client_cpu, overflows, cookies) = (
            cpu_of(server.pid),
            own_cpu(),
            listen_overflows(),
            syncookies_sent(),
        );
        let started = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|index| {
                let connector = connector.clone();
                let endpoint = endpoint.clone();
                let handlers = handlers.clone();
                let sessions = sessions.clone();
                let gate = gate.clone();
                let redials = redials.clone();
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await.expect("gate");
                    let begun = Instant::now();
                    let conn =
                        session(connector, endpoint, index, handlers, sessions, redials).await?;
                    Ok::<_, String>((conn, begun.elapsed()))
                })
            })
            .collect();
        let mut conns = Vec::with_capacity(n);
        let mut handshakes = Vec::with_capacity(n);
        let mut failures = Vec::new();
        for task in tasks {
            match task.await.expect("session task") {
                Ok((conn, took)) => {
                    conns.push(conn);
                    handshakes.push(took.as_secs_f64() * 1e3);
                }
                Err(e) => failures.push(e),
            }
        }
        let ready_in = started.elapsed();
        assert!(
            failures.is_empty(),
            "{} of {n} sessions failed, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        let rss_ready = rss_bytes(server.pid);
        let (server_cpu, client_cpu, overflows, cookies) = (
            cpu_of(server.pid) - server_cpu,
            own_cpu() - client_cpu,
            listen_overflows() - overflows,
            syncookies_sent() - cookies,
        );
        // What stays once the burst's transient memory went back (allocators return freed
        // pages after a delay): the same figure after a quiet pause.
        tokio::time::sleep(SETTLE).await;
        let rss_settled = rss_bytes(server.pid);
        let per_conn_settled = rss_settled.saturating_sub(rss_before) as f64 / n as f64;
        handshakes.sort_by(f64::total_cmp);
        let per_conn = rss_ready.saturating_sub(rss_before) as f64 / n as f64;
        println!(
            "scale N={n}: all ready in {:.3} s ({:.0} sessions/s; at most {concurrency} in handshake); \
             handshake p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; CPU: server {:.0} ms, clients {:.0} ms; \
             listen queue overflows {overflows}, SYN cookies sent {cookies}, redials {}",
            ready_in.as_secs_f64(),
            n as f64 / ready_in.as_secs_f64(),
            percentile(&handshakes, 0.5),
            percentile(&handshakes, 0.99),
            percentile(&handshakes, 1.0),
            ms(server_cpu),
            ms(client_cpu),
            redials.load(Ordering::Relaxed),
        );
        println!(
            "scale N={n}: server RSS {:.1} MiB -> {:.1} MiB: {:.0} B ({:.2} KiB) per connection; \
             {:.0} ms later {:.1} MiB: {:.2} KiB per connection",
            mib(rss_before),
            mib(rss_ready),
            per_conn,
            per_conn / 1024.0,
            ms(SETTLE),
            mib(rss_settled),
            per_conn_settled / 1024.0,
        );
        let admin = Admin::connect(server.admin).await;
        Self {
            n,
            server,
            dep,
            conns,
            fan_out,
            admin,
            answered: Vec::new(),
            rounds: Rounds::default(),
            made: 0,
        }
    }

    /// One round of step 3: changes the config, waits until every connection had it.
    async fn round(&mut self) -> Round {
        let (n, fan_out) = (self.n, &self.fan_out);
        let cpu_before = (cpu_of(self.server.pid), own_cpu());
        fan_out.arrived.store(0, Ordering::Release);
        *fan_out.last.lock().expect("lock") = None;
        let done = fan_out.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        self.made += 1;
        // Seven digits in every round: each change has the size the floors send.
        let config = format!(
            r#"{{"round":{},"pad":"0123456789"}}"#,
            1_000_000 + self.made
        );
        let sent = Instant::now();
        let (status, body) = self
            .admin
            .request("PUT", "/modules/bench/config", config.as_bytes())
            .await;
        self.answered.push(ms(sent.elapsed()));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"notified\":{n}")), "{body}");
        tokio::time::timeout(WAIT, done)
            .await
            .expect("the change did not reach every connection");
        let last = fan_out.last.lock().expect("lock").expect("last arrival");
        Round {
            ms: ms(last.duration_since(sent)),
            server_cpu: cpu_of(self.server.pid) - cpu_before.0,
            client_cpu: own_cpu() - cpu_before.1,
        }
    }

    /// Bytes of one change's frame on the wire: the WebSocket frame of the ETP frame (every
    /// change has the same size).
    fn wire_bytes(&self) -> (usize, usize) {
        let etp = frame::encoded_len(
            event::CONFIG_SEND_CONFIG_CHANGED,
            0,
            &vec![0; self.fan_out.payload.load(Ordering::Relaxed)],
        );
        // A server-to-client WebSocket frame is unmasked; its header is 2 bytes up to 125 B
        // of payload, 4 up to 65,535.
        (etp, etp + if etp < 126 { 2 } else { 4 })
    }

    /// Prints the rounds' line and step 4: SIGTERM to the server.
    async fn finish(mut self) {
        let n = self.n;
        let mut answered = self.answered.split_off(1);
        answered.sort_by(f64::total_cmp);
        println!(
            "scale N={n}: fan-out of one config change (admin PUT) to all {n} connections, {} rounds: \
             {}; the PUT answered after p50 {:.2} ms",
            self.rounds.0.len(),
            self.rounds.describe(),
            percentile(&answered, 0.5),
        );
        let (etp, wire_bytes) = self.wire_bytes();
        println!(
            "scale N={n}: one change on the wire: ETP frame {etp} B, WebSocket frame {wire_bytes} B"
        );
        let rss_after = rss_bytes(self.server.pid);
        drop(self.admin);
        let stopping = Instant::now();
        let server = &mut self.server;
        let code = tokio::task::block_in_place(|| server.terminate());
        let stop_time = stopping.elapsed();
        let closed_normally = futures_util::future::join_all(self.conns.iter().map(Conn::closed))
            .await
            .iter()
            .filter(|d| d.close.as_ref().and_then(|c| c.code) == Some(1000))
            .count();
        self.dep.closed().await;
        println!(
            "scale N={n}: server RSS after the fan-out {:.1} MiB; SIGTERM: exit {code:?} after {:.3} s, \
             {closed_normally} of {n} closed with 1000",
            mib(rss_after),
            stop_time.as_secs_f64(),
        );
    }
}

/// How the floor server writes to its N connections.
#[derive(Clone, Copy)]
enum FloorShape {
    /// One task writes to the N sockets in turn.
    Direct,
    /// One writer task per connection, woken through its own unbounded channel.
    Tasks,
}

impl FloorShape {
    fn arg(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Tasks => "tasks",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Direct => "one task writes all",
            Self::Tasks => "one writer task per connection, woken by a channel",
        }
    }
}

/// The `floor-server` role: `floor-server <bytes> <direct|tasks>`. Prints
/// `listen <addr> control <addr>`, accepts a control connection on the second address (a
/// listener of its own: the order of accepts on one listener need not be the order of the
/// client's connects), and on the first, for as long as it runs, connections: each one's
/// hello byte is answered with a byte, and from then on the connection is one of those
/// written to. For each byte read from the control connection, it writes `bytes` bytes to
/// every connection; it ends when the control connection closes.
///
/// It does not count its connections: a client that gave up waiting for its byte and dialed
/// again leaves behind a connection the server may still take (its hello was in the socket),
/// so only the clients know when all N are in. Such a dead connection fails a write, and is
/// dropped then.
fn floor_server(args: &[String]) {
    let bytes: usize = args.first().and_then(|a| a.parse().ok()).expect("bytes");
    let shape = match args.get(1).map(String::as_str) {
        Some("direct") => FloorShape::Direct,
        Some("tasks") => FloorShape::Tasks,
        other => panic!("unknown floor shape {other:?}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // The WebSocket listener's backlog (tokio's `bind` takes 1,024), so both servers
        // meet a burst of connects alike.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket
            .listen(cluster_transport::ws::LISTEN_BACKLOG)
            .expect("listen");
        let control_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!(
            "listen {} control {}",
            listener.local_addr().expect("local addr"),
            control_listener.local_addr().expect("local addr")
        );
        std::io::Write::flush(&mut std::io::stdout()).expect("flush");
        let (mut control, _) = control_listener.accept().await.expect("accept control");
        let _ = control.set_nodelay(true);
        // The connections written to: streams (`direct`) or their writer tasks' channels.
        // (An async lock, taken once per round: a stream is in before its client hears so.)
        let streams = Arc::new(tokio::sync::Mutex::new(Vec::<tokio::net::TcpStream>::new()));
        let senders = Arc::new(Mutex::new(Vec::new()));
        let (accepted_streams, accepted_senders) = (streams.clone(), senders.clone());
        tokio::spawn(async move {
            loop {
                let mut stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // Out of descriptors, say: the clients' redials come again.
                    Err(e) => {
                        eprintln!("floor server: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (streams, senders) = (accepted_streams.clone(), accepted_senders.clone());
                tokio::spawn(async move {
                    let mut hello = [0u8; 1];
                    if stream.read_exact(&mut hello).await.is_err() {
                        return;
                    }
                    // Written to from here on, before the client hears it is in.
                    match shape {
                        FloorShape::Direct => {
                            let mut streams = streams.lock().await;
                            if stream.write_all(b"a").await.is_ok() {
                                streams.push(stream);
                            }
                        }
                        FloorShape::Tasks => {
                            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
                            senders.lock().expect("lock").push(tx);
                            if stream.write_all(b"a").await.is_err() {
                                return;
                            }
                            while let Some(data) = rx.recv().await {
                                if stream.write_all(&data).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        let payload = Bytes::from(vec![b'x'; bytes]);
        let mut go = [0u8; 1];
        while control.read_exact(&mut go).await.is_ok() {
            let mut streams = streams.lock().await;
            let mut live = Vec::with_capacity(streams.len());
            for mut stream in streams.drain(..) {
                if stream.write_all(&payload).await.is_ok() {
                    live.push(stream);
                }
            }
            *streams = live;
            drop(streams);
            senders.lock().expect("lock").retain(
                |tx: &tokio::sync::mpsc::UnboundedSender<Bytes>| tx.send(payload.clone()).is_ok(),
            );
        }
    });
}

/// A floor of step 5: its server process (`floor-server`) and its N clients, in a process
/// of their own (`floor-clients`; the open-file limit is per process), which makes a round
/// when told on its stdin and answers with the round's time.
struct Floor {
    shape: FloorShape,
    server: ChildGuard,
    server_pid: u32,
    clients: ChildGuard,
    clients_pid: u32,
    to_clients: std::process::ChildStdin,
    from_clients: std::io::BufReader<std::process::ChildStdout>,
    rounds: Rounds,
}

impl Floor {
    /// Starts the server and the clients, and waits until all N are connected (printing how
    /// the burst went).
    fn start(n: usize, bytes: usize, shape: FloorShape, concurrency: usize) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut server = Command::new(&exe)
            .args(["floor-server", &bytes.to_string(), shape.arg()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn floor server");
        let server_pid = server.id();
        let stdout = server.stdout.take().expect("stdout");
        let server = ChildGuard(Some(server));
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("floor server output");
        let addresses = line
            .trim()
            .strip_prefix("listen ")
            .and_then(|rest| rest.split_once(" control "))
            .unwrap_or_else(|| panic!("no listen line: {line:?}"));
        let mut clients = Command::new(&exe)
            .args([
                "floor-clients",
                addresses.0,
                addresses.1,
                &n.to_string(),
                &bytes.to_string(),
                &concurrency.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn floor clients");
        let clients_pid = clients.id();
        let to_clients = clients.stdin.take().expect("stdin");
        let mut from_clients = std::io::BufReader::new(clients.stdout.take().expect("stdout"));
        let clients = ChildGuard(Some(clients));
        line.clear();
        from_clients
            .read_line(&mut line)
            .expect("floor clients output");
        assert!(
            !line.is_empty(),
            "the floor clients ended before all were connected"
        );
        println!(
            "scale N={n}: floor ({}) connected: {}",
            shape.arg(),
            line.trim()
        );
        Self {
            shape,
            server,
            server_pid,
            clients,
            clients_pid,
            to_clients,
            from_clients,
            rounds: Rounds::default(),
        }
    }

    /// One round: the clients send the control byte and answer once all N had the bytes.
    fn round(&mut self) -> Round {
        let cpu_before = (cpu_of(self.server_pid), cpu_of(self.clients_pid));
        std::io::Write::write_all(&mut self.to_clients, b"go\n").expect("to floor clients");
        let mut line = String::new();
        self.from_clients
            .read_line(&mut line)
            .expect("floor clients answer");
        Round {
            ms: line
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("round: {line:?}")),
            server_cpu: cpu_of(self.server_pid) - cpu_before.0,
            client_cpu: cpu_of(self.clients_pid) - cpu_before.1,
        }
    }

    /// Prints the rounds' line; the clients exit at the end of their stdin, and the server
    /// once its control connection is closed.
    fn finish(self, n: usize, bytes: usize) {
        println!(
            "scale N={n}: fan-out floor (bare tokio TCP, {bytes} B, {}), {} rounds: {}",
            self.shape.describe(),
            self.rounds.0.len(),
            self.rounds.describe(),
        );
        let Self {
            mut server,
            mut clients,
            to_clients,
            ..
        } = self;
        drop(to_clients);
        for child in [&mut clients, &mut server] {
            if let Some(mut child) = child.0.take() {
                child.wait().expect("floor process exit");
            }
        }
    }
}

/// The `floor-clients` role: `floor-clients <addr> <control addr> <n> <bytes> <concurrency>`.
/// Connects the control connection and `n` clients to a floor server (at most `concurrency`
/// in their connect at once), prints one line on how that went, then makes a round for each
/// line read from stdin: sends the control byte and prints the time (ms) until the last
/// connection had read `bytes` bytes. Ends at the end of stdin.
fn floor_clients(args: &[String]) {
    let arg = |i: usize| {
        args.get(i)
            .unwrap_or_else(|| panic!("floor-clients: argument {i}"))
    };
    let addr: SocketAddr = arg(0).parse().expect("addr");
    let control_addr: SocketAddr = arg(1).parse().expect("control addr");
    let n: usize = arg(2).parse().expect("n");
    let bytes: usize = arg(3).parse().expect("bytes");
    let concurrency: usize = arg(4).parse().expect("concurrency");
    // As the bench's own process: two workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut control, fan_out) =
        runtime.block_on(floor_connect(addr, control_addr, n, bytes, concurrency));
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for _ in stdin.lock().lines().map_while(Result::ok) {
        let took = runtime.block_on(async {
            fan_out.arrived.store(0, Ordering::Release);
            *fan_out.last.lock().expect("lock") = None;
            let done = fan_out.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let sent = Instant::now();
            control.write_all(b"g").await.expect("go");
            tokio::time::timeout(WAIT, done)
                .await
                .expect("the bytes did not reach every connection");
            let last = fan_out.last.lock().expect("lock").expect("last arrival");
            ms(last.duration_since(sent))
        });
        std::io::Write::write_all(&mut stdout, format!("{took}\n").as_bytes()).expect("stdout");
        std::io::Write::flush(&mut stdout).expect("stdout");
    }
}

/// Connects the floor's control connection and its `n` clients, whose tasks count arrivals
/// in the returned [`FanOut`]; prints how the burst went.
async fn floor_connect(
    addr: SocketAddr,
    control_addr: SocketAddr,
    n: usize,
    bytes: usize,
    concurrency: usize,
) -> (tokio::net::TcpStream, Arc<FanOut>) {
    let control = tokio::net::TcpStream::connect(control_addr)
        .await
        .expect("connect control");
    let _ = control.set_nodelay(true);
    let fan_out = Arc::new(FanOut::new(n));
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let connected = Arc::new(AtomicUsize::new(0));
    let connected_changed = Arc::new(Notify::new());
    let redials = Arc::new(AtomicUsize::new(0));
    let (overflows, cookies) = (listen_overflows(), syncookies_sent());
    for _ in 0..n {
        let fan_out = fan_out.clone();
        let gate = gate.clone();
        let connected = connected.clone();
        let connected_changed = connected_changed.clone();
        let redials = redials.clone();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            // Held until the server has accepted: a connect completes before the accept, and
            // more than the listen backlog of unaccepted connections would be dropped.
            let mut stream = loop {
                let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                // The hello matters in a burst: past a full SYN queue the kernel answers with a
                // SYN cookie and keeps no state, so if our final ACK is then dropped (a full
                // accept queue) nobody retransmits anything, and a client that only waits to
                // read waits forever on a connection the server never saw. Data carries the
                // ACK again (as the WebSocket client's upgrade request does), which completes
                // the connection. Past a second without the server's byte, dial again.
                stream.write_all(b"h").await.expect("hello");
                let mut accepted = [0u8; 1];
                match tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut accepted))
                    .await
                {
                    Ok(Ok(_)) => break stream,
                    _ => {
                        redials.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            drop(permit);
            connected.fetch_add(1, Ordering::Release);
            connected_changed.notify_one();
            let mut buf = vec![0; bytes];
            while stream.read_exact(&mut buf).await.is_ok() {
                fan_out.arrive();
            }
        });
    }
    // Every client has its server's byte: the server writes to all N.
    let all_in = async {
        while connected.load(Ordering::Acquire) < n {
            connected_changed.notified().await;
        }
    };
    tokio::time::timeout(WAIT, all_in)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the floor server did not accept every connection ({} of {n} connected)",
                connected.load(Ordering::Relaxed)
            )
        });
    let (overflows, cookies) = (listen_overflows() - overflows, syncookies_sent() - cookies);
    println!(
        "{} redials, listen queue overflows {overflows}, SYN cookies sent {cookies}",
        redials.load(Ordering::Relaxed),
    );
    std::io::Write::flush(&mut std::io::stdout()).expect("flush");
    (control, fan_out)
}

/// Steps 1 to 5 for `n` sessions, with the rounds of step 3 and of the two floors of step 5
/// interleaved (ours, direct, tasks; each iteration starting one further along), so that
/// what else runs on this shared machine weighs on all three alike.
async fn run(n: usize, rounds: usize, concurrency: usize) {
    let mut ours = Ours::start(n, concurrency).await;
    // The warm-up round, which also gives the size of a change on the wire.
    ours.round().await;
    let (_, bytes) = ours.wire_bytes();
    let mut floors = [FloorShape::Direct, FloorShape::Tasks]
        .map(|shape| tokio::task::block_in_place(|| Floor::start(n, bytes, shape, concurrency)));
    for floor in &mut floors {
        tokio::task::block_in_place(|| floor.round());
    }
    for round in 0..rounds {
        for turn in 0..3 {
            match (round + turn) % 3 {
                0 => {
                    let figures = ours.round().await;
                    ours.rounds.0.push(figures);
                }
                side => {
                    let floor = &mut floors[side - 1];
                    let figures = tokio::task::block_in_place(|| floor.round());
                    floor.rounds.0.push(figures);
                }
            }
        }
    }
    let ours_p50 = ours.rounds.p50();
    ours.finish().await;
    for floor in floors {
        let (shape, floor_p50) = (floor.shape, floor.rounds.p50());
        tokio::task::block_in_place(|| floor.finish(n, bytes));
        println!(
            "scale N={n}: fan-out p50: ours {ours_p50:.2} ms, floor ({}) {floor_p50:.2} ms; \
             ours / floor = {:.2}",
            shape.arg(),
            ours_p50 / floor_p50,
        );
    }
}

fn main() {
    let limit = raise_open_file_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("floor-server") => return floor_server(&args[1..]),
        Some("floor-clients") => return floor_clients(&args[1..]),
        _ => {}
    }
    let sizes = env_list("SCALE_N", &[1_000, 10_000]);
    let rounds = env_usize("SCALE_ROUNDS", 30).max(1);
    // 0: no cap, all N sessions arrive at once.
    let concurrency = env_usize("SCALE_CONCURRENCY", 0);
    if let Some(&too_many) = sizes.iter().find(|&&n| n as u64 + 64 > limit) {
        eprintln!("open-file limit {limit} is too low for N={too_many}");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes {
        let concurrency = if concurrency == 0 { n } else { concurrency };
        runtime.block_on(run(n, rounds, concurrency));
    }
}
