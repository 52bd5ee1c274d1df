//! The HTTP/2 frame layer (RFC 9113 §4 and §6): parse and serialize.
//!
//! [`FrameDecoder::decode`] takes whole frames off the front of a
//! caller-owned [`BytesMut`]. It rejects a frame longer than our
//! `SETTINGS_MAX_FRAME_SIZE` as soon as its 9-byte header is in, before any
//! of the payload is buffered. Payloads are zero-copy [`Bytes`] slices.
//!
//! The structural rules of each frame type are checked here (lengths,
//! stream 0 or not, padding); the rules that need connection state (stream
//! states, windows, SETTINGS values) belong to [`super::conn`]. Frames of
//! unknown type parse as [`Frame::Unknown`], which the connection ignores
//! (RFC 9113 §4.1).

use super::{ErrorCode, H2Error, MAX_FRAME_SIZE};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the frame header.
pub const FRAME_HEADER_LEN: usize = 9;
/// The smallest `SETTINGS_MAX_FRAME_SIZE` (and its default).
pub const MIN_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest `SETTINGS_MAX_FRAME_SIZE` (2^24 - 1).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest window size (2^31 - 1).
pub const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;
/// The largest stream identifier (2^31 - 1).
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// Frame type codes (RFC 9113 §6).
pub mod kind {
    /// DATA
    pub const DATA: u8 = 0x0;
    /// HEADERS
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING
    pub const PING: u8 = 0x6;
    /// GOAWAY
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flags {
    /// DATA, HEADERS: last frame of the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the field block is complete.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: padded.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: carries priority fields.
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameter identifiers (RFC 9113 §6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// The 9-byte frame header (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub length: u32,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl FrameHeader {
    /// Parses the first 9 bytes of `buf`, or `None` if there are fewer.
    pub fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            length: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & MAX_STREAM_ID,
        })
    }

    /// Appends the 9 header bytes to `dst`.
    pub fn write(&self, dst: &mut BytesMut) {
        let len = self.length.to_be_bytes();
        dst.extend_from_slice(&len[1..]);
        dst.put_u8(self.kind);
        dst.put_u8(self.flags);
        dst.put_u32(self.stream & MAX_STREAM_ID);
    }
}

/// Stream dependency fields (deprecated by RFC 9113 §5.3.2; parsed and
/// otherwise ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    /// The stream depended on.
    pub dependency: u32,
    /// The exclusive flag.
    pub exclusive: bool,
    /// Weight minus one, as on the wire.
    pub weight: u8,
}

impl Priority {
    fn parse(b: &[u8]) -> Option<Priority> {
        let raw = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
        Some(Priority {
            dependency: raw & MAX_STREAM_ID,
            exclusive: raw & !MAX_STREAM_ID != 0,
            weight: *b.get(4)?,
        })
    }

    fn write(&self, dst: &mut BytesMut) {
        let excl = if self.exclusive { 1 << 31 } else { 0 };
        dst.put_u32((self.dependency & MAX_STREAM_ID) | excl);
        dst.put_u8(self.weight);
    }
}

/// One SETTINGS parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Identifier (see [`setting`]); unknown ones are ignored by the connection.
    pub id: u16,
    /// Value.
    pub value: u32,
}

