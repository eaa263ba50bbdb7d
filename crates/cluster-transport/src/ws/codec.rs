//! WebSocket framing (RFC 6455 §5), sans-IO: frame headers read and written, masks applied,
//! and every rule a received frame must keep, each broken one a [`WsViolation`].
//!
//! Only the frame layer is here; what a frame means (a message assembled from fragments, a
//! ping answered, a close echoed) is [`super::frames`]'s.

use bytes::BufMut;

/// The largest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub(crate) const MAX_HEADER: usize = 14;
/// The largest payload of a control frame (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// Which end of the connection this side is: a client masks what it sends and refuses masked
/// frames, a server the reverse (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The side that dialed.
    Client,
    /// The side that accepted.
    Server,
}

/// A frame's opcode (RFC 6455 §5.2); the reserved ones are refused when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// How the peer broke the WebSocket framing rules (RFC 6455 §5 and §7.4): the source of
/// [`TransportError::Violation`](crate::TransportError::Violation). Each one closes the
/// connection with the code [`WsViolation::close_code`] gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsViolation {
    /// A reserved bit (RSV1–3) was set; no extension was negotiated.
    #[error("a reserved bit is set")]
    ReservedBits,
    /// A reserved opcode (3–7, 0xB–0xF).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client sent a frame without a mask.
    #[error("a client frame without a mask")]
    Unmasked,
    /// A server sent a masked frame.
    #[error("a masked server frame")]
    Masked,
    /// A control frame without FIN.
    #[error("a fragmented control frame")]
    FragmentedControl,
    /// A control frame over 125 bytes.
    #[error("a control frame over 125 bytes")]
    ControlTooLong,
    /// A 64-bit payload length with its most significant bit set.
    #[error("a payload length with the most significant bit set")]
    LengthTooLong,
    /// A continuation frame with no fragmented message to continue.
    #[error("a continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame before the fragmented message was finished.
    #[error("a new message before the fragmented one was finished")]
    UnfinishedMessage,
    /// A close frame whose payload is one byte (a code is two).
    #[error("a close frame with a 1-byte payload")]
    CloseTooShort,
    /// A close code that may not be sent on the wire.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A text message, or a close reason, that is not UTF-8.
    #[error("text that is not UTF-8")]
    InvalidUtf8,
    /// A binary message: ETP is text only.
    #[error("binary messages are not supported")]
    Binary,
}

impl WsViolation {
    /// The close code this side sends for it (RFC 6455 §7.4.1): 1007 for text that is not
    /// UTF-8, 1003 for a binary message, 1002 for the rest.
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 => crate::CLOSE_INVALID_PAYLOAD,
            Self::Binary => crate::CLOSE_UNSUPPORTED_DATA,
            _ => crate::CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) opcode: Opcode,
    pub(crate) mask: Option<[u8; 4]>,
    /// The payload's length; under 2⁶³.
    pub(crate) len: u64,
    /// The header's own length, 2 to 14 bytes.
    pub(crate) size: usize,
}

/// Parses the header at the start of `buf` as `role` receives it. `Ok(None)`: more bytes
/// are needed. Every rule a header alone can break is checked here (the rest, which needs
/// the message state or the payload, is the caller's).
pub(crate) fn parse_header(buf: &[u8], role: Role) -> Result<Option<Header>, WsViolation> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(WsViolation::ReservedBits);
    }
    let fin = first & 0x80 != 0;
    let opcode =
        Opcode::from_bits(first & 0x0F).ok_or(WsViolation::ReservedOpcode(first & 0x0F))?;
    let masked = second & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(WsViolation::Unmasked),
        (Role::Client, true) => return Err(WsViolation::Masked),
        _ => {}
    }
    let short = second & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(WsViolation::FragmentedControl);
        }
        if usize::from(short) > MAX_CONTROL_PAYLOAD {
            return Err(WsViolation::ControlTooLong);
        }
    }
    let (len, mut size) = match short {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(WsViolation::LengthTooLong);
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let Some(bytes) = buf.get(size..size + 4) else {
            return Ok(None);
        };
        size += 4;
        Some(bytes.try_into().expect("4 bytes"))
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        len,
        size,
    }))
}

