//! The one seeded pseudo-random generator of the workspace: [`SplitMix64`].
//!
//! Used for the reconnect policy's start host and jitter ([`crate::backoff::Reconnect`]), the
//! client's session ids and its round-robin balancer's start host. It is **not** a
//! cryptographic generator: nothing secret or security-relevant may come from it. It is
//! deterministic: the same seed gives the same sequence, on every platform, so tests can pin
//! the client's random choices with a seed.

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit state advanced by a fixed odd constant
/// and mixed into each output. Fast, tiny (8 bytes), every seed (0 too) is good, and the period
/// is 2^64. Not cryptographic.
///
/// # Examples
/// ```
/// use cluster_proto::rng::SplitMix64;
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64()); // same seed, same sequence
/// let x = a.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// assert!(a.below(3) < 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index in `0..n` (by remainder: the bias, at most `n / 2^64`, does not matter for
    /// picking a host). `n == 0` gives 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_splitmix64_sequence() {
        // The reference implementation's first outputs for seed 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn floats_and_indices_stay_in_range_and_spread() {
        let mut rng = SplitMix64::new(42);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x), "{x}");
            seen[rng.below(5)] = true;
        }
        assert!(seen.iter().all(|s| *s), "every index comes up: {seen:?}");
        assert_eq!(rng.below(0), 0);
    }
}
