//! Ready instances declared without a client: [`FakeConfigService::declare_instance`].
//!
//! A test of module `orders`, which requires `auth`, needs `auth` to have ready instances; it
//! does not need a second full client for that. A declared instance is one in-memory ETP
//! connection to the service that sends `MODULE:READY` with the declaration and nothing else
//! (no schema, no requirements, no subscriptions). For the service it is a connection like
//! any other: the instance is in the routing table, every module requiring `auth` gets its
//! address, and it goes away like a module that disconnects when the handle is removed or
//! dropped. Await it from the other side with [`FakeConfigService::wait_ready_instances`].

use crate::service::FakeConfigService;
use cluster_etp::{Conn, ConnConfig, ConnError, Handlers};
use cluster_proto::event::{self, ModuleNameError};
use cluster_proto::payload::{AddressConfiguration, BackendDeclaration, EndpointDescriptor};
use cluster_transport::{CLOSE_NORMAL, Endpoint, TransportError};
use std::fmt;

/// Why [`FakeConfigService::declare_instance`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareError {
    /// The declaration's module name cannot be used on the wire.
    #[error("invalid module name {name:?}: {error}")]
    ModuleName {
        /// The name.
        name: String,
        /// The rule it breaks.
        error: ModuleNameError,
    },
    /// The in-memory connection could not be opened (the service is stopped, say).
    #[error("connect to the fake service: {0}")]
    Connect(#[from] TransportError),
    /// `MODULE:READY` was not acknowledged.
    #[error("MODULE:READY not acknowledged: {0}")]
    NoAck(#[from] ConnError),
    /// `MODULE:READY` was acknowledged with an error text.
    #[error("MODULE:READY refused by the fake service: {0}")]
    Refused(String),
}

/// A ready instance declared with [`FakeConfigService::declare_instance`]; it stays declared
/// as long as this handle lives. Dropping it starts closing its connection; await
/// [`DeclaredInstance::remove`] to know the service has seen the close.
pub struct DeclaredInstance {
    conn: Conn,
    declaration: BackendDeclaration,
}

impl fmt::Debug for DeclaredInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeclaredInstance")
            .field("module", &self.declaration.module_name)
            .field("address", &self.declaration.address.to_string())
            .finish_non_exhaustive()
    }
}

impl DeclaredInstance {
    /// The declaration the service stored (as sent).
    #[must_use]
    pub fn declaration(&self) -> &BackendDeclaration {
        &self.declaration
    }

    /// Removes the instance: closes its connection (normal closure) and returns once the
    /// close handshake is over. The service then tells the routing subscribers and the
    /// modules requiring it, as when a module disconnects.
    pub async fn remove(self) {
        self.conn
            .close(CLOSE_NORMAL, "declared instance removed")
            .await;
    }
}

impl Drop for DeclaredInstance {
    fn drop(&mut self) {
        self.conn
            .start_close(CLOSE_NORMAL, "declared instance dropped");
    }
}

/// A declaration of a `grpc` instance of `module` at `ip:port` serving `endpoints`, for
/// [`FakeConfigService::declare_instance`]. Versions are `1.0.0`; no required modules.
#[must_use]
pub fn instance(module: &str, ip: &str, port: &str, endpoints: &[&str]) -> BackendDeclaration {
    BackendDeclaration {
        module_name: module.to_owned(),
        version: "1.0.0".to_owned(),
        lib_version: "1.0.0".to_owned(),
        endpoints: endpoints
            .iter()
            .map(|path| EndpointDescriptor::new(*path))
            .collect(),
        address: AddressConfiguration::new(ip, port),
        ..BackendDeclaration::default()
    }
}

impl FakeConfigService {
    /// Declares a ready instance of `declaration.module_name` without running a client (see
    /// the [module docs](crate::declared)): one in-memory connection that sends `MODULE:READY`
    /// only. Returns once the service acknowledged it, so the instance is in
    /// [`FakeConfigService::ready_instances`] and on its way to the modules that require it.
    /// Listens in memory first if the service has no memory listener.
    ///
    /// ```
    /// use cluster_testkit::FakeConfigService;
    /// use cluster_testkit::declared::instance;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let service = FakeConfigService::new();
    /// let auth = service
    ///     .declare_instance(instance("auth", "10.0.0.7", "9000", &["auth/api/login"]))
    ///     .await
    ///     .unwrap();
    /// // Await it as any instance (next to `wait_ready_instances`, the other way round).
    /// let ready = service.wait_ready_instances("auth", 1, Duration::from_secs(1)).await.unwrap();
    /// assert_eq!(ready[0].address.to_string(), "10.0.0.7:9000");
    /// auth.remove().await;
    /// service.wait_ready_instances("auth", 0, Duration::from_secs(1)).await.unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`DeclareError`]: a module name the wire cannot carry, a stopped service, a refused
    /// declaration.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn declare_instance(
        &self,
        declaration: BackendDeclaration,
    ) -> Result<DeclaredInstance, DeclareError> {
        let name = declaration.module_name.clone();
        event::check_module_name(&name).map_err(|error| DeclareError::ModuleName {
            name: name.clone(),
            error,
        })?;
        let memory = self
            .listeners()
            .into_iter()
            .filter(|l| l.starts_with("mem://"))
            .find_map(|l| l.parse::<Endpoint>().ok());
        let endpoint = match memory {
            Some(endpoint) => endpoint,
            None => self.listen_memory()?.endpoint(),
        };
        let transport = self.connector().connect(&endpoint, &name).await?;
        let conn = Conn::spawn(transport, Handlers::new(), ConnConfig::default());
        let instance = DeclaredInstance { conn, declaration };
        let ack = instance
            .conn
            .emit_with_ack(event::MODULE_READY, &instance.declaration.to_json())
            .await?;
        if ack.as_ref() != b"ok" {
            return Err(DeclareError::Refused(
                String::from_utf8_lossy(&ack).into_owned(),
            ));
        }
        tracing::info!(module = %name, address = %instance.declaration.address, "instance declared");
        Ok(instance)
    }
}
