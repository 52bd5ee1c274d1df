//! One client connection's state machine: the HTTP/1.1 codec joined to the
//! record/replay engine.
//!
//! The caller (an adapter) owns the sockets, the clock and the files. It feeds
//! what happened in with the `handle_*` methods and carries out what
//! [`Connection::poll_output`] hands back, in order, until it returns `None`:
//!
//! ```text
//!   client bytes ──► handle_client_bytes ─┐            ┌─► Output::ToClient
//! upstream bytes ──► handle_upstream_bytes├─► Connection├─► Output::ToUpstream / OpenUpstream / ReleaseUpstream
//!      time      ──► handle_timeout       ┘            ├─► Output::Store (record mode)
//!                                                      └─► Output::CloseClient, poll_timeout()
//! ```
//!
//! Exchanges on one connection run one after another: a pipelined request is
//! not parsed until the answer to the one before it has been queued, so
//! answers always leave in request order.
//!
//! A WebSocket upgrade answered with 101 turns the connection into a
//! WebSocket session for the rest of its life (see [`crate::ws`]).

mod h2;
mod h2_upstream;
mod websocket;

pub use self::h2::UpstreamProtocol;
use self::h2::{Ctx as H2Ctx, H2Session};
use self::h2_upstream::H2Upstream;
pub use websocket::ReplayTiming;
use websocket::{RecordSession, ReplaySession, Step};

use crate::engine::{
    forwardable_request_headers, redact_request, redact_response, test_name, Lookup, MatchPolicy,
    MissReport, ReplayIndex, TEST_NAME_HEADER,
};
use crate::h1::{
    encode_chunk, encode_last_chunk, encode_request_head, encode_response_head, BodyFraming,
    BodyKind, H1Error, H1Limits, RequestDecoder, RequestEvent, ResponseDecoder, ResponseEvent,
};
use crate::message::{
    header_value, is_hop_by_hop, list_contains, Header, RequestHead, ResponseHead, Version,
};
use crate::store::{Framing, Interaction, RecordedRequest, RecordedResponse};
use crate::ws::{accept_key, is_upgrade_request, validate_handshake, MaskSource, WsLimits};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request or response body Ouli records or matches by default (64 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Unparsed client bytes held before [`Connection::wants_client_read`] says stop.
pub const MAX_CLIENT_BUFFER_BYTES: usize = 64 * 1024;
/// Unparsed upstream bytes held before [`Connection::wants_upstream_read`] says stop.
pub const MAX_UPSTREAM_BUFFER_BYTES: usize = 64 * 1024;
/// Status of a replay miss. 599 is in the server-error class, is not retried
/// by common retry policies (which retry 502, 503, 504), and cannot be
/// confused with a recorded answer such as a real 404.
pub const MISS_STATUS: u16 = 599;
/// How often a request an HTTP/2 upstream refused unprocessed
/// (REFUSED_STREAM, or past a GOAWAY's last stream) is sent again on a new
/// connection before the client gets the 502.
pub const MAX_REFUSED_RETRIES: u8 = 3;
/// Response header on a miss carrying the live request's fingerprint.
pub const MISS_FINGERPRINT_HEADER: &str = "x-ouli-fingerprint";

/// What the proxy does with requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the upstream and store every exchange.
    Record,
    /// Answer from recordings only; never open an upstream connection.
    Replay,
    /// Replay what is recorded, forward and record what is not (VCR's
    /// `new_episodes`): a request that would miss in replay is handled
    /// exactly as in record mode.
    Auto,
}

/// Settings for the connections of one endpoint.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Record or replay.
    pub mode: Mode,
    /// What is matched and redacted.
    pub policy: MatchPolicy,
    /// The `Host` value sent upstream, e.g. `api.example.com` or `127.0.0.1:9000`.
    pub upstream_authority: Bytes,
    /// Request head limits.
    pub limits: H1Limits,
    /// Largest request body accepted (413 past it) and largest response body recorded.
    pub max_body_bytes: usize,
    /// From the first byte of a request head to its end; past it, 408 and close.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit with no request; past it, close.
    pub idle_timeout: Duration,
    /// Longest silence from the upstream while an answer is awaited; past it, 504.
    pub upstream_response_timeout: Duration,
    /// WebSocket frame and message size limits.
    pub ws_limits: WsLimits,
    /// How recorded WebSocket server messages are paced in replay.
    pub ws_replay_timing: ReplayTiming,
    /// The protocol spoken to the upstream when recording.
    pub upstream_protocol: UpstreamProtocol,
    /// Whether the upstream connection is TLS (the adapter's transport):
    /// HTTP/2 requests sent upstream then carry `:scheme: https`.
    pub upstream_tls: bool,
}

impl ProxySettings {
    /// Settings with the default limits and timeouts.
    pub fn new(mode: Mode, upstream_authority: impl Into<Bytes>) -> Self {
        ProxySettings {
            mode,
            policy: MatchPolicy::default(),
            upstream_authority: upstream_authority.into(),
            limits: H1Limits::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_response_timeout: Duration::from_secs(30),
            ws_limits: WsLimits::default(),
            ws_replay_timing: ReplayTiming::default(),
            upstream_protocol: UpstreamProtocol::default(),
            upstream_tls: false,
        }
    }
}

/// Something the adapter must do, returned by [`Connection::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the client, before acting on anything after them.
    ToClient(Bytes),
    /// Connect to the endpoint's upstream (or take an idle pooled connection),
    /// then call [`Connection::upstream_connected`] or
    /// [`Connection::upstream_failed`].
    OpenUpstream,
    /// Write these bytes to the upstream connection.
    ToUpstream(Bytes),
    /// The exchange on the upstream connection is over: put it back in the
    /// pool when `reusable`, close it otherwise.
    ReleaseUpstream {
        /// Whether the connection can carry another request.
        reusable: bool,
    },
    /// Record mode: append this interaction to the test's recording.
    Store {
        /// The test the interaction belongs to.
        test_name: String,
        /// The redacted interaction.
        interaction: Box<Interaction>,
    },
    /// Something worth counting or logging.
    Event(ProxyEvent),
    /// Close the client connection once everything before this is written.
    CloseClient,
}

/// Observations for logs and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A request was answered from a recording.
    Replayed {
        /// The test.
        test_name: String,
        /// `METHOD target`.
        request_line: String,
    },
    /// A request had no recording; answered with [`MISS_STATUS`].
    Missed(Box<MissReport>),
    /// An exchange was forwarded and handed over for storing.
    Recorded {
        /// The test.
        test_name: String,
        /// `METHOD target`.
        request_line: String,
        /// The upstream's status.
        status: u16,
    },
    /// A forwarded exchange could not be recorded (for example its body is
    /// over the limit); the client still got the upstream's answer.
    NotRecorded {
        /// The test.
        test_name: String,
        /// Why.
        reason: String,
    },
    /// The client broke a protocol rule; it got `status` and the connection closed.
    ClientError {
        /// The status sent.
        status: u16,
        /// The one-line reason.
        reason: String,
    },
    /// The upstream failed; the client got `status` (or a cut connection if
    /// the answer had already started).
    UpstreamError {
        /// The status sent, 502 or 504 (0 if the answer had already started).
        status: u16,
        /// The one-line reason.
        reason: String,
    },
}

/// The protocol spoken on an upstream connection; see
/// [`Connection::upstream_offer`] and [`Connection::upstream_connected_as`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamWire {
    /// HTTP/1.1 (ALPN `http/1.1`).
    Http1,
    /// HTTP/2 (ALPN `h2`; h2c with prior knowledge in cleartext).
    H2,
}

