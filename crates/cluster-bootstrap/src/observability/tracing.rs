//! `observability.tracing`: the module's `tracing` spans as OpenTelemetry spans over
//! OTLP/HTTP, as isp-kit's `tracing.NewProviderFromConfiguration`.
//!
//! As in Go: an OTLP/HTTP exporter (protobuf, plain HTTP as Go's `WithInsecure`) to
//! `address`, a batch span processor (the SDK's defaults: a batch every 5 s or every 512
//! spans, at most 2048 queued), every span sampled, and a resource of
//! `deployment.environment`, `service.version`, `service.name`, `service.instance.id` and
//! the configured `attributes` (which win over the four), over the SDK's defaults
//! (`telemetry.sdk.*`, `OTEL_RESOURCE_ATTRIBUTES`). The W3C Trace Context propagator and the
//! provider become OpenTelemetry's global ones.
//!
//! The spans come from `tracing`: the layer [`otlp`] returns turns each span the subscriber
//! lets through into an OpenTelemetry span (`tracing-opentelemetry`), its fields as
//! attributes and the events inside it as span events. Spans of the exporter's own HTTP
//! stack (targets `hyper`, `hyper_util`, `h2`, `reqwest`, `opentelemetry*`) are left out, so
//! an export never traces itself.

use super::{BoxedLayer, Identity, ObservabilityError};
use crate::local::TracingConfig;
use ::opentelemetry::trace::TracerProvider as _;
use ::opentelemetry::{InstrumentationScope, KeyValue};
use ::opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use ::opentelemetry_sdk::Resource;
use ::opentelemetry_sdk::error::OTelSdkError;
use ::opentelemetry_sdk::propagation::TraceContextPropagator;
use ::opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use ::tracing_subscriber::Layer as _;
use ::tracing_subscriber::filter::filter_fn;
use std::time::Duration;

/// How long [`TracingGuard::shutdown`] waits for the last spans to be exported: 5 s, the
/// OpenTelemetry SDK's default. (One export request may take up to 10 s, the exporter's
/// default timeout, `OTEL_EXPORTER_OTLP_TIMEOUT`; at shutdown the wait ends first.)
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The path the OTLP/HTTP exporter posts spans to, after the configured address.
pub(crate) const TRACES_PATH: &str = "/v1/traces";

/// The schema of the resource's attribute names: semantic conventions 1.21.0, isp-kit's.
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.21.0";

/// The targets whose spans the layer leaves out: the exporter's own HTTP stack (reqwest's
/// blocking client over hyper) and the OpenTelemetry crates.
const EXPORTER_TARGETS: &[&str] = &["hyper", "hyper_util", "h2", "reqwest", "opentelemetry"];

/// Sets up `observability.tracing`: `None` when it is disabled.
///
/// When enabled, builds the exporter and the tracer provider, makes them (and the W3C Trace
/// Context propagator) OpenTelemetry's global ones, and returns the layer that turns the
/// subscriber's spans into OpenTelemetry spans, with the guard that exports the last spans at
/// shutdown.
///
/// The address: with `http://`, it is used as written, otherwise `http://{address}`; then
/// `TRACES_PATH` (`/v1/traces`) is appended (unless the address already ends with it).
///
/// # Errors
/// [`ObservabilityError::TracingAddressMissing`] when the address is empty;
/// [`ObservabilityError::TracingAddress`] when it has a scheme other than `http://` (an
/// `https://` address needs TLS, which this build's exporter has not);
/// [`ObservabilityError::TracingExporter`] when the exporter cannot be built.
pub fn otlp(
    config: &TracingConfig,
    id: &Identity,
) -> Result<Option<(BoxedLayer, TracingGuard)>, ObservabilityError> {
    if !config.enable {
        return Ok(None);
    }
    let endpoint = traces_endpoint(&config.address)?;
    // `build` creates reqwest's blocking client on a thread of its own, so this may run
    // inside an async runtime.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .map_err(ObservabilityError::TracingExporter)?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource(config, id))
        .build();

    ::opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ::opentelemetry::global::set_tracer_provider(provider.clone());

    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    let layer = ::tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // No `busy_ns`/`idle_ns` attributes: they cost two clock reads on every enter and
        // exit of every span, and Go's spans have no such thing.
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|metadata| !is_exporter_target(metadata.target())));
    Ok(Some((
        Box::new(layer),
        TracingGuard {
            provider: Some(provider),
        },
    )))
}

/// The URL the exporter posts to, from `observability.tracing.address`.
///
/// # Errors
/// When the address is empty or has a scheme other than `http://`.
pub(crate) fn traces_endpoint(address: &str) -> Result<String, ObservabilityError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(ObservabilityError::TracingAddressMissing);
    }
    let url = match address.split_once("://") {
        None => format!("http://{address}"),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => address.to_owned(),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(ObservabilityError::TracingAddress {
                address: address.to_owned(),
                reason: "https needs TLS, which this build's OTLP exporter has not; use http:// \
                         (plain HTTP, as isp-kit's exporter) or a collector's plain-HTTP port",
            });
        }
        Some(_) => {
            return Err(ObservabilityError::TracingAddress {
                address: address.to_owned(),
                reason: "the scheme must be http:// (or none: host:port)",
            });
        }
    };
    let url = url.trim_end_matches('/');
    if url.ends_with(TRACES_PATH) {
        Ok(url.to_owned())
    } else {
        Ok(format!("{url}{TRACES_PATH}"))
    }
}

