//! The examples' integration tests, in one test binary. Three stay binaries of their own:
//! `readme.rs` (the README's example, compared with the README), `signal.rs` (signals sent to
//! the process, whose handlers are process-wide) and `http_probe.rs` (it sets the process's
//! panic hook).

mod default_flow;
mod grpc_modules;
mod grpc_probe;
mod http_modules;
mod probe;
mod quickstart;
