//! Transports for ETP messages.
//!
//! This crate knows frames and connections, not sessions. A [`Transport`] is one full-duplex,
//! message-level connection split into a [`MessageSink`] (the one writer) and a
//! [`MessageStream`] (the one reader). A [`Connector`] opens one towards an [`Endpoint`]; an
//! [`Acceptor`] takes them on the server side. Three implementations share the traits:
//!
//! - [`ws`]: WebSocket (`ws://` and `wss://` with rustls), the protocol the Go peers speak;
//! - `tcp` (feature `tcp`): length-delimited frames over plain TCP, for tests and setups
//!   without WebSocket (it does **not** speak to the Go peers);
//! - `memory` (feature `memory`): a connected pair without sockets, with fault knobs for tests.
//!
//! # Features
//! Both test transports are behind features, off by default, so a production build carries
//! only the WebSocket layer:
//!
//! | feature | enables |
//! |---|---|
//! | `memory` | the `memory` module: `memory::pair`, `MemoryNetwork` (a `mem://` network of listeners and connectors), fault knobs |
//! | `tcp` | the `tcp` module: `TcpConnector` and `TcpAcceptor` (`tcp://`, length-delimited frames) |
//!
//! The [`Scheme::Tcp`] and [`Scheme::Memory`] endpoints parse with or without them. The
//! fake config service (`cluster-testkit`) turns `memory` on; crates whose tests use a test
//! transport turn it on in their `[dev-dependencies]`. The example below needs `memory`.
//!
//! On top of any of them, the ETP connection runtime (emit, emit with ack, handlers per event,
//! ping, close) is the `cluster-etp` crate's `Conn`.
//!
//! # Nothing of a payload reaches a log
//! No code of this crate logs a payload, and neither does any dependency it runs: the
//! WebSocket library has no logging at all, and rustls and tokio-rustls are built without their
//! `logging` feature. This holds with any subscriber, any level and the `log` bridge on
//! (tracing-subscriber's `tracing-log` feature), without changing the global `log` level
//! (`tests/no_payload_in_logs.rs` checks it at TRACE, over `ws://` and `wss://`).
//!
//! # The WebSocket layer: our own frame layer
//! The transport used tokio-tungstenite until tungstenite was found to log every frame with its
//! payload through the `log` facade (at trace), so that every config secret reached the logs of
//! any binary with the `log` bridge on; then tokio-websockets; now its own frame layer
//! ([`ws`] docs). Why: a config service holds thousands of idle connections and a module's
//! client once read a routing table of tens of KiB; every library kept a read buffer per
//! connection for its whole life, from the start and as large as the largest message once one
//! came, which set the floor of the service's memory per connection and of the client's
//! footprint. Ours keeps no read buffer while idle and reads follow the traffic. The frame
//! layer is small (`ws::codec`, `ws::frames`) and the opening handshake was already ours. The
//! price: conformance rests on our own suite (`tests/it/rfc6455.rs`, the RFC's rules on both
//! sides) rather than on the published results of the libraries we replaced. The candidates,
//! measured side by side (memory per connection, floods, round trips, handshakes), are in
//! `docs/performance.md` with the command that measures them
//! (`cargo bench -p cluster-transport --bench ws_libs`). The opening handshake ([`ws`] docs,
//! *Upgrade requests*): bounded requests with an HTTP status for every fault, and the server's
//! reason in a refused client's error.
//!
//! # Example
//! ```
//! use cluster_transport::memory::MemoryNetwork;
//! use cluster_transport::{Connector, Endpoint};
//!
//! # tokio_test_block_on(async {
//! let network = MemoryNetwork::new();
//! let mut acceptor = network.bind("127.0.0.1:9001").unwrap();
//! let endpoint: Endpoint = "127.0.0.1:9001".parse().unwrap();
//! let client = network.connector().connect(&endpoint, "my-module").await.unwrap();
//! let accepted = cluster_transport::Acceptor::accept(&mut acceptor).await.unwrap();
//! assert_eq!(accepted.module_name, "my-module");
//! # drop(client);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use bytes::Bytes;
use std::fmt;
use std::str::FromStr;
use std::task::{Context, Poll};

mod acceptor;
pub mod log_limit;
#[cfg(feature = "memory")]
pub mod memory;
mod setup;
mod socket;
mod stream_end;
#[cfg(feature = "tcp")]
pub mod tcp;
#[cfg(test)]
mod test_waker;
pub mod tls;
mod upgrade;
pub mod ws;

