//! [`Client`]: run sessions with the config service, close, health check, state.

use crate::driver::{self, Plan};
use crate::error::{ClientError, SessionInactive};
use crate::handler::EventHandler;
use crate::lb::random_seed;
use crate::state::{ClientState, Settings, Shared};
use cluster_metrics::cluster::ClusterMetrics;
use cluster_proto::backoff::BackoffConfig;
use cluster_proto::event::check_module_name;
use cluster_proto::session::SessionTimeouts;
use cluster_proto::{ConfigData, ModuleInfo, SecretMasker};
use cluster_transport::log_limit::LogLimit;
use cluster_transport::tls::TlsConfig;
use cluster_transport::ws::{WsConfig, WsConnector};
use cluster_transport::{Connector, Endpoint, Scheme, SetupError};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The default of [`ClientBuilder::config_arrival_wait`]: how long the handshake gives the
/// config service to **send** the module's first config (5 s, as in Go). Not to be confused with
/// [`DEFAULT_CONFIG_APPLY_TIMEOUT`](crate::DEFAULT_CONFIG_APPLY_TIMEOUT), the bound on one
/// application by the receiver: the handshake's whole wait for the initial config,
/// [`SessionTimeouts::initial_config`](crate::SessionTimeouts::initial_config), is the sum of
/// the two (10 s by default).
pub const DEFAULT_CONFIG_ARRIVAL_WAIT: Duration = Duration::from_secs(5);

