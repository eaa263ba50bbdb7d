//! The infra server, isp-kit's `infra.Server`: `/internal/health`, `/internal/metrics` and
//! `/internal/metrics/descriptions` on `infraServerPort`, served within bounds
//! (`cluster-serve`: a connection cap, header, body and write timeouts, a shutdown deadline).
//!
//! Not served: Go's `/internal/debug/pprof/` (Go's profiler; there is no Rust equivalent of
//! that endpoint).

use crate::health::{self, Health};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use cluster_metrics::prometheus::Prometheus;
use std::time::Duration;

/// `/internal/health`.
pub const HEALTH_PATH: &str = "/internal/health";
/// `/internal/metrics`.
pub const METRICS_PATH: &str = crate::local::METRICS_PATH;
/// `/internal/metrics/descriptions`.
pub const DESCRIPTIONS_PATH: &str = "/internal/metrics/descriptions";

/// The bounds of the infra server: at most 64 connections (Prometheus and the probes need
/// few), a request head within 5 s, a stalled write dropped after 10 s, 2 s to finish at
/// shutdown; no request body is read.
pub(crate) fn serve_config() -> cluster_serve::ServeConfig {
    cluster_serve::ServeConfig::new("infra")
        .with_max_connections(64)
        .with_header_timeout(Duration::from_secs(5))
        .with_body_timeout(Duration::from_secs(5))
        .with_max_body_size(64 << 10)
        .with_shutdown_timeout(Duration::from_secs(2))
}

/// The infra routes (any method, as Go's mux), plus `extra` (a module's own, as isp-config-
/// service adds `/internal/metrics/autodiscovery` to its infra server).
pub(crate) fn router(health: Health, metrics: &'static Prometheus, extra: Router) -> Router {
    Router::new()
        .route(
            HEALTH_PATH,
            any(move || {
                let health = health.clone();
                async move { health_response(&health).await }
            }),
        )
        .route(
            METRICS_PATH,
            any(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        cluster_metrics::prometheus::CONTENT_TYPE,
                    )],
                    metrics.render(),
                )
            }),
        )
        .route(
            DESCRIPTIONS_PATH,
            any(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    metrics.descriptions(),
                )
            }),
        )
        .merge(extra)
}

async fn health_response(health: &Health) -> Response {
    let report = health.report().await;
    let status = if report.passed() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    // Go's json.Encoder ends the document with a newline.
    let mut body = serde_json::to_vec(&*report).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, health::CONTENT_TYPE)], body).into_response()
}
