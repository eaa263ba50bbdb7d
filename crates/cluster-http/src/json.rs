//! JSON as isp-kit's endpoints read and write it.
//!
//! **Writing** ([`encode`]): what Go's encoder writes (isp-kit's `json.EncodeInto` and
//! `json.NewEncoder(w).Encode`, jsoniter with `EscapeHTML`): the value, then a newline; `<`,
//! `>` and `&` as `\u003c`, `\u003e`, `\u0026`, U+2028 and U+2029 as `\u2028`, `\u2029`.
//! Other strings as `serde_json` writes them (Go differs in spelling only, e.g. it writes
//! `\u0008` where serde writes `\b`); both read back the same.
//!
//! **Reading** ([`decode`]), as isp-kit's `json.NewDecoder(body).Decode(&req)`:
//! - the first JSON value of the body is decoded, what follows it is not read (Go's decoder
//!   reads one value from the stream);
//! - an empty body (or only whitespace) fails with `EOF`, Go's message;
//! - with [`Decode::fold_case`] (the default of a [`Router`](crate::Router)), an object key
//!   that names no field of the struct exactly is matched to the field whose name equals it
//!   ignoring case (Go's `encoding/json` and jsoniter do this): `{"NAME":"ann"}` and
//!   `{"name":"ann"}` fill the same field. An exact name always wins. This applies to every
//!   struct that serde's derive decodes with its field list, nested ones and enum struct
//!   variants included; it does not apply to `#[serde(flatten)]` fields, untagged and
//!   internally tagged enums (serde decodes those from a buffered copy), map keys, or enum
//!   variant names. Two keys that fold to one field are a `duplicate field` error (Go keeps
//!   the last).

use serde::Serialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use std::fmt;
use std::io;

/// How request bodies are decoded (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decode {
    /// Match object keys to struct fields ignoring case when no field has the exact name.
    pub fold_case: bool,
}

impl Default for Decode {
    /// Go's way: keys matched ignoring case.
    fn default() -> Self {
        Self { fold_case: true }
    }
}

/// Decodes the first JSON value of `body` (see the [module docs](self)).
///
/// # Errors
/// When the body holds no value (`EOF`), or its first value is not JSON or does not fit `T`.
pub fn decode<T: DeserializeOwned>(body: &[u8], options: Decode) -> Result<T, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Eof);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = if options.fold_case {
        T::deserialize(Fold(&mut de))
    } else {
        T::deserialize(&mut de)
    };
    value.map_err(DecodeError::Json)
}

/// Why a body did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is empty (Go's decoder says `EOF`).
    #[error("EOF")]
    Eof,
    /// The body is not JSON, or not of the type asked for.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `value` as Go's JSON encoder writes it, newline included (see the [module docs](self)).
///
/// # Errors
/// When `value` fails to serialise (a map with non-string keys, a failing `Serialize`).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, GoEscapes,
    ))?;
    out.push(b'\n');
    Ok(out)
}

/// serde_json's compact format, plus Go's escapes of `<`, `>`, `&`, U+2028 and U+2029.
struct GoEscapes;

impl serde_json::ser::Formatter for GoEscapes {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        if !may_escape(bytes) {
            return writer.write_all(bytes);
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // The escape, and how many bytes of the fragment it replaces.
            let (escape, len): (&[u8], usize) = match bytes[i] {
                b'<' => (b"\\u003c", 1),
                b'>' => (b"\\u003e", 1),
                b'&' => (b"\\u0026", 1),
                // U+2028 and U+2029: E2 80 A8 / E2 80 A9.
                0xE2 if bytes.get(i + 1) == Some(&0x80) => match bytes.get(i + 2) {
                    Some(0xA8) => (b"\\u2028", 3),
                    Some(0xA9) => (b"\\u2029", 3),
                    _ => {
                        i += 1;
                        continue;
                    }
                },
                _ => {
                    i += 1;
                    continue;
                }
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(escape)?;
            i += len;
            start = i;
        }
        writer.write_all(&bytes[start..])
    }
}

/// Whether `bytes` holds a byte that may begin one of Go's escapes that serde_json does not
/// make (`<`, `>`, `&`, and the first byte of U+2028 and U+2029), looked for 16 bytes at a
/// time with no branch per byte: most strings have none, and are written whole.
fn may_escape(bytes: &[u8]) -> bool {
    let special = |b: u8| matches!(b, b'<' | b'>' | b'&' | 0xE2);
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | special(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| special(b))
}

/// Whether `a` and `b` are equal ignoring case (ASCII at once, Unicode lowercase otherwise).
fn fold_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// The field `key` stands for when it names none exactly: the first that equals it ignoring
/// case. `None` when it names one exactly, or none at all.
fn folded_field(key: &str, fields: &'static [&'static str]) -> Option<&'static str> {
    if fields.contains(&key) {
        return None;
    }
    fields.iter().copied().find(|field| fold_eq(field, key))
}

