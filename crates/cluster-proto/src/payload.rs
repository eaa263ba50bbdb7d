//! The JSON payloads of the cluster protocol (docs/protocol.md §4), encoded exactly as isp-kit does.
//!
//! # Encoding
//! isp-kit names a JSON field after its Go field with the first letter lower-cased
//! (`ModuleName` → `moduleName`), keeps the Go field order, and sends `null` for a nil slice,
//! map or pointer. The types here serialise the same bytes: the golden tests
//! (`tests/it/golden.rs`) compare them with frames captured from the real Go peers.
//!
//! Specific choices, each the one the Go client of the reference version makes:
//! - [`BackendDeclaration::endpoints`] is sent as `null` when empty,
//!   [`BackendDeclaration::required_modules`] and [`ModuleRequirements::required_modules`]
//!   as `[]` (never `null`);
//! - [`EndpointDescriptor::extra`] is an `Option`: `None` is sent as `null`, `Some` of an
//!   empty map as `{}`;
//! - [`MetricsAutodiscovery::labels`] is sent as `null` when empty (a Go zero value);
//! - the newer fields `transport`, `httpMethod` and `metricsAutodiscovery` are **omitted**
//!   when unset, so older servers see exactly what the reference client sends. When set, they
//!   sit where the newest isp-kit Go structs put them: `transport` after `libVersion`,
//!   `httpMethod` before `extra`, `metricsAutodiscovery` last. (docs/protocol.md §4 lists
//!   `transport` and `httpMethod` later; JSON field order carries no meaning for the Go
//!   decoder, and we follow the Go structs.)
//!
//! # Decoding
//! Field names are accepted in lowerCamel and PascalCase (the Go decoder matches names
//! case-insensitively; other spellings such as `MODULENAME` are not accepted here). Unknown
//! fields are ignored and `null` decodes as the empty value of the field, as in Go. A field
//! that appears twice under two spellings is an error here (Go keeps the last one). Like any
//! serde-derived struct, an object payload is also accepted as a JSON array of its fields in
//! declaration order, which Go refuses; no Go peer sends that.
//! The raw JSON of [`ConfigData::schema`] and [`ConfigData::config`] is kept byte for byte.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The key of [`EndpointDescriptor::extra`] that holds the admin permission an endpoint
/// requires (Go: `cluster.RequiredAdminPermission`).
pub const REQUIRED_ADMIN_PERMISSION: &str = "reqAdminPerm";

/// [`BackendDeclaration::transport`] of a gRPC module. A server treats an empty transport as
/// gRPC, and fills an empty [`EndpointDescriptor::http_method`] of a gRPC module with `POST`.
pub const GRPC_TRANSPORT: &str = "grpc";
/// [`BackendDeclaration::transport`] of an HTTP module.
pub const HTTP_TRANSPORT: &str = "http";
/// [`BackendDeclaration::transport`] of a module that serves no endpoints.
pub const EMPTY_TRANSPORT: &str = "empty";

/// The routing table the server sends: the declarations of every ready instance.
pub type RoutingConfig = Vec<BackendDeclaration>;

/// The network address of a module instance. `port` is a **string** on the wire (`"9999"`).
///
/// Displayed as `ip:port` (`[ip]:port` when the ip contains a `:`), as Go's
/// `net.JoinHostPort`, which is how the Go client turns addresses into hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressConfiguration {
    /// The IP address (or host name).
    #[serde(
        alias = "IP",
        alias = "Ip",
        default,
        deserialize_with = "null_as_default"
    )]
    pub ip: String,
    /// The port, as a decimal string.
    #[serde(alias = "Port", default, deserialize_with = "null_as_default")]
    pub port: String,
}

impl AddressConfiguration {
    /// Builds an address from its parts.
    #[must_use]
    pub fn new(ip: impl Into<String>, port: impl Into<String>) -> Self {
        Self {
            ip: ip.into(),
            port: port.into(),
        }
    }
}

