//! Configs and schemas: `MODULE:SEND_CONFIG_SCHEMA`, the admin's config updates validated
//! against the stored schema, and the error events.

use super::{
    ActiveConfig, ClusterState, ConnId, ErrorEvent, HandleError, Notification, SchemaEntry,
    StoredSchema, frame_len, registry::decode_from, shown_name,
};
use bytes::Bytes;
use cluster_proto::{event, payload};
use serde_json::Value;
use std::fmt;

#[cfg(doc)]
use super::Limits;

/// How [`ClusterState::set_config`] treats the module's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// Validate against the stored schema; a module without a schema is refused.
    Validated,
    /// Store without validation (isp-config-service's `unsafe` flag). An unknown module is
    /// created, so a test can give a module its config before it ever connects.
    Unsafe,
}

/// The result of an accepted config update.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the notifications must be delivered"]
pub struct ConfigUpdate {
    /// The version of the active config after the update.
    pub version: u64,
    /// Whether the config changed (`false` when it was equal to the active one).
    pub changed: bool,
    /// `CONFIG:SEND_CONFIG_CHANGED` to the module's config subscribers (none if unchanged).
    pub notifications: Vec<Notification>,
}

/// One reason a config does not satisfy its module's schema.
///
/// It names the place and the rule, **never the offending value**: a refused config may hold
/// secrets (a `password` of the wrong type), and the issue goes into logs, error acks and admin
/// answers. The message says what the rule asks for (`the value is not of type "integer"`,
/// `the value is shorter than 8 characters`), with the value replaced by the words "the value".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    /// Where in the config: a JSON pointer (`""` for the whole config).
    pub instance_path: String,
    /// The JSON Schema keyword that failed (`type`, `minLength`, `required`, …).
    pub rule: String,
    /// What is wrong, without the value.
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.instance_path.is_empty() {
            "(root)"
        } else {
            &self.instance_path
        };
        write!(f, "{path}: {} (rule `{}`)", self.message, self.rule)
    }
}

impl ValidationIssue {
    /// The issue of one validation error, without the value that failed.
    fn of(error: &jsonschema::ValidationError<'_>) -> Self {
        use jsonschema::error::ValidationErrorKind as Kind;
        let rule = error.kind().keyword().to_owned();
        let message = match error.kind() {
            // These print a nested error or a free text that may quote the instance: say
            // only which rule failed.
            Kind::PropertyNames { .. }
            | Kind::FromUtf8 { .. }
            | Kind::Custom { .. }
            | Kind::RegexEngineFailure { .. }
            | Kind::BacktrackLimitExceeded { .. } => {
                format!("the value does not satisfy `{rule}`")
            }
            // Every other message names the value by the placeholder only (the rest comes
            // from the schema, or lists property names, never values).
            _ => error.masked_with("the value").to_string(),
        };
        Self {
            instance_path: error.instance_path().to_string(),
            rule,
            message,
        }
    }
}

/// Why a config update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigUpdateError {
    /// The new config is not a JSON object.
    #[error("config for module {module:?} is not a JSON object: {reason}")]
    NotAnObject {
        /// The module.
        module: String,
        /// What it is instead.
        reason: String,
    },
    /// A validated update for a module that sent no schema (or is unknown).
    #[error(
        "module {module:?} has no config schema (it never sent MODULE:SEND_CONFIG_SCHEMA); \
         use an unsafe update to store a config anyway"
    )]
    NoSchema {
        /// The module.
        module: String,
    },
    /// The stored schema is not a valid JSON Schema.
    #[error("the config schema of module {module:?} is not a valid JSON Schema: {reason}")]
    InvalidSchema {
        /// The module.
        module: String,
        /// What the schema compiler said.
        reason: String,
    },
    /// The config does not satisfy the schema.
    #[error("config for module {module:?} is invalid: {}", join_issues(.issues))]
    Invalid {
        /// The module.
        module: String,
        /// Every problem found.
        issues: Vec<ValidationIssue>,
    },
    /// The module name cannot be used on the wire (see [`event::check_module_name`]).
    #[error("invalid module name {module:?}: {reason}")]
    InvalidModuleName {
        /// The module name, cut to 64 characters.
        module: String,
        /// The rule it breaks.
        reason: event::ModuleNameError,
    },
    /// `CONFIG:SEND_CONFIG_CHANGED` with this config would be larger than
    /// [`Limits::max_frame_len`]: no client could read it.
    #[error(
        "config for module {module:?} is {len} bytes: its frame would exceed the outgoing \
         frame limit of {max} bytes"
    )]
    TooLarge {
        /// The module.
        module: String,
        /// The config's size in bytes.
        len: usize,
        /// [`Limits::max_frame_len`].
        max: usize,
    },
    /// The update was made against a version that is no longer the active one.
    #[error(
        "config for module {module:?} was updated against version {expected}, \
         but the active version is {active}"
    )]
    VersionConflict {
        /// The module.
        module: String,
        /// The version the caller updated.
        expected: u64,
        /// The active version (0: the module has no config).
        active: u64,
    },
}

