//! Typed remote config: parse into the application's type, validate, and keep the latest valid
//! config in a live handle; and the [`ConfigData`] of a type, with its JSON Schema.
//!
//! ```
//! use cluster_client::typed::TypedConfig;
//! use cluster_client::{EventHandler, RemoteConfigReceiver};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
//! struct Remote {
//!     /// How many workers to run.
//!     workers: u32,
//!     db: Db,
//! }
//! // The default config is what a config service that has none for the module stores and
//! // sends back: it must pass the validation below (`workers: 0` would not).
//! impl Default for Remote {
//!     fn default() -> Self {
//!         Self { workers: 4, db: Db::default() }
//!     }
//! }
//! #[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
//! struct Db {
//!     host: String,
//!     password: String,
//! }
//!
//! let typed = TypedConfig::<Remote>::new()
//!     .validate(|c: &Remote| if c.workers == 0 { Err("workers must be > 0") } else { Ok(()) });
//! let live = typed.handle();
//! // What MODULE:SEND_CONFIG_SCHEMA carries: the default config (checked against the
//! // validation) and its draft-07 schema.
//! let config_data = typed.config_data("1.0.0").unwrap();
//! assert!(config_data.schema.get().contains("draft-07"));
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
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// How many decided configs a [`ConfigHandle`] remembers the outcome of, for
/// [`ConfigHandle::wait_outcome`].
pub const OUTCOME_HISTORY: usize = 64;

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
    /// [`TypedConfig::config_data`]: the default config does not pass the validation. A
    /// config service that has no config for the module stores this default and sends it
    /// back at every handshake: the module would refuse it and never become ready.
    #[error(
        "the default config of {type_name} does not pass the validation ({source}): the module \
         would refuse its own default at every handshake with a config service that has no \
         config for it; give {type_name} a default that passes"
    )]
    InvalidDefault {
        /// The Rust type.
        type_name: &'static str,
        /// The validation's reason.
        source: BoxError,
    },
    /// [`TypedConfig::config_data`]: the default config does not make a JSON object that
    /// parses back into the type (a map with non-string keys, a field skipped when
    /// serialising but required when parsing, …).
    #[error("the default config of {type_name} does not round-trip through JSON: {message}")]
    DefaultNotJson {
        /// The Rust type.
        type_name: &'static str,
        /// serde_json's reason (values redacted as for [`TypedConfigError::Parse`]).
        message: String,
    },
}

/// A config the application refused: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config #{seq} rejected: {error}")]
pub struct ConfigRejection {
    /// Its number: the configs a [`TypedConfig`] (and its clones) was given, counted from 1.
    /// The client gives the receiver each config it applies: the session's initial config at
    /// every (re)connect, then every change. A config replaced by a newer one while it waited
    /// to be applied never reaches the receiver and has no number.
    pub seq: u64,
    /// Why, as [`TypedConfigError`] says it (values from the config redacted). A config whose
    /// application was cancelled (its timeout passed, the client closed) reads
    /// `cancelled before it was decided`.
    pub error: String,
}

/// What became of one config: [`ConfigHandle::wait_outcome`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigOutcome<T> {
    /// Accepted and published to the handles.
    Applied(Arc<T>),
    /// Refused; the handles keep the previous config.
    Rejected(ConfigRejection),
}

impl<T> Clone for ConfigOutcome<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Applied(config) => Self::Applied(config.clone()),
            Self::Rejected(rejection) => Self::Rejected(rejection.clone()),
        }
    }
}

/// The outcomes of the configs a [`TypedConfig`] was given.
struct Outcomes<T> {
    /// Configs given so far (the last number handed out).
    received: u64,
    /// The highest number decided.
    decided: u64,
    /// The latest rejection.
    rejection: Option<ConfigRejection>,
    /// The last [`OUTCOME_HISTORY`] decisions, oldest first.
    history: VecDeque<(u64, ConfigOutcome<T>)>,
}

impl<T> Outcomes<T> {
    fn decide(&mut self, seq: u64, outcome: ConfigOutcome<T>) {
        if let ConfigOutcome::Rejected(rejection) = &outcome {
            self.rejection = Some(rejection.clone());
        }
        self.decided = self.decided.max(seq);
        if self.history.len() == OUTCOME_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((seq, outcome));
    }
}

/// Records a rejection for a config whose application is dropped before it was decided.
struct Deciding<'a, T> {
    outcomes: &'a watch::Sender<Outcomes<T>>,
    seq: u64,
    decided: bool,
}

