//! Serial application of the application's receivers: one at a time, each bounded by a
//! timeout, panics caught, in arrival order, with latest-wins coalescing for configs.
//!
//! An [`Applier`] is owned by the client's run loop and polled by whatever the loop is waiting
//! on (a session, a connect, a backoff), so an application goes on across a reconnect and
//! nothing of it outlives the loop: dropping the applier drops (cancels) what runs and what is
//! queued. When a new session starts, what older sessions left queued is dropped
//! ([`Applier::drop_queued`]): the new session's first config and routing table supersede it,
//! and waiting behind it could outlast the new session's handshake.

use crate::error::BoxError;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How queued jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// At most one job waits: a newer one replaces it (configs are whole documents, and only
    /// the latest one matters). Never an older job after a newer one.
    LatestWins,
    /// Every job runs, in the order pushed (routing tables: the application sees each).
    Fifo,
}

/// One application to run.
pub(crate) struct Job {
    /// The session generation whose handshake waits for this job's verdict, if any.
    pub(crate) tag: Option<u64>,
    /// The id of the received event, for logs.
    pub(crate) event_id: u64,
    /// The application itself; not started before it is polled.
    pub(crate) future: BoxFuture<'static, Result<(), BoxError>>,
}

/// The outcome of one application.
#[derive(Debug)]
pub(crate) struct Done {
    /// The job's tag.
    pub(crate) tag: Option<u64>,
    /// The job's event id.
    pub(crate) event_id: u64,
    /// `Ok`, or why it failed: the receiver's error, its panic, or the timeout.
    pub(crate) result: Result<(), String>,
    /// How many queued jobs this one replaced before it ran (latest-wins).
    pub(crate) superseded: u64,
}

struct Running {
    tag: Option<u64>,
    event_id: u64,
    superseded: u64,
    future: Pin<Box<dyn Future<Output = Result<(), String>> + Send>>,
}

struct Queued {
    job: Job,
    superseded: u64,
}

/// Runs jobs one at a time; see the [module docs](self).
pub(crate) struct Applier {
    order: Order,
    timeout: Duration,
    queue: VecDeque<Queued>,
    running: Option<Running>,
}

impl Applier {
    pub(crate) fn new(order: Order, timeout: Duration) -> Self {
        Self {
            order,
            timeout,
            queue: VecDeque::new(),
            running: None,
        }
    }

    /// Queues `job`. Under [`Order::LatestWins`] it replaces a job still waiting (not the one
    /// running); it then inherits the replaced job's tag when it has none, so a handshake that
    /// waits for the initial config gets the verdict on the config that supersedes it.
    pub(crate) fn push(&mut self, mut job: Job) {
        let mut superseded = 0;
        if self.order == Order::LatestWins
            && let Some(old) = self.queue.pop_back()
        {
            superseded = old.superseded + 1;
            if job.tag.is_none() {
                job.tag = old.job.tag;
            }
            tracing::debug!(
                replaced = old.job.event_id,
                by = job.event_id,
                "queued application superseded by a newer one"
            );
        }
        self.queue.push_back(Queued { job, superseded });
    }

    /// Drops the queued jobs (not the one running, which finishes or times out); returns how
    /// many were dropped.
    pub(crate) fn drop_queued(&mut self) -> usize {
        let dropped = self.queue.len();
        for queued in self.queue.drain(..) {
            tracing::debug!(
                event_id = queued.job.event_id,
                "queued application dropped: a new session supersedes it"
            );
        }
        dropped
    }

    /// Whether nothing runs and nothing waits.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }

