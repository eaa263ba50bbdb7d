//! A pass-through HPACK rewriter for the [`authority`](crate::authority) filter: it follows the
//! client's dynamic table and rewrites one header block into a block that means the same to a
//! decoder whose dynamic table stays empty, minus every `:authority` with an empty value.
//!
//! Field representations are copied byte for byte where they are stateless (static-table
//! references, literals with a literal or static name); a reference into the client's dynamic
//! table becomes a literal *without indexing* carrying the entry's name and value as the client
//! encoded them (Huffman or not); a literal *with* incremental indexing is recorded in our copy
//! of the table and forwarded without indexing; size updates are applied and not forwarded.
//! Strings are Huffman-decoded only where their decoded length (table accounting) or text (is
//! this name `:authority`?) is needed.

use std::collections::VecDeque;

/// The names of the static table (RFC 7541, appendix A), index 1 first. Values are never
/// needed: a static reference is forwarded as it is.
const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

/// Index of `:authority` in the static table (its static value is the empty string).
const AUTHORITY_INDEX: usize = 1;

/// A string as the client encoded it.
#[derive(Debug, Clone)]
struct Str {
    huffman: bool,
    bytes: Box<[u8]>,
}

/// A literal name, with what the table needs of it worked out once (shared by the entries
/// and references that use it).
#[derive(Debug)]
struct LitName {
    s: Str,
    /// The decoded length.
    len: usize,
    /// Whether it is `:authority`.
    authority: bool,
}

#[derive(Debug, Clone)]
enum Name {
    Static(usize),
    Literal(std::sync::Arc<LitName>),
}

impl Name {
    fn len(&self) -> usize {
        match self {
            Self::Static(i) => STATIC_NAMES[i - 1].len(),
            Self::Literal(l) => l.len,
        }
    }

    fn is_authority(&self) -> bool {
        match self {
            Self::Static(i) => *i == AUTHORITY_INDEX,
            Self::Literal(l) => l.authority,
        }
    }
}

#[derive(Debug)]
struct Entry {
    name: Name,
    value: Str,
    size: usize,
    empty_authority: bool,
}

/// Why a block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("truncated header block")]
    Truncated,
    /// An integer is larger than 2^28.
    #[error("integer overflow")]
    Overflow,
    /// Index 0, or an index past both tables.
    #[error("invalid index")]
    Index,
    /// A Huffman string that does not decode.
    #[error("invalid Huffman string")]
    Huffman,
    /// A dynamic table size update above the allowed size, or after a field.
    #[error("invalid dynamic table size update")]
    SizeUpdate,
}

/// The client's dynamic table as this side follows it.
pub(crate) struct Rewriter {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
    allowed: usize,
    scratch: Vec<u8>,
    /// Whether the server's table still mirrors the client's (see [`Rewriter::rewrite`]).
    mirror: bool,
}

