//! Bounded logging of what a peer can make us log again and again.
//!
//! A hostile or broken peer can send malformed frames or unknown events as fast as the network
//! carries them; one warning per frame would let it fill disks (one such flood wrote ~381 MiB of
//! logs in 5 s). A [`LogLimiter`] per connection lets through the first
//! [`LogLimit::burst`] lines of each [`LogLimit::interval`] and counts the rest; the first line
//! let through after an interval in which lines were suppressed is preceded by **one summary
//! line** with their count (`suppressed = N`), and [`LogLimiter::flush`] (called when the
//! connection ends) writes the last one. A flooding connection thus writes at most
//! `burst + 1` lines per interval, plus one at its end.
//!
//! The interval is measured on tokio's clock ([`tokio::time::Instant`]), so a test with paused
//! time controls it.
//!
//! ```
//! use cluster_transport::log_limit::{LogLimit, LogLimiter};
//! use std::time::Duration;
//!
//! let limiter = LogLimiter::new(LogLimit { burst: 2, interval: Duration::from_secs(10) });
//! let logged = (0..100).filter(|_| limiter.admit(7, "peer")).count();
//! assert_eq!(logged, 2);
//! assert_eq!(limiter.flush(7, "peer"), 98); // one summary line: 98 suppressed
//! ```

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The default of [`LogLimit::burst`]: 5 lines.
pub const DEFAULT_LOG_BURST: u32 = 5;
/// The default of [`LogLimit::interval`]: 10 s.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many lines a [`LogLimiter`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimit {
    /// Lines let through per interval (default [`DEFAULT_LOG_BURST`], 5). `0` suppresses every
    /// line; the summaries still count them.
    pub burst: u32,
    /// The interval (default [`DEFAULT_LOG_INTERVAL`], 10 s). It starts with the first line
    /// of a quiet period, not at fixed times.
    pub interval: Duration,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self {
            burst: DEFAULT_LOG_BURST,
            interval: DEFAULT_LOG_INTERVAL,
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    /// When the current interval started (`None`: no line yet).
    start: Option<Instant>,
    /// Lines let through in the current interval.
    logged: u32,
    /// Lines suppressed in the current interval.
    suppressed: u64,
}

/// Lets through the first lines of each interval and counts the others; see the
/// [module docs](self). One per connection; cheap to check (a mutex held for a few
/// instructions).
pub struct LogLimiter {
    limit: LogLimit,
    window: Mutex<Window>,
}

impl fmt::Debug for LogLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(LogLimit::default())
    }
}

impl LogLimiter {
    /// A limiter with these settings.
    #[must_use]
    pub fn new(limit: LogLimit) -> Self {
        Self {
            limit,
            window: Mutex::new(Window::default()),
        }
    }

    /// Whether the caller should write its line now (`true`) or drop it (`false`, counted).
    /// When a new interval starts after one in which lines were suppressed, the summary
    /// line of that interval is written first (at warn level, with `conn` and `peer`).
    pub fn admit(&self, conn: u64, peer: &str) -> bool {
        let now = Instant::now();
        let (admit, summary) = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let expired = window
                .start
                .is_none_or(|start| now.saturating_duration_since(start) >= self.limit.interval);
            let summary = if expired {
                let suppressed = window.suppressed;
                *window = Window {
                    start: Some(now),
                    logged: 0,
                    suppressed: 0,
                };
                suppressed
            } else {
                0
            };
            let admit = window.logged < self.limit.burst;
            if admit {
                window.logged += 1;
            } else {
                window.suppressed += 1;
            }
            (admit, summary)
        };
        if summary > 0 {
            self.summary(conn, peer, summary);
        }
        admit
    }

    /// Writes the summary line of the lines suppressed so far, if any, and returns their
    /// count. Called when the connection ends, so that the last interval's count is not lost.
    pub fn flush(&self, conn: u64, peer: &str) -> u64 {
        let suppressed = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut window.suppressed)
        };
        if suppressed > 0 {
            self.summary(conn, peer, suppressed);
        }
        suppressed
    }

    fn summary(&self, conn: u64, peer: &str, suppressed: u64) {
        tracing::warn!(
            conn,
            peer,
            suppressed,
            interval_ms = u64::try_from(self.limit.interval.as_millis()).unwrap_or(u64::MAX),
            "{suppressed} more warnings about this peer were suppressed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_per_interval_then_a_count() {
        let interval = Duration::from_secs(10);
        let limiter = LogLimiter::new(LogLimit { burst: 3, interval });
        let admitted = (0..1000).filter(|_| limiter.admit(1, "p")).count();
        assert_eq!(admitted, 3);
        tokio::time::advance(interval).await;
        // A new interval: the summary of the last one is written, and lines pass again.
        assert!(limiter.admit(1, "p"));
        assert_eq!(limiter.flush(1, "p"), 0);
        let admitted = (0..10).filter(|_| limiter.admit(1, "p")).count();
        assert_eq!(admitted, 2);
        assert_eq!(limiter.flush(1, "p"), 8);
        assert_eq!(limiter.flush(1, "p"), 0, "flushed once");
    }

    /// Every connection holds one (boxed): it stays small.
    #[test]
    fn a_limiter_is_small() {
        let size = std::mem::size_of::<LogLimiter>();
        println!("LogLimiter: {size} bytes");
        assert!(size <= 64, "{size} bytes");
    }

    #[test]
    fn zero_burst_suppresses_everything() {
        let limiter = LogLimiter::new(LogLimit {
            burst: 0,
            interval: Duration::from_secs(1),
        });
        assert!(!limiter.admit(1, "p"));
        assert_eq!(limiter.flush(1, "p"), 1);
    }
}
