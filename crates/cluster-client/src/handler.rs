//! What the application hands the client: the [`EventHandler`] and its receiver traits.
//!
//! The names are the Go ones in Rust case (`RemoteConfigReceiver`, `RoutesReceiver`,
//! `HostsUpgrader`, `EventHandler::require_module`), so users of both recognise them.
//! Closures serve as receivers too:
//!
//! ```
//! use bytes::Bytes;
//! use cluster_client::{EventHandler, RoundRobin, RoutingConfig};
//! use std::time::Duration;
//!
//! let auth_hosts = RoundRobin::new(Vec::<String>::new());
//! let handler = EventHandler::new()
//!     .remote_config_receiver_with_timeout(
//!         |config: Bytes| async move {
//!             let _parsed: serde_json::Value = serde_json::from_slice(&config)?;
//!             Ok::<(), serde_json::Error>(())
//!         },
//!         Duration::from_secs(3),
//!     )
//!     .routes_receiver(|routes: RoutingConfig| async move {
//!         println!("{} routes", routes.len());
//!         Ok::<(), std::convert::Infallible>(())
//!     })
//!     .require_module("auth", auth_hosts.clone());
//! assert_eq!(handler.required_modules().collect::<Vec<_>>(), ["auth"]);
//! ```

use crate::error::{BoxError, ClientError};
use async_trait::async_trait;
use bytes::Bytes;
use cluster_proto::RoutingConfig;
use cluster_proto::event::check_module_name;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The default bound on **one application** of a config by the remote config receiver (one
/// call of [`RemoteConfigReceiver::receive_config`]): 5 s, as in Go. Not to be confused with
/// [`DEFAULT_CONFIG_ARRIVAL_WAIT`](crate::DEFAULT_CONFIG_ARRIVAL_WAIT), how long the service
/// may take to send the first config; the handshake waits for the initial config the sum of
/// the two ([`SessionTimeouts::initial_config`](crate::SessionTimeouts::initial_config)).
pub const DEFAULT_CONFIG_APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default bound on one call of the routes receiver
/// ([`RoutesReceiver::receive_routes`]): 5 s (Go bounds config applications only).
pub const DEFAULT_ROUTES_APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Receives the module's remote config (Go: `cluster.RemoteConfigReceiver`).
///
/// Applications are serialised: the client never calls it while a previous call runs. Each
/// call is bounded by the handler's timeout
/// ([`EventHandler::remote_config_receiver_with_timeout`], default 5 s): past it the future is
/// **dropped** (cancelled) and counts as a failure. A returned error or a panic is logged and
/// the client goes on; for the initial config of a session it fails the handshake, which is
/// retried after the backoff (as in Go).
///
/// # Must not block
/// The call is awaited by the task that drives the session (Go runs it in a goroutine of its
/// own): a receiver that blocks the thread (synchronous IO, a long computation, a
/// `std::sync` lock held for long) stalls the session's acks and pings with it, and the
/// timeout cannot cancel it. Await, or move blocking work to `tokio::task::spawn_blocking`:
///
/// ```
/// use bytes::Bytes;
/// use cluster_client::{BoxError, EventHandler};
///
/// fn reload_slowly(config: &[u8]) -> Result<(), BoxError> {
///     let _ = config; // parse, rebuild caches, ...
///     Ok(())
/// }
///
/// let handler = EventHandler::new().remote_config_receiver(|config: Bytes| async move {
///     tokio::task::spawn_blocking(move || reload_slowly(&config)).await?
/// });
/// # drop(handler);
/// ```
#[async_trait]
pub trait RemoteConfigReceiver: Send + Sync + 'static {
    /// Applies `config`, the raw JSON object the config service sent (byte for byte).
    ///
    /// # Errors
    /// Any error rejects the config.
    async fn receive_config(&self, config: Bytes) -> Result<(), BoxError>;
}

#[async_trait]
impl<F, Fut, E> RemoteConfigReceiver for F
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    async fn receive_config(&self, config: Bytes) -> Result<(), BoxError> {
        (self)(config).await.map_err(Into::into)
    }
}

/// Receives the routing table: the declarations of every ready module instance (Go:
/// `cluster.RoutesReceiver`).
///
/// Tables are delivered one at a time, in arrival order (every table, none skipped), each call
/// bounded by the handler's routes timeout ([`EventHandler::routes_receiver_with_timeout`],
/// default 5 s; the Go client has none). An error or a panic is logged; for the initial table
/// it fails the handshake.
///
/// # Must not block
/// As for [`RemoteConfigReceiver`]: the call is awaited by the session's task, so a receiver
/// that blocks the thread stalls the session's acks and pings. Await, or use
/// `tokio::task::spawn_blocking`. Keep it well under the handshake's 1 s wait for the
/// initial table ([`ClientBuilder::event_timeout`](crate::ClientBuilder::event_timeout)).
#[async_trait]
pub trait RoutesReceiver: Send + Sync + 'static {
    /// Applies `routes`.
    ///
    /// # Errors
    /// Any error rejects the table.
    async fn receive_routes(&self, routes: RoutingConfig) -> Result<(), BoxError>;
}

