//! The Prometheus recorder, set up as isp-kit's `metrics.DefaultRegistry`: one per process
//! ([`install`]), rendering the text `/internal/metrics` serves ([`Prometheus::render`]) and
//! the list `/internal/metrics/descriptions` serves ([`Prometheus::descriptions`]).
//!
//! Histograms are rendered as summaries with isp-kit's objectives ([`OBJECTIVES`]) over a
//! window of 10 minutes moving in 5 buckets of 2 minutes (client_golang's defaults); their
//! `_sum` and `_count` are cumulative, since the process started. Counters are rendered as
//! named (no `_total` added), as Go does. The `process_*` series of Go's process collector are
//! read at each render.
//!
//! Differences from Go's text, none of which a Prometheus server or a dashboard sees: the
//! families come in no particular order; a summary without a sample in its window shows its
//! quantiles as 0 where Go shows `NaN`; there are no `go_*` series, and `process_threads`
//! (which Go's process collector lacks: Go has `go_threads`) is added.
//!
//! # In tests
//! [`build`] makes a recorder and its [`Prometheus`] without installing anything: enter the
//! recorder with [`metrics::with_local_recorder`] (on a current-thread runtime, the tasks of
//! a `block_on` inside it record there too) and render what was recorded:
//!
//! ```
//! use cluster_metrics::cluster::{ClusterMetrics, SessionState};
//!
//! let (prometheus, recorder) = cluster_metrics::prometheus::build();
//! let metrics = metrics::with_local_recorder(&recorder, ClusterMetrics::new);
//! // Handles keep recording into that recorder after the closure.
//! metrics.set_state(SessionState::Ready);
//! assert!(prometheus.render().contains(r#"cluster_session_state{state="ready"} 1"#));
//! ```

use crate::{Kind, OBJECTIVES, SUMMARY_AGE_BUCKETS, SUMMARY_MAX_AGE};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

/// The content type of [`Prometheus::render`]'s text (exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often the recorder [`install`] sets up moves recorded samples into their summaries
/// between renders, so that they do not pile up: 5 s.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why [`install`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstallError {
    /// Another global recorder was set before (by another library, say).
    OtherRecorder,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherRecorder => f.write_str("another global metrics recorder is already set"),
        }
    }
}

impl std::error::Error for InstallError {}

/// A family as the recorder learned it: from a `describe_*` call, or from its first key.
struct Described {
    name: String,
    kind: Kind,
    help: String,
    /// The label names of its first key; `None` until one is registered (for a family this
    /// crate knows, its documented labels from the start).
    labels: Option<Vec<String>>,
}

#[derive(Default)]
struct Families {
    list: Vec<Described>,
    index: HashMap<String, usize>,
}

struct State {
    handle: PrometheusHandle,
    families: RwLock<Families>,
}

/// What renders the metrics of one [`IspRecorder`]: the process-wide one from [`install`],
/// or a test's from [`build`].
#[derive(Clone)]
pub struct Prometheus {
    state: Arc<State>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let families = self
            .state
            .families
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Prometheus")
            .field("families", &families.list.len())
            .finish_non_exhaustive()
    }
}

/// The recorder: metrics-exporter-prometheus's, configured as isp-kit's registry, which also
/// remembers what was described and the label names of what was registered (for
/// [`Prometheus::descriptions`]) and gives the help texts of this crate's families at their
/// first registration.
pub struct IspRecorder {
    inner: PrometheusRecorder,
    state: Arc<State>,
}

impl std::fmt::Debug for IspRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IspRecorder").finish_non_exhaustive()
    }
}

