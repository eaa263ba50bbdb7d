//! Shared test helpers: the captured fixtures, a raw HTTP/2 client that sends header lists
//! exactly as given (empty `:authority` included), and a router that mirrors the Go test
//! server of the capture.
#![allow(dead_code, unreachable_pub)]

use cluster_grpc::tonic::{Code, Status};
use cluster_grpc::{ApiError, CallContext, HandlerError, Message, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const CALLS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/grpc/go-grpc-calls.jsonl"
));
pub const GO_CLIENT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/grpc/go-client-metadata.json"
));

pub fn cases() -> Vec<Value> {
    CALLS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[derive(Deserialize)]
struct SumRequest {
    a: i64,
    b: i64,
}

#[derive(Serialize)]
struct SumResponse {
    sum: i64,
}

#[derive(Deserialize)]
struct Required {
    name: Option<String>,
    count: Option<i64>,
}

/// The endpoints of the Go server in the capture, served by our router.
pub fn go_like_router() -> Router {
    Router::new()
        .handle("echo/json", |_ctx: CallContext, body: Value| async move {
            Ok::<_, ApiError>(body)
        })
        .unwrap()
        .handle("math/sum", |_ctx: CallContext, r: SumRequest| async move {
            Ok::<_, ApiError>(SumResponse { sum: r.a + r.b })
        })
        .unwrap()
        .handle_without_body("fail/business", |_ctx: CallContext| async move {
            Err::<Value, _>(ApiError::business(1001, "custom failure").with_detail("field", "x"))
        })
        .unwrap()
        .handle_without_body("fail/internal", |_ctx: CallContext| async move {
            Err::<Value, _>(ApiError::internal())
        })
        .unwrap()
        .handle_raw("fail/plain", |_ctx: CallContext, _: Message| async move {
            Err::<Message, _>(HandlerError::other("plain failure"))
        })
        .unwrap()
        .handle_raw("fail/status", |_ctx: CallContext, _: Message| async move {
            Err::<Message, _>(Status::new(Code::PermissionDenied, "denied"))
        })
        .unwrap()
        .handle(
            "validate/required",
            |_ctx: CallContext, r: Required| async move {
                let mut error = ApiError::bad_request("invalid request body");
                if r.name.is_none() {
                    error = error.with_detail("name", "Name is a required field");
                }
                if r.count.is_none() {
                    error = error.with_detail("count", "Count is a required field");
                }
                if error.details.is_empty() {
                    Ok(Value::Null)
                } else {
                    Err(error)
                }
            },
        )
        .unwrap()
        .handle_raw("fail/panic", |_ctx: CallContext, _: Message| async move {
            if true {
                panic!("handler panicked on purpose");
            }
            Ok::<_, Status>(Message::default())
        })
        .unwrap()
        .handle_raw(
            "some/endpoint",
            |_ctx: CallContext, _: Message| async move {
                Ok::<_, Status>(Message::bytes(&br#"{"ok":true}"#[..]))
            },
        )
        .unwrap()
}

/// What came back on one stream.
#[derive(Debug, Default)]
pub struct RawResponse {
    pub headers: Vec<(String, String)>,
    pub data: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// The RST_STREAM error code, when the stream was reset.
    pub reset: Option<u32>,
    /// The GOAWAY error code, when the connection was closed.
    pub goaway: Option<u32>,
}

impl RawResponse {
    /// A header from the trailers, or from the headers of a trailers-only answer.
    pub fn status_header(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .chain(self.headers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A bare HTTP/2 client connection that encodes header lists exactly as given.
pub struct RawH2 {
    stream: TcpStream,
    encoder: loona_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
}

impl RawH2 {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(0x4, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        Self {
            stream,
            encoder: loona_hpack::Encoder::new(),
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
        }
    }

    /// Sends one request (header list in order, HPACK with the dynamic table as a real
    /// encoder uses it) and the gRPC DATA payload; reads until the stream ends.
    pub async fn request(&mut self, headers: &[(String, String)], data: &[u8]) -> RawResponse {
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        self.request_block(&block, data).await
    }

    /// Sends a hand-made header block.
    pub async fn request_block(&mut self, block: &[u8], data: &[u8]) -> RawResponse {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut out = frame(0x1, 0x4, id, block);
        out.extend(frame(0x0, 0x1, id, data));
        self.stream.write_all(&out).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.read_until_end(id))
            .await
            .expect("the server answers within 10 s")
    }

    async fn read_until_end(&mut self, id: u32) -> RawResponse {
        let mut response = RawResponse::default();
        let mut seen_headers = false;
        loop {
            let mut head = [0u8; 9];
            if self.stream.read_exact(&mut head).await.is_err() {
                return response;
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.unwrap();
            match kind {
                0x4 if flags & 0x1 == 0 => {
                    self.stream
                        .write_all(&frame(0x4, 0x1, 0, &[]))
                        .await
                        .unwrap();
                }
                0x6 if flags & 0x1 == 0 => {
                    self.stream
                        .write_all(&frame(0x6, 0x1, 0, &payload))
                        .await
                        .unwrap();
                }
                0x7 => {
                    response.goaway = Some(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                    return response;
                }
                0x3 if stream == id => {
                    response.reset = Some(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                    return response;
                }
                0x1 if stream == id => {
                    assert!(flags & 0x4 != 0, "test client: CONTINUATION not supported");
                    let fields: Vec<(String, String)> = self
                        .decoder
                        .decode(&payload)
                        .unwrap()
                        .into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect();
                    if seen_headers {
                        response.trailers = fields;
                    } else {
                        response.headers = fields;
                        seen_headers = true;
                    }
                    if flags & 0x1 != 0 {
                        return response;
                    }
                }
                0x0 if stream == id => {
                    response.data.extend_from_slice(&payload);
                    if flags & 0x1 != 0 {
                        return response;
                    }
                }
                _ => {}
            }
        }
    }
}
