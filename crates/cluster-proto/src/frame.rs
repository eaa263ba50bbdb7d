//! The ETP v4 frame: `<eventName>||<ackId>||<data>` in one WebSocket text message.
//!
//! Decoding borrows nothing and copies nothing: the name of a [`Frame`] is a [`Bytes`] slice
//! of the received message and its data is the message itself, advanced past the second
//! separator, so decoding is a scan for two separators (eight bytes at a time), a strict
//! number parse and one reference-count bump. It allocates nothing when the message buffer is
//! already shared (as the buffers a WebSocket reader splits off are); a `Bytes` that owns a
//! `Vec` and was never cloned makes `bytes` allocate its shared header once, at that first
//! clone. Encoding writes into a caller's buffer ([`BufMut`]), so a writer can reuse one
//! buffer for every frame.
//!
//! Rules (docs/protocol.md §2):
//! - split on the first two `||` only: the data may contain `||`, the name never does;
//! - empty data is sent as `<name>||<ackId>` and a two-part frame decodes to empty data;
//! - the ack id is a decimal `u64`, `0` meaning "no acknowledgement wanted";
//! - a name starting with `__ack_` is an acknowledgement of the event named after it.
//!
//! We are stricter than the Go peer on the ack id: only ASCII digits that fit a `u64` are
//! accepted, so `-1`, `+1`, an empty id, spaces and overflow are [`DecodeError::InvalidAckId`].

use bytes::{Buf, BufMut, Bytes};
use std::fmt;

/// The separator between the parts of a frame.
pub const SEPARATOR: &[u8; 2] = b"||";

/// The prefix of an acknowledgement frame's name: `__ack_<event>`.
pub const ACK_PREFIX: &str = "__ack_";

/// One decoded ETP frame.
///
/// The name is checked UTF-8; the data is the raw bytes after the second separator.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    name: Bytes,
    ack_id: u64,
    data: Bytes,
}

/// Why a received message is not a valid ETP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message has no `||` separator at all (fewer than two parts).
    #[error("malformed ETP frame: no `||` separator")]
    MissingSeparator,
    /// The event name (before the first `||`) is empty.
    #[error("malformed ETP frame: empty event name")]
    EmptyName,
    /// The event name is not valid UTF-8.
    #[error("malformed ETP frame: event name is not UTF-8")]
    NameNotUtf8,
    /// The ack id is not a decimal number that fits a `u64` (digits only: no sign, no space).
    #[error("malformed ETP frame: invalid ack id {0:?}")]
    InvalidAckId(String),
}

impl Frame {
    /// Builds a frame from its parts.
    ///
    /// # Errors
    /// [`DecodeError::EmptyName`] for an empty name, [`DecodeError::MissingSeparator`] when the
    /// name contains `||` or ends with `|` (it could not be decoded back).
    pub fn new(name: &str, ack_id: u64, data: Bytes) -> Result<Self, DecodeError> {
        if name.is_empty() {
            return Err(DecodeError::EmptyName);
        }
        if find_separator(name.as_bytes()).is_some() || name.ends_with('|') {
            return Err(DecodeError::MissingSeparator);
        }
        Ok(Self {
            name: Bytes::copy_from_slice(name.as_bytes()),
            ack_id,
            data,
        })
    }

    /// Decodes one received message without copying it.
    ///
    /// # Errors
    /// A [`DecodeError`] when the message is not a valid frame; the caller reports it and
    /// goes on reading (the connection stays open, as with the Go peer).
    ///
    /// # Examples
    /// ```
    /// use bytes::Bytes;
    /// use cluster_proto::frame::Frame;
    ///
    /// let frame = Frame::decode(Bytes::from_static(b"CONFIG:SEND_CONFIG_CHANGED||0||{\"a||b\":1}")).unwrap();
    /// assert_eq!(frame.name(), "CONFIG:SEND_CONFIG_CHANGED");
    /// assert_eq!(frame.ack_id(), 0);
    /// assert_eq!(&frame.data()[..], b"{\"a||b\":1}");
    /// ```
    pub fn decode(mut message: Bytes) -> Result<Self, DecodeError> {
        let raw = &message[..];
        let first = find_separator(raw).ok_or(DecodeError::MissingSeparator)?;
        if first == 0 {
            return Err(DecodeError::EmptyName);
        }
        let rest = &raw[first + 2..];
        let (id_end, data_start) = match find_separator(rest) {
            Some(second) => (first + 2 + second, first + 2 + second + 2),
            None => (raw.len(), raw.len()),
        };
        let ack_id = parse_ack_id(&raw[first + 2..id_end])?;
        let name = &raw[..first];
        // `is_ascii` is inlined and word-at-a-time: event names are ASCII.
        if !name.is_ascii() && std::str::from_utf8(name).is_err() {
            return Err(DecodeError::NameNotUtf8);
        }
        let name = message.slice(..first);
        // The data is the message itself, advanced: no second reference-count bump.
        message.advance(data_start);
        Ok(Self {
            name,
            ack_id,
            data: message,
        })
    }

