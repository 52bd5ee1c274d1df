//! The whole connection state machine, driven by a [`Script`] of adapter
//! actions in simulated time, with invariants checked after every step:
//!
//! * nothing that acts on a socket (`ToClient`, `ToUpstream`,
//!   `OpenUpstream`, a second `CloseClient`) is output after `CloseClient`
//!   (events and stores may follow it: the adapters carry those out), and
//!   `is_closed()` agrees with it;
//! * after `handle_timeout(now)` (the only way the simulated clock moves),
//!   `poll_timeout()` is never at or before `now`;
//! * replay mode never asks for an upstream (no `OpenUpstream`,
//!   `ToUpstream`, `ReleaseUpstream` or `Store`);
//! * with a well-behaved adapter (flags without `UNRULY`): `ToUpstream`
//!   only while an upstream is connected, and an upstream that closed is
//!   released;
//! * the bytes sent to the client parse, with the strict decoder, as
//!   HTTP/1.1 responses, one per request in order (the HEAD ones bodiless),
//!   up to a 101 (then they are WebSocket frames) or a response that closes
//!   the connection;
//! * every stored interaction saves to JSON and loads back unchanged;
//! * at the end, after both EOFs and at most a few deadlines, the
//!   connection has closed (no connection is left hanging).

use crate::script::{flags, Action, Script};
use bytes::{Bytes, BytesMut};
use ouli_core::engine::{fingerprint, MatchPolicy, ReplayIndex};
use ouli_core::h1::{
    BodyKind, H1Limits, RequestDecoder, RequestEvent, ResponseDecoder, ResponseEvent,
};
use ouli_core::h2::frame::Frame;
use ouli_core::h2::hpack::Encoder;
use ouli_core::h2::{is_h2_preface_prefix, ErrorCode, PREFACE};
use ouli_core::message::{list_contains, Header};
use ouli_core::proxy::{
    Connection, Mode, Output, ProxySettings, ReplayTiming, UpstreamFailure, UpstreamProtocol,
};
use ouli_core::store::{
    Conversation, Framing, Interaction, MessageKind, Peer, RecordedRequest, RecordedResponse,
    Recording, WsClose, WsMessage,
};
use ouli_core::ws::{accept_key, encode_close, encode_frame, Opcode, WsLimits};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The `Sec-WebSocket-Key` of the dictionary's upgrade request.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client_frame(op: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(op, fin, payload, Some(MASK), &mut b);
    b.to_vec()
}

fn server_frame(op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(op, true, payload, None, &mut b);
    b.to_vec()
}

fn h2_frames(frames: &[Frame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b.to_vec()
}

/// h2c with prior knowledge: the preface, SETTINGS, and `GET /hello`.
fn h2_request() -> Vec<u8> {
    let headers = [
        Header::new(":method", "GET"),
        Header::new(":scheme", "http"),
        Header::new(":authority", "localhost"),
        Header::new(":path", "/hello"),
    ];
    let mut block = BytesMut::new();
    Encoder::new().encode(headers.iter(), &mut block);
    let mut out = PREFACE.to_vec();
    out.extend(h2_frames(&[
        Frame::Settings {
            ack: false,
            params: vec![],
        },
        Frame::Headers {
            stream: 1,
            priority: None,
            block: block.freeze(),
            end_stream: true,
            end_headers: true,
            padding: None,
        },
    ]));
    out
}

/// Client messages the scripts can send whole: requests that hit the replay
/// recording (and one that misses), and WebSocket frames of its conversation.
pub fn client_dictionary() -> &'static [Vec<u8>] {
    static DICT: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut close = BytesMut::new();
        encode_close(1000, "bye", Some(MASK), &mut close);
        let mut fragmented = client_frame(Opcode::Text, false, b"h");
        fragmented.extend(client_frame(Opcode::Ping, true, b"p"));
        fragmented.extend(client_frame(Opcode::Continuation, true, b"i"));
        vec![
            b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nping".to_vec(),
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n".to_vec(),
            b"HEAD /hello HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            format!(
                "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .into_bytes(),
            client_frame(Opcode::Text, true, b"hi"),
            client_frame(Opcode::Binary, true, &[1, 2, 3]),
            client_frame(Opcode::Ping, true, b"are you there"),
            close.to_vec(),
            fragmented,
            b"PUT /up HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            b"GET /hello HTTP/1.0\r\n\r\n".to_vec(),
            b"GET /missing?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Ouli-Test-Name: other\r\n\r\n".to_vec(),
            b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
            b"GET /hello HTTP/1.1\r\n".to_vec(),
            b"Host: localhost\r\n\r\n".to_vec(),
            h2_request(),
            h2_frames(&[
                Frame::Settings {
                    ack: true,
                    params: vec![],
                },
                Frame::Ping {
                    ack: false,
                    payload: *b"ouliping",
                },
            ]),
        ]
    })
}

