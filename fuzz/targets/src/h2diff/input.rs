//! The input of [`h2_differential`](super::h2_differential): a client byte
//! stream, written from a [`DiffInput`] in a simple, stable format (like
//! [`crate::script`]) so that any bytes are an input and the committed
//! seeds can be written with [`DiffInput::to_bytes`].
//!
//! * byte 0: flags ([`NO_PREFACE`]: the stream does not start with the
//!   connection preface; the items must supply one, or not);
//! * then items, each a tag byte, `tag % 11` choosing the item:
//!
//! | tag % 11 | item | operand bytes |
//! |---|---|---|
//! | 0 | raw bytes | length `n`, then `n` bytes |
//! | 1 | any frame | type, flags, stream, length `n`, `n` payload bytes |
//! | 2 | a request (HEADERS, maybe CONTINUATIONs) | stream, [`req`] bits, method, path, fragment size, field count, fields |
//! | 3 | a field-block frame (HEADERS or CONTINUATION) | type bit, flags, stream, pad length, field count, fields |
//! | 4 | DATA | stream, flags, pad length, length u16 LE, fill byte |
//! | 5 | SETTINGS | flags, count, count × (id, value u32 LE) |
//! | 6 | WINDOW_UPDATE | stream, increment u32 LE |
//! | 7 | RST_STREAM | stream, error code |
//! | 8 | PING | flags |
//! | 9 | PRIORITY | stream, dependency stream, weight |
//! | 10 | GOAWAY | last stream, error code |
//!
//! A stream byte `s` names stream 0 (`s == 0`), a client stream 1..127
//! (`1..=0xdf`, `2 * ((s - 1) % 64) + 1`), an even one (`0xe0..=0xef`) or
//! a very high odd one (`0xf0..`). Fields ([`Field`]) are HPACK
//! representations chosen by a tag byte, names and values taken from
//! small dictionaries ([`NAMES`], [`VALUES`]) or spelled out. Where the
//! input ends inside an item, the missing bytes read as 0.

use bytes::{BufMut, BytesMut};
use ouli_core::h2::frame::{flags, kind, FrameHeader};
use ouli_core::h2::hpack::{encode_integer, encode_string, Huffman};
use ouli_core::h2::PREFACE;

/// Flags byte: no connection preface in front of the items.
pub const NO_PREFACE: u8 = 0x01;

/// Bits of a request item's flags byte.
pub mod req {
    /// END_STREAM on the HEADERS frame.
    pub const END_STREAM: u8 = 0x01;
    /// Huffman-code every string.
    pub const HUFFMAN: u8 = 0x02;
    /// Leave out `:scheme`.
    pub const NO_SCHEME: u8 = 0x04;
    /// Leave out `:authority`.
    pub const NO_AUTHORITY: u8 = 0x08;
    /// Leave out `:path`.
    pub const NO_PATH: u8 = 0x10;
    /// Pad the HEADERS frame (the pad length is the fragment size byte).
    pub const PADDED: u8 = 0x20;
    /// Carry priority fields on the HEADERS frame.
    pub const PRIORITY: u8 = 0x40;
    /// `:scheme` is `http` rather than `https`.
    pub const HTTP: u8 = 0x80;
}

/// Field names a field can name by index.
pub const NAMES: &[&[u8]] = &[
    b":method",
    b":scheme",
    b":authority",
    b":path",
    b":protocol",
    b":status",
    b":bogus",
    b"content-length",
    b"host",
    b"te",
    b"connection",
    b"transfer-encoding",
    b"keep-alive",
    b"upgrade",
    b"proxy-connection",
    b"accept",
    b"cookie",
    b"user-agent",
    b"x-a",
    b"x-b",
    b"content-type",
    b"trailer",
    b"Upper-Case",
    b"a b",
    b"",
    b"a:b",
    b"a\"b",
    b"a/b",
    b"\xc3\xbc",
    b"x\x01",
];

