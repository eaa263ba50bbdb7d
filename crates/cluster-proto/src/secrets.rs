//! Masking of secret values in remote configs before they are logged (docs/protocol.md §5).
//!
//! A [`SecretMasker`] replaces with `"***"` every non-empty value whose key path contains one
//! of its substrings, compared case-insensitively against each key on the path, through nested
//! objects and arrays. The substring list can be changed at run time while other tasks mask.
//!
//! # The default rule
//! A value is masked when any key on its path contains, in any letter case, one of
//! [`DEFAULT_SECRET_TAGS`]: `password`, `secret`, `token`, `credentials`, `apikey`, `api_key`,
//! `api-key`, `privatekey`, `private_key`, `private-key` (the dashed forms for header-style
//! names). So `dbPassword`, `CLIENT_SECRET`, `accessToken`, `apiKey`, `X-Api-Key`,
//! `privateKeyPem` and everything nested under `credentials` are masked; `host`, `user` and
//! `publicKey` are not. Add your own with [`SecretMasker::add`].
//!
//! # Differences from isp-kit (`cluster.HideSecrets`)
//! - isp-kit **fails open**: a payload it cannot parse is logged raw. [`SecretMasker::mask`]
//!   **fails closed**: anything that is not a JSON object becomes a placeholder that says only
//!   its length.
//! - isp-kit masks every value but the empty string, `null` included; here `null` and `""` are
//!   both kept (neither holds a secret, and keeping them shows that the value is unset).
//! - isp-kit's default list is `password`, `secret`, `token`; ours adds `credentials` and the
//!   API and private key spellings.
//! - isp-kit matches a substring against the dotted path (`db.password`), so a substring
//!   holding a `.` could match across two keys; here each key is matched on its own.
//! - isp-kit's list is process-global; here each masker has its own (the client shares one).
//!
//! Like isp-kit, the output is re-encoded compact JSON with the keys of each object in sorted
//! order, and numbers, booleans, arrays and objects under a secret key are masked leaf by leaf.

use serde_json::Value;
use std::sync::{PoisonError, RwLock};

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// The substrings a new [`SecretMasker`] starts with.
pub const DEFAULT_SECRET_TAGS: [&str; 10] = [
    "password",
    "secret",
    "token",
    "credentials",
    "apikey",
    "api_key",
    "api-key",
    "privatekey",
    "private_key",
    "private-key",
];

/// Masks secret values in JSON configs. Cheap to share: wrap it in an `Arc` and call it from
/// any task; [`add`](Self::add) and [`remove`](Self::remove) take effect for the next call.
///
/// # Examples
/// ```
/// use cluster_proto::secrets::SecretMasker;
///
/// let masker = SecretMasker::new();
/// let logged = masker.mask(br#"{"db":{"password":"p@ss","host":"h"},"token":"t","empty":{"token":""}}"#);
/// assert_eq!(logged, r#"{"db":{"host":"h","password":"***"},"empty":{"token":""},"token":"***"}"#);
///
/// masker.add("Host");
/// assert_eq!(masker.mask(br#"{"hostName":"h"}"#), r#"{"hostName":"***"}"#);
/// assert_eq!(masker.mask(b"[1]"), "<not a JSON object: 3 bytes>");
/// ```
#[derive(Debug)]
pub struct SecretMasker {
    /// Lower-cased, non-empty, without duplicates.
    tags: RwLock<Vec<String>>,
}