/// Upstream messages the scripts can send whole: responses of every
/// framing, the 101 that accepts the dictionary's key, and server frames.
pub fn upstream_dictionary() -> &'static [Vec<u8>] {
    static DICT: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut close = BytesMut::new();
        encode_close(1000, "bye", None, &mut close);
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\npo\r\n2\r\nng\r\n0\r\nX-T: 1\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close".to_vec(),
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(WS_KEY.as_bytes())
            )
            .into_bytes(),
            server_frame(Opcode::Text, b"welcome"),
            server_frame(Opcode::Binary, &[0, 1, 2]),
            close.to_vec(),
            server_frame(Opcode::Ping, b"p"),
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n".to_vec(),
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n".to_vec(),
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold".to_vec(),
            // An HTTP/2 upstream (the H2_UPSTREAM flag): its SETTINGS and
            // answers on the first two streams.
            h2_frames(&[
                Frame::Settings {
                    ack: false,
                    params: vec![],
                },
                Frame::Settings {
                    ack: true,
                    params: vec![],
                },
            ]),
            h2_response(1, &[(":status", "200"), ("content-length", "5")], Some(b"hello"), None),
            h2_response(
                1,
                &[(":status", "200")],
                Some(b"pong"),
                Some(&[("grpc-status", "0")]),
            ),
            h2_response(1, &[(":status", "204")], None, None),
            h2_response(3, &[(":status", "200"), ("x-a", "b")], Some(b"ok"), None),
            h2_frames(&[Frame::RstStream {
                stream: 1,
                code: ErrorCode::REFUSED_STREAM,
            }]),
            h2_frames(&[Frame::GoAway {
                last_stream: 1,
                code: ErrorCode::NO_ERROR,
                debug: Bytes::new(),
            }]),
        ]
    })
}

/// An HTTP/2 answer on `stream`: HEADERS, then optional DATA, then optional
/// trailers; the last frame ends the stream.
fn h2_response(
    stream: u32,
    head: &[(&str, &str)],
    body: Option<&[u8]>,
    trailers: Option<&[(&str, &str)]>,
) -> Vec<u8> {
    let block = |fields: &[(&str, &str)]| {
        let headers: Vec<Header> = fields
            .iter()
            .map(|(n, v)| Header::new(n.to_string(), v.to_string()))
            .collect();
        let mut b = BytesMut::new();
        Encoder::new().encode(headers.iter(), &mut b);
        b.freeze()
    };
    let mut frames = vec![Frame::Headers {
        stream,
        priority: None,
        block: block(head),
        end_stream: body.is_none() && trailers.is_none(),
        end_headers: true,
        padding: None,
    }];
    if let Some(body) = body {
        frames.push(Frame::Data {
            stream,
            data: Bytes::copy_from_slice(body),
            end_stream: trailers.is_none(),
            padding: None,
        });
    }
    if let Some(trailers) = trailers {
        frames.push(Frame::Headers {
            stream,
            priority: None,
            block: block(trailers),
            end_stream: true,
            end_headers: true,
            padding: None,
        });
    }
    h2_frames(&frames)
}

fn recorded_request(method: &str, target: &str, body: &[u8]) -> RecordedRequest {
    RecordedRequest {
        method: Bytes::copy_from_slice(method.as_bytes()),
        target: Bytes::copy_from_slice(target.as_bytes()),
        headers: vec![Header::new("Host", "api.example.com")],
        body: Bytes::copy_from_slice(body),
    }
}

