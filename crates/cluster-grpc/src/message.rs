//! `isp.Message`, the one message type of `isp.BackendService`, and `google.rpc.Status`, the
//! payload of `grpc-status-details-bin`: hand-written `prost` structs (no `protoc`, no build
//! script), field for field as isp-kit's `isp/backed_service.proto` and Google's
//! `google/rpc/status.proto` declare them.

use bytes::Bytes;

/// The `type_url` of an `isp.Message` packed in a `google.protobuf.Any` (error details).
pub const MESSAGE_TYPE_URL: &str = "type.googleapis.com/isp.Message";

/// `isp.Message`: a oneof `body`. isp-kit puts JSON in [`Body::BytesBody`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Message {
    /// The body; `None` for a zero-length message.
    #[prost(oneof = "Body", tags = "1, 2, 3, 4")]
    pub body: Option<Body>,
}

/// The arms of `isp.Message.body`.
#[derive(Clone, PartialEq, ::prost::Oneof)]
pub enum Body {
    /// `structBody = 1` (google.protobuf.Struct).
    #[prost(message, tag = "1")]
    StructBody(::prost_types::Struct),
    /// `listBody = 2` (google.protobuf.ListValue).
    #[prost(message, tag = "2")]
    ListBody(::prost_types::ListValue),
    /// `NullBody = 3` (google.protobuf.NullValue; the only value is 0).
    #[prost(enumeration = "::prost_types::NullValue", tag = "3")]
    NullBody(i32),
    /// `BytesBody = 4`: isp-kit's JSON.
    #[prost(bytes = "bytes", tag = "4")]
    BytesBody(Bytes),
}

impl Message {
    /// A message whose body is `BytesBody(json)`, as isp-kit sends (also when `json` is empty:
    /// the field is then present with length 0, bytes `22 00`).
    #[must_use]
    pub fn bytes(json: impl Into<Bytes>) -> Self {
        Self {
            body: Some(Body::BytesBody(json.into())),
        }
    }

    /// The `BytesBody`, or empty for any other arm or no body (Go: `GetBytesBody()`).
    #[must_use]
    pub fn bytes_body(&self) -> Bytes {
        match &self.body {
            Some(Body::BytesBody(b)) => b.clone(),
            _ => Bytes::new(),
        }
    }

    /// The name of the body's arm as isp-kit's proto names it (`structBody`, `listBody`,
    /// `NullBody`, `BytesBody`), or `none`.
    #[must_use]
    pub fn arm(&self) -> &'static str {
        match &self.body {
            Some(Body::StructBody(_)) => "structBody",
            Some(Body::ListBody(_)) => "listBody",
            Some(Body::NullBody(_)) => "NullBody",
            Some(Body::BytesBody(_)) => "BytesBody",
            None => "none",
        }
    }
}

/// `google.rpc.Status`: what `grpc-status-details-bin` carries.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RpcStatus {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The status message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The details; isp-kit puts one `isp.Message` here.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<::prost_types::Any>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn empty_bytes_body_is_encoded_as_go_does() {
        assert_eq!(Message::bytes(Bytes::new()).encode_to_vec(), [0x22, 0x00]);
        assert_eq!(Message::default().encode_to_vec(), Vec::<u8>::new());
        let m = Message::decode(&b""[..]).unwrap();
        assert_eq!(m.arm(), "none");
        assert!(m.bytes_body().is_empty());
    }
}
