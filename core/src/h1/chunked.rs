//! The chunked transfer coding (RFC 9112 §7.1), decoding side.
//!
//! Strict on purpose (request smuggling defense): every line must end with
//! CRLF, the chunk size is bare hexadecimal, and a size that overflows 64
//! bits is an error rather than a wrap.

use super::decode::{build_headers, map_header_error, HeadScanner, Role};
use super::{H1Error, H1Limits, MAX_CHUNK_LINE_BYTES};
use crate::message::Header;
use bytes::{Buf, Bytes, BytesMut};

/// What a [`ChunkedDecoder`] produces: `Data` pieces of a chunk followed by
/// `ChunkEnd` once per non-empty chunk, then `Trailers` if the trailer
/// section is not empty, then `End`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkEvent {
    /// A piece of chunk data (never empty).
    Data(Bytes),
    /// The chunk whose data was just delivered has ended (its CRLF was read).
    ChunkEnd,
    /// The trailer fields after the last chunk, in wire order.
    Trailers(Vec<Header>),
    /// The last chunk and the trailer section have been read.
    End,
}

#[derive(Clone, Debug)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, with this many bytes still to come.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataCrlf,
    /// After the last chunk, expecting the trailer section.
    Trailers,
    /// Trailers were emitted; `End` comes next.
    PendingEnd,
    /// `End` was emitted.
    Done,
}

/// Decodes one chunked message body from a caller-owned buffer.
///
/// Fed like the message decoders: call [`ChunkedDecoder::decode`] until it
/// returns `Ok(None)`, append bytes, repeat. After an error the decoder is
/// poisoned and returns that error from every later call; after `End` it
/// returns `Ok(None)` and consumes nothing.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    limits: H1Limits,
    state: State,
    trailers: HeadScanner,
    error: Option<H1Error>,
}

impl ChunkedDecoder {
    /// A decoder for one chunked body; `limits` bound its trailer section.
    pub fn new(limits: H1Limits) -> Self {
        ChunkedDecoder {
            limits,
            state: State::Size,
            trailers: HeadScanner::new(Role::Trailer),
            error: None,
        }
    }

    /// Consumes bytes from the front of `buf` and returns the next event,
    /// or `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ChunkEvent>, H1Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.decode_inner(buf);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<ChunkEvent>, H1Error> {
        loop {
            match &mut self.state {
                State::Size => {
                    let Some(size) = take_size_line(buf)? else {
                        return Ok(None);
                    };
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    // n <= remaining, so this never saturates.
                    *remaining = remaining.saturating_sub(n as u64);
                    if *remaining == 0 {
                        self.state = State::DataCrlf;
                    }
                    return Ok(Some(ChunkEvent::Data(data)));
                }
                State::DataCrlf => {
                    return match (buf.first(), buf.get(1)) {
                        (Some(b'\r'), Some(b'\n')) => {
                            buf.advance(2);
                            self.state = State::Size;
                            Ok(Some(ChunkEvent::ChunkEnd))
                        }
                        (None, _) | (Some(b'\r'), None) => Ok(None),
                        _ => Err(H1Error::MissingChunkCrlf),
                    };
                }
                State::Trailers => {
                    let Some(end) = self.trailers.scan(buf, &self.limits)? else {
                        return Ok(None);
                    };
                    let fields = self.trailers.fields();
                    let section = buf.split_to(end).freeze();
                    if fields == 0 {
                        self.state = State::Done;
                        return Ok(Some(ChunkEvent::End));
                    }
                    let mut slots = vec![httparse::EMPTY_HEADER; fields];
                    let parsed = match httparse::parse_headers(&section, &mut slots) {
                        Ok(httparse::Status::Complete((n, parsed))) if n == section.len() => parsed,
                        Ok(_) => return Err(H1Error::InvalidHeaderName),
                        Err(e) => return Err(map_header_error(Role::Trailer, e, &self.limits)),
                    };
                    let headers = build_headers(Role::Trailer, &section, parsed)?;
                    self.state = State::PendingEnd;
                    return Ok(Some(ChunkEvent::Trailers(headers)));
                }
                State::PendingEnd => {
                    self.state = State::Done;
                    return Ok(Some(ChunkEvent::End));
                }
                State::Done => return Ok(None),
            }
        }
    }
}

/// Consumes a complete chunk-size line from `buf` and returns the size, or
/// `Ok(None)` (consuming nothing) when the line is not complete yet.
fn take_size_line(buf: &mut BytesMut) -> Result<Option<u64>, H1Error> {
    let window = buf.get(..MAX_CHUNK_LINE_BYTES).unwrap_or(&buf[..]);
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= MAX_CHUNK_LINE_BYTES {
            return Err(H1Error::ChunkLineTooLong);
        }
        // Reject early what can never become a size line.
        if matches!(buf.first(), Some(b) if !b.is_ascii_hexdigit()) {
            return Err(H1Error::InvalidChunkSize);
        }
        return Ok(None);
    };
    let line = window.get(..lf).unwrap_or_default();
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(H1Error::InvalidChunkSize);
    };
    let size = parse_size_line(line)?;
    buf.advance(lf.saturating_add(1));
    Ok(Some(size))
}

/// Parses `chunk-size [ BWS chunk-ext ]` (CRLF already removed). Extensions
/// are accepted and ignored, but must not contain control characters.
fn parse_size_line(line: &[u8]) -> Result<u64, H1Error> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at_checked(digits_end).unwrap_or((line, &[]));
    if digits.is_empty() {
        return Err(H1Error::InvalidChunkSize);
    }
    let size = digits.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b)
            .to_digit(16)
            .ok_or(H1Error::InvalidChunkSize)?;
        acc.checked_mul(16)
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(H1Error::ChunkSizeOverflow)
    })?;
    let ext_start = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(rest.len());
    match rest.get(ext_start..) {
        None | Some([]) if ext_start == 0 => Ok(size),
        Some([b';', ext @ ..]) if ext.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) => {
            Ok(size)
        }
        _ => Err(H1Error::InvalidChunkSize),
    }
}
