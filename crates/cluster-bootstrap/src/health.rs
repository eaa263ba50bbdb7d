//! `/internal/health`: isp-kit's health registry. Named checks; the answer is
//! `{"status":"pass"|"fail","details":{name:[{componentName,componentType,status,output,time}]}}`
//! as `application/health+json`, `200` when every check passes and `500` when one fails,
//! computed at most once a second (later requests within the second get the same answer).
//!
//! One difference from Go: Go bounds the whole handler by `healthcheckHandlerTimeout` and
//! answers a plain `503 timeout` when a check hangs. Here the checks run at once, each bounded
//! by that timeout, and a check that runs over fails with the output `timed out after …`:
//! the answer is still the JSON document, with `500`, and it says which check hung.

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

/// A check's error.
pub type CheckError = Box<dyn std::error::Error + Send + Sync>;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), CheckError>> + Send + Sync>;

/// How long an answer is reused: 1 s, as isp-kit's registry.
pub const CACHE_TIME: Duration = Duration::from_secs(1);
/// isp-kit's `StatusPass`.
pub const STATUS_PASS: &str = "pass";
/// isp-kit's `StatusFail`.
pub const STATUS_FAIL: &str = "fail";
/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/health+json";

/// The module's health checks, as isp-kit's `healthcheck.Registry`: the bootstrap registers
/// the cluster session as `configServiceConnection`; register your own (a database, a queue)
/// with [`Health::register`]. Cloning gives another handle on the same checks.
///
/// # Examples
/// ```
/// use cluster_bootstrap::Health;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let health = Health::new(Duration::from_secs(1));
/// health.register("database", || async { Ok(()) });
/// health.register("queue", || async { Err("not connected".into()) });
/// let report = health.report().await;
/// assert_eq!(report.status, "fail");
/// assert_eq!(report.details["queue"][0].output.as_deref(), Some("not connected"));
/// # });
/// ```
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    checks: Mutex<BTreeMap<String, Check>>,
    timeout: Duration,
    /// The last answer and when it was computed; the lock makes concurrent requests share
    /// one run of the checks.
    last: tokio::sync::Mutex<Option<(Instant, Arc<Report>)>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .inner
            .checks
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Health")
            .field("checks", &names)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// The answer of `/internal/health`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// `pass` when every check passed, else `fail`.
    pub status: &'static str,
    /// Each check's result, under its name (a list of one, as isp-kit's).
    pub details: BTreeMap<String, Vec<Detail>>,
}

impl Report {
    /// Whether every check passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.status == STATUS_PASS
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Detail {
    /// The check's name.
    pub component_name: String,
    /// Always `component`, as isp-kit's.
    pub component_type: &'static str,
    /// `pass` or `fail`.
    pub status: &'static str,
    /// The error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// When it ran, UTC (`2026-12-07T22:57:47.123Z`, Go's format: trailing zeros of the
    /// milliseconds dropped).
    pub time: String,
}

impl Health {
    /// A registry whose checks are each bounded by `timeout` (zero: 1 s).
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                checks: Mutex::new(BTreeMap::new()),
                timeout: if timeout.is_zero() {
                    crate::local::DEFAULT_HEALTHCHECK_TIMEOUT
                } else {
                    timeout
                },
                last: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Adds (or replaces) the check `name`: `Ok` passes; an error fails with its text as the
    /// output; a check that panics or runs over the timeout fails too.
    pub fn register<F, Fut>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CheckError>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        if let Ok(mut checks) = self.inner.checks.lock() {
            checks.insert(name.into(), check);
        }
    }

    /// Removes the check `name`.
    pub fn unregister(&self, name: &str) {
        if let Ok(mut checks) = self.inner.checks.lock() {
            checks.remove(name);
        }
    }

    /// Forgets the last answer: the next request runs the checks. The bootstrap calls it
    /// when the cluster session changes state, so that a probe sees the change at once.
    pub fn invalidate(&self) {
        if let Ok(mut last) = self.inner.last.try_lock() {
            *last = None;
        }
    }

    /// The current answer: the last one if it is younger than [`CACHE_TIME`], else the checks
    /// run again (all at once, each bounded by the timeout).
    pub async fn report(&self) -> Arc<Report> {
        let mut last = self.inner.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < CACHE_TIME
        {
            return Arc::clone(report);
        }
        let report = Arc::new(self.run().await);
        *last = Some((Instant::now(), Arc::clone(&report)));
        report
    }

    async fn run(&self) -> Report {
        let checks: Vec<(String, Check)> = self
            .inner
            .checks
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect())
            .unwrap_or_default();
        let timeout = self.inner.timeout;
        let runs = checks.into_iter().map(|(name, check)| async move {
            let outcome = AssertUnwindSafe(async move { check().await }).catch_unwind();
            let output = match tokio::time::timeout(timeout, outcome).await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(err))) => Some(err.to_string()),
                Ok(Err(_panic)) => Some("the check panicked".to_owned()),
                Err(_) => Some(format!("timed out after {timeout:?}")),
            };
            let detail = Detail {
                component_name: name.clone(),
                component_type: "component",
                status: if output.is_none() {
                    STATUS_PASS
                } else {
                    STATUS_FAIL
                },
                output,
                time: go_time(OffsetDateTime::now_utc()),
            };
            (name, vec![detail])
        });
        let details: BTreeMap<String, Vec<Detail>> = futures_util::future::join_all(runs)
            .await
            .into_iter()
            .collect();
        let passed = details.values().flatten().all(|d| d.status == STATUS_PASS);
        Report {
            status: if passed { STATUS_PASS } else { STATUS_FAIL },
            details,
        }
    }
}

/// isp-kit's time format, `2006-01-02T15:04:05.999Z07:00`, in UTC.
fn go_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let millis = at.millisecond();
    if millis != 0 {
        let fraction = format!("{millis:03}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_drops_trailing_zeros() {
        let at = |nanos: i128| OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
        assert_eq!(
            go_time(at(1_796_684_267_123_000_000)),
            "2026-12-07T22:57:47.123Z"
        );
        assert_eq!(
            go_time(at(1_796_684_267_120_000_000)),
            "2026-12-07T22:57:47.12Z"
        );
        assert_eq!(
            go_time(at(1_796_684_267_000_000_000)),
            "2026-12-07T22:57:47Z"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_fails_alone_at_the_timeout_and_answers_are_cached() {
        let health = Health::new(Duration::from_millis(300));
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        health.register("fine", move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok(()) }
        });
        health.register("hangs", std::future::pending);
        health.register("panics", || async { panic!("boom") });
        let started = Instant::now();
        let report = health.report().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(300),
            "bounded by the timeout"
        );
        assert_eq!(report.status, STATUS_FAIL);
        assert_eq!(report.details["fine"][0].status, STATUS_PASS);
        assert_eq!(
            report.details["hangs"][0].output.as_deref(),
            Some("timed out after 300ms")
        );
        assert_eq!(
            report.details["panics"][0].output.as_deref(),
            Some("the check panicked")
        );
        let json = serde_json::to_value(&*report).unwrap();
        assert_eq!(json["details"]["fine"][0]["componentType"], "component");
        assert!(json["details"]["fine"][0].get("output").is_none(), "{json}");

        let again = health.report().await;
        assert!(
            Arc::ptr_eq(&report, &again),
            "within a second, the same answer"
        );
        tokio::time::advance(CACHE_TIME).await;
        health.unregister("hangs");
        health.unregister("panics");
        let fresh = health.report().await;
        assert_eq!(fresh.status, STATUS_PASS);
        assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
