//! WebSocket specifics: the exact dial request, refusals, binary messages, garbage and silent
//! clients, the connect timeout.

use bytes::Bytes;
use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{Acceptor, Connector, Endpoint, HandshakeError, Incoming, TransportError};
use futures_util::{SinkExt, StreamExt};
use std::error::Error as _;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

fn connector() -> WsConnector {
    WsConnector::new(WsConfig::default()).unwrap()
}

async fn acceptor() -> (WsAcceptor, Endpoint) {
    let acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
        .await
        .unwrap();
    let endpoint = format!("ws://{}", acceptor.local_addr()).parse().unwrap();
    (acceptor, endpoint)
}

/// Reads an HTTP head (up to the blank line), returning its lines.
async fn read_head(reader: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end().to_owned();
        if n == 0 || line.is_empty() {
            return lines;
        }
        lines.push(line);
    }
}

#[tokio::test]
async fn dials_the_exact_go_path_and_query() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut reader = BufReader::new(tcp);
        let head = read_head(&mut reader).await;
        let answer = crate::common::raw::switching_protocols(head.iter().map(String::as_str));
        reader.get_mut().write_all(answer.as_bytes()).await.unwrap();
        (head, reader)
    });
    let endpoint: Endpoint = addr.to_string().parse().unwrap();
    let _client = connector()
        .connect(&endpoint, "my module/ü&x=1")
        .await
        .unwrap();
    let (head, _socket) = server.await.unwrap();
    assert_eq!(
        head[0],
        "GET /isp-etp/?module_name=my+module%2F%C3%BC%26x%3D1 HTTP/1.1"
    );
    assert!(head.contains(&format!("Host: {addr}")), "{head:?}");
}

#[tokio::test]
async fn refuses_a_missing_or_empty_module_name_and_keeps_accepting() {
    let (mut acceptor, endpoint) = acceptor().await;
    let addr = acceptor.local_addr();

    for target in ["/isp-etp/", "/isp-etp/?module_name=", "/isp-etp/?other=1"] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(tcp);
        let head = read_head(&mut reader).await;
        assert!(head[0].starts_with("HTTP/1.1 400"), "{target}: {head:?}");
    }

    // Our client reports the server's reason.
    for (name, why) in [
        ("", "module_name is required"),
        (
            "a||b",
            "invalid module_name: the module name contains `||`, the ETP field separator",
        ),
    ] {
        match connector().connect(&endpoint, name).await.unwrap_err() {
            err @ TransportError::Handshake { .. } => {
                let source = err.source().expect("a handshake error has a source");
                match source.downcast_ref::<HandshakeError>() {
                    Some(HandshakeError::Refused { status: 400, body }) => assert_eq!(body, why),
                    other => panic!("expected a 400 refusal, got {other:?}"),
                }
                assert!(
                    err.to_string()
                        .ends_with(&format!("server answered HTTP 400: {why}")),
                    "{err}"
                );
            }
            other => panic!("expected a handshake error, got {other:?}"),
        }
    }

    let _client = connector()
        .connect(&endpoint, "after refusals")
        .await
        .unwrap();
    let accepted = acceptor.accept().await.unwrap();
    assert_eq!(accepted.module_name, "after refusals");
}