/// A module's client of the config service cluster (Go: `cluster.Client`).
///
/// [`Client::run`] registers the module with one config service host after another and keeps
/// the session alive; [`Client::close`] ends it. Cloning gives another handle to the same
/// client (to close it from another task, say).
///
/// # Behaviour (docs/protocol.md §5, with the differences noted)
/// - Hosts are tried round-robin from a random start; after a failure the next host is tried
///   after a backoff: 1 s, then doubling with jitter up to 30 s, back to 1 s once a session
///   was ready (Go always waits 1 s).
/// - One session: connect, `MODULE:SEND_CONFIG_SCHEMA`, `MODULE:SEND_REQUIREMENTS`, wait for
///   the first config (5 s + the config handler's timeout), routes (1 s) and address lists
///   (1 s each), `MODULE:READY`; then pings every 5 s (3 s pong timeout). Unlike Go, an ack
///   whose text is not `ok` fails the session (the server did not store what was sent), and
///   two missed pongs in a row end it (Go only logs them, leaving half-open sessions alive).
/// - Remote configs are applied one at a time, each bounded by the handler's timeout (a
///   timed-out application is dropped before the next starts), in arrival order; a config
///   that arrives while another waits replaces it (latest wins; never an older one after a
///   newer one). Routing tables and host lists reach the application in arrival order, every
///   one of them. Receiver errors and panics are logged and the client goes on; on the first
///   config, routes or host list of a session they fail the handshake, which is retried.
/// - Applications go on across a reconnect; closing the client (or dropping `run`) cancels
///   them. After [`Client::close`] returns nothing of the client runs.
/// - [`Client::close`] (and [`Client::run_until`]) closes the connection normally (close
///   frame, the server's answer, at most 1 s); dropping the `run` future drops the connection
///   without the close handshake (the service sees it lost, and forgets the instance all the
///   same).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("module", &self.shared.settings.module_info.module_name)
            .field("hosts", &self.shared.settings.hosts)
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with every default (WebSocket, the Go timeouts, 1 s → 30 s backoff):
    /// [`Client::builder`]`(…).build()`.
    ///
    /// `hosts` are `ip:port` (WebSocket, as in Go), `ws://host:port` or `wss://host:port`
    /// (TLS). The URL the fake config service prints, `ws://127.0.0.1:9001/isp-etp/`, is
    /// accepted too (the client adds that path itself).
    ///
    /// # Errors
    /// As [`ClientBuilder::build`]: no hosts, a host that cannot be dialed, a module name the
    /// config service cannot take, a TLS setting that does not load.
    pub fn new<I>(
        module_info: ModuleInfo,
        config_data: ConfigData,
        hosts: I,
    ) -> Result<Self, ClientError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::builder(module_info, config_data, hosts).build()
    }

    /// A builder for the options: connector, timeouts, backoff, TLS, secret masking.
    /// Nothing is checked before [`ClientBuilder::build`].
    #[must_use]
    pub fn builder<I>(module_info: ModuleInfo, config_data: ConfigData, hosts: I) -> ClientBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        ClientBuilder {
            settings: Settings {
                module_info,
                config_data,
                hosts: hosts.into_iter().map(Into::into).collect(),
                connector: None,
                ws_config: None,
                timeouts: SessionTimeouts::default(),
                config_arrival_wait: DEFAULT_CONFIG_ARRIVAL_WAIT,
                backoff: BackoffConfig::default(),
                seed: None,
                masker: Arc::new(SecretMasker::new()),
                log_limit: LogLimit::default(),
            },
        }
    }

    /// Runs sessions with `handler` until the client is closed; returns `Ok(())` then.
    /// Dropping the future closes the connection (normal closure) and cancels the
    /// applications in progress. Called after [`Client::close`] (or
    /// [`Client::start_close`]), returns `Ok(())` at once.
    ///
    /// The returned future does nothing until it is polled: spawn it (`tokio::spawn`) or poll
    /// it concurrently with the code that closes the client (`tokio::select!`, `join!`), or
    /// use [`Client::run_until`], which does that for you. Until it is first polled the
    /// client stays [`ClientState::Idle`] (and [`Client::healthcheck`] says so).
    ///
    /// # Errors
    /// Before anything is dialed: [`ClientError::InvalidRequiredModule`] for a module
    /// `handler` requires whose name the config service cannot take, and
    /// [`ClientError::AlreadyRunning`] while another `run` of this client goes on. The
    /// settings themselves were checked by [`ClientBuilder::build`]. The peer's faults are
    /// never errors: they are logged and answered by a reconnect.
    pub async fn run(&self, handler: EventHandler) -> Result<(), ClientError> {
        if self.is_closed() {
            self.shared.closed_if_idle();
            return Ok(());
        }
        handler.check()?;
        let handler = handler.with_default_hint(self.shared.settings.config_data.config.get());
        let plan = self.plan(&handler);
        let shared = &*self.shared;
        if !shared
            .running
            .send_if_modified(|r| !std::mem::replace(r, true))
        {
            return Err(ClientError::AlreadyRunning);
        }
        let _guard = RunGuard { shared };
        driver::run(shared, &handler, plan).await;
        Ok(())
    }

    /// Runs sessions with `handler` until `shutdown` completes, then closes the client
    /// (normal closure) and returns once nothing of it runs: the shape of axum's
    /// `with_graceful_shutdown` and tonic's `serve_with_shutdown`. `shutdown` can be a signal
    /// (`async { tokio::signal::ctrl_c().await.ok(); }`), a `CancellationToken`'s
    /// `cancelled()`, or the application itself: an `async` block that waits for the first
    /// config, serves, and ends when the service should stop.
    ///
    /// If the run ends first (an error, or [`Client::close`] from elsewhere), `shutdown` is
    /// dropped and the run's result is returned: an error surfaces here, not in a task
    /// nobody awaits.
    ///
    /// ```no_run
    /// # use cluster_client::{Client, ConfigData, EventHandler, ModuleInfo};
    /// # async fn example() -> Result<(), cluster_client::ClientError> {
    /// # let module = ModuleInfo { module_name: "orders".into(), ..ModuleInfo::default() };
    /// # let config_data = ConfigData::from_json("1.0.0", "{}", "{}").unwrap();
    /// let client = Client::new(module, config_data, ["10.0.0.1:9001"])?;
    /// client
    ///     .run_until(EventHandler::new(), async {
    ///         tokio::signal::ctrl_c().await.ok();
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::run`].
    pub async fn run_until<F>(&self, handler: EventHandler, shutdown: F) -> Result<(), ClientError>
    where
        F: Future<Output = ()>,
    {
        let run = self.run(handler);
        tokio::pin!(run);
        tokio::pin!(shutdown);
        tokio::select! {
            result = &mut run => result,
            () = &mut shutdown => {
                tracing::debug!("shutdown: closing the client");
                self.start_close();
                run.await
            }
        }
    }

    /// Closes the client: ends the session (normal closure), cancels the applications in
    /// progress, and returns once no [`Client::run`] of it is going on, so that nothing of the
    /// client runs after it returns. Idempotent; may be called from a receiver (its
    /// application is cancelled too).
    ///
    /// A `run` goes on from its first poll until it returns or its future is dropped; while
    /// one does, `close` waits for it to notice, so that future must be spawned or polled
    /// concurrently (see [`Client::run`]; [`Client::run_until`] does both). When no `run` is
    /// going on, `close` returns at once: before any `run`, and also when a `run` future was
    /// made but never polled (that future, polled later, returns `Ok(())` at once without
    /// dialing). Use [`Client::start_close`] where you cannot wait.
    pub async fn close(&self) {
        self.start_close();
        let mut running = self.shared.running.subscribe();
        if !*running.borrow() {
            tracing::debug!("client closed while no run was going on");
        }
        let _ = running.wait_for(|r| !*r).await;
        self.shared.closed_if_idle();
    }

    /// Starts [`Client::close`] without waiting for `run` to finish (from synchronous code).
    pub fn start_close(&self) {
        self.shared.cancel.cancel();
    }

    /// Whether [`Client::close`] or [`Client::start_close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// `Ok` while the session is active (the module is ready), as Go's `Healthcheck`.
    ///
    /// # Errors
    /// [`SessionInactive`] otherwise, with the state the client is in (idle, connecting,
    /// backing off and why, …).
    pub fn healthcheck(&self) -> Result<(), SessionInactive> {
        let state = self.shared.state.borrow();
        if state.is_ready() {
            Ok(())
        } else {
            Err(SessionInactive {
                state: state.clone(),
            })
        }
    }

    /// A watch of the client's [`ClientState`].
    #[must_use]
    pub fn state(&self) -> watch::Receiver<ClientState> {
        self.shared.state.subscribe()
    }

    /// The masker applied to configs before they are logged: add or remove secret key
    /// substrings at run time.
    #[must_use]
    pub fn secret_masker(&self) -> &Arc<SecretMasker> {
        &self.shared.settings.masker
    }

    /// The module this client registers.
    #[must_use]
    pub fn module_info(&self) -> &ModuleInfo {
        &self.shared.settings.module_info
    }

    /// The config service hosts, as parsed by [`ClientBuilder::build`].
    #[must_use]
    pub fn hosts(&self) -> &[Endpoint] {
        &self.shared.endpoints
    }

    fn plan(&self, handler: &EventHandler) -> Plan {
        let settings = &self.shared.settings;
        let mut timeouts = settings.timeouts;
        // Saturating: a `Duration::MAX` wait means no deadline, not a panic.
        timeouts.initial_config = settings
            .config_arrival_wait
            .saturating_add(handler.config_apply_timeout);
        Plan {
            endpoints: self.shared.endpoints.clone(),
            connector: self.shared.connector.clone(),
            session: Plan::session_config(&self.shared, handler, timeouts),
            module_name: settings.module_info.module_name.clone(),
            seed: settings.seed.unwrap_or_else(random_seed),
        }
    }
}

