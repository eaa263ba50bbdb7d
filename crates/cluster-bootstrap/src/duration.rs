//! [`GoDuration`]: a duration in a config file, as Go's `time.Duration` reads it.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A duration from a config file, read as isp-kit reads a `time.Duration`: a string in Go's
/// form (`5s`, `500ms`, `1m30s`) or an integer, which is nanoseconds (Go's weakly typed
/// decoding of a number into a `time.Duration`). Absent, it is zero, which the settings
/// that use it take as "the default".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// The duration, or `None` when it is zero (a setting's "use the default").
    #[must_use]
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl From<GoDuration> for Duration {
    fn from(value: GoDuration) -> Self {
        value.0
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(GoDurationVisitor)
    }
}

struct GoDurationVisitor;

impl Visitor<'_> for GoDurationVisitor {
    type Value = GoDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 5s, 500ms or 1m30s (or an integer of nanoseconds)")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<GoDuration, E> {
        cluster_proto::duration::parse_go_duration(text.trim())
            .map(GoDuration)
            // Not the text: a config error never shows a value.
            .map_err(|_| E::invalid_value(de::Unexpected::Other("a text"), &self))
    }

    fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<GoDuration, E> {
        Ok(GoDuration(Duration::from_nanos(nanos)))
    }

    fn visit_i64<E: de::Error>(self, nanos: i64) -> Result<GoDuration, E> {
        u64::try_from(nanos)
            .map(|n| GoDuration(Duration::from_nanos(n)))
            .map_err(|_| E::invalid_value(de::Unexpected::Other("a negative number"), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<GoDuration, E> {
        Ok(GoDuration::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<GoDuration, E> {
        Ok(GoDuration::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_in_go_form_and_integers_of_nanoseconds() {
        let read = |json: &str| serde_json::from_str::<GoDuration>(json).map(|d| d.0);
        assert_eq!(read(r#""1m30s""#).unwrap(), Duration::from_secs(90));
        assert_eq!(read(r#"" 500ms ""#).unwrap(), Duration::from_millis(500));
        assert_eq!(read("5000000000").unwrap(), Duration::from_secs(5));
        assert_eq!(read("null").unwrap(), Duration::ZERO);
        let err = read(r#""fortnight""#).unwrap_err().to_string();
        assert!(!err.contains("fortnight"), "the value is not shown: {err}");
        assert!(err.contains("5s, 500ms"), "{err}");
        assert!(read("-1").is_err());
    }
}