impl<T> Deciding<'_, T> {
    fn decide(mut self, outcome: ConfigOutcome<T>) {
        self.decided = true;
        let seq = self.seq;
        self.outcomes.send_modify(|o| o.decide(seq, outcome));
    }
}

impl<T> Drop for Deciding<'_, T> {
    fn drop(&mut self) {
        if !self.decided {
            let rejection = ConfigRejection {
                seq: self.seq,
                error: "cancelled before it was decided".to_owned(),
            };
            let seq = self.seq;
            self.outcomes
                .send_modify(|o| o.decide(seq, ConfigOutcome::Rejected(rejection)));
        }
    }
}

type Validate<T> = Arc<dyn Fn(&T) -> Result<(), BoxError> + Send + Sync>;
type Apply<T> = Arc<dyn Fn(Arc<T>) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;
type Inspect<T> = Arc<dyn Fn(&T) + Send + Sync>;

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
    inspect: Vec<Inspect<T>>,
    live: Arc<watch::Sender<Option<Arc<T>>>>,
    outcomes: Arc<watch::Sender<Outcomes<T>>>,
}

impl<T> Clone for TypedConfig<T> {
    fn clone(&self) -> Self {
        Self {
            validate: self.validate.clone(),
            apply: self.apply.clone(),
            inspect: self.inspect.clone(),
            live: self.live.clone(),
            outcomes: self.outcomes.clone(),
        }
    }
}

impl<T> fmt::Debug for TypedConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedConfig")
            .field("type", &std::any::type_name::<T>())
            .field("validate", &self.validate.is_some())
            .field("on_config", &self.apply.is_some())
            .field("inspect", &self.inspect.len())
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
            inspect: Vec::new(),
            live: Arc::new(watch::channel(None).0),
            outcomes: Arc::new(
                watch::channel(Outcomes {
                    received: 0,
                    decided: 0,
                    rejection: None,
                    history: VecDeque::new(),
                })
                .0,
            ),
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

    /// Calls `inspect` with each config once it is accepted (validated, and applied by
    /// [`TypedConfig::on_config`]), before the handles see it: for what follows a config
    /// and cannot refuse it, such as the log level a remote config carries. Several may be
    /// given; they run in order, synchronously, in the task that applies configs (keep them
    /// quick). A panic in one refuses the config, as a panicking receiver does.
    #[must_use]
    pub fn inspect<F>(mut self, inspect: F) -> Self
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        self.inspect.push(Arc::new(inspect));
        self
    }

    /// A live handle on the latest accepted config.
    #[must_use]
    pub fn handle(&self) -> ConfigHandle<T> {
        ConfigHandle {
            rx: self.live.subscribe(),
            outcomes: self.outcomes.subscribe(),
        }
    }

    /// Parses, validates and applies `config` as [`RemoteConfigReceiver::receive_config`]
    /// does, returning the typed error.
    ///
    /// # Errors
    /// See [`TypedConfigError`].
    /// Each call is numbered (see [`ConfigRejection::seq`]) and its outcome recorded for
    /// [`ConfigHandle::last_rejection`] and [`ConfigHandle::wait_outcome`].
    pub async fn accept(&self, config: &[u8]) -> Result<Arc<T>, TypedConfigError> {
        let mut seq = 0;
        self.outcomes.send_modify(|o| {
            o.received += 1;
            seq = o.received;
        });
        let deciding = Deciding {
            outcomes: &self.outcomes,
            seq,
            decided: false,
        };
        match self.check_and_apply(config).await {
            Ok(value) => {
                self.live.send_replace(Some(value.clone()));
                deciding.decide(ConfigOutcome::Applied(value.clone()));
                Ok(value)
            }
            Err(err) => {
                deciding.decide(ConfigOutcome::Rejected(ConfigRejection {
                    seq,
                    error: err.to_string(),
                }));
                Err(err)
            }
        }
    }

    async fn check_and_apply(&self, config: &[u8]) -> Result<Arc<T>, TypedConfigError> {
        let value = self.parse_and_validate(config)?;
        let value = Arc::new(value);
        if let Some(apply) = &self.apply {
            apply(value.clone())
                .await
                .map_err(TypedConfigError::Apply)?;
        }
        for inspect in &self.inspect {
            inspect(&value);
        }
        Ok(value)
    }

    fn parse_and_validate(&self, config: &[u8]) -> Result<T, TypedConfigError> {
        let value: T = serde_json::from_slice(config).map_err(|err| TypedConfigError::Parse {
            type_name: std::any::type_name::<T>(),
            message: redact_input(&err.to_string()),
        })?;
        if let Some(validate) = &self.validate {
            validate(&value).map_err(TypedConfigError::Invalid)?;
        }
        Ok(value)
    }
}

