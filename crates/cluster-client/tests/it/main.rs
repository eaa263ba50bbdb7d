//! The client's integration tests, in one test binary. `logs.rs` and `no_secret_in_logs.rs`
//! stay binaries of their own: they install tracing subscribers and need the process alone.

#[path = "../common/mod.rs"]
mod common;

mod around;
mod lifecycle;
mod metrics;
mod outcomes;
mod session;
mod wire;
mod ws;
