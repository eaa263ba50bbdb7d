//! Runnable examples of the cluster crates live in `examples/`; run one with
//! `cargo run --example NAME` from the repository root. This library is empty on purpose:
//! it only gives the examples a package to belong to.
