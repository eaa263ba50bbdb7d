//! The probe: joins a cluster as a module and prints what the config service hands it, one
//! JSON line each, so an operator sees exactly what a module receives.
//!
//! `cargo run --example probe -- --module NAME [flags]` parses its flags with [`parse_args`]
//! and runs a [`Probe`]; the test suite runs the same code against an in-process fake config
//! service (`tests/probe.rs`).
//!
//! # Output (stdout, one JSON object a line)
//! | line | when |
//! |---|---|
//! | `{"kind":"config","data":<config JSON>}` | a remote config arrived (`--config`) |
//! | `{"kind":"routes","data":<routing config as on the wire>}` | a routing table arrived (`--routes`) |
//! | `{"kind":"hosts","module":"A","hosts":["ip:port",…]}` | a required module's addresses arrived (`--require A`) |
//! | `{"kind":"ready","us":N}` | the module became ready, `N` µs after the probe started |
//! | `{"kind":"unready","us":N}` | it stopped being ready (the session ended; the client reconnects) |
//!
//! Decisions where the issue is silent:
//! - `data` of a config line is the config **byte for byte** as received, except that line
//!   breaks (only possible as whitespace between JSON tokens) become spaces, so the line stays
//!   one line. A config that is not JSON (a misbehaving server) is printed as a JSON string
//!   and logged as a warning.
//! - `data` of a routes line is the routing table as this client decoded it, encoded back
//!   exactly as the Go peers encode it (field names, `null`s); fields unknown to this client
//!   are not kept.
//! - With `--reject-config` the config line is printed, then the receiver fails; the session
//!   fails its handshake and retries (1 s, then doubling up to 30 s), so the module never
//!   becomes ready. `--reject-config` implies `--config`.
//! - Readiness is watched as a state: a ready → unready → ready blip shorter than one wake-up
//!   of the probe may be collapsed into nothing. The probe's own shutdown prints no
//!   `unready` line.
//! - The exit status is 0 when the probe stops as asked (`--duration`, a signal, or
//!   `--ready-exit` once ready), except that with `--ready-exit` a probe that stops without
//!   ever having been ready exits 1. Usage errors exit 2; a client that cannot start (a bad
//!   host, say) exits 1.
//!
//! # On a real cluster
//! The probe **is** a module: the config service stores its `--schema` (and, for a module it
//! does not know yet, its `--default-config`) under `--module`, and once ready the probe is an
//! instance in everyone's routing table at `--ip`:`--port`. Probe under a name of its own, or
//! add `--reject-config`: the probe then prints the config it is handed and never declares
//! itself ready.

use crate::shutdown::Signal;
use cluster_client::proto::PayloadError;
use cluster_client::proto::payload::encode_routing_config;
use cluster_client::{
    AddressConfiguration, Bytes, Client, ClientError, ConfigData, Connector, EndpointDescriptor,
    EventHandler, ModuleInfo, RoutingConfig,
};
use serde::Serialize;
use serde_json::value::RawValue;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The help text of the probe.
pub const USAGE: &str = "\
probe: joins an isp cluster as a module and prints what the config service hands it

USAGE:
    cargo run --example probe -- --module NAME [FLAGS]

FLAGS:
    --module NAME           the module name (required)
    --hosts H[,H]           config service hosts, ip:port, ws://… or wss://… (default 127.0.0.1:9001)
    --config                register a config receiver: print each config
    --reject-config         the config receiver prints the config, then rejects it (implies --config)
    --routes                register a routes receiver: print each routing table
    --require M[,M]         require modules: print their addresses
    --ip IP                 the address the module declares (default 127.0.0.1)
    --port PORT             the port the module declares (default 9999)
    --endpoints P[,P]       endpoint paths the module declares
    --default-config JSON   the default remote config sent with the schema (default {})
    --schema JSON           the JSON Schema of the remote config (default: any object)
    --version V             the module version (default 1.0.0)
    --duration D            close and exit after D (e.g. 7s, 500ms, 1m30s; default: until SIGINT/SIGTERM)
    --ready-exit            close and exit 0 once ready (1 if it stops before being ready)
    -h, --help              print this help

