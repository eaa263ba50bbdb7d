//! Reading a config tree into a type the way isp-kit's config does (mapstructure with
//! `WeaklyTypedInput`): keys match field names and enum variants without regard to case,
//! `"9001"` is a number where a number is wanted and `9001` a string where a string is, a
//! single value is a one-element list. Errors name the key path, where the value came from
//! (the file, or the environment variable) and what was expected, but never the value, which
//! may be a secret.

use config::{Value, ValueKind};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use std::collections::VecDeque;
use std::fmt;

/// Why a value could not be read; says what was expected, never what the value was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A required key is absent.
    Missing,
    /// The value has the wrong shape or cannot be converted.
    Expected(String),
    /// A message from a type's own `Deserialize` (a value is not shown by ours).
    Other(String),
}

/// A config value that could not be read, with the key path down to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadError {
    /// Keys from the root (`grpcInnerAddress`, `port`); list indexes as `[2]`.
    pub(crate) path: Vec<String>,
    /// Where the value came from (a file path, `environment variable X`), when known.
    pub(crate) origin: Option<String>,
    pub(crate) problem: Problem,
}

impl ReadError {
    fn new(problem: Problem) -> Self {
        Self {
            path: Vec::new(),
            origin: None,
            problem,
        }
    }

    fn at(mut self, key: &str) -> Self {
        self.path.insert(0, key.to_owned());
        self
    }

    fn or_origin(mut self, origin: Option<&str>) -> Self {
        if self.origin.is_none() {
            self.origin = origin.map(str::to_owned);
        }
        self
    }

    /// The key path, dotted (`grpcInnerAddress.port`, `hosts[1]`).
    pub(crate) fn dotted_path(&self) -> String {
        let mut out = String::new();
        for key in &self.path {
            if !out.is_empty() && !key.starts_with('[') {
                out.push('.');
            }
            out.push_str(key);
        }
        out
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.dotted_path();
        let path = if path.is_empty() { "(root)" } else { &path };
        match &self.problem {
            Problem::Missing => write!(f, "{path}: missing")?,
            Problem::Expected(what) => write!(f, "{path}: expected {what}")?,
            Problem::Other(message) => write!(f, "{path}: {message}")?,
        }
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReadError {}

impl de::Error for ReadError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::new(Problem::Other(message.to_string()))
    }

    fn invalid_type(_: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::new(Problem::Expected(expected.to_string()))
    }

    fn invalid_value(_: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::new(Problem::Expected(expected.to_string()))
    }

    fn invalid_length(_: usize, expected: &dyn de::Expected) -> Self {
        Self::new(Problem::Expected(expected.to_string()))
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Self::new(Problem::Expected(format!("one of {}", expected.join(", "))))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(Problem::Missing).at(field)
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::new(Problem::Other("given twice".to_owned())).at(field)
    }
}

/// Reads `T` from `value` with isp-kit's rules (see the module docs).
pub(crate) fn read<T: de::DeserializeOwned>(value: Value) -> Result<T, ReadError> {
    T::deserialize(Weak(value))
}

/// A config value as a lenient, case-insensitive deserializer.
struct Weak(Value);

impl Weak {
    fn origin(&self) -> Option<&str> {
        self.0.origin()
    }

