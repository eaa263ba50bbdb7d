//! Process plumbing shared by the examples: the shutdown signal and log set-up.

use std::future::Future;
use std::io::IsTerminal;

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

/// Sends `tracing` logs to **stderr** (never stdout, which the examples keep for their
/// output), filtered by `RUST_LOG`, or by `default_filter` when `RUST_LOG` is unset or
/// invalid. Colours only when stderr is a terminal. Does nothing if a global subscriber is
/// already set (a test that calls it twice, say).
pub fn init_logs(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _already_set = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}
