//! Tests of the HTTP/1.1 codec: one test per error variant with a precise
//! input, every limit at exactly the limit and one past it, the framing
//! rules of both roles, the encoder's exact bytes, and property tests for
//! split invariance and encode/decode round trips.

use super::*;
use crate::message::{Header, RequestHead, ResponseHead, Version};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn h(name: &str, value: &str) -> Header {
    Header::new(b(name), b(value))
}

fn req_head(method: &str, target: &str, version: Version, headers: Vec<Header>) -> RequestHead {
    RequestHead {
        method: b(method),
        target: b(target),
        version,
        headers,
    }
}

fn res_head(status: u16, reason: &str, headers: Vec<Header>) -> ResponseHead {
    ResponseHead {
        status,
        reason: b(reason),
        version: Version::Http11,
        headers,
    }
}

fn data(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

/// Drains `decode` until it needs more bytes.
fn drain_req(dec: &mut RequestDecoder, buf: &mut BytesMut) -> Result<Vec<RequestEvent>, H1Error> {
    let mut out = Vec::new();
    while let Some(ev) = dec.decode(buf)? {
        out.push(ev);
    }
    Ok(out)
}

/// Drains `decode_eof` until it reports nothing more.
fn drain_req_eof(
    dec: &mut RequestDecoder,
    buf: &mut BytesMut,
) -> Result<Vec<RequestEvent>, H1Error> {
    let mut out = Vec::new();
    while let Some(ev) = dec.decode_eof(buf)? {
        out.push(ev);
    }
    Ok(out)
}

/// Decodes `input` whole, then signals EOF.
fn requests(input: &[u8]) -> Result<Vec<RequestEvent>, H1Error> {
    requests_with(H1Limits::default(), input)
}

fn requests_with(limits: H1Limits, input: &[u8]) -> Result<Vec<RequestEvent>, H1Error> {
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    let mut out = drain_req(&mut dec, &mut buf)?;
    out.extend(drain_req_eof(&mut dec, &mut buf)?);
    Ok(out)
}

/// The error `decode` (not `decode_eof`) reports for `input`.
fn req_err(input: &[u8]) -> H1Error {
    req_err_with(H1Limits::default(), input)
}

fn req_err_with(limits: H1Limits, input: &[u8]) -> H1Error {
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    match drain_req(&mut dec, &mut buf) {
        Err(e) => {
            // Poisoned: the same error again, whatever follows.
            buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(dec.decode(&mut buf), Err(e.clone()));
            assert_eq!(dec.decode_eof(&mut buf), Err(e.clone()));
            e
        }
        Ok(evs) => panic!("expected an error, got {evs:?}"),
    }
}

/// Whether `decode` waits for more bytes (no error, no event) on `input`.
fn req_pending_with(limits: H1Limits, input: &[u8]) -> bool {
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    matches!(dec.decode(&mut buf), Ok(None))
}

fn drain_res(
    dec: &mut ResponseDecoder,
    buf: &mut BytesMut,
    eof: bool,
) -> Result<Vec<ResponseEvent>, H1Error> {
    let mut out = Vec::new();
    loop {
        let ev = if eof {
            dec.decode_eof(buf)?
        } else {
            dec.decode(buf)?
        };
        match ev {
            Some(ev) => out.push(ev),
            None => return Ok(out),
        }
    }
}

/// Decodes one response to a request (HEAD or not), then signals EOF.
fn response(input: &[u8], head: bool) -> Result<Vec<ResponseEvent>, H1Error> {
    response_with(H1Limits::default(), input, head)
}

fn response_with(
    limits: H1Limits,
    input: &[u8],
    head: bool,
) -> Result<Vec<ResponseEvent>, H1Error> {
    let mut dec = ResponseDecoder::new(limits);
    dec.begin_response(head);
    let mut buf = BytesMut::from(input);
    let mut out = drain_res(&mut dec, &mut buf, false)?;
    out.extend(drain_res(&mut dec, &mut buf, true)?);
    Ok(out)
}

/// The error `decode` (not `decode_eof`) reports for a response.
fn res_err(input: &[u8]) -> H1Error {
    res_err_with(H1Limits::default(), input)
}

fn res_err_with(limits: H1Limits, input: &[u8]) -> H1Error {
    let mut dec = ResponseDecoder::new(limits);
    dec.begin_response(false);
    let mut buf = BytesMut::from(input);
    match drain_res(&mut dec, &mut buf, false) {
        Err(e) => {
            assert_eq!(dec.decode(&mut buf), Err(e.clone()));
            e
        }
        Ok(evs) => panic!("expected an error, got {evs:?}"),
    }
}

fn chunks(input: &[u8]) -> Result<Vec<ChunkEvent>, H1Error> {
    chunks_with(H1Limits::default(), input)
}

fn chunks_with(limits: H1Limits, input: &[u8]) -> Result<Vec<ChunkEvent>, H1Error> {
    let mut dec = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(ev) = dec.decode(&mut buf)? {
        out.push(ev);
    }
    Ok(out)
}

fn chunk_err(input: &[u8]) -> H1Error {
    match chunks(input) {
        Err(e) => e,
        Ok(evs) => panic!("expected an error, got {evs:?}"),
    }
}

/// Joins adjacent `Data` events, so event lists compare independently of
/// how the bytes were split.
fn merge_req(events: Vec<RequestEvent>) -> Vec<RequestEvent> {
    let mut out: Vec<RequestEvent> = Vec::new();
    for ev in events {
        if let (Some(RequestEvent::Data(prev)), RequestEvent::Data(next)) = (out.last_mut(), &ev) {
            let mut joined = BytesMut::from(&prev[..]);
            joined.extend_from_slice(next);
            *prev = joined.freeze();
            continue;
        }
        out.push(ev);
    }
    out
}

fn merge_res(events: Vec<ResponseEvent>) -> Vec<ResponseEvent> {
    let mut out: Vec<ResponseEvent> = Vec::new();
    for ev in events {
        if let (Some(ResponseEvent::Data(prev)), ResponseEvent::Data(next)) = (out.last_mut(), &ev)
        {
            let mut joined = BytesMut::from(&prev[..]);
            joined.extend_from_slice(next);
            *prev = joined.freeze();
            continue;
        }
        out.push(ev);
    }
    out
}

fn limits(line: usize, section: usize, count: usize) -> H1Limits {
    H1Limits {
        max_request_line_bytes: line,
        max_header_section_bytes: section,
        max_header_count: count,
    }
}

// ------------------------------------------------------- requests: basics

#[test]
fn simple_get() {
    let evs =
        requests(b"GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nX-Case: Keep \r\n\r\n").unwrap();
    assert_eq!(
        evs,
        vec![
            RequestEvent::Head(
                req_head(
                    "GET",
                    "/a?b=c",
                    Version::Http11,
                    vec![h("Host", "example.test"), h("X-Case", "Keep")]
                ),
                BodyKind::Empty
            ),
            RequestEvent::End,
        ]
    );
}

#[test]
fn header_case_order_and_duplicates_are_kept() {
    let evs = requests(
        b"GET / HTTP/1.1\r\nx-b: 1\r\nHOST: h\r\nX-B: 2\r\nx-a:\t\tv  w\t\r\nEmpty:\r\n\r\n",
    )
    .unwrap();
    let RequestEvent::Head(head, BodyKind::Empty) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(
        head.headers,
        vec![
            h("x-b", "1"),
            h("HOST", "h"),
            h("X-B", "2"),
            h("x-a", "v  w"),
            h("Empty", "")
        ]
    );
}

#[test]
fn obs_text_in_values_is_kept_raw() {
    let evs = requests(b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9 \xff\r\n\r\n").unwrap();
    let RequestEvent::Head(head, _) = &evs[0] else {
        panic!()
    };
    assert_eq!(&head.headers[1].value[..], b"caf\xc3\xa9 \xff");
}

#[test]
fn http10_request_without_host() {
    let evs = requests(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        evs,
        vec![
            RequestEvent::Head(
                req_head("GET", "/", Version::Http10, vec![]),
                BodyKind::Empty
            ),
            RequestEvent::End
        ]
    );
}

#[test]
fn pipelined_requests_in_one_buffer() {
    let input = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
DELETE /4 HTTP/1.0\r\n\r\n";
    let evs = requests(input).unwrap();
    let host = || vec![h("Host", "a")];
    assert_eq!(
        evs,
        vec![
            RequestEvent::Head(
                req_head("GET", "/1", Version::Http11, host()),
                BodyKind::Empty
            ),
            RequestEvent::End,
            RequestEvent::Head(
                req_head(
                    "POST",
                    "/2",
                    Version::Http11,
                    vec![h("Host", "a"), h("Content-Length", "5")]
                ),
                BodyKind::Length(5)
            ),
            RequestEvent::Data(data(b"hello")),
            RequestEvent::End,
            RequestEvent::Head(
                req_head(
                    "PUT",
                    "/3",
                    Version::Http11,
                    vec![h("Host", "a"), h("Transfer-Encoding", "chunked")]
                ),
                BodyKind::Chunked
            ),
            RequestEvent::Data(data(b"abc")),
            RequestEvent::ChunkEnd,
            RequestEvent::End,
            RequestEvent::Head(
                req_head("DELETE", "/4", Version::Http10, vec![]),
                BodyKind::Empty
            ),
            RequestEvent::End,
        ]
    );
}

#[test]
fn content_length_zero_ends_right_after_head() {
    let evs = requests(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(evs.len(), 2);
    assert!(matches!(evs[0], RequestEvent::Head(_, BodyKind::Length(0))));
    assert_eq!(evs[1], RequestEvent::End);
}

#[test]
fn length_body_streams_as_it_arrives_zero_copy() {
    let mut dec = RequestDecoder::new(H1Limits::default());
    let mut buf =
        BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n012"[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(RequestEvent::Head(_, BodyKind::Length(10))))
    ));
    let body_ptr = buf.as_ptr();
    let Ok(Some(RequestEvent::Data(d))) = dec.decode(&mut buf) else {
        panic!()
    };
    assert_eq!(&d[..], b"012");
    assert_eq!(d.as_ptr(), body_ptr, "Data must be a slice of the buffer");
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert!(!dec.is_idle());
    // The rest of the body plus the start of a pipelined request.
    buf.extend_from_slice(b"3456789GET");
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(RequestEvent::Data(data(b"3456789"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(Some(RequestEvent::End)));
    assert!(dec.is_idle());
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert!(!dec.is_idle());
    assert_eq!(&buf[..], b"GET");
}

#[test]
fn leading_empty_lines_are_skipped_up_to_a_bound() {
    let mut input = b"\r\n".repeat(16);
    input.extend_from_slice(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let evs = requests(&input).unwrap();
    assert_eq!(evs.len(), 4);
    let mut too_many = b"\r\n".repeat(17);
    too_many.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        req_err(&too_many),
        H1Error::MalformedStartLine("request line")
    );
    // A lone CR waits for its LF.
    assert!(req_pending_with(H1Limits::default(), b"\r"));
}

#[test]
fn idle_and_eof_between_requests() {
    let mut dec = RequestDecoder::new(H1Limits::default());
    let mut buf = BytesMut::new();
    assert!(dec.is_idle());
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n");
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(RequestEvent::Head(..)))
    ));
    assert!(!dec.is_idle());
    assert_eq!(dec.decode(&mut buf), Ok(Some(RequestEvent::End)));
    assert!(dec.is_idle());
    // Trailing empty line is skipped; EOF there is clean.
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    assert!(buf.is_empty());
}

