//! Close codes of RFC 6455 §7.4.1 on both sides: the side that sees a fault sends
//! 1002 (framing violation) or 1007 (text that is not UTF-8), and the other side receives it.
//! (What the ETP runtime makes of it, who ended the connection, is in `cluster-etp`'s
//! `tests/close_codes.rs`.)
//!
//! The misbehaving peer is a raw socket that speaks just enough WebSocket by hand.

use crate::common::Captured;
use crate::common::raw::{
    acceptor, assert_violation, raw_client, raw_server, read_close_code, text_frame,
};
use bytes::Bytes;
use cluster_transport::Incoming;
use tokio::io::AsyncWriteExt;

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
