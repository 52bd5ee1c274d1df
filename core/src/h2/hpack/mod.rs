//! HPACK header compression (RFC 7541), written here.
//!
//! The standalone HPACK crates were measured and rejected: `hpack` 0.3.0 and
//! `fluke-hpack` panic on the one-byte input from RUSTSEC-2023-0085, and
//! `httlib-hpack` panics on about 3% of random inputs. This one is tested on
//! the RFC's Appendix C examples, against the `h2` crate's encoder, and on
//! arbitrary bytes.
//!
//! * [`Decoder`] turns a header block into an ordered `Vec<Header>`. It keeps
//!   the dynamic table within the size the peer set (never above our
//!   `SETTINGS_HEADER_TABLE_SIZE`), enforces that size updates come first in
//!   a block, and counts the decoded header-list size (name + value + 32 per
//!   field, RFC 9113 §6.5.2) while decoding: past the limit it stops with
//!   [`HpackError::HeaderListTooLarge`] before copying the field that
//!   crossed it (an HPACK bomb costs no memory).
//! * [`Encoder`] is deterministic. By default ([`Encoder::new`]) it keeps no
//!   dynamic table: a field equal to a static-table entry is sent indexed,
//!   anything else as a literal without indexing (with the static name
//!   index when there is one), Huffman-coded when that is shorter. The
//!   peer's table size then never matters. [`Encoder::with_dynamic_table`]
//!   indexes every field, as the RFC's examples do.

mod huffman;
mod huffman_table;

pub use huffman::{decode as huffman_decode, encode as huffman_encode, encoded_len as huffman_len};

use crate::message::Header;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;

/// Per-entry overhead counted in table and header-list sizes (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// Largest integer the decoder accepts (RFC 7541 §5.1 leaves the bound to
/// the implementation); anything larger is [`HpackError::IntegerOverflow`].
pub const MAX_INTEGER: u64 = u32::MAX as u64;

/// Why a header block could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ended in the middle of a representation.
    #[error("header block truncated")]
    Truncated,
    /// An integer above [`MAX_INTEGER`] or with too many continuation bytes.
    #[error("HPACK integer overflows")]
    IntegerOverflow,
    /// Index 0, or an index past the end of the static and dynamic tables.
    #[error("HPACK index {0} is not in the table")]
    InvalidIndex(u64),
    /// Bad Huffman coding: EOS in the string, or padding that is longer
    /// than 7 bits or not all ones (RFC 7541 §5.2).
    #[error("invalid Huffman coding")]
    InvalidHuffman,
    /// A dynamic table size update after the first field of the block
    /// (RFC 7541 §4.2).
    #[error("dynamic table size update not at the start of the block")]
    SizeUpdateNotFirst,
    /// A size update above our SETTINGS_HEADER_TABLE_SIZE (RFC 7541 §6.3).
    #[error("dynamic table size update to {requested} exceeds the limit {limit}")]
    SizeUpdateTooLarge {
        /// The size the peer asked for.
        requested: u64,
        /// Our SETTINGS_HEADER_TABLE_SIZE.
        limit: usize,
    },
    /// We lowered SETTINGS_HEADER_TABLE_SIZE below the table's size and
    /// the next block did not start with a size update (RFC 7541 §4.2).
    #[error("required dynamic table size update missing")]
    SizeUpdateMissing,
    /// The decoded header list passed the limit (an HPACK bomb, or simply
    /// too large).
    #[error("decoded header list larger than {limit} bytes")]
    HeaderListTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
}

impl HpackError {
    /// The RFC 9113 error code for this failure: `ENHANCE_YOUR_CALM` for an
    /// oversized header list, `COMPRESSION_ERROR` otherwise. Either way the
    /// decoder state may be out of step with the peer's encoder, so it is a
    /// connection error.
    pub fn code(&self) -> super::ErrorCode {
        match self {
            HpackError::HeaderListTooLarge { .. } => super::ErrorCode::ENHANCE_YOUR_CALM,
            _ => super::ErrorCode::COMPRESSION_ERROR,
        }
    }
}

