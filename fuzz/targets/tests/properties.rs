//! Property tests the codec suites in `core` do not already have:
//!
//! * the HTTP/1.1 request-head acceptance of the core against httparse's,
//!   with every deliberate difference listed ([`h1_heads_agree_with_httparse`]);
//! * record-mode split invariance of the whole connection;
//! * WebSocket message split (and fragmentation) invariance through
//!   `FrameDecoder` and `MessageAssembler`.

use bytes::{Bytes, BytesMut};
use ouli_core::h1::{
    H1Error, H1Limits, RequestDecoder, RequestEvent, ResponseDecoder, ResponseEvent,
};
use ouli_core::message::Version;
use ouli_core::proxy::{Connection, Mode, Output, ProxySettings};
use ouli_core::store::{Interaction, MessageKind, Peer};
use ouli_core::ws::{encode_frame, FrameDecoder, MessageAssembler, Opcode, WsLimits};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Instant;

// ---------------------------------------------------------------------------
// HTTP/1.1 heads: the core against httparse

/// One generated header line, with what the oracle needs to know about it.
#[derive(Clone, Debug)]
struct Line {
    text: Vec<u8>,
    /// Ends with LF alone instead of CRLF.
    bare_lf: bool,
}

fn header_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"Host: api.example.com".to_vec()),
        1 => Just(b"host:x".to_vec()),
        2 => prop_oneof![
            Just(b"Content-Length: 5".to_vec()),
            Just(b"Content-Length: 0".to_vec()),
            Just(b"content-length: 5, 5".to_vec()),
            Just(b"Content-Length: 5,6".to_vec()),
            Just(b"Content-Length: +5".to_vec()),
            Just(b"Content-Length: 0x5".to_vec()),
            Just(b"Content-Length: 99999999999999999999999".to_vec()),
            Just(b"Content-Length:".to_vec()),
        ],
        2 => prop_oneof![
            Just(b"Transfer-Encoding: chunked".to_vec()),
            Just(b"transfer-encoding: CHUNKED".to_vec()),
            Just(b"Transfer-Encoding: gzip, chunked".to_vec()),
            Just(b"Transfer-Encoding: chunked, gzip".to_vec()),
            Just(b"Transfer-Encoding: identity".to_vec()),
            Just(b"Transfer-Encoding: chunked, chunked".to_vec()),
            Just(b"Transfer-Encoding: ,".to_vec()),
        ],
        1 => Just(b" folded continuation".to_vec()),
        1 => Just(b"\tfolded".to_vec()),
        1 => Just(b"Host : x".to_vec()),
        1 => Just(b"X(y): z".to_vec()),
        1 => Just(b"X-Empty:".to_vec()),
        1 => Just(b": no name".to_vec()),
        1 => Just(b"no colon".to_vec()),
        4 => ("[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,8}", proptest::collection::vec(
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff, 1 => 0u8..0x20, 1 => Just(0x7f)],
            0..12,
        ))
            .prop_map(|(name, value)| {
                let mut l = name.into_bytes();
                l.extend_from_slice(b": ");
                l.extend(value);
                l
            }),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    (header_line(), proptest::bool::weighted(0.08))
        .prop_map(|(text, bare_lf)| Line { text, bare_lf })
}

fn request_line() -> impl Strategy<Value = Line> {
    (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("HEAD"),
            Just("PUT"),
            Just("get"),
            Just("M-SEARCH"),
            Just("G(T"),
            Just("")
        ],
        prop_oneof![
            Just("/"),
            Just("/a/b?c=d&e"),
            Just("*"),
            Just("http://x.test/y"),
            Just("/a b"),
            Just("/\u{7f}"),
            Just("/caf\u{e9}"),
            Just("")
        ],
        prop_oneof![
            8 => Just("HTTP/1.1"), 2 => Just("HTTP/1.0"), 1 => Just("HTTP/2.0"),
            1 => Just("HTTP/1.2"), 1 => Just("http/1.1"), 1 => Just("HTTP/1.1 ")
        ],
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(m, t, v, bare_lf)| Line {
            text: format!("{m} {t} {v}").into_bytes(),
            bare_lf,
        })
}