    /// Resolves with the outcome of the next application to finish; pending forever when idle
    /// (a job pushed later is picked up on the next poll). Cancel-safe: dropping the returned
    /// future keeps the running application.
    pub(crate) fn done(&mut self) -> impl Future<Output = Done> + '_ {
        poll_fn(move |cx| self.poll_done(cx))
    }

    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Done> {
        if self.running.is_none() {
            let Some(Queued { job, superseded }) = self.queue.pop_front() else {
                return Poll::Pending;
            };
            self.running = Some(self.start(job, superseded));
        }
        let Some(running) = self.running.as_mut() else {
            return Poll::Pending;
        };
        let result = std::task::ready!(running.future.as_mut().poll(cx));
        // Dropped here, before the next job can start.
        let Some(done) = self.running.take() else {
            return Poll::Pending;
        };
        Poll::Ready(Done {
            tag: done.tag,
            event_id: done.event_id,
            result,
            superseded: done.superseded,
        })
    }

    fn start(&self, job: Job, superseded: u64) -> Running {
        let timeout = self.timeout;
        let future = AssertUnwindSafe(job.future).catch_unwind();
        Running {
            tag: job.tag,
            event_id: job.event_id,
            superseded,
            future: Box::pin(async move {
                match tokio::time::timeout(timeout, future).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(err))) => Err(err.to_string()),
                    Ok(Err(panic)) => Err(format!("panicked: {}", panic_message(&*panic))),
                    Err(_) => Err(format!("timed out after {timeout:?} (cancelled)")),
                }
            }),
        }
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn job(log: &Arc<Mutex<Vec<String>>>, name: &str, tag: Option<u64>, work: Duration) -> Job {
        let log = log.clone();
        let name = name.to_owned();
        Job {
            tag,
            event_id: 0,
            future: Box::pin(async move {
                log.lock().unwrap().push(format!("start {name}"));
                tokio::time::sleep(work).await;
                if name == "panic" {
                    panic!("boom");
                }
                if name == "err" {
                    return Err("refused".into());
                }
                log.lock().unwrap().push(format!("end {name}"));
                Ok(())
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latest_wins_keeps_order_and_inherits_the_tag() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Applier::new(Order::LatestWins, Duration::from_secs(5));
        a.push(job(&log, "1", Some(7), Duration::from_millis(10)));
        let first = a.done().await;
        assert_eq!((first.tag, first.result.clone()), (Some(7), Ok(())));
        a.push(job(&log, "2", Some(8), Duration::from_millis(10)));
        a.push(job(&log, "3", None, Duration::from_millis(10)));
        a.push(job(&log, "4", None, Duration::from_millis(10)));
        let done = a.done().await;
        assert_eq!((done.tag, done.superseded), (Some(8), 2));
        assert!(a.is_idle());
        assert_eq!(
            *log.lock().unwrap(),
            ["start 1", "end 1", "start 4", "end 4"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_queued_while_one_runs_waits_for_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Applier::new(Order::Fifo, Duration::from_secs(5));
        a.push(job(&log, "1", None, Duration::from_millis(10)));
        // Start "1", then queue "2" while it runs: Fifo keeps both, in order.
        assert!(a.done().now_or_never().is_none());
        a.push(job(&log, "2", None, Duration::from_millis(10)));
        a.done().await.result.unwrap();
        a.done().await.result.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["start 1", "end 1", "start 2", "end 2"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_panics_and_timeouts_are_reported() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Applier::new(Order::Fifo, Duration::from_secs(1));
        a.push(job(&log, "err", None, Duration::ZERO));
        a.push(job(&log, "panic", None, Duration::ZERO));
        a.push(job(&log, "slow", None, Duration::from_secs(2)));
        a.push(job(&log, "ok", None, Duration::ZERO));
        assert_eq!(a.done().await.result, Err("refused".to_owned()));
        assert_eq!(a.done().await.result, Err("panicked: boom".to_owned()));
        let started = tokio::time::Instant::now();
        let slow = a.done().await.result.unwrap_err();
        assert!(slow.starts_with("timed out after 1s"), "{slow}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        a.done().await.result.unwrap();
        // The timed-out job never finished: it was dropped before "ok" started.
        assert_eq!(
            *log.lock().unwrap(),
            [
                "start err",
                "start panic",
                "start slow",
                "start ok",
                "end ok"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drop_queued_keeps_the_running_job() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Applier::new(Order::Fifo, Duration::from_secs(5));
        a.push(job(&log, "1", None, Duration::from_millis(10)));
        assert!(a.done().now_or_never().is_none(), "1 runs");
        a.push(job(&log, "2", None, Duration::from_millis(10)));
        a.push(job(&log, "3", None, Duration::from_millis(10)));
        assert_eq!(a.drop_queued(), 2);
        a.push(job(&log, "4", Some(9), Duration::from_millis(10)));
        assert_eq!(a.done().await.tag, None);
        assert_eq!(a.done().await.tag, Some(9));
        assert!(a.is_idle());
        assert_eq!(a.drop_queued(), 0);
        assert_eq!(
            *log.lock().unwrap(),
            ["start 1", "end 1", "start 4", "end 4"]
        );
    }

    #[tokio::test]
    async fn idle_applier_stays_pending() {
        let mut a = Applier::new(Order::Fifo, Duration::from_secs(1));
        assert!(a.done().now_or_never().is_none());
    }
}
