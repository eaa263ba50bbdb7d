//! Log set-up shared by the examples (their shutdown signal is
//! `cluster_bootstrap::shutdown_signal`, re-exported by the crate).

use std::io::IsTerminal;

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
