//! Every call captured against isp-kit's Go server (`fixtures/grpc/go-grpc-calls.jsonl`) is
//! replayed on the wire, header list and DATA bytes exactly as captured, against our server
//! running the same endpoints; the answers are compared with the Go server's. The captured
//! statuses are also decoded by our client's error decoding.

use crate::common::{RawH2, cases, go_like_router, hex, pairs, unhex};
use cluster_grpc::message::RpcStatus;
use cluster_grpc::metadata::{APPLICATION_ID, PROXY_METHOD_NAME, REQUEST_ID, USER_ID};
use cluster_grpc::tonic::Status;
use cluster_grpc::tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};
use cluster_grpc::{ApiError, CallError, Server};
use prost::Message as _;
use serde_json::Value;

/// Cases whose message is a JSON decoder's own words (jsoniter in Go, serde here): only the
/// prefix and the errorCode can match.
const DECODER_WORDED: &[&str] = &[
    "sum_float",
    "echo_struct_body",
    "echo_empty_bytes_body",
    "echo_zero_length_message",
    "sum_string_quirk",
];

fn header_map(fields: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in fields {
        if n.starts_with(':') {
            continue;
        }
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn detail_json(status: &Status) -> Option<Value> {
    if status.details().is_empty() {
        return None;
    }
    let rpc = RpcStatus::decode(status.details()).unwrap();
    assert_eq!(rpc.details.len(), 1);
    assert_eq!(rpc.details[0].type_url, "type.googleapis.com/isp.Message");
    let m = cluster_grpc::Message::decode(&rpc.details[0].value[..]).unwrap();
    Some(serde_json::from_slice(&m.bytes_body()).unwrap())
}

#[tokio::test]
async fn every_captured_call_gets_the_go_servers_answer() {
    let server = Server::bind(go_like_router(), "127.0.0.1:0").await.unwrap();
    let mut conn = RawH2::connect(server.local_addr()).await;
    let all = cases();
    assert_eq!(all.len(), 16);
    for case in &all {
        let name = case["case"].as_str().unwrap();
        let wire = &case["wire"];
        let response = conn
            .request(
                &pairs(&wire["requestHeaders"]),
                &unhex(wire["requestDataHex"].as_str().unwrap()),
            )
            .await;
        assert_eq!(response.reset, None, "{name}: {response:?}");
        if case["status"].is_null() {
            assert_eq!(response.status_header("grpc-status"), Some("0"), "{name}");
            assert_eq!(
                hex(&response.data),
                wire["responseDataHex"].as_str().unwrap(),
                "{name}"
            );
            continue;
        }
        // Errors: trailers-only, as the Go server answers.
        assert!(response.data.is_empty(), "{name}");
        assert!(response.trailers.is_empty(), "{name}: trailers-only");
        let ours = Status::from_header_map(&header_map(&response.headers)).unwrap();
        let theirs =
            Status::from_header_map(&header_map(&pairs(&wire["responseTrailers"]))).unwrap();
        assert_eq!(
            ours.code() as i64,
            case["status"]["codeNumber"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(ours.code(), theirs.code(), "{name}");
        if DECODER_WORDED.contains(&name) {
            assert!(
                ours.message().starts_with("unmarshal json request body: "),
                "{name}: {}",
                ours.message()
            );
            let detail = detail_json(&ours).expect("a decode error carries its detail");
            assert_eq!(detail["errorCode"], 400, "{name}");
            assert_eq!(detail["errorMessage"], ours.message(), "{name}");
            continue;
        }
        assert_eq!(ours.message(), theirs.message(), "{name}");
        assert_eq!(detail_json(&ours), detail_json(&theirs), "{name}");
        let expected_body = &case["detailBody"];
        if let Some(body) = expected_body.as_str() {
            let expected: Value = serde_json::from_str(body).unwrap();
            assert_eq!(detail_json(&ours), Some(expected), "{name}");
        }
    }
    drop(conn);
    server.shutdown().await.unwrap();
}

#[test]
fn api_errors_encode_byte_for_byte_as_isp_kit() {
    for case in cases() {
        let name = case["case"].as_str().unwrap();
        let error = match name {
            "fail_business" => ApiError::business(1001, "custom failure").with_detail("field", "x"),
            "fail_internal" => ApiError::internal(),
            _ => continue,
        };
        assert_eq!(
            String::from_utf8(error.to_json()).unwrap(),
            case["detailBody"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            hex(&error.status_details()),
            case["statusDetailsHex"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn every_captured_status_decodes_on_our_client() {
    let mut with_detail = 0;
    let mut plain = 0;
    for case in cases() {
        if case["status"].is_null() {
            continue;
        }
        let name = case["case"].as_str().unwrap();
        let trailers = pairs(&case["wire"]["responseTrailers"]);
        let status = Status::from_header_map(&header_map(&trailers)).unwrap();
        assert_eq!(
            status.message(),
            case["status"]["message"].as_str().unwrap(),
            "{name}"
        );
        match CallError::from_status(status) {
            CallError::Api { code, error } => {
                with_detail += 1;
                let body: Value =
                    serde_json::from_str(case["detailBody"].as_str().unwrap()).unwrap();
                assert_eq!(code as i64, case["status"]["codeNumber"].as_i64().unwrap());
                assert_eq!(
                    error.error_code,
                    body["errorCode"].as_i64().unwrap(),
                    "{name}"
                );
                assert_eq!(error.error_message, body["errorMessage"].as_str().unwrap());
                assert_eq!(
                    Value::Object(error.details.clone()),
                    body.get("details")
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    "{name}"
                );
            }
            CallError::Status(status) => {
                plain += 1;
                assert!(case["detailBody"].is_null(), "{name}");
                assert_eq!(
                    status.code() as i64,
                    case["status"]["codeNumber"].as_i64().unwrap()
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Both kinds are in the capture: statuses with the isp detail, and without one.
    assert_eq!((with_detail, plain), (7, 6));
}

#[test]
fn metadata_names_are_isp_kits() {
    // grpc/mux.go and grpc/auth_data.go in isp-kit.
    assert_eq!(PROXY_METHOD_NAME, "proxy_method_name");
    assert_eq!(REQUEST_ID, "x-request-id");
    assert_eq!(APPLICATION_ID, "x-application-identity");
    assert_eq!(USER_ID, "x-user-identity");
    // And as the Go client really sent them (the captured header list).
    let fixture: Value = serde_json::from_str(crate::common::GO_CLIENT).unwrap();
    let names: Vec<String> = pairs(&fixture["wireRequestHeaders"])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in [PROXY_METHOD_NAME, REQUEST_ID, APPLICATION_ID, USER_ID] {
        assert!(names.iter().any(|n| n == name), "{name}");
    }
}
