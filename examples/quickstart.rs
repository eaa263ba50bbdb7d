//! `cargo run --example quickstart`: no setup, no server to start.
//!
//! It embeds the fake config service (`cluster-testkit`) on a loopback WebSocket, and a module
//! joins it; the program tells in plain words what happens: the module registers, receives its
//! initial config, the addresses of the module it requires and the routing table, and becomes
//! ready; an admin changes its config through the service and the module applies it; a second
//! module comes up and the first one's route table and balancer follow. It exits 0 in a few
//! milliseconds.
//!
//! The story itself is [`cluster_examples::quickstart`] (library code, so the test suite runs
//! exactly this). Logs go to stderr: `RUST_LOG=debug cargo run --example quickstart` shows the
//! frames and the sessions behind each line.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    cluster_examples::init_logs("warn");
    match cluster_examples::quickstart(std::io::stdout().lock()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("quickstart failed: {err}");
            ExitCode::FAILURE
        }
    }
}
