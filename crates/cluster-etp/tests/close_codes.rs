//! The ETP runtime's account of a connection a close code ended (RFC 6455 §7.4.1): when the
//! transport closed it for a fault (1002, 1007), the log and [`Disconnect`] say we ended it;
//! when the peer sent the code, they say the peer did.
//!
//! The misbehaving peer is a raw socket that speaks just enough WebSocket by hand.
//!
//! [`Disconnect`]: cluster_etp::Disconnect

// The transport crate's test helpers (log capture, raw WebSocket peers), shared by path.
#[path = "../../cluster-transport/tests/common/mod.rs"]
mod common;
use cluster_etp::{Conn, ConnConfig, Handlers};
use cluster_transport::ws::{WsConfig, WsConnector};
use cluster_transport::{Acceptor, Connector};
use common::Captured;
use common::raw::{acceptor, raw_client, raw_server, read_close_code, text_frame};
use tokio::io::AsyncWriteExt;

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
