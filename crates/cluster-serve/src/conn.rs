//! One connection: hyper's HTTP/1 state machine over a socket whose stalled writes time out;
//! and the answer to a connection over the cap.

use axum::Router;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

/// What a connection needs to know of its server's config.
pub(crate) struct ConnLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) name: Arc<str>,
}

/// One HTTP/1.1 connection, until it ends or, after `stopping`, its request in flight is done.
pub(crate) async fn serve_connection(
    stream: WriteDeadline,
    app: Router,
    limits: ConnLimits,
    mut stopping: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(app),
        );
    tokio::pin!(connection);
    // Declared after the connection, so dropped before it: the slot is free by the time the
    // client sees the socket close.
    let _permit = permit;
    // The guard `wait_for` gives is dropped at once (it is not `Send`).
    let stop = async move {
        let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(err) = result {
        tracing::debug!(server = %limits.name, error = %err, "connection ended with an error");
    }
}

/// A connection's socket, with a deadline on writes that make no progress.
pub(crate) struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Runs while writes are pending; reset by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    pub(crate) fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self {
            stream,
            timeout,
            stalled: None,
        }
    }

    /// After a write returned `Pending`: `Ready(error)` once it has been pending too long.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        stalled.as_mut().poll(cx).map(|()| {
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
                self.stalled = None;
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
}
