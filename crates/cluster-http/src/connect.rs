//! The client's connector: hyper-util's `HttpConnector` (connect timeout, `TCP_NODELAY`),
//! timed for isp-kit's `http_client_connect_duration` and `http_client_dns_duration`.

use crate::error::BoxError;
use cluster_metrics::http::HttpClientMetrics;
use futures_util::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tower::Service;

tokio::task_local! {
    /// The `endpoint` label of the call being made (`None`: the metrics are off), for the
    /// connector's and resolver's metrics (they run inside the call's future when the call
    /// waits for them) and the response's.
    pub(crate) static CALL_ENDPOINT: Option<Arc<str>>;
}

/// Records `duration` with `record` under the current call's endpoint, if there is one.
fn observe(
    metrics: Option<&HttpClientMetrics>,
    endpoint: Option<&Arc<str>>,
    duration: Duration,
    record: fn(&cluster_metrics::http::HttpClientEndpointMetrics, Duration),
) {
    if let (Some(metrics), Some(endpoint)) = (metrics, endpoint) {
        metrics.with_endpoint(endpoint, |m| record(m, duration));
    }
}

pub(crate) fn current_endpoint() -> Option<Arc<str>> {
    CALL_ENDPOINT.try_with(Clone::clone).ok().flatten()
}

/// Resolves host names with `getaddrinfo` (hyper-util's `GaiResolver`), timed. Hosts that are
/// IP addresses (what the cluster delivers) are not resolved at all.
#[derive(Clone)]
pub(crate) struct Resolver {
    gai: GaiResolver,
    metrics: Option<Arc<HttpClientMetrics>>,
}

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.gai.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let endpoint = current_endpoint();
        let metrics = self.metrics.clone();
        let resolving = self.gai.call(name);
        Box::pin(async move {
            let started = Instant::now();
            let result = resolving.await;
            observe(
                metrics.as_deref(),
                endpoint.as_ref(),
                started.elapsed(),
                |m, d| m.observe_dns_lookup(d),
            );
            Ok(result?.collect::<Vec<_>>().into_iter())
        })
    }
}

/// The connector of the client's pool.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector<Resolver>,
    metrics: Option<Arc<HttpClientMetrics>>,
}

impl Connector {
    pub(crate) fn new(connect_timeout: Duration, metrics: Option<Arc<HttpClientMetrics>>) -> Self {
        let mut http = HttpConnector::new_with_resolver(Resolver {
            gai: GaiResolver::new(),
            metrics: metrics.clone(),
        });
        http.set_connect_timeout((!connect_timeout.is_zero()).then_some(connect_timeout));
        http.set_nodelay(true);
        Self { http, metrics }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let endpoint = current_endpoint();
        let metrics = self.metrics.clone();
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let started = Instant::now();
            let result = connecting.await;
            // Go's `ConnectDone` observes failures too.
            observe(
                metrics.as_deref(),
                endpoint.as_ref(),
                started.elapsed(),
                |m, d| m.observe_conn_establishment(d),
            );
            result.map_err(Into::into)
        })
    }
}
