//! A module the way an isp-kit Go module is written: local config from `conf/config_dev.yml`,
//! JSON logs, `/internal/health` and `/internal/metrics`, a gRPC endpoint, a typed remote
//! config whose `logLevel` sets the log level, SIGINT/SIGTERM handled in order.
//!
//! ```text
//! cargo run -p cluster-testkit --bin fake-config-service &   # ws 127.0.0.1:9001, admin :9002
//! cd examples/module && APP_MODE=dev cargo run --example module
//! curl -s localhost:9111/internal/health; curl -s localhost:9111/internal/metrics
//! ```

use cluster_bootstrap::{Bootstrap, Fatal, LogLevel, Module};
use cluster_client::TypedConfig;
use cluster_grpc::{ApiError, CallContext, Router};
use serde::{Deserialize, Serialize};

/// The remote config: its JSON Schema goes to the config service.
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Remote {
    greeting: String,
    log_level: Option<LogLevel>,
}

#[derive(Deserialize)]
struct Hello {
    name: String,
}

#[tokio::main]
async fn main() -> Result<(), Fatal> {
    let boot = Bootstrap::new(env!("CARGO_PKG_VERSION"))?;
    // The remote config's `logLevel` sets the level, as isp-kit services do with SetLevel.
    let remote =
        TypedConfig::<Remote>::new().inspect(boot.log_level().follow(|c: &Remote| c.log_level));
    let config = remote.handle();
    let router = Router::new().handle("hello/api/greet", move |_: CallContext, req: Hello| {
        let greeting = config.get().map(|c| c.greeting.clone()).unwrap_or_default();
        async move {
            Ok::<_, ApiError>(serde_json::json!({ "text": format!("{greeting}, {}!", req.name) }))
        }
    })?;
    boot.run(Module::new(remote).grpc(router)).await?;
    Ok(())
}
