//! Go's `trimError` of `http_metrics`: URLs, IPv4 addresses and bracketed IPv6 addresses with
//! a port are replaced in an error's text before it becomes a label value, by the same three
//! regular expressions, applied in the same order, with Go's leftmost-first semantics
//! (written out here rather than compiled, which this crate has no engine for).

/// An error's text with what may identify a host replaced, as Go's `trimError`:
/// - URLs (`https?://…`, `ftp://…`, `file://…`, and `word.letters…` up to the next space):
///   `%URL%`;
/// - IPv4 addresses: `xxx.xxx.xxx.xxx:xxxx` (the port, if any, stays after it, as in Go);
/// - `[IPv6]:port`: `[xxx:xxx:xxx:xxx]:xxxx`.
///
/// ```
/// use cluster_metrics::http::sanitize_error;
/// assert_eq!(
///     sanitize_error("dial tcp 10.0.0.7:8080: connect: connection refused"),
///     "dial tcp xxx.xxx.xxx.xxx:xxxx:8080: connect: connection refused"
/// );
/// assert_eq!(sanitize_error("lookup api.example.com: no such host"), "lookup %URL% no such host");
/// ```
#[must_use]
pub fn sanitize_error(text: &str) -> String {
    let text = replace_all(text, url_at, "%URL%");
    let text = replace_all(&text, ipv4_at, "xxx.xxx.xxx.xxx:xxxx");
    replace_all(&text, ipv6_port_at, "[xxx:xxx:xxx:xxx]:xxxx")
}