fn join_issues(issues: &[ValidationIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClusterState {
    /// `MODULE:SEND_CONFIG_SCHEMA`: stores the sent config as the module's active config
    /// (version 1) if it has none yet, subscribes the connection to config changes, stores the
    /// schema and module version. Returns `CONFIG:SEND_CONFIG_WHEN_CONNECTED` for the
    /// connection (to be sent before the ack).
    ///
    /// The default config is stored byte for byte and is **not** validated against the schema
    /// (the real service does not validate it either).
    ///
    /// # Errors
    /// [`HandleError`] for a payload that is not a `ConfigData`, a config whose
    /// `CONFIG:SEND_CONFIG_WHEN_CONNECTED` would be over [`Limits::max_frame_len`], or an
    /// unknown connection; nothing changes then.
    pub fn config_schema(
        &mut self,
        conn: ConnId,
        data: &[u8],
    ) -> Result<Vec<Notification>, HandleError> {
        let (config_data, entry) =
            decode_from(&mut self.conns, conn, data, payload::decode_config_data)?;
        let config_len = self
            .modules
            .get(&entry.module)
            .and_then(|m| m.config.as_ref())
            .map_or(config_data.config.get().len(), |c| c.data.len());
        let len = frame_len(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, config_len);
        if len > self.limits.max_frame_len {
            return Err(HandleError::FrameTooLarge {
                what: "config",
                len,
                max: self.limits.max_frame_len,
            });
        }
        entry.config_subscribed = true;
        let module = self.modules.entry(entry.module.clone()).or_default();
        let config = module
            .config
            .get_or_insert_with(|| ActiveConfig {
                data: Bytes::copy_from_slice(config_data.config.get().as_bytes()),
                version: 1,
            })
            .data
            .clone();
        module.config_subscribers.insert(conn);
        let schema = config_data.schema.get().as_bytes();
        let same_schema = module
            .schema
            .as_ref()
            .is_some_and(|s| s.stored.schema == schema);
        if same_schema {
            if let Some(s) = module.schema.as_mut() {
                s.stored.module_version = config_data.version;
            }
        } else {
            module.schema = Some(SchemaEntry {
                validator: compile_schema(config_data.schema.get()),
                stored: StoredSchema {
                    schema: Bytes::copy_from_slice(schema),
                    module_version: config_data.version,
                },
            });
        }
        Ok(vec![Notification::new(
            event::CONFIG_SEND_CONFIG_WHEN_CONNECTED,
            config,
            vec![conn],
        )])
    }

    // ----- inputs: admin operations -----

    /// Makes `config` the module's active config, as an admin would.
    ///
    /// In the order the real service checks: `config` must be a JSON object; unless `mode` is
    /// [`UpdateMode::Unsafe`], it must satisfy the module's schema (validated per the schema's
    /// `$schema`, draft-07 when it names none or one we do not know — isp-config-service
    /// validates draft-07); a config equal to the active one (as JSON values: key order and
    /// spacing do not matter) changes nothing; if `expected_version` is given it must be the
    /// active version (optimistic locking: 0 stands for "no config yet"). The new config gets
    /// the next version and is sent byte for byte as given to every config subscriber.
    ///
    /// Before all that, the module name must pass [`event::check_module_name`], and the
    /// config must fit a frame of [`Limits::max_frame_len`] bytes.
    ///
    /// A refusal names the place in the config and the rule it breaks, never the value (see
    /// [`ValidationIssue`]).
    ///
    /// # Errors
    /// A [`ConfigUpdateError`]; nothing changes then.
    pub fn set_config(
        &mut self,
        module: &str,
        config: Bytes,
        expected_version: Option<u64>,
        mode: UpdateMode,
    ) -> Result<ConfigUpdate, ConfigUpdateError> {
        event::check_module_name(module).map_err(|reason| {
            ConfigUpdateError::InvalidModuleName {
                module: shown_name(module),
                reason,
            }
        })?;
        // A module's later instances get it as `CONFIG:SEND_CONFIG_WHEN_CONNECTED`, the
        // longer of the two config events.
        if frame_len(event::CONFIG_SEND_CONFIG_WHEN_CONNECTED, config.len())
            > self.limits.max_frame_len
        {
            return Err(ConfigUpdateError::TooLarge {
                module: module.to_owned(),
                len: config.len(),
                max: self.limits.max_frame_len,
            });
        }
        let value: Value =
            serde_json::from_slice(&config).map_err(|e| ConfigUpdateError::NotAnObject {
                module: module.to_owned(),
                reason: e.to_string(),
            })?;
        if !value.is_object() {
            return Err(ConfigUpdateError::NotAnObject {
                module: module.to_owned(),
                reason: format!("it is {}", json_kind(&value)),
            });
        }
        if mode == UpdateMode::Validated {
            let schema = self
                .modules
                .get(module)
                .and_then(|m| m.schema.as_ref())
                .ok_or_else(|| ConfigUpdateError::NoSchema {
                    module: module.to_owned(),
                })?;
            let validator =
                schema
                    .validator
                    .as_ref()
                    .map_err(|reason| ConfigUpdateError::InvalidSchema {
                        module: module.to_owned(),
                        reason: reason.clone(),
                    })?;
            let issues: Vec<ValidationIssue> = validator
                .iter_errors(&value)
                .map(|e| ValidationIssue::of(&e))
                .collect();
            if !issues.is_empty() {
                return Err(ConfigUpdateError::Invalid {
                    module: module.to_owned(),
                    issues,
                });
            }
        }
        let entry = self.modules.entry(module.to_owned()).or_default();
        if let Some(active) = &entry.config
            && serde_json::from_slice::<Value>(&active.data).is_ok_and(|old| old == value)
        {
            return Ok(ConfigUpdate {
                version: active.version,
                changed: false,
                notifications: Vec::new(),
            });
        }
        let active_version = entry.config.as_ref().map_or(0, |c| c.version);
        if let Some(expected) = expected_version
            && expected != active_version
        {
            return Err(ConfigUpdateError::VersionConflict {
                module: module.to_owned(),
                expected,
                active: active_version,
            });
        }
        let version = active_version + 1;
        entry.config = Some(ActiveConfig {
            data: config.clone(),
            version,
        });
        let recipients: Vec<ConnId> = entry.config_subscribers.iter().copied().collect();
        let notifications = if recipients.is_empty() {
            Vec::new()
        } else {
            vec![Notification::new(
                event::CONFIG_SEND_CONFIG_CHANGED,
                config,
                recipients,
            )]
        };
        Ok(ConfigUpdate {
            version,
            changed: true,
            notifications,
        })
    }

    /// `ERROR_CONFIG` or `ERROR_CONNECTION` with `text` to every open connection of `module`
    /// (`None` when it has none).
    #[must_use]
    pub fn error_event(&self, module: &str, kind: ErrorEvent, text: &str) -> Option<Notification> {
        let recipients: Vec<ConnId> = self
            .modules
            .get(module)?
            .connections
            .iter()
            .copied()
            .collect();
        (!recipients.is_empty()).then(|| {
            Notification::new(
                kind.name(),
                Bytes::copy_from_slice(text.as_bytes()),
                recipients,
            )
        })
    }
}

/// Compiles a schema: the draft its `$schema` names, draft-07 when it names none or an
/// unknown one. No remote `$ref` is fetched (jsonschema is built without its resolvers).
fn compile_schema(raw: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let draft = match jsonschema::Draft::Draft7.detect(&schema) {
        jsonschema::Draft::Unknown => jsonschema::Draft::Draft7,
        known => known,
    };
    jsonschema::options()
        .with_draft(draft)
        .build(&schema)
        .map_err(|e| e.to_string())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::{SCHEMA, set, single};
    use UpdateMode::{Unsafe, Validated};

    #[test]
    fn schema_stores_initial_config_once_and_answers_with_active_config() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p1");
        let n = single(s.config_schema(ConnId(1), SCHEMA.as_bytes()).unwrap());
        assert_eq!(n.event, event::CONFIG_SEND_CONFIG_WHEN_CONNECTED);
        assert_eq!(&n.payload[..], b"{}");
        assert_eq!(n.recipients, vec![ConnId(1)]);
        assert_eq!(s.active_config("A").unwrap().version, 1);
        let schema = s.schema("A").unwrap();
        assert_eq!(schema.module_version, "1.0.0");
        assert!(schema.schema.starts_with(br#"{"$schema""#));

        // A second instance with another default config gets the stored one.
        s.connect(ConnId(2), "A", "p2");
        let other = r#"{"version":"1.1.0","schema":{},"config":{"x":1}}"#;
        let n = single(s.config_schema(ConnId(2), other.as_bytes()).unwrap());
        assert_eq!(&n.payload[..], b"{}");
        assert_eq!(s.schema("A").unwrap().module_version, "1.1.0");
        assert_eq!(&s.schema("A").unwrap().schema[..], b"{}");
        assert!(s.connection(ConnId(2)).unwrap().config_subscribed);
    }

    #[test]
    fn default_config_is_kept_byte_for_byte() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "B", "p");
        let data = r#"{"version":"1","schema":{},"config":{ "b" :2, "a":1 }}"#;
        let n = single(s.config_schema(ConnId(1), data.as_bytes()).unwrap());
        assert_eq!(&n.payload[..], br#"{ "b" :2, "a":1 }"#);
    }

    fn state_with_schema() -> ClusterState {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        s.config_schema(ConnId(1), SCHEMA.as_bytes()).unwrap();
        s.connect(ConnId(2), "A", "p");
        s.config_schema(ConnId(2), SCHEMA.as_bytes()).unwrap();
        s
    }

    #[test]
    fn config_update_bumps_version_and_notifies_subscribers() {
        let mut s = state_with_schema();
        let new = Bytes::from_static(br#"{"someString":"v"}"#);
        let u = s
            .set_config("A", new.clone(), Some(1), UpdateMode::Validated)
            .unwrap();
        assert!(u.changed);
        assert_eq!(u.version, 2);
        let n = single(u.notifications);
        assert_eq!(n.event, event::CONFIG_SEND_CONFIG_CHANGED);
        assert_eq!(n.payload, new);
        assert_eq!(n.recipients, [ConnId(1), ConnId(2)]);
        assert_eq!(s.active_config("A").unwrap().version, 2);
    }

    #[test]
    fn equal_config_changes_nothing_even_with_other_spacing() {
        let mut s = state_with_schema();
        let first = set(&mut s, Validated, "A", br#"{"a":1,"b":2}"#, None).unwrap();
        assert_eq!(first.version, 2);
        let u = set(&mut s, Validated, "A", br#"{ "b": 2, "a": 1 }"#, Some(1)).unwrap();
        assert!(!u.changed);
        assert_eq!(u.version, 2);
        assert!(u.notifications.is_empty());
        assert_eq!(&s.active_config("A").unwrap().data[..], br#"{"a":1,"b":2}"#);
    }

    #[test]
    fn stale_version_is_refused() {
        let mut s = state_with_schema();
        let first = set(&mut s, Validated, "A", br#"{"a":1}"#, Some(1)).unwrap();
        assert_eq!(first.version, 2);
        let err = set(&mut s, Validated, "A", br#"{"a":2}"#, Some(1)).unwrap_err();
        assert_eq!(
            err,
            ConfigUpdateError::VersionConflict {
                module: "A".into(),
                expected: 1,
                active: 2
            }
        );
        assert_eq!(&s.active_config("A").unwrap().data[..], br#"{"a":1}"#);
    }

    #[test]
    fn invalid_config_lists_every_issue() {
        let mut s = state_with_schema();
        let err = set(&mut s, Validated, "A", br#"{"someString":5}"#, None).unwrap_err();
        let ConfigUpdateError::Invalid { issues, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].instance_path, "/someString");
        assert!(
            issues[0].message.contains("string"),
            "{}",
            issues[0].message
        );
        assert!(err.to_string().contains("/someString: "), "{err}");
        assert_eq!(s.active_config("A").unwrap().version, 1);

        // Unsafe stores it anyway.
        let u = set(&mut s, Unsafe, "A", br#"{"someString":5}"#, None).unwrap();
        assert_eq!(u.version, 2);
    }

    #[test]
    fn schema_without_dollar_schema_is_draft7() {
        let mut s = ClusterState::new();
        s.connect(ConnId(1), "A", "p");
        // `dependencies` is a draft-07 keyword (gone in 2020-12).
        let data =
            r#"{"version":"1","schema":{"type":"object","dependencies":{"a":["b"]}},"config":{}}"#;
        s.config_schema(ConnId(1), data.as_bytes()).unwrap();
        let err = set(&mut s, Validated, "A", br#"{"a":1}"#, None).unwrap_err();
        assert!(matches!(err, ConfigUpdateError::Invalid { .. }), "{err:?}");
        let ok = set(&mut s, Validated, "A", br#"{"a":1,"b":2}"#, None).unwrap();
        assert!(ok.changed);
    }

    #[test]
    fn no_schema_invalid_schema_and_non_objects_are_refused() {
        let mut s = ClusterState::new();
        let cfg = Bytes::from_static(b"{}");
        assert!(matches!(
            s.set_config("X", cfg.clone(), None, UpdateMode::Validated),
            Err(ConfigUpdateError::NoSchema { .. })
        ));
        assert!(s.module("X").is_none());
        assert!(matches!(
            set(&mut s, Unsafe, "X", b"[1]", None),
            Err(ConfigUpdateError::NotAnObject { .. })
        ));
        assert!(matches!(
            set(&mut s, Unsafe, "X", b"{", None),
            Err(ConfigUpdateError::NotAnObject { .. })
        ));
        // Unsafe pre-seeds an unknown module; its first instance gets this config.
        let u = set(&mut s, Unsafe, "X", br#"{"seed":1}"#, Some(0)).unwrap();
        assert_eq!(u.version, 1);
        s.connect(ConnId(1), "X", "p");
        let data = r#"{"version":"1","schema":{"type":"object","minProperties":"x"},"config":{}}"#;
        let n = single(s.config_schema(ConnId(1), data.as_bytes()).unwrap());
        assert_eq!(&n.payload[..], br#"{"seed":1}"#);
        assert!(matches!(
            s.set_config("X", cfg, None, UpdateMode::Validated),
            Err(ConfigUpdateError::InvalidSchema { .. })
        ));
    }

    #[test]
    fn error_events_go_to_every_open_connection_of_the_module() {
        let mut s = ClusterState::new();
        assert!(s.error_event("A", ErrorEvent::Config, "x").is_none());
        s.connect(ConnId(1), "A", "p");
        s.connect(ConnId(2), "A", "p");
        s.connect(ConnId(3), "B", "p");
        let n = s.error_event("A", ErrorEvent::Connection, "bad").unwrap();
        assert_eq!(n.event, event::ERROR_CONNECTION);
        assert_eq!(&n.payload[..], b"bad");
        assert_eq!(n.recipients, [ConnId(1), ConnId(2)]);
        s.disconnect(ConnId(1));
        s.disconnect(ConnId(2));
        assert!(s.error_event("A", ErrorEvent::Config, "x").is_none());
        assert_eq!(s.connection_ids(), [ConnId(3)]);
    }
}
