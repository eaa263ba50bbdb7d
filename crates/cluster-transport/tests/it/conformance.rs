//! One behaviour suite, run against every transport: in-memory, TCP and WebSocket.
//!
//! Each case takes a factory that returns a connected (client, accepted server) pair, with
//! the default limits: the client reads up to 4 MiB, the server up to 1 MiB.

use bytes::Bytes;
use cluster_transport::memory::MemoryNetwork;
use cluster_transport::tcp::{TcpAcceptor, TcpConnector};
use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{
    Accepted, Acceptor, CloseInfo, Connector, Endpoint, Incoming, Transport, TransportError,
};
use std::future::Future;

const MODULE: &str = "conformance module/1&x=y";
const SERVER_LIMIT: usize = 1 << 20;

async fn memory_pair() -> (Transport, Accepted) {
    let network = MemoryNetwork::new();
    let mut acceptor = network.bind("127.0.0.1:0").unwrap();
    let endpoint: Endpoint = format!("mem://{}", acceptor.local_addr()).parse().unwrap();
    let client = network
        .connector()
        .connect(&endpoint, MODULE)
        .await
        .unwrap();
    let accepted = acceptor.accept().await.unwrap();
    (client, accepted)
}

async fn tcp_pair() -> (Transport, Accepted) {
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Endpoint = format!("tcp://{}", acceptor.local_addr()).parse().unwrap();
    let client = TcpConnector::default()
        .connect(&endpoint, MODULE)
        .await
        .unwrap();
    let accepted = acceptor.accept().await.unwrap();
    (client, accepted)
}

async fn ws_pair() -> (Transport, Accepted) {
    let mut acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
        .await
        .unwrap();
    let endpoint: Endpoint = format!("ws://{}", acceptor.local_addr()).parse().unwrap();
    let connector = WsConnector::new(WsConfig::default()).unwrap();
    let client = connector.connect(&endpoint, MODULE).await.unwrap();
    let accepted = acceptor.accept().await.unwrap();
    (client, accepted)
}

async fn send(t: &mut Transport, text: String) {
    t.sink.feed(Bytes::from(text)).await.unwrap();
    t.sink.flush().await.unwrap();
}

async fn expect_text(t: &mut Transport) -> Bytes {
    match t.stream.recv().await {
        Ok(Incoming::Text(text)) => text,
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn expect_closed(t: &mut Transport) -> CloseInfo {
    match t.stream.recv().await {
        Ok(Incoming::Closed(info)) => info,
        other => panic!("expected a close, got {other:?}"),
    }
}

/// Reads until the stream ends and returns how it ended.
fn drain(
    mut t: Transport,
) -> tokio::task::JoinHandle<(Transport, Result<Incoming, TransportError>)> {
    tokio::spawn(async move {
        loop {
            match t.stream.recv().await {
                Ok(Incoming::Text(_) | Incoming::Pong(_)) => {}
                other => return (t, other),
            }
        }
    })
}

async fn module_name_is_delivered<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (_client, accepted) = factory.await;
    assert_eq!(accepted.module_name, MODULE);
    assert!(!accepted.transport.peer.is_empty());
}

async fn text_both_ways_in_order<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (mut client, accepted) = factory.await;
    let mut server = accepted.transport;
    for i in 0..100 {
        send(&mut client, format!("c{i}")).await;
    }
    for i in 0..100 {
        assert_eq!(expect_text(&mut server).await, format!("c{i}"));
    }
    for i in 0..100 {
        send(&mut server, format!("s{i}||{i}||δ")).await;
    }
    for i in 0..100 {
        assert_eq!(expect_text(&mut client).await, format!("s{i}||{i}||δ"));
    }
}

async fn feed_flush_batches<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (mut client, accepted) = factory.await;
    let mut server = accepted.transport;
    const TOTAL: usize = 5000;
    let reader = tokio::spawn(async move {
        for i in 0..TOTAL {
            let text = expect_text(&mut server).await;
            assert!(
                text.starts_with(format!("{i:05}").as_bytes()),
                "message {i} out of order"
            );
            assert_eq!(text.len(), 1024);
        }
        server
    });
    let filler = "x".repeat(1024 - 5);
    for batch in 0..TOTAL / 50 {
        for i in 0..50 {
            let n = batch * 50 + i;
            client
                .sink
                .feed(Bytes::from(format!("{n:05}{filler}")))
                .await
                .unwrap();
        }
        client.sink.flush().await.unwrap();
    }
    let _server = reader.await.unwrap();
}