impl<T> TypedConfig<T>
where
    T: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static,
{
    /// The [`ConfigData`] of `MODULE:SEND_CONFIG_SCHEMA` for this config: `version`, the
    /// draft-07 schema of `T` ([`json_schema_for`]) and `T::default()` as the default config,
    /// **checked the way the module will receive it**: serialised, parsed back and passed to
    /// the validation (not to [`TypedConfig::on_config`], which may have side effects).
    ///
    /// A config service that has no config for the module stores the default and sends it
    /// back; a default the validation refuses would fail every handshake, so it is an error
    /// here, when the module is set up.
    ///
    /// The default is not checked against the JSON Schema (`#[schemars(range(min = 1))]`,
    /// say): the client never validates against the schema, and the service stores a default
    /// without checking it either (it checks only the configs an admin sets). Repeat in
    /// [`TypedConfig::validate`] what the schema asks.
    ///
    /// # Errors
    /// [`TypedConfigError::InvalidDefault`], [`TypedConfigError::DefaultNotJson`].
    pub fn config_data(&self, version: impl Into<String>) -> Result<ConfigData, TypedConfigError>
    where
        T: Default,
    {
        self.config_data_with(version, &T::default())
    }

    /// [`TypedConfig::config_data`] with an explicit default config.
    ///
    /// # Errors
    /// [`TypedConfigError::InvalidDefault`], [`TypedConfigError::DefaultNotJson`].
    pub fn config_data_with(
        &self,
        version: impl Into<String>,
        default: &T,
    ) -> Result<ConfigData, TypedConfigError> {
        let type_name = std::any::type_name::<T>();
        let not_json = |err: serde_json::Error| TypedConfigError::DefaultNotJson {
            type_name,
            message: redact_input(&err.to_string()),
        };
        let data = config_data_from(version, default).map_err(not_json)?;
        match self.parse_and_validate(data.config.get().as_bytes()) {
            Ok(_) => Ok(data),
            Err(TypedConfigError::Invalid(source)) => {
                Err(TypedConfigError::InvalidDefault { type_name, source })
            }
            Err(TypedConfigError::Parse { message, .. }) => {
                Err(TypedConfigError::DefaultNotJson { type_name, message })
            }
            Err(other) => Err(other),
        }
    }
}

