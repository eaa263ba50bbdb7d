//! isp-kit's `http_metrics`: a server's summaries and status counter by method and endpoint,
//! a client's durations (the whole call, and its connect, DNS, write and read phases), status
//! codes and errors by endpoint.
//!
//! | name | type | labels | help |
//! |---|---|---|---|
//! | `http_request_duration_ms` | summary | method, endpoint | The latency of the HTTP requests |
//! | `http_request_body_size` | summary | method, endpoint | The size of request body |
//! | `http_response_body_size` | summary | method, endpoint | The size of response body |
//! | `http_status_code_count` | counter | method, endpoint, code | Counter of statuses codes |
//! | `http_client_request_duration_ms` | summary | endpoint | The latencies of calling external services via HTTP |
//! | `http_client_connect_duration` | summary | endpoint | The latencies of connection establishment |
//! | `http_client_request_write_duration` | summary | endpoint | The latencies of request writing |
//! | `http_client_dns_duration` | summary | endpoint | The latencies of DNS lookup |
//! | `http_client_response_read_duration` | summary | endpoint | The latencies of response reading |
//! | `http_client_status_code_count` | counter | endpoint, code | Counter of HTTP status codes |
//! | `http_client_error_count` | counter | endpoint, error | Counter of HTTP client errors |
//!
//! `code` is the decimal status (`200`). The `_ms` durations are whole milliseconds
//! ([`milliseconds`]); the connect, write, DNS and read durations are nanoseconds, as Go
//! records them (`float64(duration)`). `error` is the error's text with hosts replaced
//! ([`sanitize_error`]).

mod sanitize;

pub use sanitize::sanitize_error;

use crate::cache::LabelCache;
use crate::{Family, Kind, milliseconds, reg};
use metrics::{Counter, Histogram, Label, SharedString};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// `http_request_duration_ms`.
pub const REQUEST_DURATION_MS: &str = "http_request_duration_ms";
/// `http_request_body_size`.
pub const REQUEST_BODY_SIZE: &str = "http_request_body_size";
/// `http_response_body_size`.
pub const RESPONSE_BODY_SIZE: &str = "http_response_body_size";
/// `http_status_code_count`.
pub const STATUS_CODE_COUNT: &str = "http_status_code_count";
/// `http_client_request_duration_ms`.
pub const CLIENT_REQUEST_DURATION_MS: &str = "http_client_request_duration_ms";
/// `http_client_connect_duration` (nanoseconds).
pub const CLIENT_CONNECT_DURATION: &str = "http_client_connect_duration";
/// `http_client_request_write_duration` (nanoseconds).
pub const CLIENT_REQUEST_WRITE_DURATION: &str = "http_client_request_write_duration";
/// `http_client_dns_duration` (nanoseconds).
pub const CLIENT_DNS_DURATION: &str = "http_client_dns_duration";
/// `http_client_response_read_duration` (nanoseconds).
pub const CLIENT_RESPONSE_READ_DURATION: &str = "http_client_response_read_duration";
/// `http_client_status_code_count`.
pub const CLIENT_STATUS_CODE_COUNT: &str = "http_client_status_code_count";
/// `http_client_error_count`.
pub const CLIENT_ERROR_COUNT: &str = "http_client_error_count";

const SERVER_LABELS: &[&str] = &["method", "endpoint"];
const CLIENT_LABELS: &[&str] = &["endpoint"];