// --------------------------------------------------- requests: every error

#[test]
fn request_line_limit_exact_and_one_past() {
    // "GET /" + padding + " HTTP/1.1\r\n" is exactly 32 bytes.
    let line = |len: usize| {
        let pad = "a".repeat(len - "GET / HTTP/1.1\r\n".len());
        format!("GET /{pad} HTTP/1.1\r\n")
    };
    let lim = limits(32, 1024, 8);
    assert_eq!(line(32).len(), 32);
    let ok = format!("{}Host: a\r\n\r\n", line(32));
    assert!(requests_with(lim, ok.as_bytes()).is_ok());
    let long = format!("{}Host: a\r\n\r\n", line(33));
    assert_eq!(
        req_err_with(lim, long.as_bytes()),
        H1Error::RequestLineTooLong { limit: 32 }
    );
    // Incomplete: 31 bytes without LF may still fit; 32 cannot.
    assert!(req_pending_with(lim, &line(33).as_bytes()[..31]));
    assert_eq!(
        req_err_with(lim, &line(33).as_bytes()[..32]),
        H1Error::RequestLineTooLong { limit: 32 }
    );
    assert_eq!(H1Error::RequestLineTooLong { limit: 32 }.status(), 414);
}

#[test]
fn request_line_limit_never_buffers_past_it() {
    let lim = limits(64, 1024, 8);
    let mut dec = RequestDecoder::new(lim);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let err = loop {
        buf.extend_from_slice(b"a");
        fed += 1;
        match dec.decode(&mut buf) {
            Ok(None) => continue,
            Ok(Some(ev)) => panic!("{ev:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err, H1Error::RequestLineTooLong { limit: 64 });
    assert_eq!(fed, 64);
}

#[test]
fn header_section_limit_exact_and_one_past() {
    let head = |len: usize| {
        let base = "GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n".len();
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(len - base)
        )
    };
    let lim = limits(1024, 64, 8);
    assert_eq!(head(64).len(), 64);
    assert!(requests_with(lim, head(64).as_bytes()).is_ok());
    assert_eq!(
        req_err_with(lim, head(65).as_bytes()),
        H1Error::HeaderSectionTooLarge { limit: 64 }
    );
    // Incomplete heads: 63 bytes may still end within 64; 64 cannot.
    assert!(req_pending_with(lim, &head(65).as_bytes()[..63]));
    assert_eq!(
        req_err_with(lim, &head(65).as_bytes()[..64]),
        H1Error::HeaderSectionTooLarge { limit: 64 }
    );
    // Same for a status line and its fields.
    let res = |len: usize| {
        let base = "HTTP/1.1 200 OK\r\nX: \r\n\r\n".len();
        format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "v".repeat(len - base))
    };
    assert!(response_with(lim, res(64).as_bytes(), true).is_ok());
    assert_eq!(
        res_err_with(lim, res(65).as_bytes()),
        H1Error::HeaderSectionTooLarge { limit: 64 }
    );
    assert_eq!(
        res_err_with(lim, &res(65).as_bytes()[..64]),
        H1Error::HeaderSectionTooLarge { limit: 64 }
    );
    assert_eq!(H1Error::HeaderSectionTooLarge { limit: 64 }.status(), 431);
}

#[test]
fn header_count_limit_exact_and_one_past() {
    let lim = limits(1024, 4096, 3);
    let ok = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(requests_with(lim, ok).is_ok());
    let over = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        req_err_with(lim, over),
        H1Error::TooManyHeaders { limit: 3 }
    );
    // Detected as soon as the fourth field line is complete.
    assert_eq!(
        req_err_with(lim, &over[..over.len() - 2]),
        H1Error::TooManyHeaders { limit: 3 }
    );
    assert!(response_with(
        lim,
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        true
    )
    .is_ok());
    assert_eq!(
        res_err_with(
            lim,
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"
        ),
        H1Error::TooManyHeaders { limit: 3 }
    );
    // A zero limit admits no field at all.
    assert_eq!(
        req_err_with(limits(1024, 4096, 0), b"GET / HTTP/1.0\r\nA: 1\r\n\r\n"),
        H1Error::TooManyHeaders { limit: 0 }
    );
    assert_eq!(H1Error::TooManyHeaders { limit: 3 }.status(), 431);
}

