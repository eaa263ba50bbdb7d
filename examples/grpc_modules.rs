//! `cargo run --example grpc_modules`: two modules on a fake config service; `orders` requires
//! `auth-service`, calls its `auth/api/login` over gRPC through the addresses the cluster
//! delivers, and keeps working when one of the two `auth-service` instances goes away.
//! [`cluster_examples::grpc_modules`] holds the code.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    cluster_examples::init_logs("warn");
    match cluster_examples::grpc_modules::grpc_modules(std::io::stdout()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grpc_modules: {err}");
            ExitCode::FAILURE
        }
    }
}