/// Field values a field can name by index.
pub const VALUES: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"HEAD",
    b"CONNECT",
    b"get",
    b"G T",
    b"http",
    b"https",
    b"ftp",
    b"example.com",
    b"example.com:443",
    b"EXAMPLE.com",
    b"user@example.com",
    b"[::1]:8080",
    b"",
    b"/",
    b"/a?b=c",
    b"/a#frag",
    b"*",
    b"a b",
    b"/\xc3\xbc",
    b"0",
    b"5",
    b"10",
    b"-1",
    b"5, 5",
    b"007",
    b"trailers",
    b"gzip",
    b"websocket",
    b" lead",
    b"trail ",
    b"a\tb",
    b"a\x01b",
    b"a\x7fb",
    b"a\rb",
    b"a\nb",
    b"a\0b",
    b"\xff\xfe",
    b"v",
];

const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"HEAD", b"CONNECT", b"PUT", b"OPTIONS", b"DELETE", b"PATCH",
];
const PATHS: &[&[u8]] = &[
    b"/",
    b"/index.html",
    b"/a?b=c",
    b"*",
    b"",
    b"/a#f",
    b"a",
    b"/%zz",
];

/// A name or value: from the dictionary, or spelled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Str {
    /// Dictionary entry `index % len`.
    Dict(u8),
    /// These bytes.
    Raw(Vec<u8>),
}

impl Str {
    fn resolve(&self, dict: &[&[u8]]) -> Vec<u8> {
        match self {
            Str::Dict(i) => dict[usize::from(*i) % dict.len()].to_vec(),
            Str::Raw(b) => b.clone(),
        }
    }
}

/// A literal field's name: an index into the HPACK tables, or a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// A table index (1..=127).
    Indexed(u8),
    /// A literal name (a dictionary index is taken modulo 128).
    Str(Str),
}

/// One HPACK field representation (RFC 7541 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// Indexed field (§6.1).
    Indexed(u8),
    /// Literal field; `mode` 0: with incremental indexing (§6.2.1), 1:
    /// without indexing (§6.2.2), 2: never indexed (§6.2.3).
    Literal {
        /// Indexing mode.
        mode: u8,
        /// The name.
        name: Name,
        /// The value.
        value: Str,
        /// Huffman-code the name (bit 0) and the value (bit 1).
        huffman: u8,
    },
    /// Dynamic table size update (§6.3).
    SizeUpdate(u16),
}

impl Field {
    /// A literal without indexing, both strings spelled out.
    pub fn plain(name: &str, value: &str) -> Field {
        Field::Literal {
            mode: 1,
            name: Name::Str(Str::Raw(name.as_bytes().to_vec())),
            value: Str::Raw(value.as_bytes().to_vec()),
            huffman: 0,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Field::Indexed(i) => {
                out.push(0);
                out.push(*i);
            }
            Field::Literal {
                mode,
                name,
                value,
                huffman,
            } => {
                out.push(1 + mode % 3 + 5 * (huffman & 3));
                match name {
                    Name::Indexed(i) => out.push(0x80 | (i & 0x7f)),
                    Name::Str(Str::Dict(i)) => write_str(out, &Str::Dict(i & 0x7f), 0x7f),
                    Name::Str(s) => write_str(out, s, 0x7f),
                }
                write_str(out, value, 0xff);
            }
            Field::SizeUpdate(n) => {
                out.push(4);
                out.extend(n.to_le_bytes());
            }
        }
    }

    fn read(r: &mut Reader) -> Field {
        let tag = r.byte();
        match tag % 5 {
            0 => Field::Indexed(r.byte()),
            4 => Field::SizeUpdate(r.u16()),
            m => {
                let n = r.byte();
                let name = if n & 0x80 != 0 {
                    Name::Indexed(n & 0x7f)
                } else {
                    Name::Str(read_str(r, n, 0x7f))
                };
                let v = r.byte();
                Field::Literal {
                    mode: m - 1,
                    name,
                    value: read_str(r, v, 0xff),
                    huffman: (tag / 5) & 3,
                }
            }
        }
    }