/// A recorder and what renders it, installed nowhere: for tests, with
/// [`metrics::with_local_recorder`] (see the [module docs](self)).
#[must_use]
pub fn build() -> (Prometheus, IspRecorder) {
    let bucket_duration = SUMMARY_MAX_AGE / SUMMARY_AGE_BUCKETS;
    let builder = PrometheusBuilder::new()
        .set_bucket_count(NonZeroU32::new(SUMMARY_AGE_BUCKETS).unwrap_or(NonZeroU32::MIN));
    // Neither fails: the quantiles are not empty, the duration is not zero.
    let builder = builder
        .set_quantiles(&OBJECTIVES)
        .and_then(|b| b.set_bucket_duration(bucket_duration))
        .unwrap_or_else(|_| unreachable!("constant summary settings are valid"));
    let inner = builder.build_recorder();
    let state = Arc::new(State {
        handle: inner.handle(),
        families: RwLock::default(),
    });
    (
        Prometheus {
            state: Arc::clone(&state),
        },
        IspRecorder { inner, state },
    )
}

static INSTALLED: OnceLock<Prometheus> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs the process-wide recorder (isp-kit's `DefaultRegistry`) and returns what renders
/// it; called again, returns the same. A thread moves samples into their summaries every
/// [`UPKEEP_INTERVAL`].
///
/// Install it before building servers and clients, or at least before their first calls:
/// handles are taken from the global recorder at their first use, and one taken before it
/// records nothing.
///
/// # Errors
/// [`InstallError::OtherRecorder`] when another global recorder was set.
pub fn install() -> Result<&'static Prometheus, InstallError> {
    let _installing = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(installed) = INSTALLED.get() {
        return Ok(installed);
    }
    let (prometheus, recorder) = build();
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::OtherRecorder)?;
    let installed = INSTALLED.get_or_init(|| prometheus);
    let handle = installed.state.handle.clone();
    // Without it, samples wait for the next render: nothing is lost, so a failed spawn is
    // only more memory between scrapes.
    let _ = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    Ok(installed)
}

/// The process-wide recorder's [`Prometheus`], if [`install`] was called.
#[must_use]
pub fn installed() -> Option<&'static Prometheus> {
    INSTALLED.get()
}

/// Go's process collector: name, type, help.
const PROCESS: [(&str, Kind, &str); 8] = [
    (
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
    ),
    (
        "process_open_fds",
        Kind::Gauge,
        "Number of open file descriptors.",
    ),
    (
        "process_max_fds",
        Kind::Gauge,
        "Maximum number of open file descriptors.",
    ),
    (
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size in bytes.",
    ),
    (
        "process_virtual_memory_max_bytes",
        Kind::Gauge,
        "Maximum amount of virtual memory available in bytes.",
    ),
    (
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
    ),
    (
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    ),
    (
        "process_threads",
        Kind::Gauge,
        "Number of OS threads in the process.",
    ),
];

impl Prometheus {
    /// The text to serve at `/internal/metrics` ([`CONTENT_TYPE`]): every series recorded,
    /// then the `process_*` series, read now.
    #[must_use]
    pub fn render(&self) -> String {
        let mut text = self.state.handle.render();
        if !text.is_empty() && !text.ends_with("\n\n") {
            text.push('\n');
        }
        write_process(&mut text);
        text
    }

    /// The text to serve at `/internal/metrics/descriptions` (`text/plain`), as isp-kit's
    /// registry writes it: one line per family, the process collector's first, then in the
    /// order described or registered:
    ///
    /// ```text
    /// Desc{fqName: "grpc_request_duration_ms", help: "The latency of the GRPC requests", constLabels: {}, variableLabels: {endpoint}}, type: summary
    /// ```
    ///
    /// (Go writes the collector's Go type after `type:`; here it is the Prometheus type.)
    #[must_use]
    pub fn descriptions(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in PROCESS {
            write_description(&mut out, name, help, &[], kind);
        }
        let families = self
            .state
            .families
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for family in &families.list {
            let labels = family.labels.as_deref().unwrap_or_default();
            write_description(&mut out, &family.name, &family.help, labels, family.kind);
        }
        out
    }

    /// Moves what was recorded since into the summaries now (renders do it too).
    pub fn run_upkeep(&self) {
        self.state.handle.run_upkeep();
    }
}

