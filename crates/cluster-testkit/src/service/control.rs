//! Control: change configs as an admin would, send errors, disconnect, refuse, stop and
//! restart, and inject faults ([`Fault`]) on acks and events.

use super::runtime::{ListenAddr, shorten};
use super::{CLOSE_GOING_AWAY, FakeConfigService};
use crate::state::{ConfigUpdateError, ErrorEvent, Limits, UpdateMode};
use bytes::Bytes;
use cluster_etp::Conn;
use cluster_proto::secrets::SecretMasker;
use cluster_transport::ws::WsAcceptor;
use cluster_transport::{Acceptor, CLOSE_NORMAL, TransportError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A fault to inject on an ack or an outgoing event (see [`FakeConfigService::fault_ack`] and
/// [`FakeConfigService::fault_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send it this much later.
    Delay(Duration),
    /// Never send it.
    Swallow,
}

/// An accepted config update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigChange {
    /// The active version after the update.
    pub version: u64,
    /// Whether the config changed (`false`: it was equal to the active one; nothing was sent).
    pub changed: bool,
    /// How many connections are subscribed to the change (`CONFIG:SEND_CONFIG_CHANGED` was
    /// queued to each of them, unless an event fault holds it back or swallows it).
    pub notified: usize,
}

impl FakeConfigService {
    // ----- control -----

    /// Sets `module`'s active config as an admin would, validated against its stored schema.
    /// `version`: the version this update is based on (`None`: no check); a stale version is
    /// refused. Every config subscriber gets `CONFIG:SEND_CONFIG_CHANGED` with `config` byte
    /// for byte. See [`ClusterState::set_config`](crate::state::ClusterState::set_config) for the
    /// rules.
    ///
    /// # Errors
    /// A [`ConfigUpdateError`] listing why; nothing changes then.
    pub fn set_config(
        &self,
        module: &str,
        config: impl Into<Bytes>,
        version: Option<u64>,
    ) -> Result<ConfigChange, ConfigUpdateError> {
        self.update_config(module, config.into(), version, UpdateMode::Validated)
    }

    /// [`FakeConfigService::set_config`] without schema validation (isp-config-service's
    /// `unsafe` update). An unknown module is created: this is how a test gives a module its
    /// config before it first connects.
    ///
    /// # Errors
    /// A [`ConfigUpdateError`] when `config` is not a JSON object or `version` is stale.
    pub fn set_config_unsafe(
        &self,
        module: &str,
        config: impl Into<Bytes>,
        version: Option<u64>,
    ) -> Result<ConfigChange, ConfigUpdateError> {
        self.update_config(module, config.into(), version, UpdateMode::Unsafe)
    }

    pub(super) fn update_config(
        &self,
        module: &str,
        config: Bytes,
        version: Option<u64>,
        mode: UpdateMode,
    ) -> Result<ConfigChange, ConfigUpdateError> {
        let mut inner = self.shared.lock();
        let update = match inner
            .state
            .set_config(module, config.clone(), version, mode)
        {
            Ok(update) => update,
            Err(err) => {
                drop(inner);
                // The error names the module, the place and the rule, never a value.
                tracing::info!(module = ?shorten(module), error = %err, "config refused");
                return Err(err);
            }
        };
        let notified = update
            .notifications
            .iter()
            .map(|n| n.recipients.len())
            .sum();
        inner.deliver(update.notifications, &self.shared.me);
        drop(inner);
        self.shared.bump();
        // Never the content at INFO: a config holds passwords. Its size and the fingerprint of
        // its masked form tell two versions apart; the masked content is at DEBUG.
        let masker = SecretMasker::new();
        tracing::info!(
            module,
            version = update.version,
            changed = update.changed,
            notified,
            size = config.len(),
            hash = %masker.fingerprint(&config),
            "config set"
        );
        tracing::debug!(
            module,
            version = update.version,
            config = %masker.mask(&config),
            "config set (secrets masked)"
        );
        Ok(ConfigChange {
            version: update.version,
            changed: update.changed,
            notified,
        })
    }

