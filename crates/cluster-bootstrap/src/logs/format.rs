//! JSON lines with zap's keys, as isp-kit's production logger writes them:
//! `{"level":"info","ts":"2026-12-07T22:57:47.123Z","logger":"…","msg":"…","field":…}`
//! (`logger`, zap's key for a logger's name, holds the event's target: the module that wrote
//! the line); the fields of
//! the spans the event is in follow its own (outermost span first), as isp-kit's context
//! fields (`requestId`, …) follow a line's.

use super::FATAL_TARGET;
use std::fmt::{self, Write as _};
use time::OffsetDateTime;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format: one JSON object a line.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonLines;

/// The fields format: `,"key":value` for each field, so that a span's fields can be appended
/// to an event's object as they are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonFields;

/// zap's level names.
pub(crate) fn level_name(level: &Level, target: &str) -> &'static str {
    if target == FATAL_TARGET {
        return "fatal";
    }
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// `2026-12-07T22:57:47.123Z`: zap's ISO 8601 encoder, in UTC.
pub(crate) fn timestamp(now: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        let mut line = String::with_capacity(128 + fields.out.len());
        line.push_str("{\"level\":\"");
        line.push_str(level_name(meta.level(), meta.target()));
        line.push_str("\",\"ts\":\"");
        line.push_str(&timestamp(OffsetDateTime::now_utc()));
        line.push_str("\",\"logger\":");
        push_json_str(&mut line, meta.target());
        line.push_str(",\"msg\":");
        push_json_str(&mut line, fields.message.as_deref().unwrap_or(""));
        line.push_str(&fields.out);
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>() {
                    line.push_str(&formatted.fields);
                }
            }
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor::default();
        fields.record(&mut visitor);
        // A span's `message` field, if any, is a field like another.
        if let Some(message) = visitor.message.take() {
            push_pair(&mut visitor.out, "message", |out| {
                push_json_str(out, &message)
            });
        }
        writer.write_str(&visitor.out)
    }
}

/// Collects fields as `,"key":value`, the `message` apart.
#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    out: String,
}

fn push_pair(out: &mut String, key: &str, value: impl FnOnce(&mut String)) {
    out.push(',');
    push_json_str(out, key);
    out.push(':');
    value(out);
}

/// `text` as a JSON string.
fn push_json_str(out: &mut String, text: &str) {
    // Serialising a `&str` to JSON cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()));
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            push_pair(&mut self.out, field.name(), |out| push_json_str(out, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        push_pair(&mut self.out, field.name(), |out| {
            let _ = write!(out, "{value}");
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        push_pair(&mut self.out, field.name(), |out| {
            let _ = write!(out, "{value}");
        });
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        push_pair(&mut self.out, field.name(), |out| {
            let _ = write!(out, "{value}");
        });
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        push_pair(&mut self.out, field.name(), |out| {
            let _ = write!(out, "{value}");
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            push_pair(&mut self.out, field.name(), |out| {
                let _ = write!(out, "{value}");
            });
        } else {
            // JSON has no NaN or infinity: zap writes them as strings too.
            self.record_str(field, &value.to_string());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        push_pair(&mut self.out, field.name(), |out| {
            out.push_str(if value { "true" } else { "false" });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .fmt_fields(JsonFields)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn zap_keys_then_fields_then_span_fields() {
        let got = lines(|| {
            let span = tracing::info_span!("grpc_call", endpoint = "a/b", request_id = "r1");
            let _entered = span.enter();
            tracing::info!(count = 3_u64, ok = true, ratio = 0.5, name = %"x\"y", "handled \"call\"");
        });
        assert_eq!(got.len(), 1);
        let line = &got[0];
        assert_eq!(line["level"], "info");
        assert_eq!(line["logger"], "cluster_bootstrap::logs::format::tests");
        assert_eq!(line["msg"], "handled \"call\"");
        assert_eq!(line["count"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["name"], "x\"y");
        assert_eq!(line["endpoint"], "a/b");
        assert_eq!(line["request_id"], "r1");
        let ts = line["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-12-07T22:57:47.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }

    #[test]
    fn levels_errors_and_fatal() {
        let got = lines(|| {
            let err = std::io::Error::other("disk gone");
            tracing::warn!(error = &err as &dyn std::error::Error, "w");
            tracing::error!(target: FATAL_TARGET, "the end");
            tracing::debug!(nan = f64::NAN, "d");
        });
        assert_eq!(got[0]["level"], "warn");
        assert_eq!(got[0]["error"], "disk gone");
        assert_eq!(got[1]["level"], "fatal");
        assert_eq!(got[2]["level"], "debug");
        assert_eq!(got[2]["nan"], "NaN");
    }

    #[test]
    fn timestamp_is_utc_with_milliseconds() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_796_684_267_123_456_789).unwrap();
        assert_eq!(timestamp(at), "2026-12-07T22:57:47.123Z");
    }
}