/// The families of this module, server's first.
pub const FAMILIES: [Family; 11] = [
    Family {
        name: REQUEST_DURATION_MS,
        help: "The latency of the HTTP requests",
        kind: Kind::Summary,
        labels: SERVER_LABELS,
    },
    Family {
        name: REQUEST_BODY_SIZE,
        help: "The size of request body",
        kind: Kind::Summary,
        labels: SERVER_LABELS,
    },
    Family {
        name: RESPONSE_BODY_SIZE,
        help: "The size of response body",
        kind: Kind::Summary,
        labels: SERVER_LABELS,
    },
    Family {
        name: STATUS_CODE_COUNT,
        help: "Counter of statuses codes",
        kind: Kind::Counter,
        labels: &["method", "endpoint", "code"],
    },
    Family {
        name: CLIENT_REQUEST_DURATION_MS,
        help: "The latencies of calling external services via HTTP",
        kind: Kind::Summary,
        labels: CLIENT_LABELS,
    },
    Family {
        name: CLIENT_CONNECT_DURATION,
        help: "The latencies of connection establishment",
        kind: Kind::Summary,
        labels: CLIENT_LABELS,
    },
    Family {
        name: CLIENT_REQUEST_WRITE_DURATION,
        help: "The latencies of request writing",
        kind: Kind::Summary,
        labels: CLIENT_LABELS,
    },
    Family {
        name: CLIENT_DNS_DURATION,
        help: "The latencies of DNS lookup",
        kind: Kind::Summary,
        labels: CLIENT_LABELS,
    },
    Family {
        name: CLIENT_RESPONSE_READ_DURATION,
        help: "The latencies of response reading",
        kind: Kind::Summary,
        labels: CLIENT_LABELS,
    },
    Family {
        name: CLIENT_STATUS_CODE_COUNT,
        help: "Counter of HTTP status codes",
        kind: Kind::Counter,
        labels: &["endpoint", "code"],
    },
    Family {
        name: CLIENT_ERROR_COUNT,
        help: "Counter of HTTP client errors",
        kind: Kind::Counter,
        labels: &["endpoint", "error"],
    },
];

/// Gives the server's help texts to the current recorder (Go: `NewServerStorage`).
pub fn describe_server() {
    FAMILIES[..4].iter().for_each(Family::describe);
}

/// Gives the client's help texts to the current recorder (Go: `NewClientStorage`).
pub fn describe_client() {
    FAMILIES[4..].iter().for_each(Family::describe);
}

/// How many endpoints (method and path, for a server) a [`HttpServerMetrics`] or
/// [`HttpClientMetrics`] caches: 1024. Past that, a new one is still recorded, registering
/// its handles at each call.
pub const CACHE_CAPACITY: usize = 1024;
/// How many status codes, and error texts, one endpoint caches: 32.
const PER_ENDPOINT_CAPACITY: usize = 32;

/// A sample as a float (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn f64_of(n: u128) -> f64 {
    n as f64
}

/// A status code in decimal, without allocating.
fn decimal(code: u16, buf: &mut [u8; 5]) -> &str {
    let mut n = code;
    let mut at = buf.len();
    loop {
        at -= 1;
        // `n % 10` is a digit.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        buf[at] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Digits only: always UTF-8.
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

/// Counters by one extra label value (a status code, an error text), cached up to
/// [`PER_ENDPOINT_CAPACITY`].
struct Counters {
    name: &'static str,
    label: &'static str,
    cache: LabelCache<Counter>,
}

impl Counters {
    fn new(name: &'static str, label: &'static str) -> Self {
        Self {
            name,
            label,
            cache: LabelCache::new(PER_ENDPOINT_CAPACITY),
        }
    }

    fn increment(&self, mut labels: impl FnMut() -> Vec<Label>, value: &str) {
        let register = || {
            let mut labels = labels();
            labels.push(Label::new(self.label, value.to_owned()));
            reg::counter(self.name, labels)
        };
        match self.cache.get_or_insert_with(&[value], register) {
            Some(counter) => counter.increment(1),
            None => {
                let mut labels = labels();
                labels.push(Label::new(self.label, value.to_owned()));
                reg::counter(self.name, labels).increment(1);
            }
        }
    }
}

/// The server's handles of one method and endpoint, each registered at its first use.
pub struct HttpEndpointMetrics {
    method: SharedString,
    endpoint: SharedString,
    duration: OnceLock<Histogram>,
    request_size: OnceLock<Histogram>,
    response_size: OnceLock<Histogram>,
    codes: Counters,
}

impl std::fmt::Debug for HttpEndpointMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEndpointMetrics")
            .field("method", &&*self.method)
            .field("endpoint", &&*self.endpoint)
            .finish_non_exhaustive()
    }
}

