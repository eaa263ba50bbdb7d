//! One connection: hyper's HTTP/1 state machine over a socket whose stalled writes time out,
//! the header timeout kept with one timer per connection, each request given the peer's
//! address and its whole body; and the answer to a connection over the cap.

use crate::body::{Collect, Collected, Limits};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{Request, Response, header};
use axum::routing::future::RouteFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, Sleep};
use tower::{Layer as _, Service as _};

/// The largest body axum's extractors take without a `DefaultBodyLimit` (axum-core's
/// `DEFAULT_LIMIT`, 2 MiB): a body read whole within our limit and above this one gets
/// `DefaultBodyLimit::disable()`, so that an extractor does not refuse what we accepted.
const AXUM_DEFAULT_LIMIT: usize = 2 << 20;

/// What a connection needs to know of its server's config.
pub(crate) struct ConnLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) name: Arc<str>,
}

/// Whether a connection waits for a request head, and since when: what the header timeout
/// is checked against. Written by the requests' service and response bodies, read by the
/// connection's task (all within that one task: the atomics are for `Send`, never contended).
#[derive(Debug)]
pub(crate) struct Activity {
    /// The connection's start, the origin of `idle_since`.
    start: Instant,
    /// Requests whose response has not ended yet.
    in_flight: AtomicUsize,
    /// When the last response ended (or the connection started), in nanoseconds since
    /// `start`.
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn response_ended(&self) {
        let since = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.idle_since.store(since, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// When the header timeout expires: `None` while a request is being served.
    fn head_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        Some(self.start + since + timeout)
    }
}

/// One HTTP/1.1 connection, until it ends or, after `stopping`, its request in flight is done.
///
/// The header timeout is not hyper's (which makes, arms and drops a timer for every request
/// head): one timer per connection fires at the earliest moment the timeout could expire,
/// and is set again for the next such moment when the connection turned out busy or idle
/// for less long. A busy connection sees it fire once per `header_timeout`, not once per
/// request.
pub(crate) async fn serve_connection(
    stream: WriteDeadline,
    service: ConnService,
    limits: ConnLimits,
    mut stopping: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let activity = Arc::clone(&service.activity);
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    // Declared after the connection, so dropped before it: the slot is free by the time the
    // client sees the socket close.
    let _permit = permit;
    // The guard `wait_for` gives is dropped at once (it is not `Send`).
    let stop = async move {
        let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
    };
    tokio::pin!(stop);
    let timeout = limits.header_timeout;
    let head_timer = tokio::time::sleep(timeout);
    tokio::pin!(head_timer);
    let mut stopped = false;
    let result = loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => break result,
            () = &mut stop, if !stopped => {
                stopped = true;
                connection.as_mut().graceful_shutdown();
            }
            () = head_timer.as_mut(), if !stopped => {
                let now = Instant::now();
                match activity.head_deadline(timeout) {
                    Some(deadline) if deadline <= now => {
                        tracing::debug!(server = %limits.name, "no request head within the header timeout; closing the connection");
                        return;
                    }
                    Some(deadline) => head_timer.as_mut().reset(deadline),
                    // Serving: the timeout starts again when the response ends, at the
                    // earliest now.
                    None => head_timer.as_mut().reset(now + timeout),
                }
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(server = %limits.name, error = %err, "connection ended with an error");
    }
}

/// The service of one connection: each request gets the peer's address (axum's
/// `ConnectInfo<SocketAddr>`) and its body read whole within the body limits, then goes to
/// the router; its response is followed to its end for the header timeout.
pub(crate) struct ConnService {
    app: Router,
    peer: SocketAddr,
    limits: Arc<Limits>,
    activity: Arc<Activity>,
}

impl ConnService {
    pub(crate) fn new(app: Router, peer: SocketAddr, limits: Arc<Limits>) -> Self {
        Self {
            app,
            peer,
            limits,
            activity: Arc::new(Activity::new()),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = ConnFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let state = if declared.is_some_and(|len| len > self.limits.max as u64) {
            State::Answered {
                response: Some(self.limits.too_large()),
            }
        } else {
            let (parts, body) = request.into_parts();
            State::Reading {
                parts: Some(parts),
                collect: Collect::new(body, self.limits.max),
                timer: None,
                app: Some(self.app.clone()),
            }
        };
        ConnFuture {
            state,
            limits: Arc::clone(&self.limits),
            activity: Some(Arc::clone(&self.activity)),
        }
    }
}

pin_project! {
    /// The future of [`ConnService`].
    pub(crate) struct ConnFuture {
        #[pin]
        state: State,
        limits: Arc<Limits>,
        activity: Option<Arc<Activity>>,
    }

    impl PinnedDrop for ConnFuture {
        fn drop(this: Pin<&mut Self>) {
            // No response made (the connection is going away): not in flight any more.
            if let Some(activity) = this.project().activity.take() {
                activity.response_ended();
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        /// Reading the body; the body timeout's timer made only if it does not come at once.
        Reading {
            parts: Option<axum::http::request::Parts>,
            collect: Collect<Incoming>,
            timer: Option<Pin<Box<Sleep>>>,
            app: Option<Router>,
        },
        /// The router's.
        Routing { #[pin] future: RouteFuture<Infallible> },
        /// Refused before the router.
        Answered { response: Option<Response<Body>> },
    }
}

impl Future for ConnFuture {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let response = match this.state.as_mut().project() {
                StateProj::Reading {
                    parts,
                    collect,
                    timer,
                    app,
                } => {
                    let collected = match collect.poll_collect(cx) {
                        Poll::Ready(collected) => collected,
                        Poll::Pending => {
                            let limits = &**this.limits;
                            let timer = timer.get_or_insert_with(|| {
                                Box::pin(tokio::time::sleep(limits.timeout))
                            });
                            ready!(timer.as_mut().poll(cx));
                            Collected::TimedOut
                        }
                    };
                    match collected {
                        Collected::Body(bytes) => {
                            let (Some(parts), Some(mut app)) = (parts.take(), app.take()) else {
                                unreachable!("a body is read once");
                            };
                            let large = bytes.len() > AXUM_DEFAULT_LIMIT;
                            let request = Request::from_parts(parts, Body::from(bytes));
                            let future = if large {
                                // Read within our limit: no extractor's limit on top of it.
                                DefaultBodyLimit::disable().layer(app).call(request)
                            } else {
                                app.call(request)
                            };
                            this.state.set(State::Routing { future });
                            continue;
                        }
                        refused => this.limits.refusal(refused),
                    }
                }
                StateProj::Routing { future } => match ready!(future.poll(cx)) {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                StateProj::Answered { response } => response
                    .take()
                    .unwrap_or_else(|| unreachable!("polled after it completed")),
            };
            let activity = this.activity.take();
            return Poll::Ready(Ok(response.map(|body| Tracked {
                inner: body,
                activity,
            })));
        }
    }
}

pin_project! {
    /// A response body, followed to its end: the header timeout of the connection's next
    /// request starts there.
    pub(crate) struct Tracked {
        #[pin]
        inner: Body,
        activity: Option<Arc<Activity>>,
    }

    impl PinnedDrop for Tracked {
        fn drop(this: Pin<&mut Self>) {
            if let Some(activity) = this.project().activity.take() {
                activity.response_ended();
            }
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none()
            && let Some(activity) = this.activity.take()
        {
            activity.response_ended();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, with a deadline on writes that make no progress.
pub(crate) struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Made at the first write that waits, then set again for each stall: one timer per
    /// connection, not one per stall.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current stall.
    stalled: bool,
}

impl WriteDeadline {
    pub(crate) fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self {
            stream,
            timeout,
            timer: None,
            stalled: false,
        }
    }

    /// After a write returned `Pending`: `Ready(error)` once it has been pending too long.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timeout = self.timeout;
        let timer = match &mut self.timer {
            Some(timer) => {
                if !self.stalled {
                    timer.as_mut().reset(Instant::now() + timeout);
                }
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep(timeout))),
        };
        self.stalled = true;
        timer.as_mut().poll(cx).map(|()| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client has not read its response in time",
            )
        })
    }

    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            ready => {
                self.stalled = false;
                ready
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.guard(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        this.guard(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}

/// The whole answer to a connection over the cap: `503 {"error": "too many <name>
/// connections; try again later"}`, `Connection: close`.
pub(crate) fn busy_response(name: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": format!("too many {name} connections; try again later"),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes `response` (as much as the socket takes at once; it never waits); the stream is
/// closed when the caller drops it.
pub(crate) fn refuse(stream: &TcpStream, response: &[u8]) {
    let _ = stream.try_write(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_names_the_server_and_stays_json() {
        let raw = String::from_utf8(busy_response("admin")).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{raw}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{raw}"
        );
        assert_eq!(
            body,
            r#"{"error":"too many admin connections; try again later"}"#
        );
        let odd = String::from_utf8(busy_response("say \"hi\"")).unwrap();
        let (_, body) = odd.split_once("\r\n\r\n").unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            value["error"],
            "too many say \"hi\" connections; try again later"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_head_deadline_follows_the_requests() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(10);
        assert_eq!(
            activity.head_deadline(timeout),
            Some(activity.start + timeout)
        );
        activity.request_started();
        assert_eq!(activity.head_deadline(timeout), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        activity.response_ended();
        let deadline = activity.head_deadline(timeout).unwrap();
        assert_eq!(deadline - activity.start, Duration::from_secs(13));
        // Two in flight (pipelined): busy until both ended.
        activity.request_started();
        activity.request_started();
        activity.response_ended();
        assert_eq!(activity.head_deadline(timeout), None);
        activity.response_ended();
        assert!(activity.head_deadline(timeout).is_some());
    }
}