/// The macro the transport traits are written with ([`MessageSink`], [`MessageStream`],
/// [`Connector`], [`Acceptor`]): implement them under `#[cluster_transport::async_trait]`.
pub use async_trait::async_trait;
pub use setup::SetupError;
pub use upgrade::HandshakeError;

/// WebSocket close code of a normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code of an endpoint going away (a server shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code sent when the peer broke the protocol (RFC 6455 §7.4.1): a WebSocket
/// framing violation.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code sent when the peer sends a binary message (ETP is text only).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// WebSocket close code sent when a text message is not UTF-8 (invalid frame payload data).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// WebSocket close code of a policy violation (RFC 6455 §7.4.1): a module name that cannot
/// be used, a peer that does not read what it is sent.
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code sent when a message is over the read limit.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// WebSocket close code of a server that cannot take the connection now (too busy).
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// The default read limit of a client, every transport (4 MiB, as the Go client).
pub const DEFAULT_CLIENT_MAX_MESSAGE_SIZE: usize = 4 << 20;
/// The default read limit of a server, every transport (1 MiB, as the Go server).
pub const DEFAULT_SERVER_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// The path the Go peers serve ETP on.
pub const ETP_PATH: &str = "/isp-etp/";

/// A message received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A text message: one ETP frame.
    Text(Bytes),
    /// The answer to one of our pings, with its payload.
    Pong(Bytes),
    /// The peer closed the connection with a close handshake. Nothing follows.
    Closed(CloseInfo),
}

/// How a connection was closed by a close handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code (`1000` is a normal closure); `None` when the close frame had no code.
    pub code: Option<u16>,
    /// The reason text that came with the code (may be empty).
    pub reason: String,
}

impl CloseInfo {
    /// A normal closure (code 1000) with a reason.
    #[must_use]
    pub fn normal(reason: impl Into<String>) -> Self {
        Self {
            code: Some(CLOSE_NORMAL),
            reason: reason.into(),
        }
    }

