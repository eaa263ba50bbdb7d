//! `cargo run --example grpc_probe -- call|serve …`: calls isp module endpoints over isp-kit's
//! gRPC convention, or serves test endpoints, one JSON line per call or request (stdout); logs
//! go to stderr (`RUST_LOG`, default `warn`).
//!
//! ```text
//! cargo run --example grpc_probe -- serve --listen 127.0.0.1:9300 &
//! {"listening":"127.0.0.1:9300"}
//! cargo run --example grpc_probe -- call --hosts 127.0.0.1:9300 --endpoint math/sum --body '{"a":40,"b":2}'
//! {"ok":true,"body":{"sum":42}}
//! ```
//!
//! `--help` lists the flags; [`cluster_examples::grpc_probe`] documents the lines.

use cluster_examples::grpc_probe::{GrpcProbeCommand, USAGE, parse_args, run_call, run_serve};
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("grpc_probe: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    cluster_examples::init_logs("warn");
    match command {
        GrpcProbeCommand::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        GrpcProbeCommand::Call(options) => match run_call(&options, std::io::stdout()).await {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("grpc_probe: {err}");
                ExitCode::FAILURE
            }
        },
        GrpcProbeCommand::Serve(options) => {
            let shutdown = match cluster_examples::shutdown_signal() {
                Ok(shutdown) => shutdown,
                Err(err) => {
                    eprintln!("grpc_probe: cannot listen for signals: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match run_serve(&options, std::io::stdout(), shutdown).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("grpc_probe: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
