//! The body limits: the whole request body read, within a time and a size limit, before the
//! route runs. [`serve`](crate::serve) does it in each connection's service; a router served
//! another way takes it as a middleware, [`with_body_limits`].

use crate::ServeConfig;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Adds the body limits of `config` to `router`: [`ServeConfig::body_timeout`] and
/// [`ServeConfig::max_body_size`]. [`serve`](crate::serve) applies them itself (in each
/// connection, without a middleware); this is for a router served another way, or tested
/// without a server.
///
/// Every request body is read whole before the route runs. One over the size limit is
/// answered `413 {"error"}` (at once when its `Content-Length` says so, else as soon as the
/// limit is passed); one not complete [`ServeConfig::body_timeout`] after the route was
/// reached, `408 {"error"}`; one that breaks off (a bad chunk), `400 {"error"}`. The three
/// carry `Connection: close` (the rest of the body is not read) and are logged at INFO.
/// axum's own body limit (2 MiB, plain-text answer) is turned off: this one replaces it.
///
/// ```
/// use axum::Router;
/// use axum::routing::post;
/// use cluster_serve::{ServeConfig, with_body_limits};
///
/// let config = ServeConfig::new("infra").with_max_body_size(64 << 10);
/// let router: Router = with_body_limits(
///     Router::new().route("/echo", post(|body: String| async move { body })),
///     &config,
/// );
/// # drop(router);
/// ```
pub fn with_body_limits<S>(router: Router<S>, config: &ServeConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        // Our own limit, with a JSON answer, replaces axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Limits::new(config)),
            bounded_body,
        ))
}

/// The body limits of a server, and its name for the answers' log lines.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) max: usize,
    name: Arc<str>,
}

impl Limits {
    pub(crate) fn new(config: &ServeConfig) -> Self {
        Self {
            timeout: config.body_timeout,
            max: config.max_body_size,
            name: Arc::from(config.name.as_ref()),
        }
    }

    /// `413`: the body is over the limit.
    pub(crate) fn too_large(&self) -> Response {
        closing(
            &self.name,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} bytes", self.max),
        )
    }

    /// The answer to a body that was not read whole.
    pub(crate) fn refusal(&self, collected: Collected) -> Response {
        match collected {
            Collected::TooLarge | Collected::Body(_) => self.too_large(),
            Collected::Broken => closing(
                &self.name,
                StatusCode::BAD_REQUEST,
                "the request body could not be read".to_owned(),
            ),
            Collected::TimedOut => closing(
                &self.name,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    self.timeout.as_millis()
                ),
            ),
        }
    }
}

/// How reading a body ended.
#[derive(Debug)]
pub(crate) enum Collected {
    /// All of it.
    Body(Bytes),
    /// Over the size limit.
    TooLarge,
    /// It broke off (a bad chunk, the connection closed).
    Broken,
    /// Not complete in time.
    TimedOut,
}

/// Reads a whole body within a size limit. A body that comes in one piece (what a small
/// request's body is: hyper hands it out of its read buffer) is taken as it is, no copy and
/// no buffer list; more pieces are joined.
pub(crate) struct Collect<B> {
    body: B,
    first: Option<Bytes>,
    rest: Vec<u8>,
    len: usize,
    max: usize,
}

impl<B> Collect<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    pub(crate) fn new(body: B, max: usize) -> Self {
        Self {
            body,
            first: None,
            rest: Vec::new(),
            len: 0,
            max,
        }
    }

    pub(crate) fn poll_collect(&mut self, cx: &mut Context<'_>) -> Poll<Collected> {
        loop {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Collected::Body(self.take())),
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Collected::Broken),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            // Trailers are dropped, as `collect().to_bytes()` drops them.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.len = self.len.saturating_add(data.len());
            if self.len > self.max {
                return Poll::Ready(Collected::TooLarge);
            }
            if data.is_empty() {
                continue;
            }
            match &self.first {
                None if self.rest.is_empty() => self.first = Some(data),
                _ => {
                    if let Some(first) = self.first.take() {
                        self.rest.reserve(first.len() + data.len());
                        self.rest.extend_from_slice(&first);
                    }
                    self.rest.extend_from_slice(&data);
                }
            }
            if self.body.is_end_stream() {
                return Poll::Ready(Collected::Body(self.take()));
            }
        }
    }

    fn take(&mut self) -> Bytes {
        match self.first.take() {
            Some(first) => first,
            None => Bytes::from(std::mem::take(&mut self.rest)),
        }
    }
}