Output, one JSON object a line on stdout:
    {\"kind\":\"config\",\"data\":<config>}   {\"kind\":\"routes\",\"data\":<routing config>}
    {\"kind\":\"hosts\",\"module\":\"A\",\"hosts\":[\"ip:port\"]}   {\"kind\":\"ready\",\"us\":N}   {\"kind\":\"unready\",\"us\":N}
Logs go to stderr, filtered by RUST_LOG (default info).

Careful: the probe is a module. The config service stores its --schema under --module, and
once ready it is in everyone's routing table at --ip:--port. On a real cluster use a name of
its own, or --reject-config (it prints the config and never declares itself ready).
";

/// The default of [`ProbeOptions::hosts`].
pub const DEFAULT_HOST: &str = "127.0.0.1:9001";
/// The default of [`ProbeOptions::schema`]: any JSON object (draft-07).
pub const DEFAULT_SCHEMA: &str =
    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#;

/// What the probe does, as its flags say. [`ProbeOptions::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// `--module`: the module name.
    pub module: String,
    /// `--hosts`: the config service hosts. Default: [`DEFAULT_HOST`].
    pub hosts: Vec<String>,
    /// `--config`: register a config receiver.
    pub config: bool,
    /// `--reject-config`: the config receiver rejects every config (a receiver is registered
    /// even without [`ProbeOptions::config`]).
    pub reject_config: bool,
    /// `--routes`: register a routes receiver.
    pub routes: bool,
    /// `--require`: the required modules, in order.
    pub require: Vec<String>,
    /// `--ip`: the declared address. Default `127.0.0.1`.
    pub ip: String,
    /// `--port`: the declared port. Default `9999`.
    pub port: u16,
    /// `--endpoints`: the declared endpoint paths.
    pub endpoints: Vec<String>,
    /// `--default-config`: the default remote config (JSON). Default `{}`.
    pub default_config: String,
    /// `--schema`: the remote config's JSON Schema. Default: [`DEFAULT_SCHEMA`].
    pub schema: String,
    /// `--version`: the module version (also the config data version). Default `1.0.0`.
    pub version: String,
    /// `--duration`: stop after this long. Default: run until a signal.
    pub duration: Option<Duration>,
    /// `--ready-exit`: stop once ready.
    pub ready_exit: bool,
}

impl ProbeOptions {
    /// The options of `probe --module <module>`: every other flag at its default.
    #[must_use]
    pub fn new(module: impl Into<String>) -> Self {
        Self {
            module: module.into(),
            hosts: vec![DEFAULT_HOST.to_owned()],
            config: false,
            reject_config: false,
            routes: false,
            require: Vec::new(),
            ip: "127.0.0.1".to_owned(),
            port: 9999,
            endpoints: Vec::new(),
            default_config: "{}".to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            version: "1.0.0".to_owned(),
            duration: None,
            ready_exit: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per process; boxing would only burden the caller's match"
)]
pub enum Command {
    /// Run the probe.
    Run(ProbeOptions),
    /// Print [`USAGE`] and exit 0.
    Help,
}

/// A command line the probe does not understand: the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Parses the probe's flags (without the program name). Flags take their value as the next
/// argument or after `=` (`--module A`, `--module=A`). A scalar flag given twice keeps the
/// last value; a list flag (`--hosts`, `--require`, `--endpoints`) given twice adds to the
/// list, and empty items (`A,,B`) are skipped. `--default-config` and `--schema` must be JSON.
///
/// # Errors
/// A [`UsageError`] naming the flag: unknown flag, missing value, a value that does not parse,
/// a missing `--module`.
///
/// # Examples
/// ```
/// use cluster_examples::probe::{parse_args, Command};
/// let Command::Run(options) = parse_args(["--module", "A", "--routes", "--duration=7s"].map(String::from)).unwrap() else {
///     unreachable!()
/// };
/// assert_eq!(options.module, "A");
/// assert!(options.routes);
/// assert_eq!(options.duration, Some(std::time::Duration::from_secs(7)));
/// ```
pub fn parse_args<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = String>,
{
    let mut options = ProbeOptions::new("");
    let mut hosts: Option<Vec<String>> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let switch = |on: &mut bool| match &inline {
            Some(_) => Err(usage(format!("{flag} takes no value"))),
            None => {
                *on = true;
                Ok(())
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--config" => switch(&mut options.config)?,
            "--reject-config" => switch(&mut options.reject_config)?,
            "--routes" => switch(&mut options.routes)?,
            "--ready-exit" => switch(&mut options.ready_exit)?,
            _ => {
                if !matches!(
                    flag.as_str(),
                    "--module"
                        | "--hosts"
                        | "--require"
                        | "--ip"
                        | "--port"
                        | "--endpoints"
                        | "--default-config"
                        | "--schema"
                        | "--version"
                        | "--duration"
                ) {
                    return Err(usage(format!("unknown argument {arg:?}")));
                }
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .ok_or_else(|| usage(format!("{flag} needs a value")))?,
                };
                match flag.as_str() {
                    "--module" => options.module = value,
                    "--hosts" => hosts.get_or_insert_with(Vec::new).extend(list(&value)),
                    "--require" => options.require.extend(list(&value)),
                    "--endpoints" => options.endpoints.extend(list(&value)),
                    "--ip" => options.ip = value,
                    "--port" => {
                        options.port = value
                            .parse()
                            .map_err(|_| usage(format!("--port {value:?} is not a port number")))?;
                    }
                    "--default-config" => options.default_config = json(&flag, value)?,
                    "--schema" => options.schema = json(&flag, value)?,
                    "--version" => options.version = value,
                    _ => options.duration = Some(parse_duration(&value)?),
                }
            }
        }
    }
    if options.module.is_empty() {
        return Err(usage("--module NAME is required"));
    }
    if let Some(hosts) = hosts {
        if hosts.is_empty() {
            return Err(usage("--hosts needs at least one host"));
        }
        options.hosts = hosts;
    }
    Ok(Command::Run(options))
}

fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
}

