//! `observability.sentry`: error-level log lines, fatal errors and panics as Sentry events,
//! as isp-kit's `sentry.NewHubFromConfiguration`, `sentry.WrapErrorLogger` and the
//! bootstrap's `Fatal`.
//!
//! The client is set up as Go's: `server_name` the module name, `environment`, release
//! `"undefined"`, tags `version` (the module version), `instanceId` (when known) and the
//! configured `tags` on every event (an event's own tag of the same name wins, as Go's), at
//! most 10 events queued for sending, 3 s to flush. Of the SDK's default integrations, the
//! one Go drops (`Environment`: the OS, device and runtime contexts; Rust's
//! `ContextIntegration`) is left out; the stack trace ones and the panic one are kept.
//!
//! What the layer (`SentryLayer`) sends: each `tracing` event at level ERROR becomes an event
//! of level `error` (as Go's `WrapErrorLogger`), with the line's message, its fields as tags
//! (over the fields of the spans it is in: Go's context log fields; a field `request_id`
//! becomes isp-kit's `requestId` tag), the first field recorded as an error
//! (`error = &err as &dyn Error`) as the exception chain, and the target as the logger.
//! Tag values are cut at 200 characters (Sentry's limit). Other levels send nothing, not
//! even breadcrumbs (as Go; and an info line costs no lock). Lines of the sending stack
//! itself (targets `sentry*`, `ureq*`, `rustls`) are never sent, so a failing send cannot
//! feed itself; nor is the bootstrap's fatal line (target `cluster_bootstrap::fatal`), which
//! [`SentryGuard::capture_fatal`] sends, once, at level `fatal`.
//!
//! Panics: the SDK's panic integration, whose hook captures a panic (level `fatal`, with its
//! stack trace) and flushes, on the hub of the panicking thread. So the client is also bound
//! to the process's main hub (and to the hub of the thread that sets it up), which every
//! thread's hub starts from; the [guard](SentryGuard) unbinds it when dropped.
//!
//! The DSN appears in no log line, `Debug` output or error message of this module.

use super::{BoxedLayer, Identity, ObservabilityError};
use crate::local::SentryConfig;
use ::sentry::integrations::backtrace::{
    AttachStacktraceIntegration, ProcessStacktraceIntegration,
};
use ::sentry::integrations::panic::PanicIntegration;
use ::sentry::protocol::{self, Map};
use ::sentry::transports::DefaultTransportFactory;
use ::sentry::types::{Dsn, Scheme};
use ::sentry::{
    Client, ClientOptions, Envelope, Hub, Scope, Transport, TransportFactory, TransportOptions,
};
use ::tracing::field::{Field, Visit};
use ::tracing::span::{Attributes, Id, Record};
use ::tracing::{Event, Subscriber};
use ::tracing_subscriber::Layer;
use ::tracing_subscriber::layer::Context;
use ::tracing_subscriber::registry::LookupSpan;
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// How long a flush waits for the queued events to be sent: 3 s, isp-kit's transport
/// timeout (and its `Flush`). The panic hook waits as long.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// How many events may wait to be sent; more are dropped: 10, isp-kit's buffer.
pub(crate) const TRANSPORT_BUFFER: usize = 10;

/// The release of every event: isp-kit's `"undefined"` (the version is a tag).
pub(crate) const RELEASE: &str = "undefined";

/// Sentry's limit on a tag value, in characters: longer values are cut.
pub(crate) const MAX_TAG_VALUE_CHARS: usize = 200;

/// The targets whose lines are never sent: the sending stack's own.
const TRANSPORT_TARGETS: &[&str] = &["sentry", "ureq", "rustls"];