/// A parsed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// DATA (§6.1).
    Data {
        /// Stream.
        stream: u32,
        /// Data, padding removed.
        data: Bytes,
        /// END_STREAM flag.
        end_stream: bool,
        /// Pad length when PADDED (the padding counts for flow control).
        padding: Option<u8>,
    },
    /// HEADERS (§6.2).
    Headers {
        /// Stream.
        stream: u32,
        /// Priority fields when the PRIORITY flag is set.
        priority: Option<Priority>,
        /// Field block fragment.
        block: Bytes,
        /// END_STREAM flag.
        end_stream: bool,
        /// END_HEADERS flag.
        end_headers: bool,
        /// Pad length when PADDED.
        padding: Option<u8>,
    },
    /// PRIORITY (§6.3).
    Priority {
        /// Stream.
        stream: u32,
        /// The fields.
        priority: Priority,
    },
    /// RST_STREAM (§6.4).
    RstStream {
        /// Stream.
        stream: u32,
        /// Error code.
        code: ErrorCode,
    },
    /// SETTINGS (§6.5).
    Settings {
        /// ACK flag (then `params` is empty).
        ack: bool,
        /// Parameters in wire order.
        params: Vec<Setting>,
    },
    /// PUSH_PROMISE (§6.6).
    PushPromise {
        /// Stream.
        stream: u32,
        /// The promised stream.
        promised: u32,
        /// Field block fragment.
        block: Bytes,
        /// END_HEADERS flag.
        end_headers: bool,
        /// Pad length when PADDED.
        padding: Option<u8>,
    },
    /// PING (§6.7).
    Ping {
        /// ACK flag.
        ack: bool,
        /// Opaque data.
        payload: [u8; 8],
    },
    /// GOAWAY (§6.8).
    GoAway {
        /// Last stream the sender may have processed.
        last_stream: u32,
        /// Error code.
        code: ErrorCode,
        /// Debug data.
        debug: Bytes,
    },
    /// WINDOW_UPDATE (§6.9).
    WindowUpdate {
        /// Stream, or 0 for the connection.
        stream: u32,
        /// Increment, 1 to 2^31 - 1.
        increment: u32,
    },
    /// CONTINUATION (§6.10).
    Continuation {
        /// Stream.
        stream: u32,
        /// Field block fragment.
        block: Bytes,
        /// END_HEADERS flag.
        end_headers: bool,
    },
    /// A frame of a type this layer does not know (ignored, §4.1).
    Unknown {
        /// Type code.
        kind: u8,
        /// Flags.
        flags: u8,
        /// Stream.
        stream: u32,
        /// Payload.
        payload: Bytes,
    },
}

fn conn_err(code: ErrorCode, rule: &'static str) -> H2Error {
    H2Error::connection(code, rule)
}

/// Removes padding (§6.1): returns the content and the pad length.
fn strip_padding(header: &FrameHeader, mut payload: Bytes) -> Result<(Bytes, Option<u8>), H2Error> {
    if header.flags & flags::PADDED == 0 {
        return Ok((payload, None));
    }
    if payload.is_empty() {
        return Err(conn_err(
            ErrorCode::FRAME_SIZE_ERROR,
            "padded frame too short for the pad length (§6.1)",
        ));
    }
    let pad = payload.get_u8();
    if usize::from(pad) > payload.len() {
        return Err(conn_err(
            ErrorCode::PROTOCOL_ERROR,
            "padding as long as the frame payload or longer (§6.1)",
        ));
    }
    payload.truncate(payload.len() - usize::from(pad));
    Ok((payload, Some(pad)))
}

