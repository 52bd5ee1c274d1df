//! HTTP/1.1 codec targets: requests, responses, chunked bodies.
//!
//! Input: a configuration byte, then the bytes of the stream. The
//! configuration picks the piece size the stream is fed in (see
//! [`crate::piece_size`]), tight or default limits, and for responses how
//! `begin_response` is called. Every run is compared with the same stream
//! fed whole: the events (body pieces joined) must be the same, and so must
//! the outcome.

use bytes::{Bytes, BytesMut};
use ouli_core::h1::{
    BodyKind, ChunkEvent, ChunkedDecoder, H1Error, H1Limits, RequestDecoder, RequestEvent,
    ResponseDecoder, ResponseEvent,
};

/// Limits small enough for short inputs to reach them.
pub(crate) fn tight_limits() -> H1Limits {
    H1Limits {
        max_request_line_bytes: 48,
        max_header_section_bytes: 160,
        max_header_count: 6,
    }
}

fn limits_for(cfg: u8) -> H1Limits {
    if cfg & 0x08 != 0 {
        tight_limits()
    } else {
        H1Limits::default()
    }
}

/// The event stream of a message codec, with data pieces joined.
#[derive(Debug, PartialEq, Eq)]
enum Ev<H> {
    Head(H),
    Data(Vec<u8>),
    ChunkEnd,
    Trailers(Vec<(Bytes, Bytes)>),
    End,
}

fn push_data<H>(events: &mut Vec<Ev<H>>, data: &Bytes) {
    assert!(!data.is_empty(), "a Data event is never empty");
    if let Some(Ev::Data(prev)) = events.last_mut() {
        prev.extend_from_slice(data);
    } else {
        events.push(Ev::Data(data.to_vec()));
    }
}

