//! isp-kit's `grpc_metrics`: a server's per-endpoint summaries and status counter, a client's
//! call durations.
//!
//! | name | type | labels | help |
//! |---|---|---|---|
//! | `grpc_request_duration_ms` | summary | endpoint | The latency of the GRPC requests |
//! | `grpc_request_body_size` | summary | endpoint | The size of request body |
//! | `grpc_response_body_size` | summary | endpoint | The size of response body |
//! | `grpc_status_code_count` | counter | endpoint, code | Counter of statuses codes |
//! | `grpc_client_request_duration_ms` | summary | endpoint | The latencies of calling external services via GRPC |
//!
//! `code` is Go's `codes.Code` string (`OK`, `InvalidArgument`, `NotFound`, …, see
//! [`code_name`]); codes are given as their numbers ([`code`] names them), so that this crate
//! needs no gRPC library.

use crate::cache::LabelCache;
use crate::{Family, Kind, milliseconds, reg};
use metrics::{Counter, Histogram, Label, SharedString};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// `grpc_request_duration_ms`: how long the server took, in whole milliseconds.
pub const REQUEST_DURATION_MS: &str = "grpc_request_duration_ms";
/// `grpc_request_body_size`: the bytes of the request's `BytesBody`.
pub const REQUEST_BODY_SIZE: &str = "grpc_request_body_size";
/// `grpc_response_body_size`: the bytes of the response's `BytesBody`.
pub const RESPONSE_BODY_SIZE: &str = "grpc_response_body_size";
/// `grpc_status_code_count`: the calls answered, by status code.
pub const STATUS_CODE_COUNT: &str = "grpc_status_code_count";
/// `grpc_client_request_duration_ms`: how long a call to another module took.
pub const CLIENT_REQUEST_DURATION_MS: &str = "grpc_client_request_duration_ms";

/// The families of this module, server's first.
pub const FAMILIES: [Family; 5] = [
    Family {
        name: REQUEST_DURATION_MS,
        help: "The latency of the GRPC requests",
        kind: Kind::Summary,
        labels: &["endpoint"],
    },
    Family {
        name: REQUEST_BODY_SIZE,
        help: "The size of request body",
        kind: Kind::Summary,
        labels: &["endpoint"],
    },
    Family {
        name: RESPONSE_BODY_SIZE,
        help: "The size of response body",
        kind: Kind::Summary,
        labels: &["endpoint"],
    },
    Family {
        name: STATUS_CODE_COUNT,
        help: "Counter of statuses codes",
        kind: Kind::Counter,
        labels: &["endpoint", "code"],
    },
    Family {
        name: CLIENT_REQUEST_DURATION_MS,
        help: "The latencies of calling external services via GRPC",
        kind: Kind::Summary,
        labels: &["endpoint"],
    },
];

/// Gives the server's help texts to the current recorder (Go: `NewServerStorage`).
pub fn describe_server() {
    FAMILIES[..4].iter().for_each(Family::describe);
}

/// Gives the client's help text to the current recorder (Go: `NewClientStorage`).
pub fn describe_client() {
    FAMILIES[4].describe();
}

/// The gRPC status codes, by number (as `tonic::Code as i32` gives them).
pub mod code {
    /// `OK`.
    pub const OK: i32 = 0;
    /// `Canceled`.
    pub const CANCELLED: i32 = 1;
    /// `Unknown`.
    pub const UNKNOWN: i32 = 2;
    /// `InvalidArgument`.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// `DeadlineExceeded`.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// `NotFound`.
    pub const NOT_FOUND: i32 = 5;
    /// `AlreadyExists`.
    pub const ALREADY_EXISTS: i32 = 6;
    /// `PermissionDenied`.
    pub const PERMISSION_DENIED: i32 = 7;
    /// `ResourceExhausted`.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// `FailedPrecondition`.
    pub const FAILED_PRECONDITION: i32 = 9;
    /// `Aborted`.
    pub const ABORTED: i32 = 10;
    /// `OutOfRange`.
    pub const OUT_OF_RANGE: i32 = 11;
    /// `Unimplemented`.
    pub const UNIMPLEMENTED: i32 = 12;
    /// `Internal`.
    pub const INTERNAL: i32 = 13;
    /// `Unavailable`.
    pub const UNAVAILABLE: i32 = 14;
    /// `DataLoss`.
    pub const DATA_LOSS: i32 = 15;
    /// `Unauthenticated`.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Go's `codes.Code` strings, by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// A status code as Go's `codes.Code.String()` writes it: `OK`, `Canceled` (one L, as in
/// Go), `InvalidArgument`, …, and `Code(17)` for a number without a name.
///
/// ```
/// use cluster_metrics::grpc::{code, code_name};
/// assert_eq!(code_name(code::DEADLINE_EXCEEDED), "DeadlineExceeded");
/// assert_eq!(code_name(42), "Code(42)");
/// ```
#[must_use]
pub fn code_name(code: i32) -> Cow<'static, str> {
    usize::try_from(code)
        .ok()
        .and_then(|i| CODE_NAMES.get(i))
        .map_or_else(
            || Cow::Owned(format!("Code({code})")),
            |s| Cow::Borrowed(*s),
        )
}