impl fmt::Display for AddressConfiguration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ip.contains(':') {
            write!(f, "[{}]:{}", self.ip, self.port)
        } else {
            write!(f, "{}:{}", self.ip, self.port)
        }
    }
}

/// `MODULE:SEND_CONFIG_SCHEMA`: the module's version, the JSON schema of its remote config and
/// its default remote config.
///
/// `schema` and `config` are raw JSON, sent and received byte for byte (no re-formatting, no
/// key reordering). A missing or `null` field decodes as the raw JSON `null`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigData {
    /// The module version.
    #[serde(alias = "Version", default, deserialize_with = "null_as_default")]
    pub version: String,
    /// The JSON Schema document describing the remote config.
    #[serde(alias = "Schema", default = "raw_null")]
    pub schema: Box<RawValue>,
    /// The module's default remote config: the server stores it as the initial config the
    /// first time the module ever connects.
    #[serde(alias = "Config", default = "raw_null")]
    pub config: Box<RawValue>,
}

impl ConfigData {
    /// Builds the payload from raw JSON texts.
    ///
    /// # Errors
    /// A [`PayloadError`] of kind [`PayloadKind::ConfigData`] when `schema` or `config` is not
    /// one valid JSON value.
    ///
    /// # Examples
    /// ```
    /// let data = cluster_proto::payload::ConfigData::from_json("1.0.0", r#"{"type":"object"}"#, "{}").unwrap();
    /// assert_eq!(data.to_json(), br#"{"version":"1.0.0","schema":{"type":"object"},"config":{}}"#);
    /// ```
    pub fn from_json(
        version: impl Into<String>,
        schema: impl Into<String>,
        config: impl Into<String>,
    ) -> Result<Self, PayloadError> {
        let raw = |text: String| {
            RawValue::from_string(text).map_err(|source| PayloadError {
                kind: PayloadKind::ConfigData,
                source,
            })
        };
        Ok(Self {
            version: version.into(),
            schema: raw(schema.into())?,
            config: raw(config.into())?,
        })
    }

    /// The payload as JSON bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_json_infallible(self)
    }
}

impl PartialEq for ConfigData {
    /// Compares the raw JSON texts: two configs that differ only in spacing are different.
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.schema.get() == other.schema.get()
            && self.config.get() == other.config.get()
    }
}

impl Eq for ConfigData {}

/// `MODULE:SEND_REQUIREMENTS`: the modules this one needs the addresses of, and whether it
/// wants the routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRequirements {
    /// The names of the required modules: the server sends `<m>_MODULE_CONNECTED` for each.
    /// Sent as `[]` when empty.
    #[serde(
        alias = "RequiredModules",
        default,
        deserialize_with = "null_as_default"
    )]
    pub required_modules: Vec<String>,
    /// Whether the server should send the routing table.
    #[serde(alias = "RequireRoutes", default, deserialize_with = "null_as_default")]
    pub require_routes: bool,
}

impl ModuleRequirements {
    /// The payload as JSON bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_json_infallible(self)
    }
}

/// One module a declaration depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModuleDependency {
    /// The module name.
    #[serde(alias = "Name", default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Whether the module cannot work without it (the Go client always sends `true`).
    #[serde(alias = "Required", default, deserialize_with = "null_as_default")]
    pub required: bool,
}

/// One endpoint a module serves. (The Go `Handler` field never travels.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointDescriptor {
    /// The endpoint path, e.g. `a/api/one`.
    #[serde(alias = "Path", default, deserialize_with = "null_as_default")]
    pub path: String,
    /// Whether the endpoint is internal (not exposed through the gateway).
    #[serde(alias = "Inner", default, deserialize_with = "null_as_default")]
    pub inner: bool,
    /// Whether the caller must be an authenticated user.
    #[serde(
        alias = "UserAuthRequired",
        default,
        deserialize_with = "null_as_default"
    )]
    pub user_auth_required: bool,
    /// The HTTP method (newer field): omitted from the JSON when empty. A server fills an
    /// empty method of a gRPC module with `POST`.
    #[serde(
        alias = "HttpMethod",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub http_method: String,
    /// Free-form metadata; `None` is sent as `null`. See [`REQUIRED_ADMIN_PERMISSION`].
    #[serde(alias = "Extra", default)]
    pub extra: Option<Map<String, Value>>,
}