/// Sets up `observability.sentry`: `None` when it is disabled.
///
/// When enabled, creates the client (see the [module](self) for how), binds it to the
/// process's main hub and this thread's hub for the panic integration, and returns the layer
/// that sends error-level lines with the guard that flushes at shutdown.
///
/// # Errors
/// [`ObservabilityError::SentryDsnMissing`] when the DSN is empty (isp-kit's error);
/// [`ObservabilityError::SentryDsn`] when it is not a DSN.
pub fn sentry(
    config: &SentryConfig,
    id: &Identity,
) -> Result<Option<(BoxedLayer, SentryGuard)>, ObservabilityError> {
    if !config.enable {
        return Ok(None);
    }
    let dsn = config.dsn.expose().trim();
    if dsn.is_empty() {
        return Err(ObservabilityError::SentryDsnMissing);
    }
    let dsn: Dsn = dsn.parse().map_err(ObservabilityError::SentryDsn)?;
    let (http_proxy, https_proxy) = proxy_from_env(&dsn, |name| std::env::var(name).ok());
    let tags = Arc::new(tags(config, id));

    let mut options = ClientOptions::new();
    options.dsn = Some(dsn);
    options.server_name = non_empty(&id.module_name);
    options.environment = non_empty(&config.environment);
    options.release = Some(Cow::Borrowed(RELEASE));
    // Not `sentry::apply_defaults`: no DSN, release or environment from `SENTRY_*`.
    options.default_integrations = false;
    options.integrations = vec![
        Arc::new(AttachStacktraceIntegration),
        Arc::new(PanicIntegration::new()),
        Arc::new(ProcessStacktraceIntegration),
    ];
    options.transport = Some(Arc::new(BoundedTransportFactory));
    options.transport_channel_capacity = NonZeroUsize::new(TRANSPORT_BUFFER);
    options.shutdown_timeout = FLUSH_TIMEOUT;
    options.http_proxy = http_proxy.map(Cow::Owned);
    options.https_proxy = https_proxy.map(Cow::Owned);
    options.before_send = Some(Arc::new(move |mut event: protocol::Event<'static>| {
        for (key, value) in tags.iter() {
            if !event.tags.contains_key(key) {
                event.tags.insert(key.clone(), value.clone());
            }
        }
        Some(event)
    }));

    let client = Arc::new(Client::with_options(options));
    // For the panic integration, whose hook captures on the panicking thread's hub: threads
    // start from the main hub; this thread's hub may already be another one (`Client` creates
    // it).
    let mut bound = vec![Hub::main()];
    let current = Hub::current();
    if !Arc::ptr_eq(&current, &bound[0]) {
        bound.push(current);
    }
    for hub in &bound {
        hub.bind_client(Some(client.clone()));
    }

    let hub = Arc::new(Hub::new(Some(client.clone()), Arc::new(Scope::default())));
    Ok(Some((
        Box::new(SentryLayer { hub: hub.clone() }),
        SentryGuard { hub, client, bound },
    )))
}

/// isp-kit's tags: `version`, `instanceId` when known, then the configured ones (which win).
pub(crate) fn tags(config: &SentryConfig, id: &Identity) -> Map<String, String> {
    let mut tags = Map::new();
    tags.insert("version".to_owned(), id.module_version.clone());
    if !id.instance_id.is_empty() {
        tags.insert("instanceId".to_owned(), id.instance_id.clone());
    }
    tags.extend(
        config
            .tags
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    tags
}

fn non_empty(text: &str) -> Option<Cow<'static, str>> {
    (!text.is_empty()).then(|| Cow::Owned(text.to_owned()))
}

/// The proxy for the DSN's host from the environment, as Go's `http.ProxyFromEnvironment`
/// (which isp-kit's transport uses): `HTTP_PROXY` for an `http` DSN, `HTTPS_PROXY` for an
/// `https` one (either case), none for `localhost`, a loopback address or a host `NO_PROXY`
/// lists (`*`, a host, or a domain suffix as `example.com` or `.example.com`; ports and CIDR
/// ranges are not matched). Returns `(http_proxy, https_proxy)` for the client options.
pub(crate) fn proxy_from_env(
    dsn: &Dsn,
    var: impl Fn(&str) -> Option<String>,
) -> (Option<String>, Option<String>) {
    let get = |upper: &str, lower: &str| {
        var(upper)
            .or_else(|| var(lower))
            .filter(|value| !value.trim().is_empty())
    };
    let host = dsn
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    if loopback || get("NO_PROXY", "no_proxy").is_some_and(|list| no_proxy_matches(&list, &host)) {
        return (None, None);
    }
    match dsn.scheme() {
        Scheme::Http => (get("HTTP_PROXY", "http_proxy"), None),
        Scheme::Https => (None, get("HTTPS_PROXY", "https_proxy")),
    }
}

/// Whether a `NO_PROXY` list names this (lower-case) host.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        // A port in the entry is not compared.
        let entry = match entry.rsplit_once(':') {
            Some((name, port))
                if !name.is_empty()
                    && port.chars().all(|c| c.is_ascii_digit())
                    && name.matches(':').count() == 0 =>
            {
                name.to_owned()
            }
            _ => entry,
        };
        let entry = entry.trim_start_matches('*').trim_matches(['[', ']']);
        if entry.is_empty() {
            return false;
        }
        match entry.strip_prefix('.') {
            Some(domain) => host == domain || host.ends_with(entry),
            None => host == entry || host.ends_with(&format!(".{entry}")),
        }
    })
}

