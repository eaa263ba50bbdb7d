//! Durations as people and Go write them (`7s`, `500ms`, `1m30s`, `1h30m`, `1.5h`): the one
//! parser of the command-line programs (the `fake-config-service` binary and the probe), used
//! by both as a clap value parser (`value_parser = parse_duration`).

use std::time::Duration;

pub use cluster_proto::duration::DurationError;

/// Parses a duration as Go's `time.ParseDuration` does
/// ([`parse_go_duration`](cluster_proto::duration::parse_go_duration): `7s`, `500ms`,
/// `1m30s`, `1.5h`), and also a bare number of seconds (`7`, `0.5`).
///
/// # Errors
/// A [`DurationError`] for anything else: empty, negative, a unit missing or unknown (`1d`),
/// spaces, `nan`, `inf`, or a total too large for [`Duration`].
///
/// # Examples
/// ```
/// use cluster_testkit::duration::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
/// assert!(parse_duration("7 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| DurationError::new(text));
    }
    cluster_proto::duration::parse_go_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_and_bare_seconds_parse() {
        for (text, expected) in [
            ("7s", Duration::from_secs(7)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("3", Duration::from_secs(3)),
            ("0.5", Duration::from_millis(500)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn anything_else_is_an_error_that_quotes_it() {
        for bad in [
            "", "s", "-1s", "-1", "7 s", "1d", "nan", "inf", "1..2s", "5 ", "ms5",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        let half = u64::MAX / 7200; // hours: each part about half of Duration::MAX
        let huge = format!("{half}h{half}h{half}h");
        assert!(
            parse_duration(&huge).is_err(),
            "an overflowing sum is refused"
        );
        assert_eq!(
            parse_duration("soon").unwrap_err().to_string(),
            r#""soon" is not a duration (try 7s, 500ms, 2m, 1h30m)"#
        );
    }
}
