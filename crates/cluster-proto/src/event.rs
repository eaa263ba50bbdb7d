//! Event names, exactly as the Go peers spell them (PROTOCOL.md §3).

/// Client → server: the module's config schema and default config ([`crate::payload::ConfigData`]).
pub const MODULE_SEND_CONFIG_SCHEMA: &str = "MODULE:SEND_CONFIG_SCHEMA";
/// Client → server: the modules this one requires and whether it wants routes
/// ([`crate::payload::ModuleRequirements`]).
pub const MODULE_SEND_REQUIREMENTS: &str = "MODULE:SEND_REQUIREMENTS";
/// Client → server: the module is ready ([`crate::payload::BackendDeclaration`]).
pub const MODULE_READY: &str = "MODULE:READY";

/// Server → client: the active remote config, sent once after the schema.
pub const CONFIG_SEND_CONFIG_WHEN_CONNECTED: &str = "CONFIG:SEND_CONFIG_WHEN_CONNECTED";
/// Server → client: a new active remote config.
pub const CONFIG_SEND_CONFIG_CHANGED: &str = "CONFIG:SEND_CONFIG_CHANGED";
/// Server → client: the routing table, sent once after the requirements.
pub const CONFIG_SEND_ROUTES_WHEN_CONNECTED: &str = "CONFIG:SEND_ROUTES_WHEN_CONNECTED";
/// Server → client: a new routing table.
pub const CONFIG_SEND_ROUTES_CHANGED: &str = "CONFIG:SEND_ROUTES_CHANGED";
/// Server → client: a connection-level error (plain text).
pub const ERROR_CONNECTION: &str = "ERROR_CONNECTION";
/// Server → client: a config error (plain text).
pub const ERROR_CONFIG: &str = "ERROR_CONFIG";

/// The suffix of the per-module address event: `<module>_MODULE_CONNECTED`.
pub const MODULE_CONNECTED_SUFFIX: &str = "_MODULE_CONNECTED";

/// The name of the event that carries the addresses of `module`'s ready instances:
/// `<module>_MODULE_CONNECTED`.
///
/// # Examples
/// ```
/// assert_eq!(cluster_proto::event::module_connected("auth"), "auth_MODULE_CONNECTED");
/// ```
#[must_use]
pub fn module_connected(module: &str) -> String {
    let mut name = String::with_capacity(module.len() + MODULE_CONNECTED_SUFFIX.len());
    name.push_str(module);
    name.push_str(MODULE_CONNECTED_SUFFIX);
    name
}

/// The module named by a `<module>_MODULE_CONNECTED` event, if `event` is one.
///
/// # Examples
/// ```
/// assert_eq!(cluster_proto::event::connected_module("auth_MODULE_CONNECTED"), Some("auth"));
/// assert_eq!(cluster_proto::event::connected_module("MODULE:READY"), None);
/// ```
#[must_use]
pub fn connected_module(event: &str) -> Option<&str> {
    event
        .strip_suffix(MODULE_CONNECTED_SUFFIX)
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_round_trips() {
        assert_eq!(module_connected("A"), "A_MODULE_CONNECTED");
        assert_eq!(
            connected_module(&module_connected("my-svc")),
            Some("my-svc")
        );
        assert_eq!(connected_module("_MODULE_CONNECTED"), None);
    }
}
