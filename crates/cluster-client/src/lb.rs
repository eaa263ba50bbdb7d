//! [`RoundRobin`]: a host list balancer that follows a required module's addresses (as
//! isp-kit's `lb.RoundRobin`).

use crate::handler::HostsUpgrader;
use cluster_proto::rng::SplitMix64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// [`RoundRobin::next`] found no host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no hosts to balance")]
pub struct NoHostsToBalance;

#[derive(Debug)]
struct Inner {
    hosts: Arc<[String]>,
    current: usize,
    rng: SplitMix64,
    /// Every list set, for [`RoundRobin::watch`] and [`RoundRobin::wait_for`].
    published: watch::Sender<Arc<[String]>>,
}

/// Distributes calls over a list of hosts in turn, starting at a random one. Thread-safe;
/// cloning gives another handle to the same balancer.
///
/// It implements [`HostsUpgrader`]: hand a clone to
/// [`EventHandler::require_module`](crate::EventHandler::require_module) and the balancer
/// follows the module's ready instances. As in Go, each upgrade restarts at a random position.
///
/// # Examples
/// ```
/// use cluster_client::{HostsUpgrader, RoundRobin};
///
/// let lb = RoundRobin::with_seed(["10.0.0.1:9000", "10.0.0.2:9000"], 1);
/// let a = lb.next().unwrap();
/// let b = lb.next().unwrap();
/// assert_ne!(a, b);
/// assert_eq!(lb.next().unwrap(), a);
///
/// lb.upgrade(vec![]);
/// assert!(lb.next().is_err());
/// ```
///
/// An application (or a test) can wait for hosts instead of polling [`RoundRobin::next`]:
///
/// ```
/// use cluster_client::{HostsUpgrader, RoundRobin};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let auth = RoundRobin::default();
/// let upgrader = auth.clone(); // what `EventHandler::require_module` gets
/// tokio::spawn(async move { upgrader.upgrade(vec!["10.0.0.7:9000".into()]) });
/// let hosts = auth.wait_for(1).await; // at least one instance
/// assert_eq!(&*hosts, ["10.0.0.7:9000"]);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct RoundRobin {
    inner: Arc<Mutex<Inner>>,
}

impl Default for RoundRobin {
    /// A balancer without hosts.
    fn default() -> Self {
        Self::new(Vec::<String>::new())
    }
}

impl RoundRobin {
    /// A balancer over `hosts`, starting at a random one (seeded from the clock and a
    /// process-wide counter).
    #[must_use]
    pub fn new<I>(hosts: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::with_seed(hosts, random_seed())
    }

    /// A balancer over `hosts` whose random choices come from `seed` (for tests).
    #[must_use]
    pub fn with_seed<I>(hosts: I, seed: u64) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut inner = Inner {
            hosts: Arc::from(Vec::new()),
            current: 0,
            rng: SplitMix64::new(seed),
            published: watch::channel(Arc::from(Vec::new())).0,
        };
        inner.set(hosts.into_iter().map(Into::into).collect());
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// The next host, moving round-robin.
    ///
    /// # Errors
    /// [`NoHostsToBalance`] when the list is empty.
    pub fn next(&self) -> Result<String, NoHostsToBalance> {
        let mut inner = self.lock();
        let len = inner.hosts.len();
        if len == 0 {
            return Err(NoHostsToBalance);
        }
        let host = inner.hosts[inner.current % len].clone();
        inner.current = (inner.current + 1) % len;
        Ok(host)
    }

    /// How many hosts there are.
    #[must_use]
    pub fn size(&self) -> usize {
        self.lock().hosts.len()
    }

    /// The current hosts, in the order given.
    #[must_use]
    pub fn hosts(&self) -> Arc<[String]> {
        self.lock().hosts.clone()
    }

    /// Waits until the balancer has at least `n` hosts; returns them. With `n == 0` it
    /// returns at once. There is no timeout: wrap it in `tokio::time::timeout` if the module
    /// may never come up.
    pub async fn wait_for(&self, n: usize) -> Arc<[String]> {
        let mut rx = self.watch();
        // The sender lives in `self`: the watch cannot close while we wait.
        let hosts = rx.wait_for(|hosts| hosts.len() >= n).await;
        hosts.map_or_else(|_| self.hosts(), |hosts| hosts.clone())
    }

    /// A watch of the host list: it changes at every [`HostsUpgrader::upgrade`] (each list
    /// the config service sends for the module), for `select!` loops.
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<Arc<[String]>> {
        self.lock().published.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HostsUpgrader for RoundRobin {
    /// Replaces the hosts and restarts at a random one.
    fn upgrade(&self, hosts: Vec<String>) {
        self.lock().set(hosts);
    }
}

impl Inner {
    fn set(&mut self, hosts: Vec<String>) {
        self.current = self.rng.below(hosts.len());
        self.hosts = Arc::from(hosts);
        self.published.send_replace(self.hosts.clone());
    }
}

/// A seed from the clock and a process-wide counter: enough to spread start positions.
pub(crate) fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    SplitMix64::new(nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn cycles_through_every_host() {
        let lb = RoundRobin::with_seed(["a", "b", "c"], 5);
        let picks: Vec<String> = (0..6).map(|_| lb.next().unwrap()).collect();
        assert_eq!(picks[..3], picks[3..]);
        assert_eq!(picks[..3].iter().collect::<HashSet<_>>().len(), 3);
        assert_eq!(lb.size(), 3);
        assert_eq!(&*lb.hosts(), ["a", "b", "c"]);
    }

    #[test]
    fn random_start_covers_all_hosts() {
        let starts: HashSet<String> = (0..64)
            .map(|seed| RoundRobin::with_seed(["a", "b", "c"], seed).next().unwrap())
            .collect();
        assert_eq!(starts.len(), 3);
    }

    #[test]
    fn upgrade_replaces_hosts_for_every_clone() {
        let lb = RoundRobin::default();
        assert_eq!(lb.next(), Err(NoHostsToBalance));
        let clone = lb.clone();
        clone.upgrade(vec!["x:1".to_owned()]);
        assert_eq!(lb.next().unwrap(), "x:1");
        assert_eq!(lb.next().unwrap(), "x:1");
        lb.upgrade(Vec::new());
        assert_eq!(clone.size(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_hosts() {
        let lb = RoundRobin::default();
        assert!(lb.wait_for(0).await.is_empty(), "nothing to wait for");
        let mut watch = lb.watch();
        let waiter = tokio::spawn({
            let lb = lb.clone();
            async move { lb.wait_for(2).await }
        });
        lb.upgrade(vec!["a:1".into()]);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one host is not two");
        lb.upgrade(vec!["a:1".into(), "b:2".into()]);
        assert_eq!(&*waiter.await.unwrap(), ["a:1", "b:2"]);
        watch.changed().await.unwrap();
        assert_eq!(watch.borrow_and_update().len(), 2);
    }

    #[test]
    fn concurrent_use_hands_out_each_host_evenly() {
        let lb = RoundRobin::with_seed(["a", "b"], 0);
        let counts = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).map(|_| lb.next().unwrap()).collect::<Vec<_>>()))
                .collect();
            let mut a = 0;
            for h in handles {
                a += h.join().unwrap().iter().filter(|h| *h == "a").count();
            }
            a
        });
        assert_eq!(counts, 2000);
    }
}
