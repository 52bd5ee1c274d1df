//! HTTP/2 (RFC 9113) for both roles, sans-IO: HPACK, frames and the
//! connection state machine.
//!
//! * [`hpack`]: header compression (RFC 7541), written here with its Huffman
//!   code. The decoder counts the decoded header-list size as it goes and
//!   stops past [`MAX_HEADER_LIST_BYTES`] without allocating the rest.
//! * [`frame`]: the frame layer: parse and serialize every frame type,
//!   padding, size checks against `SETTINGS_MAX_FRAME_SIZE`.
//! * [`conn`]: one connection, as a server (facing clients) or as a client
//!   (facing an upstream): bytes and time in; events, bytes to write and a
//!   deadline out. Flow control is the backpressure: a receive window is
//!   reopened only as the consumer calls
//!   [`release_capacity`](conn::Connection::release_capacity).
//!
//! Errors are values carrying the RFC 9113 [`ErrorCode`] and whether they
//! end one stream or the whole connection ([`ErrorScope`]). Nothing here
//! panics on any input.
//!
//! Every limit that protects against a hostile peer is a named constant in
//! this module and a field of [`conn::H2Config`].

pub mod conn;
pub mod frame;
pub mod hpack;

use std::fmt;

/// The client connection preface (RFC 9113 §3.4), sent before any frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `bytes` could be the start of an HTTP/2 connection preface: the
/// bytes seen so far match [`PREFACE`] as far as they go.
///
/// A proxy listening for both HTTP/1.1 and h2c with prior knowledge reads
/// until this is `false` (HTTP/1.1) or `bytes.len() >= 24` and it is still
/// `true` (HTTP/2). An empty slice is a prefix.
pub fn is_h2_preface_prefix(bytes: &[u8]) -> bool {
    let n = bytes.len().min(PREFACE.len());
    bytes.get(..n) == PREFACE.get(..n)
}

/// Largest decoded header list accepted, in bytes, counted as RFC 9113
/// §6.5.2 does (name + value + 32 per field). Advertised as
/// `SETTINGS_MAX_HEADER_LIST_SIZE`; a block that decodes past it is an HPACK
/// bomb and ends the connection with `ENHANCE_YOUR_CALM`.
pub const MAX_HEADER_LIST_BYTES: usize = 64 * 1024;
/// Largest compressed header block (HEADERS or PUSH_PROMISE plus all its
/// CONTINUATION fragments) buffered before decoding. More is a CONTINUATION
/// flood: connection error `ENHANCE_YOUR_CALM`.
pub const MAX_HEADER_BLOCK_BYTES: usize = 64 * 1024;
/// Most CONTINUATION frames after one HEADERS frame (empty ones count too).
pub const MAX_CONTINUATION_FRAMES: usize = 64;
/// `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to the peer and enforced:
/// a stream past it is refused with `RST_STREAM(REFUSED_STREAM)`.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// `SETTINGS_HEADER_TABLE_SIZE` of our HPACK decoder (the RFC default).
pub const HEADER_TABLE_SIZE: u32 = 4096;
/// `SETTINGS_MAX_FRAME_SIZE` we accept (the RFC default; larger frames get
/// `FRAME_SIZE_ERROR`).
pub const MAX_FRAME_SIZE: u32 = 16_384;
/// Receive window we grant per stream and for the connection (the RFC
/// default). Unconsumed received data is bounded by this.
pub const INITIAL_WINDOW_SIZE: u32 = 65_535;
/// Rapid reset (CVE-2023-44487): most streams the peer may reset, or that
/// end in a stream error, within [`RESET_WINDOW`]. Past it: `GOAWAY(ENHANCE_YOUR_CALM)`.
pub const MAX_RESETS_PER_WINDOW: u32 = 200;
/// The time window [`MAX_RESETS_PER_WINDOW`] and [`MAX_CONTROL_FRAMES_PER_WINDOW`] count over.
pub const RESET_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// PING and SETTINGS floods: most non-ACK PING and SETTINGS frames (each
/// of which we must answer) within [`RESET_WINDOW`]. Past it:
/// `GOAWAY(ENHANCE_YOUR_CALM)`.
pub const MAX_CONTROL_FRAMES_PER_WINDOW: u32 = 1000;
/// How long the peer has to acknowledge our SETTINGS before
/// `GOAWAY(SETTINGS_TIMEOUT)`.
pub const SETTINGS_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes queued for the peer (not yet taken by `poll_transmit`) above which
/// [`conn::Connection::wants_read`] says to stop reading: a peer that does
/// not read cannot make us queue answers without bound.
pub const MAX_PENDING_TRANSMIT_BYTES: usize = 256 * 1024;
/// How many recently reset or closed stream ids are remembered, so frames
/// already in flight on them are told apart from frames on streams that
/// never existed.
pub const RECENTLY_CLOSED_STREAMS: usize = 64;

