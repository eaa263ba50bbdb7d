//! Await helpers: wait until the service's state or its recorded frames show something, or
//! say what there was instead ([`WaitError`]).

use super::runtime::Inner;
use super::{Direction, FakeConfigService, RecordedFrame, Target};
use crate::state::ConnectionInfo;
use cluster_proto::payload::BackendDeclaration;
use std::time::Duration;
use tokio::time::Instant;

/// Why an await helper gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The condition did not hold in time.
    #[error("timed out after {timeout:?} waiting for {expected}; what there is: {actual}")]
    Timeout {
        /// What was awaited.
        expected: String,
        /// What the state was when the time ran out.
        actual: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Frames are not recorded
    /// ([`FakeConfigServiceBuilder::recording`](super::FakeConfigServiceBuilder::recording)),
    /// so no frame can be awaited.
    #[error("frame recording is off: cannot wait for {expected}")]
    RecordingOff {
        /// What was awaited.
        expected: String,
    },
}

impl FakeConfigService {
    // ----- await helpers -----

    /// Waits until `module` has exactly `n` ready instances; returns their declarations,
    /// newest first. To give a module under test ready instances of a module it requires
    /// without running a second client, see [`FakeConfigService::declare_instance`].
    ///
    /// This is the service's view: an instance is ready once its `MODULE:READY` is stored,
    /// which is before the module's own client has read the ack. To assert on the module's
    /// side (its `healthcheck()`, say), await its client's state too
    /// (`client.state().wait_for(ClientState::is_ready)`).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] saying what there was instead.
    pub async fn wait_ready_instances(
        &self,
        module: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<BackendDeclaration>, WaitError> {
        self.wait_for(
            timeout,
            || format!("{n} ready instance(s) of module {module:?}"),
            |inner| {
                let ready = inner.state.ready_instances(module);
                (ready.len() == n).then(|| ready.into_iter().map(|i| i.declaration).collect())
            },
            |inner| inner.describe_module(module),
        )
        .await
    }

    /// Waits until `module` has exactly `n` open connections; returns them.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] saying what there was instead.
    pub async fn wait_connections(
        &self,
        module: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionInfo>, WaitError> {
        self.wait_for(
            timeout,
            || format!("{n} open connection(s) of module {module:?}"),
            |inner| {
                let ids = inner.state.connections_of(module);
                (ids.len() == n).then(|| {
                    ids.into_iter()
                        .filter_map(|id| inner.state.connection(id))
                        .collect()
                })
            },
            |inner| inner.describe_module(module),
        )
        .await
    }

    /// Waits until an event named `event` was recorded for `target`, received or sent
    /// (frames recorded before the call count); returns the first one. Acks
    /// ([`Direction::Acked`]) are not events and do not count: look for them in
    /// [`FakeConfigService::sent`].
    ///
    /// A sent event is recorded when it is queued on the connection, not when it is written:
    /// when this returns, the client may not have it yet (await it on the client's side).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] listing the frames there were, [`WaitError::RecordingOff`].
    pub async fn wait_event(
        &self,
        target: impl Into<Target>,
        event: &str,
        timeout: Duration,
    ) -> Result<RecordedFrame, WaitError> {
        let mut frames = self.wait_events(target, event, 1, timeout).await?;
        Ok(frames.swap_remove(0))
    }

    /// Waits until at least `n` events named `event` were recorded for `target` (received
    /// and sent together; acks do not count, see [`FakeConfigService::wait_event`]); returns
    /// all of them, in order.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] listing the frames there were, [`WaitError::RecordingOff`].
    pub async fn wait_events(
        &self,
        target: impl Into<Target>,
        event: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedFrame>, WaitError> {
        let target = target.into();
        let expected = || format!("{n} event(s) {event:?} of {target}");
        if !self.shared.lock().recording {
            return Err(WaitError::RecordingOff {
                expected: expected(),
            });
        }
        self.wait_for(
            timeout,
            expected,
            |inner| {
                let mut frames = inner.frames(&target);
                frames.retain(|f| f.direction != Direction::Acked && f.event() == event);
                (frames.len() >= n).then_some(frames)
            },
            |inner| inner.describe_frames(&target),
        )
        .await
    }

    /// Checks `check` after every change until it gives a value or `timeout` passes.
    pub(super) async fn wait_for<T>(
        &self,
        timeout: Duration,
        expected: impl FnOnce() -> String,
        mut check: impl FnMut(&Inner) -> Option<T>,
        describe: impl FnOnce(&Inner) -> String,
    ) -> Result<T, WaitError> {
        let deadline = Instant::now() + timeout;
        // Subscribed before the first check, so no change between the two is missed.
        let mut changes = self.shared.changed.subscribe();
        loop {
            if let Some(value) = check(&self.shared.lock()) {
                return Ok(value);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                // The sender lives as long as `self`: `changed` cannot fail.
                Ok(_) => {}
                Err(_) => {
                    let inner = self.shared.lock();
                    if let Some(value) = check(&inner) {
                        return Ok(value);
                    }
                    return Err(WaitError::Timeout {
                        expected: expected(),
                        actual: describe(&inner),
                        timeout,
                    });
                }
            }
        }
    }
}

impl Inner {
    pub(super) fn describe_module(&self, module: &str) -> String {
        let Some(snapshot) = self.state.module(module) else {
            let known = self.state.module_names();
            return format!(
                "module {module:?} is unknown: it never connected, or left without a config \
                 or schema (known modules: {known:?})"
            );
        };
        let ready: Vec<String> = snapshot
            .ready
            .iter()
            .map(|i| format!("{} at {}", i.conn, i.declaration.address))
            .collect();
        let conns: Vec<String> = snapshot
            .connections
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "module {module:?} has {} open connection(s) [{}] and {} ready instance(s) [{}]",
            conns.len(),
            conns.join(", "),
            ready.len(),
            ready.join(", ")
        )
    }

    pub(super) fn describe_frames(&self, target: &Target) -> String {
        const SHOWN: usize = 30;
        let frames = self.frames(target);
        if frames.is_empty() {
            return format!("no frame recorded for {target}");
        }
        let skipped = frames.len().saturating_sub(SHOWN);
        let lines: Vec<String> = frames[skipped..]
            .iter()
            .map(|f| format!("\n  {f}"))
            .collect();
        let more = if skipped > 0 {
            format!(" ({skipped} earlier not shown)")
        } else {
            String::new()
        };
        format!(
            "{} frame(s) of {target}{more}:{}",
            frames.len(),
            lines.concat()
        )
    }
}