/// Reads the whole body, within the time and size limits, before the route runs.
async fn bounded_body(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max as u64) {
        return limits.too_large();
    }
    let (parts, body) = request.into_parts();
    let mut collect = Collect::new(body, limits.max);
    let read = poll_fn(|cx| collect.poll_collect(cx));
    let collected = tokio::time::timeout(limits.timeout, read)
        .await
        .unwrap_or(Collected::TimedOut);
    match collected {
        Collected::Body(bytes) => {
            let request = Request::from_parts(parts, Body::from(bytes));
            next.run(request).await
        }
        refused => limits.refusal(refused),
    }
}

/// `status` with `{"error": message}` and `Connection: close`, logged.
fn closing(name: &str, status: StatusCode, message: String) -> Response {
    tracing::info!(server = %name, status = status.as_u16(), error = %message, "request refused");
    let body = serde_json::json!({ "error": message });
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use http_body_util::BodyExt as _;
    use hyper::body::Frame;
    use hyper::service::Service;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body whose data never comes.
    struct Never;

    impl hyper::body::Body for Never {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    /// A body that fails after its first bytes.
    struct Broken(bool);

    impl hyper::body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Ready(Some(Err(std::io::Error::other("reset"))))
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
            }
        }
    }

    /// `body` through the limits of `config` to a route that answers the length it got.
    async fn send(config: &ServeConfig, body: Body, declared: Option<usize>) -> (u16, String) {
        let router: Router = Router::new().route(
            "/",
            post(|body: Bytes| async move { body.len().to_string() }),
        );
        let service =
            hyper_util::service::TowerToHyperService::new(with_body_limits(router, config));
        let mut request = axum::http::Request::post("/");
        if let Some(len) = declared {
            request = request.header(header::CONTENT_LENGTH, len);
        }
        let response = service
            .call(request.body(body).expect("request"))
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        if status != 200 {
            assert_eq!(
                response
                    .headers()
                    .get(header::CONNECTION)
                    .map(HeaderValue::as_bytes),
                Some(&b"close"[..])
            );
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn error(text: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(text).expect(text);
        value["error"].as_str().expect(text).to_owned()
    }

    #[tokio::test]
    async fn bodies_within_the_limit_reach_the_route_whole() {
        let config = ServeConfig::default().with_max_body_size(8);
        assert_eq!(
            send(&config, Body::from("12345678"), Some(8)).await,
            (200, "8".into())
        );
        assert_eq!(send(&config, Body::empty(), None).await, (200, "0".into()));
        // Over axum's own limit of 2 MiB, which is off.
        let config = ServeConfig::default();
        let big = vec![b'x'; 3 << 20];
        let len = big.len();
        assert_eq!(
            send(&config, Body::from(big), None).await,
            (200, len.to_string())
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_get_413_declared_or_not() {
        let config = ServeConfig::default().with_max_body_size(8);
        let (status, text) = send(&config, Body::empty(), Some(9)).await;
        assert_eq!(
            (status, error(&text)),
            (413, "the request body is larger than 8 bytes".into())
        );
        let (status, text) = send(&config, Body::from("123456789"), None).await;
        assert_eq!(
            (status, error(&text)),
            (413, "the request body is larger than 8 bytes".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_come_gets_408() {
        let config = ServeConfig::default().with_body_timeout(Duration::from_millis(1500));
        let (status, text) = send(&config, Body::new(Never), Some(10)).await;
        assert_eq!(status, 408);
        assert_eq!(
            error(&text),
            "the request body did not arrive within 1500 ms"
        );
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_gets_400() {
        let (status, text) = send(&ServeConfig::default(), Body::new(Broken(false)), None).await;
        assert_eq!(
            (status, error(&text)),
            (400, "the request body could not be read".into())
        );
    }
}
