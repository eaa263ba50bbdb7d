//! The HTTP probe: calls a module's endpoint the way isp-kit modules call each other over
//! HTTP (`cluster_http::HttpClient`), or serves a few test endpoints (`cluster_http::Server`),
//! printing one JSON line per call or request (stdout). Point either at a Go peer to compare.
//!
//! ```text
//! cargo run --example http_probe -- call --hosts H[,H] --path P [--method M] [--body JSON]
//!     [--header k=v] [--request-id ID] [--timeout D] [--n N]
//! cargo run --example http_probe -- serve --listen ADDR
//! ```
//!
//! # `call` lines
//! - `{"ok":true,"status":200,"body":<response JSON>}` for a 2xx answer; an empty body prints
//!   `null`, a body that is not JSON is printed as a JSON string;
//! - `{"ok":false,"status":400,"errorCode":…,"errorMessage":…,"details":…}` for an answer
//!   with isp-kit's error body (`details` only when present);
//! - `{"ok":false,"status":404,"body":"404 page not found\n"}` for any other non-2xx answer
//!   (the body as for a 2xx one);
//! - `{"ok":false,"error":…}` for a call that got no answer (no host could be connected to,
//!   a timeout, a response over the size limit).
//!
//! (Keys are written in alphabetical order, as `grpc_probe` writes them.)
//!
//! Calls go one after the other, round-robin over `--hosts` (a host that cannot be connected
//! to is skipped for the next one). The method defaults to `POST` (isp-kit's endpoints are
//! mostly `POST`); the path is sent with a leading `/`, as isp-kit's gateway sends it. Each
//! call gets a new `x-request-id` unless `--request-id` gives one. Exit status: 0 when every
//! call got a 2xx answer, 1 when one did not, 2 on a usage error.
//!
//! # `serve` lines
//! First `{"listening":"ip:port"}`, then one line per request to a routed endpoint, printed
//! before the endpoint runs (so a request its decoding or validation refuses is printed
//! too): `{"method":…,"path":…,"headers":{…},"body":…}` (the first value of each header).
//! Endpoints:
//! - `POST echo/json`: answers the body's JSON value (decoded and written again as isp-kit
//!   writes JSON: a newline after it, `<`, `>`, `&` escaped); an empty body is the decoding
//!   error 400 (`unmarshal json request body: EOF`);
//! - `POST math/sum`: `{"a":…,"b":…}` → `{"sum":…}`, validated (`a` and `b` required: a
//!   missing one is answered 400, `invalid request body`, with the details);
//! - `POST fail/business`: the business error 1001 "custom failure", details
//!   `{"field":"x"}`;
//! - `POST fail/panic`: the handler panics; the answer is isp-kit's `500`, errorCode 900,
//!   "internal service error", and the server lives on (the panic is logged at ERROR on
//!   stderr; the example's [`quiet_on_purpose_panics`] keeps the panic hook's message and
//!   backtrace off).
//!
//! Other paths and methods get the router's answers (`404 page not found`, `405` with
//! `Allow`) and are not printed. Headers and body fields whose names hold a secret word are
//! printed as `"***"` ([`crate::masking`], the rule `grpc_probe` uses). The server stops on
//! SIGINT/SIGTERM, gracefully.

use crate::masking::{body_json, headers_json, json_or_string};
use crate::probe_cli::Parsed;
use bytes::Bytes;
use cluster_bootstrap::Signal;
use cluster_http::axum::extract::{Request, State};
use cluster_http::axum::middleware::Next;
use cluster_http::http::{HeaderName, HeaderValue, Method, StatusCode};
use cluster_http::validator::Validate;
use cluster_http::{ApiError, CallContext, CallError, Endpoint, HttpClient, Router, Server};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The help text.
pub const USAGE: &str = "\
http_probe: call isp module endpoints over HTTP or serve test endpoints

USAGE:
    cargo run --example http_probe -- call --hosts H[,H] --path P [FLAGS]
    cargo run --example http_probe -- serve [--listen ADDR]

CALL FLAGS:
    --hosts H[,H]     module instances, ip:port (required)
    --path P          the endpoint's path, e.g. orders/api/create (required)
    --method M        the method (default POST)
    --body JSON       the JSON request body (default: none)
    --header k=v      a request header (repeatable)
    --request-id ID   x-request-id (default: a new one per call)
    --timeout D       the call timeout (e.g. 2s, 500ms; default 15s)
    --n N             how many calls (default 1)

SERVE FLAGS:
    --listen ADDR     the address to listen on (default 127.0.0.1:0)