/// Makes the SDK's HTTP transport ([`BoundedTransport`]) never block its caller past the
/// timeout it is given.
struct BoundedTransportFactory;

impl TransportFactory for BoundedTransportFactory {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(BoundedTransport {
            inner: Some(DefaultTransportFactory.create_transport_with_options(options)),
        })
    }
}

/// The SDK's HTTP transport (ureq, on a thread of its own), bounded.
///
/// Its HTTP requests have no timeout (the SDK's ureq agent sets none, and an agent of ours
/// would need `ureq` as a dependency of this crate), so a Sentry that accepts connections and
/// never answers would stall its thread: its queue then fills, its `flush` blocks on the full
/// queue and dropping it joins the stalled thread. Here `flush` and `shutdown` wait on a
/// thread of their own for at most their timeout, and the inner transport is dropped on a
/// thread of its own: a stalled Sentry loses events but never holds up the module.
struct BoundedTransport {
    inner: Option<Arc<dyn Transport>>,
}

impl BoundedTransport {
    fn bounded(&self, timeout: Duration, call: fn(&dyn Transport, Duration) -> bool) -> bool {
        let Some(inner) = self.inner.clone() else {
            return true;
        };
        let (done, result) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("sentry-flush".into())
            .spawn(move || {
                let _ = done.send(call(&*inner, timeout));
            });
        spawned.is_ok() && result.recv_timeout(timeout).unwrap_or(false)
    }
}

impl Transport for BoundedTransport {
    fn send_envelope(&self, envelope: Envelope) {
        // The SDK's transport only queues (and drops the envelope when its queue is full).
        if let Some(inner) = &self.inner {
            inner.send_envelope(envelope);
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.bounded(timeout, |inner, timeout| inner.flush(timeout))
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        self.bounded(timeout, |inner, timeout| inner.shutdown(timeout))
    }
}

impl Drop for BoundedTransport {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            // Dropping the SDK's transport joins its thread, which may be stalled in a send.
            // (Should no thread start, the closure, and the transport, are dropped here.)
            let _ = std::thread::Builder::new()
                .name("sentry-transport-drop".into())
                .spawn(move || drop(inner));
        }
    }
}

/// The layer that sends the subscriber's error-level events to Sentry (see the
/// [module](self) for what it sends).
///
/// It keeps the fields of every span (as text, in the span's extensions) for the tags of the
/// events inside it; it filters nothing for the other layers.
pub(crate) struct SentryLayer {
    hub: Arc<Hub>,
}

impl fmt::Debug for SentryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentryLayer").finish_non_exhaustive()
    }
}

/// The fields of a span, as tags, in the order recorded (a later one wins).
struct SpanTags(Vec<(String, String)>);