    /// Appends the HPACK representation to `dst`.
    fn encode(&self, dst: &mut BytesMut, all_huffman: bool) {
        let huff = |on: bool| {
            if on || all_huffman {
                Huffman::Always
            } else {
                Huffman::Never
            }
        };
        match self {
            Field::Indexed(i) => encode_integer(dst, 0x80, 7, u64::from(*i)),
            Field::Literal {
                mode,
                name,
                value,
                huffman,
            } => {
                let (flag, prefix) = match mode % 3 {
                    0 => (0x40, 6),
                    1 => (0x00, 4),
                    _ => (0x10, 4),
                };
                match name {
                    Name::Indexed(i) => encode_integer(dst, flag, prefix, u64::from(*i)),
                    Name::Str(s) => {
                        encode_integer(dst, flag, prefix, 0);
                        encode_string(dst, &s.resolve(NAMES), huff(huffman & 1 != 0));
                    }
                }
                encode_string(dst, &value.resolve(VALUES), huff(huffman & 2 != 0));
            }
            Field::SizeUpdate(n) => encode_integer(dst, 0x20, 5, u64::from(*n)),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &Str, raw_marker: u8) {
    match s {
        Str::Dict(i) => out.push(if *i == raw_marker { 0 } else { *i }),
        Str::Raw(b) => {
            out.push(raw_marker);
            write_bytes(out, b);
        }
    }
}

fn read_str(r: &mut Reader, b: u8, raw_marker: u8) -> Str {
    if b == raw_marker {
        Str::Raw(r.bytes())
    } else {
        Str::Dict(b)
    }
}

/// One piece of the client's byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Raw bytes (at most 255).
    Raw(Vec<u8>),
    /// Any frame: type, flags, stream byte, payload (at most 255 bytes).
    Frame {
        /// Frame type.
        kind: u8,
        /// Flags.
        flags: u8,
        /// Stream byte.
        stream: u8,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A request head: `:method`, `:scheme`, `:authority` (`example.com`),
    /// `:path`, then `fields`, HPACK-coded as literals without indexing;
    /// cut into a HEADERS and CONTINUATIONs of `fragment` bytes if
    /// `fragment` is not 0 (and not the pad length).
    Request {
        /// Stream byte.
        stream: u8,
        /// [`req`] bits.
        bits: u8,
        /// `METHODS` index.
        method: u8,
        /// `PATHS` index.
        path: u8,
        /// Fragment size, or pad length with [`req::PADDED`].
        fragment: u8,
        /// More fields after the pseudo-header fields.
        fields: Vec<Field>,
    },
    /// A HEADERS (or, with `continuation`, CONTINUATION) frame carrying
    /// `fields`, with any flags; PADDED and PRIORITY lay out the payload.
    Block {
        /// CONTINUATION rather than HEADERS.
        continuation: bool,
        /// Flags.
        flags: u8,
        /// Stream byte.
        stream: u8,
        /// Pad length (with PADDED).
        pad: u8,
        /// The field representations.
        fields: Vec<Field>,
    },
    /// DATA of `len` bytes of `fill`, padded by `pad` with PADDED.
    Data {
        /// Stream byte.
        stream: u8,
        /// Flags.
        flags: u8,
        /// Pad length (with PADDED).
        pad: u8,
        /// Payload length.
        len: u16,
        /// Payload byte.
        fill: u8,
    },
    /// SETTINGS.
    Settings {
        /// Flags.
        flags: u8,
        /// Parameters (id byte, value).
        params: Vec<(u8, u32)>,
    },
    /// WINDOW_UPDATE.
    WindowUpdate {
        /// Stream byte.
        stream: u8,
        /// Increment (the reserved bit included).
        increment: u32,
    },
    /// RST_STREAM.
    Reset {
        /// Stream byte.
        stream: u8,
        /// Error code.
        code: u8,
    },
    /// PING.
    Ping {
        /// Flags.
        flags: u8,
    },
    /// PRIORITY.
    Priority {
        /// Stream byte.
        stream: u8,
        /// Dependency stream byte.
        dependency: u8,
        /// Weight.
        weight: u8,
    },
    /// GOAWAY.
    GoAway {
        /// Last stream byte.
        last: u8,
        /// Error code.
        code: u8,
    },
}

/// A whole input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffInput {
    /// Flags byte.
    pub flags: u8,
    /// The items.
    pub items: Vec<Item>,
}

/// The stream id a stream byte names.
pub fn stream_id(s: u8) -> u32 {
    match s {
        0 => 0,
        1..=0xdf => 2 * ((u32::from(s) - 1) % 64) + 1,
        0xe0..=0xef => 2 * (u32::from(s) & 0xf) + 2,
        _ => 0x7fff_ff00 + 2 * (u32::from(s) & 0xf) + 1,
    }
}

/// The stream byte of client stream `id` (1, 3, ..., 127).
pub fn stream_byte(id: u32) -> u8 {
    assert!(id % 2 == 1 && id < 128, "not a small client stream: {id}");
    (id / 2 + 1) as u8
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte()).min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b.to_vec()
    }

    fn fields(&mut self) -> Vec<Field> {
        let n = self.byte();
        let mut out = Vec::new();
        for _ in 0..n {
            if self.done() {
                break;
            }
            out.push(Field::read(self));
        }
        out
    }
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    assert!(b.len() <= 255, "item bytes longer than 255");
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn write_fields(out: &mut Vec<u8>, fields: &[Field]) {
    assert!(fields.len() <= 255);
    out.push(fields.len() as u8);
    for f in fields {
        f.write(out);
    }
}