/// A deserializer whose structs match keys to fields ignoring case.
struct Fold<D>(D);

/// Forwards the listed `deserialize_*` methods to the inner deserializer, with the visitor
/// wrapped by the type's `split`.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(
                self,
                $($arg: $ty,)*
                visitor: V,
            ) -> Result<V::Value, Self::Error> {
                let (de, visitor) = self.split(visitor);
                de.$method($($arg,)* visitor)
            }
        )*
    };
}

/// Every `deserialize_*` method but `deserialize_struct`.
macro_rules! forward_all_but_struct {
    () => {
        forward! {
            deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
            deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
            deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
            deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
            deserialize_string(); deserialize_bytes(); deserialize_byte_buf();
            deserialize_option(); deserialize_unit(); deserialize_seq(); deserialize_map();
            deserialize_identifier(); deserialize_ignored_any();
            deserialize_unit_struct(name: &'static str);
            deserialize_newtype_struct(name: &'static str);
            deserialize_tuple(len: usize);
            deserialize_tuple_struct(name: &'static str, len: usize);
            deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        }
    };
}

impl<D> Fold<D> {
    fn split<V>(self, visitor: V) -> (D, FoldVisitor<V>) {
        (
            self.0,
            FoldVisitor {
                inner: visitor,
                fields: None,
            },
        )
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Fold<D> {
    type Error = D::Error;

    forward_all_but_struct!();

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = FoldVisitor {
            inner: visitor,
            fields: Some(fields),
        };
        self.0.deserialize_struct(name, fields, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor that keeps folding in what it visits; `fields`: the struct's, when it visits a
/// struct's map.
struct FoldVisitor<V> {
    inner: V,
    fields: Option<&'static [&'static str]>,
}

/// Forwards the listed `visit_*` methods of scalars as they are.
macro_rules! forward_visits {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

/// The scalar `visit_*` methods but those of strings and bytes.
macro_rules! forward_scalar_visits {
    () => {
        forward_visits! {
            visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
            visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
            visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
        }
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for FoldVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_scalar_visits!();
    forward_visits! {
        visit_str(&str); visit_borrowed_str(&'de str); visit_string(String);
        visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Fold(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Fold(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(FoldSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(FoldMap {
            map,
            fields: self.fields,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(FoldEnum(data))
    }
}

/// A seed whose value is decoded with folding.
struct FoldSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for FoldSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Fold(d))
    }
}

struct FoldSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for FoldSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(FoldSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// A map; a struct's when `fields` is set, whose keys are then matched ignoring case.
struct FoldMap<A> {
    map: A,
    fields: Option<&'static [&'static str]>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FoldMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.fields {
            Some(fields) => self.map.next_key_seed(KeySeed { seed, fields }),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.map.next_value_seed(FoldSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// The seed of a struct's key.
struct KeySeed<K> {
    seed: K,
    fields: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.seed.deserialize(KeyDeserializer {
            de: d,
            fields: self.fields,
        })
    }
}

/// The deserializer of a struct's key: the name it reads is replaced by the field it folds
/// to.
struct KeyDeserializer<D> {
    de: D,
    fields: &'static [&'static str],
}

impl<D> KeyDeserializer<D> {
    fn split<V>(self, visitor: V) -> (D, KeyVisitor<V>) {
        (
            self.de,
            KeyVisitor {
                inner: visitor,
                fields: self.fields,
            },
        )
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDeserializer<D> {
    type Error = D::Error;

    forward_all_but_struct!();
    forward! {
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

struct KeyVisitor<V> {
    inner: V,
    fields: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_scalar_visits!();

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match folded_field(v, self.fields) {
            Some(field) => self.inner.visit_borrowed_str(field),
            None => self.inner.visit_str(v),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        match folded_field(v, self.fields) {
            Some(field) => self.inner.visit_borrowed_str(field),
            None => self.inner.visit_borrowed_str(v),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        match folded_field(&v, self.fields) {
            Some(field) => self.inner.visit_borrowed_str(field),
            None => self.inner.visit_string(v),
        }
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => self.inner.visit_bytes(v),
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_borrowed_str(s),
            Err(_) => self.inner.visit_borrowed_bytes(v),
        }
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        match String::from_utf8(v) {
            Ok(s) => self.visit_string(s),
            Err(e) => self.inner.visit_byte_buf(e.into_bytes()),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

struct FoldEnum<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for FoldEnum<A> {
    type Error = A::Error;
    type Variant = FoldVariant<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let (value, variant) = self.0.variant_seed(seed)?;
        Ok((value, FoldVariant(variant)))
    }
}

struct FoldVariant<A>(A);

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for FoldVariant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.newtype_variant_seed(FoldSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.tuple_variant(
            len,
            FoldVisitor {
                inner: visitor,
                fields: None,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.struct_variant(
            fields,
            FoldVisitor {
                inner: visitor,
                fields: Some(fields),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Order {
        order_id: i64,
        items: Vec<Item>,
        note: Option<Note>,
        #[serde(default)]
        tags: HashMap<String, i64>,
        #[serde(default)]
        kind: Option<Kind>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Item {
        count: u32,
        #[serde(rename = "Sku")]
        sku: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Note {
        text: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Kind {
        Gift { wrap: bool },
        Plain(Note),
    }

    const LENIENT: Decode = Decode { fold_case: true };
    const EXACT: Decode = Decode { fold_case: false };

    #[test]
    fn keys_fold_to_fields_at_every_depth() {
        let body = br#"{"ORDERID":1,"Items":[{"COUNT":2,"sku":"a"}],"Note":{"TEXT":"t"},
            "tags":{"KeepCase":3},"kind":{"Gift":{"WRAP":true}}}"#;
        let order: Order = decode(body, LENIENT).unwrap();
        assert_eq!(
            order,
            Order {
                order_id: 1,
                items: vec![Item {
                    count: 2,
                    sku: "a".into()
                }],
                note: Some(Note { text: "t".into() }),
                tags: HashMap::from([("KeepCase".to_owned(), 3)]),
                kind: Some(Kind::Gift { wrap: true }),
            }
        );
        let plain: Kind = decode(br#"{"Plain":{"Text":"x"}}"#, LENIENT).unwrap();
        assert_eq!(plain, Kind::Plain(Note { text: "x".into() }));
        // Escaped keys (visited as transient strings) fold too.
        let escaped: Note = decode(br#"{"T\u0045XT":"e"}"#, LENIENT).unwrap();
        assert_eq!(escaped.text, "e");
        // Unicode case.
        #[derive(Deserialize)]
        struct Cyrillic {
            #[serde(rename = "имя")]
            name: String,
        }
        let c: Cyrillic = decode("{\"ИМЯ\":\"а\"}".as_bytes(), LENIENT).unwrap();
        assert_eq!(c.name, "а");
    }

    #[test]
    fn exact_decoding_is_serdes() {
        let err = decode::<Note>(br#"{"TEXT":"t"}"#, EXACT).unwrap_err();
        assert_eq!(err.to_string(), "missing field `text` at line 1 column 12");
        let note: Note = decode(br#"{"text":"t"}"#, EXACT).unwrap();
        assert_eq!(note.text, "t");
    }

    #[test]
    fn an_exact_name_wins_and_two_spellings_of_one_field_are_a_duplicate() {
        #[derive(Debug, Deserialize)]
        struct Two {
            #[serde(rename = "a")]
            lower: i32,
            #[serde(rename = "A")]
            upper: i32,
        }
        let two: Two = decode(br#"{"A":1,"a":2}"#, LENIENT).unwrap();
        assert_eq!((two.lower, two.upper), (2, 1));
        let err = decode::<Note>(br#"{"text":"a","Text":"b"}"#, LENIENT).unwrap_err();
        assert!(
            err.to_string().starts_with("duplicate field `text`"),
            "{err}"
        );
    }

    #[test]
    fn the_first_value_is_read_and_an_empty_body_is_eof() {
        let note: Note = decode(br#"{"text":"t"} trailing"#, LENIENT).unwrap();
        assert_eq!(note.text, "t");
        assert_eq!(decode::<Note>(b"", LENIENT).unwrap_err().to_string(), "EOF");
        assert_eq!(
            decode::<Note>(b" \n", EXACT).unwrap_err().to_string(),
            "EOF"
        );
        let value: serde_json::Value = decode(b"[1, 2]", LENIENT).unwrap();
        assert_eq!(value, serde_json::json!([1, 2]));
    }

    #[test]
    fn written_as_go_writes_it() {
        let value = serde_json::json!({"a<b>": "x & y\u{2028}\u{2029}é", "n": [1, null]});
        assert_eq!(
            String::from_utf8(encode(&value).unwrap()).unwrap(),
            "{\"a\\u003cb\\u003e\":\"x \\u0026 y\\u2028\\u2029é\",\"n\":[1,null]}\n"
        );
        // Other characters from U+2000 on pass as they are.
        assert_eq!(
            encode("\u{2027}\u{202a}").unwrap(),
            "\"\u{2027}\u{202a}\"\n".as_bytes()
        );
        // Long strings (looked at 16 bytes at a time): an escape found wherever it is.
        for at in [0, 15, 16, 17, 31, 32, 40] {
            let mut text = "x".repeat(41);
            text.replace_range(at..=at, "<");
            let escaped = format!("\"{}\"\n", text.replace('<', "\\u003c"));
            assert_eq!(encode(&text).unwrap(), escaped.as_bytes(), "at {at}");
        }
        let plain = "y".repeat(50);
        assert_eq!(encode(&plain).unwrap(), format!("\"{plain}\"\n").as_bytes());
    }
}