#[async_trait]
impl<F, Fut, E> RoutesReceiver for F
where
    F: Fn(RoutingConfig) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    async fn receive_routes(&self, routes: RoutingConfig) -> Result<(), BoxError> {
        (self)(routes).await.map_err(Into::into)
    }
}

/// Receives the addresses (`ip:port`) of a required module's ready instances whenever they
/// change (Go: `cluster.HostsUpgrader`). [`RoundRobin`](crate::RoundRobin) is one.
///
/// It is called synchronously by the session task, in arrival order, so it must be quick (swap
/// a list, notify a channel). A panic is caught and logged; for the first list of a session it
/// fails the handshake.
pub trait HostsUpgrader: Send + Sync + 'static {
    /// The module's instances are now `hosts` (`ip:port`, `[ipv6]:port`; possibly empty).
    fn upgrade(&self, hosts: Vec<String>);
}

impl<F> HostsUpgrader for F
where
    F: Fn(Vec<String>) + Send + Sync + 'static,
{
    fn upgrade(&self, hosts: Vec<String>) {
        (self)(hosts);
    }
}

/// The application's side of a session (Go: `cluster.EventHandler`): which receivers get the
/// remote config, the routes and the addresses of the required modules.
///
/// What it holds decides what the session asks for and waits for: a config receiver makes the
/// handshake wait for the initial config; a routes receiver asks for routes (`requireRoutes`)
/// and waits for them; each required module is named in `MODULE:SEND_REQUIREMENTS`, waited for,
/// and listed in `MODULE:READY`. Cloning is cheap (reference counts).
#[derive(Clone)]
pub struct EventHandler {
    pub(crate) config: Option<Arc<dyn RemoteConfigReceiver>>,
    pub(crate) config_apply_timeout: Duration,
    pub(crate) routes: Option<Arc<dyn RoutesReceiver>>,
    pub(crate) routes_timeout: Duration,
    pub(crate) modules: Vec<(String, Arc<dyn HostsUpgrader>)>,
}