impl<S> Layer<S> for SentryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::of_span();
        attrs.record(&mut fields);
        if fields.tags.is_empty() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanTags(fields.tags));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::of_span();
        values.record(&mut fields);
        if fields.tags.is_empty() {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanTags>() {
            Some(tags) => tags.0.extend(fields.tags),
            None => extensions.insert(SpanTags(fields.tags)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() != ::tracing::Level::ERROR
            || is_transport_target(metadata.target())
            // The bootstrap's fatal line: `SentryGuard::capture_fatal` sends it (level fatal).
            || metadata.target() == crate::logs::FATAL_TARGET
        {
            return;
        }
        self.hub.capture_event(event_from(event, &ctx));
    }
}

/// The Sentry event of an error-level `tracing` event.
fn event_from<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> protocol::Event<'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut tags = Map::new();
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            if let Some(span_tags) = span.extensions().get::<SpanTags>() {
                for (key, value) in &span_tags.0 {
                    tags.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let mut fields = Fields::of_event();
    event.record(&mut fields);
    tags.extend(fields.tags);
    let metadata = event.metadata();
    protocol::Event {
        level: ::sentry::Level::Error,
        message: Some(fields.message.unwrap_or_else(|| metadata.name().to_owned())),
        logger: Some(metadata.target().to_owned()),
        tags,
        exception: fields.exception.unwrap_or_default(),
        ..Default::default()
    }
}

/// Whether lines of this target are never sent: those of the sending stack.
fn is_transport_target(target: &str) -> bool {
    TRANSPORT_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

/// The tag key of a field: its name, but `request_id` is isp-kit's `requestId`.
fn tag_key(name: &str) -> String {
    match name {
        "request_id" => "requestId".to_owned(),
        name => name.to_owned(),
    }
}

/// A tag value: no line breaks (Sentry refuses them), at most [`MAX_TAG_VALUE_CHARS`].
fn tag_value(mut value: String) -> String {
    if value.contains(['\n', '\r']) {
        value = value.replace(['\n', '\r'], " ");
    }
    if let Some((cut, _)) = value.char_indices().nth(MAX_TAG_VALUE_CHARS) {
        value.truncate(cut);
    }
    value
}

/// Collects the fields of an event or a span.
struct Fields {
    /// Whether the `message` field is the message (events) or a tag (spans).
    event: bool,
    message: Option<String>,
    tags: Vec<(String, String)>,
    exception: Option<protocol::Values<protocol::Exception>>,
}

impl Fields {
    fn of_event() -> Self {
        Self {
            event: true,
            message: None,
            tags: Vec::new(),
            exception: None,
        }
    }

    fn of_span() -> Self {
        Self {
            event: false,
            ..Self::of_event()
        }
    }

    fn put(&mut self, field: &Field, value: String) {
        let name = field.name();
        if self.event && name == "message" {
            self.message = Some(value);
        } else if !name.starts_with("log.") {
            // (`log.*`: where a line bridged from the `log` crate comes from.)
            self.tags.push((tag_key(name), tag_value(value)));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.event && self.exception.is_none() {
            self.exception = Some(::sentry::event_from_error(value).exception);
        }
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

/// Ends `observability.sentry` (and reports the bootstrap's fatal errors).
///
/// Dropping it flushes (at most [`FLUSH_TIMEOUT`]) and unbinds the client from the hubs the
/// panic integration uses, so panics are no longer sent; the layer keeps sending until the
/// subscriber is dropped. Its `Debug` shows nothing of the client (nor the DSN).
#[must_use = "dropping the guard stops sending panics to Sentry"]
pub struct SentryGuard {
    hub: Arc<Hub>,
    client: Arc<Client>,
    /// The hubs the client was bound to, for the panic integration.
    bound: Vec<Arc<Hub>>,
}

impl SentryGuard {
    /// Waits until the queued events are sent, at most `timeout` (isp-kit's closer waits
    /// [`FLUSH_TIMEOUT`]). Returns whether they all were.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.client.flush(Some(timeout))
    }

    /// Sends a fatal error of the bootstrap (level `fatal`, the message), then flushes (at
    /// most [`FLUSH_TIMEOUT`]), as isp-kit's `Fatal` does before it ends the process.
    pub fn capture_fatal(&self, message: &str) {
        self.hub.capture_event(protocol::Event {
            level: ::sentry::Level::Fatal,
            message: Some(message.to_owned()),
            ..Default::default()
        });
        self.flush(FLUSH_TIMEOUT);
    }
}

impl fmt::Debug for SentryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentryGuard").finish_non_exhaustive()
    }
}

impl Drop for SentryGuard {
    fn drop(&mut self) {
        self.flush(FLUSH_TIMEOUT);
        for hub in &self.bound {
            if hub
                .client()
                .is_some_and(|client| Arc::ptr_eq(&client, &self.client))
            {
                hub.bind_client(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DSN: &str = "http://publickey-s3cr3t@127.0.0.1:9/1";

    fn config(dsn: &str) -> SentryConfig {
        SentryConfig {
            enable: true,
            dsn: dsn.to_owned().into(),
            ..SentryConfig::default()
        }
    }

    fn identity(instance_id: &str) -> Identity {
        Identity {
            module_name: "isp-test-service".into(),
            module_version: "1.2.3".into(),
            instance_id: instance_id.into(),
        }
    }

    fn setup_error(config: &SentryConfig) -> ObservabilityError {
        match sentry(config, &identity("")) {
            Ok(_) => panic!("set up"),
            Err(err) => err,
        }
    }

    #[test]
    fn disabled_is_none() {
        let mut config = config("");
        config.enable = false;
        assert!(sentry(&config, &identity("")).unwrap().is_none());
    }

    #[test]
    fn a_dsn_is_required_and_never_shown() {
        let err = setup_error(&config("  "));
        assert!(
            matches!(err, ObservabilityError::SentryDsnMissing),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "sentry is enabled. dsn must be specified. check sentry configuration"
        );

        for bad in [
            "s3cr3t-not-a-url",
            "ftp://s3cr3t@host/1",
            "http://s3cr3t@host/",
        ] {
            let err = setup_error(&config(bad));
            assert!(matches!(err, ObservabilityError::SentryDsn(_)), "{err:?}");
            let mut shown = format!("{err} {err:?}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                shown.push_str(&format!(" {cause} {cause:?}"));
                source = cause.source();
            }
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }

    #[test]
    fn the_guard_shows_no_dsn_and_unbinds_its_client() {
        // Nothing listens on port 9; the client is never asked to send.
        let (layer, guard) = sentry(&config(DSN), &identity("")).unwrap().unwrap();
        let shown = format!("{guard:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("127.0.0.1"),
            "{shown}"
        );
        let ours = guard.client.clone();
        let bound = guard.bound.clone();
        assert!(Arc::ptr_eq(&Hub::current().client().unwrap(), &ours));
        drop(layer);
        // Nothing queued: the flush of the drop returns at once.
        drop(guard);
        for hub in bound {
            assert!(!hub.client().is_some_and(|c| Arc::ptr_eq(&c, &ours)));
        }
    }

    #[test]
    fn tags_are_isp_kits_then_the_configured_ones() {
        let mut config = config(DSN);
        config.tags.insert("team".into(), "platform".into());
        let tags = tags(&config, &identity("10.0.0.7"));
        assert_eq!(tags["version"], "1.2.3");
        assert_eq!(tags["instanceId"], "10.0.0.7");
        assert_eq!(tags["team"], "platform");
        // No instance: no tag, as Go's.
        assert!(!super::tags(&config, &identity("")).contains_key("instanceId"));
        // A configured tag wins.
        config.tags.insert("version".into(), "override".into());
        assert_eq!(super::tags(&config, &identity(""))["version"], "override");
    }

    #[test]
    fn proxies_as_go() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            move |name: &str| map.get(name).cloned()
        };
        let dsn = |text: &str| text.parse::<Dsn>().unwrap();
        let proxies = [
            ("HTTP_PROXY", "http://proxy:3128"),
            ("https_proxy", "http://secure-proxy:3128"),
        ];
        assert_eq!(
            proxy_from_env(&dsn("http://key@sentry.corp/1"), env(&proxies)),
            (Some("http://proxy:3128".into()), None)
        );
        assert_eq!(
            proxy_from_env(&dsn("https://key@sentry.io/1"), env(&proxies)),
            (None, Some("http://secure-proxy:3128".into()))
        );
        for local in [
            "http://key@localhost:9000/1",
            "http://key@127.0.0.1:9000/1",
            "http://key@[::1]:9000/1",
        ] {
            assert_eq!(
                proxy_from_env(&dsn(local), env(&proxies)),
                (None, None),
                "{local}"
            );
        }
        for no_proxy in [
            "*",
            "sentry.corp",
            ".corp",
            "corp",
            "other, sentry.corp:443",
        ] {
            let mut vars = proxies.to_vec();
            vars.push(("NO_PROXY", no_proxy));
            assert_eq!(
                proxy_from_env(&dsn("http://key@sentry.corp/1"), env(&vars)),
                (None, None),
                "{no_proxy}"
            );
        }
        let mut vars = proxies.to_vec();
        vars.push(("no_proxy", "notsentry.corp,ntry.corp"));
        assert_eq!(
            proxy_from_env(&dsn("http://key@sentry.corp/1"), env(&vars)),
            (Some("http://proxy:3128".into()), None)
        );
        assert_eq!(
            proxy_from_env(&dsn("http://key@sentry.corp/1"), env(&[])),
            (None, None)
        );
    }

    #[test]
    fn tag_values_fit_sentry() {
        assert_eq!(tag_value("a\nb\r\nc".into()), "a b  c");
        let long = "й".repeat(MAX_TAG_VALUE_CHARS + 5);
        assert_eq!(tag_value(long).chars().count(), MAX_TAG_VALUE_CHARS);
        assert_eq!(tag_key("request_id"), "requestId");
        assert_eq!(tag_key("module"), "module");
    }

    #[test]
    fn transport_targets_are_never_sent() {
        for target in [
            "sentry",
            "sentry_core::client",
            "ureq::unversioned",
            "ureq_proto",
            "rustls::conn",
        ] {
            assert!(is_transport_target(target), "{target}");
        }
        for target in ["sentryless", "cluster_client", "my_module::ureqs"] {
            assert!(!is_transport_target(target), "{target}");
        }
    }
}
