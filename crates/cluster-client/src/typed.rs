//! Typed remote config: parse into the application's type, validate, and keep the latest valid
//! config in a live handle; and the [`ConfigData`] of a type, with its JSON Schema.
//!
//! ```
//! use cluster_client::typed::{config_data_for, TypedConfig};
//! use cluster_client::{EventHandler, RemoteConfigReceiver};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
//! struct Remote {
//!     /// How many workers to run.
//!     workers: u32,
//!     db: Db,
//! }
//! #[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
//! struct Db {
//!     host: String,
//!     password: String,
//! }
//!
//! // What MODULE:SEND_CONFIG_SCHEMA carries: the default config and its draft-07 schema.
//! let config_data = config_data_for::<Remote>("1.0.0").unwrap();
//! assert!(config_data.schema.get().contains("draft-07"));
//!
//! let typed = TypedConfig::<Remote>::new()
//!     .validate(|c: &Remote| if c.workers == 0 { Err("workers must be > 0") } else { Ok(()) });
//! let live = typed.handle();
//! let handler = EventHandler::new().remote_config_receiver(typed.clone());
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let good = br#"{"workers":4,"db":{"host":"h","password":"p"}}"#;
//! typed.receive_config(bytes::Bytes::from_static(good)).await.unwrap();
//! assert_eq!(live.get().unwrap().workers, 4);
//! let bad = br#"{"workers":0,"db":{"host":"h","password":"p"}}"#;
//! assert!(typed.receive_config(bytes::Bytes::from_static(bad)).await.is_err());
//! assert_eq!(live.get().unwrap().workers, 4, "the live handle keeps the latest valid config");
//! # });
//! # drop(handler);
//! ```

use crate::error::BoxError;
use crate::handler::RemoteConfigReceiver;
use async_trait::async_trait;
use bytes::Bytes;
use cluster_proto::ConfigData;
use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// Why a typed config was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedConfigError {
    /// The JSON does not match the type. What the message quotes from the config is
    /// redacted (a config may hold secrets): string values, numbers, unknown variant and field
    /// names; the position and the names of the type are kept.
    #[error("config does not match {type_name}: {message}")]
    Parse {
        /// The Rust type.
        type_name: &'static str,
        /// serde_json's reason, with the config's values replaced by `***`.
        message: String,
    },
    /// The application's validation refused it.
    #[error("config is invalid: {0}")]
    Invalid(#[source] BoxError),
    /// The application's callback ([`TypedConfig::on_config`]) refused it.
    #[error("config not applied: {0}")]
    Apply(#[source] BoxError),
}

type Validate<T> = Arc<dyn Fn(&T) -> Result<(), BoxError> + Send + Sync>;
type Apply<T> = Arc<dyn Fn(Arc<T>) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

/// A [`RemoteConfigReceiver`] that parses each config into `T` (serde), runs the application's
/// validation, then its callback (if any), and publishes the config to every
/// [`ConfigHandle`] only once all of that succeeded: a handle always holds the latest config
/// the application accepted. A refused config leaves the handle as it was and fails the
/// application (which, for the initial config, fails the handshake, as in Go).
///
/// Cloning gives another receiver publishing to the same handles.
pub struct TypedConfig<T> {
    validate: Option<Validate<T>>,
    apply: Option<Apply<T>>,
    live: Arc<watch::Sender<Option<Arc<T>>>>,
}

impl<T> Clone for TypedConfig<T> {
    fn clone(&self) -> Self {
        Self {
            validate: self.validate.clone(),
            apply: self.apply.clone(),
            live: self.live.clone(),
        }
    }
}

impl<T> fmt::Debug for TypedConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedConfig")
            .field("type", &std::any::type_name::<T>())
            .field("validate", &self.validate.is_some())
            .field("on_config", &self.apply.is_some())
            .field("has_config", &self.live.borrow().is_some())
            .finish()
    }
}