    /// Whether this is a normal closure (code 1000).
    #[must_use]
    pub fn is_normal(&self) -> bool {
        self.code == Some(CLOSE_NORMAL)
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "close {code}")?,
            None => write!(f, "close without code")?,
        }
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// What went wrong with a transport: what the peer or the network did. (The caller's own
/// mistakes, a CA file that does not load or a bad host, are a [`SetupError`].)
///
/// Where a library or the system reported the failure, the variant keeps that error as its
/// [`source`](std::error::Error::source), typed: an [`std::io::Error`] for a refused or broken
/// connection, a [`rustls::Error`] for a refused certificate, the WebSocket library's error,
/// a [`HandshakeError`] for an upgrade that failed. `Display` names the endpoint (never its
/// user info: an [`Endpoint`] has none) and includes the source's message, so a log line
/// that prints only `Display` says it all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection is closed (by us, or by the peer's close handshake).
    #[error("connection closed ({0})")]
    Closed(CloseInfo),
    /// The connection broke without a close handshake (reset, EOF, severed).
    #[error("connection lost: {reason}{}", with_source(.source.as_ref()))]
    Lost {
        /// What broke, in a few words.
        reason: String,
        /// The IO error that broke it, when there was one (an in-memory network or the end
        /// of a stream breaks without).
        #[source]
        source: Option<std::io::Error>,
    },
    /// A received message is over the read limit; the connection was closed with 1009.
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    MessageTooBig {
        /// The size of the message (or the part of it seen so far).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The transport cannot carry a message: the peer sent what the framing does not allow
    /// (a malformed length prefix, a truncated close frame), or a sink was given what it
    /// cannot send (text that is not UTF-8, a ping over 125 bytes).
    #[error("protocol violation: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The peer broke the protocol; this side closed the connection with `code` (1002 for a
    /// framing violation, 1003 for a binary message, 1007 for text that is not UTF-8).
    #[error("the peer broke the protocol ({reason}); closed with {code}")]
    Violation {
        /// The close code this side sent.
        code: u16,
        /// What the peer did.
        reason: String,
        /// The WebSocket layer's account of the violation.
        #[source]
        source: Option<crate::ws::WsViolation>,
    },
    /// The peer refused the connection or is not there.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// Where we tried to connect.
        endpoint: String,
        /// Why it failed (`ConnectionRefused`, a name that does not resolve, ...).
        #[source]
        source: std::io::Error,
    },
    /// The opening handshake (WebSocket upgrade, TCP hello, a TLS failure that is not
    /// rustls's) failed.
    #[error("handshake with {endpoint} failed: {source}")]
    Handshake {
        /// Where we tried to connect.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: HandshakeError,
    },
    /// TLS refused the peer: an untrusted certificate, a wrong name.
    #[error("TLS error with {endpoint}: {reason}")]
    Tls {
        /// Where we tried to connect.
        endpoint: String,
        /// What it means, in words ("untrusted certificate: ...", "wrong name: ...").
        reason: String,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// An operation did not complete in time (connect timeout).
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The endpoint does not suit this connector (a `wss://` endpoint given to the TCP
    /// connector, say).
    #[error("unsupported endpoint {0}")]
    UnsupportedEndpoint(String),
    /// A mistake of the caller's that only dialing could find: a `wss://` host that is not a
    /// valid TLS server name, an empty module name. (`cluster-client` checks these when the
    /// client is built, so its connections never fail with it.)
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// An IO error.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// `": {source}"`, or nothing: for `Display` of variants whose source is optional.
fn with_source(source: Option<&impl fmt::Display>) -> String {
    source.map(|s| format!(": {s}")).unwrap_or_default()
}

impl TransportError {
    /// The close code this side sent because of this error, when the transport ended the
    /// connection itself ([`TransportError::Violation`]: its code;
    /// [`TransportError::MessageTooBig`]: 1009). `None` for every other error.
    #[must_use]
    pub fn close_sent(&self) -> Option<u16> {
        match self {
            Self::Violation { code, .. } => Some(*code),
            Self::MessageTooBig { .. } => Some(CLOSE_MESSAGE_TOO_BIG),
            _ => None,
        }
    }

    /// [`TransportError::Lost`] without a source.
    pub(crate) fn lost(reason: impl Into<String>) -> Self {
        Self::Lost {
            reason: reason.into(),
            source: None,
        }
    }

    /// [`TransportError::Lost`] because of `source`.
    pub(crate) fn lost_io(reason: impl Into<String>, source: std::io::Error) -> Self {
        Self::Lost {
            reason: reason.into(),
            source: Some(source),
        }
    }

    /// [`TransportError::Protocol`] without a source.
    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        Self::Protocol {
            reason: reason.into(),
        }
    }
}

/// Whether `bytes` is UTF-8: every text message is checked, on each side (simdutf8: several
/// times faster than `std::str::from_utf8` on ETP's mostly ASCII frames).
pub(crate) fn is_utf8(bytes: &[u8]) -> bool {
    simdutf8::basic::from_utf8(bytes).is_ok()
}

/// The writing half of a transport. There is one writer per connection.
#[async_trait]
pub trait MessageSink: Send + 'static {
    /// Queues one text message (one ETP frame, valid UTF-8) without necessarily writing it
    /// out: call [`MessageSink::flush`] once the burst is over.
    async fn feed(&mut self, text: Bytes) -> Result<(), TransportError>;
    /// Feeds `text` now if the transport can take it without waiting: `Ok(None)` when it was
    /// taken (as [`MessageSink::feed`] would have, nothing written out yet), `Ok(Some(text))`
    /// when it cannot be taken now (feed it the usual way). Never waits, and wakes nobody
    /// later: follow an `Ok(Some(_))` with [`MessageSink::feed`] (a transport may keep the
    /// no-op waker of this poll until then); an error is what [`MessageSink::feed`] would have
    /// returned. The default takes nothing: a transport that implements it lets the ETP
    /// runtime feed from the caller's task instead of waking its writer task for each frame.
    fn try_feed(&mut self, text: Bytes) -> Result<Option<Bytes>, TransportError> {
        Ok(Some(text))
    }
    /// Writes out what was fed as far as the transport can without waiting: `Ok(true)` when
    /// everything is out, `Ok(false)` when some is left (then call [`MessageSink::flush`],
    /// which registers the wake-up this does not). Never waits. The default writes nothing
    /// and returns `Ok(false)`.
    fn try_flush(&mut self) -> Result<bool, TransportError> {
        Ok(false)
    }
    /// Writes out everything fed so far.
    async fn flush(&mut self) -> Result<(), TransportError>;
    /// Sends a ping with `payload`; its pong arrives on the [`MessageStream`] as
    /// [`Incoming::Pong`].
    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError>;
    /// Starts the close handshake with `code` and `reason`, flushing what was fed first.
    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError>;
}

