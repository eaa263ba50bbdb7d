//! The gate in front of the log output: the module's level, isp-kit's sampling, and the
//! count of lines written and dropped (`app_logs_sampling_status_count`).

use super::FATAL_TARGET;
use super::level::LogLevelHandle;
use crate::local::Sampling;
use cluster_metrics::app::{LogCounter, LogLevel as Counted};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Counters per level: lines whose messages hash alike share one, as in zap.
const COUNTERS_PER_LEVEL: usize = 1024;
/// zap's sampling tick: one second.
const TICK: Duration = Duration::from_secs(1);

/// A per-layer filter: passes what the level allows, samples (when enabled) and counts.
pub(crate) struct Gate {
    level: LogLevelHandle,
    sampler: Option<Sampler>,
    counter: LogCounter,
}

impl Gate {
    pub(crate) fn new(level: LogLevelHandle, sampling: Option<&Sampling>) -> Self {
        Self {
            level,
            sampler: sampling.map(|s| Sampler::new(s.max_per_second, s.pass_every, Instant::now)),
            counter: LogCounter::new(),
        }
    }
}

impl Gate {
    /// Events pass by the module's level. Spans at INFO and above always do: they are the
    /// context of the lines (`request_id`, `endpoint`, `session_id`, as isp-kit's context
    /// fields), which an error line needs whatever the level.
    fn passes(&self, meta: &Metadata<'_>) -> bool {
        if meta.is_span() && *meta.level() <= Level::INFO {
            return true;
        }
        if *meta.level() > Level::INFO && is_stack_below(meta.target()) {
            return false;
        }
        self.level.get().allows(meta.level())
    }
}

/// The libraries under the module (HTTP/2, HTTP, TLS, the exporters): their `debug` and
/// `trace` lines describe every frame they move, so `logLevel: debug` shows the module's and
/// this repository's lines but not theirs, as a Go module's debug level is its own logger's.
const STACK_BELOW: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tonic",
    "axum",
    "rustls",
    "tokio_rustls",
    "tokio_util",
    "mio",
    "want",
    "reqwest",
    "ureq",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "tracing_opentelemetry",
    "sentry",
];

fn is_stack_below(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    STACK_BELOW.contains(&krate)
}

impl<S> Filter<S> for Gate {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.passes(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // The answer changes with the level: `LogLevelHandle::set` rebuilds the cache.
        if self.passes(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // INFO spans pass at any level.
        Some(tracing::level_filters::LevelFilter::from_level(
            self.level.get().tracing_level().max(Level::INFO),
        ))
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        let pass = self
            .sampler
            .as_ref()
            .is_none_or(|sampler| sampler.admit(event));
        // isp-kit counts its well-known levels only: no `trace`.
        let counted = match *meta.level() {
            _ if meta.target() == FATAL_TARGET => Some(Counted::Fatal),
            Level::ERROR => Some(Counted::Error),
            Level::WARN => Some(Counted::Warn),
            Level::INFO => Some(Counted::Info),
            Level::DEBUG => Some(Counted::Debug),
            Level::TRACE => None,
        };
        if let Some(level) = counted {
            if pass {
                self.counter.sampled(level);
            } else {
                self.counter.dropped(level);
            }
        }
        pass
    }
}

/// zap's sampler: in each tick, of the lines with the same level and message, the first
/// `first` pass, then one in `thereafter`.
pub(crate) struct Sampler {
    first: u64,
    thereafter: u64,
    counters: Box<[Counter]>,
    start: Instant,
    now: Arc<dyn Fn() -> Instant + Send + Sync>,
}

#[derive(Default)]
struct Counter {
    /// Nanoseconds since `start` at which the count starts again.
    reset_at: AtomicU64,
    count: AtomicU64,
}

impl Sampler {
    pub(crate) fn new(
        first: u64,
        thereafter: u64,
        now: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        let counters = (0..COUNTERS_PER_LEVEL * 5)
            .map(|_| Counter::default())
            .collect();
        Self {
            first,
            thereafter,
            counters,
            start: now(),
            now: Arc::new(now),
        }
    }