fn fields(headers: &[ouli_core::message::Header]) -> Vec<(Bytes, Bytes)> {
    headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

/// Checks the order of body events after a head of `kind`, and that a
/// Content-Length body has exactly that many bytes.
#[derive(Default)]
struct Grammar {
    /// `Some(kind)` inside a message.
    kind: Option<BodyKind>,
    body_bytes: u64,
    in_chunk: bool,
    trailers_seen: bool,
}

impl Grammar {
    fn head(&mut self, kind: BodyKind) {
        assert!(self.kind.is_none(), "Head inside a message");
        *self = Grammar {
            kind: Some(kind),
            ..Grammar::default()
        };
    }

    fn data(&mut self, n: usize) {
        let kind = self.kind.expect("Data outside a message");
        assert!(!self.trailers_seen, "Data after Trailers");
        assert!(kind != BodyKind::Empty, "Data in a bodiless message");
        self.body_bytes += n as u64;
        if let BodyKind::Length(len) = kind {
            assert!(self.body_bytes <= len, "more body than Content-Length");
        }
        if kind == BodyKind::Chunked {
            self.in_chunk = true;
        }
    }

    fn chunk_end(&mut self) {
        assert_eq!(
            self.kind,
            Some(BodyKind::Chunked),
            "ChunkEnd outside chunked"
        );
        assert!(self.in_chunk, "ChunkEnd with no chunk data before it");
        self.in_chunk = false;
    }

    fn trailers(&mut self, n: usize) {
        assert_eq!(
            self.kind,
            Some(BodyKind::Chunked),
            "Trailers outside chunked"
        );
        assert!(!self.in_chunk, "Trailers inside a chunk");
        assert!(!self.trailers_seen, "two trailer sections");
        assert!(n > 0, "empty Trailers event");
        self.trailers_seen = true;
    }

    fn end(&mut self) {
        let kind = self.kind.take().expect("End outside a message");
        assert!(!self.in_chunk, "End inside a chunk");
        if let BodyKind::Length(len) = kind {
            assert_eq!(self.body_bytes, len, "End before Content-Length bytes");
        }
    }
}

/// Runs `step` over `input` fed `piece` bytes at a time, then `eof` until
/// it stops. Returns the events and the error, if any.
fn drive<E>(
    input: &[u8],
    piece: usize,
    mut step: impl FnMut(&mut BytesMut) -> Result<Option<E>, H1Error>,
    mut eof: impl FnMut(&mut BytesMut) -> Result<Option<E>, H1Error>,
    mut on_event: impl FnMut(E),
) -> Option<H1Error> {
    let mut buf = BytesMut::new();
    let mut events = 0usize;
    let bounded = |events: &mut usize| {
        *events += 1;
        // Every event consumes input or changes state; a decoder that keeps
        // producing events from a bounded input is stuck in a loop.
        assert!(*events <= 4 * input.len() + 16, "decoder loops");
    };
    for part in input.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        loop {
            match step(&mut buf) {
                Ok(Some(ev)) => {
                    bounded(&mut events);
                    on_event(ev);
                }
                Ok(None) => break,
                Err(e) => {
                    // Poisoned: the same error again, nothing consumed.
                    let before = buf.len();
                    assert_eq!(
                        step(&mut buf).err(),
                        Some(e.clone()),
                        "decoder not poisoned"
                    );
                    assert_eq!(buf.len(), before);
                    return Some(e);
                }
            }
        }
    }
    loop {
        match eof(&mut buf) {
            Ok(Some(ev)) => {
                bounded(&mut events);
                on_event(ev);
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fn run_requests(
    limits: H1Limits,
    input: &[u8],
    piece: usize,
) -> (Vec<Ev<String>>, Option<H1Error>) {
    let dec = std::cell::RefCell::new(RequestDecoder::new(limits));
    let mut events = Vec::new();
    let mut grammar = Grammar::default();
    let err = drive(
        input,
        piece,
        |b| dec.borrow_mut().decode(b),
        |b| dec.borrow_mut().decode_eof(b),
        |ev| match ev {
            RequestEvent::Head(head, kind) => {
                assert!(
                    !matches!(kind, BodyKind::CloseDelimited),
                    "a request body is never close-delimited"
                );
                assert!(!head.method.is_empty() && !head.target.is_empty());
                assert!(head.headers.len() <= limits.max_header_count);
                grammar.head(kind);
                events.push(Ev::Head(format!("{head:?} {kind:?}")));
            }
            RequestEvent::Data(d) => {
                grammar.data(d.len());
                push_data(&mut events, &d);
            }
            RequestEvent::ChunkEnd => {
                grammar.chunk_end();
                events.push(Ev::ChunkEnd);
            }
            RequestEvent::Trailers(t) => {
                grammar.trailers(t.len());
                events.push(Ev::Trailers(fields(&t)));
            }
            RequestEvent::End => {
                grammar.end();
                events.push(Ev::End);
            }
        },
    );
    if err.is_none() {
        assert!(grammar.kind.is_none(), "decode_eof accepted a cut request");
        assert!(dec.borrow().is_idle(), "not idle after a clean EOF");
    }
    (events, err)
}

/// `RequestDecoder` over a stream of (possibly pipelined) requests, then
/// `decode_eof`. Config byte: piece size (bits 0-2), tight limits (bit 3).
pub fn h1_request(data: &[u8]) {
    let (cfg, input) = crate::split_cfg(data);
    let limits = limits_for(cfg);
    let split = run_requests(limits, input, crate::piece_size(cfg));
    let whole = run_requests(limits, input, usize::MAX);
    assert_eq!(split, whole, "split input changed the request events");
}

fn run_responses(
    limits: H1Limits,
    input: &[u8],
    piece: usize,
    begin: u8,
) -> (Vec<Ev<String>>, Option<H1Error>) {
    // begin: 0 never call begin_response, 1 GET before each response,
    // 2 HEAD before each, 3 alternate GET and HEAD.
    let dec = std::cell::RefCell::new(ResponseDecoder::new(limits));
    let mut responses = 0usize;
    let head_for = |n: usize| match begin {
        2 => true,
        3 => n % 2 == 1,
        _ => false,
    };
    if begin != 0 {
        dec.borrow_mut().begin_response(head_for(0));
    }
    let mut events = Vec::new();
    let mut grammar = Grammar::default();
    let mut informational_ok = true;
    let err = drive(
        input,
        piece,
        |b| dec.borrow_mut().decode(b),
        |b| dec.borrow_mut().decode_eof(b),
        |ev| match ev {
            ResponseEvent::Informational(head) => {
                assert!(informational_ok, "Informational inside a response");
                assert!((100..200).contains(&head.status) && head.status != 101);
                events.push(Ev::Head(format!("1xx {head:?}")));
            }
            ResponseEvent::Head(head, kind) => {
                assert!((100..=999).contains(&head.status));
                assert!(
                    head.status == 101 || !(100..200).contains(&head.status),
                    "interim status as a final head"
                );
                if begin != 0 && head_for(responses) {
                    assert_eq!(kind, BodyKind::Empty, "a HEAD response has no body");
                }
                if matches!(head.status, 204 | 304) {
                    assert_eq!(kind, BodyKind::Empty);
                }
                informational_ok = false;
                grammar.head(kind);
                events.push(Ev::Head(format!("{head:?} {kind:?}")));
            }
            ResponseEvent::Data(d) => {
                grammar.data(d.len());
                push_data(&mut events, &d);
            }
            ResponseEvent::ChunkEnd => {
                grammar.chunk_end();
                events.push(Ev::ChunkEnd);
            }
            ResponseEvent::Trailers(t) => {
                grammar.trailers(t.len());
                events.push(Ev::Trailers(fields(&t)));
            }
            ResponseEvent::End => {
                grammar.end();
                events.push(Ev::End);
                informational_ok = true;
                responses += 1;
                if begin != 0 {
                    dec.borrow_mut().begin_response(head_for(responses));
                }
            }
        },
    );
    if err.is_none() {
        assert!(grammar.kind.is_none(), "decode_eof accepted a cut response");
    }
    (events, err)
}

/// `ResponseDecoder` over a stream of responses, then `decode_eof`. Config
/// byte: piece size (bits 0-2), tight limits (bit 3), `begin_response` use
/// (bits 4-5: never, GET, HEAD, alternating).
pub fn h1_response(data: &[u8]) {
    let (cfg, input) = crate::split_cfg(data);
    let limits = limits_for(cfg);
    let begin = (cfg >> 4) & 3;
    let split = run_responses(limits, input, crate::piece_size(cfg), begin);
    let whole = run_responses(limits, input, usize::MAX, begin);
    assert_eq!(split, whole, "split input changed the response events");
}

fn run_chunked(
    limits: H1Limits,
    input: &[u8],
    piece: usize,
) -> (Vec<Ev<()>>, Option<H1Error>, usize) {
    let mut dec = ChunkedDecoder::new(limits);
    let mut events = Vec::new();
    let mut grammar = Grammar::default();
    grammar.head(BodyKind::Chunked);
    let mut ended = false;
    let mut buf = BytesMut::new();
    let mut count = 0usize;
    for part in input.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(ev)) => {
                    assert!(!ended, "event after End");
                    count += 1;
                    assert!(count <= 4 * input.len() + 16, "decoder loops");
                    match ev {
                        ChunkEvent::Data(d) => {
                            grammar.data(d.len());
                            push_data(&mut events, &d);
                        }
                        ChunkEvent::ChunkEnd => {
                            grammar.chunk_end();
                            events.push(Ev::ChunkEnd);
                        }
                        ChunkEvent::Trailers(t) => {
                            grammar.trailers(t.len());
                            events.push(Ev::Trailers(fields(&t)));
                        }
                        ChunkEvent::End => {
                            grammar.end();
                            ended = true;
                            events.push(Ev::End);
                        }
                    }
                }
                Ok(None) => {
                    if ended {
                        assert_eq!(buf.len(), before, "consumed bytes after End");
                    }
                    break;
                }
                Err(e) => {
                    assert!(!ended, "error after End");
                    assert_eq!(dec.decode(&mut buf).err(), Some(e.clone()));
                    return (events, Some(e), buf.len());
                }
            }
        }
    }
    (events, None, buf.len())
}

/// `ChunkedDecoder` over one chunked body (and whatever follows it).
/// Config byte: piece size (bits 0-2), tight limits (bit 3).
pub fn chunked(data: &[u8]) {
    let (cfg, input) = crate::split_cfg(data);
    let limits = limits_for(cfg);
    let split = run_chunked(limits, input, crate::piece_size(cfg));
    let whole = run_chunked(limits, input, usize::MAX);
    assert_eq!(split.0, whole.0, "split input changed the chunked events");
    assert_eq!(split.1, whole.1, "split input changed the chunked outcome");
    if split.0.last() == Some(&Ev::End) {
        // What follows the body is left for the next message, untouched.
        assert_eq!(
            split.2, whole.2,
            "split input changed what is left after the body"
        );
    }
}
