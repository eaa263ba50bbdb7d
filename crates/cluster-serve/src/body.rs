//! The body limits: a middleware that reads the whole request body, within a time and a size
//! limit, before the route runs.

use crate::ServeConfig;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;

/// Adds the body limits of `config` to `router`: [`ServeConfig::body_timeout`] and
/// [`ServeConfig::max_body_size`]. [`serve`](crate::serve) adds them itself; this is for a
/// router served another way, or tested without a server.
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
    let limits = BodyLimits {
        timeout: config.body_timeout,
        max: config.max_body_size,
        name: Arc::from(config.name.as_ref()),
    };
    router
        // Our own limit, with a JSON answer, replaces axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(limits, bounded_body))
}

#[derive(Debug, Clone)]
struct BodyLimits {
    timeout: Duration,
    max: usize,
    name: Arc<str>,
}

/// Reads the whole body, within the time and size limits, before the route runs.
async fn bounded_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max as u64) {
        return too_large(&limits);
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, limits.max).collect();
    match tokio::time::timeout(limits.timeout, read).await {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(request).await
        }
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => too_large(&limits),
        Ok(Err(_)) => closing(
            &limits.name,
            StatusCode::BAD_REQUEST,
            "the request body could not be read".to_owned(),
        ),
        Err(_) => closing(
            &limits.name,
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms",
                limits.timeout.as_millis()
            ),
        ),
    }
}

fn too_large(limits: &BodyLimits) -> Response {
    closing(
        &limits.name,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {} bytes", limits.max),
    )
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
    use axum::body::Bytes;
    use axum::routing::post;
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