async fn large_messages<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (mut client, accepted) = factory.await;
    let mut server = accepted.transport;
    let up: String = (0..SERVER_LIMIT - 16)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let down: String = "ü".repeat(3 << 19); // 3 MiB of two-byte characters
    let expected_up = up.clone();
    let expected_down = down.clone();
    let server_task = tokio::spawn(async move {
        assert_eq!(expect_text(&mut server).await, expected_up.as_bytes());
        send(&mut server, down).await;
        server
    });
    send(&mut client, up).await;
    assert_eq!(expect_text(&mut client).await, expected_down.as_bytes());
    let _server = server_task.await.unwrap();
}

async fn ping_gets_pong<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (mut client, accepted) = factory.await;
    let mut server = accepted.transport;
    // The server answers while its stream is read.
    let server_reader = tokio::spawn(async move {
        let result = server.stream.recv().await;
        (server, result)
    });
    client
        .sink
        .ping(Bytes::from_static(b"ping-1"))
        .await
        .unwrap();
    assert_eq!(
        client.stream.recv().await.unwrap(),
        Incoming::Pong(Bytes::from_static(b"ping-1"))
    );
    client
        .sink
        .ping(Bytes::from_static(b"ping-2"))
        .await
        .unwrap();
    assert_eq!(
        client.stream.recv().await.unwrap(),
        Incoming::Pong(Bytes::from_static(b"ping-2"))
    );
    send(&mut client, "after pings".to_owned()).await;
    let (mut server, result) = server_reader.await.unwrap();
    assert_eq!(
        result.unwrap(),
        Incoming::Text(Bytes::from_static(b"after pings"))
    );
    // And the other way round.
    let client_reader = tokio::spawn(async move {
        let result = client.stream.recv().await;
        (client, result)
    });
    server
        .sink
        .ping(Bytes::from_static(b"from server"))
        .await
        .unwrap();
    assert_eq!(
        server.stream.recv().await.unwrap(),
        Incoming::Pong(Bytes::from_static(b"from server"))
    );
    send(&mut server, "done".to_owned()).await;
    let (_client, result) = client_reader.await.unwrap();
    assert_eq!(result.unwrap(), Incoming::Text(Bytes::from_static(b"done")));
}

async fn normal_close_by_client<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (mut client, accepted) = factory.await;
    let mut server = accepted.transport;
    send(&mut client, "last words".to_owned()).await;
    client.sink.close(1000, "client leaves").await.unwrap();
    assert_eq!(expect_text(&mut server).await, "last words");
    assert_eq!(
        expect_closed(&mut server).await,
        CloseInfo::normal("client leaves")
    );
    // The peer's echo completes the handshake on the closing side.
    assert_eq!(
        expect_closed(&mut client).await,
        CloseInfo::normal("client leaves")
    );
    assert!(matches!(
        client.sink.feed(Bytes::from_static(b"late")).await,
        Err(TransportError::Closed(_))
    ));
    assert!(matches!(
        server.sink.feed(Bytes::from_static(b"late")).await,
        Err(TransportError::Closed(_))
    ));
    // Closing twice is a no-op.
    client.sink.close(1000, "again").await.unwrap();
}

async fn normal_close_by_server<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (mut client, accepted) = factory.await;
    let mut server = accepted.transport;
    server.sink.close(1000, "server shuts down").await.unwrap();
    assert_eq!(
        expect_closed(&mut client).await,
        CloseInfo::normal("server shuts down")
    );
    assert_eq!(
        expect_closed(&mut server).await,
        CloseInfo::normal("server shuts down")
    );
}

async fn abrupt_drop_is_lost<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (client, accepted) = factory.await;
    let mut server = accepted.transport;
    drop(client);
    assert!(matches!(
        server.stream.recv().await,
        Err(TransportError::Lost { .. })
    ));
    // After the end, the stream stays ended.
    assert!(server.stream.recv().await.is_err());
}