    /// The limits the service enforces (see
    /// [`FakeConfigServiceBuilder::limits`](super::FakeConfigServiceBuilder::limits)).
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.shared.lock().state.limits()
    }

    /// Sends `ERROR_CONFIG` or `ERROR_CONNECTION` with `text` to every open connection of
    /// `module`; returns how many. A text whose frame would be over [`Limits::max_frame_len`]
    /// is sent to none (0, and an error line).
    pub fn send_error(&self, module: &str, kind: ErrorEvent, text: &str) -> usize {
        let mut inner = self.shared.lock();
        let max_frame_len = inner.state.limits().max_frame_len;
        if crate::state::frame_len(kind.name(), text.len()) > max_frame_len {
            drop(inner);
            tracing::error!(module = ?shorten(module), len = text.len(), max_frame_len, "error text too large to send");
            return 0;
        }
        let Some(notification) = inner.state.error_event(module, kind, text) else {
            return 0;
        };
        let count = notification.recipients.len();
        inner.deliver(vec![notification], &self.shared.me);
        drop(inner);
        self.shared.bump();
        count
    }

    /// Closes every open connection of `module` (code 1000) and returns how many. When it
    /// returns the instances are gone, the other modules notified and the connections closed.
    pub async fn disconnect_module(&self, module: &str) -> usize {
        self.disconnect_where(
            Some(module),
            CLOSE_NORMAL,
            "disconnected by the fake config service",
        )
        .await
    }

    /// Closes every open connection (code 1000) and returns how many.
    pub async fn disconnect_all(&self) -> usize {
        self.disconnect_where(
            None,
            CLOSE_NORMAL,
            "disconnected by the fake config service",
        )
        .await
    }

    pub(super) async fn disconnect_where(
        &self,
        module: Option<&str>,
        code: u16,
        reason: &str,
    ) -> usize {
        let conns: Vec<Conn> = {
            let mut inner = self.shared.lock();
            let ids = match module {
                Some(module) => inner.state.connections_of(module),
                None => inner.state.connection_ids(),
            };
            let mut conns = Vec::with_capacity(ids.len());
            for id in ids {
                let notifications = inner.state.disconnect(id);
                inner.deliver(notifications, &self.shared.me);
                if let Some(slot) = inner.conns.get(&id) {
                    // Closed now, so nothing queued after this point reaches it.
                    slot.conn.start_close(code, reason);
                    conns.push(slot.conn.clone());
                }
            }
            conns
        };
        self.shared.bump();
        let count = conns.len();
        futures_util::future::join_all(conns.iter().map(Conn::closed)).await;
        count
    }

    /// While `true`, new clients are accepted at the transport level and closed at once with
    /// 1013 ("try again later"), before any event; open connections stay.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.lock().refuse = refuse;
    }

    /// Stops every listener (their addresses are free again) and closes every connection with
    /// 1001 ("going away"). Modules, configs and schemas stay; ready instances go with their
    /// connections. Idempotent.
    pub async fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut inner = self.shared.lock();
            inner
                .listeners
                .iter_mut()
                .filter_map(|l| {
                    l.stop.take();
                    l.task.take()
                })
                .collect()
        };
        for task in tasks {
            // The task ends as soon as it sees its stop sender dropped; it cannot panic.
            let _ = task.await;
        }
        self.disconnect_where(None, CLOSE_GOING_AWAY, "the fake config service stops")
            .await;
    }

    /// Listens again on every address it listened on before [`FakeConfigService::stop`]
    /// (listeners still running are left alone). The state is as `stop` left it.
    ///
    /// # Errors
    /// A [`TransportError`] if an address cannot be bound again (another process took the
    /// port); the listeners bound so far stay.
    pub async fn restart(&self) -> Result<(), TransportError> {
        let stopped: Vec<ListenAddr> = {
            let inner = self.shared.lock();
            inner
                .listeners
                .iter()
                .filter(|l| l.task.is_none())
                .map(|l| l.addr.clone())
                .collect()
        };
        for addr in stopped {
            let acceptor: Box<dyn Acceptor> = match &addr {
                ListenAddr::Memory(host) => Box::new(self.shared.network.bind(host)?),
                ListenAddr::Ws(socket) => Box::new(self.rebind_ws(*socket).await?),
            };
            self.start_listener(addr, acceptor);
        }
        Ok(())
    }

    /// Binds `addr` again. The old listener socket is closed by a task that may not have run
    /// yet, so "address in use" is retried for up to a second.
    pub(super) async fn rebind_ws(&self, addr: SocketAddr) -> Result<WsAcceptor, TransportError> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut pause = Duration::from_millis(1);
        loop {
            match WsAcceptor::bind(addr, self.shared.ws_config.clone()).await {
                Err(TransportError::Io(err))
                    if err.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Injects `fault` on the acks of `event` (e.g. `MODULE:READY`), or removes it (`None`).
    /// A delayed ack is recorded when it goes out; a swallowed one is never sent (it holds one
    /// handler slot of its connection until the connection closes).
    pub fn fault_ack(&self, event: &str, fault: Option<Fault>) {
        let mut inner = self.shared.lock();
        match fault {
            Some(fault) => inner.ack_faults.insert(event.to_owned(), fault),
            None => inner.ack_faults.remove(event),
        };
    }

    /// Injects `fault` on outgoing `event`s (e.g. `CONFIG:SEND_CONFIG_CHANGED` or
    /// `A_MODULE_CONNECTED`), or removes it (`None`). Delayed events keep their order among
    /// themselves (one delay line per service, first in first out: an event is never sent
    /// early, but may wait for one queued before it). Per-connection order is kept too: while
    /// a connection has a delayed event pending, its later events without a fault wait behind
    /// it (other connections get theirs at once). A swallowed event is not recorded.
    pub fn fault_event(&self, event: &str, fault: Option<Fault>) {
        let mut inner = self.shared.lock();
        match fault {
            Some(fault) => inner.event_faults.insert(event.to_owned(), fault),
            None => inner.event_faults.remove(event),
        };
    }

    /// Removes every ack and event fault.
    pub fn clear_faults(&self) {
        let mut inner = self.shared.lock();
        inner.ack_faults.clear();
        inner.event_faults.clear();
    }
}