/// Why the adapter could not reach the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connecting took longer than the configured connect timeout (504).
    ConnectTimeout,
    /// Connecting failed, with the reason (502).
    Connect(String),
    /// The pool's in-flight limit stayed full past its timeout (503).
    Overloaded(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// No request in progress: close quietly.
    Idle,
    /// A request head or body is arriving too slowly: 408.
    ClientRead,
    /// The upstream is silent while an answer is awaited: 504.
    Upstream,
    /// A recorded WebSocket server message is due (recorded pacing).
    WsPace,
}

/// What the connection knows about the request being answered.
struct Request {
    test_name: String,
    request_line: String,
    client_version: Version,
    keep_alive: bool,
    is_head: bool,
    method: Bytes,
    target: Bytes,
    /// Headers as forwarded: hop-by-hop, test name and Expect removed, Host rewritten.
    headers: Vec<Header>,
    body: BytesMut,
    /// The `Sec-WebSocket-Key` of a WebSocket upgrade request.
    ws_key: Option<Bytes>,
}

impl Request {
    /// [`Request::recorded`], moving the headers and body out instead of
    /// copying them, for a request that is not forwarded afterwards.
    fn take_recorded(&mut self, policy: &MatchPolicy) -> RecordedRequest {
        let mut recorded = RecordedRequest {
            method: self.method.clone(),
            target: self.target.clone(),
            headers: std::mem::take(&mut self.headers),
            body: std::mem::take(&mut self.body).freeze(),
        };
        redact_request(policy, &mut recorded);
        recorded
    }

    /// The request as stored and matched: redacted with the policy.
    fn recorded(&self, policy: &MatchPolicy) -> RecordedRequest {
        let mut recorded = RecordedRequest {
            method: self.method.clone(),
            target: self.target.clone(),
            headers: self.headers.clone(),
            body: self.body.clone().freeze(),
        };
        redact_request(policy, &mut recorded);
        recorded
    }
}

enum UpstreamLeg {
    /// Asked the adapter to connect; the request waits for the connection.
    Connecting,
    /// Sent over a connection speaking this protocol (HTTP/2: the
    /// connection's `h2_upstream` leg).
    Connected(UpstreamWire),
}

enum ResponseProgress {
    AwaitingHead,
    Body(Box<ResponseInProgress>),
}

struct ResponseInProgress {
    head: ResponseHead,
    upstream_kind: BodyKind,
    client_framing: BodyFraming,
    reusable: bool,
    chunks: Vec<Bytes>,
    current_chunk: BytesMut,
    trailers: Vec<Header>,
    recorded_bytes: usize,
    over_limit: bool,
}

struct RecordExchange {
    /// How often an HTTP/2 upstream refused this request unprocessed and
    /// it was sent again on a new connection.
    retries: u8,
    request: Request,
    upstream: UpstreamLeg,
    response: ResponseProgress,
}

enum Phase {
    /// Between requests, or reading a request head.
    Idle,
    /// Reading the request body, before matching or forwarding it.
    ReadingBody(Box<Request>),
    /// Record: exchanging with the upstream.
    Record(Box<RecordExchange>),
    /// Record: a WebSocket conversation passing through.
    WsRecord(Box<RecordSession>),
    /// Replay: a recorded WebSocket conversation playing back.
    WsReplay(Box<ReplaySession>),
    /// An HTTP/2 connection (h2c with prior knowledge).
    H2(Box<H2Session>),
    /// Everything queued is written, then the connection closes.
    Closing,
}

/// One client connection. See the module docs.
pub struct Connection {
    settings: Arc<ProxySettings>,
    index: Option<Arc<ReplayIndex>>,
    client_in: BytesMut,
    upstream_in: BytesMut,
    requests: RequestDecoder,
    responses: ResponseDecoder,
    phase: Phase,
    out: VecDeque<Output>,
    deadline: Option<(Instant, Timer)>,
    client_eof: bool,
    shutting_down: bool,
    masks: MaskSource,
    /// No request has been read yet: the bytes may be an HTTP/2 preface.
    first_request: bool,
    /// Record and auto modes, an HTTP/1.1 client whose upstream speaks
    /// HTTP/2: that connection, kept for the client connection's life.
    h2_upstream: Option<Box<H2Upstream>>,
}

impl Connection {
    /// A new connection accepted at `now`. Replay and auto modes need `index`.
    pub fn new(
        settings: Arc<ProxySettings>,
        index: Option<Arc<ReplayIndex>>,
        now: Instant,
    ) -> Self {
        let limits = settings.limits;
        let idle = settings.idle_timeout;
        Connection {
            settings,
            index,
            client_in: BytesMut::new(),
            upstream_in: BytesMut::new(),
            requests: RequestDecoder::new(limits),
            responses: ResponseDecoder::new(limits),
            phase: Phase::Idle,
            out: VecDeque::new(),
            deadline: Some((now + idle, Timer::Idle)),
            client_eof: false,
            shutting_down: false,
            masks: MaskSource::new(0),
            first_request: true,
            h2_upstream: None,
        }
    }

    /// Seeds the masks of WebSocket frames Ouli itself sends upstream (the
    /// core has no randomness: adapters pass a fresh random seed per
    /// connection).
    pub fn set_mask_seed(&mut self, seed: u64) {
        self.masks = MaskSource::new(seed);
    }

