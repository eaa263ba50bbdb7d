//! The gRPC probe: calls a module's endpoint the way isp-kit modules do, or serves a few test
//! endpoints, printing one JSON line per call or request (stdout).
//!
//! ```text
//! cargo run --example grpc_probe -- call --hosts H[,H] --endpoint E --body JSON [--md k=v]
//!     [--app-id N] [--timeout D] [--n N]
//! cargo run --example grpc_probe -- serve --listen ADDR
//! ```
//!
//! # `call` lines
//! - `{"ok":true,"body":<response JSON>}`; an empty body prints `null` (as isp-kit's client
//!   reads it); a body that is not JSON is printed as a JSON string.
//! - `{"ok":false,"grpcCode":"InvalidArgument","errorCode":…,"errorMessage":…,"details":…}` for
//!   an API error (`details` only when present);
//! - `{"ok":false,"grpcCode":"NotFound","errorMessage":…}` for a status without isp detail;
//! - `{"ok":false,"grpcCode":"DeadlineExceeded","errorMessage":…}` for a timeout;
//! - `{"ok":false,"error":…}` for a call that reached no server (no hosts, bad metadata).
//!
//! gRPC codes are spelled as grpc-go spells them (`Canceled`, `InvalidArgument`, …). Calls go
//! one after the other, round-robin over `--hosts`. Exit status: 0 when every call succeeded,
//! 1 when one failed, 2 on a usage error.
//!
//! # `serve` lines
//! First `{"listening":"ip:port"}`, then one line per request:
//! `{"endpoint":…,"metadata":{…},"body":…}`. Endpoints: `echo/json` (answers the body as it
//! came), `math/sum` (`{"a":…,"b":…}` → `{"sum":…}`; a body that does not decode is the
//! business error 400), `fail/business` (errorCode 1001, "custom failure", details
//! `{"field":"x"}`). Metadata values and body fields whose names hold a secret word (the rule
//! of configs in logs: `token`, `password`, `secret`, …, plus `authorization` and `cookie`;
//! [`crate::masking`], shared with `http_probe`) are printed as `"***"`; binary (`-bin`)
//! entries are left out. The server stops on SIGINT/SIGTERM, gracefully.

use crate::masking::{body_json, headers_json, json_or_string};
use crate::probe_cli::Parsed;
use bytes::Bytes;
use cluster_bootstrap::Signal;
use cluster_grpc::tonic::Code;
use cluster_grpc::tonic::metadata::{KeyAndValueRef, MetadataMap};
use cluster_grpc::{ApiError, CallContext, CallError, GrpcClient, Message, Router, Server};
use serde::Deserialize;
use serde_json::{Value, json};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The help text.
pub const USAGE: &str = "\
grpc_probe: call isp module endpoints (isp.BackendService/Request) or serve test endpoints

USAGE:
    cargo run --example grpc_probe -- call --hosts H[,H] --endpoint E [FLAGS]
    cargo run --example grpc_probe -- serve [--listen ADDR]

CALL FLAGS:
    --hosts H[,H]     module instances, ip:port (required)
    --endpoint E      the endpoint, e.g. auth/api/login (required)
    --body JSON       the JSON request body (default: none, an empty BytesBody)
    --md k=v          a metadata entry (repeatable)
    --app-id N        x-application-identity
    --timeout D       the call timeout (e.g. 2s, 500ms; default 15s)
    --n N             how many calls (default 1)

SERVE FLAGS:
    --listen ADDR     the address to listen on (default 127.0.0.1:0)

Output: one JSON line per call or request on stdout; logs on stderr.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum GrpcProbeCommand {
    /// `call`.
    Call(CallOptions),
    /// `serve`.
    Serve(ServeOptions),
    /// `--help`.
    Help,
}

/// The flags of `call`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOptions {
    /// `--hosts`.
    pub hosts: Vec<String>,
    /// `--endpoint`.
    pub endpoint: String,
    /// `--body`, validated as JSON.
    pub body: Option<String>,
    /// `--md`, in order.
    pub metadata: Vec<(String, String)>,
    /// `--app-id`.
    pub app_id: Option<i64>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--n` (at least 1).
    pub n: usize,
}

/// The flags of `serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: String,
}

