//! SIGINT and SIGTERM, as isp-kit's `shutdown.On` listens for them: usable with or without
//! the bootstrap.

use std::future::Future;

/// The signal that asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (what `kill` and container runtimes send).
    Terminate,
}

/// Listens for SIGINT and SIGTERM (Ctrl-C only on non-Unix systems) and returns a future that
/// resolves with the first one to arrive, as isp-kit's `shutdown.On` does for Go services.
///
/// The handlers are installed **before** this function returns, so a signal sent right after
/// it cannot kill the process: it is held for the future. Once installed they stay for the
/// life of the process (tokio cannot uninstall them), so a second Ctrl-C no longer kills the
/// process either; call this once, near the start of `main`.
///
/// # Errors
/// When the signal handlers cannot be installed.
///
/// # Panics
/// When called outside a tokio runtime with IO enabled.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = Signal> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => Signal::Interrupt,
                _ = terminate.recv() => Signal::Terminate,
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            // Without Unix signals only Ctrl-C can be awaited; an error here means it cannot
            // be listened for at all, and waiting forever is the honest answer.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            Signal::Interrupt
        })
    }
}
