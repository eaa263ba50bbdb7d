//! Panic recovery (Go: the `Recovery` middleware of `grpc/endpoint` and `http/endpoint`).

use http::{Request, Response};
use pin_project_lite::pin_project;
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// A panic caught by [`RecoverLayer`].
#[derive(Debug, Clone)]
pub struct Panic {
    message: String,
}

impl Panic {
    fn caught(payload: &(dyn Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %message, "panic while serving a request: answered as the transport answers one");
        Self { message }
    }

    /// The panic's message, when it was a string (`panic!("…")`); empty otherwise.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Turns a panic of the inner service, in its `call` or in its future, into a response the
/// caller can read, built by `respond` (the transport's: gRPC answers `Internal` "internal
/// service error", isp-kit's HTTP a 500 with its error body), and logs it at ERROR (with the
/// panic's message; in the request's span when this layer is inside
/// [`TraceLayer`](crate::TraceLayer)).
///
/// The panic unwinds no further: the connection and the server live on, and the inner
/// service is called again for the next requests (a service a panic left inconsistent is
/// the service's concern). The process's panic hook still runs (it prints the panic, or
/// reports it to Sentry when the bootstrap set that up).
///
/// Cost: nothing while nothing panics (no allocation, no check; `catch_unwind` costs only
/// when it catches), but the clone of `respond` per call (nothing for a closure that
/// captures nothing).
#[derive(Clone)]
pub struct RecoverLayer<F> {
    respond: F,
}

impl<F> RecoverLayer<F> {
    /// The layer; `respond` makes the answer to a panic.
    pub fn new(respond: F) -> Self {
        Self { respond }
    }
}

impl<F> fmt::Debug for RecoverLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoverLayer").finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for RecoverLayer<F> {
    type Service = Recover<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Recover {
            inner,
            respond: self.respond.clone(),
        }
    }
}

/// The service of [`RecoverLayer`].
#[derive(Clone)]
pub struct Recover<S, F> {
    inner: S,
    respond: F,
}

impl<S: fmt::Debug, F> fmt::Debug for Recover<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recover")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, B, ResB> Service<Request<B>> for Recover<S, F>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    F: Fn(&Panic) -> Response<ResB> + Clone,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RecoverFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let respond = self.respond.clone();
        let inner = &mut self.inner;
        let state = match catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(future) => State::Running { future, respond },
            Err(payload) => State::Panicked {
                panic: Some(Panic::caught(&*payload)),
                respond,
            },
        };
        RecoverFuture { state }
    }
}

pin_project! {
    /// The future of [`Recover`].
    pub struct RecoverFuture<Fut, F> {
        #[pin]
        state: State<Fut, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, F> {
        Running { #[pin] future: Fut, respond: F },
        Panicked { panic: Option<Panic>, respond: F },
        Done,
    }
}

impl<Fut, F, ResB, E> Future for RecoverFuture<Fut, F>
where
    Fut: Future<Output = Result<Response<ResB>, E>>,
    F: Fn(&Panic) -> Response<ResB>,
{
    type Output = Fut::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.state.as_mut().project() {
            StateProj::Running { future, respond } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(poll) => return poll,
                    Err(payload) => respond(&Panic::caught(&*payload)),
                }
            }
            StateProj::Panicked { panic, respond } => {
                let panic = panic.take().unwrap_or_else(|| Panic {
                    message: String::new(),
                });
                respond(&panic)
            }
            StateProj::Done => panic!("RecoverFuture polled after it completed"),
        };
        // The future that panicked is dropped here, never polled again.
        this.state.set(State::Done);
        Poll::Ready(Ok(response))
    }
}
