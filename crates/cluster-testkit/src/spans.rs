//! OpenTelemetry spans for tests (feature `otel`): an exporter that keeps every ended span in
//! memory, and the global set-up the bootstrap's `observability.tracing` makes (an SDK
//! tracer provider, W3C Trace Context as the propagator, tracing-opentelemetry's layer in the
//! global subscriber), so that a test reads the spans a call made.
//!
//! ```
//! use cluster_testkit::spans::{SpanRecorder, attribute};
//! use opentelemetry::trace::{Tracer as _, TracerProvider as _};
//!
//! let spans = SpanRecorder::default();
//! let provider = spans.provider();
//! provider.tracer("doc").in_span("work", |_cx| {});
//! assert_eq!(spans.named("work").len(), 1);
//! assert_eq!(attribute(&spans.named("work")[0], "missing"), None);
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::Notify;
use tracing_subscriber::layer::SubscriberExt as _;

/// How long [`SpanRecorder::ended`] waits before it fails the test.
pub const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The spans a provider ended, in memory, shared by its clones.
#[derive(Debug, Clone, Default)]
pub struct SpanRecorder(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    spans: Mutex<Vec<SpanData>>,
    exported: Notify,
}

impl SpanExporter for SpanRecorder {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.lock().extend(batch);
        self.0.exported.notify_waiters();
        std::future::ready(Ok(()))
    }
}

impl SpanRecorder {
    /// A tracer provider that exports each span to this recorder as it ends.
    #[must_use]
    pub fn provider(&self) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_simple_exporter(self.clone())
            .build()
    }

    /// The recorder of this test binary, set up once: [`provider`](Self::provider), W3C
    /// Trace Context as the global propagator, and a global `tracing` subscriber with
    /// tracing-opentelemetry's layer over it. Every test of the binary shares it (the three
    /// are process-wide); tell a test's spans apart by name or trace id.
    ///
    /// # Panics
    /// When another global subscriber was set before.
    #[must_use]
    pub fn global() -> &'static Self {
        static GLOBAL: OnceLock<SpanRecorder> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let spans = Self::default();
            let provider = spans.provider();
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in a test binary that records spans");
            spans
        })
    }

    /// The ended spans named `name`, so far.
    #[must_use]
    pub fn named(&self, name: &str) -> Vec<SpanData> {
        self.lock()
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// The spans named `name`, once `n` of them have ended (a server ends a call's span
    /// when the answer has been sent, around the time the client reads it); woken by each
    /// export, no polling.
    ///
    /// # Panics
    /// When they have not ended within [`WAIT_LIMIT`] (real time: use it with the tokio
    /// clock running), with the spans ended so far in the message.
    pub async fn ended(&self, name: &str, n: usize) -> Vec<SpanData> {
        let wait = async {
            loop {
                let exported = self.0.exported.notified();
                tokio::pin!(exported);
                exported.as_mut().enable();
                let found = self.named(name);
                if found.len() >= n {
                    return found;
                }
                exported.await;
            }
        };
        match tokio::time::timeout(WAIT_LIMIT, wait).await {
            Ok(found) => found,
            Err(_) => {
                let names: Vec<String> = self.lock().iter().map(|s| s.name.to_string()).collect();
                panic!("{n} spans {name:?} not ended within {WAIT_LIMIT:?}; ended: {names:?}")
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SpanData>> {
        self.0.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The value of a span's attribute `key`, as text.
#[must_use]
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}