impl DiffInput {
    /// Reads any bytes as an input.
    pub fn from_bytes(data: &[u8]) -> DiffInput {
        let mut r = Reader { data };
        let flags = r.byte();
        let mut items = Vec::new();
        while !r.done() {
            let item = match r.byte() % 11 {
                0 => Item::Raw(r.bytes()),
                1 => Item::Frame {
                    kind: r.byte(),
                    flags: r.byte(),
                    stream: r.byte(),
                    payload: r.bytes(),
                },
                2 => Item::Request {
                    stream: r.byte(),
                    bits: r.byte(),
                    method: r.byte(),
                    path: r.byte(),
                    fragment: r.byte(),
                    fields: r.fields(),
                },
                3 => Item::Block {
                    continuation: r.byte() & 1 != 0,
                    flags: r.byte(),
                    stream: r.byte(),
                    pad: r.byte(),
                    fields: r.fields(),
                },
                4 => Item::Data {
                    stream: r.byte(),
                    flags: r.byte(),
                    pad: r.byte(),
                    len: r.u16(),
                    fill: r.byte(),
                },
                5 => {
                    let flags = r.byte();
                    let n = r.byte();
                    let mut params = Vec::new();
                    for _ in 0..n {
                        if r.done() {
                            break;
                        }
                        params.push((r.byte(), r.u32()));
                    }
                    Item::Settings { flags, params }
                }
                6 => Item::WindowUpdate {
                    stream: r.byte(),
                    increment: r.u32(),
                },
                7 => Item::Reset {
                    stream: r.byte(),
                    code: r.byte(),
                },
                8 => Item::Ping { flags: r.byte() },
                9 => Item::Priority {
                    stream: r.byte(),
                    dependency: r.byte(),
                    weight: r.byte(),
                },
                _ => Item::GoAway {
                    last: r.byte(),
                    code: r.byte(),
                },
            };
            items.push(item);
        }
        DiffInput { flags, items }
    }

    /// The bytes [`from_bytes`](Self::from_bytes) reads back as `self`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        for item in &self.items {
            match item {
                Item::Raw(b) => {
                    out.push(0);
                    write_bytes(&mut out, b);
                }
                Item::Frame {
                    kind,
                    flags,
                    stream,
                    payload,
                } => {
                    out.extend([1, *kind, *flags, *stream]);
                    write_bytes(&mut out, payload);
                }
                Item::Request {
                    stream,
                    bits,
                    method,
                    path,
                    fragment,
                    fields,
                } => {
                    out.extend([2, *stream, *bits, *method, *path, *fragment]);
                    write_fields(&mut out, fields);
                }
                Item::Block {
                    continuation,
                    flags,
                    stream,
                    pad,
                    fields,
                } => {
                    out.extend([3, u8::from(*continuation), *flags, *stream, *pad]);
                    write_fields(&mut out, fields);
                }
                Item::Data {
                    stream,
                    flags,
                    pad,
                    len,
                    fill,
                } => {
                    out.extend([4, *stream, *flags, *pad]);
                    out.extend(len.to_le_bytes());
                    out.push(*fill);
                }
                Item::Settings { flags, params } => {
                    assert!(params.len() <= 255);
                    out.extend([5, *flags, params.len() as u8]);
                    for (id, value) in params {
                        out.push(*id);
                        out.extend(value.to_le_bytes());
                    }
                }
                Item::WindowUpdate { stream, increment } => {
                    out.extend([6, *stream]);
                    out.extend(increment.to_le_bytes());
                }
                Item::Reset { stream, code } => out.extend([7, *stream, *code]),
                Item::Ping { flags } => out.extend([8, *flags]),
                Item::Priority {
                    stream,
                    dependency,
                    weight,
                } => out.extend([9, *stream, *dependency, *weight]),
                Item::GoAway { last, code } => out.extend([10, *last, *code]),
            }
        }
        out
    }

    /// The client's byte stream.
    pub fn client_bytes(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        if self.flags & NO_PREFACE == 0 {
            out.extend_from_slice(PREFACE);
        }
        for item in &self.items {
            item.encode(&mut out);
        }
        out.to_vec()
    }
}

fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    FrameHeader {
        length: payload.len() as u32,
        kind,
        flags,
        stream,
    }
    .write(out);
    out.extend_from_slice(payload);
}

impl Item {
    fn encode(&self, out: &mut BytesMut) {
        match self {
            Item::Raw(b) => out.extend_from_slice(b),
            Item::Frame {
                kind,
                flags,
                stream,
                payload,
            } => frame(out, *kind, *flags, stream_id(*stream), payload),
            Item::Request {
                stream,
                bits,
                method,
                path,
                fragment,
                fields,
            } => {
                let huffman = bits & req::HUFFMAN != 0;
                let mut block = BytesMut::new();
                let mut all = vec![Field::Literal {
                    mode: 1,
                    name: Name::Indexed(2),
                    value: Str::Raw(METHODS[usize::from(*method) % METHODS.len()].to_vec()),
                    huffman: 0,
                }];
                if bits & req::NO_SCHEME == 0 {
                    let scheme = if bits & req::HTTP != 0 { 6 } else { 7 };
                    all.push(Field::Indexed(scheme));
                }
                if bits & req::NO_AUTHORITY == 0 {
                    all.push(Field::Literal {
                        mode: 1,
                        name: Name::Indexed(1),
                        value: Str::Raw(b"example.com".to_vec()),
                        huffman: 0,
                    });
                }
                if bits & req::NO_PATH == 0 {
                    all.push(Field::Literal {
                        mode: 1,
                        name: Name::Indexed(4),
                        value: Str::Raw(PATHS[usize::from(*path) % PATHS.len()].to_vec()),
                        huffman: 0,
                    });
                }
                all.extend(fields.iter().cloned());
                for f in &all {
                    f.encode(&mut block, huffman);
                }
                let id = stream_id(*stream);
                let end_stream = if bits & req::END_STREAM != 0 {
                    flags::END_STREAM
                } else {
                    0
                };
                let mut head = Vec::new();
                let mut fl = end_stream;
                let padded = bits & req::PADDED != 0;
                if padded {
                    fl |= flags::PADDED;
                    head.push(*fragment);
                }
                if bits & req::PRIORITY != 0 {
                    fl |= flags::PRIORITY;
                    head.extend([0, 0, 0, 0, 15]);
                }
                let size = if padded || *fragment == 0 {
                    block.len().max(1)
                } else {
                    usize::from(*fragment)
                };
                let mut chunks = block.chunks(size);
                let first = chunks.next().unwrap_or_default();
                let rest: Vec<&[u8]> = chunks.collect();
                if rest.is_empty() {
                    fl |= flags::END_HEADERS;
                }
                head.extend_from_slice(first);
                if padded {
                    head.extend(std::iter::repeat_n(0, usize::from(*fragment)));
                }
                frame(out, kind::HEADERS, fl, id, &head);
                for (i, c) in rest.iter().enumerate() {
                    let last = i + 1 == rest.len();
                    let f = if last { flags::END_HEADERS } else { 0 };
                    frame(out, kind::CONTINUATION, f, id, c);
                }
            }
            Item::Block {
                continuation,
                flags: fl,
                stream,
                pad,
                fields,
            } => {
                let mut payload = Vec::new();
                let headers = !continuation;
                if headers && fl & flags::PADDED != 0 {
                    payload.push(*pad);
                }
                if headers && fl & flags::PRIORITY != 0 {
                    payload.extend([0, 0, 0, 1, 15]);
                }
                let mut block = BytesMut::new();
                for f in fields {
                    f.encode(&mut block, false);
                }
                payload.extend_from_slice(&block);
                if headers && fl & flags::PADDED != 0 {
                    payload.extend(std::iter::repeat_n(0, usize::from(*pad)));
                }
                let k = if headers {
                    kind::HEADERS
                } else {
                    kind::CONTINUATION
                };
                frame(out, k, *fl, stream_id(*stream), &payload);
            }
            Item::Data {
                stream,
                flags: fl,
                pad,
                len,
                fill,
            } => {
                let mut payload = Vec::new();
                if fl & flags::PADDED != 0 {
                    payload.push(*pad);
                }
                payload.extend(std::iter::repeat_n(*fill, usize::from(*len)));
                if fl & flags::PADDED != 0 {
                    payload.extend(std::iter::repeat_n(0, usize::from(*pad)));
                }
                frame(out, kind::DATA, *fl, stream_id(*stream), &payload);
            }
            Item::Settings { flags: fl, params } => {
                let mut payload = Vec::new();
                for (id, value) in params {
                    payload.put_u16(u16::from(*id));
                    payload.put_u32(*value);
                }
                frame(out, kind::SETTINGS, *fl, 0, &payload);
            }
            Item::WindowUpdate { stream, increment } => {
                frame(
                    out,
                    kind::WINDOW_UPDATE,
                    0,
                    stream_id(*stream),
                    &increment.to_be_bytes(),
                );
            }
            Item::Reset { stream, code } => {
                let payload = u32::from(*code).to_be_bytes();
                frame(out, kind::RST_STREAM, 0, stream_id(*stream), &payload);
            }
            Item::Ping { flags: fl } => frame(out, kind::PING, *fl, 0, b"pingpong"),
            Item::Priority {
                stream,
                dependency,
                weight,
            } => {
                let mut payload = stream_id(*dependency).to_be_bytes().to_vec();
                payload.push(*weight);
                frame(out, kind::PRIORITY, 0, stream_id(*stream), &payload);
            }
            Item::GoAway { last, code } => {
                let mut payload = stream_id(*last).to_be_bytes().to_vec();
                payload.extend(u32::from(*code).to_be_bytes());
                frame(out, kind::GOAWAY, 0, 0, &payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_bytes_reads_back() {
        let input = DiffInput {
            flags: 0,
            items: vec![
                Item::Raw(b"xyz".to_vec()),
                Item::Frame {
                    kind: 0x20,
                    flags: 3,
                    stream: 5,
                    payload: vec![1, 2],
                },
                Item::Request {
                    stream: 1,
                    bits: req::END_STREAM | req::HUFFMAN,
                    method: 2,
                    path: 1,
                    fragment: 7,
                    fields: vec![
                        Field::Indexed(62),
                        Field::SizeUpdate(300),
                        Field::plain("x-a", "1"),
                        Field::Literal {
                            mode: 2,
                            name: Name::Indexed(28),
                            value: Str::Dict(9),
                            huffman: 3,
                        },
                        Field::Literal {
                            mode: 0,
                            name: Name::Str(Str::Dict(3)),
                            value: Str::Raw(vec![0xff]),
                            huffman: 1,
                        },
                    ],
                },
                Item::Block {
                    continuation: true,
                    flags: 4,
                    stream: 2,
                    pad: 3,
                    fields: vec![],
                },
                Item::Data {
                    stream: 1,
                    flags: 9,
                    pad: 4,
                    len: 20_000,
                    fill: b'x',
                },
                Item::Settings {
                    flags: 0,
                    params: vec![(4, 1 << 20), (1, 0)],
                },
                Item::WindowUpdate {
                    stream: 0,
                    increment: 7,
                },
                Item::Reset { stream: 3, code: 8 },
                Item::Ping { flags: 1 },
                Item::Priority {
                    stream: 3,
                    dependency: 1,
                    weight: 200,
                },
                Item::GoAway { last: 9, code: 0 },
            ],
        };
        assert_eq!(DiffInput::from_bytes(&input.to_bytes()), input);
    }

    #[test]
    fn stream_bytes() {
        assert_eq!(stream_id(0), 0);
        assert_eq!(stream_id(1), 1);
        assert_eq!(stream_id(2), 3);
        assert_eq!(stream_id(0xe0), 2);
        for id in [1, 3, 63, 127] {
            assert_eq!(stream_id(stream_byte(id)), id);
        }
    }

    #[test]
    fn any_bytes_are_an_input() {
        for data in [&[][..], &[0], &[0, 2, 1], &[1, 5, 0, 200], &[0xff; 40]] {
            let _ = DiffInput::from_bytes(data).client_bytes();
        }
    }
}