impl Rewriter {
    /// A rewriter whose table may grow to `allowed` bytes (the `SETTINGS_HEADER_TABLE_SIZE`
    /// the server announced; 4096 by default).
    pub(crate) fn new(allowed: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max: allowed,
            allowed,
            scratch: Vec::new(),
            mirror: true,
        }
    }

    /// Rewrites `block` into `out`.
    ///
    /// While the client has never put an empty `:authority` into its dynamic table (grpc-go
    /// sends it as the static entry 1), the server's table can mirror the client's: every
    /// representation is copied byte for byte (table additions, references and size updates
    /// included) except the empty `:authority`, which is stateless and just left out. The
    /// first time the client *indexes* an empty `:authority`, the tables would drift apart, so
    /// from then on the connection is rewritten self-contained: references into the client's
    /// table become literals without indexing, additions are recorded here and forwarded
    /// without indexing, size updates are not forwarded, and the server's table is never
    /// referenced again.
    pub(crate) fn rewrite(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut seen_field = false;
        while pos < block.len() {
            let start = pos;
            let first = block[pos];
            if first & 0x80 != 0 {
                // Indexed field.
                seen_field = true;
                let index = int(block, &mut pos, 7)?;
                match index {
                    0 => return Err(HpackError::Index),
                    AUTHORITY_INDEX => {}
                    2..=61 => out.extend_from_slice(&block[start..pos]),
                    _ if self.mirror => {
                        // Mirrored tables never hold an empty `:authority`.
                        self.entries.get(index - 62).ok_or(HpackError::Index)?;
                        out.extend_from_slice(&block[start..pos]);
                    }
                    _ => {
                        let entry = self.entries.get(index - 62).ok_or(HpackError::Index)?;
                        if !entry.empty_authority {
                            emit_literal(out, 0x00, &entry.name, &entry.value);
                        }
                    }
                }
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing.
                seen_field = true;
                let index = int(block, &mut pos, 6)?;
                let name = self.name(block, &mut pos, index)?;
                let value = string(block, &mut pos)?;
                let name_len = name.len();
                let value_len = self.decoded_len(value.0, value.1)?;
                let empty_authority = value_len == 0 && name.is_authority();
                let value = Str {
                    huffman: value.0,
                    bytes: value.1.into(),
                };
                if empty_authority {
                    self.mirror = false;
                } else if self.mirror {
                    out.extend_from_slice(&block[start..pos]);
                } else {
                    emit_literal(out, 0x00, &name, &value);
                }
                self.insert(Entry {
                    name,
                    value,
                    size: name_len + value_len + 32,
                    empty_authority,
                });
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: applied here, not forwarded.
                let size = int(block, &mut pos, 5)?;
                if seen_field || size > self.allowed {
                    return Err(HpackError::SizeUpdate);
                }
                self.max = size;
                self.evict(0);
                if self.mirror {
                    out.extend_from_slice(&block[start..pos]);
                }
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                seen_field = true;
                let flag = first & 0x10;
                let index = int(block, &mut pos, 4)?;
                if index == 0 && self.mirror {
                    // A literal name, copied as it is: only whether it is `:authority`
                    // matters, so no `Name` is made (h2 sends every call's `x-request-id`
                    // this way, see `GrpcClient`).
                    let (huffman, name) = string(block, &mut pos)?;
                    let authority = if huffman {
                        self.huffman(name)?;
                        self.scratch == b":authority"
                    } else {
                        name == b":authority"
                    };
                    let value = string(block, &mut pos)?;
                    if !(authority && self.decoded_len(value.0, value.1)? == 0) {
                        out.extend_from_slice(&block[start..pos]);
                    }
                    continue;
                }
                let name = self.name(block, &mut pos, index)?;
                let value = string(block, &mut pos)?;
                let empty_authority =
                    name.is_authority() && self.decoded_len(value.0, value.1)? == 0;
                if empty_authority {
                    continue;
                }
                if index >= 62 && !self.mirror {
                    let value = Str {
                        huffman: value.0,
                        bytes: value.1.into(),
                    };
                    emit_literal(out, flag, &name, &value);
                } else {
                    out.extend_from_slice(&block[start..pos]);
                }
            }
        }
        Ok(())
    }

    fn name(&mut self, block: &[u8], pos: &mut usize, index: usize) -> Result<Name, HpackError> {
        Ok(match index {
            0 => {
                let (huffman, bytes) = string(block, pos)?;
                let (len, authority) = if huffman {
                    self.huffman(bytes)?;
                    (self.scratch.len(), self.scratch == b":authority")
                } else {
                    (bytes.len(), bytes == b":authority")
                };
                Name::Literal(std::sync::Arc::new(LitName {
                    s: Str {
                        huffman,
                        bytes: bytes.into(),
                    },
                    len,
                    authority,
                }))
            }
            1..=61 => Name::Static(index),
            _ => self
                .entries
                .get(index - 62)
                .ok_or(HpackError::Index)?
                .name
                .clone(),
        })
    }

    fn decoded_len(&mut self, huffman: bool, bytes: &[u8]) -> Result<usize, HpackError> {
        if !huffman {
            return Ok(bytes.len());
        }
        self.huffman(bytes)?;
        Ok(self.scratch.len())
    }

    fn huffman(&mut self, bytes: &[u8]) -> Result<(), HpackError> {
        self.scratch.clear();
        httlib_huffman::decode(
            bytes,
            &mut self.scratch,
            httlib_huffman::DecoderSpeed::FiveBits,
        )
        .map_err(|_| HpackError::Huffman)
    }

    fn insert(&mut self, entry: Entry) {
        if entry.size > self.max {
            // Larger than the table: the table empties and nothing is added (RFC 7541 §4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(entry.size);
        self.size += entry.size;
        self.entries.push_front(entry);
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.entries.pop_back() {
                Some(old) => self.size -= old.size,
                None => break,
            }
        }
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); at most 2^28.
fn int(block: &[u8], pos: &mut usize, n: u8) -> Result<usize, HpackError> {
    let mask = (1usize << n) - 1;
    let first = usize::from(*block.get(*pos).ok_or(HpackError::Truncated)?) & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = first;
    let mut shift = 0;
    loop {
        let b = *block.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if value > 1 << 28 {
            return Err(HpackError::Overflow);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        if shift > 28 {
            return Err(HpackError::Overflow);
        }
    }
}

/// A string literal: (Huffman?, the encoded bytes).
fn string<'a>(block: &'a [u8], pos: &mut usize) -> Result<(bool, &'a [u8]), HpackError> {
    let huffman = *block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = int(block, pos, 7)?;
    let end = pos.checked_add(len).ok_or(HpackError::Overflow)?;
    let bytes = block.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    Ok((huffman, bytes))
}

