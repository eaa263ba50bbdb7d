//! isp-kit's answers byte for byte: the expected bodies in `tests/data` are written from
//! isp-kit's code (see `tests/data/README.md`), and our server must answer them exactly,
//! with the status and content type Go's answer has.

use cluster_http::{ApiError, HttpClient, testing};
use http::StatusCode;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn answer(
    client: &HttpClient,
    path: &str,
    body: &str,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let response = client
        .post(path)
        .raw_body(body.to_owned())
        .send()
        .await
        .unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status(),
        content_type,
        response.into_body().to_vec(),
    )
}

fn json_answer(status: StatusCode, file: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    (status, Some("application/json".to_owned()), data(file))
}

#[tokio::test]
async fn error_bodies_are_isp_kits_byte_for_byte() {
    let server = testing::serve(crate::common::router()).await;
    let client = server.client();
    let cases = [
        (
            "orders/business",
            "{}",
            StatusCode::BAD_REQUEST,
            "business_error.json",
        ),
        (
            "orders/panic",
            "{}",
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error.json",
        ),
        (
            "orders/plain",
            "{}",
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error.json",
        ),
        (
            "orders/create",
            r#"{"count":1}"#,
            StatusCode::BAD_REQUEST,
            "validation_error.json",
        ),
        (
            "orders/create",
            r#"{"count":0,"items":[{"sku":""}]}"#,
            StatusCode::BAD_REQUEST,
            "validation_errors.json",
        ),
        (
            "orders/create",
            "",
            StatusCode::BAD_REQUEST,
            "decode_error_empty_body.json",
        ),
    ];
    for (path, body, status, file) in cases {
        assert_eq!(
            answer(&client, path, body).await,
            json_answer(status, file),
            "{path} {body}: {}",
            String::from_utf8_lossy(&data(file))
        );
    }
    server.shutdown().await;
}

#[test]
fn an_api_error_escapes_as_go_does() {
    let error = ApiError::business(1, "a < b & c > d");
    assert_eq!(error.to_json(), data("escaped_error.json"));
    let internal = ApiError::internal();
    assert_eq!(internal.to_json(), data("internal_error.json"));
    assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_answered_as_gos_router_does() {
    let server = testing::serve(crate::common::router()).await;
    let not_found = crate::common::exchange(
        server.addr(),
        "POST /no/such/path HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = not_found.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{not_found}"
    );
    assert!(
        head.contains("content-type: text/plain; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(!head.contains("x-request-id"), "{head}");
    assert_eq!(body.as_bytes(), data("not_found.txt"));

    let not_allowed = crate::common::exchange(
        server.addr(),
        "GET /echo/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = not_allowed.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{head}"
    );
    assert!(head.contains("allow: OPTIONS, POST"), "{head}");
    assert_eq!(body.as_bytes(), data("method_not_allowed.txt"));

    let options = crate::common::exchange(
        server.addr(),
        "OPTIONS /echo/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(options.starts_with("HTTP/1.1 200 OK\r\n"), "{options}");
    assert!(options.contains("allow: OPTIONS, POST"), "{options}");
    assert!(options.contains("content-length: 0\r\n"), "{options}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_misspelt_path_is_redirected_as_gos_router_does() {
    let server = testing::serve(crate::common::router()).await;
    // A trailing slash too many, with a query: 307 for POST (same method), no body.
    let slash = crate::common::exchange(
        server.addr(),
        "POST /echo/json/?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        slash.starts_with("HTTP/1.1 307 Temporary Redirect\r\n"),
        "{slash}"
    );
    assert!(slash.contains("location: /echo/json?a=1\r\n"), "{slash}");
    // Case and dots: 301 for GET, with Go's short HTML body.
    let case = crate::common::exchange(
        server.addr(),
        "GET /Orders/./WhoAmI HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = case.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
        "{head}"
    );
    assert!(head.contains("location: /orders/whoami\r\n"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        body,
        "<a href=\"/orders/whoami\">Moved Permanently</a>.\n\n"
    );
    server.shutdown().await;
}
