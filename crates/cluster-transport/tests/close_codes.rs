//! Close codes of RFC 6455 §7.4.1 on both sides (issue 9 §3): the side that sees a fault sends
//! 1002 (framing violation) or 1007 (text that is not UTF-8), the other side receives it, and
//! the ETP runtime's log says who ended the connection: us or the peer.
//!
//! The misbehaving peer is a raw socket that speaks just enough WebSocket by hand.

mod common;
use bytes::Bytes;
use cluster_transport::conn::{Conn, ConnConfig, Handlers};
use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{Acceptor, Connector, Endpoint, Incoming, Transport, TransportError};
use common::Captured;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

async fn acceptor() -> (WsAcceptor, Endpoint) {
    let acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
        .await
        .unwrap();
    let endpoint = format!("ws://{}", acceptor.local_addr()).parse().unwrap();
    (acceptor, endpoint)
}

/// Reads up to the end of an HTTP head.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "EOF in the head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A raw client upgraded on our server; returns its socket and the server's transport.
async fn raw_client(acceptor: &mut WsAcceptor) -> (TcpStream, Transport) {
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

/// A raw server our client connected to; returns our client's transport and the socket.
async fn raw_server() -> (Transport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Endpoint = format!("ws://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let server = async {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .to_owned();
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        tcp.write_all(answer.as_bytes()).await.unwrap();
        tcp
    };
    let connector = WsConnector::new(WsConfig::default()).unwrap();
    let (client, tcp) = tokio::join!(connector.connect(&endpoint, "m"), server);
    (client.unwrap(), tcp)
}

/// A text frame of `payload` (< 126 bytes), masked with a zero key when `masked`.
fn text_frame(payload: &[u8], masked: bool) -> Vec<u8> {
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

/// Reads one frame (masked or not) and returns its close code, panicking if it is not a close.
async fn read_close_code(tcp: &mut TcpStream) -> u16 {
    let mut header = [0u8; 2];
    tcp.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0] & 0x0f, 0x8, "not a close frame: {header:?}");
    let len = usize::from(header[1] & 0x7f);
    let mut mask = [0u8; 4];
    if header[1] & 0x80 != 0 {
        tcp.read_exact(&mut mask).await.unwrap();
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    assert!(len >= 2, "a close without code");
    u16::from_be_bytes([payload[0], payload[1]])
}

fn assert_violation(result: Result<Incoming, TransportError>, code: u16) {
    match result {
        Err(err @ TransportError::Violation { .. }) => assert_eq!(err.close_sent(), Some(code)),
        other => panic!("expected a violation closed with {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn our_server_closes_an_unmasked_client_frame_with_1002() {
    let (_log, _guard) = Captured::install(tracing::Level::DEBUG);
    let (mut acceptor, _) = acceptor().await;
    let (mut raw, mut server) = raw_client(&mut acceptor).await;
    raw.write_all(&text_frame(b"hi", false)).await.unwrap();
    assert_violation(server.stream.recv().await, 1002);
    assert_eq!(read_close_code(&mut raw).await, 1002);
}

#[tokio::test]
async fn our_server_closes_text_that_is_not_utf8_with_1007() {
    let (mut acceptor, _) = acceptor().await;
    let (mut raw, mut server) = raw_client(&mut acceptor).await;
    raw.write_all(&text_frame(b"ok", true)).await.unwrap();
    raw.write_all(&text_frame(b"\xff\xfe", true)).await.unwrap();
    assert_eq!(
        server.stream.recv().await.unwrap(),
        Incoming::Text(Bytes::from_static(b"ok"))
    );
    assert_violation(server.stream.recv().await, 1007);
    assert_eq!(read_close_code(&mut raw).await, 1007);
}

#[tokio::test]
async fn our_client_closes_a_masked_server_frame_with_1002() {
    let (mut client, mut raw) = raw_server().await;
    raw.write_all(&text_frame(b"hi", true)).await.unwrap();
    assert_violation(client.stream.recv().await, 1002);
    assert_eq!(read_close_code(&mut raw).await, 1002);
}

#[tokio::test]
async fn our_client_closes_text_that_is_not_utf8_with_1007() {
    let (mut client, mut raw) = raw_server().await;
    raw.write_all(&text_frame(b"\xc3\x28", false))
        .await
        .unwrap();
    assert_violation(client.stream.recv().await, 1007);
    assert_eq!(read_close_code(&mut raw).await, 1007);
}

#[tokio::test]
async fn a_conn_whose_transport_closed_for_a_fault_says_we_ended_it() {
    // Server side: a raw client breaks the framing.
    let (log, _guard) = Captured::install(tracing::Level::DEBUG);
    let (mut acceptor, _) = acceptor().await;
    let (mut raw, server) = raw_client(&mut acceptor).await;
    let server = Conn::spawn(server, Handlers::new(), ConnConfig::default());
    raw.write_all(&text_frame(b"hi", false)).await.unwrap();
    let end = server.closed().await;
    assert!(!end.by_peer, "{end:?}");
    assert!(!end.normal, "{end:?}");
    assert_eq!(
        end.close.as_ref().and_then(|c| c.code),
        Some(1002),
        "{end:?}"
    );
    assert_eq!(read_close_code(&mut raw).await, 1002);

    // Client side: a raw server sends text that is not UTF-8.
    let (client, mut raw) = raw_server().await;
    let client = Conn::spawn(client, Handlers::new(), ConnConfig::default());
    raw.write_all(&text_frame(b"\xff", false)).await.unwrap();
    let end = client.closed().await;
    assert!(!end.by_peer, "{end:?}");
    assert_eq!(
        end.close.as_ref().and_then(|c| c.code),
        Some(1007),
        "{end:?}"
    );
    assert_eq!(read_close_code(&mut raw).await, 1007);

    let log = log.text();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ETP connection ended") && l.contains("by_peer=false"))
        .collect();
    assert_eq!(ours.len(), 2, "{log}");
    assert!(ours[0].contains("closed by us (close 1002"), "{log}");
    assert!(ours[1].contains("closed by us (close 1007"), "{log}");
    assert!(
        log.contains("WebSocket connection closed by us: the peer broke the protocol"),
        "{log}"
    );
}

#[tokio::test]
async fn a_conn_whose_peer_closed_for_a_fault_says_the_peer_ended_it() {
    let (log, _guard) = Captured::install(tracing::Level::DEBUG);
    let (mut acceptor, endpoint) = acceptor().await;
    let connector = WsConnector::new(WsConfig::default()).unwrap();

    // Our client's Conn; the server's transport ends it with 1002.
    let client = connector.connect(&endpoint, "m").await.unwrap();
    let mut server = acceptor.accept().await.unwrap().transport;
    let client = Conn::spawn(client, Handlers::new(), ConnConfig::default());
    server.sink.close(1002, "protocol error").await.unwrap();
    let end = client.closed().await;
    assert!(end.by_peer, "{end:?}");
    assert_eq!(
        end.close.as_ref().and_then(|c| c.code),
        Some(1002),
        "{end:?}"
    );

    // Our server's Conn; the client's transport ends it with 1007.
    let mut client = connector.connect(&endpoint, "m").await.unwrap();
    let server = acceptor.accept().await.unwrap().transport;
    let server = Conn::spawn(server, Handlers::new(), ConnConfig::default());
    client.sink.close(1007, "invalid payload").await.unwrap();
    let end = server.closed().await;
    assert!(end.by_peer, "{end:?}");
    assert_eq!(
        end.close.as_ref().and_then(|c| c.code),
        Some(1007),
        "{end:?}"
    );

    let log = log.text();
    let theirs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ETP connection ended") && l.contains("by_peer=true"))
        .collect();
    assert_eq!(theirs.len(), 2, "{log}");
    assert!(
        theirs[0].contains("closed by the peer (close 1002"),
        "{log}"
    );
    assert!(
        theirs[1].contains("closed by the peer (close 1007"),
        "{log}"
    );
}