impl Frame {
    /// Parses a frame from its header and complete payload. Stream-scoped
    /// errors (a PRIORITY frame of the wrong size, a WINDOW_UPDATE of 0 on a
    /// stream) consume the frame; the connection goes on.
    pub fn parse(header: FrameHeader, payload: Bytes) -> Result<Frame, H2Error> {
        let stream = header.stream;
        let len = payload.len();
        let need_stream = |what: &'static str| {
            if stream == 0 {
                Err(conn_err(ErrorCode::PROTOCOL_ERROR, what))
            } else {
                Ok(())
            }
        };
        let need_zero = |what: &'static str| {
            if stream != 0 {
                Err(conn_err(ErrorCode::PROTOCOL_ERROR, what))
            } else {
                Ok(())
            }
        };
        match header.kind {
            kind::DATA => {
                need_stream("DATA on stream 0 (§6.1)")?;
                let (data, padding) = strip_padding(&header, payload)?;
                Ok(Frame::Data {
                    stream,
                    data,
                    end_stream: header.flags & flags::END_STREAM != 0,
                    padding,
                })
            }
            kind::HEADERS => {
                need_stream("HEADERS on stream 0 (§6.2)")?;
                let (mut block, padding) = strip_padding(&header, payload)?;
                let priority = if header.flags & flags::PRIORITY != 0 {
                    let p = Priority::parse(&block).ok_or_else(|| {
                        conn_err(
                            ErrorCode::FRAME_SIZE_ERROR,
                            "HEADERS too short for its priority fields (§6.2)",
                        )
                    })?;
                    block.advance(5);
                    Some(p)
                } else {
                    None
                };
                Ok(Frame::Headers {
                    stream,
                    priority,
                    block,
                    end_stream: header.flags & flags::END_STREAM != 0,
                    end_headers: header.flags & flags::END_HEADERS != 0,
                    padding,
                })
            }
            kind::PRIORITY => {
                need_stream("PRIORITY on stream 0 (§6.3)")?;
                if len != 5 {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::FRAME_SIZE_ERROR,
                        "PRIORITY frame not 5 bytes long (§6.3)",
                    ));
                }
                let priority = Priority::parse(&payload).ok_or_else(|| {
                    H2Error::stream(stream, ErrorCode::FRAME_SIZE_ERROR, "short PRIORITY (§6.3)")
                })?;
                if priority.dependency == stream {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::PROTOCOL_ERROR,
                        "stream depends on itself (§5.3.1)",
                    ));
                }
                Ok(Frame::Priority { stream, priority })
            }
            kind::RST_STREAM => {
                need_stream("RST_STREAM on stream 0 (§6.4)")?;
                let code = read_u32(&payload, len == 4).ok_or_else(|| {
                    conn_err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "RST_STREAM frame not 4 bytes long (§6.4)",
                    )
                })?;
                Ok(Frame::RstStream {
                    stream,
                    code: ErrorCode(code),
                })
            }
            kind::SETTINGS => {
                need_zero("SETTINGS on a stream (§6.5)")?;
                let ack = header.flags & flags::ACK != 0;
                if ack && len != 0 {
                    return Err(conn_err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "SETTINGS ACK with a payload (§6.5)",
                    ));
                }
                if len % 6 != 0 {
                    return Err(conn_err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "SETTINGS length not a multiple of 6 (§6.5)",
                    ));
                }
                let params = payload
                    .chunks_exact(6)
                    .map(|c| Setting {
                        id: u16::from_be_bytes([c[0], c[1]]),
                        value: u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    })
                    .collect();
                Ok(Frame::Settings { ack, params })
            }
            kind::PUSH_PROMISE => {
                need_stream("PUSH_PROMISE on stream 0 (§6.6)")?;
                let (mut block, padding) = strip_padding(&header, payload)?;
                let promised = read_u32(&block, block.len() >= 4).ok_or_else(|| {
                    conn_err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "PUSH_PROMISE too short for the promised stream id (§6.6)",
                    )
                })? & MAX_STREAM_ID;
                block.advance(4);
                Ok(Frame::PushPromise {
                    stream,
                    promised,
                    block,
                    end_headers: header.flags & flags::END_HEADERS != 0,
                    padding,
                })
            }
            kind::PING => {
                need_zero("PING on a stream (§6.7)")?;
                let payload: [u8; 8] = payload[..].try_into().map_err(|_| {
                    conn_err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "PING frame not 8 bytes long (§6.7)",
                    )
                })?;
                Ok(Frame::Ping {
                    ack: header.flags & flags::ACK != 0,
                    payload,
                })
            }
            kind::GOAWAY => {
                need_zero("GOAWAY on a stream (§6.8)")?;
                if len < 8 {
                    return Err(conn_err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "GOAWAY shorter than 8 bytes (§6.8)",
                    ));
                }
                let mut p = payload;
                let last_stream = p.get_u32() & MAX_STREAM_ID;
                let code = ErrorCode(p.get_u32());
                Ok(Frame::GoAway {
                    last_stream,
                    code,
                    debug: p,
                })
            }
            kind::WINDOW_UPDATE => {
                let raw = read_u32(&payload, len == 4).ok_or_else(|| {
                    conn_err(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "WINDOW_UPDATE frame not 4 bytes long (§6.9)",
                    )
                })?;
                let increment = raw & MAX_WINDOW_SIZE;
                if increment == 0 {
                    let rule = "WINDOW_UPDATE with an increment of 0 (§6.9)";
                    return Err(if stream == 0 {
                        conn_err(ErrorCode::PROTOCOL_ERROR, rule)
                    } else {
                        H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, rule)
                    });
                }
                Ok(Frame::WindowUpdate { stream, increment })
            }
            kind::CONTINUATION => {
                need_stream("CONTINUATION on stream 0 (§6.10)")?;
                Ok(Frame::Continuation {
                    stream,
                    block: payload,
                    end_headers: header.flags & flags::END_HEADERS != 0,
                })
            }
            other => Ok(Frame::Unknown {
                kind: other,
                flags: header.flags,
                stream,
                payload,
            }),
        }
    }

    /// The frame's stream identifier (0 for connection frames).
    pub fn stream_id(&self) -> u32 {
        match self {
            Frame::Data { stream, .. }
            | Frame::Headers { stream, .. }
            | Frame::Priority { stream, .. }
            | Frame::RstStream { stream, .. }
            | Frame::PushPromise { stream, .. }
            | Frame::WindowUpdate { stream, .. }
            | Frame::Continuation { stream, .. }
            | Frame::Unknown { stream, .. } => *stream,
            Frame::Settings { .. } | Frame::Ping { .. } | Frame::GoAway { .. } => 0,
        }
    }

    /// Appends the frame, header and payload, to `dst`. Sizes are the
    /// caller's business: payloads longer than 2^24 - 1 bytes cannot be
    /// represented and are truncated in the length field, so keep frames
    /// within the peer's SETTINGS_MAX_FRAME_SIZE.
    pub fn encode(&self, dst: &mut BytesMut) {
        let head = |dst: &mut BytesMut, length: usize, kind: u8, flags: u8, stream: u32| {
            FrameHeader {
                length: (length as u32) & MAX_MAX_FRAME_SIZE,
                kind,
                flags,
                stream,
            }
            .write(dst)
        };
        let pad_len = |p: &Option<u8>| p.map_or(0, |n| usize::from(n) + 1);
        let pad_flag = |p: &Option<u8>| if p.is_some() { flags::PADDED } else { 0 };
        let put_pad = |dst: &mut BytesMut, p: &Option<u8>| {
            if let Some(n) = *p {
                dst.put_bytes(0, usize::from(n));
            }
        };
        match self {
            Frame::Data {
                stream,
                data,
                end_stream,
                padding,
            } => {
                let f = pad_flag(padding) | if *end_stream { flags::END_STREAM } else { 0 };
                head(dst, data.len() + pad_len(padding), kind::DATA, f, *stream);
                if let Some(n) = padding {
                    dst.put_u8(*n);
                }
                dst.extend_from_slice(data);
                put_pad(dst, padding);
            }
            Frame::Headers {
                stream,
                priority,
                block,
                end_stream,
                end_headers,
                padding,
            } => {
                let mut f = pad_flag(padding);
                if *end_stream {
                    f |= flags::END_STREAM;
                }
                if *end_headers {
                    f |= flags::END_HEADERS;
                }
                if priority.is_some() {
                    f |= flags::PRIORITY;
                }
                let prio_len = if priority.is_some() { 5 } else { 0 };
                head(
                    dst,
                    block.len() + pad_len(padding) + prio_len,
                    kind::HEADERS,
                    f,
                    *stream,
                );
                if let Some(n) = padding {
                    dst.put_u8(*n);
                }
                if let Some(p) = priority {
                    p.write(dst);
                }
                dst.extend_from_slice(block);
                put_pad(dst, padding);
            }
            Frame::Priority { stream, priority } => {
                head(dst, 5, kind::PRIORITY, 0, *stream);
                priority.write(dst);
            }
            Frame::RstStream { stream, code } => {
                head(dst, 4, kind::RST_STREAM, 0, *stream);
                dst.put_u32(code.0);
            }
            Frame::Settings { ack, params } => {
                let f = if *ack { flags::ACK } else { 0 };
                head(dst, params.len() * 6, kind::SETTINGS, f, 0);
                for s in params {
                    dst.put_u16(s.id);
                    dst.put_u32(s.value);
                }
            }
            Frame::PushPromise {
                stream,
                promised,
                block,
                end_headers,
                padding,
            } => {
                let f = pad_flag(padding) | if *end_headers { flags::END_HEADERS } else { 0 };
                head(
                    dst,
                    4 + block.len() + pad_len(padding),
                    kind::PUSH_PROMISE,
                    f,
                    *stream,
                );
                if let Some(n) = padding {
                    dst.put_u8(*n);
                }
                dst.put_u32(*promised & MAX_STREAM_ID);
                dst.extend_from_slice(block);
                put_pad(dst, padding);
            }
            Frame::Ping { ack, payload } => {
                let f = if *ack { flags::ACK } else { 0 };
                head(dst, 8, kind::PING, f, 0);
                dst.extend_from_slice(payload);
            }
            Frame::GoAway {
                last_stream,
                code,
                debug,
            } => {
                head(dst, 8 + debug.len(), kind::GOAWAY, 0, 0);
                dst.put_u32(*last_stream & MAX_STREAM_ID);
                dst.put_u32(code.0);
                dst.extend_from_slice(debug);
            }
            Frame::WindowUpdate { stream, increment } => {
                head(dst, 4, kind::WINDOW_UPDATE, 0, *stream);
                dst.put_u32(*increment & MAX_WINDOW_SIZE);
            }
            Frame::Continuation {
                stream,
                block,
                end_headers,
            } => {
                let f = if *end_headers { flags::END_HEADERS } else { 0 };
                head(dst, block.len(), kind::CONTINUATION, f, *stream);
                dst.extend_from_slice(block);
            }
            Frame::Unknown {
                kind,
                flags,
                stream,
                payload,
            } => {
                head(dst, payload.len(), *kind, *flags, *stream);
                dst.extend_from_slice(payload);
            }
        }
    }
}