/// The server's handles of one endpoint, each registered at its first use (Go's `*Vec`
/// shows only the label values observed).
pub struct GrpcEndpointMetrics {
    endpoint: SharedString,
    duration: OnceLock<Histogram>,
    request_size: OnceLock<Histogram>,
    response_size: OnceLock<Histogram>,
    codes: [OnceLock<Counter>; CODE_NAMES.len()],
}

impl std::fmt::Debug for GrpcEndpointMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcEndpointMetrics")
            .field("endpoint", &&*self.endpoint)
            .finish_non_exhaustive()
    }
}

impl GrpcEndpointMetrics {
    /// The handles of `endpoint` (none registered yet).
    #[must_use]
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: SharedString::from_shared(Arc::<str>::from(endpoint.into())),
            duration: OnceLock::new(),
            request_size: OnceLock::new(),
            response_size: OnceLock::new(),
            codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn labels(&self) -> Vec<Label> {
        vec![Label::new("endpoint", self.endpoint.clone())]
    }

    fn summary<'a>(&self, slot: &'a OnceLock<Histogram>, name: &'static str) -> &'a Histogram {
        slot.get_or_init(|| reg::histogram(name, self.labels()))
    }

    /// One call that reached the endpoint's handler, as isp-kit's `endpoint.Metrics`
    /// middleware records it: the request's body size, the duration, the status code (after
    /// errors and panics became statuses), and the response's body size when there is a
    /// response (`None` on error).
    pub fn observe(
        &self,
        request_bytes: usize,
        duration: Duration,
        code: i32,
        response_bytes: Option<usize>,
    ) {
        self.observe_request_body_size(request_bytes);
        self.observe_duration(duration);
        self.count_status_code(code);
        if let Some(bytes) = response_bytes {
            self.observe_response_body_size(bytes);
        }
    }

    /// Records a duration (`grpc_request_duration_ms`, whole milliseconds, at least 1).
    pub fn observe_duration(&self, duration: Duration) {
        self.summary(&self.duration, REQUEST_DURATION_MS)
            .record(milliseconds(duration));
    }

    /// Records a request body size (`grpc_request_body_size`).
    pub fn observe_request_body_size(&self, bytes: usize) {
        self.summary(&self.request_size, REQUEST_BODY_SIZE)
            .record(bytes_f64(bytes));
    }

    /// Records a response body size (`grpc_response_body_size`).
    pub fn observe_response_body_size(&self, bytes: usize) {
        self.summary(&self.response_size, RESPONSE_BODY_SIZE)
            .record(bytes_f64(bytes));
    }

    /// Counts a status code (`grpc_status_code_count`).
    pub fn count_status_code(&self, code: i32) {
        let slot = usize::try_from(code).ok().and_then(|i| self.codes.get(i));
        match slot {
            Some(slot) => slot
                .get_or_init(|| self.code_counter(code_name(code)))
                .increment(1),
            // A number without a name: rare enough to register each time.
            None => self.code_counter(code_name(code)).increment(1),
        }
    }

    fn code_counter(&self, name: Cow<'static, str>) -> Counter {
        let mut labels = self.labels();
        labels.push(Label::new("code", name));
        reg::counter(STATUS_CODE_COUNT, labels)
    }
}

/// A byte count as a sample (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn bytes_f64(bytes: usize) -> f64 {
    bytes as f64
}

/// How many endpoints a [`GrpcServerMetrics`] made with [`GrpcServerMetrics::new`] caches,
/// and a [`GrpcClientMetrics`]: 1024 and 256.
pub const SERVER_CACHE_CAPACITY: usize = 1024;
/// See [`SERVER_CACHE_CAPACITY`].
pub const CLIENT_CACHE_CAPACITY: usize = 256;