#[tokio::test]
async fn refuses_a_wrong_path_with_404() {
    let (_acceptor, endpoint) = acceptor().await;
    let listener_addr = endpoint.authority();
    let url = format!("ws://{listener_addr}/elsewhere/?module_name=m");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404);
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_binary_message_is_a_protocol_error_closed_with_1003() {
    let (mut acceptor, endpoint) = acceptor().await;
    let url = format!("ws://{}/isp-etp/?module_name=raw", endpoint.authority());
    let (mut raw, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut accepted = acceptor.accept().await.unwrap();
    assert_eq!(accepted.module_name, "raw");

    raw.send(Message::Text("fine".into())).await.unwrap();
    raw.send(Message::Binary(Bytes::from_static(b"\x00\x01")))
        .await
        .unwrap();
    assert_eq!(
        accepted.transport.stream.recv().await.unwrap(),
        Incoming::Text(Bytes::from_static(b"fine"))
    );
    assert!(matches!(
        accepted.transport.stream.recv().await,
        Err(TransportError::Violation { code: 1003, .. })
    ));
    match raw.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1003),
        other => panic!("expected a 1003 close, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_and_silent_clients_do_not_block_the_acceptor() {
    let (mut acceptor, endpoint) = acceptor().await;
    let addr = acceptor.local_addr();

    // A client that never says anything holds its own handshake task only.
    let _silent = TcpStream::connect(addr).await.unwrap();
    // A client that sends garbage is answered with an error and dropped.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"\x16\x03\x01 definitely not HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server ends the garbage connection (with or without an HTTP error first).
    let _ = garbage.read_to_end(&mut answer).await;

    let _client = connector().connect(&endpoint, "next").await.unwrap();
    let accepted = acceptor.accept().await.unwrap();
    assert_eq!(accepted.module_name, "next");
}

#[tokio::test]
async fn a_silent_server_times_out_the_upgrade() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts at TCP level, then says nothing.
    let holder = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tcp = tcp;
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink).await;
    });
    let timeout = Duration::from_millis(300);
    let connector = WsConnector::new(WsConfig::default().with_connect_timeout(timeout)).unwrap();
    let endpoint: Endpoint = addr.to_string().parse().unwrap();
    let started = tokio::time::Instant::now();
    let err = connector.connect(&endpoint, "m").await.unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout(t) if t == timeout),
        "{err:?}"
    );
    assert!(started.elapsed() >= timeout);
    holder.abort();
}

#[tokio::test]
async fn a_refused_tcp_connect_has_the_io_error_as_its_source() {
    // A port nobody listens on: bind one, note it, free it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint: Endpoint = addr.to_string().parse().unwrap();
    let err = connector().connect(&endpoint, "m").await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the source is the io::Error of the dial");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    // Display says where and why.
    let text = err.to_string();
    assert!(text.contains(&endpoint.to_string()), "{text}");
    assert!(text.contains(&io.to_string()), "{text}");
}

#[tokio::test]
async fn refuses_endpoints_of_other_schemes_and_closed_ports() {
    let tcp: Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
    assert!(matches!(
        connector().connect(&tcp, "m").await,
        Err(TransportError::UnsupportedEndpoint(_))
    ));
    // A port nobody listens on: bind one, note it, free it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint: Endpoint = addr.to_string().parse().unwrap();
    assert!(matches!(
        connector().connect(&endpoint, "m").await,
        Err(TransportError::Connect { .. })
    ));
}

#[tokio::test]
async fn the_server_limit_is_configurable() {
    let mut acceptor = WsAcceptor::bind(
        "127.0.0.1:0",
        WsServerConfig::default().with_max_message_size(10),
    )
    .await
    .unwrap();
    let endpoint: Endpoint = format!("ws://{}", acceptor.local_addr()).parse().unwrap();
    let mut client = connector().connect(&endpoint, "m").await.unwrap();
    let mut server = acceptor.accept().await.unwrap().transport;
    client
        .sink
        .feed(Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    client
        .sink
        .feed(Bytes::from_static(b"0123456789a"))
        .await
        .unwrap();
    client.sink.flush().await.unwrap();
    assert_eq!(
        server.stream.recv().await.unwrap(),
        Incoming::Text(Bytes::from_static(b"0123456789"))
    );
    assert!(matches!(
        server.stream.recv().await,
        Err(TransportError::MessageTooBig {
            size: 11,
            limit: 10
        })
    ));
    match client.stream.recv().await.unwrap() {
        Incoming::Closed(info) => assert_eq!(info.code, Some(1009)),
        other => panic!("expected a close, got {other:?}"),
    }
}
