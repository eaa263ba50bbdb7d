//! [`Secret`]: a config value that never shows in logs.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What [`Secret`]'s `Debug` and `Display` print instead of the value: `***`, as the secret
/// masking of configs in the logs does.
pub const MASK: &str = "***";

/// A value that must not reach a log: a password, a token, a DSN. It deserializes and
/// serializes as the value itself (a config file or a remote config holds it plainly), its
/// JSON Schema is the value's, and its `Debug` and `Display` print [`MASK`], so a config
/// struct that derives `Debug` can be logged whole. Read the value with [`Secret::expose`].
///
/// Serializing writes the value: a remote config that the config service stores and sends
/// back must keep it. Masking what is written to logs as JSON is the secret masker's job
/// (by key name, [`SecretMasker`](crate::SecretMasker)).
///
/// # Examples
/// ```
/// use cluster_client::Secret;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Db {
///     user: String,
///     password: Secret<String>,
/// }
///
/// let db: Db = serde_json::from_str(r#"{"user":"app","password":"hunter2"}"#).unwrap();
/// assert_eq!(db.password.expose(), "hunter2");
/// assert_eq!(format!("{db:?}"), r#"Db { user: "app", password: *** }"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value, to use it (not to log it).
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// The value, unwrapped.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

impl<T: JsonSchema> JsonSchema for Secret<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    struct Remote {
        user: String,
        password: Secret<String>,
        pin: Option<Secret<u32>>,
    }

    #[test]
    fn masked_in_debug_and_display_but_not_on_the_wire() {
        let remote: Remote =
            serde_json::from_str(r#"{"user":"u","password":"p4ss","pin":1234}"#).unwrap();
        let debug = format!("{remote:?}");
        assert!(
            !debug.contains("p4ss") && !debug.contains("1234"),
            "{debug}"
        );
        assert_eq!(remote.password.to_string(), MASK);
        assert_eq!(remote.password.expose(), "p4ss");
        let back = serde_json::to_value(&remote).unwrap();
        assert_eq!(back["password"], "p4ss");
        assert_eq!(back["pin"], 1234);
    }

    #[test]
    fn schema_is_the_values() {
        let schema = schemars::schema_for!(Remote);
        let json = serde_json::to_value(&schema).unwrap();
        assert_eq!(json["properties"]["password"]["type"], "string", "{json}");
        assert_eq!(
            json["properties"]["pin"]["type"],
            serde_json::json!(["integer", "null"]),
            "{json}"
        );
    }
}