impl HttpEndpointMetrics {
    /// The handles of `method` and `endpoint` (none registered yet).
    #[must_use]
    pub fn new(method: &str, endpoint: &str) -> Self {
        Self {
            method: SharedString::from_shared(Arc::<str>::from(method)),
            endpoint: SharedString::from_shared(Arc::<str>::from(endpoint)),
            duration: OnceLock::new(),
            request_size: OnceLock::new(),
            response_size: OnceLock::new(),
            codes: Counters::new(STATUS_CODE_COUNT, "code"),
        }
    }

    fn labels(&self) -> Vec<Label> {
        vec![
            Label::new("method", self.method.clone()),
            Label::new("endpoint", self.endpoint.clone()),
        ]
    }

    fn summary<'a>(&self, slot: &'a OnceLock<Histogram>, name: &'static str) -> &'a Histogram {
        slot.get_or_init(|| reg::histogram(name, self.labels()))
    }

    /// Records a duration (`http_request_duration_ms`).
    pub fn observe_duration(&self, duration: Duration) {
        self.summary(&self.duration, REQUEST_DURATION_MS)
            .record(milliseconds(duration));
    }

    /// Records a request body size (`http_request_body_size`).
    pub fn observe_request_body_size(&self, bytes: usize) {
        self.summary(&self.request_size, REQUEST_BODY_SIZE)
            .record(f64_of(bytes as u128));
    }

    /// Records a response body size (`http_response_body_size`).
    pub fn observe_response_body_size(&self, bytes: usize) {
        self.summary(&self.response_size, RESPONSE_BODY_SIZE)
            .record(f64_of(bytes as u128));
    }

    /// Counts a status code (`http_status_code_count`).
    pub fn count_status_code(&self, code: u16) {
        let mut buf = [0; 5];
        self.codes
            .increment(|| self.labels(), decimal(code, &mut buf));
    }
}

/// A server's metrics (Go: `http_metrics.ServerStorage`), by method and endpoint (the route's
/// pattern, not the raw path: every value is a label value).
pub struct HttpServerMetrics {
    endpoints: LabelCache<HttpEndpointMetrics>,
}

impl std::fmt::Debug for HttpServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerMetrics")
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl Default for HttpServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpServerMetrics {
    /// Empty metrics; describes the server's families.
    #[must_use]
    pub fn new() -> Self {
        describe_server();
        Self {
            endpoints: LabelCache::new(CACHE_CAPACITY),
        }
    }

    /// The handles of `method` and `endpoint`, added if new; `None` when the cache is full.
    #[must_use]
    pub fn endpoint(&self, method: &str, endpoint: &str) -> Option<&HttpEndpointMetrics> {
        self.endpoints.get_or_insert_with(&[method, endpoint], || {
            HttpEndpointMetrics::new(method, endpoint)
        })
    }

    /// One request, as isp-kit's HTTP `Metrics` middleware records it: the duration and the
    /// status code always, the body sizes when the response was buffered (`Some`).
    pub fn observe(
        &self,
        method: &str,
        endpoint: &str,
        duration: Duration,
        status: u16,
        body_sizes: Option<(usize, usize)>,
    ) {
        let record = |m: &HttpEndpointMetrics| {
            m.observe_duration(duration);
            m.count_status_code(status);
            if let Some((request, response)) = body_sizes {
                m.observe_request_body_size(request);
                m.observe_response_body_size(response);
            }
        };
        match self.endpoint(method, endpoint) {
            Some(m) => record(m),
            None => record(&HttpEndpointMetrics::new(method, endpoint)),
        }
    }
}

/// The client's handles of one endpoint, each registered at its first use.
pub struct HttpClientEndpointMetrics {
    endpoint: SharedString,
    duration: OnceLock<Histogram>,
    connect: OnceLock<Histogram>,
    write: OnceLock<Histogram>,
    dns: OnceLock<Histogram>,
    read: OnceLock<Histogram>,
    codes: Counters,
    errors: Counters,
}

impl std::fmt::Debug for HttpClientEndpointMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientEndpointMetrics")
            .field("endpoint", &&*self.endpoint)
            .finish_non_exhaustive()
    }
}