/// The static table (RFC 7541 Appendix A); entry `i` has index `i + 1`.
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The dynamic table (RFC 7541 §2.3.2): newest entry first, bounded by its
/// maximum size with oldest-first eviction.
#[derive(Clone, Debug, Default)]
pub struct DynamicTable {
    entries: VecDeque<Header>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    /// An empty table holding at most `max_size` bytes (RFC 7541 §4.1 sizes).
    pub fn new(max_size: usize) -> Self {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The current size: the sum of name + value + 32 over the entries.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The current maximum size.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at dynamic index `i` (0 is the newest).
    pub fn get(&self, i: usize) -> Option<&Header> {
        self.entries.get(i)
    }

    /// Changes the maximum size, evicting oldest entries as needed.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Adds an entry, evicting first; an entry larger than the maximum
    /// empties the table and is not added (RFC 7541 §4.4).
    pub fn insert(&mut self, header: Header) {
        let size = entry_size(&header);
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front(header);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(old) => self.size = self.size.saturating_sub(entry_size(&old)),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    fn find(&self, header: &Header) -> (Option<usize>, Option<usize>) {
        let mut name_match = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.name == header.name {
                if e.value == header.value {
                    return (Some(i), Some(i));
                }
                if name_match.is_none() {
                    name_match = Some(i);
                }
            }
        }
        (None, name_match)
    }
}

/// RFC 7541 §4.1 size of one entry, also the RFC 9113 §6.5.2 size of a field.
pub fn entry_size(header: &Header) -> usize {
    header
        .name
        .len()
        .saturating_add(header.value.len())
        .saturating_add(ENTRY_OVERHEAD)
}

/// Static table lookup: (index of a full match, index of a name match), 1-based.
fn find_static(header: &Header) -> (Option<usize>, Option<usize>) {
    let mut name_match = None;
    for (i, (name, value)) in STATIC_TABLE.iter().enumerate() {
        if header.name == name.as_bytes() {
            if header.value == value.as_bytes() {
                return (Some(i + 1), Some(i + 1));
            }
            if name_match.is_none() {
                name_match = Some(i + 1);
            }
        }
    }
    (None, name_match)
}

/// Reads an integer with an `n`-bit prefix (RFC 7541 §5.1) from `buf` at
/// `*pos`, advancing `*pos`.
pub fn decode_integer(buf: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<u64, HpackError> {
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mask: u8 = if prefix_bits >= 8 {
        0xff
    } else {
        (1u8 << prefix_bits) - 1
    };
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        // 5 continuation bytes carry 35 bits: more than MAX_INTEGER needs.
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
        value = value
            .checked_add(u64::from(byte & 0x7f) << shift)
            .ok_or(HpackError::IntegerOverflow)?;
        if value > MAX_INTEGER {
            return Err(HpackError::IntegerOverflow);
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Writes `value` with an `n`-bit prefix whose high bits are `flags`
/// (RFC 7541 §5.1).
pub fn encode_integer(dst: &mut BytesMut, flags: u8, prefix_bits: u8, value: u64) {
    let mask: u8 = if prefix_bits >= 8 {
        0xff
    } else {
        (1u8 << prefix_bits) - 1
    };
    if value < u64::from(mask) {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask);
    let mut rest = value - u64::from(mask);
    while rest >= 0x80 {
        dst.put_u8((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// When the encoder Huffman-codes string literals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Huffman {
    /// Never: strings go out raw.
    Never,
    /// Always.
    Always,
    /// When the coded form is strictly shorter (the default).
    WhenShorter,
}

/// Writes a string literal (RFC 7541 §5.2).
pub fn encode_string(dst: &mut BytesMut, s: &[u8], huffman: Huffman) {
    let coded_len = huffman_len(s);
    let use_huffman = match huffman {
        Huffman::Never => false,
        Huffman::Always => true,
        Huffman::WhenShorter => coded_len < s.len(),
    };
    if use_huffman {
        encode_integer(dst, 0x80, 7, coded_len as u64);
        let mut coded = Vec::with_capacity(coded_len);
        huffman_encode(s, &mut coded);
        dst.extend_from_slice(&coded);
    } else {
        encode_integer(dst, 0, 7, s.len() as u64);
        dst.extend_from_slice(s);
    }
}

/// Decodes header blocks from one peer; one per connection direction.
#[derive(Clone, Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the most the peer may size the table to.
    settings_limit: usize,
    /// Set when our limit dropped below the table size in force.
    size_update_required: bool,
    max_header_list_bytes: usize,
}

impl Decoder {
    /// A decoder whose dynamic table may grow to `settings_table_size`
    /// bytes (the value we advertise as SETTINGS_HEADER_TABLE_SIZE), with
    /// the header-list limit [`MAX_HEADER_LIST_BYTES`](super::MAX_HEADER_LIST_BYTES).
    pub fn new(settings_table_size: usize) -> Self {
        Decoder {
            table: DynamicTable::new(settings_table_size),
            settings_limit: settings_table_size,
            size_update_required: false,
            max_header_list_bytes: super::MAX_HEADER_LIST_BYTES,
        }
    }

    /// Sets the decoded header-list limit (RFC 9113 §6.5.2 sizes).
    pub fn set_max_header_list_bytes(&mut self, limit: usize) {
        self.max_header_list_bytes = limit;
    }

    /// Applies a new SETTINGS_HEADER_TABLE_SIZE of ours, once the peer has
    /// acknowledged it. Lowering it below the table's current maximum
    /// requires the peer to start its next block with a size update.
    pub fn set_settings_table_size(&mut self, size: usize) {
        self.settings_limit = size;
        if size < self.table.max_size() {
            self.table.set_max_size(size);
            self.size_update_required = true;
        }
    }

    /// The dynamic table, for inspection.
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Decodes one complete header block into fields in wire order.
    ///
    /// On error the decoder may be out of step with the peer's encoder:
    /// treat it as a connection error ([`HpackError::code`]).
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Header>, HpackError> {
        let mut headers = Vec::new();
        let mut list_size: usize = 0;
        let mut pos = 0;
        let limit = self.max_header_list_bytes;
        while pos < block.len() {
            let first = *block.get(pos).ok_or(HpackError::Truncated)?;
            if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before any field.
                if !headers.is_empty() {
                    return Err(HpackError::SizeUpdateNotFirst);
                }
                let size = decode_integer(block, &mut pos, 5)?;
                if size > self.settings_limit as u64 {
                    return Err(HpackError::SizeUpdateTooLarge {
                        requested: size,
                        limit: self.settings_limit,
                    });
                }
                self.table.set_max_size(size as usize);
                self.size_update_required = false;
                continue;
            }
            if self.size_update_required {
                return Err(HpackError::SizeUpdateMissing);
            }
            let header = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = decode_integer(block, &mut pos, 7)?;
                let header = self.lookup(index)?;
                add_size(&mut list_size, entry_size(&header), limit)?;
                header
            } else {
                // Literal (§6.2): with incremental indexing (01), never
                // indexed (0001) or without indexing (0000).
                let (prefix, index_it) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name_index = decode_integer(block, &mut pos, prefix)?;
                let name = if name_index == 0 {
                    read_string(block, &mut pos, list_size, limit)?
                } else {
                    self.lookup(name_index)?.name
                };
                let so_far = list_size
                    .saturating_add(name.len())
                    .saturating_add(ENTRY_OVERHEAD);
                let value = read_string(block, &mut pos, so_far, limit)?;
                let header = Header { name, value };
                add_size(&mut list_size, entry_size(&header), limit)?;
                if index_it {
                    self.table.insert(header.clone());
                }
                header
            };
            headers.push(header);
        }
        Ok(headers)
    }

    fn lookup(&self, index: u64) -> Result<Header, HpackError> {
        let i = usize::try_from(index).map_err(|_| HpackError::InvalidIndex(index))?;
        if i == 0 {
            return Err(HpackError::InvalidIndex(index));
        }
        if let Some((name, value)) = STATIC_TABLE.get(i - 1) {
            return Ok(Header::new(
                Bytes::from_static(name.as_bytes()),
                Bytes::from_static(value.as_bytes()),
            ));
        }
        self.table
            .get(i - 1 - STATIC_TABLE.len())
            .cloned()
            .ok_or(HpackError::InvalidIndex(index))
    }
}

/// Adds a field's size to the running header-list size, failing past `limit`.
fn add_size(list_size: &mut usize, size: usize, limit: usize) -> Result<(), HpackError> {
    let total = list_size.saturating_add(size);
    if total > limit {
        return Err(HpackError::HeaderListTooLarge { limit });
    }
    *list_size = total;
    Ok(())
}

/// Reads a string literal; `so_far` is the header-list size this string
/// adds to, so a string that would cross `limit` is refused before it is
/// copied or Huffman-decoded.
fn read_string(
    block: &[u8],
    pos: &mut usize,
    so_far: usize,
    limit: usize,
) -> Result<Bytes, HpackError> {
    let huffman = block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = decode_integer(block, pos, 7)?;
    let len = usize::try_from(len).map_err(|_| HpackError::Truncated)?;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    let room = limit.saturating_sub(so_far);
    if huffman {
        // A Huffman string decodes to at least len * 8 / 30 bytes.
        if len.saturating_mul(8) / 30 > room {
            return Err(HpackError::HeaderListTooLarge { limit });
        }
        let mut out = Vec::new();
        huffman_decode(raw, &mut out)?;
        if out.len() > room {
            return Err(HpackError::HeaderListTooLarge { limit });
        }
        Ok(Bytes::from(out))
    } else {
        if len > room {
            return Err(HpackError::HeaderListTooLarge { limit });
        }
        Ok(Bytes::copy_from_slice(raw))
    }
}

/// Encodes header lists for one peer; deterministic.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// `None`: never index (the default); `Some`: index every field.
    table: Option<DynamicTable>,
    huffman: Huffman,
    /// Size updates owed at the start of the next block: the smallest size
    /// set since the last block, and the final one.
    pending_update: Option<(usize, usize)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder with no dynamic table: static-table matches go out
    /// indexed, everything else as literals without indexing, Huffman-coded
    /// when shorter.
    pub fn new() -> Self {
        Encoder {
            table: None,
            huffman: Huffman::WhenShorter,
            pending_update: None,
        }
    }

    /// An encoder that indexes every field into a dynamic table of
    /// `max_size` bytes (which must not exceed the peer's
    /// SETTINGS_HEADER_TABLE_SIZE): a full match in the static then the
    /// dynamic table is sent indexed; otherwise a literal with incremental
    /// indexing, naming a static entry, else a dynamic one, else the name.
    pub fn with_dynamic_table(max_size: usize) -> Self {
        Encoder {
            table: Some(DynamicTable::new(max_size)),
            huffman: Huffman::WhenShorter,
            pending_update: None,
        }
    }

    /// Chooses when string literals are Huffman-coded.
    pub fn set_huffman(&mut self, huffman: Huffman) {
        self.huffman = huffman;
    }

    /// Resizes the dynamic table (for example after the peer lowered its
    /// SETTINGS_HEADER_TABLE_SIZE); the next block starts with the size
    /// update(s). No effect on an encoder without a dynamic table.
    pub fn set_max_table_size(&mut self, size: usize) {
        if let Some(table) = &mut self.table {
            table.set_max_size(size);
            let min = self.pending_update.map_or(size, |(m, _)| m.min(size));
            self.pending_update = Some((min, size));
        }
    }

    /// Appends the encoding of `headers` (one header block) to `dst`.
    pub fn encode<'a>(
        &mut self,
        headers: impl IntoIterator<Item = &'a Header>,
        dst: &mut BytesMut,
    ) {
        if let Some((min, last)) = self.pending_update.take() {
            if min < last {
                encode_integer(dst, 0x20, 5, min as u64);
            }
            encode_integer(dst, 0x20, 5, last as u64);
        }
        for header in headers {
            self.encode_field(header, dst);
        }
    }

    /// Appends one field as a never-indexed literal (RFC 7541 §6.2.3), for
    /// values such as credentials that no intermediary may index. It is
    /// part of the current block: call between [`encode`](Self::encode) calls
    /// for the same block, or alone as a block of one field.
    pub fn encode_never_indexed(&mut self, header: &Header, dst: &mut BytesMut) {
        let (_, static_name) = find_static(header);
        self.literal(dst, header, 0x10, 4, static_name);
    }

    fn encode_field(&mut self, header: &Header, dst: &mut BytesMut) {
        let (static_full, static_name) = find_static(header);
        if let Some(i) = static_full {
            encode_integer(dst, 0x80, 7, i as u64);
            return;
        }
        let Some(table) = &mut self.table else {
            self.literal(dst, header, 0x00, 4, static_name);
            return;
        };
        let (dyn_full, dyn_name) = table.find(header);
        if let Some(i) = dyn_full {
            encode_integer(dst, 0x80, 7, (i + 1 + STATIC_TABLE.len()) as u64);
            return;
        }
        let name_index = static_name.or(dyn_name.map(|i| i + 1 + STATIC_TABLE.len()));
        table.insert(header.clone());
        self.literal(dst, header, 0x40, 6, name_index);
    }

    fn literal(
        &self,
        dst: &mut BytesMut,
        header: &Header,
        flags: u8,
        prefix: u8,
        name_index: Option<usize>,
    ) {
        match name_index {
            Some(i) => encode_integer(dst, flags, prefix, i as u64),
            None => {
                encode_integer(dst, flags, prefix, 0);
                encode_string(dst, &header.name, self.huffman);
            }
        }
        encode_string(dst, &header.value, self.huffman);
    }
}

#[cfg(test)]
mod tests;