fn json(flag: &str, value: String) -> Result<String, UsageError> {
    match serde_json::from_str::<&RawValue>(&value) {
        Ok(_) => Ok(value),
        Err(err) => Err(usage(format!("{flag} is not JSON: {err}"))),
    }
}

/// Parses a duration as Go's `time.ParseDuration` does (`7s`, `500ms`, `1m30s`, `1.5h`;
/// units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), and also a bare number of seconds (`7`).
///
/// # Errors
/// A [`UsageError`] for anything else (a negative or empty duration, an unknown unit).
///
/// # Examples
/// ```
/// use cluster_examples::probe::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
/// assert!(parse_duration("7 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, UsageError> {
    let bad = || {
        usage(format!(
            "--duration {text:?} is not a duration (try 7s, 500ms, 1m30s)"
        ))
    };
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| bad());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * unit).map_err(|_| bad())?;
    }
    Ok(total)
}

/// The `config` line: `{"kind":"config","data":<config>}` (see the [module docs](self)).
#[must_use]
pub fn config_line(config: &[u8]) -> String {
    let raw = std::str::from_utf8(config)
        .ok()
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    match raw {
        // Valid JSON has no raw line break inside a string: every one is whitespace.
        Some(raw) => format!(
            r#"{{"kind":"config","data":{}}}"#,
            raw.get().replace(['\n', '\r'], " ")
        ),
        None => {
            tracing::warn!(
                bytes = config.len(),
                "the config service sent a config that is not JSON"
            );
            let text = serde_json::Value::String(String::from_utf8_lossy(config).into_owned());
            format!(r#"{{"kind":"config","data":{text}}}"#)
        }
    }
}

/// The `routes` line: `{"kind":"routes","data":<routing config>}`, the table encoded as the
/// Go peers encode it.
#[must_use]
pub fn routes_line(routes: &RoutingConfig) -> String {
    let data = encode_routing_config(routes);
    format!(
        r#"{{"kind":"routes","data":{}}}"#,
        String::from_utf8_lossy(&data)
    )
}

/// The `hosts` line: `{"kind":"hosts","module":"A","hosts":["ip:port",…]}`.
#[must_use]
pub fn hosts_line(module: &str, hosts: &[String]) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        kind: &'static str,
        module: &'a str,
        hosts: &'a [String],
    }
    serde_json::to_string(&Line {
        kind: "hosts",
        module,
        hosts,
    })
    .unwrap_or_default()
}

/// The `ready` line: `{"kind":"ready","us":N}`, `N` µs since the probe started.
#[must_use]
pub fn ready_line(us: u128) -> String {
    format!(r#"{{"kind":"ready","us":{us}}}"#)
}

/// The `unready` line: `{"kind":"unready","us":N}`.
#[must_use]
pub fn unready_line(us: u128) -> String {
    format!(r#"{{"kind":"unready","us":{us}}}"#)
}

/// Why the probe stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `--ready-exit`: the module became ready.
    Ready,
    /// `--duration` elapsed.
    Duration,
    /// The shutdown future resolved (SIGINT or SIGTERM in the example).
    Signal(Signal),
    /// The client's run ended on its own (it does not, short of a bug: logged).
    ClientEnded,
}

/// How a probe run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReport {
    /// Why it stopped.
    pub stopped_by: StopReason,
    /// Whether the module was ready at least once.
    pub was_ready: bool,
    /// The process exit status this means: 0, or 1 when `--ready-exit` was asked and the
    /// module never became ready.
    pub exit_code: u8,
}

