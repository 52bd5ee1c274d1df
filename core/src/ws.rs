//! WebSocket (RFC 6455) for a pass-through proxy: the upgrade handshake, a
//! frame decoder that enforces the rules per direction, message assembly,
//! and frame encoding.
//!
//! Frame headers are parsed and written with tungstenite's frame layer
//! (`FrameHeader::parse`, `FrameHeader::format`), which works on plain
//! buffers. tungstenite's `WebSocket`/`WebSocketContext` is deliberately not
//! used: it merges fragments, answers pings and closes on its own, which a
//! proxy that must forward exactly what each side sent cannot have.
//! Unmasking is done here (tungstenite's helper is private), and masks for
//! frames Ouli itself sends upstream come from [`MaskSource`], seeded by the
//! adapter: the core has no randomness of its own.
//!
//! Extensions: Ouli removes `Sec-WebSocket-Extensions` from the client's
//! handshake, so permessage-deflate is never negotiated and both legs talk
//! uncompressed frames that can be recorded and replayed byte for byte. A
//! frame with an RSV bit set is therefore a protocol error (1002).

use crate::message::{list_contains, Header, RequestHead, Version};
use crate::store::{MessageKind, Peer};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Largest frame payload accepted, in bytes. Larger gets close 1009.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 32 * 1024 * 1024;
/// Largest message (fragments joined) accepted, in bytes. Larger gets close 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD_BYTES: usize = 125;
/// Longest close reason Ouli writes, in bytes (a close payload is at most 125).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;
/// The GUID of RFC 6455 §1.3 used to derive `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close status codes Ouli sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol rule was broken.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message was not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message broke policy: in replay, it did not match the recording.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message was over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Which rule of RFC 6455 a frame or message broke; [`WsError::close_code`]
/// gives the status to close with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A client frame without a mask (§5.1).
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A server frame with a mask (§5.1).
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// RSV1-3 set with no extension negotiated (§5.2).
    #[error("reserved bits set with no extension negotiated")]
    ReservedBits,
    /// An opcode from the reserved ranges (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with more than 125 bytes of payload (§5.5).
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame with no message to continue (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is in progress (§5.4).
    #[error("new message started before the fragmented one ended")]
    ExpectedContinuation,
    /// A frame payload over the limit.
    #[error("frame payload over {limit} bytes")]
    FrameTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A message over the limit.
    #[error("message over {limit} bytes")]
    MessageTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A text message or close reason that is not UTF-8 (§8.1).
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame with a 1-byte payload or a code that may not be sent (§7.4).
    #[error("invalid close frame")]
    InvalidClose,
}

impl WsError {
    /// The close status this error is answered with.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            WsError::FrameTooLarge { .. } | WsError::MessageTooLarge { .. } => {
                close_code::MESSAGE_TOO_BIG
            }
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// A WebSocket opcode Ouli accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0
    Continuation,
    /// 0x1
    Text,
    /// 0x2
    Binary,
    /// 0x8
    Close,
    /// 0x9
    Ping,
    /// 0xA
    Pong,
}

impl Opcode {
    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }

    fn to_tungstenite(self) -> OpCode {
        match self {
            Opcode::Continuation => OpCode::Data(Data::Continue),
            Opcode::Text => OpCode::Data(Data::Text),
            Opcode::Binary => OpCode::Data(Data::Binary),
            Opcode::Close => OpCode::Control(Control::Close),
            Opcode::Ping => OpCode::Control(Control::Ping),
            Opcode::Pong => OpCode::Control(Control::Pong),
        }
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The payload, unmasked.
    pub payload: Bytes,
    /// The frame exactly as it arrived (header, mask and masked payload), to
    /// forward unchanged.
    pub raw: Bytes,
}

/// Frame size limits; the defaults are the named constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsLimits {
    /// See [`MAX_FRAME_PAYLOAD_BYTES`].
    pub max_frame_payload_bytes: usize,
    /// See [`MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_frame_payload_bytes: MAX_FRAME_PAYLOAD_BYTES,
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

