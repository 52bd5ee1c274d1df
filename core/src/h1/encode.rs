//! Writing heads, chunks and trailers in HTTP/1.1 wire format.
//!
//! Heads are written exactly as given: the caller has already removed the
//! hop-by-hop fields, and the encoder only adds the framing field that
//! matches the [`BodyFraming`] it is told to use.

use crate::message::{Header, RequestHead, ResponseHead};
use bytes::{BufMut, BytesMut};
use std::fmt::Write as _;

/// How the encoder frames a body it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: nothing is added to the head.
    None,
    /// A body of exactly this many bytes: adds `content-length: N` unless
    /// the head already has a Content-Length field.
    Length(u64),
    /// A chunked body: adds `transfer-encoding: chunked`.
    Chunked,
    /// A close-delimited body: nothing is added (the caller closes the
    /// connection after the body).
    Close,
}

/// Writes `METHOD target HTTP/1.1`, the fields in order, the framing field
/// for `framing`, and the blank line.
pub fn encode_request_head(head: &RequestHead, framing: BodyFraming, out: &mut BytesMut) {
    out.reserve(
        head.method
            .len()
            .saturating_add(head.target.len())
            .saturating_add(fields_len(&head.headers))
            .saturating_add(64),
    );
    out.put_slice(&head.method);
    out.put_u8(b' ');
    out.put_slice(&head.target);
    out.put_slice(b" HTTP/1.1\r\n");
    put_fields_and_framing(&head.headers, framing, out);
}

/// Writes `HTTP/1.1 {status} {reason}` (the space is written even when the
/// reason is empty), the fields in order, the framing field for `framing`,
/// and the blank line.
pub fn encode_response_head(head: &ResponseHead, framing: BodyFraming, out: &mut BytesMut) {
    out.reserve(
        head.reason
            .len()
            .saturating_add(fields_len(&head.headers))
            .saturating_add(64),
    );
    // Writing to a BytesMut cannot fail.
    let _ = write!(out, "HTTP/1.1 {:03} ", head.status);
    out.put_slice(&head.reason);
    out.put_slice(b"\r\n");
    put_fields_and_framing(&head.headers, framing, out);
}

/// Writes one chunk: `{hex length}\r\n{data}\r\n`. Empty `data` writes
/// nothing, since a zero-length chunk would mark the end of the body.
pub fn encode_chunk(data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    out.reserve(data.len().saturating_add(20));
    // Writing to a BytesMut cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Writes the last chunk `0\r\n`, the trailer fields, and the blank line
/// that ends a chunked body.
pub fn encode_last_chunk(trailers: &[Header], out: &mut BytesMut) {
    out.reserve(fields_len(trailers).saturating_add(5));
    out.put_slice(b"0\r\n");
    put_fields(trailers, out);
    out.put_slice(b"\r\n");
}

/// Bytes needed for `fields` on the wire.
fn fields_len(fields: &[Header]) -> usize {
    fields.iter().fold(0usize, |acc, h| {
        acc.saturating_add(h.name.len())
            .saturating_add(h.value.len())
            .saturating_add(4)
    })
}

fn put_fields(fields: &[Header], out: &mut BytesMut) {
    for h in fields {
        out.put_slice(&h.name);
        out.put_slice(b": ");
        out.put_slice(&h.value);
        out.put_slice(b"\r\n");
    }
}

fn put_fields_and_framing(fields: &[Header], framing: BodyFraming, out: &mut BytesMut) {
    put_fields(fields, out);
    match framing {
        BodyFraming::None | BodyFraming::Close => {}
        BodyFraming::Length(n) => {
            if !fields.iter().any(|h| h.is("content-length")) {
                // Writing to a BytesMut cannot fail.
                let _ = write!(out, "content-length: {n}\r\n");
            }
        }
        BodyFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}