impl Default for EventHandler {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHandler")
            .field("remote_config_receiver", &self.config.is_some())
            .field("config_apply_timeout", &self.config_apply_timeout)
            .field("routes_receiver", &self.routes.is_some())
            .field("routes_timeout", &self.routes_timeout)
            .field(
                "required_modules",
                &self.required_modules().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl EventHandler {
    /// No receivers: the session only registers and declares the module ready.
    #[must_use]
    pub fn new() -> Self {
        Self {
            config: None,
            config_apply_timeout: DEFAULT_CONFIG_APPLY_TIMEOUT,
            routes: None,
            routes_timeout: DEFAULT_ROUTES_APPLY_TIMEOUT,
            modules: Vec::new(),
        }
    }

    /// Receives the remote config, each application bounded by 5 s
    /// ([`DEFAULT_CONFIG_APPLY_TIMEOUT`]).
    #[must_use]
    pub fn remote_config_receiver(self, receiver: impl RemoteConfigReceiver) -> Self {
        self.remote_config_receiver_with_timeout(receiver, DEFAULT_CONFIG_APPLY_TIMEOUT)
    }

    /// Receives the remote config, each application bounded by `timeout`. The handshake waits
    /// for the initial config the arrival wait
    /// ([`ClientBuilder::config_arrival_wait`](crate::ClientBuilder::config_arrival_wait), 5 s)
    /// plus `timeout`, as the Go client does.
    #[must_use]
    pub fn remote_config_receiver_with_timeout(
        mut self,
        receiver: impl RemoteConfigReceiver,
        timeout: Duration,
    ) -> Self {
        self.config = Some(Arc::new(receiver));
        self.config_apply_timeout = timeout;
        self
    }

    /// Receives the routing table, each call bounded by 5 s ([`DEFAULT_ROUTES_APPLY_TIMEOUT`]).
    #[must_use]
    pub fn routes_receiver(self, receiver: impl RoutesReceiver) -> Self {
        self.routes_receiver_with_timeout(receiver, DEFAULT_ROUTES_APPLY_TIMEOUT)
    }

    /// Receives the routing table, each call bounded by `timeout`.
    #[must_use]
    pub fn routes_receiver_with_timeout(
        mut self,
        receiver: impl RoutesReceiver,
        timeout: Duration,
    ) -> Self {
        self.routes = Some(Arc::new(receiver));
        self.routes_timeout = timeout;
        self
    }

    /// Requires module `name`: `upgrader` receives the addresses of its ready instances.
    /// Requiring the same module again replaces its upgrader (Go keeps them in a map) and
    /// keeps its place in the order.
    #[must_use]
    pub fn require_module(mut self, name: impl Into<String>, upgrader: impl HostsUpgrader) -> Self {
        let name = name.into();
        let upgrader: Arc<dyn HostsUpgrader> = Arc::new(upgrader);
        match self.modules.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = upgrader,
            None => self.modules.push((name, upgrader)),
        }
        self
    }

    /// The required modules, in the order they were first required.
    pub fn required_modules(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(|(n, _)| n.as_str())
    }

    /// Whether a remote config receiver is set.
    #[must_use]
    pub fn has_config_receiver(&self) -> bool {
        self.config.is_some()
    }

    /// Whether a routes receiver is set (then routes are required).
    #[must_use]
    pub fn has_routes_receiver(&self) -> bool {
        self.routes.is_some()
    }

    /// The bound on one config application by the receiver (default
    /// [`DEFAULT_CONFIG_APPLY_TIMEOUT`]).
    #[must_use]
    pub fn config_apply_timeout(&self) -> Duration {
        self.config_apply_timeout
    }

    /// Checks every required module's name against the wire's rules ([`check_module_name`]);
    /// [`Client::run`](crate::Client::run) does it before dialing.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequiredModule`] for the first name that breaks a rule.
    pub fn check(&self) -> Result<(), ClientError> {
        for name in self.required_modules() {
            check_module_name(name).map_err(|error| ClientError::InvalidRequiredModule {
                name: name.to_owned(),
                error,
            })?;
        }
        Ok(())
    }

    /// Wraps the config receiver so that refusing the module's own default config (`default`,
    /// the JSON sent in `MODULE:SEND_CONFIG_SCHEMA`) says so in the error: a config service
    /// that has no config for the module stores that default and sends it back, and a
    /// receiver that refuses it keeps the module from ever becoming ready.
    pub(crate) fn with_default_hint(mut self, default: &str) -> Self {
        if let Some(inner) = self.config.take() {
            self.config = Some(Arc::new(DefaultHint {
                inner,
                default: Arc::from(default),
            }));
        }
        self
    }

    pub(crate) fn upgrader(&self, module: &str) -> Option<&Arc<dyn HostsUpgrader>> {
        self.modules
            .iter()
            .find(|(n, _)| n == module)
            .map(|(_, u)| u)
    }
}

/// See [`EventHandler::with_default_hint`].
struct DefaultHint {
    inner: Arc<dyn RemoteConfigReceiver>,
    default: Arc<str>,
}

#[async_trait]
impl RemoteConfigReceiver for DefaultHint {
    async fn receive_config(&self, config: Bytes) -> Result<(), BoxError> {
        let result = self.inner.receive_config(config.clone()).await;
        result.map_err(|err| {
            let same = serde_json::from_slice::<serde_json::Value>(&config).ok()
                == serde_json::from_str::<serde_json::Value>(&self.default).ok();
            if same {
                format!(
                    "{err} (this is the module's own default config, which a config service \
                     with no config for the module stores and sends back: give the module a \
                     default its receiver accepts)"
                )
                .into()
            } else {
                err
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn closures_are_receivers() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let recv = move |c: Bytes| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(c);
                Ok::<(), std::io::Error>(())
            }
        };
        recv.receive_config(Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), [Bytes::from_static(b"{}")]);

        let failing = |_: RoutingConfig| async { Err::<(), _>("no".to_owned()) };
        let err = failing.receive_routes(Vec::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "no");
    }

    #[test]
    fn requiring_a_module_twice_replaces_its_upgrader_in_place() {
        let first = Arc::new(Mutex::new(0));
        let second = Arc::new(Mutex::new(0));
        let (f, s) = (first.clone(), second.clone());
        let handler = EventHandler::new()
            .require_module("A", move |_: Vec<String>| *f.lock().unwrap() += 1)
            .require_module("B", |_: Vec<String>| {})
            .require_module("A", move |_: Vec<String>| *s.lock().unwrap() += 1);
        assert_eq!(handler.required_modules().collect::<Vec<_>>(), ["A", "B"]);
        handler.upgrader("A").unwrap().upgrade(vec![]);
        assert_eq!((*first.lock().unwrap(), *second.lock().unwrap()), (0, 1));
        assert!(handler.upgrader("C").is_none());
    }

    #[test]
    fn defaults() {
        let handler = EventHandler::default();
        assert!(!handler.has_config_receiver());
        assert!(!handler.has_routes_receiver());
        assert_eq!(handler.config_apply_timeout(), Duration::from_secs(5));
        let handler = handler.remote_config_receiver_with_timeout(
            |_: Bytes| async { Ok::<(), BoxError>(()) },
            Duration::from_millis(10),
        );
        assert_eq!(handler.config_apply_timeout(), Duration::from_millis(10));
        assert!(format!("{handler:?}").contains("remote_config_receiver: true"));
    }
}