    /// The event name.
    #[must_use]
    pub fn name(&self) -> &str {
        // Checked at construction; a failure here would be a bug, never a panic.
        std::str::from_utf8(&self.name).unwrap_or_default()
    }

    /// The ack id: `0` when no acknowledgement is wanted.
    #[must_use]
    pub fn ack_id(&self) -> u64 {
        self.ack_id
    }

    /// The data: the bytes after the second separator (empty for a two-part frame).
    #[must_use]
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Takes the data out of the frame.
    #[must_use]
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// When this frame acknowledges an event: the name of that event (after `__ack_`).
    #[must_use]
    pub fn acked_event(&self) -> Option<&str> {
        self.name().strip_prefix(ACK_PREFIX)
    }

    /// Whether this frame is an acknowledgement (`__ack_` prefix): never dispatched to handlers.
    #[must_use]
    pub fn is_ack(&self) -> bool {
        self.name.starts_with(ACK_PREFIX.as_bytes())
    }

    /// Encodes this frame into `buf` (see [`encode`]).
    pub fn encode_into<B: BufMut>(&self, buf: &mut B) {
        encode(self.name(), self.ack_id, &self.data, buf);
    }

    /// The size of the encoded frame in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.name(), self.ack_id, &self.data)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 256;
        let shown = &self.data[..self.data.len().min(SHOWN)];
        f.debug_struct("Frame")
            .field("name", &self.name())
            .field("ack_id", &self.ack_id)
            .field("data", &String::from_utf8_lossy(shown))
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Encodes `<name>||<ack_id>||<data>` into `buf`, omitting the third part when `data` is empty
/// (as the Go peer does).
///
/// The caller guarantees that `name` contains no `||` (every event name of the protocol is a
/// constant; see [`crate::event`]).
///
/// # Examples
/// ```
/// let mut buf = Vec::new();
/// cluster_proto::frame::encode("MODULE:READY", 3, b"{}", &mut buf);
/// assert_eq!(buf, b"MODULE:READY||3||{}");
/// buf.clear();
/// cluster_proto::frame::encode("__ack_MODULE:READY", 3, b"", &mut buf);
/// assert_eq!(buf, b"__ack_MODULE:READY||3");
/// ```
pub fn encode<B: BufMut>(name: &str, ack_id: u64, data: &[u8], buf: &mut B) {
    let mut digits = [0u8; 20];
    let id = format_u64(ack_id, &mut digits);
    buf.put_slice(name.as_bytes());
    buf.put_slice(SEPARATOR);
    buf.put_slice(id);
    if !data.is_empty() {
        buf.put_slice(SEPARATOR);
        buf.put_slice(data);
    }
}

/// Encodes an acknowledgement of `event` (`__ack_<event>||<ack_id>||<data>`) into `buf`.
pub fn encode_ack<B: BufMut>(event: &str, ack_id: u64, data: &[u8], buf: &mut B) {
    buf.put_slice(ACK_PREFIX.as_bytes());
    encode(event, ack_id, data, buf);
}

/// The size in bytes of the frame [`encode`] writes.
#[must_use]
pub fn encoded_len(name: &str, ack_id: u64, data: &[u8]) -> usize {
    let mut digits = [0u8; 20];
    let id_len = format_u64(ack_id, &mut digits).len();
    let data_len = if data.is_empty() { 0 } else { 2 + data.len() };
    name.len() + 2 + id_len + data_len
}

/// Encodes a frame into a new, exactly sized [`Bytes`].
#[must_use]
pub fn encode_to_bytes(name: &str, ack_id: u64, data: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(encoded_len(name, ack_id, data));
    encode(name, ack_id, data, &mut buf);
    Bytes::from(buf)
}

/// Encodes an acknowledgement of `event` into a new, exactly sized [`Bytes`] (see
/// [`encode_ack`]).
#[must_use]
pub fn encode_ack_to_bytes(event: &str, ack_id: u64, data: &[u8]) -> Bytes {
    let len = ACK_PREFIX.len() + encoded_len(event, ack_id, data);
    let mut buf = Vec::with_capacity(len);
    encode_ack(event, ack_id, data, &mut buf);
    Bytes::from(buf)
}

fn find_separator(haystack: &[u8]) -> Option<usize> {
    // Eight bytes at a time (SWAR): flag every `|` byte exactly, then every `|` followed by a
    // `|`. Windows overlap by one byte so that a pair straddling two windows is seen.
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const PIPES: u64 = u64::from_ne_bytes([b'|'; 8]);
    let mut at = 0;
    while let Some(window) = haystack.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let x = u64::from_le_bytes(*window) ^ PIPES;
        // The high bit of byte i is set exactly when window[i] is `|` (x's byte is zero).
        let pipes = !(((x & LOW7) + LOW7) | x | LOW7);
        let pairs = pipes & (pipes >> 8);
        if pairs != 0 {
            return Some(at + (pairs.trailing_zeros() / 8) as usize);
        }
        at += 7;
    }
    haystack
        .get(at..)?
        .windows(2)
        .position(|w| w == SEPARATOR)
        .map(|p| at + p)
}

