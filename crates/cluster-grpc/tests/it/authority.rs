//! The real isp-kit client sends `:authority` present and empty. A plain tonic server resets
//! such a stream with PROTOCOL_ERROR; ours answers it. Both are shown here with the exact
//! header list the Go client sent in the capture (`fixtures/grpc/go-client-metadata.json`).

use crate::common::{GO_CLIENT, RawH2, pairs, unhex};
use cluster_grpc::tonic::metadata::MetadataMap;
use cluster_grpc::{CallContext, Message, Router, Server};
use serde_json::Value;
use tokio::sync::mpsc;

const PROTOCOL_ERROR: u32 = 0x1;

fn go_request() -> (Vec<(String, String)>, Vec<u8>, Value) {
    let fixture: Value = serde_json::from_str(GO_CLIENT).unwrap();
    let headers = pairs(&fixture["wireRequestHeaders"]);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == ":authority" && v.is_empty()),
        "the capture has the empty :authority"
    );
    let data = unhex(fixture["requestDataFrameHex"].as_str().unwrap());
    (headers, data, fixture)
}

fn recording_router() -> (Router, mpsc::UnboundedReceiver<MetadataMap>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .handle_raw("some/endpoint", move |ctx: CallContext, _m: Message| {
            let tx = tx.clone();
            async move {
                tx.send(ctx.metadata().clone()).unwrap();
                Ok::<_, cluster_grpc::tonic::Status>(Message::bytes(&br#"{"ok":true}"#[..]))
            }
        })
        .unwrap();
    (router, rx)
}

#[tokio::test]
async fn the_go_clients_exact_request_with_empty_authority_is_served() {
    let (headers, data, fixture) = go_request();
    let (router, mut seen) = recording_router();
    let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
    let mut conn = RawH2::connect(server.local_addr()).await;

    // Twice on one connection: the second block refers to the first one's dynamic-table
    // entries, as a real HPACK encoder does.
    for _ in 0..2 {
        let response = conn.request(&headers, &data).await;
        assert_eq!(response.reset, None, "{response:?}");
        assert_eq!(
            response.status_header("grpc-status"),
            Some("0"),
            "{response:?}"
        );
        assert_eq!(
            crate::common::hex(&response.data),
            fixture["runs"][0]["calls"][0]["wire"]["responseDataHex"]
                .as_str()
                .unwrap()
        );
        let md = seen.recv().await.unwrap();
        assert_eq!(md.get("x-user-identity").unwrap(), "42");
        assert_eq!(md.get("x-application-identity").unwrap(), "7");
        assert_eq!(md.get("proxy_method_name").unwrap(), "some/endpoint");
        assert_eq!(
            md.get("x-request-id").unwrap(),
            "339c0020dfd9e69379504a58d92c4d23"
        );
        assert_eq!(md.get("user-agent").unwrap(), "grpc-go/1.72.0");
    }
    drop(conn);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_plain_tonic_server_resets_the_same_request() {
    // The floor: the same server without the filter is plain tonic/h2.
    let (headers, data, _) = go_request();
    let (router, _seen) = recording_router();
    let server = Server::builder(router)
        .accept_empty_authority(false)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut conn = RawH2::connect(server.local_addr()).await;
    let response = conn.request(&headers, &data).await;
    assert_eq!(response.reset, Some(PROTOCOL_ERROR), "{response:?}");
    drop(conn);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_empty_authority_added_to_the_dynamic_table_is_dropped_every_time() {
    let (headers, data, _) = go_request();
    let (router, mut seen) = recording_router();
    let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
    let mut conn = RawH2::connect(server.local_addr()).await;
    // Hand-made blocks: `:authority ""` as a literal with incremental indexing (dynamic index
    // 62), then as an indexed reference to it; every other field a plain literal.
    let mut rest = Vec::new();
    for (n, v) in headers.iter().filter(|(n, _)| n != ":authority") {
        rest.push(0u8);
        rest.push(n.len() as u8);
        rest.extend_from_slice(n.as_bytes());
        rest.push(v.len() as u8);
        rest.extend_from_slice(v.as_bytes());
    }
    for first in [&[0x41u8, 0x00][..], &[0xbe][..]] {
        let mut block = first.to_vec();
        block.extend_from_slice(&rest);
        let response = conn.request_block(&block, &data).await;
        assert_eq!(response.reset, None, "{response:?}");
        assert_eq!(response.status_header("grpc-status"), Some("0"));
        assert_eq!(
            seen.recv().await.unwrap().get("x-user-identity").unwrap(),
            "42"
        );
    }
    drop(conn);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn garbage_header_frames_close_that_connection_only() {
    let (headers, data, _) = go_request();
    let (router, _seen) = recording_router();
    let server = Server::bind(router, "127.0.0.1:0").await.unwrap();
    let mut bad = RawH2::connect(server.local_addr()).await;
    // An index far past both tables: the block does not decode.
    let response = bad.request_block(&[0xff, 0xff, 0xff, 0x0f], &data).await;
    assert_eq!(response.status_header("grpc-status"), None);
    // The server lives on.
    let mut good = RawH2::connect(server.local_addr()).await;
    let response = good.request(&headers, &data).await;
    assert_eq!(response.status_header("grpc-status"), Some("0"));
    drop((bad, good));
    server.shutdown().await.unwrap();
}