    fn kind_name(&self) -> &'static str {
        match self.0.kind {
            ValueKind::Nil => "nothing",
            ValueKind::Boolean(_) => "a boolean",
            ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
                "a number"
            }
            ValueKind::Float(_) => "a number",
            ValueKind::String(_) => "a text",
            ValueKind::Table(_) => "a map",
            ValueKind::Array(_) => "a list",
        }
    }

    fn expected(&self, what: impl Into<String>) -> ReadError {
        ReadError::new(Problem::Expected(format!(
            "{}, not {}",
            what.into(),
            self.kind_name()
        )))
        .or_origin(self.origin())
    }

    /// An integer, from a number or a text of one (Go's weak decoding).
    fn integer(&self, what: &str) -> Result<i128, ReadError> {
        match &self.0.kind {
            ValueKind::I64(n) => Ok(i128::from(*n)),
            ValueKind::I128(n) => Ok(*n),
            ValueKind::U64(n) => Ok(i128::from(*n)),
            ValueKind::U128(n) => i128::try_from(*n).map_err(|_| self.expected(what)),
            ValueKind::Float(x) if x.fract() == 0.0 && x.abs() < 1e30 =>
            {
                #[allow(clippy::cast_possible_truncation)]
                Ok(*x as i128)
            }
            ValueKind::Boolean(b) => Ok(i128::from(*b)),
            ValueKind::String(text) => text.trim().parse().map_err(|_| self.expected(what)),
            _ => Err(self.expected(what)),
        }
    }

    fn float(&self) -> Result<f64, ReadError> {
        match &self.0.kind {
            #[allow(clippy::cast_precision_loss)]
            ValueKind::I64(n) => Ok(*n as f64),
            #[allow(clippy::cast_precision_loss)]
            ValueKind::I128(n) => Ok(*n as f64),
            #[allow(clippy::cast_precision_loss)]
            ValueKind::U64(n) => Ok(*n as f64),
            #[allow(clippy::cast_precision_loss)]
            ValueKind::U128(n) => Ok(*n as f64),
            ValueKind::Float(x) => Ok(*x),
            ValueKind::String(text) => text.trim().parse().map_err(|_| self.expected("a number")),
            _ => Err(self.expected("a number")),
        }
    }

    fn boolean(&self) -> Result<bool, ReadError> {
        match &self.0.kind {
            ValueKind::Boolean(b) => Ok(*b),
            ValueKind::I64(n) => Ok(*n != 0),
            ValueKind::U64(n) => Ok(*n != 0),
            // Go's strconv.ParseBool, plus the empty text as false (mapstructure's weak rule).
            ValueKind::String(text) => match text.trim() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                _ => Err(self.expected("true or false")),
            },
            _ => Err(self.expected("true or false")),
        }
    }

    /// A text, from a text or a scalar written as Go's `%v` writes it.
    fn text(self) -> Result<String, ReadError> {
        match self.0.kind {
            ValueKind::String(text) => Ok(text),
            ValueKind::Boolean(b) => Ok(b.to_string()),
            ValueKind::I64(n) => Ok(n.to_string()),
            ValueKind::I128(n) => Ok(n.to_string()),
            ValueKind::U64(n) => Ok(n.to_string()),
            ValueKind::U128(n) => Ok(n.to_string()),
            ValueKind::Float(x) => Ok(x.to_string()),
            _ => Err(Self(self.0).expected("a text")),
        }
    }
}