impl EndpointDescriptor {
    /// An endpoint at `path`: not inner, no user auth, no method, no extra.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Sets the HTTP method.
    #[must_use]
    pub fn with_http_method(mut self, method: impl Into<String>) -> Self {
        self.http_method = method.into();
        self
    }

    /// Marks the endpoint as needing the admin permission `perm`
    /// (`extra["reqAdminPerm"] = perm`), keeping the other extra keys.
    ///
    /// # Examples
    /// ```
    /// use cluster_proto::payload::EndpointDescriptor;
    /// let e = EndpointDescriptor::new("admin/api/x").with_admin_permission("admin:write");
    /// assert_eq!(e.admin_permission(), Some("admin:write"));
    /// ```
    #[must_use]
    pub fn with_admin_permission(mut self, perm: impl Into<String>) -> Self {
        self.extra.get_or_insert_with(Map::new).insert(
            REQUIRED_ADMIN_PERMISSION.to_owned(),
            Value::String(perm.into()),
        );
        self
    }

    /// The admin permission the endpoint requires: `extra["reqAdminPerm"]` when it is a string.
    #[must_use]
    pub fn admin_permission(&self) -> Option<&str> {
        self.extra
            .as_ref()?
            .get(REQUIRED_ADMIN_PERMISSION)?
            .as_str()
    }
}

/// Where a monitoring system finds the module's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsAutodiscovery {
    /// The metrics endpoint address.
    #[serde(alias = "Address", default, deserialize_with = "null_as_default")]
    pub address: String,
    /// Labels to attach to the scraped metrics; sent as `null` when empty, keys in sorted order
    /// (as Go encodes a map).
    #[serde(
        alias = "Labels",
        default,
        deserialize_with = "null_as_default",
        serialize_with = "empty_map_as_null"
    )]
    pub labels: BTreeMap<String, String>,
}

/// `MODULE:READY`, and one entry of a [`RoutingConfig`]: a ready instance of a module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendDeclaration {
    /// The module name.
    #[serde(alias = "ModuleName", default, deserialize_with = "null_as_default")]
    pub module_name: String,
    /// The module version.
    #[serde(alias = "Version", default, deserialize_with = "null_as_default")]
    pub version: String,
    /// The version of the cluster library the module uses.
    #[serde(alias = "LibVersion", default, deserialize_with = "null_as_default")]
    pub lib_version: String,
    /// `grpc`, `http` or `empty` (newer field): omitted from the JSON when empty; a server
    /// treats an empty transport as `grpc`. See [`GRPC_TRANSPORT`].
    #[serde(
        alias = "Transport",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub transport: String,
    /// The endpoints the instance serves; sent as `null` when empty.
    #[serde(
        alias = "Endpoints",
        default,
        deserialize_with = "null_as_default",
        serialize_with = "empty_slice_as_null"
    )]
    pub endpoints: Vec<EndpointDescriptor>,
    /// The modules the instance depends on; sent as `[]` when empty.
    #[serde(
        alias = "RequiredModules",
        default,
        deserialize_with = "null_as_default"
    )]
    pub required_modules: Vec<ModuleDependency>,
    /// The instance's outer address.
    #[serde(alias = "Address", default, deserialize_with = "null_as_default")]
    pub address: AddressConfiguration,
    /// Metrics autodiscovery (newer field): omitted from the JSON when `None`.
    #[serde(
        alias = "MetricsAutodiscovery",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics_autodiscovery: Option<MetricsAutodiscovery>,
}