Output: one JSON line per call or request on stdout; logs on stderr.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpProbeCommand {
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
    /// `--method` (upper-cased; default `POST`).
    pub method: Method,
    /// `--path`.
    pub path: String,
    /// `--body`, checked to be JSON.
    pub body: Option<String>,
    /// `--header`, in order, each checked to be a valid HTTP header.
    pub headers: Vec<(String, String)>,
    /// `--request-id`.
    pub request_id: Option<String>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--n` (at least 1).
    pub n: usize,
}

impl CallOptions {
    /// A call of `method` on `path` at `host`, no body, the defaults otherwise.
    #[must_use]
    pub fn new(host: &str, method: Method, path: &str) -> Self {
        Self {
            hosts: vec![host.to_owned()],
            method,
            path: path.to_owned(),
            body: None,
            headers: Vec::new(),
            request_id: None,
            timeout: None,
            n: 1,
        }
    }
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
pub fn parse_args<I>(args: I) -> Result<HttpProbeCommand, String>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    let mut call = CallOptions::new("", Method::POST, "");
    let parsed = crate::probe_cli::parse(args, |command, flag, value| {
        match (command, flag) {
            ("call", "--method") => {
                call.method = Method::from_bytes(value.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("--method {value:?} is not an HTTP method"))?;
            }
            ("call", "--path") => call.path = value,
            ("call", "--header") => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--header {value:?} is not k=v"))?;
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("--header {k:?} is not a header name"))?;
                HeaderValue::from_str(v)
                    .map_err(|_| format!("--header {k}: the value is not a header value"))?;
                call.headers.push((k.to_owned(), v.to_owned()));
            }
            ("call", "--request-id") => {
                if value.is_empty() || HeaderValue::from_str(&value).is_err() {
                    return Err(format!("--request-id {value:?} is not a header value"));
                }
                call.request_id = Some(value);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let common = match parsed {
        Parsed::Help => return Ok(HttpProbeCommand::Help),
        Parsed::Serve(common) => {
            return Ok(HttpProbeCommand::Serve(ServeOptions {
                listen: common.listen,
            }));
        }
        Parsed::Call(common) => common,
    };
    if call.path.is_empty() {
        return Err("call needs --path".to_owned());
    }
    Ok(HttpProbeCommand::Call(CallOptions {
        hosts: common.hosts,
        body: common.body,
        timeout: common.timeout,
        n: common.n,
        ..call
    }))
}

/// A call's outcome as the probe reads it: a 2xx answer (status and body), or why not (an
/// answer of another status is [`CallError::Api`] or [`CallError::Status`], as
/// `Invoke::raw` says it).
///
/// # Errors
/// The call's error, or the non-2xx answer as one.
pub fn outcome(
    sent: Result<cluster_http::http::Response<Bytes>, CallError>,
) -> Result<(StatusCode, Bytes), CallError> {
    let response = sent?;
    let status = response.status();
    let body = response.into_body();
    if status.is_success() {
        Ok((status, body))
    } else {
        Err(CallError::from_response(status, body))
    }
}

/// The output line of one call (see the [module docs](self)).
#[must_use]
pub fn call_line(outcome: &Result<(StatusCode, Bytes), CallError>) -> String {
    let value = match outcome {
        Ok((status, body)) => {
            json!({"ok": true, "status": status.as_u16(), "body": json_or_string(body)})
        }
        Err(CallError::Api(error)) => {
            let mut line = json!({
                "ok": false,
                "status": error.status.as_u16(),
                "errorCode": error.error_code,
                "errorMessage": error.error_message,
            });
            if !error.details.is_empty() {
                line["details"] = Value::Object(error.details.clone());
            }
            line
        }
        Err(CallError::Status { status, body }) => {
            json!({"ok": false, "status": status.as_u16(), "body": json_or_string(body)})
        }
        Err(other) => json!({"ok": false, "error": other.to_string()}),
    };
    value.to_string()
}

/// Runs `call`: `options.n` calls, one line each. Returns how many failed.
///
/// # Errors
/// When `out` cannot be written.
pub async fn run_call(options: &CallOptions, mut out: impl Write) -> std::io::Result<usize> {
    let client = HttpClient::new(options.hosts.clone());
    let mut failed = 0;
    for _ in 0..options.n {
        let mut call = client.invoke(options.method.clone(), &options.path);
        if let Some(body) = &options.body {
            call = call.raw_body(body.clone());
        }
        for (k, v) in &options.headers {
            call = call.header(k, v);
        }
        if let Some(id) = &options.request_id {
            call = call.request_id(id);
        }
        if let Some(timeout) = options.timeout {
            call = call.timeout(timeout);
        }
        let result = outcome(call.send().await);
        if result.is_err() {
            failed += 1;
        }
        writeln!(out, "{}", call_line(&result))?;
        out.flush()?;
    }
    Ok(failed)
}

type Out = Arc<Mutex<dyn Write + Send>>;

/// `math/sum`'s request: both numbers required (Go: `*int64` with `validate:"required"`).
#[derive(Debug, Deserialize, Validate)]
#[validate(crate = "cluster_http::validator")]
struct Sum {
    #[validate(required)]
    a: Option<i64>,
    #[validate(required)]
    b: Option<i64>,
}

/// The router of `serve`: `POST echo/json`, `POST math/sum` (validated), `POST
/// fail/business`, `POST fail/panic` (see the [module docs](self)).
#[must_use]
pub fn probe_router() -> Router {
    Router::new()
        .handle(
            Endpoint::post("echo/json"),
            |_: CallContext, body: Value| async move { Ok::<_, ApiError>(body) },
        )
        .expect("distinct paths")
        .handle_validated(
            Endpoint::post("math/sum"),
            |_: CallContext, sum: Sum| async move {
                let (a, b) = (sum.a.unwrap_or_default(), sum.b.unwrap_or_default());
                Ok::<_, ApiError>(json!({"sum": a.wrapping_add(b)}))
            },
        )
        .expect("distinct paths")
        .handle_without_body(Endpoint::post("fail/business"), |_: CallContext| async {
            Err::<(), _>(ApiError::business(1001, "custom failure").with_detail("field", "x"))
        })
        .expect("distinct paths")
        .handle_without_body(Endpoint::post("fail/panic"), panics)
        .expect("distinct paths")
}

/// What `fail/panic`'s handler panics with.
pub const PANIC_MESSAGE: &str = "fail/panic: on purpose";

/// `fail/panic`'s handler.
async fn panics(_: CallContext) -> Result<(), ApiError> {
    panic!("{PANIC_MESSAGE}")
}

/// Keeps the panics of `fail/panic` off stderr (the server logs each at ERROR already, and
/// the default hook would add a backtrace per call under `RUST_BACKTRACE`); any other panic
/// goes to the hook set before, as it would have. Process-wide: for the probe's `main`.
pub fn quiet_on_purpose_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message != Some(PANIC_MESSAGE) {
            previous(info);
        }
    }));
}

