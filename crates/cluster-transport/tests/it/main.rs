//! The transport's integration tests, in one test binary. Two stay binaries of their own, as
//! they change the whole process: `no_payload_in_logs.rs` installs the global subscriber and
//! the `log` bridge, `read_alloc.rs` counts allocations with a global allocator.

#[path = "../common/mod.rs"]
mod common;

mod close_codes;
mod conformance;
mod hostile;
mod rfc6455;
mod tls;
mod ws;
