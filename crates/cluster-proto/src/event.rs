//! Event names, exactly as the Go peers spell them (docs/protocol.md §3).

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

/// The longest module name accepted, in bytes. Real module names are a few dozen bytes; the
/// bound keeps a hostile name from inflating every frame and log line that carries it.
pub const MAX_MODULE_NAME_LEN: usize = 256;

/// Why a module name cannot be used on the wire (see [`check_module_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleNameError {
    /// The name is empty.
    #[error("the module name is empty")]
    Empty,
    /// The name is longer than [`MAX_MODULE_NAME_LEN`] bytes.
    #[error("the module name is longer than {MAX_MODULE_NAME_LEN} bytes")]
    TooLong,
    /// The name contains `||`, the ETP field separator: `<name>_MODULE_CONNECTED` would not parse.
    #[error("the module name contains `||`, the ETP field separator")]
    Separator,
    /// The name starts with `__ack_`: its events would read as acknowledgements.
    #[error("the module name starts with `__ack_`, the ETP acknowledgement prefix")]
    AckPrefix,
    /// The name contains a control character (a newline, a NUL, …).
    #[error("the module name contains a control character")]
    Control,
}

/// Checks that `name` can name a module on the wire: non-empty, at most
/// [`MAX_MODULE_NAME_LEN`] bytes, no `||` (the frame separator), not starting with `__ack_`
/// (the acknowledgement prefix), and no control characters. Every event built from a module
/// name (`<name>_MODULE_CONNECTED`) then decodes as what it is. Both sides apply it: the fake
/// service at the upgrade and in requirements, the client in its settings.
///
/// # Errors
/// The first rule the name breaks, as a [`ModuleNameError`].
///
/// # Examples
/// ```
/// use cluster_proto::event::{check_module_name, ModuleNameError};
/// assert_eq!(check_module_name("auth-service"), Ok(()));
/// assert_eq!(check_module_name("a||b"), Err(ModuleNameError::Separator));
/// assert_eq!(check_module_name("__ack_x"), Err(ModuleNameError::AckPrefix));
/// ```
pub fn check_module_name(name: &str) -> Result<(), ModuleNameError> {
    if name.is_empty() {
        Err(ModuleNameError::Empty)
    } else if name.len() > MAX_MODULE_NAME_LEN {
        Err(ModuleNameError::TooLong)
    } else if name.contains("||") {
        Err(ModuleNameError::Separator)
    } else if name.starts_with(crate::frame::ACK_PREFIX) {
        Err(ModuleNameError::AckPrefix)
    } else if name.chars().any(char::is_control) {
        Err(ModuleNameError::Control)
    } else {
        Ok(())
    }
}

/// Checks that `name` can be sent as an event name: no `||` and no control characters, so that
/// the frame decodes into the same name. Every emit path of the fake service checks it.
///
/// # Errors
/// [`ModuleNameError::Empty`], [`ModuleNameError::Separator`] or [`ModuleNameError::Control`].
pub fn check_event_name(name: &str) -> Result<(), ModuleNameError> {
    if name.is_empty() {
        Err(ModuleNameError::Empty)
    } else if name.contains("||") {
        Err(ModuleNameError::Separator)
    } else if name.chars().any(char::is_control) {
        Err(ModuleNameError::Control)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_name_rules() {
        assert_eq!(check_module_name("my-svc"), Ok(()));
        assert_eq!(check_module_name(""), Err(ModuleNameError::Empty));
        assert_eq!(check_module_name(&"a".repeat(MAX_MODULE_NAME_LEN)), Ok(()));
        assert_eq!(
            check_module_name(&"a".repeat(MAX_MODULE_NAME_LEN + 1)),
            Err(ModuleNameError::TooLong)
        );
        assert_eq!(check_module_name("x||y"), Err(ModuleNameError::Separator));
        assert_eq!(
            check_module_name("__ack_y"),
            Err(ModuleNameError::AckPrefix)
        );
        assert_eq!(check_module_name("a\nb"), Err(ModuleNameError::Control));
        // A module's address event decodes back into the same name.
        let name = module_connected("my-svc");
        assert_eq!(check_event_name(&name), Ok(()));
        assert_eq!(
            check_event_name("x||y_MODULE_CONNECTED"),
            Err(ModuleNameError::Separator)
        );
    }

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