/// Why the probe could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProbeError {
    /// `--default-config` or `--schema` is not JSON (only possible with options built by
    /// hand: [`parse_args`] checks them).
    ConfigData(PayloadError),
    /// The client refused its settings (an unusable host, say).
    Client(ClientError),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigData(err) => write!(f, "bad --default-config or --schema: {err}"),
            Self::Client(err) => write!(f, "the client cannot start: {err}"),
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ConfigData(err) => Some(err),
            Self::Client(err) => Some(err),
        }
    }
}

/// A probe ready to run: its options, and optionally the connector and seed of its client.
///
/// # Examples
/// ```no_run
/// use cluster_examples::probe::{Probe, ProbeOptions};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mut options = ProbeOptions::new("my-module");
/// options.routes = true;
/// options.ready_exit = true;
/// let shutdown = cluster_examples::shutdown_signal()?;
/// let report = Probe::new(options).run(std::io::stdout(), shutdown).await?;
/// std::process::exit(report.exit_code.into());
/// # }
/// ```
pub struct Probe {
    options: ProbeOptions,
    connector: Option<Arc<dyn Connector>>,
    seed: Option<u64>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("options", &self.options)
            .field("custom_connector", &self.connector.is_some())
            .field("seed", &self.seed)
            .finish()
    }
}

impl Probe {
    /// A probe with these options, dialing WebSocket.
    #[must_use]
    pub fn new(options: ProbeOptions) -> Self {
        Self {
            options,
            connector: None,
            seed: None,
        }
    }

    /// Dials with `connector` instead (the testkit's in-memory network, in tests).
    #[must_use]
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Seeds the client's random choices (first host, jitter).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The module this probe declares (name, version, address, endpoints).
    #[must_use]
    pub fn module_info(&self) -> ModuleInfo {
        let o = &self.options;
        ModuleInfo {
            module_name: o.module.clone(),
            module_version: o.version.clone(),
            lib_version: env!("CARGO_PKG_VERSION").to_owned(),
            grpc_outer_address: AddressConfiguration::new(o.ip.clone(), o.port.to_string()),
            endpoints: o.endpoints.iter().map(EndpointDescriptor::new).collect(),
            ..ModuleInfo::default()
        }
    }

    /// Runs the probe: joins the cluster and writes one line to `out` for each thing it
    /// receives, until `shutdown` resolves, `--duration` elapses, or (`--ready-exit`) the
    /// module is ready. Then it closes the client (normal closure), waits until every line is
    /// written, and returns. Lines are written on tokio's blocking pool (a `write_all` and a
    /// flush per batch), so an `out` that blocks (a pipe nobody reads) never stalls the
    /// session; a write error is logged once and the probe goes on. Call it inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// [`ProbeError`] when the client cannot start.
    pub async fn run<W, S>(self, out: W, shutdown: S) -> Result<ProbeReport, ProbeError>
    where
        W: Write + Send + 'static,
        S: Future<Output = Signal>,
    {
        let started = Instant::now();
        let options = self.options.clone();
        let (out, out_writer) = Out::start(out);
        let config_data =
            ConfigData::from_json(&options.version, &options.schema, &options.default_config)
                .map_err(ProbeError::ConfigData)?;
        let mut builder = Client::builder(self.module_info(), config_data, options.hosts.clone());
        if let Some(connector) = self.connector {
            builder = builder.connector_arc(connector);
        }
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        let client = builder.build().map_err(ProbeError::Client)?;
        let handler = handler(&options, &out);
        tracing::info!(module = %options.module, hosts = ?options.hosts, "probe starting");

        let mut state = client.state();
        let run = client.run(handler);
        tokio::pin!(run);
        tokio::pin!(shutdown);
        let deadline = async {
            match options.duration {
                Some(duration) => tokio::time::sleep(duration).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);

        let mut ready = false;
        let mut was_ready = false;
        let stopped_by = loop {
            tokio::select! {
                result = &mut run => {
                    result.map_err(ProbeError::Client)?;
                    tracing::warn!("the client stopped on its own");
                    break StopReason::ClientEnded;
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        // The client is gone: its run ends next.
                        continue;
                    }
                    let now_ready = state.borrow_and_update().is_ready();
                    if now_ready == ready {
                        continue;
                    }
                    ready = now_ready;
                    let us = started.elapsed().as_micros();
                    if ready {
                        was_ready = true;
                        out.line(&ready_line(us));
                        if options.ready_exit {
                            break StopReason::Ready;
                        }
                    } else {
                        out.line(&unready_line(us));
                    }
                }
                signal = &mut shutdown => break StopReason::Signal(signal),
                () = &mut deadline => break StopReason::Duration,
            }
        };
        tracing::info!(?stopped_by, "probe stopping");
        client.start_close();
        if let Err(err) = run.await {
            tracing::warn!(error = %err, "the client ended with an error");
        }
        // The handler's copies went with the client's run; this is the last one.
        drop(out);
        out_writer.finish().await;
        let exit_code = u8::from(options.ready_exit && !was_ready);
        Ok(ProbeReport {
            stopped_by,
            was_ready,
            exit_code,
        })
    }
}