fn interaction(request: RecordedRequest, response: RecordedResponse) -> Interaction {
    Interaction {
        fingerprint: fingerprint(&MatchPolicy::default(), &request).to_string(),
        request,
        response,
        websocket: None,
    }
}

fn response(
    status: u16,
    headers: &[(&str, &str)],
    framing: Framing,
    chunks: &[&str],
) -> RecordedResponse {
    RecordedResponse {
        status,
        reason: Bytes::from_static(if status == 101 {
            b"Switching Protocols"
        } else {
            b"OK"
        }),
        headers: headers
            .iter()
            .map(|(n, v)| Header::new(n.to_string(), v.to_string()))
            .collect(),
        framing,
        chunks: chunks
            .iter()
            .map(|c| Bytes::copy_from_slice(c.as_bytes()))
            .collect(),
        trailers: Vec::new(),
    }
}

/// The replay recording (test `default`): one interaction per dictionary
/// request, of every framing, and a WebSocket conversation on `/chat`.
pub fn replay_recording() -> Recording {
    let mut rec = Recording::new("default");
    let length = response(
        200,
        &[("Content-Type", "text/plain")],
        Framing::Length,
        &["hello"],
    );
    let mut chunked = response(
        200,
        &[("X-Kind", "chunked")],
        Framing::Chunked,
        &["po", "ng"],
    );
    chunked.trailers = vec![Header::new("X-T", "1")];
    let close = response(200, &[], Framing::Close, &["until ", "close"]);
    let head = response(200, &[("Content-Length", "5")], Framing::None, &[]);
    let put = response(201, &[], Framing::Length, &[]);
    let mut ws = interaction(
        RecordedRequest {
            headers: vec![
                Header::new("Host", "api.example.com"),
                Header::new("Sec-WebSocket-Key", WS_KEY),
                Header::new("Sec-WebSocket-Version", "13"),
            ],
            ..recorded_request("GET", "/chat", b"")
        },
        response(
            101,
            &[("Sec-WebSocket-Accept", &accept_key(WS_KEY.as_bytes()))],
            Framing::None,
            &[],
        ),
    );
    let msg = |from, kind, payload: &[u8], at_ms| WsMessage {
        from,
        kind,
        payload: Bytes::copy_from_slice(payload),
        at_ms,
    };
    ws.websocket = Some(Conversation {
        messages: vec![
            msg(Peer::Server, MessageKind::Text, b"welcome", 0),
            msg(Peer::Client, MessageKind::Text, b"hi", 10),
            msg(Peer::Server, MessageKind::Text, b"hello", 20),
            msg(Peer::Server, MessageKind::Binary, &[0, 1, 2], 1500),
            msg(Peer::Client, MessageKind::Binary, &[1, 2, 3], 2000),
        ],
        close: Some(WsClose {
            from: Peer::Server,
            code: Some(1000),
            reason: Bytes::from_static(b"bye"),
            at_ms: 2500,
        }),
    });
    rec.interactions = vec![
        interaction(recorded_request("GET", "/hello", b""), length.clone()),
        interaction(recorded_request("POST", "/echo", b"ping"), chunked),
        interaction(recorded_request("POST", "/echo", b"abcde"), close),
        interaction(recorded_request("HEAD", "/hello", b""), head),
        interaction(recorded_request("PUT", "/up", b"abc"), put),
        interaction(recorded_request("GET", "/hello", b""), length),
        ws,
    ];
    rec
}

fn replay_index() -> Arc<ReplayIndex> {
    // A fresh index per run: lookups count uses, which must not leak
    // between inputs (libFuzzer runs them all in one process).
    Arc::new(ReplayIndex::new([replay_recording()]))
}

fn settings(mode: Mode, script_flags: u8) -> Arc<ProxySettings> {
    let mut s = ProxySettings::new(mode, "api.example.com");
    if script_flags & flags::TIGHT != 0 {
        s.limits = H1Limits {
            max_request_line_bytes: 64,
            max_header_section_bytes: 256,
            max_header_count: 8,
        };
        s.max_body_bytes = 8;
        s.ws_limits = WsLimits {
            max_frame_payload_bytes: 8,
            max_message_bytes: 12,
        };
    }
    if script_flags & flags::PACED != 0 {
        s.ws_replay_timing = ReplayTiming::Recorded;
    }
    if script_flags & flags::H2_UPSTREAM != 0 {
        s.upstream_protocol = UpstreamProtocol::H2c;
    } else if script_flags & flags::H1_UPSTREAM != 0 {
        s.upstream_protocol = UpstreamProtocol::Http1;
    }
    Arc::new(s)
}

