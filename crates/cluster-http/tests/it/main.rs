//! The HTTP crate's integration tests, in one test binary. Two stay binaries of their own, as
//! they install process-wide state: `call_log.rs` the global tracing subscriber,
//! `trace_context.rs` the global OpenTelemetry set-up (`SpanRecorder::global`).

#[path = "../common/mod.rs"]
mod common;

mod client;
mod cluster;
mod golden;
mod metrics;
mod server;
