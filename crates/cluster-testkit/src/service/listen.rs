//! Listeners: in memory ([`MemoryListener`]) and on WebSocket, and the connector that reaches
//! the memory ones.

use super::FakeConfigService;
use super::MEMORY_HOST;
use super::runtime::{ListenAddr, Listener, accept_loop};
use cluster_transport::memory::MemoryNetwork;
use cluster_transport::ws::WsAcceptor;
use cluster_transport::{Acceptor, Connector, Endpoint, TransportError};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// An in-memory listener: the host to put in a client's host list and the connector that
/// reaches it.
#[derive(Clone)]
pub struct MemoryListener {
    /// `host:port` on the service's [`MemoryNetwork`], e.g. `fake-config-service:49152`.
    pub host: String,
    /// Dials the service's memory network (every memory listener of the service).
    pub connector: Arc<dyn Connector>,
}

impl MemoryListener {
    /// The host with the in-memory scheme, `mem://fake-config-service:49152`: put it in a
    /// client's host list (with [`MemoryListener::connector`]) and the client's logs and
    /// states show the in-memory scheme rather than `ws://`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("mem://{}", self.host)
    }

    /// The host as an [`Endpoint`].
    ///
    /// # Panics
    /// Never: the host is always `name:port`.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint {
        self.host
            .parse()
            .expect("a memory listener address is host:port")
    }
}

impl fmt::Debug for MemoryListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryListener")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl FakeConfigService {
    // ----- listeners -----

    /// Listens on a new address of the service's in-memory network
    /// (`fake-config-service:<port>`). Several listeners share the same state, like the nodes
    /// of a config service cluster; one connector reaches them all.
    ///
    /// # Errors
    /// A [`TransportError`] if the memory network refuses the address (it does not).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn listen_memory(&self) -> Result<MemoryListener, TransportError> {
        let acceptor = self.shared.network.bind(&format!("{MEMORY_HOST}:0"))?;
        let host = acceptor.local_addr().to_owned();
        self.start_listener(ListenAddr::Memory(host.clone()), Box::new(acceptor));
        Ok(MemoryListener {
            host,
            connector: self.connector(),
        })
    }

    /// Listens for WebSocket clients on `addr` (`127.0.0.1:0` picks a port), at
    /// `ws://<addr>/isp-etp/?module_name=<name>` as isp-config-service does. Real Go isp-kit
    /// services can be pointed at it.
    ///
    /// # Errors
    /// A [`TransportError`] if the address cannot be bound.
    pub async fn listen_ws(&self, addr: &str) -> Result<SocketAddr, TransportError> {
        let acceptor = WsAcceptor::bind(addr, self.shared.ws_config.clone()).await?;
        let local = acceptor.local_addr();
        self.start_listener(ListenAddr::Ws(local), Box::new(acceptor));
        Ok(local)
    }

    /// A connector to the service's in-memory network (it reaches every memory listener).
    #[must_use]
    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(self.shared.network.connector())
    }

    /// The service's in-memory network, for transport-level faults
    /// ([`MemoryNetwork::connections`] gives each connection's `Faults`: sever, stall, …).
    #[must_use]
    pub fn memory_network(&self) -> &MemoryNetwork {
        &self.shared.network
    }

    /// The addresses listened on: `mem://host:port` and `ws://ip:port`.
    #[must_use]
    pub fn listeners(&self) -> Vec<String> {
        let inner = self.shared.lock();
        inner.listeners.iter().map(|l| l.addr.to_string()).collect()
    }

    pub(super) fn start_listener(&self, addr: ListenAddr, acceptor: Box<dyn Acceptor>) {
        let (stop, stop_rx) = oneshot::channel();
        let name = addr.to_string();
        tracing::info!(listener = %name, "fake config service listening");
        let task = tokio::spawn(accept_loop(
            Arc::downgrade(&self.shared),
            acceptor,
            name,
            stop_rx,
        ));
        let mut inner = self.shared.lock();
        match inner.listeners.iter_mut().find(|l| l.addr == addr) {
            Some(listener) => {
                listener.stop = Some(stop);
                listener.task = Some(task);
            }
            None => inner.listeners.push(Listener {
                addr,
                stop: Some(stop),
                task: Some(task),
            }),
        }
    }
}
