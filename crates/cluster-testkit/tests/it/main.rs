//! The testkit's integration tests, in one test binary. Three stay binaries of their own:
//! `hostile.rs` captures logs with a per-thread subscriber and counts the lines, and tracing
//! caches callsite interest process-wide, so tests on other threads could hide lines from it;
//! `admin.rs` and `admin_limits.rs` start the `fake-config-service` program (feature `bin`)
//! and signal it, which wants a quiet machine: the program prints its addresses before it
//! installs its SIGTERM handler, so under load a SIGTERM sent at once can kill it outright.

#[path = "../common/mod.rs"]
mod common;

mod acceptance;
mod control;
mod declared;
mod pair;
mod replay;
mod vanish;