#[test]
fn default_header_count_limit() {
    let mut ok = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 1..MAX_HEADER_COUNT {
        ok.push_str(&format!("X-{i}: v\r\n"));
    }
    let over = format!("{ok}X-last: v\r\n\r\n");
    ok.push_str("\r\n");
    assert!(requests(ok.as_bytes()).is_ok());
    assert_eq!(
        req_err(over.as_bytes()),
        H1Error::TooManyHeaders {
            limit: MAX_HEADER_COUNT
        }
    );
}

#[test]
fn malformed_request_lines() {
    let bad: &[&[u8]] = &[
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        b"GET /\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\n\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.11\r\nHost: a\r\n\r\n",
        b"GET / HTTPS/1.1\r\nHost: a\r\n\r\n",
        b"GET / http/1.1\r\nHost: a\r\n\r\n",
    ];
    for input in bad {
        assert_eq!(
            req_err(input),
            H1Error::MalformedStartLine("request line"),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // Rejected once the line is complete, before the head is.
    assert_eq!(
        req_err(b"GET  / HTTP/1.1\r\n"),
        H1Error::MalformedStartLine("request line")
    );
    assert_eq!(
        H1Error::MalformedStartLine("request line").to_string(),
        "malformed request line"
    );
}

#[test]
fn unsupported_versions() {
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/2"] {
        let input = format!("GET / {v}\r\nHost: a\r\n\r\n");
        assert_eq!(
            req_err(input.as_bytes()),
            H1Error::UnsupportedVersion,
            "{v}"
        );
    }
    assert_eq!(
        res_err(b"HTTP/2.0 200 OK\r\n\r\n"),
        H1Error::UnsupportedVersion
    );
    assert_eq!(
        res_err(b"HTTP/1.2 200 OK\r\n\r\n"),
        H1Error::UnsupportedVersion
    );
}

#[test]
fn invalid_header_names() {
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\"y: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n",
    ];
    for input in bad {
        assert_eq!(
            req_err(input),
            H1Error::InvalidHeaderName,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        res_err(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
        H1Error::InvalidHeaderName
    );
}

#[test]
fn invalid_header_values() {
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        // A bare LF is a control character inside the value.
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n",
    ];
    for input in bad {
        assert_eq!(
            req_err(input),
            H1Error::InvalidHeaderValue,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        res_err(b"HTTP/1.1 200 OK\r\nX: \x1b[31m\r\n\r\n"),
        H1Error::InvalidHeaderValue
    );
}

#[test]
fn obs_fold_is_rejected() {
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    ];
    for input in bad {
        assert_eq!(req_err(input), H1Error::ObsFold);
    }
    // Detected as soon as the folded line starts.
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n "),
        H1Error::ObsFold
    );
    assert_eq!(
        res_err(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"),
        H1Error::ObsFold
    );
}

#[test]
fn content_length_with_transfer_encoding() {
    let input =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(req_err(input), H1Error::ContentLengthWithTransferEncoding);
    let input =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 3\r\n\r\n";
    assert_eq!(req_err(input), H1Error::ContentLengthWithTransferEncoding);
    assert_eq!(
        res_err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        H1Error::ContentLengthWithTransferEncoding
    );
}

#[test]
fn content_length_lists_and_conflicts() {
    for ok in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5 ,\t5\r\ncontent-length: 5\r\n",
        "Content-Length: 005\r\n",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\n{ok}\r\nhello");
        let evs = requests(input.as_bytes()).unwrap();
        assert!(
            matches!(evs[0], RequestEvent::Head(_, BodyKind::Length(5))),
            "{ok}"
        );
        assert_eq!(evs[1], RequestEvent::Data(data(b"hello")));
    }
    for bad in [
        "Content-Length: 5, 6\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\n{bad}\r\n");
        assert_eq!(
            req_err(input.as_bytes()),
            H1Error::ConflictingContentLength,
            "{bad}"
        );
    }
    assert_eq!(
        res_err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        H1Error::ConflictingContentLength
    );
}

#[test]
fn invalid_content_lengths() {
    for bad in [
        "",
        "abc",
        "-1",
        "+5",
        "0x10",
        "1 2",
        "5,",
        ",5",
        "1.0",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(
            req_err(input.as_bytes()),
            H1Error::InvalidContentLength,
            "{bad:?}"
        );
    }
    assert_eq!(
        res_err(b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n"),
        H1Error::InvalidContentLength
    );
}

#[test]
fn largest_content_length_is_accepted() {
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\nabc";
    let mut dec = RequestDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(&input[..]);
    let evs = drain_req(&mut dec, &mut buf).unwrap();
    assert!(matches!(
        evs[0],
        RequestEvent::Head(_, BodyKind::Length(u64::MAX))
    ));
    assert_eq!(evs[1], RequestEvent::Data(data(b"abc")));
    assert_eq!(dec.decode_eof(&mut buf), Err(H1Error::UnexpectedEof));
}

#[test]
fn transfer_encoding_not_chunked() {
    for bad in [
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: \r\n",
        "Transfer-Encoding: chunkedx\r\n",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\n{bad}\r\n");
        assert_eq!(
            req_err(input.as_bytes()),
            H1Error::TransferEncodingNotChunked,
            "{bad:?}"
        );
    }
}

#[test]
fn unsupported_transfer_coding() {
    for bad in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\n{bad}\r\n");
        assert_eq!(
            req_err(input.as_bytes()),
            H1Error::UnsupportedTransferCoding,
            "{bad:?}"
        );
    }
    assert_eq!(H1Error::UnsupportedTransferCoding.status(), 501);
}

#[test]
fn transfer_encoding_is_case_insensitive_list() {
    for te in ["CHUNKED", " Chunked ", "chunked,", ", chunked"] {
        let input =
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        let evs = requests(input.as_bytes()).unwrap();
        assert!(
            matches!(evs[0], RequestEvent::Head(_, BodyKind::Chunked)),
            "{te:?}"
        );
        assert_eq!(evs[1], RequestEvent::End);
    }
}

