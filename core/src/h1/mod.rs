//! HTTP/1.1 codec (RFC 9112), both roles, sans-IO.
//!
//! [`RequestDecoder`] reads requests from clients; [`ResponseDecoder`] reads
//! responses from upstreams. Both are fed through a caller-owned
//! [`bytes::BytesMut`]: the caller appends whatever bytes arrived, calls
//! `decode` until it returns `Ok(None)` (more bytes needed), and the decoder
//! splits off what it consumed. Body pieces are handed out as zero-copy
//! [`bytes::Bytes`] slices of that buffer, so a body streams through in pieces
//! and is never held whole by the codec.
//!
//! httparse tokenizes request and status lines and headers; message framing
//! (Content-Length, chunked, close-delimited, bodiless) and the RFC 9112
//! rejections httparse leaves to its caller are ours: see [`H1Error`].
//!
//! The `encode_*` functions write heads, chunks and trailers back out.

mod chunked;
mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use chunked::{ChunkEvent, ChunkedDecoder};
pub use decode::{RequestDecoder, ResponseDecoder};
pub use encode::{
    encode_chunk, encode_last_chunk, encode_request_head, encode_response_head, BodyFraming,
};

use crate::message::{Header, RequestHead, ResponseHead};
use bytes::Bytes;

/// Longest request line accepted, in bytes. Longer gets 414.
pub const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;
/// Largest header section (request or status line included), in bytes. Larger gets 431.
pub const MAX_HEADER_SECTION_BYTES: usize = 64 * 1024;
/// Most header fields in one section. More gets 431.
pub const MAX_HEADER_COUNT: usize = 128;
/// Longest chunk-size line (size, extensions, CRLF), in bytes.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// The limits a decoder enforces. Defaults are the named constants above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H1Limits {
    /// See [`MAX_REQUEST_LINE_BYTES`].
    pub max_request_line_bytes: usize,
    /// See [`MAX_HEADER_SECTION_BYTES`]; also bounds a trailer section.
    pub max_header_section_bytes: usize,
    /// See [`MAX_HEADER_COUNT`]; also bounds a trailer section.
    pub max_header_count: usize,
}

impl Default for H1Limits {
    fn default() -> Self {
        H1Limits {
            max_request_line_bytes: MAX_REQUEST_LINE_BYTES,
            max_header_section_bytes: MAX_HEADER_SECTION_BYTES,
            max_header_count: MAX_HEADER_COUNT,
        }
    }
}

/// How a message's body is delimited, decided from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all (GET without framing headers, HEAD responses, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Response body that runs until the upstream closes the connection.
    CloseDelimited,
}

/// What a [`RequestDecoder`] produces, in order: `Head`, then any `Data`
/// (with `ChunkEnd` after each chunk when the body is chunked), then
/// `Trailers` if a chunked body carried any, then `End`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestEvent {
    /// The request line and headers, and how the body is framed.
    Head(RequestHead, BodyKind),
    /// A piece of body bytes (after de-chunking).
    Data(Bytes),
    /// The chunk whose data was just delivered has ended.
    ChunkEnd,
    /// The trailer section of a chunked body.
    Trailers(Vec<Header>),
    /// The message is complete; the next request may follow.
    End,
}

/// What a [`ResponseDecoder`] produces: any number of `Informational`
/// heads (1xx other than 101), then `Head`, body events as for requests, `End`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseEvent {
    /// An interim 1xx response (not 101), complete in itself.
    Informational(ResponseHead),
    /// The final status line and headers, and how the body is framed.
    Head(ResponseHead, BodyKind),
    /// A piece of body bytes (after de-chunking).
    Data(Bytes),
    /// The chunk whose data was just delivered has ended.
    ChunkEnd,
    /// The trailer section of a chunked body.
    Trailers(Vec<Header>),
    /// The message is complete.
    End,
}

/// Which rule of RFC 9112 / RFC 9110 a message broke. Each maps to the
/// status a server answers with ([`H1Error::status`]) and a one-line reason
/// (its `Display`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    /// The request line exceeds [`H1Limits::max_request_line_bytes`].
    #[error("request line longer than {limit} bytes")]
    RequestLineTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The header section exceeds [`H1Limits::max_header_section_bytes`].
    #[error("header section larger than {limit} bytes")]
    HeaderSectionTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// More header fields than [`H1Limits::max_header_count`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The request or status line is malformed.
    #[error("malformed {0}")]
    MalformedStartLine(&'static str),
    /// The HTTP version is not 1.0 or 1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// A header name contains a character outside `token`.
    #[error("invalid character in header name")]
    InvalidHeaderName,
    /// A header value contains a control character (RFC 9110 §5.5).
    #[error("control character in header value")]
    InvalidHeaderValue,
    /// A header line starts with whitespace (obsolete line folding, RFC 9112 §5.2).
    #[error("obsolete line folding (obs-fold) in header section")]
    ObsFold,
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.3, request smuggling).
    #[error("both Content-Length and Transfer-Encoding present")]
    ContentLengthWithTransferEncoding,
    /// Several Content-Length values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// A Content-Length that is not a decimal number or overflows u64.
    #[error("invalid Content-Length value")]
    InvalidContentLength,
    /// A request Transfer-Encoding whose final coding is not `chunked`.
    #[error("Transfer-Encoding does not end with chunked")]
    TransferEncodingNotChunked,
    /// A transfer coding other than `chunked` (Ouli decodes only chunked).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// A chunk-size line that is not hexadecimal or is malformed.
    #[error("invalid chunk size line")]
    InvalidChunkSize,
    /// A chunk size that does not fit in 64 bits.
    #[error("chunk size overflows")]
    ChunkSizeOverflow,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE_BYTES`].
    #[error("chunk size line longer than {MAX_CHUNK_LINE_BYTES} bytes")]
    ChunkLineTooLong,
    /// The CRLF after chunk data is missing.
    #[error("chunk data not followed by CRLF")]
    MissingChunkCrlf,
    /// An HTTP/1.1 request without a Host header (RFC 9112 §3.2).
    #[error("missing Host header")]
    MissingHost,
    /// A request with more than one Host header (RFC 9112 §3.2).
    #[error("more than one Host header")]
    DuplicateHost,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed before the message was complete")]
    UnexpectedEof,
}

impl H1Error {
    /// The status a server answers a request that broke this rule with:
    /// 414 for a long request line, 431 for header-section limits, 501 for
    /// an unsupported transfer coding, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            H1Error::RequestLineTooLong { .. } => 414,
            H1Error::HeaderSectionTooLarge { .. } | H1Error::TooManyHeaders { .. } => 431,
            H1Error::UnsupportedTransferCoding => 501,
            _ => 400,
        }
    }
}