/// Parses the arguments (without the program name).
///
/// # Errors
/// A usage error, as text.
pub fn parse_args<I>(args: I) -> Result<GrpcProbeCommand, String>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    let mut endpoint = String::new();
    let mut metadata = Vec::new();
    let mut app_id = None;
    let parsed = crate::probe_cli::parse(args, |command, flag, value| {
        match (command, flag) {
            ("call", "--endpoint") => endpoint = value,
            ("call", "--md") => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--md {value:?} is not k=v"))?;
                metadata.push((k.to_owned(), v.to_owned()));
            }
            ("call", "--app-id") => {
                app_id = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--app-id {value:?} is not an integer"))?,
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let common = match parsed {
        Parsed::Help => return Ok(GrpcProbeCommand::Help),
        Parsed::Serve(common) => {
            return Ok(GrpcProbeCommand::Serve(ServeOptions {
                listen: common.listen,
            }));
        }
        Parsed::Call(common) => common,
    };
    if endpoint.is_empty() {
        return Err("call needs --endpoint".to_owned());
    }
    Ok(GrpcProbeCommand::Call(CallOptions {
        hosts: common.hosts,
        endpoint,
        body: common.body,
        metadata,
        app_id,
        timeout: common.timeout,
        n: common.n,
    }))
}

/// A gRPC code as grpc-go spells it.
#[must_use]
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The output line of one call.
#[must_use]
pub fn call_line(result: &Result<Bytes, CallError>) -> String {
    let value = match result {
        Ok(body) => json!({"ok": true, "body": json_or_string(body)}),
        Err(CallError::Api { code, error }) => {
            let mut line = json!({
                "ok": false,
                "grpcCode": go_code_name(*code),
                "errorCode": error.error_code,
                "errorMessage": error.error_message,
            });
            if !error.details.is_empty() {
                line["details"] = Value::Object(error.details.clone());
            }
            line
        }
        Err(CallError::Status(status)) => json!({
            "ok": false,
            "grpcCode": go_code_name(status.code()),
            "errorMessage": status.message(),
        }),
        Err(e @ CallError::Timeout(_)) => json!({
            "ok": false,
            "grpcCode": go_code_name(Code::DeadlineExceeded),
            "errorMessage": e.to_string(),
        }),
        Err(other) => json!({"ok": false, "error": other.to_string()}),
    };
    value.to_string()
}

/// Runs `call`: `options.n` calls, one line each. Returns how many failed.
///
/// # Errors
/// When `out` cannot be written.
pub async fn run_call(options: &CallOptions, mut out: impl Write) -> std::io::Result<usize> {
    let client = GrpcClient::new(options.hosts.clone());
    let mut failed = 0;
    for _ in 0..options.n {
        let mut call = client.invoke(options.endpoint.clone());
        if let Some(body) = &options.body {
            call = call.raw_body(body.clone());
        }
        for (k, v) in &options.metadata {
            call = call.metadata(k.clone(), v.clone());
        }
        if let Some(id) = options.app_id {
            call = call.application_id(id);
        }
        if let Some(timeout) = options.timeout {
            call = call.timeout(timeout);
        }
        let result = call.raw().await;
        if result.is_err() {
            failed += 1;
        }
        writeln!(out, "{}", call_line(&result))?;
        out.flush()?;
    }
    Ok(failed)
}

/// The metadata of a request as printed by `serve`: secrets masked ([`crate::masking`]),
/// binary (`-bin`) entries left out, the first value of a key kept.
#[must_use]
pub fn metadata_json(metadata: &MetadataMap) -> Value {
    headers_json(metadata.iter().filter_map(|entry| match entry {
        KeyAndValueRef::Ascii(key, value) => Some((key.as_str(), value.as_bytes())),
        KeyAndValueRef::Binary(..) => None,
    }))
}

type Out = Arc<Mutex<dyn Write + Send>>;

fn print_request(out: &Out, ctx: &CallContext, message: &Message) {
    let line = json!({
        "endpoint": ctx.endpoint(),
        "metadata": metadata_json(ctx.metadata()),
        "body": body_json(&message.bytes_body()),
    });
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    // A closed stdout must not fail the call.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[derive(Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

/// The router of `serve`: `echo/json`, `math/sum`, `fail/business`, each request printed.
#[must_use]
pub fn probe_router(out: Out) -> Router {
    let (o1, o2, o3) = (out.clone(), out.clone(), out);
    Router::new()
        .handle_raw("echo/json", move |ctx: CallContext, m: Message| {
            print_request(&o1, &ctx, &m);
            async move { Ok::<_, ApiError>(m) }
        })
        .expect("distinct paths")
        .handle_raw("math/sum", move |ctx: CallContext, m: Message| {
            print_request(&o2, &ctx, &m);
            async move {
                let sum: Sum = serde_json::from_slice(&m.bytes_body()).map_err(|e| {
                    ApiError::bad_request(format!("unmarshal json request body: {e}"))
                })?;
                let answer = json!({"sum": sum.a.wrapping_add(sum.b)});
                Ok::<_, ApiError>(Message::bytes(answer.to_string()))
            }
        })
        .expect("distinct paths")
        .handle_raw("fail/business", move |ctx: CallContext, m: Message| {
            print_request(&o3, &ctx, &m);
            async move {
                Err::<Message, _>(
                    ApiError::business(1001, "custom failure").with_detail("field", "x"),
                )
            }
        })
        .expect("distinct paths")
}

/// Runs `serve` until `shutdown` resolves; prints `{"listening":…}` first. Returns the address
/// it listened on.
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn run_serve<W, F>(
    options: &ServeOptions,
    out: W,
    shutdown: F,
) -> Result<SocketAddr, cluster_grpc::BoxError>
where
    W: Write + Send + 'static,
    F: Future<Output = Signal> + Send + 'static,
{
    let out: Out = Arc::new(Mutex::new(out));
    let server = Server::builder(probe_router(out.clone()))
        .shutdown_on(async move {
            let signal = shutdown.await;
            tracing::info!(?signal, "grpc_probe: stopping");
        })
        .bind(&options.listen)
        .await?;
    let addr = server.local_addr();
    {
        let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
        writeln!(out, "{}", json!({"listening": addr.to_string()}))?;
        out.flush()?;
    }
    server.wait().await?;
    Ok(addr)
}