#[test]
fn host_rules() {
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nX: a\r\n\r\n"),
        H1Error::MissingHost
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        H1Error::DuplicateHost
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n"),
        H1Error::DuplicateHost
    );
    // An empty Host is allowed (authority-less target).
    assert!(requests(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").is_ok());
    assert_eq!(H1Error::MissingHost.status(), 400);
}

#[test]
fn request_eof_mid_message() {
    let cut: &[&[u8]] = &[
        b"G",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    ];
    for input in cut {
        let mut dec = RequestDecoder::new(H1Limits::default());
        let mut buf = BytesMut::from(*input);
        let _ = drain_req(&mut dec, &mut buf).unwrap();
        assert_eq!(
            drain_req_eof(&mut dec, &mut buf),
            Err(H1Error::UnexpectedEof),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        // Poisoned.
        assert_eq!(dec.decode(&mut buf), Err(H1Error::UnexpectedEof));
    }
    // decode_eof still delivers complete events before judging.
    let evs = requests(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok").unwrap();
    assert_eq!(evs.len(), 3);
}

// ------------------------------------------------------------- responses

#[test]
fn response_with_length_and_reason() {
    let evs = response(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc",
        false,
    )
    .unwrap();
    assert_eq!(
        evs,
        vec![
            ResponseEvent::Head(
                res_head(404, "Not Found", vec![h("Content-Length", "3")]),
                BodyKind::Length(3)
            ),
            ResponseEvent::Data(data(b"abc")),
            ResponseEvent::End,
        ]
    );
}

#[test]
fn response_reasons_and_versions() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"HTTP/1.1 200 \r\n", b""),
        (b"HTTP/1.1 200\r\n", b""),
        (b"HTTP/1.1 200 A  B\r\n", b"A  B"),
        (b"HTTP/1.1 200 caf\xc3\xa9\r\n", b"caf\xc3\xa9"),
    ];
    for (line, reason) in cases {
        let mut input = line.to_vec();
        input.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let evs = response(&input, false).unwrap();
        let ResponseEvent::Head(head, _) = &evs[0] else {
            panic!()
        };
        assert_eq!(&head.reason[..], *reason);
    }
    let evs = response(b"HTTP/1.0 999 Odd\r\nContent-Length: 0\r\n\r\n", false).unwrap();
    let ResponseEvent::Head(head, _) = &evs[0] else {
        panic!()
    };
    assert_eq!((head.version, head.status), (Version::Http10, 999));
}

#[test]
fn malformed_status_lines() {
    let bad: &[&[u8]] = &[
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 000 Zero\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\n\r\n",
        b"\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x01K\r\n\r\n",
    ];
    for input in bad {
        assert_eq!(
            res_err(input),
            H1Error::MalformedStartLine("status line"),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn bodiless_responses_ignore_framing_headers() {
    // HEAD: a Content-Length describes the GET body; none follows.
    let mut dec = ResponseDecoder::new(H1Limits::default());
    dec.begin_response(true);
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..],
    );
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(ResponseEvent::Head(_, BodyKind::Empty)))
    ));
    assert_eq!(dec.decode(&mut buf), Ok(Some(ResponseEvent::End)));
    dec.begin_response(false);
    let evs = drain_res(&mut dec, &mut buf, true).unwrap();
    assert!(matches!(
        evs[0],
        ResponseEvent::Head(_, BodyKind::Length(2))
    ));
    assert_eq!(evs[1], ResponseEvent::Data(data(b"hi")));
    assert_eq!(evs[2], ResponseEvent::End);

    for status in [204, 304] {
        let input = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let evs = response(input.as_bytes(), false).unwrap();
        assert_eq!(evs.len(), 2, "{status}");
        assert!(matches!(evs[0], ResponseEvent::Head(_, BodyKind::Empty)));
        assert_eq!(evs[1], ResponseEvent::End);
    }
}

#[test]
fn informational_then_final() {
    let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    let evs = response(input, false).unwrap();
    assert_eq!(
        evs,
        vec![
            ResponseEvent::Informational(res_head(100, "Continue", vec![])),
            ResponseEvent::Informational(res_head(103, "Early Hints", vec![h("Link", "</a>")])),
            ResponseEvent::Head(
                res_head(200, "OK", vec![h("Content-Length", "1")]),
                BodyKind::Length(1)
            ),
            ResponseEvent::Data(data(b"x")),
            ResponseEvent::End,
        ]
    );
    // EOF after an interim response is mid-exchange.
    assert_eq!(
        response(b"HTTP/1.1 100 Continue\r\n\r\n", false),
        Err(H1Error::UnexpectedEof)
    );
}

#[test]
fn switching_protocols_ends_at_head() {
    let mut dec = ResponseDecoder::new(H1Limits::default());
    dec.begin_response(false);
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00"[..],
    );
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(ResponseEvent::Head(
            ResponseHead { status: 101, .. },
            BodyKind::Empty
        )))
    ));
    assert_eq!(dec.decode(&mut buf), Ok(Some(ResponseEvent::End)));
    // The tunnel's bytes are left for the caller.
    assert_eq!(&buf[..], b"\x81\x00");
}

#[test]
fn close_delimited_response() {
    let mut dec = ResponseDecoder::new(H1Limits::default());
    dec.begin_response(false);
    let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nab"[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(ResponseEvent::Head(_, BodyKind::CloseDelimited)))
    ));
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(ResponseEvent::Data(data(b"ab"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"cd");
    assert_eq!(
        dec.decode_eof(&mut buf),
        Ok(Some(ResponseEvent::Data(data(b"cd"))))
    );
    assert_eq!(dec.decode_eof(&mut buf), Ok(Some(ResponseEvent::End)));
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));

    // Empty close-delimited body: just End.
    let evs = response(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1], ResponseEvent::End);

    // A final coding other than chunked is read until close.
    let evs = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
        false,
    )
    .unwrap();
    assert!(matches!(
        evs[0],
        ResponseEvent::Head(_, BodyKind::CloseDelimited)
    ));
    assert_eq!(evs[1], ResponseEvent::Data(data(b"zz")));
    assert_eq!(evs[2], ResponseEvent::End);
}

#[test]
fn chunked_response_with_trailers() {
    let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\nX-Sum: 1\r\n\r\n";
    let evs = response(input, false).unwrap();
    assert!(matches!(evs[0], ResponseEvent::Head(_, BodyKind::Chunked)));
    assert_eq!(
        evs[1..],
        [
            ResponseEvent::Data(data(b"ab")),
            ResponseEvent::ChunkEnd,
            ResponseEvent::Trailers(vec![h("X-Sum", "1")]),
            ResponseEvent::End,
        ]
    );
}

#[test]
fn response_eof_cases() {
    // Announced but nothing arrived.
    let mut dec = ResponseDecoder::new(H1Limits::default());
    dec.begin_response(false);
    assert_eq!(
        dec.decode_eof(&mut BytesMut::new()),
        Err(H1Error::UnexpectedEof)
    );
    // Nothing announced, nothing arrived: clean.
    let mut dec = ResponseDecoder::new(H1Limits::default());
    assert_eq!(dec.decode_eof(&mut BytesMut::new()), Ok(None));
    // Mid-head, mid-length body, mid-chunked body.
    for input in [
        &b"HTTP/1.1 200 OK\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab",
    ] {
        assert_eq!(response(input, false), Err(H1Error::UnexpectedEof));
    }
    // After a complete response, EOF is clean until the next is announced.
    let mut dec = ResponseDecoder::new(H1Limits::default());
    dec.begin_response(false);
    let mut buf = BytesMut::from(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]);
    assert_eq!(drain_res(&mut dec, &mut buf, true).unwrap().len(), 2);
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    dec.begin_response(false);
    assert_eq!(dec.decode_eof(&mut buf), Err(H1Error::UnexpectedEof));
    assert_eq!(dec.decode(&mut buf), Err(H1Error::UnexpectedEof));
}

// --------------------------------------------------------------- chunked

