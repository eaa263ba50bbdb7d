//! What the probes print of a request they serve: its headers (HTTP headers or gRPC
//! metadata) and its JSON body, with the values that look secret masked. One rule for both
//! probes, so that a line of `grpc_probe serve` and one of `http_probe serve` hide the same
//! things.
//!
//! The rule is that of configs in logs (`SecretMasker`'s default words: `password`,
//! `secret`, `token`, `credentials`, `apikey`, …, any case, anywhere in the name), plus
//! `authorization` and `cookie`: a header or a body field whose name holds one of them is
//! printed as `"***"` (a body field's whole value, nested objects included).
//!
//! ```
//! use cluster_examples::masking::{body_json, headers_json};
//! use serde_json::json;
//!
//! let headers = headers_json([
//!     ("x-user-identity", &b"42"[..]),
//!     ("x-user-token", b"t"),
//!     ("authorization", b"Bearer abc"),
//!     ("proxy-authorization", b"Basic x"),
//! ]);
//! assert_eq!(
//!     headers,
//!     json!({"x-user-identity": "42", "x-user-token": "***", "authorization": "***",
//!         "proxy-authorization": "***"})
//! );
//! assert_eq!(
//!     body_json(br#"{"user":"ann","password":"p","auth":{"apiKey":"k"}}"#),
//!     json!({"user": "ann", "password": "***", "auth": {"apiKey": "***"}})
//! );
//! assert_eq!(body_json(b"not json"), json!("not json"));
//! assert_eq!(body_json(b""), json!(null));
//! ```

use cluster_client::SecretMasker;
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// What a secret is printed as.
pub const MASK: &str = "***";

/// The words beyond `SecretMasker`'s defaults that make a name secret.
pub const EXTRA_SECRET_WORDS: &[&str] = &["authorization", "cookie"];

static MASKER: LazyLock<SecretMasker> = LazyLock::new(|| {
    let masker = SecretMasker::new();
    for word in EXTRA_SECRET_WORDS {
        masker.add(word);
    }
    masker
});

/// Whether a header, a metadata entry or a body field named `name` holds a secret (see the
/// [module docs](self)).
#[must_use]
pub fn is_secret_name(name: &str) -> bool {
    MASKER.is_secret_key(name)
}

/// Headers as a JSON object of strings, in the order given: the first value of a name is
/// kept, a value that is not UTF-8 is printed lossily, a secret one as `"***"`.
#[must_use]
pub fn headers_json<'a, I>(entries: I) -> Value
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut map = Map::new();
    for (name, value) in entries {
        if map.contains_key(name) {
            continue;
        }
        let value = if is_secret_name(name) {
            MASK.to_owned()
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        map.insert(name.to_owned(), Value::String(value));
    }
    Value::Object(map)
}

/// A body as JSON: `null` when empty, the JSON value when it is one, else the bytes as a
/// string (lossily).
#[must_use]
pub fn json_or_string(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A request body as a probe prints it: [`json_or_string`], the values of secret fields
/// masked at any depth.
#[must_use]
pub fn body_json(bytes: &[u8]) -> Value {
    let mut body = json_or_string(bytes);
    MASKER.mask_value(&mut body);
    body
}
