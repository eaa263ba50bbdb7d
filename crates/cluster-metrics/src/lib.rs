//! isp-kit's metrics in Rust, on the [`metrics`] facade: the same names, help texts, types,
//! labels and summaries as isp-kit's `grpc_metrics`, `http_metrics` and `app_metrics`, so the
//! Grafana dashboards and alerts built for Go modules show Rust modules unchanged; plus the
//! cluster client's own metrics in the same style.
//!
//! ```
//! use cluster_metrics::grpc::{GrpcClientMetrics, GrpcServerMetrics, code};
//! use std::time::Duration;
//!
//! // A server's metrics, one cached set of handles per endpoint (Go: `NewServerStorage`).
//! let server = GrpcServerMetrics::with_endpoints(["auth/api/login"]);
//! // One call: 12 bytes in, 3.7 ms (recorded as 3, Go's whole milliseconds), OK, 48 bytes out.
//! server.observe("auth/api/login", 12, Duration::from_micros(3700), code::OK, Some(48));
//!
//! // A client's: the duration of every call, errors included.
//! let client = GrpcClientMetrics::new();
//! client.observe_duration("auth/api/login", Duration::from_millis(5));
//! ```
//!
//! Everything records through the recorder the `metrics` facade finds (a local one, else the
//! global one; without any, nothing is recorded and nothing is paid but a branch). With the
//! `prometheus` feature, `prometheus::install` sets up the process-wide recorder as isp-kit's
//! `metrics.DefaultRegistry` is, and renders the text `/internal/metrics` serves:
//!
//! ```
//! # #[cfg(feature = "prometheus")] {
//! use cluster_metrics::grpc::{GrpcServerMetrics, code};
//! use std::time::Duration;
//!
//! // In a test: a recorder of its own, not the global one.
//! let (prometheus, recorder) = cluster_metrics::prometheus::build();
//! cluster_metrics::metrics::with_local_recorder(&recorder, || {
//!     let server = GrpcServerMetrics::new();
//!     server.observe("a/b", 0, Duration::ZERO, code::NOT_FOUND, None);
//! });
//! let text = prometheus.render();
//! assert!(text.contains(r#"grpc_status_code_count{endpoint="a/b",code="NotFound"} 1"#));
//! assert!(text.contains("# HELP grpc_request_duration_ms The latency of the GRPC requests"));
//! # }
//! ```
//!
//! # What is the same as in Go
//! - Names: `subsystem_name`, no namespace ([`grpc`], [`http`], [`app`]); help texts word for
//!   word ([`families`] lists them all).
//! - Summaries with the objectives 0.5, 0.9, 0.95 and 0.99 ([`OBJECTIVES`]) over a window of
//!   10 minutes in 5 buckets (client_golang's `MaxAge` and `AgeBuckets` defaults); `_sum` and
//!   `_count` are cumulative.
//! - Durations in milliseconds are Go's `metrics.Milliseconds`: whole milliseconds, truncated,
//!   and 1 when that is 0 ([`milliseconds`]). The HTTP client's four phase durations are raw
//!   nanoseconds, as Go observes them.
//! - Only the label combinations that were observed appear (Go's `*Vec`): handles are
//!   registered on first use, then cached per label set, so recording allocates nothing and
//!   builds no key. `app_logs_sampling_status_count` shows its ten series at once, as Go's
//!   `NewLogCounter` makes them.
//!
//! # Handles and recorders
//! A handle is taken from the recorder current at its first use and kept: install the
//! recorder (or enter a local one) before the first call is recorded. Caches are per value
//! (a server's, a client's), never process-wide, so a test with a local recorder sees only
//! its own values. [`describe`] gives every help text to the current recorder; the values of
//! this crate describe their own families when made, and the recorder of the `prometheus`
//! module gives this crate's help texts at their first registration in any case.

#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "testing")]
pub mod scrape;

pub mod app;
pub mod cache;
pub mod cluster;
pub mod grpc;
pub mod http;

/// The `metrics` facade this crate records through (for `metrics::with_local_recorder`).
pub use metrics;

use std::time::Duration;