/// An RFC 9113 §7 error code, as carried by RST_STREAM and GOAWAY. Codes
/// this crate does not know are kept as their number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Graceful shutdown; not an error.
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    /// A protocol rule was broken.
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    /// An unexpected internal error.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    /// The flow-control protocol was violated.
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    /// A SETTINGS frame was not acknowledged in time.
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    /// A frame arrived on a stream already half-closed or closed.
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    /// A frame had an invalid size.
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    /// The HPACK state could not be kept.
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    /// A CONNECT tunnel failed.
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    /// The peer generates excessive load.
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    /// Transport security is inadequate.
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    /// HTTP/1.1 must be used instead.
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    /// The RFC name of the code, or `None` for a code it does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode({:#x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What an error ends (RFC 9113 §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorScope {
    /// The whole connection: answered with GOAWAY, then the connection closes.
    Connection,
    /// One stream, by id: answered with RST_STREAM; the connection goes on.
    Stream(u32),
}

/// A broken HTTP/2 rule: the error code to send, what it ends, and which
/// rule (a short text naming the RFC section).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({scope:?}): {rule}")]
pub struct H2Error {
    /// The code sent in GOAWAY or RST_STREAM.
    pub code: ErrorCode,
    /// Whether the connection or one stream ends.
    pub scope: ErrorScope,
    /// The rule broken, for logs: for example `"DATA on stream 0 (§6.1)"`.
    pub rule: &'static str,
}

impl H2Error {
    /// A connection error.
    pub fn connection(code: ErrorCode, rule: &'static str) -> Self {
        H2Error {
            code,
            scope: ErrorScope::Connection,
            rule,
        }
    }

    /// A stream error on `stream`.
    pub fn stream(stream: u32, code: ErrorCode, rule: &'static str) -> Self {
        H2Error {
            code,
            scope: ErrorScope::Stream(stream),
            rule,
        }
    }

    /// Whether this error ends the whole connection.
    pub fn is_connection_error(&self) -> bool {
        self.scope == ErrorScope::Connection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_prefix_detection() {
        assert!(is_h2_preface_prefix(b""));
        assert!(is_h2_preface_prefix(b"PRI * HT"));
        assert!(is_h2_preface_prefix(PREFACE));
        assert!(is_h2_preface_prefix(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"
        ));
        assert!(!is_h2_preface_prefix(b"GET / HTTP/1.1\r\n"));
        assert!(!is_h2_preface_prefix(b"PRI * HTTP/1.1"));
        assert!(!is_h2_preface_prefix(b"POST"));
    }

    #[test]
    fn error_codes_print_their_names() {
        assert_eq!(
            format!("{:?}", ErrorCode::ENHANCE_YOUR_CALM),
            "ENHANCE_YOUR_CALM"
        );
        assert_eq!(format!("{:?}", ErrorCode(0x99)), "ErrorCode(0x99)");
    }
}