impl Default for SecretMasker {
    /// The same as [`SecretMasker::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl SecretMasker {
    /// A masker with the [`DEFAULT_SECRET_TAGS`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_tags(DEFAULT_SECRET_TAGS)
    }

    /// A masker with exactly these substrings (see [`add`](Self::add) for how each is kept).
    #[must_use]
    pub fn with_tags<I>(tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let masker = Self {
            tags: RwLock::new(Vec::new()),
        };
        for tag in tags {
            masker.add(tag.as_ref());
        }
        masker
    }

    /// Adds a substring; it is lower-cased. Adding one already there does nothing.
    /// An empty substring is ignored: it would match every key and mask the whole config.
    pub fn add(&self, tag: &str) {
        if tag.is_empty() {
            return;
        }
        let tag = tag.to_lowercase();
        let mut tags = self.tags.write().unwrap_or_else(PoisonError::into_inner);
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }

    /// Removes a substring (matched case-insensitively); returns whether it was there.
    pub fn remove(&self, tag: &str) -> bool {
        let tag = tag.to_lowercase();
        let mut tags = self.tags.write().unwrap_or_else(PoisonError::into_inner);
        let before = tags.len();
        tags.retain(|t| *t != tag);
        tags.len() != before
    }

    /// The current substrings, lower-cased, in the order they were added.
    #[must_use]
    pub fn tags(&self) -> Vec<String> {
        self.tags
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a value under `key` is masked (the key contains one of the substrings,
    /// case-insensitively).
    #[must_use]
    pub fn is_secret_key(&self, key: &str) -> bool {
        let tags = self.tags.read().unwrap_or_else(PoisonError::into_inner);
        key_matches(&tags, key)
    }

    /// The JSON `config` with its secret values masked, for a log line.
    ///
    /// Fails closed: input that is not a JSON object (invalid JSON, an array, a scalar) comes
    /// out as `<not a JSON object: N bytes>`, never as the raw input.
    #[must_use]
    pub fn mask(&self, config: &[u8]) -> String {
        match serde_json::from_slice::<Value>(config) {
            Ok(mut value @ Value::Object(_)) => {
                self.mask_value(&mut value);
                // Serialising a `Value` cannot fail (its keys are strings); the placeholder
                // keeps the fail-closed promise anyway.
                serde_json::to_string(&value).unwrap_or_else(|_| not_an_object(config.len()))
            }
            _ => not_an_object(config.len()),
        }
    }

    /// A short fingerprint of a config for log lines that must not carry the config itself:
    /// FNV-1a (64 bits) of its masked form ([`mask`](Self::mask)), as 16 hex digits. Two
    /// instances that log the same fingerprint hold the same config, up to the secrets: the
    /// fingerprint is taken after masking so that it gives nothing away about a secret (a hash
    /// of the raw bytes would let anyone who knows the rest of the config test guesses of a
    /// weak password against it).
    ///
    /// # Examples
    /// ```
    /// use cluster_proto::secrets::SecretMasker;
    ///
    /// let masker = SecretMasker::new();
    /// let a = masker.fingerprint(br#"{"workers":4,"password":"one"}"#);
    /// assert_eq!(a.len(), 16);
    /// assert_eq!(a, masker.fingerprint(br#"{"password":"two","workers":4}"#));
    /// assert_ne!(a, masker.fingerprint(br#"{"workers":5,"password":"one"}"#));
    /// ```
    #[must_use]
    pub fn fingerprint(&self, config: &[u8]) -> String {
        let masked = self.mask(config);
        let hash = masked
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("{hash:016x}")
    }

    /// Masks the secret values of `value` in place (any JSON value: the fail-closed rule of
    /// [`mask`](Self::mask) is about bytes, not about this).
    pub fn mask_value(&self, value: &mut Value) {
        let tags = self.tags.read().unwrap_or_else(PoisonError::into_inner);
        mask_in(&tags, value, false);
    }
}

fn not_an_object(len: usize) -> String {
    format!("<not a JSON object: {len} bytes>")
}

fn mask_in(tags: &[String], value: &mut Value, secret: bool) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                mask_in(tags, child, secret || key_matches(tags, key));
            }
        }
        Value::Array(items) => {
            for item in items {
                mask_in(tags, item, secret);
            }
        }
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        _ if secret => *value = Value::String(MASK.to_owned()),
        _ => {}
    }
}

