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

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// Everything written to it, shared by its clones: give a clone to the subscriber's writer
/// (`with_writer(move || logs.clone())`) and read the original.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
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
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