/// Writes a final frame's header for `len` payload bytes (the shortest length encoding),
/// with `mask` when given.
pub(crate) fn put_header(out: &mut impl BufMut, opcode: Opcode, len: usize, mask: Option<[u8; 4]>) {
    out.put_u8(0x80 | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(mask_bit | 126);
        out.put_u16(len);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
    if let Some(mask) = mask {
        out.put_slice(&mask);
    }
}

/// XORs `buf` with `mask` (RFC 6455 §5.3), starting at mask byte 0: masking and unmasking
/// are the same. Eight bytes at a time.
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Whether a close code may be sent on the wire (RFC 6455 §7.4): 1000–1003, 1007–1014 and
/// 3000–4999 (1004 is reserved; 1005, 1006 and 1015 are for reporting only).
pub(crate) fn close_code_is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads a received close frame's payload: its code (`None` when empty) and reason.
pub(crate) fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &str), WsViolation> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(WsViolation::CloseTooShort),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_is_sendable(code) {
                return Err(WsViolation::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsViolation::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §5.7's examples, as a client receives them (unmasked) and a server (masked).
    #[test]
    fn parses_the_rfc_examples() {
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let header = parse_header(&unmasked, Role::Client).unwrap().unwrap();
        assert_eq!(
            header,
            Header {
                fin: true,
                opcode: Opcode::Text,
                mask: None,
                len: 5,
                size: 2
            }
        );
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let header = parse_header(&masked, Role::Server).unwrap().unwrap();
        assert_eq!(header.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(header.size, 6);
        let mut payload = masked[6..].to_vec();
        apply_mask(&mut payload, header.mask.unwrap());
        assert_eq!(payload, b"Hello");
        // A fragmented unmasked text message: "Hel", then "lo".
        let first = parse_header(&[0x01, 0x03], Role::Client).unwrap().unwrap();
        assert!(!first.fin);
        assert_eq!(first.opcode, Opcode::Text);
        let last = parse_header(&[0x80, 0x02], Role::Client).unwrap().unwrap();
        assert!(last.fin);
        assert_eq!(last.opcode, Opcode::Continuation);
        // 256 bytes binary in one unmasked frame; 64 KiB in one.
        let header = parse_header(&[0x82, 0x7E, 0x01, 0x00], Role::Client)
            .unwrap()
            .unwrap();
        assert_eq!((header.len, header.size), (256, 4));
        let header = parse_header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00], Role::Client)
            .unwrap()
            .unwrap();
        assert_eq!((header.len, header.size), (65536, 10));
    }

    #[test]
    fn asks_for_more_until_the_header_is_whole() {
        let whole = [0x81, 0xFE, 0x01, 0x00, 1, 2, 3, 4];
        for end in 0..whole.len() {
            assert_eq!(parse_header(&whole[..end], Role::Server), Ok(None), "{end}");
        }
        let header = parse_header(&whole, Role::Server).unwrap().unwrap();
        assert_eq!((header.len, header.size), (256, 8));
    }

    #[test]
    fn refuses_what_a_header_alone_breaks() {
        let cases: [(&[u8], Role, WsViolation); 9] = [
            (&[0xC1, 0x80], Role::Server, WsViolation::ReservedBits),
            (&[0xA1, 0x80], Role::Server, WsViolation::ReservedBits),
            (&[0x91, 0x80], Role::Server, WsViolation::ReservedBits),
            (&[0x83, 0x80], Role::Server, WsViolation::ReservedOpcode(3)),
            (
                &[0x8B, 0x00],
                Role::Client,
                WsViolation::ReservedOpcode(0xB),
            ),
            (&[0x81, 0x00], Role::Server, WsViolation::Unmasked),
            (&[0x81, 0x80], Role::Client, WsViolation::Masked),
            (&[0x09, 0x00], Role::Client, WsViolation::FragmentedControl),
            (&[0x89, 0x7E], Role::Client, WsViolation::ControlTooLong),
        ];
        for (bytes, role, violation) in cases {
            assert_eq!(
                parse_header(bytes, role),
                Err(violation.clone()),
                "{bytes:?}"
            );
        }
        let huge = [0x81, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_header(&huge, Role::Client),
            Err(WsViolation::LengthTooLong)
        );
    }

    #[test]
    fn writes_the_shortest_header_and_reads_it_back() {
        for (len, size) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            for (mask, role) in [(None, Role::Client), (Some([1, 2, 3, 4]), Role::Server)] {
                let mut out = Vec::new();
                put_header(&mut out, Opcode::Text, len, mask);
                let extra = if mask.is_some() { 4 } else { 0 };
                assert_eq!(out.len(), size + extra);
                let header = parse_header(&out, role).unwrap().unwrap();
                assert_eq!(header.len, len as u64);
                assert_eq!(header.mask, mask);
                assert!(header.fin);
            }
        }
    }

    #[test]
    fn masking_twice_gives_the_payload_back_at_every_length() {
        let payload: Vec<u8> = (0..=255).collect();
        for len in 0..40 {
            let mut buf = payload[..len].to_vec();
            apply_mask(&mut buf, [0xde, 0xad, 0xbe, 0xef]);
            for (i, byte) in buf.iter().enumerate() {
                assert_eq!(*byte, payload[i] ^ [0xde, 0xad, 0xbe, 0xef][i % 4]);
            }
            apply_mask(&mut buf, [0xde, 0xad, 0xbe, 0xef]);
            assert_eq!(buf, payload[..len]);
        }
    }

    #[test]
    fn reads_close_payloads() {
        assert_eq!(parse_close(&[]), Ok((None, "")));
        assert_eq!(parse_close(&[0x03]), Err(WsViolation::CloseTooShort));
        assert_eq!(parse_close(b"\x03\xe8bye"), Ok((Some(1000), "bye")));
        assert_eq!(parse_close(b"\x0f\xa0"), Ok((Some(4000), "")));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                parse_close(&code.to_be_bytes()),
                Err(WsViolation::InvalidCloseCode(code)),
                "{code}"
            );
        }
        assert_eq!(parse_close(b"\x03\xe8\xff"), Err(WsViolation::InvalidUtf8));
    }
}