#[test]
fn chunk_extensions_and_trailers() {
    let evs = chunks(
        b"5;name=val;x\r\nhello\r\nA ; q=\"a b\"\r\n0123456789\r\n0;last\r\nExpires: never\r\nx-t:\t y \r\n\r\nrest",
    )
    .unwrap();
    assert_eq!(
        evs,
        vec![
            ChunkEvent::Data(data(b"hello")),
            ChunkEvent::ChunkEnd,
            ChunkEvent::Data(data(b"0123456789")),
            ChunkEvent::ChunkEnd,
            ChunkEvent::Trailers(vec![h("Expires", "never"), h("x-t", "y")]),
            ChunkEvent::End,
        ]
    );
}

#[test]
fn chunk_data_streams_in_pieces_and_end_is_final() {
    let mut dec = ChunkedDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(&b"a\r\n0123"[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(ChunkEvent::Data(data(b"0123"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"456789\r");
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(ChunkEvent::Data(data(b"456789"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"\n0\r\n\r\nNEXT");
    assert_eq!(dec.decode(&mut buf), Ok(Some(ChunkEvent::ChunkEnd)));
    assert_eq!(dec.decode(&mut buf), Ok(Some(ChunkEvent::End)));
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], b"NEXT");
}

#[test]
fn chunk_sizes_accepted() {
    let evs = chunks(b"0000000000000000001\r\nx\r\nF\r\n0123456789abcde\r\n0\r\n\r\n").unwrap();
    assert_eq!(evs.len(), 5);
    // The largest size parses; its data simply has not arrived.
    let mut dec = ChunkedDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(ChunkEvent::Data(data(b"ab"))))
    );
}

#[test]
fn invalid_chunk_sizes() {
    let bad: &[&[u8]] = &[
        b"zz\r\n",
        b"z",
        b"-1\r\n",
        b"+1\r\n",
        b"0x1\r\n",
        b" 1\r\n",
        b"\r\n",
        b"1\n",
        b"1 \r\n",
        b"1 x\r\n",
        b"1;ext\x01\r\n",
        b"1;ext\x7f\r\n",
        b"1;a\rb\r\n",
        b"3\r\nabc\r\nq",
    ];
    for input in bad {
        assert_eq!(
            chunk_err(input),
            H1Error::InvalidChunkSize,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn chunk_size_overflow() {
    assert_eq!(
        chunk_err(b"10000000000000000\r\n"),
        H1Error::ChunkSizeOverflow
    );
    assert_eq!(
        chunk_err(b"fffffffffffffffff;x\r\n"),
        H1Error::ChunkSizeOverflow
    );
}

#[test]
fn chunk_line_limit_exact_and_one_past() {
    let line = |len: usize| {
        let mut l = b"1;".to_vec();
        l.resize(len - 2, b'e');
        l.extend_from_slice(b"\r\n");
        l
    };
    let mut ok = line(MAX_CHUNK_LINE_BYTES);
    assert_eq!(ok.len(), MAX_CHUNK_LINE_BYTES);
    ok.extend_from_slice(b"x\r\n0\r\n\r\n");
    assert_eq!(chunks(&ok).unwrap().len(), 3);
    let long = line(MAX_CHUNK_LINE_BYTES + 1);
    assert_eq!(chunk_err(&long), H1Error::ChunkLineTooLong);
    // Incomplete lines: one byte short may still fit; at the limit cannot.
    let mut dec = ChunkedDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(&long[..MAX_CHUNK_LINE_BYTES - 1]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&long[MAX_CHUNK_LINE_BYTES - 1..MAX_CHUNK_LINE_BYTES]);
    assert_eq!(dec.decode(&mut buf), Err(H1Error::ChunkLineTooLong));
}

#[test]
fn missing_chunk_crlf() {
    for input in [
        &b"3\r\nabcX\r\n"[..],
        b"3\r\nabc\n",
        b"3\r\nabc\rX",
        b"3\r\nabcd",
    ] {
        assert_eq!(chunk_err(input), H1Error::MissingChunkCrlf);
    }
    // Through a request too.
    assert_eq!(
        req_err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n"),
        H1Error::MissingChunkCrlf
    );
}

#[test]
fn trailer_section_rules() {
    assert_eq!(chunk_err(b"0\r\nX: a\r\n b\r\n\r\n"), H1Error::ObsFold);
    assert_eq!(chunk_err(b"0\r\n b\r\n\r\n"), H1Error::ObsFold);
    assert_eq!(
        chunk_err(b"0\r\nBad Name: a\r\n\r\n"),
        H1Error::InvalidHeaderName
    );
    assert_eq!(
        chunk_err(b"0\r\nX: a\x01\r\n\r\n"),
        H1Error::InvalidHeaderValue
    );
    assert_eq!(chunk_err(b"0\r\nX: a\n\r\n"), H1Error::InvalidHeaderValue);
    assert_eq!(chunk_err(b"0\r\n\n"), H1Error::InvalidHeaderName);
    // Count limit: exactly at it and one past.
    let lim = limits(1024, 4096, 2);
    assert_eq!(
        chunks_with(lim, b"0\r\nA: 1\r\nB: 2\r\n\r\n").unwrap(),
        vec![
            ChunkEvent::Trailers(vec![h("A", "1"), h("B", "2")]),
            ChunkEvent::End
        ]
    );
    assert_eq!(
        chunks_with(lim, b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
        Err(H1Error::TooManyHeaders { limit: 2 })
    );
    // Size limit: the trailer section (blank line included) at it and past it.
    let section = |len: usize| {
        let mut s = b"0\r\nT: ".to_vec();
        s.resize(len + 3 - 4, b'v');
        s.extend_from_slice(b"\r\n\r\n");
        s
    };
    let lim = limits(1024, 32, 8);
    assert_eq!(section(32).len() - 3, 32);
    assert_eq!(chunks_with(lim, &section(32)).unwrap().len(), 2);
    assert_eq!(
        chunks_with(lim, &section(33)),
        Err(H1Error::HeaderSectionTooLarge { limit: 32 })
    );
    assert_eq!(
        chunks_with(lim, &section(33)[..3 + 32]),
        Err(H1Error::HeaderSectionTooLarge { limit: 32 })
    );
    assert_eq!(chunks_with(lim, &section(33)[..3 + 31]), Ok(vec![]));
}

#[test]
fn chunked_decoder_is_poisoned() {
    let mut dec = ChunkedDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(&b"g\r\n"[..]);
    assert_eq!(dec.decode(&mut buf), Err(H1Error::InvalidChunkSize));
    let mut good = BytesMut::from(&b"0\r\n\r\n"[..]);
    assert_eq!(dec.decode(&mut good), Err(H1Error::InvalidChunkSize));
}

// ---------------------------------------------------------------- encode

#[test]
fn encode_request_heads() {
    let head = req_head(
        "POST",
        "/p?q=1",
        Version::Http10,
        vec![h("Host", "a"), h("X-Mixed", "V")],
    );
    let mut out = BytesMut::new();
    encode_request_head(&head, BodyFraming::Length(12), &mut out);
    assert_eq!(
        &out[..],
        b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Mixed: V\r\ncontent-length: 12\r\n\r\n"
    );
    let mut with_cl = head.clone();
    with_cl.headers.push(h("Content-Length", "12"));
    let mut out = BytesMut::new();
    encode_request_head(&with_cl, BodyFraming::Length(12), &mut out);
    assert_eq!(
        &out[..],
        b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Mixed: V\r\nContent-Length: 12\r\n\r\n"
    );
    let mut out = BytesMut::new();
    encode_request_head(&head, BodyFraming::Chunked, &mut out);
    assert_eq!(
        &out[..],
        b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Mixed: V\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    for framing in [BodyFraming::None, BodyFraming::Close] {
        let mut out = BytesMut::new();
        encode_request_head(&head, framing, &mut out);
        assert_eq!(
            &out[..],
            b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Mixed: V\r\n\r\n"
        );
    }
}

#[test]
fn encode_response_heads() {
    let mut out = BytesMut::new();
    encode_response_head(&res_head(200, "", vec![]), BodyFraming::None, &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 200 \r\n\r\n");
    let mut head = res_head(404, "Not Found", vec![h("A", "b")]);
    head.version = Version::Http10;
    let mut out = BytesMut::new();
    encode_response_head(&head, BodyFraming::Length(0), &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 404 Not Found\r\nA: b\r\ncontent-length: 0\r\n\r\n"
    );
    let mut out = BytesMut::new();
    encode_response_head(&head, BodyFraming::Chunked, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 404 Not Found\r\nA: b\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn encode_chunks_and_last_chunk() {
    let mut out = BytesMut::new();
    encode_chunk(b"", &mut out);
    assert!(out.is_empty());
    encode_chunk(&[7u8; 255], &mut out);
    assert_eq!(&out[..5], b"ff\r\n\x07");
    assert_eq!(&out[out.len() - 2..], b"\r\n");
    assert_eq!(out.len(), 4 + 255 + 2);
    let mut out = BytesMut::new();
    encode_last_chunk(&[], &mut out);
    assert_eq!(&out[..], b"0\r\n\r\n");
    let mut out = BytesMut::new();
    encode_last_chunk(&[h("X-A", "1"), h("x-b", "")], &mut out);
    assert_eq!(&out[..], b"0\r\nX-A: 1\r\nx-b: \r\n\r\n");
}

#[test]
fn error_statuses_and_messages() {
    assert_eq!(H1Error::ObsFold.status(), 400);
    assert_eq!(H1Error::UnexpectedEof.status(), 400);
    assert_eq!(
        H1Error::ChunkLineTooLong.to_string(),
        format!("chunk size line longer than {MAX_CHUNK_LINE_BYTES} bytes")
    );
}

// ------------------------------------------------------------ properties

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,12}".prop_filter("not a framing or Host field", |n| {
        !["host", "content-length", "transfer-encoding"]
            .iter()
            .any(|f| n.eq_ignore_ascii_case(f))
    })
}

fn header_value() -> impl Strategy<Value = String> {
    "([!-~]([ \t!-~]{0,20}[!-~])?)?"
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((header_name(), header_value()), 0..5)
}

fn to_headers(fields: &[(String, String)]) -> Vec<Header> {
    fields.iter().map(|(n, v)| h(n, v)).collect()
}

fn put_fields(out: &mut Vec<u8>, fields: &[(String, String)]) {
    for (n, v) in fields {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
}

/// A chunk: its data (never empty), an optional extension, upper-case hex.
type GenChunk = (Vec<u8>, Option<String>, bool);

#[derive(Clone, Debug)]
enum GenBody {
    None,
    Length(Vec<u8>),
    Chunked(Vec<GenChunk>, Vec<(String, String)>),
    /// Responses only, last in the stream.
    Close(Vec<u8>),
    /// Responses only: 204/304, or the response to HEAD (with a stray Content-Length).
    Bodiless,
}

fn gen_chunks() -> impl Strategy<Value = (Vec<GenChunk>, Vec<(String, String)>)> {
    (
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 1..40),
                proptest::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"),
                any::<bool>(),
            ),
            0..5,
        ),
        headers(),
    )
}

/// Writes a body's framing field (if any), the blank line and the body;
/// appends the expected body events (with `Data` unsplit).
fn put_body<E>(
    body: &GenBody,
    out: &mut Vec<u8>,
    fields: &mut Vec<Header>,
    events: &mut Vec<E>,
    ev: &impl Fn(BodyEv) -> E,
) {
    match body {
        GenBody::None | GenBody::Bodiless | GenBody::Close(_) => out.extend_from_slice(b"\r\n"),
        GenBody::Length(bytes) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes());
            fields.push(h("Content-Length", &bytes.len().to_string()));
        }
        GenBody::Chunked(..) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            fields.push(h("Transfer-Encoding", "chunked"));
        }
    }
    match body {
        GenBody::None | GenBody::Bodiless => {}
        GenBody::Length(bytes) | GenBody::Close(bytes) => {
            out.extend_from_slice(bytes);
            if !bytes.is_empty() {
                events.push(ev(BodyEv::Data(data(bytes))));
            }
        }
        GenBody::Chunked(chunks, trailers) => {
            for (bytes, ext, upper) in chunks {
                let size = if *upper {
                    format!("{:X}", bytes.len())
                } else {
                    format!("{:x}", bytes.len())
                };
                out.extend_from_slice(size.as_bytes());
                if let Some(ext) = ext {
                    out.extend_from_slice(format!(";{ext}").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
                events.push(ev(BodyEv::Data(data(bytes))));
                events.push(ev(BodyEv::ChunkEnd));
            }
            out.extend_from_slice(b"0\r\n");
            put_fields(out, trailers);
            out.extend_from_slice(b"\r\n");
            if !trailers.is_empty() {
                events.push(ev(BodyEv::Trailers(to_headers(trailers))));
            }
        }
    }
    events.push(ev(BodyEv::End));
}

enum BodyEv {
    Data(Bytes),
    ChunkEnd,
    Trailers(Vec<Header>),
    End,
}

fn req_body_ev(e: BodyEv) -> RequestEvent {
    match e {
        BodyEv::Data(d) => RequestEvent::Data(d),
        BodyEv::ChunkEnd => RequestEvent::ChunkEnd,
        BodyEv::Trailers(t) => RequestEvent::Trailers(t),
        BodyEv::End => RequestEvent::End,
    }
}

fn res_body_ev(e: BodyEv) -> ResponseEvent {
    match e {
        BodyEv::Data(d) => ResponseEvent::Data(d),
        BodyEv::ChunkEnd => ResponseEvent::ChunkEnd,
        BodyEv::Trailers(t) => ResponseEvent::Trailers(t),
        BodyEv::End => ResponseEvent::End,
    }
}

#[derive(Clone, Debug)]
struct GenRequest {
    leading_crlf: bool,
    method: String,
    target: String,
    http10: bool,
    fields: Vec<(String, String)>,
    body: GenBody,
}

fn gen_request() -> impl Strategy<Value = GenRequest> {
    let body = prop_oneof![
        Just(GenBody::None),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(GenBody::Length),
        gen_chunks().prop_map(|(c, t)| GenBody::Chunked(c, t)),
    ];
    (
        any::<bool>(),
        "[A-Z]{1,7}",
        "/[A-Za-z0-9/?=&%._~-]{0,30}",
        any::<bool>(),
        headers(),
        body,
    )
        .prop_map(
            |(leading_crlf, method, target, http10, fields, body)| GenRequest {
                leading_crlf,
                method,
                target,
                http10,
                fields,
                body,
            },
        )
}

/// The wire bytes of `reqs` and the events a decoder must produce.
fn request_stream(reqs: &[GenRequest]) -> (Vec<u8>, Vec<RequestEvent>) {
    let mut out = Vec::new();
    let mut events = Vec::new();
    for r in reqs {
        if r.leading_crlf {
            out.extend_from_slice(b"\r\n");
        }
        let version = if r.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        out.extend_from_slice(
            format!(
                "{} {} {version}\r\nHost: example.test\r\n",
                r.method, r.target
            )
            .as_bytes(),
        );
        put_fields(&mut out, &r.fields);
        let mut fields = vec![h("Host", "example.test")];
        fields.extend(to_headers(&r.fields));
        let kind = match &r.body {
            GenBody::Length(bytes) => BodyKind::Length(bytes.len() as u64),
            GenBody::Chunked(..) => BodyKind::Chunked,
            _ => BodyKind::Empty,
        };
        let head_at = events.len();
        put_body(&r.body, &mut out, &mut fields, &mut events, &req_body_ev);
        let version = if r.http10 {
            Version::Http10
        } else {
            Version::Http11
        };
        events.insert(
            head_at,
            RequestEvent::Head(req_head(&r.method, &r.target, version, fields), kind),
        );
    }
    (out, events)
}

#[derive(Clone, Debug)]
struct GenResponse {
    interim: Vec<(u16, Vec<(String, String)>)>,
    status: u16,
    reason: String,
    fields: Vec<(String, String)>,
    request_was_head: bool,
    body: GenBody,
}

fn gen_response() -> impl Strategy<Value = GenResponse> {
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(GenBody::Length),
        gen_chunks().prop_map(|(c, t)| GenBody::Chunked(c, t)),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(GenBody::Close),
        Just(GenBody::Bodiless),
    ];
    (
        proptest::collection::vec(
            (prop::sample::select(vec![100u16, 102, 103]), headers()),
            0..3,
        ),
        200u16..600,
        "[A-Za-z ]{0,12}",
        headers(),
        any::<bool>(),
        body,
    )
        .prop_map(|(interim, status, reason, fields, head, body)| {
            let (status, request_was_head) = match body {
                // Bodiless: either a HEAD response or a 204/304.
                GenBody::Bodiless if !head => (if status % 2 == 0 { 204 } else { 304 }, false),
                GenBody::Bodiless => (status, true),
                _ if matches!(status, 204 | 304) => (200, false),
                _ => (status, false),
            };
            GenResponse {
                interim,
                status,
                reason,
                fields,
                request_was_head,
                body,
            }
        })
}

fn response_stream(resps: &mut [GenResponse]) -> (Vec<u8>, Vec<ResponseEvent>) {
    let last = resps.len().saturating_sub(1);
    for r in resps.iter_mut().take(last) {
        if let GenBody::Close(bytes) = &r.body {
            r.body = GenBody::Length(bytes.clone());
        }
    }
    let mut out = Vec::new();
    let mut events = Vec::new();
    for r in resps.iter() {
        for (status, fields) in &r.interim {
            out.extend_from_slice(format!("HTTP/1.1 {status} Interim\r\n").as_bytes());
            put_fields(&mut out, fields);
            out.extend_from_slice(b"\r\n");
            events.push(ResponseEvent::Informational(res_head(
                *status,
                "Interim",
                to_headers(fields),
            )));
        }
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", r.status, r.reason).as_bytes());
        put_fields(&mut out, &r.fields);
        let mut fields = to_headers(&r.fields);
        let kind = match &r.body {
            GenBody::Length(bytes) => BodyKind::Length(bytes.len() as u64),
            GenBody::Chunked(..) => BodyKind::Chunked,
            GenBody::Close(_) => BodyKind::CloseDelimited,
            GenBody::None | GenBody::Bodiless => BodyKind::Empty,
        };
        if matches!(r.body, GenBody::Bodiless) {
            // Framing fields a bodiless response may carry, to be ignored.
            out.extend_from_slice(b"Content-Length: 42\r\n");
            fields.push(h("Content-Length", "42"));
        }
        let head_at = events.len();
        put_body(&r.body, &mut out, &mut fields, &mut events, &res_body_ev);
        events.insert(
            head_at,
            ResponseEvent::Head(res_head(r.status, &r.reason, fields), kind),
        );
    }
    (out, events)
}

/// Cut points in `0..=len` from arbitrary indices, sorted and deduplicated.
fn cuts(len: usize, idx: &[prop::sample::Index]) -> Vec<usize> {
    let mut c: Vec<usize> = idx.iter().map(|i| i.index(len + 1)).collect();
    c.sort_unstable();
    c.dedup();
    c
}

fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts {
        out.push(&bytes[start..c]);
        start = c;
    }
    out.push(&bytes[start..]);
    out
}

fn feed_requests(pieces: &[&[u8]]) -> Result<Vec<RequestEvent>, H1Error> {
    let mut dec = RequestDecoder::new(H1Limits::default());
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for p in pieces {
        buf.extend_from_slice(p);
        events.extend(drain_req(&mut dec, &mut buf)?);
    }
    events.extend(drain_req_eof(&mut dec, &mut buf)?);
    assert!(dec.is_idle());
    Ok(events)
}

fn feed_responses(pieces: &[&[u8]], heads: &[bool]) -> Result<Vec<ResponseEvent>, H1Error> {
    let mut dec = ResponseDecoder::new(H1Limits::default());
    let mut next = 0;
    if let Some(&head) = heads.first() {
        dec.begin_response(head);
        next = 1;
    }
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut on_event =
        |dec: &mut ResponseDecoder, ev: ResponseEvent, events: &mut Vec<ResponseEvent>| {
            if ev == ResponseEvent::End {
                if let Some(&head) = heads.get(next) {
                    dec.begin_response(head);
                    next += 1;
                }
            }
            events.push(ev);
        };
    for p in pieces {
        buf.extend_from_slice(p);
        while let Some(ev) = dec.decode(&mut buf)? {
            on_event(&mut dec, ev, &mut events);
        }
    }
    while let Some(ev) = dec.decode_eof(&mut buf)? {
        on_event(&mut dec, ev, &mut events);
    }
    Ok(events)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_split_invariance(
        reqs in proptest::collection::vec(gen_request(), 1..4),
        idx in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (wire, expected) = request_stream(&reqs);
        let whole = feed_requests(&[&wire]).unwrap();
        prop_assert_eq!(&merge_req(whole), &expected);
        let split = feed_requests(&pieces(&wire, &cuts(wire.len(), &idx))).unwrap();
        prop_assert!(split.iter().all(|e| !matches!(e, RequestEvent::Data(d) if d.is_empty())));
        prop_assert_eq!(&merge_req(split), &expected);
    }

    #[test]
    fn requests_byte_by_byte(reqs in proptest::collection::vec(gen_request(), 1..3)) {
        let (wire, expected) = request_stream(&reqs);
        let single: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(merge_req(feed_requests(&single).unwrap()), expected);
    }

    #[test]
    fn responses_split_invariance(
        mut resps in proptest::collection::vec(gen_response(), 1..4),
        idx in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (wire, expected) = response_stream(&mut resps);
        let heads: Vec<bool> = resps.iter().map(|r| r.request_was_head).collect();
        let whole = feed_responses(&[&wire], &heads).unwrap();
        prop_assert_eq!(&merge_res(whole), &expected);
        let split = feed_responses(&pieces(&wire, &cuts(wire.len(), &idx)), &heads).unwrap();
        prop_assert!(split.iter().all(|e| !matches!(e, ResponseEvent::Data(d) if d.is_empty())));
        prop_assert_eq!(&merge_res(split), &expected);
    }

    #[test]
    fn request_round_trip(
        method in "[A-Z]{1,7}",
        target in "/[A-Za-z0-9/?=&%._~-]{0,30}",
        fields in headers(),
        chunked in any::<bool>(),
        body in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..6),
        trailers in headers(),
        explicit_length in any::<bool>(),
    ) {
        let mut head_fields = vec![h("Host", "example.test")];
        head_fields.extend(to_headers(&fields));
        let total: usize = body.iter().map(Vec::len).sum();
        if !chunked && explicit_length {
            head_fields.push(h("Content-Length", &total.to_string()));
        }
        let head = req_head(&method, &target, Version::Http11, head_fields);
        let framing = if chunked { BodyFraming::Chunked } else { BodyFraming::Length(total as u64) };
        let mut wire = BytesMut::new();
        encode_request_head(&head, framing, &mut wire);
        let mut expected_head = head.clone();
        let mut expected = Vec::new();
        if chunked {
            expected_head.headers.push(h("transfer-encoding", "chunked"));
            for c in &body {
                encode_chunk(c, &mut wire);
                if !c.is_empty() {
                    expected.push(RequestEvent::Data(data(c)));
                    expected.push(RequestEvent::ChunkEnd);
                }
            }
            let trailers = to_headers(&trailers);
            encode_last_chunk(&trailers, &mut wire);
            if !trailers.is_empty() {
                expected.push(RequestEvent::Trailers(trailers));
            }
            expected.insert(0, RequestEvent::Head(expected_head, BodyKind::Chunked));
        } else {
            if !explicit_length {
                expected_head.headers.push(h("content-length", &total.to_string()));
            }
            let all: Vec<u8> = body.concat();
            wire.extend_from_slice(&all);
            expected.push(RequestEvent::Head(expected_head, BodyKind::Length(total as u64)));
            if !all.is_empty() {
                expected.push(RequestEvent::Data(data(&all)));
            }
        }
        expected.push(RequestEvent::End);
        prop_assert_eq!(merge_req(requests(&wire).unwrap()), expected);
    }

    #[test]
    fn response_round_trip(
        status in 200u16..600,
        reason in "[A-Za-z ]{0,12}",
        fields in headers(),
        body in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..6),
        trailers in headers(),
        idx in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        prop_assume!(!matches!(status, 204 | 304));
        let head = res_head(status, &reason, to_headers(&fields));
        let mut wire = BytesMut::new();
        encode_response_head(&head, BodyFraming::Chunked, &mut wire);
        let mut expected_head = head.clone();
        expected_head.headers.push(h("transfer-encoding", "chunked"));
        let mut expected = vec![ResponseEvent::Head(expected_head, BodyKind::Chunked)];
        for c in &body {
            encode_chunk(c, &mut wire);
            if !c.is_empty() {
                expected.push(ResponseEvent::Data(data(c)));
                expected.push(ResponseEvent::ChunkEnd);
            }
        }
        let trailers = to_headers(&trailers);
        encode_last_chunk(&trailers, &mut wire);
        if !trailers.is_empty() {
            expected.push(ResponseEvent::Trailers(trailers));
        }
        expected.push(ResponseEvent::End);
        let split = feed_responses(&pieces(&wire, &cuts(wire.len(), &idx)), &[false]).unwrap();
        prop_assert_eq!(merge_res(split), expected);
    }

    #[test]
    fn decoders_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..300),
        idx in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let lim = limits(40, 120, 4);
        let parts = pieces(&input, &cuts(input.len(), &idx));
        let mut req = RequestDecoder::new(lim);
        let mut res = ResponseDecoder::new(lim);
        let mut chunk = ChunkedDecoder::new(lim);
        res.begin_response(false);
        let (mut b1, mut b2, mut b3) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
        for p in parts {
            b1.extend_from_slice(p);
            b2.extend_from_slice(p);
            b3.extend_from_slice(p);
            while let Ok(Some(_)) = req.decode(&mut b1) {}
            while let Ok(Some(_)) = res.decode(&mut b2) {}
            while let Ok(Some(_)) = chunk.decode(&mut b3) {}
        }
        while let Ok(Some(_)) = req.decode_eof(&mut b1) {}
        while let Ok(Some(_)) = res.decode_eof(&mut b2) {}
    }

    #[test]
    fn header_like_input_never_panics(
        fields in proptest::collection::vec(("[ -~\t\r\n\x00\x7f]{0,12}", "[ -~\t\r\n\x00\x7f\u{80}]{0,12}"), 0..6),
    ) {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for (n, v) in &fields {
            input.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        let _ = requests(&input);
        let mut res = b"HTTP/1.1 200 OK\r\n".to_vec();
        res.extend_from_slice(&input[16..]);
        let _ = response(&res, false);
    }
}

