//! `cargo run --example http_modules`: two HTTP modules on a fake config service; `orders`
//! requires `inventory` and calls its `POST inventory/api/reserve` through the address the
//! cluster delivers; a caller sees isp-kit's answers (an order, a validation error with its
//! details, `inventory`'s business error passed on, 405 and 404).
//! [`cluster_examples::http_modules`] holds the code.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    cluster_examples::init_logs("warn");
    match cluster_examples::http_modules::http_modules(std::io::stdout()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("http_modules: {err}");
            ExitCode::FAILURE
        }
    }
}
