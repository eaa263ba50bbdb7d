//! Property tests: the frame codec round-trips, and no decoder or the masker panics on any input
//! or lets a secret through.

use bytes::Bytes;
use cluster_proto::frame::{self, Frame};
use cluster_proto::payload;
use cluster_proto::secrets::{MASK, SecretMasker};
use proptest::prelude::*;
use serde_json::{Map, Value};

const CASES: u32 = 384;

/// Event names: non-empty, may hold single `|` but never `||`, and do not end in `|` (a trailing
/// `|` would merge with the separator; the protocol's names never do that).
fn names() -> impl Strategy<Value = String> {
    "[^|]{1,12}(\\|[^|]{1,12}){0,2}"
}

/// Bytes rich in `|`, so that data holds `||` often.
fn data() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![3 => any::<u8>(), 1 => Just(b'|')], 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn frame_round_trips(name in names(), ack_id in any::<u64>(), data in data()) {
        let mut buf = Vec::new();
        frame::encode(&name, ack_id, &data, &mut buf);
        prop_assert_eq!(buf.len(), frame::encoded_len(&name, ack_id, &data));
        let decoded = Frame::decode(Bytes::from(buf.clone())).unwrap();
        prop_assert_eq!(decoded.name(), name.as_str());
        prop_assert_eq!(decoded.ack_id(), ack_id);
        prop_assert_eq!(&decoded.data()[..], &data[..]);
        prop_assert_eq!(&frame::encode_to_bytes(&name, ack_id, &data)[..], &buf[..]);

        let mut ack = Vec::new();
        frame::encode_ack(&name, ack_id, &data, &mut ack);
        let ack = Frame::decode(Bytes::from(ack)).unwrap();
        prop_assert!(ack.is_ack());
        prop_assert_eq!(ack.acked_event(), Some(name.as_str()));
    }

    #[test]
    fn decode_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Frame::decode(Bytes::from(raw));
    }

    #[test]
    fn decode_never_panics_on_frame_like_text(raw in "[a-z_|0-9:+ -]{0,40}") {
        if let Ok(f) = Frame::decode(Bytes::from(raw.clone())) {
            // What decodes re-encodes to the same text (modulo leading zeros and an empty third part).
            let mut again = Vec::new();
            f.encode_into(&mut again);
            let again = Frame::decode(Bytes::from(again)).unwrap();
            prop_assert_eq!(again, f);
        }
    }

    #[test]
    fn payload_decoders_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = payload::decode_routing_config(&raw);
        let _ = payload::decode_addresses(&raw);
        let _ = payload::decode_config_data(&raw);
        let _ = payload::decode_module_requirements(&raw);
        let _ = payload::decode_backend_declaration(&raw);
    }

    #[test]
    fn payload_decoders_never_panic_on_json(value in json_value(), wrap in any::<bool>()) {
        let value = if wrap { Value::Array(vec![value]) } else { value };
        let raw = serde_json::to_vec(&value).unwrap();
        let _ = payload::decode_routing_config(&raw);
        let _ = payload::decode_addresses(&raw);
        let _ = payload::decode_config_data(&raw);
        let _ = payload::decode_module_requirements(&raw);
        if let Ok(decl) = payload::decode_backend_declaration(&raw) {
            // Whatever decodes re-encodes into something that decodes to the same value.
            prop_assert_eq!(payload::decode_backend_declaration(&decl.to_json()).unwrap(), decl);
        }
    }

    #[test]
    fn masking_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let out = SecretMasker::new().mask(&raw);
        prop_assert!(!out.is_empty());
    }

    #[test]
    fn masking_never_leaks_a_secret(config in json_object()) {
        let masker = SecretMasker::new();
        let input = serde_json::to_vec(&config).unwrap();
        let out = masker.mask(&input);
        let masked: Value = serde_json::from_str(&out).unwrap();

        // Structurally: every leaf under a secret key is masked, null or "", the rest unchanged.
        check_masked(&masker, &Value::Object(config.clone()), &masked, false)?;

        // Textually: no secret leaf appears in the output, unless the same text is also
        // legitimately there (a key, or a non-secret value containing it).
        let mut secret = Vec::new();
        let mut public = Vec::new();
        leaves(&masker, &Value::Object(config), false, &mut secret, &mut public);
        for s in secret {
            if !public.iter().any(|p| p.contains(&s)) {
                prop_assert!(!out.contains(&s), "secret {:?} leaked in {}", s, out);
            }
        }
    }
}

/// Keys mixing plain words and secret-looking ones in several cases.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("host".to_owned()),
        Just("db".to_owned()),
        Just("items".to_owned()),
        Just("Password".to_owned()),
        Just("dbPASSWORD".to_owned()),
        Just("apiToken".to_owned()),
        Just("client_secret".to_owned()),
        Just("Credentials".to_owned()),
        Just("moduleName".to_owned()),
        Just("endpoints".to_owned()),
        Just("address".to_owned()),
        "[a-zA-Z]{1,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[0-9]{6,10}".prop_map(|s| Value::String(format!("v{s}"))),
        Just(Value::String(String::new())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(key(), json_value(), 0..6).prop_map(|m| m.into_iter().collect())
}

fn check_masked(
    masker: &SecretMasker,
    input: &Value,
    output: &Value,
    secret: bool,
) -> Result<(), TestCaseError> {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            prop_assert_eq!(i.len(), o.len());
            for (k, v) in i {
                let s = secret || masker.is_secret_key(k);
                check_masked(masker, v, &o[k], s)?;
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            prop_assert_eq!(i.len(), o.len());
            for (a, b) in i.iter().zip(o) {
                check_masked(masker, a, b, secret)?;
            }
        }
        (Value::Null, out) => prop_assert_eq!(out, &Value::Null),
        (Value::String(s), out) if s.is_empty() => prop_assert_eq!(out, input),
        (_, out) if secret => prop_assert_eq!(out, &Value::String(MASK.to_owned())),
        (i, o) => prop_assert_eq!(i, o),
    }
    Ok(())
}

/// Collects the JSON texts of the non-empty leaves under secret keys, and of every key and
/// public leaf.
fn leaves(
    masker: &SecretMasker,
    value: &Value,
    secret: bool,
    secrets: &mut Vec<String>,
    public: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                public.push(k.clone());
                leaves(
                    masker,
                    v,
                    secret || masker.is_secret_key(k),
                    secrets,
                    public,
                );
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| leaves(masker, v, secret, secrets, public)),
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::Bool(_) => {} // `true`/`false` text may appear anywhere; checked structurally
        Value::String(s) if secret => secrets.push(s.clone()),
        Value::Number(n) if secret => secrets.push(n.to_string()),
        Value::String(s) => public.push(s.clone()),
        Value::Number(n) => public.push(n.to_string()),
    }
}