/// Decodes the frames one peer sends, enforcing that peer's masking rule.
#[derive(Debug)]
pub struct FrameDecoder {
    from: Peer,
    limits: WsLimits,
}

impl FrameDecoder {
    /// A decoder for frames sent by `from`: client frames must be masked,
    /// server frames must not be.
    pub fn new(from: Peer, limits: WsLimits) -> Self {
        FrameDecoder { from, limits }
    }

    /// Takes the next whole frame off the front of `buf`, or `Ok(None)` when
    /// more bytes are needed. The header is checked as soon as it is complete,
    /// so an oversized frame is refused before its payload is buffered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, WsError> {
        let mut cursor = Cursor::new(&buf[..]);
        let parsed = match FrameHeader::parse(&mut cursor) {
            Ok(p) => p,
            Err(_) => {
                let op = buf.first().map(|b| b & 0x0f).unwrap_or(0);
                return Err(WsError::ReservedOpcode(op));
            }
        };
        let Some((header, length)) = parsed else {
            return Ok(None);
        };
        let header_len = cursor.position() as usize;
        let opcode = match header.opcode {
            OpCode::Data(Data::Continue) => Opcode::Continuation,
            OpCode::Data(Data::Text) => Opcode::Text,
            OpCode::Data(Data::Binary) => Opcode::Binary,
            OpCode::Control(Control::Close) => Opcode::Close,
            OpCode::Control(Control::Ping) => Opcode::Ping,
            OpCode::Control(Control::Pong) => Opcode::Pong,
            OpCode::Data(Data::Reserved(b)) | OpCode::Control(Control::Reserved(b)) => {
                return Err(WsError::ReservedOpcode(b))
            }
        };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WsError::ReservedBits);
        }
        match (self.from, header.mask.is_some()) {
            (Peer::Client, false) => return Err(WsError::UnmaskedClientFrame),
            (Peer::Server, true) => return Err(WsError::MaskedServerFrame),
            _ => {}
        }
        if opcode.is_control() {
            if length > MAX_CONTROL_PAYLOAD_BYTES as u64 {
                return Err(WsError::ControlFrameTooLong);
            }
            if !header.is_final {
                return Err(WsError::FragmentedControlFrame);
            }
        }
        if length > self.limits.max_frame_payload_bytes as u64 {
            return Err(WsError::FrameTooLarge {
                limit: self.limits.max_frame_payload_bytes,
            });
        }
        // Bounded by the limit checked just above.
        let total = header_len + length as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let raw = buf.split_to(total).freeze();
        let payload = match header.mask {
            Some(mask) => {
                let mut p = raw.slice(header_len..).to_vec();
                apply_mask(&mut p, mask);
                Bytes::from(p)
            }
            None => raw.slice(header_len..),
        };
        if opcode == Opcode::Close {
            parse_close(&payload)?;
        }
        Ok(Some(Frame {
            fin: header.is_final,
            opcode,
            payload,
            raw,
        }))
    }
}

/// XORs `data` with the 4-byte `mask` (RFC 6455 §5.3); applying it twice restores the data.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    // Eight bytes at a time (each chunk starts at a multiple of 4, so the
    // mask lines up), then the tail byte by byte: several times faster than
    // a byte loop on large payloads.
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(bytes) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
        }
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Splits a close payload into its code and reason, checking §7.4 and §5.5.1.
pub fn parse_close(payload: &[u8]) -> Result<(Option<u16>, Bytes), WsError> {
    match payload {
        [] => Ok((None, Bytes::new())),
        [_] => Err(WsError::InvalidClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(WsError::InvalidClose);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(WsError::InvalidUtf8);
            }
            Ok((Some(code), Bytes::copy_from_slice(reason)))
        }
    }
}

/// Joins data frames into messages and checks fragmentation rules.
#[derive(Debug, Default)]
pub struct MessageAssembler {
    kind: Option<MessageKind>,
    buf: BytesMut,
    limit: usize,
}

