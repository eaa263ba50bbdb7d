//! [`LabelCache`]: values per label set, found without a lock or an allocation.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Entry<V> {
    key: Box<[Box<str>]>,
    value: V,
}

impl<V> Entry<V> {
    fn matches(&self, key: &[&str]) -> bool {
        self.key.len() == key.len() && self.key.iter().zip(key).all(|(a, b)| **a == **b)
    }
}

/// A bounded open-addressing table from label values (`["GET", "/api"]`) to a value (a set of
/// handles). A slot is written once and never moved, so a lookup is a hash and atomic loads;
/// the first use of a label set initialises its slot (other threads asking for the same slot
/// meanwhile wait for it). Holds at most `capacity` entries (a few more when threads insert
/// at once, never more than half its slots): past that, [`LabelCache::get_or_insert_with`]
/// returns `None` for new label sets and the caller records without caching.
/// A bounded map from label sets (a few strings) to values made once each, found without a
/// lock or an allocation: the handles of a metric family by label values, or anything else
/// a hot path looks up by a few strings. Values are never removed; once `capacity` label
/// sets are in, others are not kept ([`LabelCache::get_or_insert_with`] returns `None`).
pub struct LabelCache<V> {
    slots: Box<[OnceLock<Box<Entry<V>>>]>,
    mask: usize,
    capacity: usize,
    len: AtomicUsize,
}

impl<V> std::fmt::Debug for LabelCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<V> LabelCache<V> {
    /// A table for `capacity` label sets (at least 1), with twice as many slots.
    /// A cache of at most `capacity` label sets (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let slots = capacity.saturating_mul(2).next_power_of_two();
        Self {
            slots: (0..slots).map(|_| OnceLock::new()).collect(),
            mask: slots - 1,
            capacity,
            len: AtomicUsize::new(0),
        }
    }

    /// How many label sets it holds.
    /// How many label sets it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The value of `key`, made with `make` on its first use; `None` when the table is full
    /// and `key` is not in it.
    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`, made with `make` if `key` is new and there is room (`make` runs
    /// at most once per key, even when threads race for it); `None` when the cache is full
    /// and `key` is not in it.
    pub fn get_or_insert_with(&self, key: &[&str], make: impl FnOnce() -> V) -> Option<&V> {
        let mut make = Some(make);
        let start = hash(key);
        for i in 0..self.slots.len() {
            let slot = &self.slots[start.wrapping_add(i) & self.mask];
            let entry = match slot.get() {
                Some(entry) => entry,
                None => {
                    if self.len.load(Ordering::Relaxed) >= self.capacity {
                        return None;
                    }
                    slot.get_or_init(|| {
                        self.len.fetch_add(1, Ordering::Relaxed);
                        // Runs at most once per call: when it runs, the slot is ours and the
                        // loop returns just below.
                        let make = make.take().unwrap_or_else(|| unreachable!());
                        Box::new(Entry {
                            key: key.iter().map(|part| Box::from(*part)).collect(),
                            value: make(),
                        })
                    })
                }
            };
            if entry.matches(key) {
                return Some(&entry.value);
            }
        }
        None
    }

    /// Every value, in no particular order.
    #[cfg(test)]
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().filter_map(|s| s.get()).map(|e| &e.value)
    }
}

/// FNV-1a over the parts, each followed by a byte no UTF-8 text has, folded for the low bits.
fn hash(key: &[&str]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in key {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // Truncation on 32-bit targets is fine for a hash.
    #[allow(clippy::cast_possible_truncation)]
    let folded = (h ^ (h >> 29)) as usize;
    folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn finds_what_it_made_once() {
        let made = AtomicU32::new(0);
        let cache = LabelCache::new(4);
        let make = |v: u32| {
            made.fetch_add(1, Ordering::Relaxed);
            v
        };
        assert_eq!(cache.get_or_insert_with(&["a"], || make(1)), Some(&1));
        assert_eq!(cache.get_or_insert_with(&["b"], || make(2)), Some(&2));
        assert_eq!(cache.get_or_insert_with(&["a"], || make(3)), Some(&1));
        // Parts are compared whole: ["a", "b"] is not ["ab"], nor ["a\u{0}b"].
        assert_eq!(cache.get_or_insert_with(&["a", "b"], || make(4)), Some(&4));
        assert_eq!(cache.get_or_insert_with(&["ab"], || make(5)), Some(&5));
        assert_eq!(made.load(Ordering::Relaxed), 4);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn is_bounded() {
        let cache = LabelCache::new(3);
        for i in 0..3 {
            let key = i.to_string();
            assert!(cache.get_or_insert_with(&[&key], || i).is_some());
        }
        assert_eq!(cache.get_or_insert_with(&["new"], || 9), None);
        // What it holds is still found.
        assert_eq!(cache.get_or_insert_with(&["1"], || 9), Some(&1));
        assert_eq!(cache.values().count(), 3);
    }

    #[test]
    fn threads_agree_on_one_value_per_key() {
        let cache = Arc::new(LabelCache::new(64));
        let made = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let made = Arc::clone(&made);
                std::thread::spawn(move || {
                    (0..32)
                        .map(|k| {
                            let key = format!("endpoint/{k}");
                            *cache
                                .get_or_insert_with(&[&key], || {
                                    made.fetch_add(1, Ordering::Relaxed) * 100 + k
                                })
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let seen: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        assert_eq!(made.load(Ordering::Relaxed), 32);
        assert_eq!(cache.len(), 32);
    }
}
