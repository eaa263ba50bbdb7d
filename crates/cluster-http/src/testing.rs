//! Test helpers: a module's router on loopback in one line.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cluster_http::{ApiError, Endpoint, Router};
//! let router = Router::new()
//!     .handle(Endpoint::post("echo/json"), |_ctx, body: serde_json::Value| async move {
//!         Ok::<_, ApiError>(body)
//!     })
//!     .unwrap();
//! let server = cluster_http::testing::serve(router).await;
//! let answer: serde_json::Value =
//!     server.client().post("echo/json").json_body(&1).json().await.unwrap();
//! assert_eq!(answer, 1);
//! server.shutdown().await;
//! # });
//! ```

use crate::client::HttpClient;
use crate::router::Router;
use crate::server::Server;
use std::net::SocketAddr;

/// A router served on `127.0.0.1:<free port>` for a test.
#[derive(Debug)]
pub struct TestServer {
    server: Server,
}

/// Serves `router` on a free loopback port with the defaults.
///
/// # Panics
/// When no loopback port can be bound (a broken test machine).
pub async fn serve(router: Router) -> TestServer {
    let server = Server::bind(router, "127.0.0.1:0")
        .await
        .expect("bind a loopback port for the test server");
    TestServer { server }
}

impl TestServer {
    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `ip:port`, as the cluster delivers hosts.
    #[must_use]
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// A client of this server alone.
    #[must_use]
    pub fn client(&self) -> HttpClient {
        HttpClient::new([self.host()])
    }

    /// The server.
    #[must_use]
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Shuts it down gracefully.
    ///
    /// # Panics
    /// When the server had failed.
    pub async fn shutdown(self) {
        self.server
            .shutdown()
            .await
            .expect("test server stopped cleanly");
    }
}