impl HttpClientEndpointMetrics {
    /// The handles of `endpoint` (none registered yet).
    #[must_use]
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: SharedString::from_shared(Arc::<str>::from(endpoint)),
            duration: OnceLock::new(),
            connect: OnceLock::new(),
            write: OnceLock::new(),
            dns: OnceLock::new(),
            read: OnceLock::new(),
            codes: Counters::new(CLIENT_STATUS_CODE_COUNT, "code"),
            errors: Counters::new(CLIENT_ERROR_COUNT, "error"),
        }
    }

    fn labels(&self) -> Vec<Label> {
        vec![Label::new("endpoint", self.endpoint.clone())]
    }

    fn record(&self, slot: &OnceLock<Histogram>, name: &'static str, value: f64) {
        slot.get_or_init(|| reg::histogram(name, self.labels()))
            .record(value);
    }

    /// Records the whole call (`http_client_request_duration_ms`, whole milliseconds).
    pub fn observe_duration(&self, duration: Duration) {
        let ms = milliseconds(duration);
        self.record(&self.duration, CLIENT_REQUEST_DURATION_MS, ms);
    }

    /// Records connecting (`http_client_connect_duration`, nanoseconds).
    pub fn observe_conn_establishment(&self, duration: Duration) {
        let ns = f64_of(duration.as_nanos());
        self.record(&self.connect, CLIENT_CONNECT_DURATION, ns);
    }

    /// Records writing the request (`http_client_request_write_duration`, nanoseconds).
    pub fn observe_request_writing(&self, duration: Duration) {
        let ns = f64_of(duration.as_nanos());
        self.record(&self.write, CLIENT_REQUEST_WRITE_DURATION, ns);
    }

    /// Records the DNS lookup (`http_client_dns_duration`, nanoseconds).
    pub fn observe_dns_lookup(&self, duration: Duration) {
        let ns = f64_of(duration.as_nanos());
        self.record(&self.dns, CLIENT_DNS_DURATION, ns);
    }

    /// Records reading the response (`http_client_response_read_duration`, nanoseconds).
    pub fn observe_response_reading(&self, duration: Duration) {
        let ns = f64_of(duration.as_nanos());
        self.record(&self.read, CLIENT_RESPONSE_READ_DURATION, ns);
    }

    /// Counts a status code (`http_client_status_code_count`).
    pub fn count_status_code(&self, code: u16) {
        let mut buf = [0; 5];
        self.codes
            .increment(|| self.labels(), decimal(code, &mut buf));
    }

    /// Counts an error (`http_client_error_count`), labelled with its text with hosts
    /// replaced ([`sanitize_error`]).
    pub fn count_error(&self, error: &dyn std::fmt::Display) {
        let text = sanitize_error(&error.to_string());
        self.errors.increment(|| self.labels(), &text);
    }
}

/// A client's metrics (Go: `http_metrics.ClientStorage`), by endpoint (a name the caller
/// gives each call, Go's `ClientEndpointToContext`; never the URL).
pub struct HttpClientMetrics {
    endpoints: LabelCache<HttpClientEndpointMetrics>,
}

impl std::fmt::Debug for HttpClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientMetrics")
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl Default for HttpClientMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClientMetrics {
    /// Empty metrics; describes the client's families.
    #[must_use]
    pub fn new() -> Self {
        describe_client();
        Self {
            endpoints: LabelCache::new(CACHE_CAPACITY),
        }
    }

    /// The handles of `endpoint`, added if new; `None` when the cache is full.
    #[must_use]
    pub fn endpoint(&self, endpoint: &str) -> Option<&HttpClientEndpointMetrics> {
        self.endpoints
            .get_or_insert_with(&[endpoint], || HttpClientEndpointMetrics::new(endpoint))
    }

    /// Runs `f` on the handles of `endpoint` (made for this call alone when the cache is
    /// full).
    pub fn with_endpoint(&self, endpoint: &str, f: impl FnOnce(&HttpClientEndpointMetrics)) {
        match self.endpoint(endpoint) {
            Some(m) => f(m),
            None => f(&HttpClientEndpointMetrics::new(endpoint)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_in_decimal() {
        let mut buf = [0; 5];
        assert_eq!(decimal(200, &mut buf), "200");
        assert_eq!(decimal(0, &mut buf), "0");
        assert_eq!(decimal(7, &mut buf), "7");
        assert_eq!(decimal(u16::MAX, &mut buf), "65535");
    }
}