/// Replays the client byte stream through a strict response decoder, to
/// check that the connection only ever writes valid HTTP/1.1 responses.
struct ClientView {
    /// Parses the client's own requests, to know which were HEAD.
    requests: RequestDecoder,
    request_buf: BytesMut,
    heads: Vec<bool>,
    responses: ResponseDecoder,
    response_buf: BytesMut,
    /// Index of the response being read.
    answered: usize,
    /// Whether the next response has been announced to the decoder.
    begun: bool,
    /// Past a 101 or a closing response, or on an HTTP/2 connection: the
    /// rest is not HTTP/1.1.
    done: bool,
    /// The connection's first bytes, to tell an HTTP/2 preface.
    first_bytes: Vec<u8>,
}

impl ClientView {
    fn new(limits: H1Limits) -> Self {
        ClientView {
            requests: RequestDecoder::new(limits),
            request_buf: BytesMut::new(),
            heads: Vec::new(),
            responses: ResponseDecoder::new(H1Limits {
                max_header_section_bytes: 1 << 20,
                max_header_count: 4096,
                ..H1Limits::default()
            }),
            response_buf: BytesMut::new(),
            answered: 0,
            begun: false,
            done: false,
            first_bytes: Vec::new(),
        }
    }

    fn client_sent(&mut self, bytes: &[u8]) {
        if self.first_bytes.len() < PREFACE.len() {
            let n = (PREFACE.len() - self.first_bytes.len()).min(bytes.len());
            self.first_bytes.extend_from_slice(&bytes[..n]);
            if self.first_bytes.len() == PREFACE.len() && is_h2_preface_prefix(&self.first_bytes) {
                // h2c with prior knowledge: the answers are HTTP/2 frames.
                self.done = true;
            }
        }
        self.request_buf.extend_from_slice(bytes);
        while let Ok(Some(ev)) = self.requests.decode(&mut self.request_buf) {
            if let RequestEvent::Head(head, _) = ev {
                self.heads.push(head.is_head());
            }
        }
    }

    fn client_received(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        self.response_buf.extend_from_slice(bytes);
        loop {
            if !self.begun {
                // Announced only once its bytes arrive: by then the client
                // has sent the request it answers.
                if self.response_buf.is_empty() {
                    return;
                }
                let is_head = self.heads.get(self.answered).copied().unwrap_or(false);
                self.responses.begin_response(is_head);
                self.begun = true;
            }
            match self.responses.decode(&mut self.response_buf) {
                Ok(Some(ResponseEvent::Head(head, kind))) => {
                    let closing = list_contains(&head.headers, "connection", "close");
                    if head.status == 101 || closing || kind == BodyKind::CloseDelimited {
                        self.done = true;
                        return;
                    }
                }
                Ok(Some(ResponseEvent::End)) => {
                    self.answered += 1;
                    self.begun = false;
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => panic!(
                    "response {} to the client does not parse: {e}\n{:?}",
                    self.answered,
                    String::from_utf8_lossy(&self.response_buf)
                ),
            }
        }
    }

    /// Every head, chunk and trailer section is written whole, so after
    /// each batch of outputs nothing is left half-read.
    fn check_whole(&self) {
        assert!(
            self.done || self.response_buf.is_empty(),
            "the client was sent part of a head, chunk line or trailer section: {:?}",
            String::from_utf8_lossy(&self.response_buf)
        );
    }
}

/// What the adapter holds, to check the upstream protocol.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum UpstreamState {
    None,
    Connecting,
    Connected,
}

/// `OULI_FUZZ_TRACE=1`: print every action and output (to explain a crash:
/// `OULI_FUZZ_TRACE=1 cargo fuzz run <target> <file>`, or the corpus test).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("OULI_FUZZ_TRACE").is_some())
}

struct Harness {
    mode: Mode,
    unruly: bool,
    conn: Connection,
    now: Instant,
    closed: bool,
    upstream: UpstreamState,
    view: ClientView,
    stored: usize,
}