fn head_bytes(start: &Line, fields: &[Line]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in std::iter::once(start).chain(fields) {
        out.extend_from_slice(&l.text);
        out.extend_from_slice(if l.bare_lf { b"\n" } else { b"\r\n" });
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Debug)]
enum Verdict {
    Accept(String, String, u8, Vec<(Vec<u8>, Vec<u8>)>),
    Reject(Option<H1Error>),
}

fn ours(head: &[u8]) -> Verdict {
    let mut dec = RequestDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(head);
    match dec.decode(&mut buf) {
        Ok(Some(RequestEvent::Head(h, _))) => Verdict::Accept(
            String::from_utf8_lossy(&h.method).into_owned(),
            String::from_utf8_lossy(&h.target).into_owned(),
            match h.version {
                Version::Http10 => 0,
                Version::Http11 => 1,
            },
            h.headers
                .iter()
                .map(|f| (f.name.to_vec(), f.value.to_vec()))
                .collect(),
        ),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Verdict::Reject(Some(e)),
    }
}

fn httparse_verdict(head: &[u8]) -> Verdict {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => Verdict::Accept(
            req.method.unwrap_or_default().to_owned(),
            req.path.unwrap_or_default().to_owned(),
            req.version.unwrap_or(9),
            req.headers
                .iter()
                .map(|f| (f.name.as_bytes().to_vec(), f.value.to_vec()))
                .collect(),
        ),
        _ => Verdict::Reject(None),
    }
}