fn encode_int(out: &mut Vec<u8>, mut value: usize, n: u8, high: u8) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(high | value as u8);
        return;
    }
    out.push(high | mask as u8);
    value -= mask;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn encode_str(out: &mut Vec<u8>, s: &Str) {
    encode_int(out, s.bytes.len(), 7, if s.huffman { 0x80 } else { 0 });
    out.extend_from_slice(&s.bytes);
}

/// A literal without indexing (`flag` 0x00) or never indexed (0x10), name by static index or
/// literal, strings as the client encoded them.
fn emit_literal(out: &mut Vec<u8>, flag: u8, name: &Name, value: &Str) {
    match name {
        Name::Static(i) => encode_int(out, *i, 4, flag),
        Name::Literal(l) => {
            out.push(flag);
            encode_str(out, &l.s);
        }
    }
    encode_str(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_names_match_an_independent_decoder() {
        let mut d = loona_hpack::Decoder::new();
        for (i, name) in STATIC_NAMES.iter().enumerate() {
            let fields = d.decode(&[0x80 | (i as u8 + 1)]).unwrap();
            assert_eq!(fields[0].0, name.as_bytes(), "index {}", i + 1);
        }
    }

    /// Header lists through a real encoder (dynamic table, evictions), through the rewriter,
    /// decoded by a fresh decoder: the same lists, minus the empty `:authority`.
    #[test]
    fn random_header_lists_survive_minus_the_empty_authority() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut encoder = loona_hpack::Encoder::new();
        let mut rewriter = Rewriter::new(4096);
        let mut decoder = loona_hpack::Decoder::new();
        for round in 0..500 {
            let mut list: Vec<(Vec<u8>, Vec<u8>)> = vec![
                (b":method".to_vec(), b"POST".to_vec()),
                (b":path".to_vec(), b"/isp.BackendService/Request".to_vec()),
            ];
            if next() % 2 == 0 {
                list.push((b":authority".to_vec(), Vec::new()));
            } else {
                list.push((
                    b":authority".to_vec(),
                    format!("h{}", next() % 3).into_bytes(),
                ));
            }
            for _ in 0..(next() % 6) {
                let name = format!("x-h{}", next() % 8).into_bytes();
                let value = "v".repeat((next() % 300) as usize).into_bytes();
                list.push((name, value));
            }
            let block = encoder.encode(list.iter().map(|(n, v)| (&n[..], &v[..])));
            let mut out = Vec::new();
            rewriter.rewrite(&block, &mut out).unwrap();
            let got = decoder.decode(&out).unwrap();
            let want: Vec<_> = list
                .into_iter()
                .filter(|(n, v)| !(n == b":authority" && v.is_empty()))
                .collect();
            assert_eq!(got, want, "round {round}");
        }
    }

    fn huff(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        httlib_huffman::encode(text, &mut out).unwrap();
        out
    }

    fn lit(out: &mut Vec<u8>, huffman: bool, bytes: &[u8]) {
        encode_int(out, bytes.len(), 7, if huffman { 0x80 } else { 0 });
        out.extend_from_slice(bytes);
    }

    #[test]
    fn huffman_names_and_values_are_understood() {
        let authority = huff(b":authority");
        let (key, value) = (huff(b"custom-key"), huff(b"custom-value"));
        // `:authority` "" with a Huffman literal name, indexed (dynamic 62), then referenced;
        // a Huffman `custom-key: custom-value`, indexed (pushes the first to 63), referenced
        // by index, and referenced as a name with another value.
        let mut block = vec![0x40];
        lit(&mut block, true, &authority);
        lit(&mut block, true, b"");
        block.push(0xbe);
        block.push(0x40);
        lit(&mut block, true, &key);
        lit(&mut block, true, &value);
        block.push(0xbe);
        block.push(0xbf);
        block.push(0x0f);
        block.push(62 - 15);
        lit(&mut block, false, b"other");
        let mut r = Rewriter::new(4096);
        let mut out = Vec::new();
        r.rewrite(&block, &mut out).unwrap();
        let got = loona_hpack::Decoder::new().decode(&out).unwrap();
        let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(
            got,
            vec![
                kv("custom-key", "custom-value"),
                kv("custom-key", "custom-value"),
                kv("custom-key", "other"),
            ]
        );
    }

    /// How h2 sends a sensitive value whose name is in no table (`GrpcClient`'s request id):
    /// never indexed, literal name; copied byte for byte, the empty `:authority` still left
    /// out, a bad Huffman name still an error.
    #[test]
    fn literal_names_without_indexing_pass_through() {
        let mut r = Rewriter::new(4096);
        let mut block = vec![0x10];
        lit(&mut block, true, &huff(b"x-request-id"));
        lit(&mut block, true, &huff(b"0123456789abcdef0123456789abcdef"));
        block.push(0x00);
        lit(&mut block, false, b"x-plain");
        lit(&mut block, false, b"1");
        let mut out = Vec::new();
        r.rewrite(&block, &mut out).unwrap();
        assert_eq!(out, block);
        for huffman in [true, false] {
            let mut authority = vec![0x10];
            let name = if huffman {
                huff(b":authority")
            } else {
                b":authority".to_vec()
            };
            lit(&mut authority, huffman, &name);
            lit(&mut authority, huffman, b"");
            out.clear();
            r.rewrite(&[&authority[..], &block[..]].concat(), &mut out)
                .unwrap();
            assert_eq!(out, block);
        }
        let mut bad = vec![0x10];
        lit(&mut bad, true, &[0xff, 0xff, 0xff, 0xff]);
        lit(&mut bad, false, b"v");
        assert_eq!(r.rewrite(&bad, &mut out), Err(HpackError::Huffman));
    }

    #[test]
    fn references_made_before_the_switch_are_expanded_after_it() {
        let mut r = Rewriter::new(4096);
        let mut d = loona_hpack::Decoder::new();
        let mut run = |block: &[u8]| {
            let mut out = Vec::new();
            r.rewrite(block, &mut out).unwrap();
            d.decode(&out).unwrap()
        };
        let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        // Mirrored: `x-a: 1` indexed (62 on both sides), then referenced.
        assert_eq!(
            run(&[0x40, 3, b'x', b'-', b'a', 1, b'1', 0xbe]),
            [kv("x-a", "1"), kv("x-a", "1")]
        );
        // The client indexes an empty `:authority`: x-a is now its 63 but still the server's
        // 62; the reference must arrive as x-a all the same.
        assert_eq!(run(&[0x41, 0x00, 0xbf, 0xbe]), [kv("x-a", "1")]);
        // And later blocks too, with new entries.
        assert_eq!(
            run(&[0x40, 3, b'x', b'-', b'b', 1, b'2', 0xbe, 0xc0]),
            [kv("x-b", "2"), kv("x-b", "2"), kv("x-a", "1")]
        );
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut r = Rewriter::new(4096);
        let mut out = Vec::new();
        assert_eq!(r.rewrite(&[0x80], &mut out), Err(HpackError::Index));
        assert_eq!(r.rewrite(&[0xbe], &mut out), Err(HpackError::Index));
        assert_eq!(
            r.rewrite(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], &mut out),
            Err(HpackError::Overflow)
        );
        assert_eq!(
            r.rewrite(&[0x40, 0x05, b'a'], &mut out),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            r.rewrite(&[0x3f, 0xe2, 0x1f], &mut out),
            Err(HpackError::SizeUpdate)
        );
        assert_eq!(
            r.rewrite(&[0x82, 0x20], &mut out),
            Err(HpackError::SizeUpdate)
        );
        // EOS inside a Huffman string that must be decoded (an indexed literal's value).
        assert_eq!(
            r.rewrite(&[0x41, 0x84, 0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HpackError::Huffman)
        );
    }
}
