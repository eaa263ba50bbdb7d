//! A waker that counts its wake-ups, for the unit tests that poll by hand (`cluster-etp` includes
//! this file by path).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};

/// Counts the wake-ups of the wakers made by [`Counting::waker`].
pub(crate) struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counting {
    /// A counter and a waker that counts on it.
    pub(crate) fn waker() -> (Arc<Self>, Waker) {
        let counting = Arc::new(Self(AtomicUsize::new(0)));
        (Arc::clone(&counting), Waker::from(counting))
    }

    /// The wake-ups so far.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