impl MessageAssembler {
    /// An assembler refusing messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        MessageAssembler {
            kind: None,
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Adds a data frame (Text, Binary or Continuation); returns the message
    /// it completes, if any. Text is checked to be UTF-8 when complete.
    pub fn push(&mut self, frame: &Frame) -> Result<Option<(MessageKind, Bytes)>, WsError> {
        let kind = match (frame.opcode, self.kind) {
            (Opcode::Continuation, Some(k)) => k,
            (Opcode::Continuation, None) => return Err(WsError::UnexpectedContinuation),
            (Opcode::Text | Opcode::Binary, Some(_)) => return Err(WsError::ExpectedContinuation),
            (Opcode::Text, None) => MessageKind::Text,
            (Opcode::Binary, None) => MessageKind::Binary,
            _ => return Ok(None),
        };
        if self.buf.len() + frame.payload.len() > self.limit {
            return Err(WsError::MessageTooLarge { limit: self.limit });
        }
        if !frame.fin {
            self.kind = Some(kind);
            self.buf.extend_from_slice(&frame.payload);
            return Ok(None);
        }
        let payload = if self.buf.is_empty() {
            frame.payload.clone()
        } else {
            self.buf.extend_from_slice(&frame.payload);
            std::mem::take(&mut self.buf).freeze()
        };
        self.kind = None;
        if kind == MessageKind::Text && std::str::from_utf8(&payload).is_err() {
            return Err(WsError::InvalidUtf8);
        }
        Ok(Some((kind, payload)))
    }
}

/// Writes one frame. `mask` is required for frames sent as a client.
pub fn encode_frame(
    opcode: Opcode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut BytesMut,
) {
    let header = FrameHeader {
        is_final: fin,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: opcode.to_tungstenite(),
        mask,
    };
    out.reserve(header.len(payload.len() as u64) + payload.len());
    // Writing to a BytesMut cannot fail.
    let _ = header.format(payload.len() as u64, &mut out.writer());
    let start = out.len();
    out.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
}

/// Writes a close frame with `code` and `reason` (cut to
/// [`MAX_CLOSE_REASON_BYTES`] on a character boundary).
pub fn encode_close(code: u16, reason: &str, mask: Option<[u8; 4]>, out: &mut BytesMut) {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(Opcode::Close, true, &payload, mask, out);
}

/// Masks for frames Ouli sends as a client, from a seed the adapter hands in
/// (xorshift64*; masks only need to be unpredictable to the page's script,
/// RFC 6455 §10.3, and Ouli never carries browser script).
#[derive(Clone, Debug)]
pub struct MaskSource {
    state: u64,
}

impl MaskSource {
    /// A source seeded with `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        MaskSource { state: seed | 1 }
    }

    /// The next mask.
    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((v >> 32) as u32).to_be_bytes()
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// Whether a request asks to upgrade to WebSocket: `GET` with an `Upgrade`
/// header naming `websocket` and a `Connection` header naming `upgrade`.
pub fn is_upgrade_request(head: &RequestHead) -> bool {
    &head.method[..] == b"GET"
        && list_contains(&head.headers, "upgrade", "websocket")
        && list_contains(&head.headers, "connection", "upgrade")
}

/// Why a WebSocket handshake request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not HTTP/1.1.
    #[error("WebSocket upgrade needs HTTP/1.1")]
    NotHttp11,
    /// `Sec-WebSocket-Version` is missing or not 13 (answered 426 with the supported version).
    #[error("Sec-WebSocket-Version must be 13")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing, repeated, or not 16 base64-encoded bytes.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
}

