//! `observability.tracing` and `observability.sentry`, as isp-kit sets them up.
//!
//! Each part is a [`Layer`](::tracing_subscriber::Layer) of the module's `tracing` subscriber
//! and a guard that ends it at shutdown:
//!
//! - [`tracing::otlp`] (feature `otlp`): the module's `tracing` spans become OpenTelemetry
//!   spans, exported over OTLP/HTTP (protobuf) to `observability.tracing.address`, as
//!   isp-kit's `tracing.NewProviderFromConfiguration`.
//! - [`sentry::sentry`] (feature `sentry`): error-level log lines and panics become Sentry
//!   events, as isp-kit's `sentry.NewHubFromConfiguration` with `sentry.WrapErrorLogger`.
//!
//! Both return `Ok(None)` when their part is disabled in the local config.
//!
//! The bootstrap is this module's user; what is `pub` here is so only for the crate's
//! integration tests (`tests/observability_*.rs`), and hidden from the docs.

#[cfg(feature = "sentry")]
pub mod sentry;
#[cfg(feature = "otlp")]
pub mod tracing;

/// A layer of the module's subscriber, as the subscriber composition takes them (a
/// `Vec<BoxedLayer>` is itself a layer of the [`Registry`](::tracing_subscriber::Registry)).
pub type BoxedLayer =
    Box<dyn ::tracing_subscriber::Layer<::tracing_subscriber::Registry> + Send + Sync>;

/// Who the module is, for the resource of its spans and the tags of its Sentry events.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `moduleName`: the service name.
    pub module_name: String,
    /// The module's version.
    pub module_version: String,
    /// The instance: the outer IP, as isp-kit's `instanceId`.
    pub instance_id: String,
}

/// Why tracing or Sentry could not be set up, or tracing not shut down cleanly.
///
/// The messages follow isp-kit's (`context: cause`), and each cause is also the error's
/// [`source`](std::error::Error::source). No message, source or `Debug` output contains the
/// Sentry DSN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObservabilityError {
    /// `observability.tracing.enable` is set but `address` is empty.
    #[error(
        "tracing is enabled. address must be specified (observability.tracing.address, e.g. localhost:4318)"
    )]
    TracingAddressMissing,
    /// `observability.tracing.address` is no OTLP/HTTP endpoint this build can send to.
    #[error("observability.tracing.address {address:?}: {reason}")]
    TracingAddress {
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The OTLP/HTTP exporter could not be built (an endpoint that is no URL, a bad
    /// `OTEL_EXPORTER_OTLP_*` variable, no HTTP client).
    #[cfg(feature = "otlp")]
    #[error("new otlp http exporter: {0}")]
    TracingExporter(#[source] ::opentelemetry_otlp::ExporterBuildError),
    /// The tracer provider did not shut down cleanly: the last spans were not all exported
    /// in time (the collector is slow or unreachable) or their export failed.
    #[cfg(feature = "otlp")]
    #[error("shutdown tracing provider: {0}")]
    TracingShutdown(#[source] ::opentelemetry_sdk::error::OTelSdkError),
    /// `observability.sentry.enable` is set but `dsn` is empty (isp-kit's message).
    #[error("sentry is enabled. dsn must be specified. check sentry configuration")]
    SentryDsnMissing,
    /// `observability.sentry.dsn` is not a Sentry DSN (the DSN itself is not shown).
    #[cfg(feature = "sentry")]
    #[error("observability.sentry.dsn is not a valid sentry dsn: {0}")]
    SentryDsn(#[source] ::sentry::types::ParseDsnError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_isp_kit() {
        assert_eq!(
            ObservabilityError::SentryDsnMissing.to_string(),
            "sentry is enabled. dsn must be specified. check sentry configuration"
        );
        let err = ObservabilityError::TracingAddress {
            address: "https://collector:4318".into(),
            reason: "why",
        };
        assert_eq!(
            err.to_string(),
            "observability.tracing.address \"https://collector:4318\": why"
        );
    }
}