/// The reading half of a transport. There is one reader per connection.
///
/// # Implementing a transport
/// The traits are written with [`async_trait`](macro@async_trait) (re-exported here):
/// implement them under `#[cluster_transport::async_trait]`. `memory` and `tcp` are short
/// implementations to start from. What the ETP runtime (`cluster-etp`'s `Conn`) relies on:
/// - **`recv` is cancel-safe.** The reader drops a pending `recv` future (when it is told to
///   stop, or waits for something else meanwhile) and calls `recv` again later: no message
///   may be lost then. Keep what was read of a message in `self`, not in the future.
/// - **The transport answers the peer's pings itself** (there is no `Incoming::Ping`), and
///   reports the pong of each [`MessageSink::ping`] as [`Incoming::Pong`]: a client whose
///   pings go unanswered ends its session after two missed pongs.
/// - **The end comes once.** After `recv` returned [`Incoming::Closed`] or an error, the
///   stream is done: a later `recv` fails the same way ([`TransportError::Closed`] after a
///   close handshake, else [`TransportError::Lost`]), and the runtime does not read on.
/// - [`MessageStream::try_recv`] and [`MessageStream::poll_recv`] are optional fast paths: the
///   defaults send every read through `recv`. A transport that implements them hands over
///   only text messages and pongs there; a close, an error or the end it comes across is
///   kept for the next `recv`, which returns it.
#[async_trait]
pub trait MessageStream: Send + 'static {
    /// The next message from the peer.
    ///
    /// Returns [`Incoming::Closed`] once when the peer closes with a handshake, and an error
    /// when the connection breaks ([`TransportError::Lost`]), a message is too big, or the
    /// peer violates the transport's framing. After either, the stream is done. Must be
    /// cancel-safe (see the trait's docs).
    async fn recv(&mut self) -> Result<Incoming, TransportError>;
    /// A text message or pong already read and decoded, without waiting or reading: `None`
    /// when there is none (or something else comes next: call [`MessageStream::recv`], which
    /// returns it). Lets a reader drain what one read brought without a future per message.
    /// The default has none.
    fn try_recv(&mut self) -> Option<Incoming> {
        None
    }
    /// Waits for a text message or pong by polling, without a future:
    /// - `Ready(Some(_))`: a text message or a pong;
    /// - `Pending`: nothing yet; the task is woken when something comes (a message, a pong, a
    ///   close, an error or the end);
    /// - `Ready(None)`: what comes next is something else (a close, an error, the end), kept
    ///   for [`MessageStream::recv`], which returns it; or this transport has no such path.
    ///
    /// Lets a reader wait for each message without a boxed future per wait. The default has
    /// no such path (`Ready(None)` at once). A wrapper that overrides `recv` (to watch the
    /// messages, say) must forward `try_recv` and `poll_recv` the same way, or leave all
    /// three to its own `recv` by keeping these two at their defaults.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let _ = cx;
        Poll::Ready(None)
    }
}

/// One open connection: its two halves and what is known of the peer.
pub struct Transport {
    /// The writing half.
    pub sink: Box<dyn MessageSink>,
    /// The reading half.
    pub stream: Box<dyn MessageStream>,
    /// The peer's address as text (`127.0.0.1:9001`, or a name for in-memory transports).
    pub peer: String,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A connection the server side accepted.
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub transport: Transport,
    /// The module name the client gave (the `module_name` query parameter over WebSocket).
    pub module_name: String,
}

/// Opens client connections. Swap connectors to swap transports without touching the client.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Opens a connection to `endpoint` on behalf of `module_name`.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        module_name: &str,
    ) -> Result<Transport, TransportError>;
}

/// Accepts server connections.
#[async_trait]
pub trait Acceptor: Send + 'static {
    /// Waits for the next client that completed its opening handshake. A client that fails
    /// its handshake (no `module_name`, bad upgrade) is refused and logged, and the acceptor
    /// goes on waiting; an error means the acceptor itself is done.
    async fn accept(&mut self) -> Result<Accepted, TransportError>;
}

/// How to reach a config service host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// WebSocket over plain TCP (`ws://`, or a bare `host:port` as in the Go client).
    Ws,
    /// WebSocket over TLS (`wss://`).
    Wss,
    /// Length-delimited frames over TCP (`tcp://`): not understood by the Go peers.
    Tcp,
    /// An in-memory network (`mem://`), for tests.
    Memory,
}