// ------------------------------------------- errors independent of splits

/// The first error each decoder reports for `input`, fed `piece` bytes at
/// a time: (request, response, chunked).
fn first_errors(limits: H1Limits, input: &[u8], piece: usize) -> [Option<H1Error>; 3] {
    let mut req = RequestDecoder::new(limits);
    let mut res = ResponseDecoder::new(limits);
    let mut chunked = ChunkedDecoder::new(limits);
    let (mut rb, mut sb, mut cb) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    let mut errs = [None, None, None];
    for part in input.chunks(piece) {
        rb.extend_from_slice(part);
        sb.extend_from_slice(part);
        cb.extend_from_slice(part);
        errs[0] = errs[0].take().or(drain_req(&mut req, &mut rb).err());
        errs[1] = errs[1].take().or(drain_res(&mut res, &mut sb, false).err());
        errs[2] = errs[2].take().or_else(|| loop {
            match chunked.decode(&mut cb) {
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        });
    }
    errs
}

/// Found by fuzzing (fuzz/corpus/{h1_request,h1_response,chunked}/crash-*):
/// a line that breaks a limit or starts with whitespace (obs-fold) and also
/// ends with a bare LF got the limit or obs-fold error when it arrived in
/// pieces, but the bare-LF error when it arrived whole.
#[test]
fn errors_do_not_depend_on_how_input_is_split() {
    let tight = limits(48, 160, 6);
    let cases: [(H1Limits, &[u8]); 5] = [
        // Request line past the limit, ended by a bare LF: 414 either way.
        (
            tight,
            b"GET /v1/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\n",
        ),
        // A folded header line ended by a bare LF.
        (
            H1Limits::default(),
            b"HTTP/1.1 200 OK\r\nA: b\r\n O\rTr\n\r\n",
        ),
        // The same in a trailer section.
        (H1Limits::default(), b"0\r\n a\n\r\n"),
        // A field line past the section limit, ended by a bare LF.
        (
            limits(8192, 40, 6),
            b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        ),
        // A folded line that also runs past the section limit: the fold
        // shows first.
        (
            limits(8192, 40, 6),
            b"0\r\nA: b\r\n folded, and longer than the limit of forty bytes\r\n\r\n",
        ),
    ];
    for (limits, input) in cases {
        let whole = first_errors(limits, input, input.len());
        for piece in [1, 2, 3, 7] {
            assert_eq!(
                first_errors(limits, input, piece),
                whole,
                "{:?} in pieces of {piece}",
                String::from_utf8_lossy(input)
            );
        }
    }
    assert_eq!(
        req_err_with(tight, cases[0].1),
        H1Error::RequestLineTooLong { limit: 48 }
    );
    assert_eq!(
        response_with(H1Limits::default(), cases[1].1, false),
        Err(H1Error::ObsFold)
    );
    assert_eq!(chunk_err(cases[2].1), H1Error::ObsFold);
    assert_eq!(
        chunks_with(limits(8192, 40, 6), cases[4].1),
        Err(H1Error::ObsFold)
    );
}