impl<T> Default for TypedConfig<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TypedConfig<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// A receiver without validation or callback; its handles hold nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            validate: None,
            apply: None,
            live: Arc::new(watch::channel(None).0),
        }
    }

    /// Runs `validate` on each parsed config before anything else sees it; an error refuses
    /// the config. Replaces a previous validation.
    #[must_use]
    pub fn validate<F, E>(mut self, validate: F) -> Self
    where
        F: Fn(&T) -> Result<(), E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.validate = Some(Arc::new(move |c: &T| validate(c).map_err(Into::into)));
        self
    }

    /// Calls `apply` with each valid config, before it is published; an error refuses the
    /// config. The call is bounded by the handler's config timeout like any config receiver.
    #[must_use]
    pub fn on_config<F, Fut, E>(mut self, apply: F) -> Self
    where
        F: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.apply = Some(Arc::new(move |c: Arc<T>| {
            let fut = apply(c);
            Box::pin(async move { fut.await.map_err(Into::into) })
        }));
        self
    }

    /// A live handle on the latest accepted config.
    #[must_use]
    pub fn handle(&self) -> ConfigHandle<T> {
        ConfigHandle {
            rx: self.live.subscribe(),
        }
    }

    /// Parses, validates and applies `config` as [`RemoteConfigReceiver::receive_config`]
    /// does, returning the typed error.
    ///
    /// # Errors
    /// See [`TypedConfigError`].
    pub async fn accept(&self, config: &[u8]) -> Result<Arc<T>, TypedConfigError> {
        let value: T = serde_json::from_slice(config).map_err(|err| TypedConfigError::Parse {
            type_name: std::any::type_name::<T>(),
            message: redact_input(&err.to_string()),
        })?;
        if let Some(validate) = &self.validate {
            validate(&value).map_err(TypedConfigError::Invalid)?;
        }
        let value = Arc::new(value);
        if let Some(apply) = &self.apply {
            apply(value.clone())
                .await
                .map_err(TypedConfigError::Apply)?;
        }
        self.live.send_replace(Some(value.clone()));
        Ok(value)
    }
}

#[async_trait]
impl<T> RemoteConfigReceiver for TypedConfig<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    async fn receive_config(&self, config: Bytes) -> Result<(), BoxError> {
        self.accept(&config).await.map(drop).map_err(Into::into)
    }
}

/// A live view of the latest config a [`TypedConfig`] accepted (a tokio `watch` underneath).
/// Cloning is cheap.
pub struct ConfigHandle<T> {
    rx: watch::Receiver<Option<Arc<T>>>,
}

impl<T> Clone for ConfigHandle<T> {
    fn clone(&self) -> Self {
        Self {
            rx: self.rx.clone(),
        }
    }
}

impl<T> fmt::Debug for ConfigHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigHandle")
            .field("type", &std::any::type_name::<T>())
            .field("has_config", &self.rx.borrow().is_some())
            .finish()
    }
}

impl<T> ConfigHandle<T> {
    /// The latest accepted config; `None` before the first.
    #[must_use]
    pub fn get(&self) -> Option<Arc<T>> {
        self.rx.borrow().clone()
    }

    /// The latest accepted config, waiting for the first one. `None` if every
    /// [`TypedConfig`] it came from was dropped before any config was accepted.
    pub async fn wait(&mut self) -> Option<Arc<T>> {
        self.rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|c| c.clone())
    }

    /// Waits for the next accepted config (one this handle has not yet seen through
    /// [`ConfigHandle::changed`]). `None` once every [`TypedConfig`] it came from was dropped.
    pub async fn changed(&mut self) -> Option<Arc<T>> {
        loop {
            self.rx.changed().await.ok()?;
            if let Some(config) = self.rx.borrow_and_update().clone() {
                return Some(config);
            }
        }
    }

    /// The underlying watch receiver, for `select!` loops.
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<Option<Arc<T>>> {
        self.rx.clone()
    }
}

