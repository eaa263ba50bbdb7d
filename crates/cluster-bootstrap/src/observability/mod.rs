//! `observability.tracing` and `observability.sentry`, as isp-kit sets them up.

/// Who the module is, for the resource of its spans and the tags of its Sentry events.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// `moduleName`: the service name.
    pub(crate) module_name: String,
    /// The module's version.
    pub(crate) module_version: String,
    /// The instance: the outer IP, as isp-kit's `instanceId`.
    pub(crate) instance_id: String,
}