    fn admit(&self, event: &Event<'_>) -> bool {
        let mut message = MessageHash::default();
        event.record(&mut message);
        let level = match *event.metadata().level() {
            Level::TRACE | Level::DEBUG => 0,
            Level::INFO => 1,
            Level::WARN => 2,
            Level::ERROR => 3,
        };
        self.admit_key(level, message.0.finish())
    }

    fn admit_key(&self, level: usize, hash: u64) -> bool {
        let slot = level * COUNTERS_PER_LEVEL + (hash as usize % COUNTERS_PER_LEVEL);
        let counter = &self.counters[slot];
        let now = u64::try_from(
            (self.now)()
                .saturating_duration_since(self.start)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        let n = if counter.reset_at.load(Ordering::Acquire) > now {
            counter.count.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            counter.count.store(1, Ordering::Release);
            counter.reset_at.store(
                now.saturating_add(u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX)),
                Ordering::Release,
            );
            1
        };
        n <= self.first || (self.thereafter > 0 && (n - self.first).is_multiple_of(self.thereafter))
    }
}

/// The hash of an event's `message`.
struct MessageHash(std::collections::hash_map::DefaultHasher);

impl Default for MessageHash {
    fn default() -> Self {
        Self(std::collections::hash_map::DefaultHasher::new())
    }
}

impl Visit for MessageHash {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.hash(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            format!("{value:?}").hash(&mut self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_level_filters_lines_but_an_error_keeps_its_spans_fields() {
        use crate::logs::{JsonLines, LogLevel, format::JsonFields};
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&buffer);
        let level = LogLevelHandle::new(LogLevel::Error);
        let layer = tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .fmt_fields(JsonFields)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .with_filter(Gate::new(level.clone(), None));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("grpc_call", request_id = "r-1");
            let _entered = span.enter();
            tracing::info!("hidden at error");
            tracing::error!("shown");
            level.set(LogLevel::Info);
            tracing::info!("shown once the level is info");
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let messages: Vec<&str> = lines.iter().map(|l| l["msg"].as_str().unwrap()).collect();
        assert_eq!(
            messages,
            ["shown", "log level changed", "shown once the level is info"],
            "{text}"
        );
        assert_eq!(lines[0]["request_id"], "r-1", "{text}");
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_stack_below_stays_quiet_at_debug() {
        assert!(is_stack_below("h2::codec::framed_read"));
        assert!(is_stack_below("hyper"));
        assert!(!is_stack_below("cluster_client::driver"));
        assert!(!is_stack_below("billing"));
        let gate = Gate::new(LogLevelHandle::new(crate::logs::LogLevel::Trace), None);
        let passes = |target: &'static str, level: Level| {
            let meta = Box::leak(Box::new(Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
                tracing::metadata::Kind::EVENT,
            )));
            gate.passes(meta)
        };
        assert!(!passes("h2::proto", Level::DEBUG));
        assert!(passes("h2::proto", Level::INFO));
        assert!(passes("cluster_grpc::server", Level::TRACE));
    }

    static CALLSITE: NoCallsite = NoCallsite;

    struct NoCallsite;

    impl tracing::callsite::Callsite for NoCallsite {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not registered")
        }
    }

    #[test]
    fn first_n_then_one_in_m_per_tick_per_key() {
        let clock = Arc::new(Mutex::new(Instant::now()));
        let now = Arc::clone(&clock);
        let sampler = Sampler::new(2, 3, move || *now.lock().unwrap());
        let passed: Vec<bool> = (0..10).map(|_| sampler.admit_key(1, 42)).collect();
        // 1, 2 pass; then 5 and 8 (every third after the first two).
        assert_eq!(
            passed,
            [
                true, true, false, false, true, false, false, true, false, false
            ]
        );
        assert!(
            sampler.admit_key(1, 43),
            "another message has its own count"
        );
        assert!(sampler.admit_key(2, 42), "another level has its own count");
        *clock.lock().unwrap() += TICK;
        assert!(
            sampler.admit_key(1, 42),
            "a new tick starts the count again"
        );
        assert!(sampler.admit_key(1, 42));
        assert!(!sampler.admit_key(1, 42));
    }
}