fn key_matches(tags: &[String], key: &str) -> bool {
    if key.is_ascii() {
        // No allocation for the usual key: compare windows ignoring ASCII case. Tags are
        // lower-cased; a non-ASCII tag cannot occur in an ASCII key.
        let key = key.as_bytes();
        tags.iter().any(|tag| {
            let tag = tag.as_bytes();
            tag.len() <= key.len()
                && key
                    .windows(tag.len())
                    .any(|window| window.eq_ignore_ascii_case(tag))
        })
    } else {
        let key = key.to_lowercase();
        tags.iter().any(|tag| key.contains(tag.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn masks_nested_objects_and_arrays() {
        let m = SecretMasker::new();
        let out = m.mask(
            br#"{"servers":[{"host":"a","Password":"x"},{"host":"b","password":""}],
                 "credentials":{"user":"u","keys":["k1","k2"],"n":5,"ok":true,"none":null},
                 "apiToken":42,"plain":"v"}"#,
        );
        assert_eq!(
            out,
            r#"{"apiToken":"***","credentials":{"keys":["***","***"],"n":"***","none":null,"ok":"***","user":"***"},"plain":"v","servers":[{"Password":"***","host":"a"},{"host":"b","password":""}]}"#
        );
    }

    #[test]
    fn default_rule_covers_api_and_private_keys_in_any_case() {
        let m = SecretMasker::new();
        let out = m.mask(
            br#"{"apiKey":"a1","API_KEY":"a2","x-api-key":"a3","privateKey":"p1",
                 "PRIVATE_KEY_PEM":"p2","tls":{"privatekey":"p3"},"publicKey":"pub","host":"h"}"#,
        );
        assert_eq!(
            out,
            r#"{"API_KEY":"***","PRIVATE_KEY_PEM":"***","apiKey":"***","host":"h","privateKey":"***","publicKey":"pub","tls":{"privatekey":"***"},"x-api-key":"***"}"#
        );
    }

    #[test]
    fn fails_closed() {
        let m = SecretMasker::new();
        for bad in [
            &b"not json password"[..],
            b"[\"secret\"]",
            b"\"token\"",
            b"",
            b"{\"a\":",
        ] {
            assert_eq!(
                m.mask(bad),
                format!("<not a JSON object: {} bytes>", bad.len())
            );
        }
    }

    #[test]
    fn tags_can_be_added_and_removed_case_insensitively() {
        let m = SecretMasker::new();
        assert!(m.is_secret_key("DB_PASSWORD"));
        assert!(m.remove("PassWord"));
        assert!(!m.remove("password"));
        assert!(!m.is_secret_key("DB_PASSWORD"));
        m.add("PIN");
        m.add("pin");
        m.add("");
        let mut expected: Vec<&str> = DEFAULT_SECRET_TAGS[1..].to_vec();
        expected.push("pin");
        assert_eq!(m.tags(), expected);
        assert_eq!(m.mask(br#"{"cardPin":"1234"}"#), r#"{"cardPin":"***"}"#);
    }

    #[test]
    fn unicode_keys_are_lowercased() {
        let m = SecretMasker::with_tags(["пароль"]);
        assert!(m.is_secret_key("МойПАРОЛЬ"));
        assert!(!m.is_secret_key("password"));
        // The Kelvin sign lower-cases to `k`, as with Go's strings.ToLower.
        assert!(SecretMasker::new().is_secret_key("TO\u{212A}EN"));
    }

    #[test]
    fn shared_across_threads() {
        let m = Arc::new(SecretMasker::new());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let tag = format!("tag{i}");
                    m.add(&tag);
                    let out = m.mask(format!(r#"{{"{tag}":"v","token":"t"}}"#).as_bytes());
                    assert_eq!(out, format!(r#"{{"{tag}":"***","token":"***"}}"#));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(m.tags().len(), DEFAULT_SECRET_TAGS.len() + 4);
    }
}
