//! `shutdown_signal` resolves on SIGTERM and on SIGINT, and holds a signal sent right after it
//! returns (its own test binary: signal handlers are process-wide).

#![cfg(unix)]

use cluster_examples::{Signal, shutdown_signal};
use std::time::Duration;

fn send(signal: libc::c_int) {
    // SAFETY: `kill` on our own pid with a signal whose handler tokio installed.
    let rc = unsafe { libc::kill(libc::getpid(), signal) };
    assert_eq!(rc, 0, "kill failed");
}

#[tokio::test]
async fn sigterm_and_sigint_resolve_the_shutdown_future() {
    let terminate = shutdown_signal().unwrap();
    send(libc::SIGTERM);
    let got = tokio::time::timeout(Duration::from_secs(10), terminate)
        .await
        .expect("SIGTERM seen");
    assert_eq!(got, Signal::Terminate);

    let interrupt = shutdown_signal().unwrap();
    send(libc::SIGINT);
    let got = tokio::time::timeout(Duration::from_secs(10), interrupt)
        .await
        .expect("SIGINT seen");
    assert_eq!(got, Signal::Interrupt);
}