impl BackendDeclaration {
    /// The payload as JSON bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        to_json_infallible(self)
    }
}

/// What a module tells the cluster about itself (Go: `cluster.ModuleInfo`).
///
/// The client turns it into the [`BackendDeclaration`] of `MODULE:READY` with
/// [`ModuleInfo::backend_declaration`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The module name: also the `module_name` query parameter of the connection.
    pub module_name: String,
    /// The module version.
    pub module_version: String,
    /// The version of the cluster library (the Go client sends its isp-kit version).
    pub lib_version: String,
    /// `grpc`, `http`, `empty`, or empty for "not said" (sent only when non-empty).
    pub transport: String,
    /// The address other modules reach this instance at.
    pub grpc_outer_address: AddressConfiguration,
    /// The endpoints the module serves.
    pub endpoints: Vec<EndpointDescriptor>,
    /// Metrics autodiscovery, sent only when `Some`.
    pub metrics_autodiscovery: Option<MetricsAutodiscovery>,
}

impl ModuleInfo {
    /// The `MODULE:READY` declaration, as the Go client builds it: the module's name, version,
    /// lib version, transport, endpoints, outer address and metrics autodiscovery, and every
    /// required module as `{name, required: true}` in the given order.
    ///
    /// # Examples
    /// ```
    /// use cluster_proto::payload::{AddressConfiguration, ModuleInfo};
    /// let info = ModuleInfo {
    ///     module_name: "B".into(),
    ///     module_version: "1.0.0".into(),
    ///     lib_version: "1.0.0".into(),
    ///     grpc_outer_address: AddressConfiguration::new("127.0.0.1", "8000"),
    ///     ..ModuleInfo::default()
    /// };
    /// let ready = info.backend_declaration(["A", "C"]);
    /// assert_eq!(
    ///     ready.to_json(),
    ///     br#"{"moduleName":"B","version":"1.0.0","libVersion":"1.0.0","endpoints":null,"requiredModules":[{"name":"A","required":true},{"name":"C","required":true}],"address":{"ip":"127.0.0.1","port":"8000"}}"#
    /// );
    /// ```
    #[must_use]
    pub fn backend_declaration<I>(&self, required_modules: I) -> BackendDeclaration
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        BackendDeclaration {
            module_name: self.module_name.clone(),
            version: self.module_version.clone(),
            lib_version: self.lib_version.clone(),
            transport: self.transport.clone(),
            endpoints: self.endpoints.clone(),
            required_modules: required_modules
                .into_iter()
                .map(|name| ModuleDependency {
                    name: name.as_ref().to_owned(),
                    required: true,
                })
                .collect(),
            address: self.grpc_outer_address.clone(),
            metrics_autodiscovery: self.metrics_autodiscovery.clone(),
        }
    }
}

/// Which payload failed to decode (or to build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadKind {
    /// A [`ConfigData`] (`MODULE:SEND_CONFIG_SCHEMA`).
    ConfigData,
    /// A [`ModuleRequirements`] (`MODULE:SEND_REQUIREMENTS`).
    ModuleRequirements,
    /// A [`BackendDeclaration`] (`MODULE:READY`).
    BackendDeclaration,
    /// A [`RoutingConfig`] (`CONFIG:SEND_ROUTES_*`).
    RoutingConfig,
    /// A list of [`AddressConfiguration`] (`<module>_MODULE_CONNECTED`).
    AddressList,
}

impl fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConfigData => "ConfigData",
            Self::ModuleRequirements => "ModuleRequirements",
            Self::BackendDeclaration => "BackendDeclaration",
            Self::RoutingConfig => "RoutingConfig",
            Self::AddressList => "address list",
        })
    }
}

