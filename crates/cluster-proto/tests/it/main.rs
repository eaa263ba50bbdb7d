//! The protocol crate's integration tests, in one test binary. `alloc.rs` stays a binary of
//! its own: it counts allocations with a global allocator.

mod golden;
mod props;
mod session;
