//! Durations written as Go writes them (`7s`, `500ms`, `1m30s`, `1.5h`): isp-kit's config
//! files and the command lines of this repository's programs use the one parser here.

use std::fmt;
use std::time::Duration;

/// A text that is not a Go duration; `Display` quotes it and shows the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    text: String,
}

impl DurationError {
    /// An error about `text`.
    #[must_use]
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
        }
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration (try 7s, 500ms, 2m, 1h30m)",
            self.text
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration as Go's `time.ParseDuration` does: numbers (fractions allowed), each
/// followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), no spaces (`7s`, `1m30s`,
/// `1.5h`); `0` alone is zero. Unlike Go, a sign is refused: a duration here is never
/// negative.
///
/// # Errors
/// A [`DurationError`] for anything else: empty, a bare number other than `0`, a unit
/// missing or unknown (`1d`), spaces, `nan`, `inf`, a sign, or a total too large for
/// [`Duration`].
///
/// # Examples
/// ```
/// use cluster_proto::duration::parse_go_duration;
/// use std::time::Duration;
/// assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_go_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
/// assert!(parse_go_duration("5").is_err());
/// ```
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError::new(text);
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = Duration::try_from_secs_f64(number * unit).map_err(|_| bad())?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_parse() {
        for (text, expected) in [
            ("7s", Duration::from_secs(7)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn anything_else_is_an_error_that_quotes_it() {
        for bad in [
            "", "s", "-1s", "+1s", "3", "0.5", "7 s", "1d", "nan", "inf", "1..2s", "5 ", "ms5",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} parsed");
        }
        let half = u64::MAX / 7200; // hours: each part about half of Duration::MAX
        let huge = format!("{half}h{half}h{half}h");
        assert!(
            parse_go_duration(&huge).is_err(),
            "an overflowing sum is refused"
        );
        assert_eq!(
            parse_go_duration("soon").unwrap_err().to_string(),
            r#""soon" is not a duration (try 7s, 500ms, 2m, 1h30m)"#
        );
    }
}