/// The quantiles of every summary: isp-kit's `metrics.DefaultObjectives` (0.5, 0.9, 0.95,
/// 0.99).
pub const OBJECTIVES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// How long a summary's quantiles look back: 10 minutes (client_golang's `DefMaxAge`).
pub const SUMMARY_MAX_AGE: Duration = Duration::from_secs(600);

/// In how many buckets the window of a summary moves: 5 (client_golang's `DefAgeBuckets`).
pub const SUMMARY_AGE_BUCKETS: u32 = 5;

/// A duration as isp-kit's `metrics.Milliseconds` records it: whole milliseconds, truncated,
/// and 1 when that is 0.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cluster_metrics::milliseconds(Duration::from_micros(2999)), 2.0);
/// assert_eq!(cluster_metrics::milliseconds(Duration::ZERO), 1.0);
/// ```
#[must_use]
pub fn milliseconds(duration: Duration) -> f64 {
    match duration.as_millis() {
        0 => 1.0,
        // Exact below 2^53 ms (285,000 years).
        #[allow(clippy::cast_precision_loss)]
        ms => ms as f64,
    }
}

/// The Prometheus type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A summary (a `metrics` histogram, rendered with [`OBJECTIVES`]).
    Summary,
}

impl Kind {
    /// The name in `# TYPE` lines: `counter`, `gauge`, `summary`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Summary => "summary",
        }
    }
}

/// One metric family of this crate: its name, help text, type and label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The full name (`grpc_request_duration_ms`).
    pub name: &'static str,
    /// The help text (`# HELP`), as isp-kit's.
    pub help: &'static str,
    /// The type.
    pub kind: Kind,
    /// The label names, in order.
    pub labels: &'static [&'static str],
}

impl Family {
    /// Gives the help text to the current recorder (`describe_counter!` and the like).
    pub fn describe(&self) {
        let help = metrics::SharedString::const_str(self.help);
        let name = metrics::KeyName::from_const_str(self.name);
        metrics::with_recorder(|recorder| match self.kind {
            Kind::Counter => recorder.describe_counter(name, None, help),
            Kind::Gauge => recorder.describe_gauge(name, None, help),
            Kind::Summary => recorder.describe_histogram(name, None, help),
        });
    }
}

/// Every family of this crate: [`grpc`], [`http`], [`app`], [`cluster`].
pub fn families() -> impl Iterator<Item = &'static Family> {
    grpc::FAMILIES
        .iter()
        .chain(http::FAMILIES.iter())
        .chain(app::FAMILIES.iter())
        .chain(cluster::FAMILIES.iter())
}

/// The family named `name`, if it is one of this crate's.
#[must_use]
pub fn family(name: &str) -> Option<&'static Family> {
    families().find(|f| f.name == name)
}

/// Gives every help text of this crate to the current recorder.
pub fn describe() {
    families().for_each(Family::describe);
}

/// Handles, registered with the current recorder.
mod reg {
    use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata};

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    pub(crate) fn histogram(name: &'static str, labels: Vec<Label>) -> Histogram {
        let key = Key::from_parts(name, labels);
        metrics::with_recorder(|r| r.register_histogram(&key, &METADATA))
    }

    pub(crate) fn counter(name: &'static str, labels: Vec<Label>) -> Counter {
        counter_key(&Key::from_parts(name, labels))
    }

    pub(crate) fn gauge_key(key: &Key) -> Gauge {
        metrics::with_recorder(|r| r.register_gauge(key, &METADATA))
    }

    pub(crate) fn counter_key(key: &Key) -> Counter {
        metrics::with_recorder(|r| r.register_counter(key, &METADATA))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_truncate_and_never_say_zero() {
        assert_eq!(milliseconds(Duration::ZERO), 1.0);
        assert_eq!(milliseconds(Duration::from_micros(999)), 1.0);
        assert_eq!(milliseconds(Duration::from_micros(1999)), 1.0);
        assert_eq!(milliseconds(Duration::from_millis(2)), 2.0);
        assert_eq!(milliseconds(Duration::from_secs(15)), 15_000.0);
    }

    #[test]
    fn family_names_are_unique_and_found() {
        let mut names: Vec<&str> = families().map(|f| f.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(
            family("grpc_status_code_count").map(|f| f.labels),
            Some(&["endpoint", "code"][..])
        );
        assert!(family("nope").is_none());
    }
}