/// A server's metrics (Go: `grpc_metrics.ServerStorage`): one [`GrpcEndpointMetrics`] per
/// endpoint, found without a lock.
///
/// Made from the router's endpoints ([`GrpcServerMetrics::with_endpoints`]) or empty
/// ([`GrpcServerMetrics::new`]); endpoints not given are added at their first call, up to
/// [`SERVER_CACHE_CAPACITY`] in all (past that, a new endpoint is still recorded, registering
/// its handles at each call). Record only endpoints the server routes: an endpoint name a
/// client chose would make a label value per name.
pub struct GrpcServerMetrics {
    endpoints: LabelCache<GrpcEndpointMetrics>,
}

impl std::fmt::Debug for GrpcServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServerMetrics")
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl Default for GrpcServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServerMetrics {
    /// Metrics whose endpoints are added at their first call; describes the server's
    /// families.
    #[must_use]
    pub fn new() -> Self {
        Self::with_endpoints(std::iter::empty::<String>())
    }

    /// Metrics for these endpoints (the router's paths); describes the server's families.
    /// Nothing is registered before an endpoint's first call.
    #[must_use]
    pub fn with_endpoints<I>(endpoints: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        describe_server();
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        let cache = LabelCache::new(SERVER_CACHE_CAPACITY.max(endpoints.len()));
        for endpoint in endpoints {
            let key = endpoint.clone();
            cache.get_or_insert_with(&[&key], || GrpcEndpointMetrics::new(endpoint));
        }
        Self { endpoints: cache }
    }

    /// The handles of `endpoint`, added if new; `None` when the cache is full.
    #[must_use]
    pub fn endpoint(&self, endpoint: &str) -> Option<&GrpcEndpointMetrics> {
        self.endpoints
            .get_or_insert_with(&[endpoint], || GrpcEndpointMetrics::new(endpoint))
    }

    /// One call to `endpoint`; see [`GrpcEndpointMetrics::observe`].
    pub fn observe(
        &self,
        endpoint: &str,
        request_bytes: usize,
        duration: Duration,
        code: i32,
        response_bytes: Option<usize>,
    ) {
        match self.endpoint(endpoint) {
            Some(metrics) => metrics.observe(request_bytes, duration, code, response_bytes),
            None => GrpcEndpointMetrics::new(endpoint).observe(
                request_bytes,
                duration,
                code,
                response_bytes,
            ),
        }
    }
}

/// A client's metrics (Go: `grpc_metrics.ClientStorage`): the duration of each call by
/// endpoint, one cached handle per endpoint (up to [`CLIENT_CACHE_CAPACITY`]; past that an
/// endpoint is still recorded, registering its handle at each call).
pub struct GrpcClientMetrics {
    endpoints: LabelCache<Histogram>,
}

impl std::fmt::Debug for GrpcClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClientMetrics")
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl Default for GrpcClientMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClientMetrics {
    /// Empty metrics; describes the client's family.
    #[must_use]
    pub fn new() -> Self {
        describe_client();
        Self {
            endpoints: LabelCache::new(CLIENT_CACHE_CAPACITY),
        }
    }

    /// Records the duration of one call of `endpoint`, whatever its outcome
    /// (`grpc_client_request_duration_ms`, whole milliseconds, at least 1).
    pub fn observe_duration(&self, endpoint: &str, duration: Duration) {
        let ms = milliseconds(duration);
        let register = || {
            reg::histogram(
                CLIENT_REQUEST_DURATION_MS,
                vec![Label::new("endpoint", endpoint.to_owned())],
            )
        };
        match self.endpoints.get_or_insert_with(&[endpoint], register) {
            Some(histogram) => histogram.record(ms),
            None => register().record(ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_go_s() {
        assert_eq!(code_name(code::OK), "OK");
        assert_eq!(code_name(code::CANCELLED), "Canceled");
        assert_eq!(code_name(code::INVALID_ARGUMENT), "InvalidArgument");
        assert_eq!(code_name(code::INTERNAL), "Internal");
        assert_eq!(code_name(code::UNAUTHENTICATED), "Unauthenticated");
        assert_eq!(code_name(17), "Code(17)");
        assert_eq!(code_name(-1), "Code(-1)");
    }

    #[test]
    fn endpoints_are_cached_once() {
        let metrics = GrpcServerMetrics::with_endpoints(["a/b", "c/d"]);
        assert_eq!(metrics.endpoints.len(), 2);
        let first: *const GrpcEndpointMetrics = metrics.endpoint("a/b").unwrap();
        let again: *const GrpcEndpointMetrics = metrics.endpoint("a/b").unwrap();
        assert_eq!(first, again);
        assert_eq!(metrics.endpoint("e/f").unwrap().endpoint(), "e/f");
        assert_eq!(metrics.endpoints.len(), 3);
    }
}