    /// Bytes arrived from the client.
    pub fn handle_client_bytes(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.phase, Phase::Closing) || data.is_empty() {
            return;
        }
        self.client_in.extend_from_slice(data);
        self.process(now);
    }

    /// The client closed its side of the connection.
    pub fn handle_client_eof(&mut self, now: Instant) {
        self.client_eof = true;
        self.process(now);
    }

    /// Bytes arrived from the upstream.
    pub fn handle_upstream_bytes(&mut self, now: Instant, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Phase::H2(session) = &mut self.phase {
            let ctx = H2Ctx {
                settings: &self.settings,
                index: self.index.as_deref(),
            };
            session.handle_upstream_bytes(now, data, &ctx, &mut self.out);
            self.after_h2(now);
            return;
        }
        if let Phase::WsRecord(_) = self.phase {
            self.upstream_in.extend_from_slice(data);
            self.process(now);
            return;
        }
        if let Some(leg) = &mut self.h2_upstream {
            // HTTP/2 upstream of an HTTP/1.1 client: its frames (answers,
            // PING, SETTINGS, GOAWAY) arrive between exchanges too.
            leg.handle_bytes(now, data);
            if matches!(self.phase, Phase::Record(_)) {
                self.arm(
                    now + self.settings.upstream_response_timeout,
                    Timer::Upstream,
                );
            }
            self.process(now);
            return;
        }
        if !matches!(self.phase, Phase::Record(_)) {
            return;
        }
        self.upstream_in.extend_from_slice(data);
        self.arm(
            now + self.settings.upstream_response_timeout,
            Timer::Upstream,
        );
        self.process(now);
    }

    /// The upstream closed its side of the connection.
    pub fn handle_upstream_eof(&mut self, now: Instant) {
        if let Phase::H2(session) = &mut self.phase {
            let ctx = H2Ctx {
                settings: &self.settings,
                index: self.index.as_deref(),
            };
            session.handle_upstream_eof(now, &ctx, &mut self.out);
            self.after_h2(now);
            return;
        }
        if let Phase::WsRecord(_) = self.phase {
            self.process(now);
            if let Phase::WsRecord(session) = &mut self.phase {
                session.finish(&mut self.out);
                self.close();
            }
            return;
        }
        if let Some(leg) = &mut self.h2_upstream {
            // The exchange in flight (if any) fails through the leg's events.
            leg.handle_eof(now);
            self.process(now);
            self.drop_h2_upstream();
            return;
        }
        let Phase::Record(ex) = &mut self.phase else {
            return;
        };
        if !matches!(ex.upstream, UpstreamLeg::Connected(UpstreamWire::Http1)) {
            return;
        }
        // Let the decoder see what is buffered first, then the close.
        self.process(now);
        match &self.phase {
            // The same exchange is still waiting on this connection.
            Phase::Record(ex) if matches!(ex.upstream, UpstreamLeg::Connected(_)) => {}
            _ => return,
        }
        loop {
            let Phase::Record(_) = &self.phase else {
                return;
            };
            match self.responses.decode_eof(&mut self.upstream_in) {
                Ok(Some(ev)) => {
                    if !self.on_response_event(now, ev) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.upstream_broke(format!("upstream closed the connection: {e}"));
                    break;
                }
            }
        }
        if let Phase::Record(ex) = &self.phase {
            if matches!(ex.response, ResponseProgress::AwaitingHead) {
                self.upstream_broke("upstream closed the connection before answering".into());
            }
        }
        self.process(now);
    }

    /// The connection asked for with [`Output::OpenUpstream`] is ready and
    /// speaks the first protocol of [`Connection::upstream_offer`] (the only
    /// one, unless the adapter negotiates: then call
    /// [`Connection::upstream_connected_as`]).
    pub fn upstream_connected(&mut self, now: Instant) {
        let wire = self.upstream_offer()[0];
        self.upstream_connected_as(now, wire);
    }

    /// The connection asked for with [`Output::OpenUpstream`] is ready and
    /// speaks `wire`: one of [`Connection::upstream_offer`], as the upstream
    /// picked it by TLS ALPN.
    pub fn upstream_connected_as(&mut self, now: Instant, wire: UpstreamWire) {
        if !self.upstream_offer().contains(&wire) {
            let reason = format!(
                "the adapter connected to the upstream over {wire:?}, which was not offered"
            );
            self.upstream_failed(now, UpstreamFailure::Connect(reason));
            return;
        }
        if let Phase::H2(session) = &mut self.phase {
            let ctx = H2Ctx {
                settings: &self.settings,
                index: self.index.as_deref(),
            };
            session.upstream_connected(now, wire, &ctx, &mut self.out);
            self.after_h2(now);
            return;
        }
        let Phase::Record(ex) = &mut self.phase else {
            return;
        };
        if !matches!(ex.upstream, UpstreamLeg::Connecting) {
            return;
        }
        ex.upstream = UpstreamLeg::Connected(wire);
        match wire {
            UpstreamWire::Http1 => {
                let bytes = encode_upstream_request(&ex.request);
                self.out.push_back(Output::ToUpstream(bytes));
            }
            UpstreamWire::H2 => {
                let mut leg = Box::new(H2Upstream::new(now));
                let sent = leg.send_request(
                    &ex.request.method,
                    &ex.request.target,
                    &ex.request.headers,
                    ex.request.body.clone().freeze(),
                    &self.settings.upstream_authority,
                    self.settings.upstream_tls,
                );
                self.h2_upstream = Some(leg);
                if let Err(reason) = sent {
                    self.upstream_broke(reason);
                    self.process(now);
                    return;
                }
                self.transmit_h2_upstream();
            }
        }
        self.upstream_in.clear();
        self.arm(
            now + self.settings.upstream_response_timeout,
            Timer::Upstream,
        );
        self.process(now);
    }

    /// The connection asked for with [`Output::OpenUpstream`] could not be made.
    pub fn upstream_failed(&mut self, now: Instant, failure: UpstreamFailure) {
        if let Phase::H2(session) = &mut self.phase {
            let ctx = H2Ctx {
                settings: &self.settings,
                index: self.index.as_deref(),
            };
            session.upstream_failed(now, failure, &ctx, &mut self.out);
            self.after_h2(now);
            return;
        }
        // Only a connection still being made can fail to be made: a late or
        // repeated report (an adapter's connect timeout racing its success)
        // must not put an error answer in the middle of the real one.
        if !matches!(&self.phase, Phase::Record(ex) if matches!(ex.upstream, UpstreamLeg::Connecting))
        {
            return;
        }
        let (status, reason) = failure_status(&failure);
        self.phase = Phase::Idle;
        self.send_error(status, &reason, true);
        self.out
            .push_back(Output::Event(ProxyEvent::UpstreamError { status, reason }));
        self.process(now);
    }

    /// Time has reached `now`; act on any deadline that passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::H2(session) = &mut self.phase {
            let ctx = H2Ctx {
                settings: &self.settings,
                index: self.index.as_deref(),
            };
            session.handle_timeout(now, &ctx, &mut self.out);
            if matches!(self.deadline, Some((at, Timer::Idle)) if now >= at) && session.is_idle() {
                // An idle HTTP/2 connection: GOAWAY, then close.
                session.go_away(&mut self.out);
                self.close();
                return;
            }
            self.after_h2(now);
            return;
        }
        if let Some(leg) = &mut self.h2_upstream {
            leg.handle_timeout(now);
            self.process(now);
        }
        let Some((at, timer)) = self.deadline else {
            return;
        };
        if now < at {
            return;
        }
        self.deadline = None;
        match timer {
            Timer::Idle => self.close(),
            Timer::ClientRead => {
                let reason = "the request did not arrive within the read timeout";
                if let Phase::Record(_) = self.phase {
                    self.release_upstream_broken();
                }
                self.phase = Phase::Idle;
                self.send_error(408, reason, true);
                self.out.push_back(Output::Event(ProxyEvent::ClientError {
                    status: 408,
                    reason: reason.into(),
                }));
            }
            Timer::Upstream => {
                self.upstream_broke(format!(
                    "the upstream did not answer within {} ms",
                    self.settings.upstream_response_timeout.as_millis()
                ));
            }
            Timer::WsPace => self.process(now),
        }
    }

    /// Stop taking new requests: the exchange in flight finishes, then the
    /// connection closes. An idle connection closes at once.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        if let Phase::H2(session) = &mut self.phase {
            session.go_away(&mut self.out);
            self.after_h2(now);
            return;
        }
        self.process(now);
    }

    /// The next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Connection::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.deadline.map(|(at, _)| at);
        let other = match &self.phase {
            Phase::H2(session) => session.poll_timeout(),
            _ => self.h2_upstream.as_ref().and_then(|leg| leg.poll_timeout()),
        };
        match (own, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the adapter should read more client bytes now. False while
    /// enough input is buffered or the connection is closing: this is the
    /// backpressure toward the client.
    pub fn wants_client_read(&self) -> bool {
        if let Phase::H2(session) = &self.phase {
            return !self.client_eof && session.wants_client_read();
        }
        !self.client_eof
            && !matches!(self.phase, Phase::Closing)
            && self.client_in.len() < self.input_cap()
    }

    /// How much unparsed input may be held: a WebSocket frame is forwarded
    /// whole, so up to one frame (bounded by [`WsLimits`]) in a session.
    fn input_cap(&self) -> usize {
        match self.phase {
            Phase::WsRecord(_) | Phase::WsReplay(_) => {
                self.settings.ws_limits.max_frame_payload_bytes + 14
            }
            _ => MAX_CLIENT_BUFFER_BYTES,
        }
    }

    /// Whether the adapter should read more upstream bytes now.
    pub fn wants_upstream_read(&self) -> bool {
        if let Some(leg) = &self.h2_upstream {
            if !matches!(self.phase, Phase::H2(_) | Phase::Closing) {
                return leg.wants_read();
            }
        }
        match &self.phase {
            Phase::Record(ex) => {
                matches!(ex.upstream, UpstreamLeg::Connected(UpstreamWire::Http1))
                    && self.upstream_in.len() < MAX_UPSTREAM_BUFFER_BYTES
            }
            Phase::WsRecord(_) => self.upstream_in.len() < self.input_cap(),
            Phase::H2(session) => session.wants_upstream_read(),
            _ => false,
        }
    }

    /// Whether the connection is finished: after [`Output::CloseClient`].
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closing)
    }

    /// Whether no exchange is in progress (nothing would be lost by closing).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.client_in.is_empty() && self.requests.is_idle()
    }

    /// The protocols this connection can speak on the upstream connection
    /// it asks for with [`Output::OpenUpstream`], in order of preference.
    /// An adapter that negotiates (TLS ALPN) offers them all and reports
    /// the upstream's pick with [`Connection::upstream_connected_as`]; a
    /// cleartext adapter speaks the first.
    ///
    /// From [`ProxySettings::upstream_protocol`]: `Http1` offers HTTP/1.1;
    /// `H2c` and `H2` offer HTTP/2; `Auto` over TLS offers both, the
    /// client's protocol first, and over cleartext the client's protocol.
    /// A WebSocket upgrade is always offered HTTP/1.1 only (Ouli does not
    /// speak WebSocket over HTTP/2, RFC 8441).
    pub fn upstream_offer(&self) -> &'static [UpstreamWire] {
        use UpstreamWire::{Http1, H2};
        if matches!(&self.phase, Phase::Record(ex) if ex.request.ws_key.is_some()) {
            return &[Http1];
        }
        let client_h2 = matches!(self.phase, Phase::H2(_));
        match (
            self.settings.upstream_protocol,
            client_h2,
            self.settings.upstream_tls,
        ) {
            (UpstreamProtocol::Http1, _, _) => &[Http1],
            (UpstreamProtocol::H2c | UpstreamProtocol::H2, _, _) => &[H2],
            (UpstreamProtocol::Auto, true, true) => &[H2, Http1],
            (UpstreamProtocol::Auto, false, true) => &[Http1, H2],
            (UpstreamProtocol::Auto, true, false) => &[H2],
            (UpstreamProtocol::Auto, false, false) => &[Http1],
        }
    }

    /// Queues what the HTTP/2 upstream leg has to send.
    fn transmit_h2_upstream(&mut self) {
        if let Some(leg) = &mut self.h2_upstream {
            while let Some(bytes) = leg.poll_transmit() {
                self.out.push_back(Output::ToUpstream(bytes));
            }
        }
    }

    /// Lets go of the HTTP/2 upstream leg (closed, broken or replaced).
    fn drop_h2_upstream(&mut self) {
        if self.h2_upstream.take().is_some() {
            self.out
                .push_back(Output::ReleaseUpstream { reusable: false });
        }
    }

    /// The exchange on the upstream connection failed: the connection is
    /// closed, whichever protocol it spoke.
    fn release_upstream_broken(&mut self) {
        self.h2_upstream = None;
        self.out
            .push_back(Output::ReleaseUpstream { reusable: false });
    }

    fn arm(&mut self, at: Instant, timer: Timer) {
        self.deadline = Some((at, timer));
    }

    fn queue_client(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if let Some(Output::ToClient(prev)) = self.out.back_mut() {
            // Coalesce adjacent writes: one syscall per answer, not per part.
            let mut joined = BytesMut::with_capacity(prev.len() + bytes.len());
            joined.extend_from_slice(prev);
            joined.extend_from_slice(&bytes);
            *prev = joined.freeze();
            return;
        }
        self.out.push_back(Output::ToClient(bytes));
    }

    fn close(&mut self) {
        if !matches!(self.phase, Phase::Closing) {
            self.phase = Phase::Closing;
            self.deadline = None;
            self.out.push_back(Output::CloseClient);
            self.client_in = BytesMut::new();
            self.upstream_in = BytesMut::new();
            // The adapter drops the upstream connection with the client's.
            self.h2_upstream = None;
        }
    }

    /// Answers with a short plain-text error; `close` ends the connection after it.
    fn send_error(&mut self, status: u16, reason: &str, close: bool) {
        self.send_error_with(status, reason, close, Vec::new());
    }

    /// [`Connection::send_error`] with extra response headers.
    fn send_error_with(&mut self, status: u16, reason: &str, close: bool, extra: Vec<Header>) {
        let body = format!("{} {}: {reason}\n", status, reason_phrase(status));
        let mut headers = vec![
            Header::new("content-type", "text/plain; charset=utf-8"),
            Header::new("x-ouli-error", sanitize_header_value(reason)),
        ];
        headers.extend(extra);
        if close {
            headers.push(Header::new("connection", "close"));
        }
        let head = ResponseHead {
            status,
            reason: Bytes::from_static(reason_phrase(status).as_bytes()),
            version: Version::Http11,
            headers,
        };
        let mut buf = BytesMut::with_capacity(256 + body.len());
        encode_response_head(&head, BodyFraming::Length(body.len() as u64), &mut buf);
        buf.extend_from_slice(body.as_bytes());
        self.queue_client(buf.freeze());
        if close {
            self.close();
        }
    }

    /// Runs the state machine until it needs more input.
    fn process(&mut self, now: Instant) {
        loop {
            let progressed = match &self.phase {
                Phase::Closing => return,
                Phase::Idle => self.step_idle(now),
                Phase::ReadingBody(_) => self.step_reading_body(now),
                Phase::Record(_) => self.step_record(now),
                Phase::WsRecord(_) | Phase::WsReplay(_) => {
                    self.step_websocket(now);
                    false
                }
                Phase::H2(_) => {
                    self.step_h2(now);
                    false
                }
            };
            if !progressed {
                break;
            }
        }
        if self.client_in.is_empty() && self.client_in.capacity() > 0 {
            // An idle connection holds no buffer.
            self.client_in = BytesMut::new();
        }
        if self.upstream_in.is_empty() && self.upstream_in.capacity() > 0 {
            self.upstream_in = BytesMut::new();
        }
        self.transmit_h2_upstream();
    }

    /// Hands buffered client bytes to the HTTP/2 session.
    fn step_h2(&mut self, now: Instant) {
        let Phase::H2(session) = &mut self.phase else {
            return;
        };
        let ctx = H2Ctx {
            settings: &self.settings,
            index: self.index.as_deref(),
        };
        if !self.client_in.is_empty() {
            let input = std::mem::take(&mut self.client_in);
            session.handle_client_bytes(now, &input, &ctx, &mut self.out);
        }
        if self.client_eof {
            session.handle_client_eof(now);
        }
        self.after_h2(now);
    }

    /// After the HTTP/2 session acted: close when it is over, keep the idle timer.
    fn after_h2(&mut self, now: Instant) {
        let Phase::H2(session) = &self.phase else {
            return;
        };
        if session.is_finished() || self.client_eof || (self.shutting_down && session.is_idle()) {
            self.close();
            return;
        }
        if session.is_idle() {
            if !matches!(self.deadline, Some((_, Timer::Idle))) {
                self.arm(now + self.settings.idle_timeout, Timer::Idle);
            }
        } else {
            self.deadline = None;
        }
    }

    fn step_websocket(&mut self, now: Instant) {
        let (step, deadline) = match &mut self.phase {
            Phase::WsRecord(session) => (
                session.step(
                    now,
                    &mut self.client_in,
                    &mut self.upstream_in,
                    &mut self.out,
                ),
                None,
            ),
            Phase::WsReplay(session) => session.step(now, &mut self.client_in, &mut self.out),
            _ => return,
        };
        self.deadline = deadline.map(|at| (at, Timer::WsPace));
        match step {
            Step::Done => self.close(),
            Step::Wait if self.client_eof => {
                // The client went away without a close handshake.
                if let Phase::WsRecord(session) = &mut self.phase {
                    session.finish(&mut self.out);
                }
                self.close();
            }
            Step::Wait => {}
        }
    }

    fn step_idle(&mut self, now: Instant) -> bool {
        if self.first_request && !self.client_in.is_empty() {
            // h2c with prior knowledge shares the port: the preface tells.
            if crate::h2::is_h2_preface_prefix(&self.client_in) {
                if self.client_in.len() < crate::h2::PREFACE.len() {
                    if self.client_eof {
                        self.close();
                    }
                    return false;
                }
                self.phase = Phase::H2(Box::new(H2Session::new(now)));
                self.deadline = None;
                return true;
            }
            self.first_request = false;
        }
        if self.shutting_down && self.requests.is_idle() && self.client_in.is_empty() {
            self.close();
            return false;
        }
        match self.requests.decode(&mut self.client_in) {
            Ok(Some(RequestEvent::Head(head, kind))) => {
                self.start_exchange(now, head, kind);
                true
            }
            Ok(Some(other)) => {
                debug_assert!(false, "body event {other:?} while idle");
                self.close();
                false
            }
            Ok(None) => {
                if self.client_eof {
                    if !self.requests.is_idle() || !self.client_in.is_empty() {
                        let reason = "client closed the connection in the middle of a request head";
                        self.out.push_back(Output::Event(ProxyEvent::ClientError {
                            status: 400,
                            reason: reason.into(),
                        }));
                    }
                    self.close();
                } else if self.shutting_down && self.client_in.is_empty() {
                    self.close();
                } else if self.client_in.is_empty() && self.requests.is_idle() {
                    if !matches!(self.deadline, Some((_, Timer::Idle))) {
                        self.arm(now + self.settings.idle_timeout, Timer::Idle);
                    }
                } else if !matches!(self.deadline, Some((_, Timer::ClientRead))) {
                    self.arm(now + self.settings.header_read_timeout, Timer::ClientRead);
                }
                false
            }
            Err(e) => {
                self.reject(&e);
                false
            }
        }
    }

    fn reject(&mut self, e: &H1Error) {
        let status = e.status();
        let reason = e.to_string();
        self.out.push_back(Output::Event(ProxyEvent::ClientError {
            status,
            reason: reason.clone(),
        }));
        self.phase = Phase::Idle;
        self.send_error(status, &reason, true);
    }

    fn start_exchange(&mut self, now: Instant, head: RequestHead, kind: BodyKind) {
        let settings = Arc::clone(&self.settings);
        let keep_alive = match head.version {
            Version::Http11 => !list_contains(&head.headers, "connection", "close"),
            Version::Http10 => list_contains(&head.headers, "connection", "keep-alive"),
        } && !self.shutting_down;
        if let BodyKind::Length(n) = kind {
            if n > settings.max_body_bytes as u64 {
                let reason = format!(
                    "request body of {n} bytes is over the limit of {} bytes (max_recorded_body_bytes)",
                    settings.max_body_bytes
                );
                self.out.push_back(Output::Event(ProxyEvent::ClientError {
                    status: 413,
                    reason: reason.clone(),
                }));
                self.send_error(413, &reason, true);
                return;
            }
        }
        let mut headers = forwardable_request_headers(&head);
        match headers.iter_mut().find(|h| h.is("host")) {
            Some(h) => h.value = settings.upstream_authority.clone(),
            None => headers.insert(0, Header::new("host", settings.upstream_authority.clone())),
        }
        let ws_key = if is_upgrade_request(&head) {
            match validate_handshake(&head) {
                Ok(key) => Some(key),
                Err(e) => {
                    let status = e.status();
                    self.out.push_back(Output::Event(ProxyEvent::ClientError {
                        status,
                        reason: e.to_string(),
                    }));
                    let extra = vec![Header::new("sec-websocket-version", "13")];
                    self.send_error_with(status, &e.to_string(), true, extra);
                    return;
                }
            }
        } else {
            None
        };
        if ws_key.is_some() {
            // No extension is negotiated (see crate::ws): frames stay plain.
            headers.retain(|h| !h.is("sec-websocket-extensions"));
            headers.push(Header::new("Upgrade", "websocket"));
            headers.push(Header::new("Connection", "Upgrade"));
        }
        let request = Request {
            test_name: test_name(&head.headers),
            request_line: format!(
                "{} {}",
                String::from_utf8_lossy(&head.method),
                String::from_utf8_lossy(&head.target)
            ),
            client_version: head.version,
            keep_alive,
            is_head: head.is_head(),
            method: head.method.clone(),
            target: head.target.clone(),
            headers,
            body: BytesMut::new(),
            ws_key,
        };
        if kind != BodyKind::Empty
            && head.version == Version::Http11
            && list_contains(&head.headers, "expect", "100-continue")
        {
            // Ouli answers 100-continue itself (Expect is not forwarded): the
            // body is what it needs in both modes.
            self.queue_client(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
        self.arm(now + settings.idle_timeout, Timer::ClientRead);
        // Every mode reads the whole request (bounded by max_body_bytes)
        // before anything goes upstream: a body that breaks a rule is refused
        // before the upstream sees a byte of the request, and the fingerprint
        // is known before record, replay or auto decides.
        self.phase = Phase::ReadingBody(Box::new(request));
    }

    /// Appends a request body piece to the buffered copy, enforcing the limit.
    fn take_body_piece(request: &mut Request, data: &[u8], limit: usize) -> Result<(), String> {
        if request.body.len() + data.len() > limit {
            return Err(format!(
                "request body is over the limit of {limit} bytes (max_recorded_body_bytes)"
            ));
        }
        request.body.extend_from_slice(data);
        Ok(())
    }

    fn step_reading_body(&mut self, now: Instant) -> bool {
        let limit = self.settings.max_body_bytes;
        let Phase::ReadingBody(request) = &mut self.phase else {
            return false;
        };
        match self.requests.decode(&mut self.client_in) {
            Ok(Some(RequestEvent::Data(data))) => {
                if let Err(reason) = Self::take_body_piece(request, &data, limit) {
                    self.too_large(reason);
                    return false;
                }
                self.arm(now + self.settings.idle_timeout, Timer::ClientRead);
                true
            }
            Ok(Some(RequestEvent::ChunkEnd | RequestEvent::Trailers(_))) => true,
            Ok(Some(RequestEvent::End)) => {
                let Phase::ReadingBody(request) = std::mem::replace(&mut self.phase, Phase::Idle)
                else {
                    return false;
                };
                match self.settings.mode {
                    Mode::Record => self.forward_buffered(now, *request),
                    Mode::Replay | Mode::Auto => self.answer_from_recording(now, *request),
                }
                true
            }
            Ok(Some(RequestEvent::Head(..))) => {
                debug_assert!(false, "head inside a body");
                self.close();
                false
            }
            Ok(None) => {
                if self.client_eof {
                    self.reject(&H1Error::UnexpectedEof);
                }
                false
            }
            Err(e) => {
                self.reject(&e);
                false
            }
        }
    }

    /// The request body passed the limit while it was being read (nothing
    /// has gone upstream yet): 413 and close.
    fn too_large(&mut self, reason: String) {
        self.out.push_back(Output::Event(ProxyEvent::ClientError {
            status: 413,
            reason: reason.clone(),
        }));
        self.phase = Phase::Idle;
        self.send_error(413, &reason, true);
    }

    fn answer_from_recording(&mut self, now: Instant, mut request: Request) {
        let settings = Arc::clone(&self.settings);
        // The live request is redacted like a stored one before matching;
        // only auto mode forwards it afterwards (on a miss), unredacted.
        let recorded = match settings.mode {
            Mode::Auto => request.recorded(&settings.policy),
            Mode::Replay | Mode::Record => request.take_recorded(&settings.policy),
        };
        let fingerprint = crate::engine::fingerprint(&settings.policy, &recorded);
        let index = self.index.clone();
        let (lookup, answer_cache) = match &index {
            Some(index) => index.lookup_with_answer_cache(
                &settings.policy,
                &request.test_name,
                &recorded,
                fingerprint,
            ),
            None => (
                Lookup::Miss(MissReport {
                    test_name: request.test_name.clone(),
                    fingerprint,
                    request_line: request.request_line.clone(),
                    reason: "no recordings are loaded".into(),
                    candidates: Vec::new(),
                }),
                None,
            ),
        };
        match lookup {
            Lookup::Hit(interaction) if interaction.response.status == 101 => {
                self.replay_websocket(now, request, fingerprint, interaction);
                return;
            }
            Lookup::Hit(interaction) => {
                let close = !request.keep_alive || self.shutting_down;
                let cacheable = !close
                    && request.client_version == Version::Http11
                    && !request.is_head
                    && interaction.response.framing != Framing::Close;
                let close = match answer_cache.filter(|_| cacheable) {
                    // The common answer (HTTP/1.1, keep-alive, not HEAD) is
                    // the same bytes every time: encoded once per interaction.
                    Some(cache) => {
                        let bytes = cache.get_or_init(|| {
                            let mut encoded = Bytes::new();
                            write_recorded_response(&interaction.response, &request, false, |b| {
                                encoded = b
                            });
                            encoded
                        });
                        self.queue_client(bytes.clone());
                        false
                    }
                    None => write_recorded_response(&interaction.response, &request, close, |b| {
                        self.queue_client(b)
                    }),
                };
                self.out.push_back(Output::Event(ProxyEvent::Replayed {
                    test_name: request.test_name,
                    request_line: request.request_line,
                }));
                if close {
                    self.close();
                }
            }
            Lookup::Miss(_) if settings.mode == Mode::Auto => {
                self.forward_buffered(now, request);
                return;
            }
            Lookup::Miss(report) => {
                let body = report.to_text();
                let close = !request.keep_alive || self.shutting_down;
                let mut headers = vec![
                    Header::new("content-type", "text/plain; charset=utf-8"),
                    Header::new("x-ouli-miss", "true"),
                    Header::new(MISS_FINGERPRINT_HEADER, report.fingerprint.to_string()),
                    Header::new(TEST_NAME_HEADER, sanitize_header_value(&report.test_name)),
                ];
                if close {
                    headers.push(Header::new("connection", "close"));
                }
                let head = ResponseHead {
                    status: MISS_STATUS,
                    reason: Bytes::from_static(reason_phrase(MISS_STATUS).as_bytes()),
                    version: Version::Http11,
                    headers,
                };
                let mut buf = BytesMut::with_capacity(512 + body.len());
                encode_response_head(&head, BodyFraming::Length(body.len() as u64), &mut buf);
                if !request.is_head {
                    buf.extend_from_slice(body.as_bytes());
                }
                self.queue_client(buf.freeze());
                self.out
                    .push_back(Output::Event(ProxyEvent::Missed(Box::new(report))));
                if close {
                    self.close();
                }
            }
        }
        if !matches!(self.phase, Phase::Closing) {
            self.arm(now + settings.idle_timeout, Timer::Idle);
        }
    }

    /// Answers an upgrade from a recorded 101 and plays the conversation.
    fn replay_websocket(
        &mut self,
        now: Instant,
        request: Request,
        fingerprint: crate::engine::Fingerprint,
        interaction: Arc<Interaction>,
    ) {
        let Some(key) = &request.ws_key else {
            let reason =
                "this request matches a recorded WebSocket upgrade but does not ask to upgrade";
            self.out.push_back(Output::Event(ProxyEvent::ClientError {
                status: 400,
                reason: reason.into(),
            }));
            self.send_error(400, reason, true);
            return;
        };
        let accept = accept_key(key);
        let mut headers: Vec<Header> = interaction
            .response
            .headers
            .iter()
            .map(|h| {
                if h.is("sec-websocket-accept") {
                    // The recorded accept answers the recorded key; this client sent its own.
                    Header::new(h.name.clone(), accept.clone())
                } else {
                    h.clone()
                }
            })
            .collect();
        headers.push(Header::new("Upgrade", "websocket"));
        headers.push(Header::new("Connection", "Upgrade"));
        let mut buf = BytesMut::with_capacity(256);
        encode_response_head(
            &ResponseHead {
                status: 101,
                reason: interaction.response.reason.clone(),
                version: Version::Http11,
                headers,
            },
            BodyFraming::None,
            &mut buf,
        );
        self.queue_client(buf.freeze());
        self.out.push_back(Output::Event(ProxyEvent::Replayed {
            test_name: request.test_name.clone(),
            request_line: request.request_line.clone(),
        }));
        self.deadline = None;
        self.phase = Phase::WsReplay(Box::new(ReplaySession::new(
            request.test_name,
            request.request_line,
            fingerprint,
            interaction,
            self.settings.ws_limits,
            self.settings.ws_replay_timing,
            now,
        )));
    }

    /// Auto mode, on a miss: forwards the whole (already read) request to
    /// the upstream and records the exchange, exactly as record mode would.
    ///
    /// An HTTP/2 upstream connection this client connection already holds
    /// carries the request at once; otherwise the adapter is asked for a
    /// connection and the request is encoded once its protocol is known.
    fn forward_buffered(&mut self, now: Instant, request: Request) {
        self.responses.begin_response(request.is_head);
        self.upstream_in = BytesMut::new();
        self.arm(
            now + self.settings.upstream_response_timeout,
            Timer::Upstream,
        );
        let reuse = request.ws_key.is_none()
            && self.h2_upstream.as_ref().is_some_and(|leg| leg.is_usable());
        if !reuse {
            // The adapter drops the connection it holds on OpenUpstream.
            self.h2_upstream = None;
            self.out.push_back(Output::OpenUpstream);
            self.phase = Phase::Record(Box::new(RecordExchange {
                retries: 0,
                request,
                upstream: UpstreamLeg::Connecting,
                response: ResponseProgress::AwaitingHead,
            }));
            return;
        }
        let sent = match &mut self.h2_upstream {
            Some(leg) => leg.send_request(
                &request.method,
                &request.target,
                &request.headers,
                request.body.clone().freeze(),
                &self.settings.upstream_authority,
                self.settings.upstream_tls,
            ),
            None => Err("the HTTP/2 upstream connection is gone".into()),
        };
        self.phase = Phase::Record(Box::new(RecordExchange {
            retries: 0,
            request,
            upstream: UpstreamLeg::Connected(UpstreamWire::H2),
            response: ResponseProgress::AwaitingHead,
        }));
        if let Err(reason) = sent {
            self.upstream_broke(reason);
        }
    }

    fn step_record(&mut self, now: Instant) -> bool {
        let Phase::Record(ex) = &mut self.phase else {
            return false;
        };
        if matches!(ex.upstream, UpstreamLeg::Connected(UpstreamWire::H2)) {
            return match self
                .h2_upstream
                .as_mut()
                .and_then(|leg| leg.poll_response())
            {
                Some(Ok(ev)) => self.on_response_event(now, ev),
                Some(Err(reason)) => {
                    let refused = self.h2_upstream.as_ref().is_some_and(|l| l.was_refused());
                    if refused && ex.retries < MAX_REFUSED_RETRIES {
                        // Not processed (RFC 9113 §8.7), typically racing a
                        // GOAWAY: send it again on a new connection.
                        ex.retries += 1;
                        ex.upstream = UpstreamLeg::Connecting;
                        self.h2_upstream = None;
                        self.out
                            .push_back(Output::ReleaseUpstream { reusable: false });
                        self.out.push_back(Output::OpenUpstream);
                        return false;
                    }
                    self.upstream_broke(reason);
                    false
                }
                None => false,
            };
        }
        // Response first: it may finish the exchange.
        if matches!(ex.upstream, UpstreamLeg::Connected(UpstreamWire::Http1)) {
            match self.responses.decode(&mut self.upstream_in) {
                Ok(Some(ev)) => return self.on_response_event(now, ev),
                Ok(None) => {}
                Err(e) => {
                    self.upstream_broke(format!("upstream sent an invalid response: {e}"));
                    return false;
                }
            }
        }
        false
    }

    /// Handles one response event in record mode. Returns whether to go on.
    fn on_response_event(&mut self, now: Instant, ev: ResponseEvent) -> bool {
        let limit = self.settings.max_body_bytes;
        let shutting_down = self.shutting_down;
        let Phase::Record(ex) = &mut self.phase else {
            return false;
        };
        match ev {
            ResponseEvent::Informational(_) => true,
            ResponseEvent::Head(head, _) if head.status == 101 => {
                self.upgrade_record(now, head);
                true
            }
            ResponseEvent::Head(head, kind) => {
                let upstream_keeps = head.version == Version::Http11
                    && !list_contains(&head.headers, "connection", "close")
                    && kind != BodyKind::CloseDelimited;
                let mut client_close = !ex.request.keep_alive || shutting_down;
                let client_framing = match kind {
                    BodyKind::Empty => BodyFraming::None,
                    BodyKind::Length(n) => BodyFraming::Length(n),
                    BodyKind::Chunked if ex.request.client_version == Version::Http11 => {
                        BodyFraming::Chunked
                    }
                    BodyKind::Chunked | BodyKind::CloseDelimited => {
                        client_close = true;
                        BodyFraming::Close
                    }
                };
                if client_close {
                    ex.request.keep_alive = false;
                }
                let recorded_headers: Vec<Header> = head
                    .headers
                    .iter()
                    .filter(|h| !is_hop_by_hop(h, &head.headers))
                    .cloned()
                    .collect();
                let mut client_headers = recorded_headers.clone();
                add_connection_header(
                    &mut client_headers,
                    ex.request.client_version,
                    !client_close,
                );
                let client_head = ResponseHead {
                    status: head.status,
                    reason: head.reason.clone(),
                    version: Version::Http11,
                    headers: client_headers,
                };
                let mut buf = BytesMut::with_capacity(512);
                encode_response_head(&client_head, client_framing, &mut buf);
                ex.response = ResponseProgress::Body(Box::new(ResponseInProgress {
                    head: ResponseHead {
                        headers: recorded_headers,
                        ..head
                    },
                    upstream_kind: kind,
                    client_framing,
                    reusable: upstream_keeps,
                    chunks: Vec::new(),
                    current_chunk: BytesMut::new(),
                    trailers: Vec::new(),
                    recorded_bytes: 0,
                    over_limit: false,
                }));
                self.queue_client(buf.freeze());
                true
            }
            ResponseEvent::Data(data) => {
                let ResponseProgress::Body(resp) = &mut ex.response else {
                    return false;
                };
                resp.recorded_bytes += data.len();
                if resp.recorded_bytes > limit {
                    if !resp.over_limit {
                        resp.over_limit = true;
                        resp.chunks.clear();
                        resp.current_chunk = BytesMut::new();
                    }
                } else {
                    resp.current_chunk.extend_from_slice(&data);
                }
                let bytes = if resp.client_framing == BodyFraming::Chunked {
                    let mut b = BytesMut::with_capacity(data.len() + 16);
                    encode_chunk(&data, &mut b);
                    b.freeze()
                } else {
                    data
                };
                self.queue_client(bytes);
                true
            }
            ResponseEvent::ChunkEnd => {
                if let ResponseProgress::Body(resp) = &mut ex.response {
                    if !resp.over_limit {
                        let chunk = std::mem::take(&mut resp.current_chunk).freeze();
                        resp.chunks.push(chunk);
                    }
                }
                true
            }
            ResponseEvent::Trailers(trailers) => {
                if let ResponseProgress::Body(resp) = &mut ex.response {
                    resp.trailers = trailers;
                }
                true
            }
            ResponseEvent::End => {
                let Phase::Record(ex) = std::mem::replace(&mut self.phase, Phase::Idle) else {
                    return false;
                };
                self.finish_record(now, *ex);
                true
            }
        }
    }

    /// The upstream answered 101: check it, pass it on, and turn the
    /// connection into a recorded WebSocket session.
    fn upgrade_record(&mut self, now: Instant, head: ResponseHead) {
        let Phase::Record(ex) = &mut self.phase else {
            return;
        };
        let problem = match &ex.request.ws_key {
            None => {
                Some("upstream answered 101 to a request that did not ask to upgrade".to_owned())
            }
            Some(key) => {
                let expected = accept_key(key);
                let accept = head.headers.iter().find(|h| h.is("sec-websocket-accept"));
                if accept.map(|h| crate::message::trim_ascii(&h.value)) != Some(expected.as_bytes())
                {
                    Some("upstream's Sec-WebSocket-Accept does not match the key".to_owned())
                } else if head
                    .headers
                    .iter()
                    .any(|h| h.is("sec-websocket-extensions"))
                {
                    Some("upstream negotiated a WebSocket extension Ouli did not offer".to_owned())
                } else {
                    None
                }
            }
        };
        if let Some(reason) = problem {
            self.upstream_broke(reason);
            return;
        }
        let recorded_headers: Vec<Header> = head
            .headers
            .iter()
            .filter(|h| !is_hop_by_hop(h, &head.headers))
            .cloned()
            .collect();
        let mut client_headers = recorded_headers.clone();
        client_headers.push(Header::new("Upgrade", "websocket"));
        client_headers.push(Header::new("Connection", "Upgrade"));
        let mut buf = BytesMut::with_capacity(256);
        encode_response_head(
            &ResponseHead {
                status: 101,
                reason: head.reason.clone(),
                version: Version::Http11,
                headers: client_headers,
            },
            BodyFraming::None,
            &mut buf,
        );
        let Phase::Record(ex) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        let request = ex.request;
        let recorded = request.recorded(&self.settings.policy);
        let mut response = RecordedResponse {
            status: 101,
            reason: head.reason,
            headers: recorded_headers,
            framing: Framing::None,
            chunks: Vec::new(),
            trailers: Vec::new(),
        };
        redact_response(&self.settings.policy, &request.target, &mut response);
        let interaction = Interaction {
            fingerprint: crate::engine::fingerprint(&self.settings.policy, &recorded).to_string(),
            request: recorded,
            response,
            websocket: None,
        };
        self.queue_client(buf.freeze());
        self.deadline = None;
        self.phase = Phase::WsRecord(Box::new(RecordSession::new(
            request.test_name,
            interaction,
            self.settings.ws_limits,
            self.masks.clone(),
            now,
        )));
    }

    fn finish_record(&mut self, now: Instant, ex: RecordExchange) {
        let RecordExchange {
            request,
            response,
            upstream,
            ..
        } = ex;
        let ResponseProgress::Body(resp) = response else {
            return;
        };
        let mut resp = *resp;
        if resp.client_framing == BodyFraming::Chunked {
            let mut b = BytesMut::new();
            encode_last_chunk(&resp.trailers, &mut b);
            self.queue_client(b.freeze());
        }
        if !matches!(upstream, UpstreamLeg::Connected(UpstreamWire::H2)) {
            // An HTTP/2 upstream stays with this connection for its next request.
            self.out.push_back(Output::ReleaseUpstream {
                reusable: resp.reusable,
            });
        }
        let framing = match resp.upstream_kind {
            BodyKind::Empty => Framing::None,
            BodyKind::Length(_) => Framing::Length,
            BodyKind::Chunked => Framing::Chunked,
            BodyKind::CloseDelimited => Framing::Close,
        };
        if resp.over_limit {
            self.out.push_back(Output::Event(ProxyEvent::NotRecorded {
                test_name: request.test_name.clone(),
                reason: format!(
                    "{}: response body of {} bytes is over the limit of {} bytes (max_recorded_body_bytes)",
                    request.request_line,
                    resp.recorded_bytes,
                    self.settings.max_body_bytes
                ),
            }));
        } else {
            if !resp.current_chunk.is_empty() {
                let chunk = std::mem::take(&mut resp.current_chunk).freeze();
                resp.chunks.push(chunk);
            }
            let recorded = request.recorded(&self.settings.policy);
            let mut response = RecordedResponse {
                status: resp.head.status,
                reason: resp.head.reason,
                headers: resp.head.headers,
                framing,
                chunks: resp.chunks,
                trailers: resp.trailers,
            };
            // Only the stored copy is redacted: the client already has the real answer.
            redact_response(&self.settings.policy, &request.target, &mut response);
            let interaction = Interaction {
                fingerprint: crate::engine::fingerprint(&self.settings.policy, &recorded)
                    .to_string(),
                request: recorded,
                response,
                websocket: None,
            };
            self.out.push_back(Output::Event(ProxyEvent::Recorded {
                test_name: request.test_name.clone(),
                request_line: request.request_line.clone(),
                status: interaction.response.status,
            }));
            self.out.push_back(Output::Store {
                test_name: request.test_name.clone(),
                interaction: Box::new(interaction),
            });
            if request.keep_alive {
                self.arm(now + self.settings.idle_timeout, Timer::Idle);
                return;
            }
            self.close();
            return;
        }
        if request.keep_alive {
            self.arm(now + self.settings.idle_timeout, Timer::Idle);
        } else {
            self.close();
        }
    }

    /// The upstream failed mid-exchange: 502/504 if nothing was sent yet,
    /// otherwise the client connection is cut (the answer is truncated).
    fn upstream_broke(&mut self, reason: String) {
        let Phase::Record(ex) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        if let Some(leg) = &mut self.h2_upstream {
            // Tell the upstream before the connection closes.
            leg.cancel();
            self.transmit_h2_upstream();
        }
        self.release_upstream_broken();
        let timeout = reason.contains("did not answer within");
        match ex.response {
            ResponseProgress::AwaitingHead => {
                let status = if timeout { 504 } else { 502 };
                self.out.push_back(Output::Event(ProxyEvent::UpstreamError {
                    status,
                    reason: reason.clone(),
                }));
                self.send_error(status, &reason, true);
            }
            ResponseProgress::Body(_) => {
                self.out.push_back(Output::Event(ProxyEvent::UpstreamError {
                    status: 0,
                    reason,
                }));
                self.close();
            }
        }
    }
}

/// `request` as HTTP/1.1 bytes for the upstream: the head as forwarded and
/// the whole (already read) body with a `Content-Length`.
fn encode_upstream_request(request: &Request) -> Bytes {
    let had_length = header_value(&request.headers, "content-length").is_some();
    encode_h1_request(
        &request.method,
        &request.target,
        request.headers.clone(),
        &request.body,
        had_length,
    )
}

/// An already-read request as HTTP/1.1 bytes for an upstream: the head,
/// then the whole body framed by `Content-Length`. A bodiless request gets
/// no framing header unless the client sent one (`had_length`). A
/// `Content-Length` among `headers` is kept, so it must match `body`.
fn encode_h1_request(
    method: &Bytes,
    target: &Bytes,
    headers: Vec<Header>,
    body: &[u8],
    had_length: bool,
) -> Bytes {
    let framing = if body.is_empty() && !had_length {
        BodyFraming::None
    } else {
        BodyFraming::Length(body.len() as u64)
    };
    let head = RequestHead {
        method: method.clone(),
        target: target.clone(),
        version: Version::Http11,
        headers,
    };
    let mut buf = BytesMut::with_capacity(512 + body.len());
    encode_request_head(&head, framing, &mut buf);
    buf.extend_from_slice(body);
    buf.freeze()
}

/// Writes a recorded response for `request`'s client. Returns whether the
/// client connection must close after it (asked for, or the body is
/// close-delimited on this hop).
fn write_recorded_response(
    resp: &RecordedResponse,
    request: &Request,
    mut close: bool,
    mut emit: impl FnMut(Bytes),
) -> bool {
    let body_len: usize = resp.body_len();
    let framing = if request.is_head {
        // A HEAD answer carries the recorded headers and never a body.
        BodyFraming::None
    } else {
        match resp.framing {
            Framing::None => BodyFraming::None,
            Framing::Length => BodyFraming::Length(body_len as u64),
            Framing::Chunked if request.client_version == Version::Http11 => BodyFraming::Chunked,
            Framing::Chunked | Framing::Close => {
                close = true;
                BodyFraming::Close
            }
        }
    };
    let mut headers = resp.headers.clone();
    add_connection_header(&mut headers, request.client_version, !close);
    let head = ResponseHead {
        status: resp.status,
        reason: resp.reason.clone(),
        version: Version::Http11,
        headers,
    };
    let mut buf = BytesMut::with_capacity(256 + body_len + resp.chunks.len() * 12);
    encode_response_head(&head, framing, &mut buf);
    match framing {
        BodyFraming::None => {}
        BodyFraming::Chunked => {
            for chunk in &resp.chunks {
                encode_chunk(chunk, &mut buf);
            }
            encode_last_chunk(&resp.trailers, &mut buf);
        }
        BodyFraming::Length(_) | BodyFraming::Close => {
            for chunk in &resp.chunks {
                buf.extend_from_slice(chunk);
            }
        }
    }
    emit(buf.freeze());
    close
}

/// Adds the `Connection` header this hop needs: `close` when the connection
/// ends after this answer, `keep-alive` for an HTTP/1.0 client that stays.
fn add_connection_header(headers: &mut Vec<Header>, client_version: Version, keep_alive: bool) {
    if !keep_alive {
        headers.push(Header::new("connection", "close"));
    } else if client_version == Version::Http10 {
        headers.push(Header::new("connection", "keep-alive"));
    }
}

/// A complete HTTP/1.1 error answer that closes the connection, for an
/// adapter that must refuse a connection before any [`Connection`] exists
/// (for example past its connection limit). Same shape as every error Ouli
/// sends: the reason in the body and in `x-ouli-error`.
pub fn refusal_response(status: u16, reason: &str) -> Bytes {
    let body = format!("{} {}: {reason}\n", status, reason_phrase(status));
    let head = ResponseHead {
        status,
        reason: Bytes::from_static(reason_phrase(status).as_bytes()),
        version: Version::Http11,
        headers: vec![
            Header::new("content-type", "text/plain; charset=utf-8"),
            Header::new("x-ouli-error", sanitize_header_value(reason)),
            Header::new("connection", "close"),
        ],
    };
    let mut buf = BytesMut::with_capacity(192 + body.len());
    encode_response_head(&head, BodyFraming::Length(body.len() as u64), &mut buf);
    buf.extend_from_slice(body.as_bytes());
    buf.freeze()
}

/// The status and reason an upstream failure is answered with.
fn failure_status(failure: &UpstreamFailure) -> (u16, String) {
    match failure {
        UpstreamFailure::ConnectTimeout => (504, "timed out connecting to the upstream".to_owned()),
        UpstreamFailure::Connect(why) => (502, format!("could not connect to the upstream: {why}")),
        UpstreamFailure::Overloaded(why) => (503, why.clone()),
    }
}

/// The standard reason phrase for the statuses Ouli generates itself.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        MISS_STATUS => "Ouli Replay Miss",
        _ => "Error",
    }
}

/// Keeps a header value to visible ASCII so generated headers are always valid.
fn sanitize_header_value(text: &str) -> Vec<u8> {
    text.bytes()
        .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' })
        .take(200)
        .collect()
}