/// The JSON Schema of `T` as isp-config-service wants it: draft-07, every subschema inlined
/// (recursive types keep `definitions` for the recursion only).
#[must_use]
pub fn json_schema_for<T: JsonSchema>() -> serde_json::Value {
    SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The [`ConfigData`] of `MODULE:SEND_CONFIG_SCHEMA` for config type `T`: `version`, the
/// draft-07 schema of `T` ([`json_schema_for`]), and `T::default()` as the default config.
///
/// # Errors
/// When `T::default()` does not serialise to JSON (a map with non-string keys, say).
pub fn config_data_for<T>(version: impl Into<String>) -> Result<ConfigData, serde_json::Error>
where
    T: Default + Serialize + JsonSchema,
{
    config_data_from(version, &T::default())
}

/// [`config_data_for`] with an explicit default config.
///
/// # Errors
/// When `default` does not serialise to JSON.
pub fn config_data_from<T>(
    version: impl Into<String>,
    default: &T,
) -> Result<ConfigData, serde_json::Error>
where
    T: Serialize + JsonSchema,
{
    let schema = serde_json::to_string(&json_schema_for::<T>())?;
    let config = serde_json::to_string(default)?;
    Ok(ConfigData {
        version: version.into(),
        schema: RawValue::from_string(schema)?,
        config: RawValue::from_string(config)?,
    })
}

/// Hides what a serde error message quotes from the input, which may be a secret:
/// - every `"…"` (serde writes string values with `{:?}`, so `\"` inside is skipped over);
/// - the backticked part before the type's own `, expected …` (or `, there are no …`) list,
///   where serde names unknown enum variants, unknown fields and numbers
///   (`` unknown variant `s3cr3t`, expected one of `a`, `b` ``,
///   `` invalid value: integer `1234`, expected … ``), from its first backtick to its last
///   (a backtick inside the value cannot end the hiding early).
///
/// What names the type stays: the `expected` list, and the field of `missing field` and
/// `duplicate field`.
fn redact_input(message: &str) -> String {
    let own_field = message.starts_with("missing field") || message.starts_with("duplicate field");
    let input_end = if own_field {
        0
    } else {
        [", expected", ", there are no"]
            .iter()
            .filter_map(|marker| message.rfind(marker))
            .min()
            .unwrap_or(message.len())
    };
    let head = &message[..input_end];
    let hidden = match (head.find('`'), head.rfind('`')) {
        (Some(first), Some(last)) if first < last => Some((first, last)),
        _ => None,
    };
    let mut out = String::with_capacity(message.len());
    let mut chars = message.char_indices();
    while let Some((i, c)) = chars.next() {
        if let Some((first, last)) = hidden {
            if i == first {
                out.push_str("`***`");
                for (j, _) in chars.by_ref() {
                    if j == last {
                        break;
                    }
                }
                continue;
            }
        }
        out.push(c);
        if c == '"' {
            out.push_str("***");
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    out.push('"');
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
    struct Conf {
        name: String,
        inner: Inner,
        list: Vec<Inner>,
    }

    #[derive(Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
    struct Inner {
        port: u16,
    }

    #[test]
    fn schema_is_draft07_and_inlined() {
        let schema = json_schema_for::<Conf>();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        let text = schema.to_string();
        assert!(!text.contains("$ref"), "{text}");
        assert!(schema.get("definitions").is_none(), "{text}");
        assert_eq!(
            schema["properties"]["inner"]["properties"]["port"]["type"],
            "integer"
        );
        let data = config_data_for::<Conf>("2.0.0").unwrap();
        assert_eq!(data.version, "2.0.0");
        assert_eq!(
            data.config.get(),
            r#"{"name":"","inner":{"port":0},"list":[]}"#
        );
    }

    #[tokio::test]
    async fn parse_errors_are_typed_and_redacted() {
        let typed = TypedConfig::<Conf>::new();
        let err = typed
            .accept(br#"{"name":"x","inner":{"port":"s3cr3t"},"list":[]}"#)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TypedConfigError::Parse { .. }));
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert_eq!(redact_input(r#"a "b" c "d" e"#), r#"a "***" c "***" e"#);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        mode: Mode,
        pin: u8,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Safe,
    }

    fn parse_error(config: &str) -> String {
        let typed = TypedConfig::<Strict>::new();
        let err = futures_util::FutureExt::now_or_never(typed.accept(config.as_bytes()))
            .expect("accept does not wait")
            .unwrap_err();
        assert!(matches!(err, TypedConfigError::Parse { .. }), "{err}");
        err.to_string()
    }

    #[test]
    fn backticked_values_are_redacted_too() {
        // serde names an unknown variant in backticks: hidden, the expected ones kept.
        let text = parse_error(r#"{"mode":"s3cr3t","pin":1}"#);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("unknown variant `***`"), "{text}");
        assert!(text.contains("`fast`") && text.contains("`safe`"), "{text}");
        // Numbers too.
        let text = parse_error(r#"{"mode":"fast","pin":4321}"#);
        assert!(!text.contains("4321"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        // Unknown field names (a key could be a secret pasted in the wrong place).
        let text = parse_error(r#"{"mode":"fast","pin":1,"hunter2":0}"#);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("`mode`"), "the type's fields stay: {text}");
        // The type's own names stay.
        assert!(parse_error(r#"{"mode":"fast"}"#).contains("missing field `pin`"));
        // A backtick or an escaped quote inside a value does not end the hiding early.
        let text = parse_error(r#"{"mode":"a`leak`b","pin":1}"#);
        assert!(!text.contains("leak"), "{text}");
        let text = parse_error(r#"{"mode":"fast","pin":"x\"leak"}"#);
        assert!(!text.contains("leak"), "{text}");
        assert_eq!(
            redact_input(r#"invalid type: string "a\"leak", expected u8"#),
            r#"invalid type: string "***", expected u8"#
        );
    }

    #[tokio::test]
    async fn callback_errors_keep_the_previous_config() {
        let typed = TypedConfig::<Inner>::new().on_config(|c: Arc<Inner>| async move {
            if c.port == 1 {
                Err("port 1 refused")
            } else {
                Ok(())
            }
        });
        let mut handle = typed.handle();
        assert!(handle.get().is_none());
        typed.accept(br#"{"port":2}"#).await.unwrap();
        assert_eq!(handle.changed().await.unwrap().port, 2);
        let err = typed.accept(br#"{"port":1}"#).await.unwrap_err();
        assert!(matches!(err, TypedConfigError::Apply(_)), "{err}");
        assert_eq!(handle.wait().await.unwrap().port, 2);
        drop(typed);
        assert!(handle.changed().await.is_none());
    }
}