fn read_u32(b: &[u8], ok: bool) -> Option<u32> {
    if !ok {
        return None;
    }
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Takes frames off a caller-owned buffer.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame_size: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME_SIZE`].
    pub fn new() -> Self {
        FrameDecoder {
            max_frame_size: MAX_FRAME_SIZE,
        }
    }

    /// Sets the largest payload accepted (our SETTINGS_MAX_FRAME_SIZE).
    pub fn set_max_frame_size(&mut self, size: u32) {
        self.max_frame_size = size;
    }

    /// The largest payload accepted.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Splits the next complete frame off `buf` and parses it. `Ok(None)`:
    /// more bytes needed (nothing consumed). An oversized frame is a
    /// connection error as soon as its header is in. A frame that fails to
    /// parse is consumed either way.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, H2Error> {
        let Some(header) = self.decode_header(buf)? else {
            return Ok(None);
        };
        let total = FRAME_HEADER_LEN + header.length as usize;
        let mut frame = buf.split_to(total);
        frame.advance(FRAME_HEADER_LEN);
        Frame::parse(header, frame.freeze()).map(Some)
    }

    /// Peeks the header of the next frame once the whole frame is in
    /// `buf` (without consuming), checking its size.
    pub fn decode_header(&self, buf: &[u8]) -> Result<Option<FrameHeader>, H2Error> {
        let Some(header) = FrameHeader::parse(buf) else {
            return Ok(None);
        };
        if header.length > self.max_frame_size {
            return Err(conn_err(
                ErrorCode::FRAME_SIZE_ERROR,
                "frame larger than SETTINGS_MAX_FRAME_SIZE (§4.2)",
            ));
        }
        if buf.len() < FRAME_HEADER_LEN + header.length as usize {
            return Ok(None);
        }
        Ok(Some(header))
    }
}