/// The path the config service serves ETP on, which the client adds itself; accepted at the
/// end of a host entry because the fake config service prints its URL with it.
const ETP_PATH: &str = "/isp-etp";

/// Parses one host entry, with errors that say what to write instead and never echo user
/// info (a password) back.
fn parse_host(input: &str) -> Result<Endpoint, ClientError> {
    let trimmed = input.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, trimmed),
    };
    let safe_input = || match rest.rsplit_once('@') {
        Some((_, after)) => match scheme {
            Some(scheme) => format!("{scheme}://***@{after}"),
            None => format!("***@{after}"),
        },
        None => trimmed.to_owned(),
    };
    let invalid = |reason: String| ClientError::InvalidHost {
        input: safe_input(),
        reason,
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let path_ok =
        path.is_empty() || path == "/" || path.strip_suffix('/').unwrap_or(path) == ETP_PATH;
    if !path_ok {
        let bare = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        // `ip:port` is WebSocket; other schemes (wss://) stay in the suggestion.
        let host = match scheme {
            Some(scheme) if !scheme.eq_ignore_ascii_case("ws") => format!("{scheme}://{bare}"),
            _ => bare.to_owned(),
        };
        return Err(invalid(format!(
            "must not have a path: use {host} (the client adds {ETP_PATH}/ itself)"
        )));
    }
    let entry = match scheme {
        Some(scheme) => format!("{scheme}://{authority}"),
        None => authority.to_owned(),
    };
    entry.parse::<Endpoint>().map_err(|err| {
        let reason = match err.reason {
            "missing port" => format!(
                "{}: write host:port, as in Go's configServiceAddress (e.g. 127.0.0.1:9001)",
                err.reason
            ),
            "a host entry has no user info" => "must not have user info (user@)".to_owned(),
            reason => reason.to_owned(),
        };
        invalid(reason)
    })
}