fn count(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> usize {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The core tokenizes heads with httparse, so whatever it accepts,
    /// httparse accepts, with the same method, target, version and fields.
    ///
    /// Where httparse accepts a head and the core refuses it, the refusal
    /// must be one of the core's deliberate RFC 9112 / RFC 9110 rules, and
    /// the head must really break it:
    ///
    /// | core error | rule | httparse |
    /// |---|---|---|
    /// | `ContentLengthWithTransferEncoding` | both Content-Length and Transfer-Encoding (§6.3, smuggling) | does not look at fields |
    /// | `ConflictingContentLength` | Content-Length values that differ (§6.3) | same |
    /// | `InvalidContentLength` | Content-Length that is not 1*DIGIT or overflows (RFC 9110 §8.6) | same |
    /// | `TransferEncodingNotChunked` | a request coding list not ending in chunked (§6.3) | same |
    /// | `UnsupportedTransferCoding` | a coding other than chunked (answered 501) | same |
    /// | `MissingHost`, `DuplicateHost` | Host exactly once in HTTP/1.1 (§3.2) | same |
    /// | `ObsFold` | a field line starting with SP/HTAB (§5.2: reject) | refuses it too in requests |
    /// | `MalformedStartLine`, `InvalidHeaderName`, `InvalidHeaderValue` on a bare LF | CRLF line endings only (§2.2 allows, we refuse LF alone) | accepts LF alone |
    #[test]
    fn h1_heads_agree_with_httparse(start in request_line(), fields in proptest::collection::vec(line(), 0..7)) {
        let head = head_bytes(&start, &fields);
        let bare_lf = start.bare_lf || fields.iter().any(|l| l.bare_lf);
        match (ours(&head), httparse_verdict(&head)) {
            (Verdict::Accept(m, t, v, f), Verdict::Accept(hm, ht, hv, hf)) => {
                prop_assert_eq!((m, t, v), (hm, ht, hv));
                prop_assert_eq!(f, hf);
            }
            (Verdict::Accept(..), Verdict::Reject(_)) => {
                prop_assert!(false, "the core accepts a head httparse refuses: {:?}", String::from_utf8_lossy(&head));
            }
            (Verdict::Reject(_), Verdict::Reject(_)) => {}
            (Verdict::Reject(e), Verdict::Accept(_, _, version, f)) => {
                let e = e.expect("our verdict carries the error");
                let cl = count(&f, "content-length");
                let te = count(&f, "transfer-encoding");
                let hosts = count(&f, "host");
                let deliberate = match &e {
                    H1Error::ContentLengthWithTransferEncoding => cl > 0 && te > 0,
                    H1Error::ConflictingContentLength | H1Error::InvalidContentLength => cl > 0,
                    H1Error::TransferEncodingNotChunked | H1Error::UnsupportedTransferCoding => te > 0,
                    H1Error::MissingHost => hosts == 0 && version == 1,
                    H1Error::DuplicateHost => hosts > 1,
                    H1Error::ObsFold => fields.iter().any(|l| l.text.first().is_some_and(|b| *b == b' ' || *b == b'\t')),
                    H1Error::MalformedStartLine(_) | H1Error::InvalidHeaderName | H1Error::InvalidHeaderValue => bare_lf,
                    _ => false,
                };
                prop_assert!(deliberate, "the core refuses with {:?} a head httparse accepts: {:?}", e, String::from_utf8_lossy(&head));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Record mode: the whole connection, split anywhere

#[derive(Clone, Debug)]
enum BodyGen {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>, bool),
}

fn body_gen() -> impl Strategy<Value = BodyGen> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..40);
    prop_oneof![
        Just(BodyGen::None),
        bytes.clone().prop_map(BodyGen::Length),
        (proptest::collection::vec(bytes, 0..4), any::<bool>())
            .prop_map(|(c, t)| BodyGen::Chunked(c, t)),
    ]
}

fn put_body(out: &mut Vec<u8>, body: &BodyGen) {
    match body {
        BodyGen::None => out.extend_from_slice(b"\r\n"),
        BodyGen::Length(b) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        BodyGen::Chunked(chunks, trailers) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in chunks {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            if *trailers {
                out.extend_from_slice(b"X-Checksum: 42\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[derive(Clone, Debug)]
struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
}

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
        "/[a-z]{0,6}(\\?[a-z]=[0-9])?",
        prop_oneof![Just("a"), Just("b")],
        body_gen(),
        prop_oneof![Just(200u16), Just(201), Just(404), Just(204)],
        body_gen(),
    )
        .prop_map(|(method, target, test, req_body, status, res_body)| {
            let mut request = format!(
                "{method} {target} HTTP/1.1\r\nHost: localhost\r\nX-Ouli-Test-Name: {test}\r\nAuthorization: Bearer SECRET\r\n"
            )
            .into_bytes();
            put_body(&mut request, &req_body);
            let mut response = format!("HTTP/1.1 {status} Whatever\r\nX-Trace: t\r\n").into_bytes();
            let res_body = match (status, res_body) {
                (204, _) => BodyGen::None,
                // A response without framing would run until the upstream closes.
                (_, BodyGen::None) => BodyGen::Length(Vec::new()),
                (_, b) => b,
            };
            put_body(&mut response, &res_body);
            Exchange { request, response }
        })
}

fn cut<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

#[derive(Debug, Default, PartialEq)]
struct Recorded {
    stored: Vec<(String, Interaction)>,
    to_client: Vec<u8>,
    to_upstream: Vec<u8>,
    opened: usize,
    released: Vec<bool>,
    closed: bool,
}

/// Feeds the client stream in `client` pieces, then answers each upstream
/// request with its response in pieces, connecting whenever asked.
fn record_run(client: &[&[u8]], responses: &[Vec<&[u8]>]) -> Recorded {
    let t0 = Instant::now();
    let mut settings = ProxySettings::new(Mode::Record, "api.example.com");
    settings.policy.redact_request_headers = vec!["authorization".into()];
    let mut conn = Connection::new(Arc::new(settings), None, t0);
    let mut r = Recorded::default();
    let mut pending_open = 0usize;
    let drain = |conn: &mut Connection, r: &mut Recorded, pending: &mut usize| {
        while let Some(o) = conn.poll_output() {
            match o {
                Output::ToClient(b) => r.to_client.extend_from_slice(&b),
                Output::ToUpstream(b) => r.to_upstream.extend_from_slice(&b),
                Output::OpenUpstream => {
                    r.opened += 1;
                    *pending += 1;
                }
                Output::ReleaseUpstream { reusable } => r.released.push(reusable),
                Output::Store {
                    test_name,
                    interaction,
                } => r.stored.push((test_name, *interaction)),
                Output::Event(_) => {}
                Output::CloseClient => r.closed = true,
            }
        }
    };
    for piece in client {
        conn.handle_client_bytes(t0, piece);
        drain(&mut conn, &mut r, &mut pending_open);
    }
    for pieces in responses {
        if pending_open == 0 {
            break;
        }
        pending_open -= 1;
        conn.upstream_connected(t0);
        drain(&mut conn, &mut r, &mut pending_open);
        for piece in pieces {
            conn.handle_upstream_bytes(t0, piece);
            drain(&mut conn, &mut r, &mut pending_open);
        }
    }
    r
}

/// The semantic content of an HTTP/1.1 stream: events with body pieces
/// joined (chunk boundaries may follow the input's pieces).
fn responses_of(bytes: &[u8]) -> Vec<String> {
    let mut dec = ResponseDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(bytes);
    let mut out: Vec<String> = Vec::new();
    let mut body = Vec::new();
    loop {
        dec.begin_response(false);
        match dec.decode(&mut buf) {
            Ok(Some(ResponseEvent::Data(d))) => body.extend_from_slice(&d),
            Ok(Some(ResponseEvent::ChunkEnd)) => {}
            Ok(Some(ev)) => {
                if !body.is_empty() {
                    out.push(format!("body {:?}", std::mem::take(&mut body)));
                }
                out.push(format!("{ev:?}"));
            }
            Ok(None) => break,
            Err(e) => {
                out.push(format!("error {e}"));
                break;
            }
        }
    }
    out.push(format!("rest {:?} {body:?}", buf.len()));
    out
}

fn requests_of(bytes: &[u8]) -> Vec<String> {
    let mut dec = RequestDecoder::new(H1Limits::default());
    let mut buf = BytesMut::from(bytes);
    let mut out: Vec<String> = Vec::new();
    let mut body = Vec::new();
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(RequestEvent::Data(d))) => body.extend_from_slice(&d),
            Ok(Some(RequestEvent::ChunkEnd)) => {}
            Ok(Some(ev)) => {
                if !body.is_empty() {
                    out.push(format!("body {:?}", std::mem::take(&mut body)));
                }
                out.push(format!("{ev:?}"));
            }
            Ok(None) => break,
            Err(e) => {
                out.push(format!("error {e}"));
                break;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A recorded exchange (or a few, pipelined) gives the same stored
    /// interactions, the same answer to the client and the same request
    /// upstream however the client's and the upstream's bytes are split.
    /// Chunked bodies are re-chunked on the way through, so their chunk
    /// boundaries may follow the pieces: the streams are compared decoded
    /// (byte for byte when no body is chunked).
    #[test]
    fn record_mode_does_not_depend_on_how_input_is_split(
        exchanges in proptest::collection::vec(exchange(), 1..4),
        client_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
        upstream_cuts in proptest::collection::vec(proptest::collection::vec(any::<prop::sample::Index>(), 0..8), 3),
    ) {
        let client: Vec<u8> = exchanges.iter().flat_map(|e| e.request.clone()).collect();
        let whole = record_run(&[&client], &exchanges.iter().map(|e| vec![&e.response[..]]).collect::<Vec<_>>());
        let split = record_run(
            &cut(&client, &client_cuts),
            &exchanges.iter().zip(&upstream_cuts).map(|(e, c)| cut(&e.response, c)).collect::<Vec<_>>(),
        );
        prop_assert_eq!(
            whole.stored.len(),
            exchanges.len(),
            "every exchange is stored: {:?}",
            exchanges.iter().map(|e| (String::from_utf8_lossy(&e.request).into_owned(), String::from_utf8_lossy(&e.response).into_owned())).collect::<Vec<_>>()
        );
        prop_assert_eq!(&split.stored, &whole.stored);
        prop_assert_eq!(responses_of(&split.to_client), responses_of(&whole.to_client));
        prop_assert_eq!(requests_of(&split.to_upstream), requests_of(&whole.to_upstream));
        prop_assert_eq!((split.opened, &split.released, split.closed), (whole.opened, &whole.released, whole.closed));
        let chunked = exchanges.iter().any(|e| {
            let text = String::from_utf8_lossy(&e.request).to_string() + &String::from_utf8_lossy(&e.response);
            text.contains("Transfer-Encoding: chunked")
        });
        if !chunked {
            prop_assert_eq!(split.to_client, whole.to_client);
            prop_assert_eq!(split.to_upstream, whole.to_upstream);
        }
    }
}

// ---------------------------------------------------------------------------
// WebSocket messages through FrameDecoder and MessageAssembler

#[derive(Clone, Debug)]
struct Message {
    kind: MessageKind,
    payload: Vec<u8>,
    /// Fragment boundaries (indices into the payload).
    cuts: Vec<prop::sample::Index>,
    /// A ping between the fragments, after this many of them.
    ping_after: Option<prop::sample::Index>,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            ".{0,30}".prop_map(|s: String| (MessageKind::Text, s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..60).prop_map(|b| (MessageKind::Binary, b)),
        ],
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|((kind, payload), cuts, ping_after)| Message {
            kind,
            payload,
            cuts,
            ping_after,
        })
}

fn encode_messages(
    from: Peer,
    messages: &[Message],
    masks: &mut impl Iterator<Item = [u8; 4]>,
) -> Vec<u8> {
    let mut out = BytesMut::new();
    for m in messages {
        let fragments = cut(&m.payload, &m.cuts);
        let fragments: Vec<&[u8]> = if fragments.is_empty() {
            vec![&[][..]]
        } else {
            fragments
        };
        let ping_at = m.ping_after.map(|i| i.index(fragments.len()));
        for (i, frag) in fragments.iter().enumerate() {
            let mask = (from == Peer::Client).then(|| masks.next().unwrap_or([1, 2, 3, 4]));
            let opcode = match (i, m.kind) {
                (0, MessageKind::Text) => Opcode::Text,
                (0, MessageKind::Binary) => Opcode::Binary,
                _ => Opcode::Continuation,
            };
            encode_frame(opcode, i + 1 == fragments.len(), frag, mask, &mut out);
            if ping_at == Some(i) && i + 1 < fragments.len() {
                // Control frames may come between the fragments of a message.
                let mask = (from == Peer::Client).then_some([9, 9, 9, 9]);
                encode_frame(Opcode::Ping, true, b"ping", mask, &mut out);
            }
        }
    }
    out.to_vec()
}

fn assemble(from: Peer, pieces: &[&[u8]]) -> Vec<(MessageKind, Bytes)> {
    let mut dec = FrameDecoder::new(from, WsLimits::default());
    let mut asm = MessageAssembler::new(WsLimits::default().max_message_bytes);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(frame) = dec.decode(&mut buf).expect("valid frames") {
            if let Some(m) = asm.push(&frame).expect("valid fragmentation") {
                out.push(m);
            }
        }
    }
    assert!(buf.is_empty());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Messages come out of `FrameDecoder` + `MessageAssembler` exactly as
    /// sent, whatever their fragmentation (with pings between fragments)
    /// and however the byte stream is split, from either peer.
    #[test]
    fn websocket_messages_do_not_depend_on_splits_or_fragments(
        messages in proptest::collection::vec(message(), 0..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        server in any::<bool>(),
        mask_seed in any::<u32>(),
    ) {
        let from = if server { Peer::Server } else { Peer::Client };
        let mut masks = (0u32..).map(|i| (mask_seed.wrapping_mul(2_654_435_761).wrapping_add(i)).to_be_bytes());
        let stream = encode_messages(from, &messages, &mut masks);
        let expected: Vec<(MessageKind, Bytes)> =
            messages.iter().map(|m| (m.kind, Bytes::from(m.payload.clone()))).collect();
        prop_assert_eq!(&assemble(from, &[&stream]), &expected);
        prop_assert_eq!(&assemble(from, &cut(&stream, &cuts)), &expected);
    }
}