/// A payload that is not the JSON it should be: which payload, and serde_json's reason
/// (with line and column). A peer's fault: the caller logs it and carries on.
#[derive(Debug, thiserror::Error)]
#[error("malformed {kind} payload: {source}")]
pub struct PayloadError {
    kind: PayloadKind,
    #[source]
    source: serde_json::Error,
}

impl PayloadError {
    /// Which payload failed.
    #[must_use]
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    /// The JSON error.
    #[must_use]
    pub fn json_error(&self) -> &serde_json::Error {
        &self.source
    }
}

fn decode<'a, T: Deserialize<'a>>(kind: PayloadKind, data: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(data).map_err(|source| PayloadError { kind, source })
}

/// Decodes a `CONFIG:SEND_ROUTES_*` payload; `null` decodes as an empty table.
///
/// # Errors
/// A [`PayloadError`] of kind [`PayloadKind::RoutingConfig`] when `data` is not a JSON array
/// of declarations (or `null`).
pub fn decode_routing_config(data: &[u8]) -> Result<RoutingConfig, PayloadError> {
    decode::<Option<RoutingConfig>>(PayloadKind::RoutingConfig, data).map(Option::unwrap_or_default)
}

/// Decodes a `<module>_MODULE_CONNECTED` payload; `null` decodes as an empty list.
///
/// # Errors
/// A [`PayloadError`] of kind [`PayloadKind::AddressList`] when `data` is not a JSON array of
/// addresses (or `null`).
///
/// # Examples
/// ```
/// let hosts = cluster_proto::payload::decode_addresses(br#"[{"ip":"127.0.0.1","port":"9999"}]"#).unwrap();
/// assert_eq!(hosts[0].to_string(), "127.0.0.1:9999");
/// ```
pub fn decode_addresses(data: &[u8]) -> Result<Vec<AddressConfiguration>, PayloadError> {
    decode::<Option<Vec<AddressConfiguration>>>(PayloadKind::AddressList, data)
        .map(Option::unwrap_or_default)
}

/// Decodes a `MODULE:SEND_CONFIG_SCHEMA` payload (server side).
///
/// # Errors
/// A [`PayloadError`] of kind [`PayloadKind::ConfigData`] when `data` is not a JSON object of
/// that shape.
pub fn decode_config_data(data: &[u8]) -> Result<ConfigData, PayloadError> {
    decode(PayloadKind::ConfigData, data)
}

/// Decodes a `MODULE:SEND_REQUIREMENTS` payload (server side).
///
/// # Errors
/// A [`PayloadError`] of kind [`PayloadKind::ModuleRequirements`] when `data` is not a JSON
/// object of that shape.
pub fn decode_module_requirements(data: &[u8]) -> Result<ModuleRequirements, PayloadError> {
    decode(PayloadKind::ModuleRequirements, data)
}

/// Decodes a `MODULE:READY` payload (server side).
///
/// # Errors
/// A [`PayloadError`] of kind [`PayloadKind::BackendDeclaration`] when `data` is not a JSON
/// object of that shape.
pub fn decode_backend_declaration(data: &[u8]) -> Result<BackendDeclaration, PayloadError> {
    decode(PayloadKind::BackendDeclaration, data)
}

/// Encodes a routing table as the server sends it (`[]` when empty).
#[must_use]
pub fn encode_routing_config(routes: &[BackendDeclaration]) -> Vec<u8> {
    to_json_infallible(routes)
}

/// Encodes an address list as the server sends it in `<module>_MODULE_CONNECTED` (`[]` when
/// empty).
#[must_use]
pub fn encode_addresses(addresses: &[AddressConfiguration]) -> Vec<u8> {
    to_json_infallible(addresses)
}

/// Serialises a payload type of this module. These types hold only strings, bools, string-keyed
/// maps and already-valid raw JSON, for which serde_json cannot fail; an empty vector would
/// mean a serde_json bug.
fn to_json_infallible<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes `null` (and, with `#[serde(default)]`, a missing field) as the empty value, as Go
/// does when it unmarshals `null` into a string, bool, slice, map or struct.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn empty_slice_as_null<S, T>(items: &[T], serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Serialize,
{
    if items.is_empty() {
        serializer.serialize_none()
    } else {
        items.serialize(serializer)
    }
}

