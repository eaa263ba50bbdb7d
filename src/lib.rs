//! Runnable examples of the cluster crates, and the code behind them.
//!
//! The examples live in `examples/`; run one with `cargo run --example NAME` from the
//! repository root:
//!
//! - `quickstart`: a fake config service and two modules joining it, told in plain words
//!   ([`quickstart()`]);
//! - `default_flow`: the Go package's documented default usage, ported one for one; point it
//!   at `fake-config-service` or a real isp-config-service with `--hosts`;
//! - `probe`: an operator's tool that joins a cluster as a module and prints what it receives
//!   as JSON lines ([`probe`]);
//! - `grpc_probe`: an operator's tool that calls module endpoints over isp-kit's gRPC, or
//!   serves test endpoints, printing JSON lines ([`grpc_probe`]);
//! - `grpc_modules`: two modules on a fake config service, `orders` calling `auth-service`
//!   over gRPC through the addresses the cluster delivers ([`grpc_modules`]);
//! - `http_probe`: the same tool over isp-kit's HTTP transport: calls a module's endpoint
//!   with a method and a path, or serves test endpoints ([`http_probe`]);
//! - `http_modules`: two HTTP modules on a fake config service, `orders` calling `inventory`
//!   through the addresses the cluster delivers, with validation and business errors
//!   ([`http_modules`]).
//!
//! The quickstart and the probe are library code so that the test suite runs exactly what
//! the examples run; the examples themselves only parse arguments, set up logs and signals.
//!
//! # Layout
//! - [`quickstart()`](quickstart()): the quickstart's story.
//! - [`probe`]: the probe's flags, output lines and run loop.
//! - [`grpc_probe`], [`http_probe`]: the transport probes; [`masking`]: what both hide of
//!   the requests they print.
//! - [`grpc_modules`], [`http_modules`]: the two-module stories.
//! - [`shutdown_signal`] and [`init_logs`]: SIGINT/SIGTERM and stderr logs for the examples.
//!
//! # Example
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mut out = Vec::new();
//! cluster_examples::quickstart(&mut out).await.unwrap();
//! let text = String::from_utf8(out).unwrap();
//! assert!(text.contains("orders is ready"), "{text}");
//! # });
//! ```

pub mod grpc_modules;
pub mod grpc_probe;
pub mod http_modules;
pub mod http_probe;
mod logs;
pub mod masking;
pub mod probe;
mod probe_cli;
mod quickstart;

pub use cluster_bootstrap::{Signal, shutdown_signal};
pub use logs::init_logs;
pub use quickstart::{
    AUTH, AUTH_ADDRESS, ORDERS, ORDERS_ADDRESS, OrdersConfig, STEP_TIMEOUT, quickstart,
};

/// The Rust code blocks of `README.md`, compiled (and, unless marked `no_run`, run) as
/// doctests so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The Rust code blocks of the guides under `docs/`, compiled (and, unless marked `no_run`,
/// run) as doctests, one struct per file.
#[cfg(doctest)]
#[doc = include_str!("../docs/bootstrap.md")]
struct BootstrapDocDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/grpc.md")]
struct GrpcDocDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/http.md")]
struct HttpDocDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/operations.md")]
struct OperationsDocDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/testkit.md")]
struct TestkitDocDoctests;
