//! The reconnect policy as pure logic: which host to dial next and how long to wait first.
//!
//! Hosts are tried round-robin from a random start (as the Go client does); the randomness
//! comes from a seed the caller gives, so a test can fix it. The delay before a reconnect is
//! [`BackoffConfig::initial`] (1 s, the Go value) the first time, then grows exponentially
//! with jitter up to [`BackoffConfig::max`] (30 s), and falls back to the initial delay once
//! a session has stayed ready for [`BackoffConfig::stable_after`] (5 s, one ping interval:
//! [`Reconnect::session_ended`]). A session dropped as soon as it is ready counts as a failure,
//! so a server that accepts and drops at once does not get every client back each second.
//! The Go client always waits 1 s.

use crate::rng::SplitMix64;
use std::time::Duration;

/// How the delay between reconnects grows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The delay before the first reconnect. Default: 1 s (the Go client's fixed delay).
    pub initial: Duration,
    /// The factor applied to the delay after each failed attempt. Default: 2.
    pub multiplier: f64,
    /// The largest delay. Default: 30 s.
    pub max: Duration,
    /// The jitter as a fraction of the delay, in `0.0..=1.0`: each delay after the first is
    /// multiplied by a random factor in `(1 - jitter, 1]`, so jitter never exceeds the cap.
    /// Default: 0.2.
    pub jitter: f64,
    /// How long a session must stay ready for its end to reset the delay to
    /// [`initial`](Self::initial). Default: 5 s (the ping interval: the peer has answered at
    /// least once after ready).
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.2,
            stable_after: Duration::from_secs(5),
        }
    }
}

/// The reconnect state of one client: next host and next delay.
#[derive(Debug, Clone)]
pub struct Reconnect {
    hosts: usize,
    next_host: usize,
    failures: u32,
    config: BackoffConfig,
    rng: SplitMix64,
}

impl Reconnect {
    /// A policy over `hosts` hosts, starting at a host chosen from `seed`.
    ///
    /// # Panics
    /// Never; `hosts == 0` is allowed and makes [`Reconnect::next_host`] return `None`.
    #[must_use]
    pub fn new(hosts: usize, config: BackoffConfig, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let next_host = rng.below(hosts);
        Self {
            hosts,
            next_host,
            failures: 0,
            config,
            rng,
        }
    }

    /// The index of the host to dial next, moving round-robin; `None` without hosts.
    pub fn next_host(&mut self) -> Option<usize> {
        if self.hosts == 0 {
            return None;
        }
        let host = self.next_host;
        self.next_host = (self.next_host + 1) % self.hosts;
        Some(host)
    }

    /// The delay to wait before the next attempt, after a failure or a disconnect. Each call
    /// counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let failures = self.failures;
        self.failures = self.failures.saturating_add(1);
        let cfg = &self.config;
        if failures == 0 {
            return cfg.initial.min(cfg.max);
        }
        let exp = cfg.multiplier.max(1.0).powi(failures.min(64) as i32);
        let base = (cfg.initial.as_secs_f64() * exp).min(cfg.max.as_secs_f64());
        let jitter = cfg.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * self.rng.next_f64();
        // `try_from` keeps a cap near `Duration::MAX` from panicking on float rounding.
        Duration::try_from_secs_f64((base * factor).max(0.0)).unwrap_or(cfg.max)
    }

    /// Forgets the failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records the end of a session that stayed ready for `ready_for` (`None`: it never became
    /// ready): the failures are forgotten when it was ready for at least
    /// [`BackoffConfig::stable_after`], and kept otherwise.
    pub fn session_ended(&mut self, ready_for: Option<Duration>) {
        if ready_for.is_some_and(|d| d >= self.config.stable_after) {
            self.reset();
        }
    }

    /// How many failures in a row have been counted since the last reset.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_from_a_seeded_start() {
        let mut a = Reconnect::new(3, BackoffConfig::default(), 42);
        let mut b = Reconnect::new(3, BackoffConfig::default(), 42);
        let seq: Vec<_> = (0..6).map(|_| a.next_host().unwrap()).collect();
        let seq_b: Vec<_> = (0..6).map(|_| b.next_host().unwrap()).collect();
        assert_eq!(seq, seq_b, "same seed, same order");
        for w in seq.windows(2) {
            assert_eq!(w[1], (w[0] + 1) % 3);
        }
        let starts: std::collections::HashSet<_> = (0..64)
            .map(|seed| Reconnect::new(3, BackoffConfig::default(), seed).next_host())
            .collect();
        assert_eq!(starts.len(), 3, "every host can be the start");
        assert_eq!(
            Reconnect::new(0, BackoffConfig::default(), 1).next_host(),
            None
        );
    }

    #[test]
    fn backoff_sequence_with_a_fixed_seed() {
        let cfg = BackoffConfig::default();
        let mut r = Reconnect::new(1, cfg, 7);
        let delays: Vec<Duration> = (0..10).map(|_| r.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_secs(1));
        for (i, d) in delays.iter().enumerate().skip(1) {
            let base = (2f64.powi(i as i32)).min(30.0);
            let secs = d.as_secs_f64();
            assert!(
                secs <= base && secs > base * 0.8,
                "attempt {i}: {secs} vs {base}"
            );
        }
        assert!(delays.iter().all(|d| *d <= cfg.max));
        let mut again = Reconnect::new(1, cfg, 7);
        let replay: Vec<Duration> = (0..10).map(|_| again.next_delay()).collect();
        assert_eq!(delays, replay, "deterministic for a seed");
        r.reset();
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn only_a_session_ready_long_enough_resets_the_delay() {
        let cfg = BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        };
        let mut r = Reconnect::new(1, cfg, 1);
        assert_eq!(r.next_delay(), Duration::from_secs(1));
        r.session_ended(None);
        assert_eq!(r.next_delay(), Duration::from_secs(2));
        // Ready, then dropped at once: still growing.
        r.session_ended(Some(Duration::from_millis(10)));
        assert_eq!(r.next_delay(), Duration::from_secs(4));
        r.session_ended(Some(cfg.stable_after - Duration::from_millis(1)));
        assert_eq!(r.next_delay(), Duration::from_secs(8));
        // Ready for a whole ping interval: back to the first delay.
        r.session_ended(Some(cfg.stable_after));
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn a_huge_cap_never_panics() {
        let cfg = BackoffConfig {
            max: Duration::MAX,
            initial: Duration::from_secs(u64::MAX / 2),
            ..BackoffConfig::default()
        };
        let mut r = Reconnect::new(1, cfg, 3);
        for _ in 0..100 {
            assert!(r.next_delay() <= Duration::MAX);
        }
    }

    #[test]
    fn no_jitter_is_exact_and_capped() {
        let cfg = BackoffConfig {
            jitter: 0.0,
            max: Duration::from_secs(5),
            ..BackoffConfig::default()
        };
        let mut r = Reconnect::new(2, cfg, 0);
        let secs: Vec<u64> = (0..6).map(|_| r.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5, 5]);
    }
}