macro_rules! integer_methods {
    ($($method:ident $visit:ident $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
                let what = format!(
                    "an integer from {} to {}",
                    <$ty>::MIN,
                    <$ty>::MAX
                );
                let n = self.integer(&what)?;
                let n = <$ty>::try_from(n).map_err(|_| self.expected(what))?;
                visitor.$visit(n)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Weak {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        let origin = self.origin().map(str::to_owned);
        let result = match self.0.kind {
            ValueKind::Nil => visitor.visit_unit(),
            ValueKind::Boolean(b) => visitor.visit_bool(b),
            ValueKind::I64(n) => visitor.visit_i64(n),
            ValueKind::I128(n) => visitor.visit_i128(n),
            ValueKind::U64(n) => visitor.visit_u64(n),
            ValueKind::U128(n) => visitor.visit_u128(n),
            ValueKind::Float(x) => visitor.visit_f64(x),
            ValueKind::String(text) => visitor.visit_string(text),
            ValueKind::Array(items) => visitor.visit_seq(Seq::new(items)),
            ValueKind::Table(table) => visitor.visit_map(Map::new(table, None)),
        };
        result.map_err(|e| e.or_origin(origin.as_deref()))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        visitor.visit_bool(self.boolean()?)
    }

    integer_methods! {
        deserialize_i8 visit_i8 i8,
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64,
        deserialize_u8 visit_u8 u8,
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        #[allow(clippy::cast_possible_truncation)]
        visitor.visit_f32(self.float()? as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        let origin = self.origin().map(str::to_owned);
        visitor
            .visit_string::<ReadError>(self.text()?)
            .map_err(|e| e.or_origin(origin.as_deref()))
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self.0.kind {
            ValueKind::Nil => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self.0.kind {
            ValueKind::Nil => visitor.visit_unit(),
            _ => Err(self.expected("nothing")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        let origin = self.origin().map(str::to_owned);
        let items = match self.0.kind {
            ValueKind::Array(items) => items,
            // Go's weak decoding: one value where a list is wanted is a list of one.
            ValueKind::Nil => Vec::new(),
            _ => vec![self.0],
        };
        visitor
            .visit_seq(Seq::new(items))
            .map_err(|e| e.or_origin(origin.as_deref()))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        let origin = self.origin().map(str::to_owned);
        match self.0.kind {
            ValueKind::Table(table) => visitor
                .visit_map(Map::new(table, None))
                .map_err(|e| e.or_origin(origin.as_deref())),
            ValueKind::Nil => visitor.visit_map(Map::new(config::Map::new(), None)),
            _ => Err(self.expected("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        let origin = self.origin().map(str::to_owned);
        match self.0.kind {
            ValueKind::Table(table) => visitor
                .visit_map(Map::new(table, Some(fields)))
                .map_err(|e| e.or_origin(origin.as_deref())),
            // `key:` with nothing after it, as an empty section.
            ValueKind::Nil => visitor.visit_map(Map::new(config::Map::new(), Some(fields))),
            _ => Err(self.expected("a map of keys")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        let origin = self.origin().map(str::to_owned);
        let (name, content) = match self.0.kind {
            ValueKind::String(text) => (text, None),
            ValueKind::Table(table) if table.len() == 1 => {
                let Some((key, value)) = table.into_iter().next() else {
                    unreachable!("a table of one entry")
                };
                (key, Some(value))
            }
            _ => {
                return Err(Self(self.0).expected(format!("one of {}", variants.join(", "))));
            }
        };
        let variant = matching_name(variants, &name).ok_or_else(|| {
            ReadError::new(Problem::Expected(format!("one of {}", variants.join(", "))))
                .or_origin(origin.as_deref())
        })?;
        visitor
            .visit_enum(Enum { variant, content })
            .map_err(|e| e.or_origin(origin.as_deref()))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        visitor.visit_unit()
    }
}

/// The name among `names` that `key` stands for: the same, else the same but for case.
fn matching_name(names: &'static [&'static str], key: &str) -> Option<&'static str> {
    names
        .iter()
        .find(|name| **name == key)
        .or_else(|| names.iter().find(|name| name.eq_ignore_ascii_case(key)))
        .copied()
}

struct Seq {
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
}

impl Seq {
    fn new(items: Vec<Value>) -> Self {
        Self {
            items: items.into_iter().enumerate(),
        }
    }
}

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = ReadError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ReadError> {
        match self.items.next() {
            None => Ok(None),
            Some((index, value)) => seed
                .deserialize(Weak(value))
                .map(Some)
                .map_err(|e| e.at(&format!("[{index}]"))),
        }
    }
}

struct Map {
    entries: VecDeque<(String, Value)>,
    /// The struct's field names, to match keys to them without regard to case.
    fields: Option<&'static [&'static str]>,
    /// The key of the value `next_value_seed` reads, as the struct names it.
    current: Option<String>,
}

impl Map {
    fn new(table: config::Map<String, Value>, fields: Option<&'static [&'static str]>) -> Self {
        Self {
            entries: table.into_iter().collect(),
            fields,
            current: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for Map {
    type Error = ReadError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ReadError> {
        let Some((key, _)) = self.entries.front() else {
            return Ok(None);
        };
        let name = match self.fields.and_then(|fields| matching_name(fields, key)) {
            Some(field) => field.to_owned(),
            None => key.clone(),
        };
        let deserializer: de::value::StringDeserializer<ReadError> =
            name.clone().into_deserializer();
        let key = seed.deserialize(deserializer)?;
        self.current = Some(name);
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ReadError> {
        let Some((raw_key, value)) = self.entries.pop_front() else {
            return Err(de::Error::custom("a value read before its key"));
        };
        let key = self.current.take().unwrap_or(raw_key);
        seed.deserialize(Weak(value)).map_err(|e| e.at(&key))
    }
}

struct Enum {
    variant: &'static str,
    content: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for Enum {
    type Error = ReadError;
    type Variant = Variant;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Variant), ReadError> {
        let deserializer: de::value::StrDeserializer<'_, ReadError> =
            self.variant.into_deserializer();
        let variant = seed.deserialize(deserializer)?;
        Ok((
            variant,
            Variant {
                name: self.variant,
                content: self.content,
            },
        ))
    }
}

struct Variant {
    name: &'static str,
    content: Option<Value>,
}

impl Variant {
    fn content(self) -> Result<Weak, ReadError> {
        self.content
            .map(Weak)
            .ok_or_else(|| ReadError::new(Problem::Expected("a value for it".into())).at(self.name))
    }
}

impl<'de> de::VariantAccess<'de> for Variant {
    type Error = ReadError;

    fn unit_variant(self) -> Result<(), ReadError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, ReadError> {
        let name = self.name;
        seed.deserialize(self.content()?).map_err(|e| e.at(name))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, ReadError> {
        let name = self.name;
        de::Deserializer::deserialize_seq(self.content()?, visitor).map_err(|e| e.at(name))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        let name = self.name;
        de::Deserializer::deserialize_struct(self.content()?, name, fields, visitor)
            .map_err(|e| e.at(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn table(entries: Vec<(&str, Value)>) -> Value {
        let map: config::Map<String, Value> = entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Value::new(None, ValueKind::Table(map))
    }

    fn from(origin: &str, kind: impl Into<ValueKind>) -> Value {
        Value::new(Some(&origin.to_owned()), kind)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        port: u16,
        #[serde(default)]
        ip: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    enum Mode {
        Fast,
        Careful,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Outer {
        grpc_inner_address: Inner,
        enable: bool,
        hosts: Vec<String>,
        labels: BTreeMap<String, String>,
        mode: Mode,
        ratio: Option<f64>,
    }

    #[test]
    fn keys_and_variants_match_without_case_and_scalars_convert() {
        let value = table(vec![
            (
                "grpcinneraddress",
                table(vec![
                    ("port", from("f.yml", "9001")),
                    ("ip", from("f.yml", 127_i64)),
                ]),
            ),
            ("ENABLE", from("f.yml", "true")),
            ("hosts", from("f.yml", "one")),
            ("labels", table(vec![("Team", from("f.yml", "core"))])),
            ("mode", from("f.yml", "CAREFUL")),
            ("ratio", from("f.yml", "0.5")),
        ]);
        let outer: Outer = read(value).unwrap();
        assert_eq!(
            outer,
            Outer {
                grpc_inner_address: Inner {
                    port: 9001,
                    ip: "127".into()
                },
                enable: true,
                hosts: vec!["one".into()],
                labels: BTreeMap::from([("Team".into(), "core".into())]),
                mode: Mode::Careful,
                ratio: Some(0.5),
            }
        );
    }

    #[test]
    fn errors_name_the_path_the_origin_and_what_was_expected_never_the_value() {
        let value = table(vec![(
            "grpcinneraddress",
            table(vec![("port", from("environment variable X", "hunter2"))]),
        )]);
        let err = read::<BTreeMap<String, Inner>>(value).unwrap_err();
        assert_eq!(err.dotted_path(), "grpcinneraddress.port");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("an integer from 0 to 65535, not a text"),
            "{text}"
        );
        assert!(text.contains("(from environment variable X)"), "{text}");

        let missing = table(vec![("grpcInnerAddress", table(vec![]))]);
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Only {
            grpc_inner_address: Inner,
        }
        let err = read::<Only>(missing).unwrap_err();
        assert_eq!(err.to_string(), "grpcInnerAddress.port: missing");

        let list = table(vec![(
            "hosts",
            Value::new(
                None,
                ValueKind::Array(vec![
                    from("f", "a"),
                    from("f", ValueKind::Table(config::Map::new())),
                ]),
            ),
        )]);
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Hosts {
            hosts: Vec<String>,
        }
        let err = read::<Hosts>(list).unwrap_err();
        assert_eq!(err.dotted_path(), "hosts[1]");
        assert!(err.to_string().contains("a text, not a map"), "{err}");

        let bad_variant = table(vec![("mode", from("f", "secret-ish"))]);
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct M {
            mode: Mode,
        }
        let err = read::<M>(bad_variant).unwrap_err().to_string();
        assert!(!err.contains("secret-ish"), "{err}");
        assert!(err.contains("one of fast, careful"), "{err}");
    }

    #[test]
    fn out_of_range_and_non_integral_numbers_are_refused() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct P {
            port: u16,
        }
        for kind in [
            ValueKind::I64(70_000),
            ValueKind::I64(-1),
            ValueKind::Float(1.5),
        ] {
            let err = read::<P>(table(vec![("port", from("f", kind))])).unwrap_err();
            assert!(err.to_string().contains("from 0 to 65535"), "{err}");
        }
    }
}