async fn abrupt_server_drop_is_lost<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (mut client, accepted) = factory.await;
    drop(accepted);
    assert!(matches!(
        client.stream.recv().await,
        Err(TransportError::Lost { .. })
    ));
}

async fn oversized_message_closes_with_1009<F: Future<Output = (Transport, Accepted)>>(factory: F) {
    let (client, accepted) = factory.await;
    let Transport {
        sink: mut client_sink,
        stream: mut client_stream,
        ..
    } = client;
    let mut server = accepted.transport;
    // The writer may block until the server gives up reading: write from its own task.
    let writer = tokio::spawn(async move {
        let big = Bytes::from("z".repeat(SERVER_LIMIT + 1));
        let _ = client_sink.feed(big).await;
        let _ = client_sink.flush().await;
        client_sink
    });
    match server.stream.recv().await {
        Err(TransportError::MessageTooBig { size, limit }) => {
            assert_eq!(limit, SERVER_LIMIT);
            assert_eq!(size, SERVER_LIMIT + 1);
        }
        other => panic!("expected MessageTooBig, got {other:?}"),
    }
    match client_stream.recv().await {
        Ok(Incoming::Closed(info)) => assert_eq!(info.code, Some(1009), "{info}"),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    let _ = writer.await.unwrap();
    drop(server);
}

async fn small_limit_is_not_hit_by_allowed_sizes<F: Future<Output = (Transport, Accepted)>>(
    factory: F,
) {
    // Exactly at the limit is allowed.
    let (mut client, accepted) = factory.await;
    let server = drain_first_text(accepted.transport);
    send(&mut client, "q".repeat(SERVER_LIMIT)).await;
    let len = server.await.unwrap();
    assert_eq!(len, SERVER_LIMIT);
}

fn drain_first_text(mut t: Transport) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        match t.stream.recv().await {
            Ok(Incoming::Text(text)) => text.len(),
            other => panic!("expected text, got {other:?}"),
        }
    })
}

async fn peer_close_while_reading_is_reported<F: Future<Output = (Transport, Accepted)>>(
    factory: F,
) {
    let (mut client, accepted) = factory.await;
    let reader = drain(accepted.transport);
    client.sink.close(4000, "custom code").await.unwrap();
    let (_server, ended) = reader.await.unwrap();
    assert_eq!(
        ended.unwrap(),
        Incoming::Closed(CloseInfo {
            code: Some(4000),
            reason: "custom code".to_owned()
        })
    );
}

macro_rules! conformance {
    ($transport:ident, $factory:ident) => {
        mod $transport {
            use super::*;

            #[tokio::test]
            async fn module_name_is_delivered() {
                super::module_name_is_delivered($factory()).await;
            }
            #[tokio::test]
            async fn text_both_ways_in_order() {
                super::text_both_ways_in_order($factory()).await;
            }
            #[tokio::test]
            async fn feed_flush_batches() {
                super::feed_flush_batches($factory()).await;
            }
            #[tokio::test]
            async fn large_messages() {
                super::large_messages($factory()).await;
            }
            #[tokio::test]
            async fn ping_gets_pong() {
                super::ping_gets_pong($factory()).await;
            }
            #[tokio::test]
            async fn normal_close_by_client() {
                super::normal_close_by_client($factory()).await;
            }
            #[tokio::test]
            async fn normal_close_by_server() {
                super::normal_close_by_server($factory()).await;
            }
            #[tokio::test]
            async fn abrupt_drop_is_lost() {
                super::abrupt_drop_is_lost($factory()).await;
            }
            #[tokio::test]
            async fn abrupt_server_drop_is_lost() {
                super::abrupt_server_drop_is_lost($factory()).await;
            }
            #[tokio::test]
            async fn oversized_message_closes_with_1009() {
                super::oversized_message_closes_with_1009($factory()).await;
            }
            #[tokio::test]
            async fn message_at_the_limit_passes() {
                super::small_limit_is_not_hit_by_allowed_sizes($factory()).await;
            }
            #[tokio::test]
            async fn peer_close_while_reading_is_reported() {
                super::peer_close_while_reading_is_reported($factory()).await;
            }
        }
    };
}

conformance!(memory, memory_pair);
conformance!(tcp, tcp_pair);
conformance!(ws, ws_pair);