impl Harness {
    fn new(mode: Mode, script_flags: u8) -> Harness {
        let settings = settings(mode, script_flags);
        let index = match mode {
            Mode::Record => None,
            Mode::Replay | Mode::Auto => Some(replay_index()),
        };
        let now = Instant::now();
        let mut conn = Connection::new(Arc::clone(&settings), index, now);
        conn.set_mask_seed(u64::from(script_flags));
        Harness {
            mode,
            unruly: script_flags & flags::UNRULY != 0,
            conn,
            now,
            closed: false,
            upstream: UpstreamState::None,
            view: ClientView::new(settings.limits),
            stored: 0,
        }
    }

    fn drain(&mut self) {
        while let Some(output) = self.conn.poll_output() {
            if trace() {
                eprintln!("    {output:?}");
            }
            if self.closed {
                // The adapters still carry out events and stores queued
                // after the close (adapters/common/src/driver.rs), and
                // drop everything else: nothing else may come.
                assert!(
                    matches!(
                        output,
                        Output::Event(_) | Output::Store { .. } | Output::ReleaseUpstream { .. }
                    ),
                    "{output:?} after CloseClient"
                );
            }
            if self.mode == Mode::Replay {
                // An unruly adapter's `upstream_failed` may be answered with
                // a release (a no-op for the adapters).
                let tolerated = self.unruly && matches!(output, Output::ReleaseUpstream { .. });
                assert!(
                    tolerated
                        || matches!(
                            output,
                            Output::ToClient(_) | Output::Event(_) | Output::CloseClient
                        ),
                    "replay mode asked for {output:?}"
                );
            }
            match output {
                Output::ToClient(bytes) => {
                    assert!(!bytes.is_empty(), "empty ToClient");
                    self.view.client_received(&bytes);
                }
                Output::OpenUpstream => {
                    // One still held is dropped by the adapter (closed, not
                    // pooled): wasteful, not wrong.
                    self.upstream = UpstreamState::Connecting;
                }
                Output::ToUpstream(bytes) => {
                    assert!(!bytes.is_empty(), "empty ToUpstream");
                    if !self.unruly {
                        assert_eq!(
                            self.upstream,
                            UpstreamState::Connected,
                            "ToUpstream with no upstream"
                        );
                    }
                }
                Output::ReleaseUpstream { .. } => {
                    // With none held (the HTTP/2 session releases after a
                    // failed connect) the adapters do nothing.
                    self.upstream = UpstreamState::None;
                }
                Output::Store {
                    test_name,
                    interaction,
                } => {
                    self.stored += 1;
                    assert!(!test_name.is_empty());
                    let mut rec = Recording::new(test_name);
                    rec.interactions.push(*interaction);
                    let json = rec.to_json();
                    match Recording::from_json(&json) {
                        Ok(back) => {
                            assert_eq!(back, rec, "a stored interaction does not load back")
                        }
                        Err(e) => panic!("a stored interaction does not load: {e}\n{json}"),
                    }
                }
                Output::Event(_) => {}
                Output::CloseClient => self.closed = true,
            }
        }
        assert_eq!(
            self.conn.is_closed(),
            self.closed,
            "is_closed() disagrees with CloseClient"
        );
        self.view.check_whole();
    }