impl HandshakeError {
    /// The HTTP status this is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

/// Checks a client's upgrade request (RFC 6455 §4.2.1) and returns its key.
pub fn validate_handshake(head: &RequestHead) -> Result<Bytes, HandshakeError> {
    if head.version != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    let versions: Vec<&Header> = head
        .headers
        .iter()
        .filter(|h| h.is("sec-websocket-version"))
        .collect();
    if versions.len() != 1 || crate::message::trim_ascii(&versions[0].value) != b"13" {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let keys: Vec<&Header> = head
        .headers
        .iter()
        .filter(|h| h.is("sec-websocket-key"))
        .collect();
    let [key] = keys.as_slice() else {
        return Err(HandshakeError::BadKey);
    };
    let key = crate::message::trim_ascii(&key.value);
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(Bytes::copy_from_slice(key)),
        _ => Err(HandshakeError::BadKey),
    }
}

/// Reads a whole close payload from `frame` for recording: code and reason.
pub fn close_of(frame: &Frame) -> (Option<u16>, Bytes) {
    parse_close(&frame.payload).unwrap_or((None, Bytes::new()))
}

/// Shortens `bytes` for a close reason or a log line: text in quotes, or a byte count.
pub fn describe(kind: MessageKind, bytes: &[u8], max_chars: usize) -> String {
    match (kind, std::str::from_utf8(bytes)) {
        (MessageKind::Text, Ok(s)) => {
            let cut: String = s.chars().take(max_chars).collect();
            if cut.len() < s.len() {
                format!("text {cut:?}...")
            } else {
                format!("text {cut:?}")
            }
        }
        _ => format!("binary ({} bytes)", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn apply_mask_matches_the_byte_loop_at_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut fast = data.clone();
            super::apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn client_frame(opcode: Opcode, fin: bool, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        encode_frame(opcode, fin, payload, Some([1, 2, 3, 4]), &mut b);
        b
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_client_frame_round_trips() {
        let mut buf = client_frame(Opcode::Text, true, b"hello");
        let raw = buf.clone().freeze();
        let f = FrameDecoder::new(Peer::Client, WsLimits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(&f.payload[..], b"hello");
        assert_eq!(f.raw, raw, "raw bytes are kept for forwarding");
        assert!(buf.is_empty());
    }

    #[test]
    fn each_rule_has_its_error_and_code() {
        let limits = WsLimits {
            max_frame_payload_bytes: 100,
            max_message_bytes: 150,
        };
        let dec = |from, mut b: BytesMut| FrameDecoder::new(from, limits).decode(&mut b);
        let mut unmasked = BytesMut::new();
        encode_frame(Opcode::Text, true, b"x", None, &mut unmasked);
        assert_eq!(
            dec(Peer::Client, unmasked.clone()),
            Err(WsError::UnmaskedClientFrame)
        );
        assert_eq!(
            dec(Peer::Server, client_frame(Opcode::Text, true, b"x")),
            Err(WsError::MaskedServerFrame)
        );
        assert_eq!(
            dec(Peer::Client, client_frame(Opcode::Ping, true, &[0; 126])),
            Err(WsError::ControlFrameTooLong)
        );
        assert_eq!(
            dec(Peer::Client, client_frame(Opcode::Ping, false, b"p")),
            Err(WsError::FragmentedControlFrame)
        );
        let mut rsv = client_frame(Opcode::Text, true, b"x");
        rsv[0] |= 0x40;
        assert_eq!(dec(Peer::Client, rsv), Err(WsError::ReservedBits));
        let mut reserved = client_frame(Opcode::Text, true, b"x");
        reserved[0] = (reserved[0] & 0xf0) | 0x3;
        assert_eq!(dec(Peer::Client, reserved), Err(WsError::ReservedOpcode(3)));
        let big = client_frame(Opcode::Binary, true, &[0; 101]);
        let header_only = BytesMut::from(&big[..8]);
        assert_eq!(
            dec(Peer::Client, header_only),
            Err(WsError::FrameTooLarge { limit: 100 }),
            "refused from the header alone"
        );
        assert_eq!(WsError::FrameTooLarge { limit: 1 }.close_code(), 1009);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        assert_eq!(WsError::ReservedBits.close_code(), 1002);
        let mut bad_close = BytesMut::new();
        encode_frame(Opcode::Close, true, &[0x03, 0xed], None, &mut bad_close); // 1005 may not be sent
        assert_eq!(dec(Peer::Server, bad_close), Err(WsError::InvalidClose));

        let mut asm = MessageAssembler::new(150);
        let frame = |op, fin, p: &[u8]| Frame {
            fin,
            opcode: op,
            payload: Bytes::copy_from_slice(p),
            raw: Bytes::new(),
        };
        assert_eq!(
            asm.push(&frame(Opcode::Continuation, true, b"x")),
            Err(WsError::UnexpectedContinuation)
        );
        assert_eq!(
            asm.push(&frame(Opcode::Text, false, &[0xe2, 0x82])),
            Ok(None)
        );
        assert_eq!(
            asm.push(&frame(Opcode::Binary, true, b"x")),
            Err(WsError::ExpectedContinuation)
        );
        let mut asm = MessageAssembler::new(150);
        assert_eq!(
            asm.push(&frame(Opcode::Text, false, &[0xe2, 0x82])),
            Ok(None)
        );
        assert_eq!(
            asm.push(&frame(Opcode::Continuation, true, &[0xac])),
            Ok(Some((MessageKind::Text, Bytes::from("€")))),
            "UTF-8 split across fragments is fine"
        );
        assert_eq!(
            asm.push(&frame(Opcode::Text, true, &[0xff])),
            Err(WsError::InvalidUtf8)
        );
        let mut asm = MessageAssembler::new(150);
        assert_eq!(asm.push(&frame(Opcode::Binary, false, &[0; 100])), Ok(None));
        assert_eq!(
            asm.push(&frame(Opcode::Continuation, true, &[0; 51])),
            Err(WsError::MessageTooLarge { limit: 150 })
        );
    }

    #[test]
    fn handshake_validation() {
        let head = |headers: Vec<(&'static str, &'static str)>| RequestHead {
            method: Bytes::from_static(b"GET"),
            target: Bytes::from_static(b"/chat"),
            version: Version::Http11,
            headers: headers
                .into_iter()
                .map(|(n, v)| Header::new(n, v))
                .collect(),
        };
        let good = head(vec![
            ("Host", "x"),
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ]);
        assert!(is_upgrade_request(&good));
        assert_eq!(
            validate_handshake(&good).unwrap(),
            Bytes::from_static(b"dGhlIHNhbXBsZSBub25jZQ==")
        );
        let mut v8 = good.clone();
        v8.headers[4].value = Bytes::from_static(b"8");
        assert_eq!(
            validate_handshake(&v8),
            Err(HandshakeError::UnsupportedVersion)
        );
        let mut short = good.clone();
        short.headers[3].value = Bytes::from_static(b"c2hvcnQ=");
        assert_eq!(validate_handshake(&short), Err(HandshakeError::BadKey));
    }

    #[test]
    fn masks_are_deterministic_per_seed() {
        let a: Vec<_> = (0..4)
            .map({
                let mut m = MaskSource::new(7);
                move |_| m.next_mask()
            })
            .collect();
        let b: Vec<_> = (0..4)
            .map({
                let mut m = MaskSource::new(7);
                move |_| m.next_mask()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }

    proptest! {
        #[test]
        fn frames_round_trip_and_split_anywhere(
            frames in prop::collection::vec((prop::sample::select(vec![Opcode::Text, Opcode::Binary, Opcode::Ping, Opcode::Pong]), prop::collection::vec(any::<u8>(), 0..300), any::<[u8; 4]>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut stream = BytesMut::new();
            let mut expected = Vec::new();
            for (op, payload, mask) in &frames {
                let payload = if op.is_control() { &payload[..payload.len().min(125)] } else { &payload[..] };
                encode_frame(*op, true, payload, Some(*mask), &mut stream);
                expected.push((*op, payload.to_vec()));
            }
            let whole = stream.clone();
            let at = cut.index(whole.len() + 1);
            let mut dec = FrameDecoder::new(Peer::Client, WsLimits::default());
            let mut buf = BytesMut::from(&whole[..at]);
            let mut got = Vec::new();
            let mut raws = BytesMut::new();
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                raws.extend_from_slice(&f.raw);
                got.push((f.opcode, f.payload.to_vec()));
            }
            buf.extend_from_slice(&whole[at..]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                raws.extend_from_slice(&f.raw);
                got.push((f.opcode, f.payload.to_vec()));
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(raws, whole, "raw frames concatenate to the input");
        }
    }
}
