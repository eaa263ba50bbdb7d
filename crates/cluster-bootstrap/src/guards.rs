//! Tracing and Sentry, as the bootstrap sets them up and ends them.

use crate::local::Observability;
use crate::logs::BoxLayer;
use crate::observability::Identity;
use std::sync::Mutex;

/// What ends tracing and Sentry when the module stops: the last spans exported, the last
/// events sent.
#[derive(Default)]
pub(crate) struct Guards {
    #[cfg(feature = "otlp")]
    tracing: Mutex<Option<crate::observability::tracing::TracingGuard>>,
    #[cfg(feature = "sentry")]
    sentry: Option<std::sync::Arc<crate::observability::sentry::SentryGuard>>,
}

impl Guards {
    /// Sets up what `observability` enables, adding its layers to `layers`.
    ///
    /// # Errors
    /// The part's own error, or a part enabled in a build without its feature.
    pub(crate) fn setup(
        config: &Observability,
        identity: &Identity,
        layers: &mut Vec<BoxLayer>,
    ) -> Result<Self, String> {
        #[allow(unused_mut)]
        let mut guards = Self::default();
        #[cfg(feature = "otlp")]
        if let Some((layer, guard)) = crate::observability::tracing::otlp(&config.tracing, identity)
            .map_err(|e| e.to_string())?
        {
            // Spans at INFO and above, whatever the log level (Go traces what it
            // instruments, independently of its logs).
            use tracing_subscriber::Layer as _;
            layers.push(Box::new(
                layer.with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            ));
            guards.tracing = Mutex::new(Some(guard));
        }
        #[cfg(not(feature = "otlp"))]
        if config.tracing.enable {
            return Err(
                "observability.tracing.enable is set, but this build has no `otlp` feature".into(),
            );
        }
        #[cfg(feature = "sentry")]
        if let Some((layer, guard)) = crate::observability::sentry::sentry(&config.sentry, identity)
            .map_err(|e| e.to_string())?
        {
            layers.push(layer);
            guards.sentry = Some(std::sync::Arc::new(guard));
        }
        #[cfg(not(feature = "sentry"))]
        if config.sentry.enable {
            return Err(
                "observability.sentry.enable is set, but this build has no `sentry` feature".into(),
            );
        }
        let _ = (identity, layers);
        Ok(guards)
    }

    /// What sends a fatal error to Sentry, when it is on.
    pub(crate) fn fatal_reporter(&self) -> Option<impl Fn(&str) + Send + Sync + 'static> {
        #[cfg(feature = "sentry")]
        {
            let sentry = self.sentry.clone()?;
            Some(move |message: &str| sentry.capture_fatal(message))
        }
        #[cfg(not(feature = "sentry"))]
        {
            None::<fn(&str)>
        }
    }

    /// Exports the last spans and sends the last events (each bounded; off the async
    /// threads, since both block).
    pub(crate) async fn shutdown(&self) {
        #[cfg(feature = "otlp")]
        {
            let guard = self.tracing.lock().ok().and_then(|mut g| g.take());
            if let Some(guard) = guard {
                let done = tokio::task::spawn_blocking(move || guard.shutdown()).await;
                if let Ok(Err(err)) = done {
                    tracing::warn!(error = %err, "tracing: the last spans were not all exported");
                }
            }
        }
        #[cfg(feature = "sentry")]
        if let Some(sentry) = self.sentry.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                sentry.flush(crate::observability::sentry::FLUSH_TIMEOUT)
            })
            .await;
        }
    }
}
