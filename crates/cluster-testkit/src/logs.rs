//! Log capture for tests: a buffer that a `tracing` subscriber writes into, and that a test
//! then reads, to check what was logged (and what never was: a secret, say).
//!
//! ```
//! use cluster_testkit::logs::CapturedLogs;
//! use std::io::Write;
//!
//! let logs = CapturedLogs::default();
//! // With tracing-subscriber: `tracing_subscriber::fmt().with_writer({ let l = logs.clone(); move || l.clone() })`.
//! logs.clone().write_all(b"INFO module ready\nWARN unexpected event\n").unwrap();
//! assert_eq!(logs.count("WARN"), 1);
//! assert!(logs.text().contains("module ready"));
//! ```
//!
//! A line written by another task (a server's, after its answer went out) is awaited with
//! [`CapturedLogs::wait_for`], woken by each write: no polling.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// How long [`CapturedLogs::wait_for`] waits before it fails the test.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Everything written to it, shared by its clones: give a clone to the subscriber's writer
/// (`with_writer(move || logs.clone())`) and read the original.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    bytes: Mutex<Vec<u8>>,
    written: Notify,
}

impl CapturedLogs {
    /// The lines that contain `needle`, once there are `n` of them (or more).
    ///
    /// # Panics
    /// When they are not there within [`WAIT_LIMIT`] (of real time; under a paused tokio
    /// clock the limit comes at once, so use it with the clock running), with the logs in
    /// the message.
    pub async fn wait_for(&self, needle: &str, n: usize) -> Vec<String> {
        let wait = async {
            loop {
                let written = self.0.written.notified();
                tokio::pin!(written);
                // Registered before the check: a write between the check and the wait
                // still wakes it.
                written.as_mut().enable();
                let found: Vec<String> = self
                    .lines()
                    .into_iter()
                    .filter(|l| l.contains(needle))
                    .collect();
                if found.len() >= n {
                    return found;
                }
                written.await;
            }
        };
        match tokio::time::timeout(WAIT_LIMIT, wait).await {
            Ok(found) => found,
            Err(_) => panic!(
                "{n} lines with {needle:?} not logged within {WAIT_LIMIT:?}:\n{}",
                self.text()
            ),
        }
    }

    /// Everything written so far, as text (invalid UTF-8 replaced).
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    /// The lines written so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    /// How many lines written so far contain `needle`.
    #[must_use]
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(buf);
        self.0.written.notify_waiters();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_on_the_line_it_waits_for() {
        let logs = CapturedLogs::default();
        let waiter = tokio::spawn({
            let logs = logs.clone();
            async move { logs.wait_for("ready", 2).await }
        });
        let mut writer = logs.clone();
        writer.write_all(b"INFO ready\n").unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        writer
            .write_all(b"DEBUG other\nINFO ready again\n")
            .unwrap();
        let found = waiter.await.unwrap();
        assert_eq!(found, ["INFO ready", "INFO ready again"]);
    }
}