/// Replaces, left to right and without overlap, each match that `at` finds (`at(bytes, i)`:
/// the end of the match starting at `i`). Matches start at an ASCII byte and end before an
/// ASCII byte or at the end, so the slices are on character boundaries.
fn replace_all(text: &str, at: fn(&[u8], usize) -> Option<usize>, with: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        match at(bytes, i) {
            Some(end) => {
                out.push_str(&text[copied..i]);
                out.push_str(with);
                (copied, i) = (end, end);
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// RE2's `\s`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r')
}

/// RE2's `\w`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of the run of bytes from `i` that satisfy `f`.
fn run_end(b: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    i + b
        .get(i..)
        .map_or(0, |rest| rest.iter().take_while(|c| f(**c)).count())
}

/// `(https?://\S+|ftp://\S+|file://\S+|[a-zA-Z0-9_-]+\.([a-zA-Z]{2,})+\S+)` at `i`.
fn url_at(b: &[u8], i: usize) -> Option<usize> {
    let rest = &b[i..];
    for scheme in [&b"https://"[..], b"http://", b"ftp://", b"file://"] {
        if rest.starts_with(scheme) {
            let from = i + scheme.len();
            let end = run_end(b, from, |c| !is_space(c));
            if end > from {
                return Some(end);
            }
        }
    }
    let word_end = run_end(b, i, |c| is_word(c) || c == b'-');
    if word_end == i || b.get(word_end) != Some(&b'.') {
        return None;
    }
    let letters_from = word_end + 1;
    let letters_end = run_end(b, letters_from, |c| c.is_ascii_alphabetic());
    let letters = letters_end - letters_from;
    if letters < 2 {
        return None;
    }
    let end = run_end(b, letters_end, |c| !is_space(c));
    if end > letters_end {
        Some(end)
    } else if letters >= 3 {
        // `\S+` takes the last letter back.
        Some(letters_end)
    } else {
        None
    }
}

/// `\b` between `i - 1` and `i`.
fn word_boundary(b: &[u8], i: usize) -> bool {
    let before = i
        .checked_sub(1)
        .and_then(|j| b.get(j))
        .is_some_and(|c| is_word(*c));
    let after = b.get(i).is_some_and(|c| is_word(*c));
    before != after
}

/// The ends of `(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)` at `i`, in the order the regular
/// expression prefers them.
fn octet_ends(b: &[u8], i: usize) -> [Option<usize>; 6] {
    let at = |k: usize| b.get(i + k).copied();
    let digit = |k: usize| at(k).is_some_and(|c| c.is_ascii_digit());
    let in_range = |k: usize, lo: u8, hi: u8| at(k).is_some_and(|c| (lo..=hi).contains(&c));
    let zero_one = matches!(at(0), Some(b'0' | b'1'));
    [
        (at(0) == Some(b'2') && at(1) == Some(b'5') && in_range(2, b'0', b'5')).then_some(i + 3),
        (at(0) == Some(b'2') && in_range(1, b'0', b'4') && digit(2)).then_some(i + 3),
        (zero_one && digit(1) && digit(2)).then_some(i + 3),
        (zero_one && digit(1)).then_some(i + 2),
        (digit(0) && digit(1)).then_some(i + 2),
        digit(0).then_some(i + 1),
    ]
}

/// `left` octets separated by dots at `i`, the last followed by `\b`; the end.
fn octets(b: &[u8], i: usize, left: u32) -> Option<usize> {
    octet_ends(b, i).into_iter().flatten().find_map(|end| {
        if left == 1 {
            word_boundary(b, end).then_some(end)
        } else if b.get(end) == Some(&b'.') {
            octets(b, end + 1, left - 1)
        } else {
            None
        }
    })
}

/// `\b(?:octet)\.(?:octet)\.(?:octet)\.(?:octet)\b` at `i`.
fn ipv4_at(b: &[u8], i: usize) -> Option<usize> {
    if !word_boundary(b, i) {
        return None;
    }
    octets(b, i, 4)
}

/// `\[([0-9a-fA-F:]+)\]:(\d+)` at `i`.
fn ipv6_port_at(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let hex_end = run_end(b, i + 1, |c| c.is_ascii_hexdigit() || c == b':');
    if hex_end == i + 1 || b.get(hex_end..hex_end + 2) != Some(&b"]:"[..]) {
        return None;
    }
    let digits_end = run_end(b, hex_end + 2, |c| c.is_ascii_digit());
    (digits_end > hex_end + 2).then_some(digits_end)
}

#[cfg(test)]
mod tests {
    use super::sanitize_error;

    #[test]
    fn hosts_are_replaced_as_go_replaces_them() {
        for (text, want) in [
            (
                r#"Get "http://10.0.0.1:8080/api": dial tcp 10.0.0.1:8080: connect: connection refused"#,
                r#"Get "%URL% dial tcp xxx.xxx.xxx.xxx:xxxx:8080: connect: connection refused"#,
            ),
            (
                "dial tcp [::1]:8080: connect: connection refused",
                "dial tcp [xxx:xxx:xxx:xxx]:xxxx: connect: connection refused",
            ),
            (
                "lookup api.example.com: no such host",
                "lookup %URL% no such host",
            ),
            ("see https://x.io and ftp://y", "see %URL% and %URL%"),
            // `https://` with nothing after is no URL.
            ("https:// alone", "https:// alone"),
            // Two letters after the dot need something after them; three do not.
            ("a.io", "a.io"),
            ("a.com", "%URL%"),
            ("a.io/", "%URL%"),
            ("x_1:abc.com/p q", "x_1:%URL% q"),
            ("context deadline exceeded", "context deadline exceeded"),
            // Octets above 255 and addresses inside words are left.
            (
                "256.1.1.1 and 1.2.3.4",
                "256.1.1.1 and xxx.xxx.xxx.xxx:xxxx",
            ),
            ("v1.2.3.4x", "v1.2.3.4x"),
            ("255.250.199.09", "xxx.xxx.xxx.xxx:xxxx"),
            ("[fe80::1] no port", "[fe80::1] no port"),
            ("ünïcode 10.1.1.1 ok", "ünïcode xxx.xxx.xxx.xxx:xxxx ok"),
            ("", ""),
        ] {
            assert_eq!(sanitize_error(text), want, "{text}");
        }
    }
}