fn handler(options: &ProbeOptions, out: &Out) -> EventHandler {
    let mut handler = EventHandler::new();
    if options.config || options.reject_config {
        let out = out.clone();
        let reject = options.reject_config;
        handler = handler.remote_config_receiver(move |config: Bytes| {
            out.line(&config_line(&config));
            async move {
                if reject {
                    Err("config rejected (--reject-config)")
                } else {
                    Ok(())
                }
            }
        });
    }
    if options.routes {
        let out = out.clone();
        handler = handler.routes_receiver(move |routes: RoutingConfig| {
            out.line(&routes_line(&routes));
            async { Ok::<(), std::convert::Infallible>(()) }
        });
    }
    for module in &options.require {
        let out = out.clone();
        let name = module.clone();
        handler = handler.require_module(module.clone(), move |hosts: Vec<String>| {
            out.line(&hosts_line(&name, &hosts));
        });
    }
    handler
}

/// How many lines may wait for the output writer; past it, lines are dropped (and counted)
/// rather than block the runtime.
pub const OUTPUT_QUEUE_LINES: usize = 4096;

/// The probe's output: whole lines, queued to a writer task that writes them on tokio's
/// blocking pool. A stdout that nobody reads (a full pipe) then blocks a pool thread only,
/// never a runtime thread, so the session keeps answering pings and acks; once
/// [`OUTPUT_QUEUE_LINES`] are waiting, further lines are dropped and counted. (A blocking-pool
/// task, unlike a thread of our own, also holds tokio's paused clock still while it writes.)
#[derive(Clone)]
struct Out {
    lines: tokio::sync::mpsc::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

/// The writer task, to be awaited once every [`Out`] is gone.
struct OutWriter {
    task: tokio::task::JoinHandle<()>,
    dropped: Arc<AtomicU64>,
}

impl Out {
    fn start<W: Write + Send + 'static>(writer: W) -> (Self, OutWriter) {
        let (lines, mut queue) = tokio::sync::mpsc::channel::<Vec<u8>>(OUTPUT_QUEUE_LINES);
        let task = tokio::spawn(async move {
            let mut writer = Some(writer);
            let mut failed = false;
            // Ends once every sender is dropped and the queue is drained.
            while let Some(mut batch) = queue.recv().await {
                while let Ok(more) = queue.try_recv() {
                    batch.extend_from_slice(&more);
                }
                let Some(mut w) = writer.take() else { break };
                if failed {
                    writer = Some(w);
                    continue;
                }
                let written = tokio::task::spawn_blocking(move || {
                    let result = w.write_all(&batch).and_then(|()| w.flush());
                    (w, result)
                })
                .await;
                match written {
                    Ok((w, result)) => {
                        writer = Some(w);
                        if let Err(err) = result {
                            failed = true;
                            tracing::warn!(error = %err, "cannot write the probe's output");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the probe's output writer failed");
                        break;
                    }
                }
            }
        });
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = OutWriter {
            task,
            dropped: dropped.clone(),
        };
        (Self { lines, dropped }, writer)
    }

    fn line(&self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        match self.lines.try_send(bytes) {
            Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        queued = OUTPUT_QUEUE_LINES,
                        "the probe's output is not being read: dropping lines"
                    );
                }
            }
        }
    }
}

impl OutWriter {
    /// Waits until every queued line is written.
    async fn finish(self) {
        let Self { task, dropped } = self;
        if task.await.is_err() {
            tracing::warn!("the probe's output writer failed");
        }
        let dropped = dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "output lines were dropped: stdout was not read");
        }
    }
}