/// The WebSocket connector with the default [`WsConfig`], built once per process (building
/// its TLS roots is not free).
fn default_connector() -> Result<Arc<dyn Connector>, SetupError> {
    static DEFAULT: OnceLock<Arc<dyn Connector>> = OnceLock::new();
    if let Some(connector) = DEFAULT.get() {
        return Ok(connector.clone());
    }
    let connector: Arc<dyn Connector> = Arc::new(WsConnector::new(WsConfig::default())?);
    Ok(DEFAULT.get_or_init(|| connector).clone())
}

/// Ends a run however it ends (returned, or its future dropped): publishes the final state
/// and lets [`Client::close`] return. (A connection still open is dropped with the run's
/// future: the peer sees it end.)
struct RunGuard<'a> {
    shared: &'a Shared,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        let state = if self.shared.cancel.is_cancelled() {
            ClientState::Closed
        } else {
            ClientState::Idle
        };
        self.shared.set_state(state);
        self.shared.running.send_replace(false);
    }
}

/// Options of a [`Client`]; every default is documented on its setter.
pub struct ClientBuilder {
    settings: Settings,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("ClientBuilder")
            .field("module", &s.module_info.module_name)
            .field("hosts", &s.hosts)
            .field("custom_connector", &s.connector.is_some())
            .field("timeouts", &s.timeouts)
            .field("config_arrival_wait", &s.config_arrival_wait)
            .field("backoff", &s.backoff)
            .field("seed", &s.seed)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Dials with `connector` instead of WebSocket (an in-memory network in tests, TCP).
    /// Default: WebSocket, `ws://` or `wss://` per host.
    #[must_use]
    pub fn connector(self, connector: impl Connector) -> Self {
        self.connector_arc(Arc::new(connector))
    }

    /// [`ClientBuilder::connector`] with a shared connector.
    #[must_use]
    pub fn connector_arc(mut self, connector: Arc<dyn Connector>) -> Self {
        self.settings.connector = Some(connector);
        self
    }

    /// The WebSocket settings (connect timeout 5 s, 4 MiB read limit, 4 KiB read buffer,
    /// TLS roots: see [`WsConfig`]). Ignored with a custom connector.
    #[must_use]
    pub fn ws_config(mut self, config: WsConfig) -> Self {
        self.settings.ws_config = Some(config);
        self
    }