fn parse_ack_id(raw: &[u8]) -> Result<u64, DecodeError> {
    let invalid = || DecodeError::InvalidAckId(String::from_utf8_lossy(raw).into_owned());
    if raw.is_empty() {
        return Err(invalid());
    }
    let mut value: u64 = 0;
    for &b in raw {
        if !b.is_ascii_digit() {
            return Err(invalid());
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(invalid)?;
    }
    Ok(value)
}

fn format_u64(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &digits[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<Frame, DecodeError> {
        Frame::decode(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn decodes_three_parts() {
        let f = decode("MODULE:READY||3||{\"a\":1}").unwrap();
        assert_eq!(f.name(), "MODULE:READY");
        assert_eq!(f.ack_id(), 3);
        assert_eq!(&f.data()[..], b"{\"a\":1}");
        assert!(!f.is_ack());
    }

    #[test]
    fn two_parts_decode_to_empty_data() {
        let f = decode("__ack_MODULE:READY||3").unwrap();
        assert!(f.data().is_empty());
        assert!(f.is_ack());
        assert_eq!(f.acked_event(), Some("MODULE:READY"));
    }

    #[test]
    fn data_keeps_separators() {
        let f = decode("E||0||a||b||||c").unwrap();
        assert_eq!(&f.data()[..], b"a||b||||c");
        let f = decode("E||0||").unwrap();
        assert!(f.data().is_empty());
        let f = decode("E||0||||").unwrap();
        assert_eq!(&f.data()[..], b"||");
    }

    #[test]
    fn single_pipes_are_not_separators() {
        let f = decode("E|x||7||d|e").unwrap();
        assert_eq!(f.name(), "E|x");
        assert_eq!(f.ack_id(), 7);
        assert_eq!(&f.data()[..], b"d|e");
    }

    #[test]
    fn decoding_does_not_copy() {
        let msg = Bytes::from_static(b"E||1||payload");
        let f = Frame::decode(msg.clone()).unwrap();
        assert_eq!(f.data().as_ptr(), msg[6..].as_ptr());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode("no separator"), Err(DecodeError::MissingSeparator));
        assert_eq!(decode(""), Err(DecodeError::MissingSeparator));
        assert_eq!(decode("E|0|x"), Err(DecodeError::MissingSeparator));
        assert_eq!(decode("||1||x"), Err(DecodeError::EmptyName));
        for bad in [
            "-1",
            "+1",
            "",
            " 1",
            "1 ",
            "0x1",
            "18446744073709551616",
            "1.0",
        ] {
            assert_eq!(
                decode(&format!("E||{bad}||x")),
                Err(DecodeError::InvalidAckId(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            Frame::decode(Bytes::from_static(b"\xff\xfe||1")),
            Err(DecodeError::NameNotUtf8)
        );
    }

    #[test]
    fn separator_search_matches_a_naive_one() {
        // Every string of up to 18 bytes over {a, |} whose bits are taken from `n`: covers
        // pairs at every offset of the eight-byte windows and across them.
        for len in 0..=18usize {
            for n in 0u32..(1 << len.min(14)) {
                let s: Vec<u8> = (0..len)
                    .map(|i| if (n >> (i % 14)) & 1 == 1 { b'|' } else { b'a' })
                    .collect();
                let naive = s.windows(2).position(|w| w == b"||");
                assert_eq!(
                    find_separator(&s),
                    naive,
                    "{:?}",
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }

    #[test]
    fn accepts_max_ack_id_and_leading_zeros() {
        assert_eq!(
            decode("E||18446744073709551615").unwrap().ack_id(),
            u64::MAX
        );
        assert_eq!(decode("E||007||x").unwrap().ack_id(), 7);
    }

    #[test]
    fn encodes_like_go() {
        let mut buf = Vec::new();
        encode("CONFIG:SEND_CONFIG_WHEN_CONNECTED", 0, b"{}", &mut buf);
        assert_eq!(buf, b"CONFIG:SEND_CONFIG_WHEN_CONNECTED||0||{}");
        buf.clear();
        encode_ack("MODULE:SEND_CONFIG_SCHEMA", 1, b"ok", &mut buf);
        assert_eq!(buf, b"__ack_MODULE:SEND_CONFIG_SCHEMA||1||ok");
        assert_eq!(encoded_len("E", u64::MAX, b""), 1 + 2 + 20);
        assert_eq!(&encode_to_bytes("E", 10, b"x")[..], b"E||10||x");
    }

    #[test]
    fn new_rejects_unencodable_names() {
        assert!(Frame::new("", 0, Bytes::new()).is_err());
        assert!(Frame::new("a||b", 0, Bytes::new()).is_err());
        assert!(Frame::new("a|", 0, Bytes::new()).is_err());
        let f = Frame::new("E", 5, Bytes::from_static(b"d")).unwrap();
        let mut buf = Vec::new();
        f.encode_into(&mut buf);
        assert_eq!(buf.len(), f.encoded_len());
        assert_eq!(Frame::decode(Bytes::from(buf)).unwrap(), f);
    }
}