impl<T> TypedConfig<T>
where
    T: DeserializeOwned + JsonSchema + Send + Sync + 'static,
{
    /// [`TypedConfig::config_data`] with the default config given as JSON (a Go module's
    /// `default_remote_config.json`): it must parse into `T` and pass the validation, as the
    /// module would receive it; the JSON is sent as it is (minified), fields `T` does not
    /// know included, as Go sends its file.
    ///
    /// # Errors
    /// [`TypedConfigError::Parse`] (values redacted, keys named) when it does not parse into
    /// `T`; [`TypedConfigError::InvalidDefault`] when the validation refuses it.
    pub fn config_data_from_json(
        &self,
        version: impl Into<String>,
        default: &[u8],
    ) -> Result<ConfigData, TypedConfigError> {
        let type_name = std::any::type_name::<T>();
        match self.parse_and_validate(default) {
            Ok(_) => {}
            Err(TypedConfigError::Invalid(source)) => {
                return Err(TypedConfigError::InvalidDefault { type_name, source });
            }
            Err(other) => return Err(other),
        }
        let not_json = |err: serde_json::Error| TypedConfigError::DefaultNotJson {
            type_name,
            message: redact_input(&err.to_string()),
        };
        // It parsed into `T`: it is JSON. Minified, so that it travels on one line.
        let value: serde_json::Value = serde_json::from_slice(default).map_err(not_json)?;
        let schema = serde_json::to_string(&json_schema_for::<T>()).map_err(not_json)?;
        Ok(ConfigData {
            version: version.into(),
            schema: RawValue::from_string(schema).map_err(not_json)?,
            config: RawValue::from_string(value.to_string()).map_err(not_json)?,
        })
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
///
/// Besides the config it tells what became of each config the [`TypedConfig`] was given:
/// [`ConfigHandle::last_rejection`], [`ConfigHandle::wait_outcome`]. A config the
/// application refuses leaves the handle's config as it was and keeps the client ready (as
/// in Go); the config service, however, keeps that config and sends it again at the next
/// connection, where refusing it fails the handshake: the client then backs off and retries
/// until an admin fixes the config ([`ClientState::BackingOff`](crate::ClientState) says
/// why).
pub struct ConfigHandle<T> {
    rx: watch::Receiver<Option<Arc<T>>>,
    outcomes: watch::Receiver<Outcomes<T>>,
}

impl<T> Clone for ConfigHandle<T> {
    fn clone(&self) -> Self {
        Self {
            rx: self.rx.clone(),
            outcomes: self.outcomes.clone(),
        }
    }
}

impl<T> fmt::Debug for ConfigHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcomes = self.outcomes.borrow();
        f.debug_struct("ConfigHandle")
            .field("type", &std::any::type_name::<T>())
            .field("has_config", &self.rx.borrow().is_some())
            .field("received", &outcomes.received)
            .field("last_rejection", &outcomes.rejection)
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

    /// The latest config the application refused, if any (it stays until a later one is
    /// refused: compare its `seq` with [`ConfigHandle::received`]).
    #[must_use]
    pub fn last_rejection(&self) -> Option<ConfigRejection> {
        self.outcomes.borrow().rejection.clone()
    }

    /// How many configs the [`TypedConfig`] was given so far (the number of the latest).
    #[must_use]
    pub fn received(&self) -> u64 {
        self.outcomes.borrow().received
    }

    /// Waits until config number `seq` (see [`ConfigRejection::seq`]) was decided; returns
    /// whether it was applied or rejected. No timeout of its own (wrap it in
    /// `tokio::time::timeout`).
    ///
    /// `None` if every [`TypedConfig`] it came from was dropped before that, or if the
    /// outcome is no longer kept (only the last [`OUTCOME_HISTORY`] are).
    pub async fn wait_outcome(&self, seq: u64) -> Option<ConfigOutcome<T>> {
        let mut rx = self.outcomes.clone();
        let outcomes = rx.wait_for(|o| o.decided >= seq).await.ok()?;
        outcomes
            .history
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, outcome)| outcome.clone())
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
/// The default is **not** checked against any validation: with a [`TypedConfig`] that
/// validates, use [`TypedConfig::config_data`], which refuses a default the module would
/// refuse itself.
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
        if let Some((first, last)) = hidden
            && i == first
        {
            out.push_str("`***`");
            for (j, _) in chars.by_ref() {
                if j == last {
                    break;
                }
            }
            continue;
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

    #[test]
    fn a_default_from_json_names_the_key_not_the_value() {
        let typed = TypedConfig::<Conf>::new().validate(|c: &Conf| {
            if c.name.is_empty() {
                Err("empty name")
            } else {
                Ok(())
            }
        });
        let data = typed
            .config_data_from_json(
                "1.0.0",
                b"{\n \"name\": \"a\",\n \"inner\": {\"port\": 1}, \"list\": [], \"extra\": 1}",
            )
            .unwrap();
        assert_eq!(
            data.config.get(),
            r#"{"extra":1,"inner":{"port":1},"list":[],"name":"a"}"#
        );
        let missing = typed
            .config_data_from_json("1.0.0", br#"{"name":"s3cr3t","list":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `inner`"), "{missing}");
        assert!(!missing.contains("s3cr3t"), "{missing}");
        let refused = typed
            .config_data_from_json("1.0.0", br#"{"name":"","inner":{"port":1},"list":[]}"#)
            .unwrap_err();
        assert!(
            matches!(refused, TypedConfigError::InvalidDefault { .. }),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn inspectors_see_accepted_configs_only_in_order() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (first, second) = (Arc::clone(&seen), Arc::clone(&seen));
        let typed = TypedConfig::<Conf>::new()
            .validate(|c: &Conf| {
                if c.name.is_empty() {
                    Err("empty name")
                } else {
                    Ok(())
                }
            })
            .inspect(move |c: &Conf| first.lock().unwrap().push(format!("1:{}", c.name)))
            .inspect(move |c: &Conf| second.lock().unwrap().push(format!("2:{}", c.name)));
        typed
            .accept(br#"{"name":"a","inner":{"port":1},"list":[]}"#)
            .await
            .unwrap();
        typed
            .accept(br#"{"name":"","inner":{"port":1},"list":[]}"#)
            .await
            .unwrap_err();
        assert_eq!(*seen.lock().unwrap(), ["1:a", "2:a"]);
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

    #[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
    struct Workers {
        workers: u32,
    }

    fn positive(c: &Workers) -> Result<(), &'static str> {
        if c.workers > 0 {
            Ok(())
        } else {
            Err("workers must be > 0")
        }
    }

    #[test]
    fn a_default_the_validation_refuses_is_an_error_when_the_config_data_is_built() {
        // The pairing the README had: `#[derive(Default)]` (workers: 0) and `workers > 0`.
        let typed = TypedConfig::<Workers>::new().validate(positive);
        let err = typed.config_data("1.0.0").unwrap_err();
        assert!(
            matches!(err, TypedConfigError::InvalidDefault { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("default config"), "{text}");
        assert!(text.contains("workers must be > 0"), "{text}");
        assert!(
            text.contains("every handshake"),
            "says what would happen: {text}"
        );
        // A default that passes gives the same ConfigData as `config_data_from`.
        let data = typed
            .config_data_with("1.0.0", &Workers { workers: 3 })
            .unwrap();
        assert_eq!(data.config.get(), r#"{"workers":3}"#);
        assert_eq!(
            data.schema.get(),
            config_data_for::<Workers>("1.0.0").unwrap().schema.get()
        );
        // Without validation, any default goes.
        assert!(TypedConfig::<Workers>::new().config_data("1.0.0").is_ok());
    }

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Skipped {
        #[serde(skip_serializing)]
        needed: u32,
    }

    #[test]
    fn a_default_that_does_not_parse_back_is_an_error_too() {
        let typed = TypedConfig::<Skipped>::new();
        let err = typed
            .config_data_with("1.0.0", &Skipped { needed: 1 })
            .unwrap_err();
        assert!(
            matches!(err, TypedConfigError::DefaultNotJson { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("missing field `needed`"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_are_numbered_and_awaitable() {
        let typed = TypedConfig::<Workers>::new().validate(positive);
        let handle = typed.handle();
        assert_eq!((handle.received(), handle.last_rejection()), (0, None));
        let waiting = tokio::spawn({
            let handle = handle.clone();
            async move { handle.wait_outcome(2).await }
        });
        typed.accept(br#"{"workers":2}"#).await.unwrap();
        assert!(typed.accept(br#"{"workers":0}"#).await.is_err());
        let Some(ConfigOutcome::Rejected(rejection)) = waiting.await.unwrap() else {
            panic!("config 2 was rejected");
        };
        assert_eq!(rejection.seq, 2);
        assert!(
            rejection.error.contains("workers must be > 0"),
            "{rejection}"
        );
        assert_eq!(handle.last_rejection(), Some(rejection));
        let Some(ConfigOutcome::Applied(first)) = handle.wait_outcome(1).await else {
            panic!("config 1 was applied");
        };
        assert_eq!(first.workers, 2);
        assert_eq!(
            handle.get().unwrap().workers,
            2,
            "the previous config stays"
        );
        // A parse error is a rejection too, redacted.
        assert!(typed.accept(br#"{"workers":"s3cr3t"}"#).await.is_err());
        let rejection = handle.last_rejection().unwrap();
        assert_eq!((rejection.seq, handle.received()), (3, 3));
        assert!(!rejection.error.contains("s3cr3t"), "{rejection}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_application_is_a_rejection() {
        let typed = TypedConfig::<Workers>::new()
            .on_config(|_| std::future::pending::<Result<(), BoxError>>());
        let handle = typed.handle();
        let slow = typed.accept(br#"{"workers":1}"#);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(1), slow)
                .await
                .is_err()
        );
        let Some(ConfigOutcome::Rejected(rejection)) = handle.wait_outcome(1).await else {
            panic!("a cancelled config is decided as rejected");
        };
        assert_eq!(rejection.error, "cancelled before it was decided");
        assert!(handle.get().is_none());
        // Outcomes are kept for the last OUTCOME_HISTORY configs only.
        let typed = TypedConfig::<Workers>::new();
        let handle = typed.handle();
        for _ in 0..=OUTCOME_HISTORY {
            typed.accept(br#"{"workers":1}"#).await.unwrap();
        }
        assert!(handle.wait_outcome(1).await.is_none());
        assert!(handle.wait_outcome(2).await.is_some());
        drop(typed);
        assert!(
            handle.wait_outcome(1000).await.is_none(),
            "gone with its TypedConfig"
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
