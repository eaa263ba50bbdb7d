//! The probe: joins a cluster as a module and prints what the config service hands it, one
//! JSON line each, so an operator sees exactly what a module receives.
//!
//! `cargo run --example probe -- --module NAME [flags]` parses its flags with [`parse_args`]
//! (clap; `--help` lists every flag with its default, the output lines and the exit statuses)
//! and runs a [`Probe`]; the test suite runs the same code against an in-process fake config
//! service (`tests/it/probe.rs`).
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
//! The probe's own decisions:
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

use clap::builder::NonEmptyStringValueParser;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use cluster_bootstrap::Signal;
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

/// What `--help` shows after the flags: the output, the logs, the exit statuses, a warning.
const AFTER_HELP: &str = "\
Output, one JSON object a line on stdout:
    {\"kind\":\"config\",\"data\":<config>}   {\"kind\":\"routes\",\"data\":<routing config>}
    {\"kind\":\"hosts\",\"module\":\"A\",\"hosts\":[\"ip:port\"]}   {\"kind\":\"ready\",\"us\":N}   {\"kind\":\"unready\",\"us\":N}
Logs go to stderr, filtered by RUST_LOG (default info).
List flags (--hosts, --require, --endpoints) take comma-separated items and add up when
repeated; any other flag given twice keeps its last value.

EXIT STATUS:
    0 stopped as asked (--duration, SIGINT/SIGTERM, --ready-exit once ready; or --help)
    1 --ready-exit and it stopped before being ready, or the client cannot start (a bad host)
    2 usage error

Careful: the probe is a module. The config service stores its --schema under --module, and
once ready it is in everyone's routing table at --ip:--port. On a real cluster use a name of
its own, or --reject-config (it prints the config and never declares itself ready).";

/// The probe's command line, as clap parses it; [`parse_args`] turns it into [`ProbeOptions`].
#[derive(Debug, Parser)]
#[command(
    name = "probe",
    about = "probe: joins an isp cluster as a module and prints what the config service hands it",
    override_usage = "cargo run --example probe -- --module NAME [OPTIONS]",
    after_help = AFTER_HELP,
    args_override_self = true,
    disable_version_flag = true
)]
struct ProbeArgs {
    /// The module name (required)
    #[arg(long, value_name = "NAME", required = true, value_parser = NonEmptyStringValueParser::new())]
    module: String,
    /// Config service hosts: ip:port, ws://… or wss://…
    #[arg(long, value_name = "H[,H]", default_value = DEFAULT_HOST)]
    hosts: Vec<String>,
    /// Register a config receiver: print each config
    #[arg(long)]
    config: bool,
    /// The config receiver prints the config, then rejects it (implies --config)
    #[arg(long)]
    reject_config: bool,
    /// Register a routes receiver: print each routing table
    #[arg(long)]
    routes: bool,
    /// Require modules: print their addresses
    #[arg(long, value_name = "M[,M]")]
    require: Vec<String>,
    /// The address the module declares
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    ip: String,
    /// The port the module declares
    #[arg(long, value_name = "PORT", default_value_t = 9999)]
    port: u16,
    /// Endpoint paths the module declares
    #[arg(long, value_name = "P[,P]")]
    endpoints: Vec<String>,
    /// The default remote config sent with the schema (JSON)
    #[arg(long, value_name = "JSON", default_value = "{}", value_parser = json)]
    default_config: String,
    /// The JSON Schema of the remote config [default: any object]
    #[arg(long, value_name = "JSON", default_value = DEFAULT_SCHEMA, hide_default_value = true, value_parser = json)]
    schema: String,
    /// The module version (also the config data version)
    #[arg(long, value_name = "V", default_value = "1.0.0")]
    version: String,
    /// Close and exit after D (7s, 500ms, 2m, 1h30m) [default: until SIGINT/SIGTERM]
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Close and exit 0 once ready (1 if it stops before being ready)
    #[arg(long)]
    ready_exit: bool,
}

/// The probe's `--help` text: every flag with its default, the output lines, the exit
/// statuses.
#[must_use]
pub fn help() -> String {
    ProbeArgs::command().render_help().to_string()
}

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
    /// Print [`help`] and exit 0.
    Help,
}

/// A command line the probe does not understand: the message (clap's) says what is wrong,
/// shows the usage line and points at `--help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses the probe's flags (without the program name) with clap. Flags take their value as
/// the next argument or after `=` (`--module A`, `--module=A`). A scalar flag given twice
/// keeps the last value; a list flag (`--hosts`, `--require`, `--endpoints`) given twice adds
/// to the list, items are split at commas and trimmed, and empty items (`A,,B`) are skipped.
/// `--default-config` and `--schema` must be JSON; `--duration` is read by
/// [`parse_duration`].
///
/// # Errors
/// A [`UsageError`] naming the flag: unknown flag, missing value, a value that does not parse,
/// a missing or empty `--module`, `--hosts` without any host.
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
    let parsed = match ProbeArgs::try_parse_from(std::iter::once("probe".to_owned()).chain(args)) {
        Ok(parsed) => parsed,
        Err(err) if err.kind() == ErrorKind::DisplayHelp => return Ok(Command::Help),
        Err(err) => return Err(UsageError(err.to_string())),
    };
    let hosts: Vec<String> = parsed.hosts.iter().flat_map(|h| list(h)).collect();
    if hosts.is_empty() {
        let mut cmd = ProbeArgs::command();
        let err = cmd.error(ErrorKind::InvalidValue, "--hosts needs at least one host");
        return Err(UsageError(err.to_string()));
    }
    Ok(Command::Run(ProbeOptions {
        module: parsed.module,
        hosts,
        config: parsed.config,
        reject_config: parsed.reject_config,
        routes: parsed.routes,
        require: parsed.require.iter().flat_map(|m| list(m)).collect(),
        ip: parsed.ip,
        port: parsed.port,
        endpoints: parsed.endpoints.iter().flat_map(|p| list(p)).collect(),
        default_config: parsed.default_config,
        schema: parsed.schema,
        version: parsed.version,
        duration: parsed.duration,
        ready_exit: parsed.ready_exit,
    }))
}

fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
}

/// clap's value parser of `--default-config` and `--schema`: the text, if it is JSON.
fn json(value: &str) -> Result<String, String> {
    match serde_json::from_str::<&RawValue>(value) {
        Ok(_) => Ok(value.to_owned()),
        Err(err) => Err(format!("not JSON: {err}")),
    }
}

/// The duration parser of `--duration` (and of `fake-config-service`'s durations): Go's forms
/// (`7s`, `500ms`, `1m30s`, `1h30m`, `1.5h`) and a bare number of seconds.
pub use cluster_testkit::duration::{DurationError, parse_duration};

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
