//! `cargo run --example http_probe -- call|serve …`: calls isp module endpoints over HTTP as
//! isp-kit modules call each other, or serves test endpoints, one JSON line per call or
//! request (stdout); logs go to stderr (`RUST_LOG`, default `warn`).
//!
//! ```text
//! cargo run --example http_probe -- serve --listen 127.0.0.1:9400 &
//! {"listening":"127.0.0.1:9400"}
//! cargo run --example http_probe -- call --hosts 127.0.0.1:9400 --path math/sum --body '{"a":40,"b":2}'
//! {"ok":true,"status":200,"body":{"sum":42}}
//! ```
//!
//! `--help` lists the flags; [`cluster_examples::http_probe`] documents the lines.

use cluster_examples::http_probe::{
    HttpProbeCommand, USAGE, parse_args, quiet_on_purpose_panics, run_call, run_serve,
};
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("http_probe: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    cluster_examples::init_logs("warn");
    match command {
        HttpProbeCommand::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        HttpProbeCommand::Call(options) => match run_call(&options, std::io::stdout()).await {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("http_probe: {err}");
                ExitCode::FAILURE
            }
        },
        HttpProbeCommand::Serve(options) => {
            quiet_on_purpose_panics();
            let shutdown = match cluster_examples::shutdown_signal() {
                Ok(shutdown) => shutdown,
                Err(err) => {
                    eprintln!("http_probe: cannot listen for signals: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match run_serve(&options, std::io::stdout(), shutdown).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("http_probe: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