/// A config service host: scheme, host name or IP, and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// How to reach it.
    pub scheme: Scheme,
    /// The host name or IP (without brackets for IPv6).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// Why a host entry could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host {input:?}: {reason}")]
pub struct EndpointParseError {
    /// The entry as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 host.
    #[must_use]
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
            Scheme::Tcp => "tcp",
            Scheme::Memory => "mem",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

impl FromStr for Endpoint {
    type Err = EndpointParseError;

    /// Parses `host:port` (WebSocket, as in the Go client), `ws://host:port`,
    /// `wss://host:port`, `tcp://host:port` or `mem://host:port`; the scheme in any case
    /// (`WSS://`, as URLs allow). A trailing `/` is allowed; any other path, a query, user
    /// info (`user@host`), a port that is not 1-65535 written in ASCII digits (no sign), or
    /// an empty host is an error.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| EndpointParseError {
            input: input.to_owned(),
            reason,
        };
        let trimmed = input.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            None => (Scheme::Ws, trimmed),
            Some((name, rest)) => {
                let scheme = [
                    ("ws", Scheme::Ws),
                    ("wss", Scheme::Wss),
                    ("tcp", Scheme::Tcp),
                    ("mem", Scheme::Memory),
                ]
                .into_iter()
                .find(|(known, _)| name.eq_ignore_ascii_case(known))
                .map(|(_, scheme)| scheme)
                .ok_or_else(|| err("unknown scheme: use ws:// or wss:// (tcp:// and mem:// need a connector of their own)"))?;
                (scheme, rest)
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(err("a host entry has no path"));
        }
        if rest.contains('@') {
            return Err(err("a host entry has no user info"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            let port = after.strip_prefix(':').ok_or_else(|| err("missing port"))?;
            (host, port)
        } else {
            rest.rsplit_once(':').ok_or_else(|| err("missing port"))?
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if host.contains(':') && !rest.starts_with('[') {
            return Err(err("an IPv6 host goes in brackets"));
        }
        // `u16::from_str` takes a leading `+`: digits only.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("port is not a number 1-65535"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| err("port is not a number 1-65535"))?;
        if port == 0 {
            return Err(err("port is not a number 1-65535"));
        }
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_entries() {
        let e: Endpoint = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Ws, "127.0.0.1", 9001)
        );
        let e: Endpoint = "wss://config.local:443/".parse().unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Wss, "config.local", 443)
        );
        let e: Endpoint = "ws://[::1]:80".parse().unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.authority(), "[::1]:80");
        assert_eq!(e.to_string(), "ws://[::1]:80");
        assert_eq!("tcp://a:1".parse::<Endpoint>().unwrap().scheme, Scheme::Tcp);
        assert_eq!(
            "mem://a:1".parse::<Endpoint>().unwrap().scheme,
            Scheme::Memory
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for (input, scheme) in [
            ("WS://h:1", Scheme::Ws),
            ("Wss://h:1", Scheme::Wss),
            ("TCP://h:1", Scheme::Tcp),
            ("mEm://h:1", Scheme::Memory),
        ] {
            let e: Endpoint = input.parse().unwrap();
            assert_eq!((e.scheme, e.host.as_str(), e.port), (scheme, "h", 1));
        }
        assert_eq!(
            "WSS://h:443".parse::<Endpoint>().unwrap().to_string(),
            "wss://h:443"
        );
    }

    #[test]
    fn refuses_user_info_and_signed_or_odd_ports() {
        for bad in [
            "user@h:80",
            "ws://user:pass@h:80",
            "wss://@h:443",
            "h:+80",
            "h:-80",
            "ws://h:+80",
            "[::1]:+80",
            "h: 80",
            "h:8 0",
            "h:٨٠",
            "h:0x50",
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert_eq!(err.input, bad);
        }
        assert_eq!(
            "user@h:80".parse::<Endpoint>().unwrap_err().reason,
            "a host entry has no user info"
        );
        assert_eq!("h:080".parse::<Endpoint>().unwrap().port, 80);
    }

    #[test]
    fn refuses_malformed_hosts() {
        for bad in [
            "",
            "host",
            ":9001",
            "host:",
            "host:0",
            "host:70000",
            "http://h:1",
            "ws://h:1/path",
            "::1:80",
            "[::1:80",
            "h:1?x",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?} parsed");
        }
    }
}