fn write_description(out: &mut String, name: &str, help: &str, labels: &[String], kind: Kind) {
    out.push_str("Desc{fqName: ");
    go_quote(out, name);
    out.push_str(", help: ");
    go_quote(out, help);
    out.push_str(", constLabels: {}, variableLabels: {");
    out.push_str(&labels.join(","));
    out.push_str("}}, type: ");
    out.push_str(kind.as_str());
    out.push('\n');
}

/// `text` as Go's `%q` writes it (printable characters kept, the rest escaped).
fn go_quote(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The `process_*` families, in Go's order, from the values metrics-process reads now.
fn write_process(out: &mut String) {
    let m = metrics_process::collector::collect();
    #[allow(clippy::cast_precision_loss)]
    let values = [
        m.cpu_seconds_total,
        m.open_fds.map(|v| v as f64),
        m.max_fds.map(|v| v as f64),
        m.virtual_memory_bytes.map(|v| v as f64),
        m.virtual_memory_max_bytes.map(|v| v as f64),
        m.resident_memory_bytes.map(|v| v as f64),
        m.start_time_seconds.map(|v| v as f64),
        m.threads.map(|v| v as f64),
    ];
    for ((name, kind, help), value) in PROCESS.iter().zip(values) {
        if let Some(value) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {}\n{name} {value}\n\n",
                kind.as_str()
            );
        }
    }
}

impl State {
    /// Remembers the family of `key` and its label names; a family of this crate registered
    /// before it was described gets its help text here.
    fn note(&self, key: &Key, kind: Kind, inner: &PrometheusRecorder) {
        let name = key.name();
        {
            let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(&i) = families.index.get(name)
                && families.list[i].labels.is_some()
            {
                return;
            }
        }
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let labels = || key.labels().map(|l| l.key().to_owned()).collect();
        if let Some(&i) = families.index.get(name) {
            let family = &mut families.list[i];
            if family.labels.is_none() {
                family.labels = Some(labels());
            }
            return;
        }
        let described = match crate::family(name) {
            Some(known) => {
                describe_inner(inner, known.kind, known.name, known.help);
                Described {
                    name: known.name.to_owned(),
                    kind: known.kind,
                    help: known.help.to_owned(),
                    labels: Some(known.labels.iter().map(|l| (*l).to_owned()).collect()),
                }
            }
            None => Described {
                name: name.to_owned(),
                kind,
                help: String::new(),
                labels: Some(labels()),
            },
        };
        insert(&mut families, described);
    }

    /// Remembers a description (the first one wins, as in the exporter).
    fn describe(&self, name: &KeyName, kind: Kind, help: &str) {
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if families.index.contains_key(name.as_str()) {
            return;
        }
        let labels = crate::family(name.as_str())
            .map(|known| known.labels.iter().map(|l| (*l).to_owned()).collect());
        insert(
            &mut families,
            Described {
                name: name.as_str().to_owned(),
                kind,
                help: help.to_owned(),
                labels,
            },
        );
    }
}

fn insert(families: &mut Families, described: Described) {
    families
        .index
        .insert(described.name.clone(), families.list.len());
    families.list.push(described);
}

fn describe_inner(inner: &PrometheusRecorder, kind: Kind, name: &'static str, help: &'static str) {
    let name = KeyName::from_const_str(name);
    let help = SharedString::const_str(help);
    match kind {
        Kind::Counter => inner.describe_counter(name, None, help),
        Kind::Gauge => inner.describe_gauge(name, None, help),
        Kind::Summary => inner.describe_histogram(name, None, help),
    }
}

impl Recorder for IspRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.state.describe(&key, Kind::Counter, &description);
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.state.describe(&key, Kind::Gauge, &description);
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.state.describe(&key, Kind::Summary, &description);
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.state.note(key, Kind::Counter, &self.inner);
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.state.note(key, Kind::Gauge, &self.inner);
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.state.note(key, Kind::Summary, &self.inner);
        self.inner.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quotes_like_percent_q() {
        let mut out = String::new();
        go_quote(&mut out, "a \"b\" \\ c\n\u{1}é");
        assert_eq!(out, r#""a \"b\" \\ c\n\x01é""#);
    }
}