    /// The TLS settings of `wss://` hosts (default: the webpki roots). Ignored with a custom
    /// connector. CA files ([`TlsConfig::add_ca_file`]) are read by [`ClientBuilder::build`],
    /// a blocking read: in async code, build on the blocking pool
    /// (`tokio::task::spawn_blocking`) or read the file with `tokio::fs::read` and use
    /// [`TlsConfig::add_ca_pem`]. Nothing is read from disk while the client runs.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        let config = self.settings.ws_config.take().unwrap_or_default();
        self.settings.ws_config = Some(config.with_tls(tls));
        self
    }

    /// How long each emit may wait for its ack. Default 1 s. Every timeout of this builder
    /// may be as long as you like: one too long for an `Instant` (`Duration::MAX`) means no
    /// deadline.
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeouts.ack = timeout;
        self
    }

    /// How long the handshake waits for the initial routes and each required module's first
    /// address list. Default 1 s.
    #[must_use]
    pub fn event_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeouts.routes = timeout;
        self.settings.timeouts.hosts = timeout;
        self
    }

    /// How long the handshake gives the config service to send the module's first config.
    /// The handshake's whole wait for the initial config
    /// ([`SessionTimeouts::initial_config`](crate::SessionTimeouts::initial_config)) is this
    /// plus the receiver's apply timeout
    /// ([`EventHandler::remote_config_receiver_with_timeout`](crate::EventHandler::remote_config_receiver_with_timeout)),
    /// as in Go. Default 5 s ([`DEFAULT_CONFIG_ARRIVAL_WAIT`]); [`Duration::MAX`]: no deadline.
    #[must_use]
    pub fn config_arrival_wait(mut self, wait: Duration) -> Self {
        self.settings.config_arrival_wait = wait;
        self
    }

    /// The interval between pings once ready. Default 5 s. [`Duration::ZERO`] turns pings
    /// off (as does `Duration::MAX`); a half-open connection then goes unnoticed.
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.settings.timeouts.ping_interval = interval;
        self
    }

    /// How long a pong may take. Default 3 s.
    #[must_use]
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeouts.pong_timeout = timeout;
        self
    }

    /// How many pongs in a row may be missed before the session is declared dead. Default 2.
    #[must_use]
    pub fn max_missed_pongs(mut self, missed: u32) -> Self {
        self.settings.timeouts.max_missed_pongs = missed;
        self
    }

    /// The delays between sessions. Default: 1 s, ×2 with 20 % jitter, capped at 30 s.
    #[must_use]
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Seeds the random choices (first host, jitter, session ids) for reproducible tests.
    /// Default: seeded from the clock.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// The masker applied to configs before they are logged. Default: a new
    /// [`SecretMasker`] (the default rule: `cluster_proto::secrets` module docs).
    #[must_use]
    pub fn secret_masker(mut self, masker: Arc<SecretMasker>) -> Self {
        self.settings.masker = masker;
        self
    }

    /// How many warnings the config service can cause per session (malformed frames,
    /// unknown events, error events): the first [`LogLimit::burst`] of each
    /// [`LogLimit::interval`], then one summary line with the count. Default: 5 per 10 s.
    #[must_use]
    pub fn log_limit(mut self, limit: LogLimit) -> Self {
        self.settings.log_limit = limit;
        self
    }

    /// Checks the settings and builds the client; nothing is dialed before
    /// [`Client::run`]. With CA files in [`ClientBuilder::tls`] this reads them (blocking
    /// reads); without, it touches no file.
    ///
    /// # Errors
    /// - [`ClientError::InvalidModuleName`]: the module's name breaks the wire's rules
    ///   ([`check_module_name`]: empty, longer than 256 bytes, `||`, `__ack_` prefix,
    ///   control characters);
    /// - [`ClientError::NoHosts`], [`ClientError::InvalidHost`] (the reason says what to
    ///   write instead; also for a scheme the default WebSocket connector cannot dial,
    ///   `tcp://` or `mem://` without [`ClientBuilder::connector`]);
    /// - [`ClientError::Setup`]: the WebSocket connector cannot be set up (a TLS setting
    ///   that does not load, a `wss://` host that is not a valid TLS server name).
    pub fn build(self) -> Result<Client, ClientError> {
        let settings = self.settings;
        let name = &settings.module_info.module_name;
        check_module_name(name).map_err(|error| ClientError::InvalidModuleName {
            name: name.clone(),
            error,
        })?;
        if settings.hosts.is_empty() {
            return Err(ClientError::NoHosts);
        }
        let endpoints = settings
            .hosts
            .iter()
            .map(|h| parse_host(h))
            .collect::<Result<Vec<_>, _>>()?;
        let connector = match &settings.connector {
            Some(connector) => connector.clone(),
            None => {
                if let Some((input, bad)) = settings
                    .hosts
                    .iter()
                    .zip(&endpoints)
                    .find(|(_, e)| !matches!(e.scheme, Scheme::Ws | Scheme::Wss))
                {
                    return Err(ClientError::InvalidHost {
                        input: input.clone(),
                        reason: format!(
                            "the default WebSocket connector dials ws:// and wss:// only, not \
                             {bad}; set a connector (ClientBuilder::connector) for other schemes"
                        ),
                    });
                }
                // A host the certificate cannot be checked against fails here, not at each dial.
                let default_tls = TlsConfig::new();
                let tls = settings.ws_config.as_ref().map_or(&default_tls, |c| &c.tls);
                for endpoint in endpoints.iter().filter(|e| e.scheme == Scheme::Wss) {
                    tls.name_for(&endpoint.host)?;
                }
                match &settings.ws_config {
                    Some(config) => Arc::new(WsConnector::new(config.clone())?),
                    None => default_connector()?,
                }
            }
        };
        tracing::debug!(
            module = %settings.module_info.module_name,
            hosts = endpoints.len(),
            "cluster client built; nothing is dialed until `run` or `run_until` is polled"
        );
        Ok(Client {
            shared: Arc::new(Shared {
                settings,
                endpoints,
                connector,
                cancel: CancellationToken::new(),
                state: watch::channel(ClientState::Idle).0,
                running: watch::channel(false).0,
                metrics: ClusterMetrics::new(),
            }),
        })
    }
}