/// Prints each request to a routed endpoint, before the router sees it.
#[derive(Clone)]
struct Printer {
    out: Out,
    /// `(method, path as served)` of each endpoint.
    routes: Arc<HashSet<(Method, String)>>,
}

impl Printer {
    fn new(router: &Router, out: Out) -> Self {
        let routes = router
            .endpoints()
            .map(|e| (e.method().clone(), e.route_path().to_owned()))
            .collect();
        Self {
            out,
            routes: Arc::new(routes),
        }
    }

    fn routed(&self, method: &Method, path: &str) -> bool {
        // A key allocated per request: fine for a probe.
        self.routes.contains(&(method.clone(), path.to_owned()))
    }

    fn print(&self, line: &Value) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // A closed stdout must not fail the call.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The printing layer's function (`cluster_http::axum::middleware::from_fn_with_state`).
async fn print_request(
    State(printer): State<Printer>,
    request: Request,
    next: Next,
) -> cluster_http::axum::response::Response {
    if !printer.routed(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // The server has read the body already, within its limit.
    let body = match cluster_http::axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            return ApiError::bad_request(format!("read request body: {e}"))
                .to_response()
                .map(cluster_http::axum::body::Body::from);
        }
    };
    printer.print(&json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "headers": headers_json(parts.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
        "body": body_json(&body),
    }));
    next.run(Request::from_parts(
        parts,
        cluster_http::axum::body::Body::from(body),
    ))
    .await
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
) -> Result<SocketAddr, cluster_http::BoxError>
where
    W: Write + Send + 'static,
    F: Future<Output = Signal> + Send + 'static,
{
    let out: Out = Arc::new(Mutex::new(out));
    let router = probe_router();
    let printer = Printer::new(&router, out.clone());
    let server = Server::builder(router)
        .layer(cluster_http::axum::middleware::from_fn_with_state(
            printer,
            print_request,
        ))
        .shutdown_on(async move {
            let signal = shutdown.await;
            tracing::info!(?signal, "http_probe: stopping");
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