/// The resource of the module's spans: the SDK's defaults, isp-kit's four attributes, then
/// the configured ones.
pub(crate) fn resource(config: &TracingConfig, id: &Identity) -> Resource {
    let standard = [
        KeyValue::new("deployment.environment", config.environment.clone()),
        KeyValue::new("service.version", id.module_version.clone()),
        KeyValue::new("service.name", id.module_name.clone()),
        KeyValue::new("service.instance.id", id.instance_id.clone()),
    ];
    let custom = config
        .attributes
        .iter()
        .map(|(key, value)| KeyValue::new(key.clone(), value.clone()));
    Resource::builder()
        .with_schema_url([], SCHEMA_URL)
        .with_attributes(standard)
        .with_attributes(custom)
        .build()
}

/// Whether spans of this target are left out: those of the exporter's own stack.
fn is_exporter_target(target: &str) -> bool {
    EXPORTER_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

/// Ends `observability.tracing`: exports the spans still queued and shuts the tracer
/// provider down, in at most [`SHUTDOWN_TIMEOUT`] (5 s).
///
/// [`shutdown`](Self::shutdown) does so and reports how it went; dropping the guard does the
/// same, silently. Either blocks the calling thread (up to the bound): in async code, call it
/// from `spawn_blocking`. Spans still open at that point are not exported, and spans that end
/// afterwards are dropped.
#[derive(Debug)]
#[must_use = "dropping the guard shuts tracing down"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Exports the queued spans and shuts the provider down, in at most
    /// [`SHUTDOWN_TIMEOUT`].
    ///
    /// # Errors
    /// [`ObservabilityError::TracingShutdown`] when the spans could not all be exported in
    /// time or their export failed (they are lost; the process may go on ending).
    pub fn shutdown(mut self) -> Result<(), ObservabilityError> {
        self.shutdown_provider()
    }

    fn shutdown_provider(&mut self) -> Result<(), ObservabilityError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        match provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            Ok(()) | Err(OTelSdkError::AlreadyShutdown) => Ok(()),
            Err(err) => Err(ObservabilityError::TracingShutdown(err)),
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        let _ = self.shutdown_provider();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::opentelemetry::{Key, Value};

    fn config(address: &str) -> TracingConfig {
        TracingConfig {
            enable: true,
            address: address.to_owned(),
            ..TracingConfig::default()
        }
    }

    fn identity() -> Identity {
        Identity {
            module_name: "isp-test-service".into(),
            module_version: "1.2.3".into(),
            instance_id: "10.0.0.7".into(),
        }
    }

    #[test]
    fn disabled_is_none() {
        let mut config = config("localhost:4318");
        config.enable = false;
        assert!(otlp(&config, &identity()).unwrap().is_none());
    }

    #[test]
    fn endpoint_gets_a_scheme_and_the_traces_path() {
        let endpoint = |address| traces_endpoint(address).unwrap();
        assert_eq!(
            endpoint("localhost:4318"),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            endpoint(" 10.0.0.1:4318 "),
            "http://10.0.0.1:4318/v1/traces"
        );
        assert_eq!(endpoint("[::1]:4318"), "http://[::1]:4318/v1/traces");
        assert_eq!(
            endpoint("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            endpoint("HTTP://collector:4318/"),
            "HTTP://collector:4318/v1/traces"
        );
        assert_eq!(
            endpoint("http://collector/otlp"),
            "http://collector/otlp/v1/traces"
        );
        assert_eq!(
            endpoint("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
    }

    #[test]
    fn endpoint_errors() {
        assert!(matches!(
            traces_endpoint("  "),
            Err(ObservabilityError::TracingAddressMissing)
        ));
        let err = traces_endpoint("https://collector:4318").unwrap_err();
        assert!(
            matches!(err, ObservabilityError::TracingAddress { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("https needs TLS"), "{err}");
        assert!(matches!(
            traces_endpoint("grpc://collector:4317"),
            Err(ObservabilityError::TracingAddress { .. })
        ));
        // Through `otlp` too, before anything global is touched.
        assert!(matches!(
            otlp(&config(""), &identity()),
            Err(ObservabilityError::TracingAddressMissing)
        ));
    }

    #[test]
    fn resource_has_isp_kits_attributes_then_the_configured_ones() {
        let mut config = config("localhost:4318");
        config.environment = "stage".into();
        config.attributes.insert("team".into(), "platform".into());
        config
            .attributes
            .insert("service.instance.id".into(), "pod-7".into());
        let resource = resource(&config, &identity());
        let get = |key: &'static str| resource.get(&Key::from_static_str(key));
        assert_eq!(get("deployment.environment"), Some(Value::from("stage")));
        assert_eq!(get("service.version"), Some(Value::from("1.2.3")));
        assert_eq!(get("service.name"), Some(Value::from("isp-test-service")));
        assert_eq!(get("team"), Some(Value::from("platform")));
        // A configured attribute wins, as the later attribute does in Go.
        assert_eq!(get("service.instance.id"), Some(Value::from("pod-7")));
        // The SDK's own, as Go's `resource.Default()`.
        assert_eq!(get("telemetry.sdk.language"), Some(Value::from("rust")));
        assert_eq!(resource.schema_url(), Some(SCHEMA_URL));
    }

    #[test]
    fn exporter_targets_are_left_out() {
        for target in [
            "hyper",
            "hyper::proto::h1",
            "hyper_util::client::legacy",
            "h2::codec",
            "reqwest::connect",
            "opentelemetry_sdk",
            "opentelemetry_otlp::exporter",
        ] {
            assert!(is_exporter_target(target), "{target}");
        }
        for target in ["cluster_client::driver", "hyperion", "h2o", "my_module"] {
            assert!(!is_exporter_target(target), "{target}");
        }
    }
}
