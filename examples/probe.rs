//! `cargo run --example probe -- --module NAME [flags]`: joins a cluster as a module and
//! prints what the config service hands it, one JSON line each (stdout); logs go to stderr
//! (`RUST_LOG`, default `info`).
//!
//! ```text
//! cargo run -p cluster-testkit --bin fake-config-service &          # or a real isp-config-service
//! cargo run --example probe -- --module A --config --routes --require B --ready-exit
//! {"kind":"config","data":{}}
//! {"kind":"hosts","module":"B","hosts":[]}
//! {"kind":"routes","data":[]}
//! {"kind":"ready","us":2875}
//! ```
//!
//! `--help` lists the flags; [`cluster_examples::probe`] documents the lines, the exit
//! statuses and the decisions behind them.

use cluster_examples::probe::{Command, Probe, help, parse_args};
use std::process::ExitCode;

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", help());
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap's message: what is wrong, the usage line, "try '--help'".
            eprint!("{err}");
            return ExitCode::from(2);
        }
    };
    cluster_examples::init_logs("info");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("probe: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = match cluster_examples::shutdown_signal() {
            Ok(shutdown) => shutdown,
            Err(err) => {
                eprintln!("probe: cannot listen for signals: {err}");
                return ExitCode::FAILURE;
            }
        };
        match Probe::new(options).run(std::io::stdout(), shutdown).await {
            Ok(report) => ExitCode::from(report.exit_code),
            Err(err) => {
                eprintln!("probe: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
