//! A misbehaving WebSocket peer: a raw socket that speaks just enough WebSocket by hand, on
//! either side of our transport (a raw client upgraded on our [`WsAcceptor`], a raw server
//! our [`WsConnector`] connected to), and the frame codec it writes and reads with.

use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{Acceptor, Connector, Endpoint, Incoming, Transport, TransportError};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// How long a test waits for the network before it fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// `future`, or a panic naming `what` after [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?}: {what}"))
}

/// An acceptor on a free loopback port, and its `ws://` endpoint.
pub async fn acceptor_with(config: WsServerConfig) -> (WsAcceptor, Endpoint) {
    let acceptor = WsAcceptor::bind("127.0.0.1:0", config).await.unwrap();
    let endpoint = format!("ws://{}", acceptor.local_addr()).parse().unwrap();
    (acceptor, endpoint)
}

/// [`acceptor_with`] the default server config.
pub async fn acceptor() -> (WsAcceptor, Endpoint) {
    acceptor_with(WsServerConfig::default()).await
}

/// Reads up to the end of an HTTP head.
pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "EOF in the head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A raw client upgraded on our server; returns its socket and the server's transport.
pub async fn raw_client(acceptor: &mut WsAcceptor) -> (TcpStream, Transport) {
    let addr = acceptor.local_addr();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /isp-etp/?module_name=raw HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (tcp, acceptor.accept().await.unwrap().transport)
}

/// A raw server our client (with the default config) connected to; returns our client's
/// transport and the socket.
pub async fn raw_server() -> (Transport, TcpStream) {
    raw_server_with(WsConfig::default()).await
}

/// A raw server our client (with `config`) connected to; returns our client's transport and
/// the socket.
pub async fn raw_server_with(config: WsConfig) -> (Transport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Endpoint = format!("ws://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let server = async {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        tcp.write_all(switching_protocols(head.lines()).as_bytes())
            .await
            .unwrap();
        tcp
    };
    let connector = WsConnector::new(config).unwrap();
    let (client, tcp) = tokio::join!(connector.connect(&endpoint, "m"), server);
    (client.unwrap(), tcp)
}

/// A server's 101 answer to the upgrade request whose head `lines` are.
pub fn switching_protocols<'a>(mut lines: impl Iterator<Item = &'a str>) -> String {
    let key = lines
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("an upgrade request has a key");
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
}

/// The masking key raw clients use (not zero, so that a peer that ignores the mask sees
/// garbage).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: `first` is the first byte (FIN, RSV1–3, opcode) as sent; the length takes the
/// shortest encoding (7, 16 or 64 bits); masked with [`MASK`] when `masked`.
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut frame = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        frame.push(mask_bit | u8::try_from(len).unwrap());
    } else if let Ok(len) = u16::try_from(len) {
        frame.push(mask_bit | 126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(mask_bit | 127);
        frame.extend_from_slice(&u64::try_from(len).unwrap().to_be_bytes());
    }
    if masked {
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// A text frame of `payload` (< 126 bytes), masked with a zero key when `masked`.
pub fn text_frame(payload: &[u8], masked: bool) -> Vec<u8> {
    let len = u8::try_from(payload.len()).unwrap();
    assert!(len < 126);
    let mut frame = vec![0x81];
    if masked {
        frame.push(0x80 | len);
        frame.extend_from_slice(&[0, 0, 0, 0]);
    } else {
        frame.push(len);
    }
    frame.extend_from_slice(payload);
    frame
}

/// A frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFrame {
    /// The first byte: FIN, RSV1–3, opcode.
    pub first: u8,
    /// Whether the frame was masked.
    pub masked: bool,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

impl ReadFrame {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }

    /// The close code of a close frame, `None` when it has no payload.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode(), 0x8, "not a close frame: {self:?}");
        match self.payload.as_slice() {
            [] => None,
            [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
            [_] => panic!("a close with a one-byte payload: {self:?}"),
        }
    }
}

/// Reads one frame (masked or not), of any length.
pub async fn read_frame(tcp: &mut TcpStream) -> ReadFrame {
    let mut header = [0u8; 2];
    tcp.read_exact(&mut header).await.unwrap();
    let len = match header[1] & 0x7f {
        126 => {
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await.unwrap();
            usize::from(u16::from_be_bytes(len))
        }
        127 => {
            let mut len = [0u8; 8];
            tcp.read_exact(&mut len).await.unwrap();
            usize::try_from(u64::from_be_bytes(len)).unwrap()
        }
        len => usize::from(len),
    };
    let masked = header[1] & 0x80 != 0;
    let mut mask = [0u8; 4];
    if masked {
        tcp.read_exact(&mut mask).await.unwrap();
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    ReadFrame {
        first: header[0],
        masked,
        payload,
    }
}

/// Reads one frame (masked or not) and returns its close code, panicking if it is not a close.
pub async fn read_close_code(tcp: &mut TcpStream) -> u16 {
    let frame = read_frame(tcp).await;
    frame.close_code().expect("a close without code")
}

/// Reads until the peer closes the socket (EOF or a reset), panicking on any byte.
pub async fn read_eof(tcp: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("bytes after the close frame: {:?}", &buf[..n]),
    }
}

/// Panics unless `result` is a [`TransportError::Violation`] (or `MessageTooBig`) whose close
/// code is `code`.
pub fn assert_violation(result: Result<Incoming, TransportError>, code: u16) {
    match result {
        Err(err) if err.close_sent().is_some() => assert_eq!(err.close_sent(), Some(code), "{err}"),
        other => panic!("expected a violation closed with {code}, got {other:?}"),
    }
}