fn empty_map_as_null<S>(map: &BTreeMap<String, String>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
{
    if map.is_empty() {
        serializer.serialize_none()
    } else {
        map.serialize(serializer)
    }
}

fn raw_null() -> Box<RawValue> {
    // `RawValue::NULL` is the constant `null`.
    RawValue::NULL.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_displays_like_join_host_port() {
        assert_eq!(
            AddressConfiguration::new("10.0.0.1", "80").to_string(),
            "10.0.0.1:80"
        );
        assert_eq!(
            AddressConfiguration::new("::1", "80").to_string(),
            "[::1]:80"
        );
    }

    #[test]
    fn config_data_defaults_missing_raw_fields_to_null() {
        let data = decode_config_data(b"{}").unwrap();
        assert_eq!(data.schema.get(), "null");
        assert_eq!(data.config.get(), "null");
        assert_eq!(
            data.to_json(),
            br#"{"version":"","schema":null,"config":null}"#
        );
    }

    #[test]
    fn config_data_from_json_rejects_invalid_json() {
        let err = ConfigData::from_json("1", "{", "{}").unwrap_err();
        assert_eq!(err.kind(), PayloadKind::ConfigData);
        assert!(ConfigData::from_json("1", "{}", "{} {}").is_err());
    }

    #[test]
    fn admin_permission_ignores_non_strings_and_keeps_other_keys() {
        let mut e = EndpointDescriptor::new("p");
        assert_eq!(e.admin_permission(), None);
        e.extra = Some(Map::from_iter([
            ("other".to_owned(), Value::from(1)),
            (REQUIRED_ADMIN_PERMISSION.to_owned(), Value::from(5)),
        ]));
        assert_eq!(e.admin_permission(), None);
        let e = e.with_admin_permission("perm");
        assert_eq!(e.admin_permission(), Some("perm"));
        assert_eq!(e.extra.as_ref().unwrap()["other"], Value::from(1));
    }

    #[test]
    fn errors_name_the_payload() {
        let err = decode_routing_config(b"{").unwrap_err();
        assert_eq!(err.kind(), PayloadKind::RoutingConfig);
        assert!(
            err.to_string()
                .starts_with("malformed RoutingConfig payload: ")
        );
        let err = decode_addresses(br#"[{"ip":1}]"#).unwrap_err();
        assert_eq!(err.kind(), PayloadKind::AddressList);
        assert!(err.json_error().is_data());
    }

    #[test]
    fn documented_decoding_quirks() {
        // Two spellings of one field: an error here (Go keeps the last).
        assert!(decode_backend_declaration(br#"{"moduleName":"a","ModuleName":"b"}"#).is_err());
        // A struct given as an array of its fields in order: accepted (serde), refused by Go.
        let a = decode_addresses(br#"[["127.0.0.1","80"]]"#).unwrap();
        assert_eq!(a, [AddressConfiguration::new("127.0.0.1", "80")]);
        // Raw JSON is compared as text.
        let spaced = ConfigData::from_json("1", "{ }", "{}").unwrap();
        assert_ne!(spaced, ConfigData::from_json("1", "{}", "{}").unwrap());
        assert_eq!(
            spaced.to_json(),
            br#"{"version":"1","schema":{ },"config":{}}"#
        );
    }

    #[test]
    fn top_level_null_lists_are_empty() {
        assert!(decode_routing_config(b"null").unwrap().is_empty());
        assert!(decode_addresses(b" null ").unwrap().is_empty());
        assert_eq!(encode_addresses(&[]), b"[]");
        assert_eq!(encode_routing_config(&[]), b"[]");
    }
}