    fn check_deadline(&self) {
        if let Some(at) = self.conn.poll_timeout() {
            assert!(
                at > self.now,
                "poll_timeout is not after now once handle_timeout ran"
            );
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.conn.handle_timeout(self.now);
    }

    fn apply(&mut self, action: &Action) {
        if trace() {
            eprintln!("{action:?} ({:?} upstream)", self.upstream);
        }
        let now = self.now;
        // A well-behaved adapter drops the upstream with the connection
        // once it is closed; the client side is still fed, to check that
        // a closed connection ignores input.
        let open = !self.closed;
        let connected = self.unruly || (open && self.upstream == UpstreamState::Connected);
        let connecting = self.unruly || (open && self.upstream == UpstreamState::Connecting);
        match action {
            Action::Client(bytes) => self.client(bytes),
            Action::ClientDict(i) => {
                let dict = client_dictionary();
                self.client(&dict[usize::from(*i) % dict.len()]);
            }
            Action::Upstream(bytes) if connected => self.conn.handle_upstream_bytes(now, bytes),
            Action::UpstreamDict(i) if connected => {
                let dict = upstream_dictionary();
                self.conn
                    .handle_upstream_bytes(now, &dict[usize::from(*i) % dict.len()]);
            }
            Action::UpstreamConnected if connecting => {
                self.upstream = UpstreamState::Connected;
                self.conn.upstream_connected(now);
            }
            Action::UpstreamFailed(kind) if connecting => {
                self.upstream = UpstreamState::None;
                let failure = match kind % 3 {
                    0 => UpstreamFailure::ConnectTimeout,
                    1 => UpstreamFailure::Connect("connection refused".into()),
                    _ => UpstreamFailure::Overloaded("pool full".into()),
                };
                self.conn.upstream_failed(now, failure);
            }
            Action::UpstreamEof if connected => {
                self.conn.handle_upstream_eof(now);
                self.drain();
                if !self.unruly {
                    // The adapter drops a closed upstream; the connection
                    // must have let go of it.
                    assert_eq!(
                        self.upstream,
                        UpstreamState::None,
                        "a closed upstream is not released"
                    );
                }
            }
            Action::Upstream(_)
            | Action::UpstreamDict(_)
            | Action::UpstreamConnected
            | Action::UpstreamFailed(_)
            | Action::UpstreamEof => {}
            Action::ClientEof => self.conn.handle_client_eof(now),
            Action::Advance(ms) => self.advance(Duration::from_millis(u64::from(*ms))),
            Action::Tick => self.advance(Duration::from_millis(1)),
            Action::ToDeadline => match self.conn.poll_timeout() {
                Some(at) if at > self.now => {
                    self.now = at;
                    self.conn.handle_timeout(at);
                }
                _ => self.conn.handle_timeout(now),
            },
            Action::Shutdown => self.conn.begin_shutdown(now),
        }
        self.drain();
        self.check_deadline();
    }

    fn client(&mut self, bytes: &[u8]) {
        if !self.closed {
            self.view.client_sent(bytes);
        }
        self.conn.handle_client_bytes(self.now, bytes);
    }

    /// Both sides go away; within a few deadlines the connection must close.
    fn finish(&mut self) {
        let now = self.now;
        self.conn.handle_client_eof(now);
        self.drain();
        if self.upstream == UpstreamState::Connected {
            self.conn.handle_upstream_eof(now);
            self.drain();
        }
        for _ in 0..8 {
            if self.closed {
                break;
            }
            match self.conn.poll_timeout() {
                Some(at) => {
                    self.now = at.max(self.now);
                    self.conn.handle_timeout(self.now);
                    self.drain();
                    self.check_deadline();
                }
                None => break,
            }
        }
        if !self.unruly {
            assert!(
                self.closed,
                "the connection did not close after both sides went away (deadline {:?})",
                self.conn.poll_timeout().map(|t| t - self.now)
            );
        }
    }
}

fn run(mode: Mode, data: &[u8]) {
    let script = Script::from_bytes(data);
    let mode = match mode {
        Mode::Replay if script.flags & flags::AUTO != 0 => Mode::Auto,
        other => other,
    };
    let mut h = Harness::new(mode, script.flags);
    for action in &script.actions {
        h.apply(action);
    }
    h.finish();
}

/// The whole connection in replay mode (auto mode with the `AUTO` flag),
/// with a replay index built from [`replay_recording`], driven by the
/// [`Script`] in `data`.
pub fn connection_replay(data: &[u8]) {
    run(Mode::Replay, data);
}

/// The whole connection in record mode, driven by the [`Script`] in `data`.
pub fn connection_record(data: &[u8]) {
    run(Mode::Record, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Action::*;
    use ouli_core::proxy::ProxyEvent;

    fn events(mode: Mode, script_flags: u8, actions: &[Action]) -> (Vec<ProxyEvent>, Vec<u8>) {
        let mut h = Harness::new(mode, script_flags);
        let mut evs = Vec::new();
        let mut to_client = Vec::new();
        for a in actions {
            // Same as apply, but collect what came out.
            let now = h.now;
            match a {
                ClientDict(i) => {
                    let d = client_dictionary();
                    h.conn
                        .handle_client_bytes(now, &d[usize::from(*i) % d.len()]);
                }
                UpstreamDict(i) => {
                    let d = upstream_dictionary();
                    h.conn
                        .handle_upstream_bytes(now, &d[usize::from(*i) % d.len()]);
                }
                UpstreamConnected => h.conn.upstream_connected(now),
                ToDeadline => {
                    if let Some(at) = h.conn.poll_timeout() {
                        h.now = at;
                        h.conn.handle_timeout(at);
                    }
                }
                other => panic!("not used here: {other:?}"),
            }
            while let Some(o) = h.conn.poll_output() {
                match o {
                    Output::Event(e) => evs.push(e),
                    Output::ToClient(b) => to_client.extend_from_slice(&b),
                    _ => {}
                }
            }
        }
        (evs, to_client)
    }

    #[test]
    fn every_recorded_request_of_the_dictionary_hits() {
        for i in [0u8, 1, 2, 3, 10, 11] {
            let (evs, _) = events(Mode::Replay, 0, &[ClientDict(i)]);
            assert!(
                matches!(evs.first(), Some(ProxyEvent::Replayed { .. })),
                "dictionary request {i}: {evs:?}"
            );
        }
        let (evs, _) = events(Mode::Replay, 0, &[ClientDict(12)]);
        assert!(matches!(evs.first(), Some(ProxyEvent::Missed(_))));
    }

    #[test]
    fn the_websocket_conversation_plays_through() {
        let (evs, to_client) = events(
            Mode::Replay,
            0,
            &[ClientDict(4), ClientDict(5), ClientDict(6)],
        );
        assert!(
            matches!(evs.first(), Some(ProxyEvent::Replayed { .. })),
            "{evs:?}"
        );
        assert_eq!(evs.len(), 1, "no mismatch: {evs:?}");
        assert!(to_client.starts_with(b"HTTP/1.1 101 "));
        let text = String::from_utf8_lossy(&to_client);
        assert!(text.contains("welcome") && text.contains("hello") && text.contains("bye"));
        // Paced: the binary message is due 1.5 s after the open.
        let (evs, _) = events(
            Mode::Replay,
            flags::PACED,
            &[ClientDict(4), ClientDict(5), ToDeadline, ClientDict(6)],
        );
        assert_eq!(evs.len(), 1, "{evs:?}");
    }

    #[test]
    fn translation_seeds_record_through_either_upstream_protocol() {
        let recorded = |evs: &[ProxyEvent]| {
            evs.iter()
                .filter(|e| matches!(e, ProxyEvent::Recorded { status: 200, .. }))
                .count()
        };
        // HTTP/1.1 client, HTTP/2 upstream: two exchanges over one
        // upstream connection (streams 1 and 3).
        let (evs, to_client) = events(
            Mode::Record,
            flags::H2_UPSTREAM,
            &[
                ClientDict(0),
                UpstreamConnected,
                UpstreamDict(14),
                UpstreamDict(15),
                ClientDict(0),
                UpstreamDict(18),
            ],
        );
        assert_eq!(recorded(&evs), 2, "{evs:?}");
        let text = String::from_utf8_lossy(&to_client);
        assert!(
            text.contains("\r\n\r\nhello") && text.ends_with("\r\n2\r\nok\r\n0\r\n\r\n"),
            "{text}"
        );
        // HTTP/2 client, HTTP/1.1 upstream.
        let (evs, _) = events(
            Mode::Record,
            flags::H1_UPSTREAM,
            &[ClientDict(16), UpstreamConnected, UpstreamDict(0)],
        );
        assert_eq!(recorded(&evs), 1, "{evs:?}");
    }

    #[test]
    fn record_mode_reaches_a_websocket_session() {
        let (evs, to_client) = events(
            Mode::Record,
            0,
            &[
                ClientDict(4),
                UpstreamConnected,
                UpstreamDict(3),
                UpstreamDict(4),
            ],
        );
        assert!(evs.is_empty(), "{evs:?}");
        assert!(to_client.starts_with(b"HTTP/1.1 101 "));
        assert!(to_client.ends_with(&server_frame(Opcode::Text, b"welcome")));
    }
}
