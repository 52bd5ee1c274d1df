//! The HTTP/2 side of a client connection (h2c with prior knowledge): each
//! stream is a request answered from recordings (replay), or forwarded over
//! one multiplexed HTTP/2 upstream connection and recorded (record).
//!
//! Recordings do not depend on the protocol version: a request is stored
//! with `:authority` as its `Host` header, as an HTTP/1.1 request would be,
//! and a response with its DATA frames as chunks and its trailers, so either
//! protocol replays either recording.

use super::{
    encode_h1_request, sanitize_header_value, Mode, Output, ProxyEvent, ProxySettings,
    UpstreamFailure, UpstreamWire, MAX_UPSTREAM_BUFFER_BYTES, MISS_FINGERPRINT_HEADER, MISS_STATUS,
};
use crate::engine::{
    fingerprint, redact_request, redact_response, test_name, Lookup, MissReport, ReplayIndex,
    TEST_NAME_ALIAS_HEADER, TEST_NAME_HEADER,
};
use crate::h1::{BodyKind, ResponseDecoder, ResponseEvent};
use crate::h2::conn::{Connection as H2Connection, H2Event, RequestPseudo};
use crate::h2::ErrorCode;
use crate::message::{header_value, is_hop_by_hop, list_contains, Header, Version};
use crate::store::{Framing, Interaction, RecordedRequest, RecordedResponse};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Which protocol Ouli speaks to the upstream when recording (the
/// endpoint's `target_protocol`). Either client protocol is forwarded over
/// any of them: Ouli translates between HTTP/1.1 and HTTP/2, and the
/// recording is the same either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (`"http1"`). HTTP/2 clients' streams go over it one at a
    /// time, since HTTP/1.1 has no multiplexing.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (`"h2c"`).
    H2c,
    /// HTTP/2 over TLS, agreed by ALPN (`"h2"`): the adapter offers only `h2`.
    H2,
    /// Follow TLS ALPN (both offered, the client's protocol first, and the
    /// upstream picks), and in cleartext the client's protocol (`"auto"`).
    #[default]
    Auto,
}

/// The client stream id an HTTP/1.1 upstream's exchange is filed under in
/// `upstream_to_client` (HTTP/2 never uses stream 0 for a request).
const H1_EXCHANGE: u32 = 0;

/// Headers that only make sense on one hop and are never forwarded or
/// stored from an HTTP/2 message (RFC 9113 §8.2.2 plus the test name).
fn keep_request_header(h: &Header) -> bool {
    !(h.is(TEST_NAME_HEADER)
        || h.is(TEST_NAME_ALIAS_HEADER)
        || h.is("host")
        || h.is("connection")
        || h.is("keep-alive")
        || h.is("proxy-connection")
        || h.is("transfer-encoding")
        || h.is("upgrade")
        || h.is("expect"))
}

/// How the answer on a client stream ends once its queued data is sent.
enum Finish {
    /// Not known yet (record mode: the upstream is still sending).
    Open,
    /// End the stream with the last DATA frame.
    End,
    /// End the stream with a trailer section.
    Trailers(Vec<Header>),
}

/// One client stream.
struct Stream {
    test_name: String,
    request_line: String,
    method: Bytes,
    target: Bytes,
    /// Request headers as stored: `host` (the upstream authority) first.
    headers: Vec<Header>,
    body: BytesMut,
    body_over_limit: bool,
    /// Record mode: the part of the request body the upstream's window has
    /// not taken yet.
    unsent: Bytes,
    /// Data to send to the client, in order, waiting for flow-control window.
    pending: VecDeque<Bytes>,
    finish: Finish,
    /// Record mode: the upstream stream carrying this request.
    upstream_stream: Option<u32>,
    /// Record mode: bytes received from the upstream and not yet taken by
    /// the client; they are released upstream as the client takes them.
    unreleased: usize,
    /// Record mode: the response as it will be stored.
    recording: Option<RecordedResponse>,
    recorded_bytes: usize,
    /// Record mode: how often the upstream refused this stream unprocessed
    /// (REFUSED_STREAM, or past the last stream of its GOAWAY) and it was
    /// sent again.
    retries: u8,
    /// Record mode: when the upstream must have sent more of this answer
    /// (`upstream_response_timeout` after the request went out or the
    /// answer last moved), or `None` when it owes nothing.
    upstream_deadline: Option<Instant>,
    /// While the request body arrives: when the client must have sent more
    /// of it (`idle_timeout` after its head or last DATA, as on HTTP/1.1);
    /// past it the stream is answered 408.
    body_deadline: Option<Instant>,
    /// Answered 408 for a body that stopped: what else arrives is ignored.
    body_timed_out: bool,
}

/// How often a stream the upstream refused unprocessed is sent again.
const MAX_UPSTREAM_RETRIES: u8 = 3;

enum UpstreamLeg {
    None,
    Connecting,
    Connected(Box<H2Connection>),
    /// An HTTP/1.1 upstream: the streams' requests go over it one at a time.
    Http1(Box<H1Leg>),
    /// Lost (closed, broken or not reachable): the next request opens a
    /// new connection.
    Gone,
}

/// An HTTP/1.1 upstream connection carrying one client stream's exchange
/// at a time.
struct H1Leg {
    responses: ResponseDecoder,
    input: BytesMut,
    /// The client stream whose request is on the connection.
    current: Option<u32>,
    /// Whether the connection can carry the next request after this answer.
    reusable: bool,
    /// The body bytes of the chunk being read (kept as one recorded chunk).
    chunk: BytesMut,
}

impl H1Leg {
    fn new(settings: &ProxySettings) -> Self {
        H1Leg {
            responses: ResponseDecoder::new(settings.limits),
            input: BytesMut::new(),
            current: None,
            reusable: true,
            chunk: BytesMut::new(),
        }
    }
}

/// The HTTP/2 session of one client connection.
pub(super) struct H2Session {
    client: H2Connection,
    upstream: UpstreamLeg,
    streams: HashMap<u32, Stream>,
    upstream_to_client: HashMap<u32, u32>,
    /// Client streams whose requests wait for the upstream connection, or
    /// for room under its SETTINGS_MAX_CONCURRENT_STREAMS.
    waiting: VecDeque<u32>,
    /// The upstream sent GOAWAY: no new streams on it; once the streams on
    /// it are done, the next request opens a new connection.
    upstream_going_away: bool,
}

impl H2Session {
    /// A server-role session at `now`; feed it the client's bytes,
    /// starting with the connection preface.
    pub(super) fn new(now: Instant) -> Self {
        H2Session {
            client: H2Connection::server(now),
            upstream: UpstreamLeg::None,
            streams: HashMap::new(),
            upstream_to_client: HashMap::new(),
            waiting: VecDeque::new(),
            upstream_going_away: false,
        }
    }

    /// Whether the adapter should read more client bytes.
    pub(super) fn wants_client_read(&self) -> bool {
        self.client.wants_read()
    }

    /// Whether the adapter should read more upstream bytes.
    pub(super) fn wants_upstream_read(&self) -> bool {
        match &self.upstream {
            UpstreamLeg::Connected(up) => up.wants_read(),
            UpstreamLeg::Http1(leg) => {
                // Backpressure: what the client's windows have not taken yet
                // stops the reading.
                let held: usize = leg
                    .current
                    .and_then(|id| self.streams.get(&id))
                    .map_or(0, |s| s.pending.iter().map(Bytes::len).sum());
                // Read between exchanges too, to notice the upstream
                // closing an idle connection.
                leg.input.len() < MAX_UPSTREAM_BUFFER_BYTES && held < MAX_UPSTREAM_BUFFER_BYTES
            }
            _ => false,
        }
    }

    /// The earliest protocol timer of either leg.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let up = match &self.upstream {
            UpstreamLeg::Connected(up) => up.poll_timeout(),
            _ => None,
        };
        let streams = self
            .streams
            .values()
            .flat_map(|s| [s.upstream_deadline, s.body_deadline])
            .flatten()
            .min();
        [self.client.poll_timeout(), up, streams]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether no stream is in progress.
    pub(super) fn is_idle(&self) -> bool {
        self.streams.is_empty()
    }

    /// Whether the client connection is over (GOAWAY sent or received and
    /// every stream done, or a connection error).
    pub(super) fn is_finished(&self) -> bool {
        self.client.is_closed()
    }

    /// Starts a graceful shutdown: GOAWAY, then the streams in flight finish.
    pub(super) fn go_away(&mut self, out: &mut VecDeque<Output>) {
        self.client.go_away(ErrorCode::NO_ERROR);
        self.transmit(out);
    }

    pub(super) fn handle_client_bytes(
        &mut self,
        now: Instant,
        data: &[u8],
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        self.client.handle_bytes(now, data);
        self.pump(now, ctx, out);
    }

    pub(super) fn handle_upstream_bytes(
        &mut self,
        now: Instant,
        data: &[u8],
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        match &mut self.upstream {
            UpstreamLeg::Connected(up) => up.handle_bytes(now, data),
            UpstreamLeg::Http1(leg) => leg.input.extend_from_slice(data),
            _ => {}
        }
        self.pump(now, ctx, out);
    }

    pub(super) fn handle_timeout(
        &mut self,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        self.client.handle_timeout(now);
        if let UpstreamLeg::Connected(up) = &mut self.upstream {
            up.handle_timeout(now);
        }
        self.expire_upstream_streams(now, ctx, out);
        self.expire_request_bodies(now, out);
        self.pump(now, ctx, out);
    }

    /// Streams whose request body stopped arriving for `idle_timeout`: 408,
    /// so a client cannot hold a stream (and its buffered body) forever.
    fn expire_request_bodies(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        let expired: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.body_deadline.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let reason = "the request body did not arrive within the read timeout";
            if let Some(s) = self.streams.get_mut(&id) {
                s.body_deadline = None;
                s.body_timed_out = true;
                s.body = BytesMut::new();
            }
            self.answer_error(id, 408, reason, out);
            out.push_back(Output::Event(ProxyEvent::ClientError {
                status: 408,
                reason: reason.into(),
            }));
        }
    }

    pub(super) fn handle_client_eof(&mut self, now: Instant) {
        self.client.handle_eof(now);
    }

    pub(super) fn upstream_connected(
        &mut self,
        now: Instant,
        wire: UpstreamWire,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        if !matches!(self.upstream, UpstreamLeg::Connecting) {
            return;
        }
        self.upstream = match wire {
            UpstreamWire::H2 => UpstreamLeg::Connected(Box::new(H2Connection::client(now))),
            UpstreamWire::Http1 => UpstreamLeg::Http1(Box::new(H1Leg::new(ctx.settings))),
        };
        self.upstream_going_away = false;
        self.pump(now, ctx, out);
    }

    pub(super) fn upstream_failed(
        &mut self,
        now: Instant,
        failure: UpstreamFailure,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        let (status, reason) = super::failure_status(&failure);
        self.upstream = UpstreamLeg::Gone;
        out.push_back(Output::ReleaseUpstream { reusable: false });
        for id in std::mem::take(&mut self.waiting) {
            self.answer_error(id, status, &reason, out);
        }
        out.push_back(Output::Event(ProxyEvent::UpstreamError { status, reason }));
        self.pump(now, ctx, out);
    }

    pub(super) fn handle_upstream_eof(
        &mut self,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        if let UpstreamLeg::Connected(up) = &mut self.upstream {
            up.handle_eof(now);
        }
        if let UpstreamLeg::Http1(leg) = &mut self.upstream {
            // A close-delimited answer ends here.
            leg.reusable = false;
            while let UpstreamLeg::Http1(leg) = &mut self.upstream {
                match leg.responses.decode_eof(&mut leg.input) {
                    Ok(Some(ev)) => self.on_h1_event(now, ev, ctx, out),
                    Ok(None) => break,
                    Err(e) => {
                        let reason = format!("the upstream closed the connection: {e}");
                        self.drop_upstream(&reason, out);
                        break;
                    }
                }
            }
        }
        self.pump(now, ctx, out);
        if matches!(
            self.upstream,
            UpstreamLeg::Connected(_) | UpstreamLeg::Http1(_)
        ) {
            self.drop_upstream("the upstream closed the connection", out);
            // Requests still waiting go on a new connection.
            self.pump(now, ctx, out);
        }
    }

    /// Streams whose upstream answer did not move within
    /// `upstream_response_timeout`: the upstream stream is cancelled and the
    /// client gets 504, or a reset if its answer had started.
    fn expire_upstream_streams(&mut self, now: Instant, ctx: &Ctx<'_>, out: &mut VecDeque<Output>) {
        let expired: Vec<u32> = self
            .streams
            .iter()
            .filter(|(id, s)| {
                s.upstream_deadline.is_some_and(|at| at <= now)
                    && s.upstream_stream
                        .is_some_and(|up| self.upstream_to_client.get(&up) == Some(*id))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.upstream_deadline = None;
            let started = s.recording.is_some();
            if let Some(up_id) = s.upstream_stream {
                self.upstream_to_client.remove(&up_id);
                match &mut self.upstream {
                    UpstreamLeg::Connected(up) => {
                        up.reset(up_id, ErrorCode::CANCEL);
                    }
                    UpstreamLeg::Http1(_) => {
                        // An HTTP/1.1 answer cannot be cancelled: the
                        // connection goes.
                        self.upstream = UpstreamLeg::Gone;
                        out.push_back(Output::ReleaseUpstream { reusable: false });
                    }
                    _ => {}
                }
            }
            let reason = format!(
                "the upstream did not answer within {} ms",
                ctx.settings.upstream_response_timeout.as_millis()
            );
            if started {
                self.client.reset(id, ErrorCode::CANCEL);
                self.streams.remove(&id);
            } else {
                self.answer_error(id, 504, &reason, out);
            }
            out.push_back(Output::Event(ProxyEvent::UpstreamError {
                status: 504,
                reason,
            }));
        }
    }

    /// Lets go of the upstream connection: every stream whose answer it
    /// still owed gets 502, or a reset if its answer had started. Streams
    /// whose answer is complete go on sending what they hold; waiting
    /// requests open a new connection.
    fn drop_upstream(&mut self, reason: &str, out: &mut VecDeque<Output>) {
        if matches!(
            self.upstream,
            UpstreamLeg::Connected(_) | UpstreamLeg::Http1(_)
        ) {
            out.push_back(Output::ReleaseUpstream { reusable: false });
        }
        self.upstream = UpstreamLeg::Gone;
        self.upstream_going_away = false;
        let owed: Vec<u32> = self.upstream_to_client.drain().map(|(_, id)| id).collect();
        if !owed.is_empty() {
            out.push_back(Output::Event(ProxyEvent::UpstreamError {
                status: 502,
                reason: reason.to_owned(),
            }));
        }
        for s in self.streams.values_mut() {
            // Their ids belong to the connection that is gone.
            s.upstream_stream = None;
            s.unreleased = 0;
            s.upstream_deadline = None;
        }
        for id in owed {
            let started = self.streams.get(&id).is_some_and(|s| s.recording.is_some());
            if started {
                self.client.reset(id, ErrorCode::INTERNAL_ERROR);
                self.streams.remove(&id);
            } else {
                self.answer_error(id, 502, reason, out);
            }
        }
    }

    /// Runs both legs until nothing more happens, then queues their bytes.
    fn pump(&mut self, now: Instant, ctx: &Ctx<'_>, out: &mut VecDeque<Output>) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.client.poll_event() {
                progressed = true;
                self.on_client_event(now, ev, ctx, out);
            }
            loop {
                let ev = match &mut self.upstream {
                    UpstreamLeg::Connected(up) => up.poll_event(),
                    _ => None,
                };
                let Some(ev) = ev else { break };
                progressed = true;
                self.on_upstream_event(now, ev, ctx, out);
            }
            while let UpstreamLeg::Http1(leg) = &mut self.upstream {
                if leg.current.is_none() {
                    if !leg.input.is_empty() {
                        // Bytes nobody asked for: the connection is unusable.
                        progressed = true;
                        self.drop_upstream("the upstream sent bytes between answers", out);
                    }
                    break;
                }
                match leg.responses.decode(&mut leg.input) {
                    Ok(Some(ev)) => {
                        progressed = true;
                        self.on_h1_event(now, ev, ctx, out);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        progressed = true;
                        let reason = format!("the upstream sent an invalid response: {e}");
                        self.drop_upstream(&reason, out);
                        break;
                    }
                }
            }
            if self.service_waiting(now, ctx, out) {
                progressed = true;
            }
            let ids: Vec<u32> = self.streams.keys().copied().collect();
            for id in ids {
                self.flush(now, id, ctx);
            }
            if self.transmit(out) {
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    /// Queues every byte either leg has to send. Returns whether there were any.
    fn transmit(&mut self, out: &mut VecDeque<Output>) -> bool {
        let mut any = false;
        while let Some(bytes) = self.client.poll_transmit() {
            any = true;
            out.push_back(Output::ToClient(bytes));
        }
        if let UpstreamLeg::Connected(up) = &mut self.upstream {
            while let Some(bytes) = up.poll_transmit() {
                any = true;
                out.push_back(Output::ToUpstream(bytes));
            }
        }
        any
    }

    fn on_client_event(
        &mut self,
        now: Instant,
        ev: H2Event,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        match ev {
            H2Event::RequestHeaders {
                stream,
                pseudo,
                headers,
                end_stream,
            } => {
                let target = pseudo
                    .path
                    .clone()
                    .unwrap_or_else(|| Bytes::from_static(b"/"));
                let mut stored = vec![Header::new("host", ctx.settings.upstream_authority.clone())];
                stored.extend(headers.iter().filter(|h| keep_request_header(h)).cloned());
                self.streams.insert(
                    stream,
                    Stream {
                        test_name: test_name(&headers),
                        request_line: format!(
                            "{} {}",
                            String::from_utf8_lossy(&pseudo.method),
                            String::from_utf8_lossy(&target)
                        ),
                        method: pseudo.method.clone(),
                        target,
                        headers: stored,
                        body: BytesMut::new(),
                        body_over_limit: false,
                        unsent: Bytes::new(),
                        pending: VecDeque::new(),
                        finish: Finish::Open,
                        upstream_stream: None,
                        unreleased: 0,
                        recording: None,
                        recorded_bytes: 0,
                        retries: 0,
                        upstream_deadline: None,
                        body_deadline: (!end_stream).then(|| now + ctx.settings.idle_timeout),
                        body_timed_out: false,
                    },
                );
                if end_stream {
                    self.request_complete(now, stream, ctx, out);
                } else if header_value(&headers, "expect")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
                {
                    // Ouli reads the whole request before answering, so it
                    // asks for the body itself (as on HTTP/1.1).
                    let _ = self.client.send_response(stream, 100, &[], false);
                }
            }
            H2Event::Data {
                stream,
                data,
                end_stream,
            } => {
                // The body is buffered (bounded) and its window given back at once.
                self.client.release_capacity(stream, data.len());
                if let Some(s) = self.streams.get_mut(&stream) {
                    if s.body_timed_out {
                        // Answered already (408): the rest is ignored.
                        return;
                    }
                    s.body_deadline = Some(now + ctx.settings.idle_timeout);
                    if s.body.len() + data.len() > ctx.settings.max_body_bytes {
                        s.body_over_limit = true;
                    } else {
                        s.body.extend_from_slice(&data);
                    }
                }
                if end_stream {
                    self.request_complete(now, stream, ctx, out);
                }
            }
            H2Event::Trailers { stream, .. } => self.request_complete(now, stream, ctx, out),
            H2Event::StreamReset { stream, .. } => {
                if let Some(s) = self.streams.remove(&stream) {
                    match (s.upstream_stream, &mut self.upstream) {
                        (Some(up), UpstreamLeg::Connected(conn)) => {
                            conn.reset(up, ErrorCode::CANCEL);
                            self.upstream_to_client.remove(&up);
                        }
                        (Some(up), UpstreamLeg::Http1(_)) => {
                            // An HTTP/1.1 exchange cannot be cancelled: its
                            // connection goes, and the next request opens one.
                            self.upstream_to_client.remove(&up);
                            self.upstream = UpstreamLeg::Gone;
                            out.push_back(Output::ReleaseUpstream { reusable: false });
                        }
                        _ => {}
                    }
                }
            }
            H2Event::ConnectionError(e) => {
                out.push_back(Output::Event(ProxyEvent::ClientError {
                    status: 0,
                    reason: format!("HTTP/2 connection error: {e}"),
                }));
            }
            H2Event::GoAway { .. }
            | H2Event::SendCapacity { .. }
            | H2Event::ResponseHeaders { .. } => {}
        }
    }

    fn request_complete(
        &mut self,
        _now: Instant,
        id: u32,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.body_timed_out {
            return;
        }
        stream.body_deadline = None;
        let stream = &*stream;
        if stream.body_over_limit {
            let reason = format!(
                "request body is over the limit of {} bytes (max_recorded_body_bytes)",
                ctx.settings.max_body_bytes
            );
            out.push_back(Output::Event(ProxyEvent::ClientError {
                status: 413,
                reason: reason.clone(),
            }));
            self.answer_error(id, 413, &reason, out);
            return;
        }
        if ctx.settings.mode == Mode::Record {
            self.forward(id, ctx, out);
            return;
        }
        let recorded = recorded_request(stream, ctx);
        let fp = fingerprint(&ctx.settings.policy, &recorded);
        let lookup = match ctx.index {
            Some(index) => index.lookup(&ctx.settings.policy, &stream.test_name, &recorded, fp),
            None => Lookup::Miss(MissReport {
                test_name: stream.test_name.clone(),
                fingerprint: fp,
                request_line: stream.request_line.clone(),
                reason: "no recordings are loaded".into(),
                candidates: Vec::new(),
            }),
        };
        match lookup {
            Lookup::Hit(interaction) if interaction.response.status == 101 => {
                let reason =
                    "this request matches a recorded WebSocket upgrade, which HTTP/2 cannot replay";
                self.answer_error(id, 501, reason, out);
            }
            Lookup::Hit(interaction) => {
                out.push_back(Output::Event(ProxyEvent::Replayed {
                    test_name: stream.test_name.clone(),
                    request_line: stream.request_line.clone(),
                }));
                self.answer_recorded(id, &interaction, out);
            }
            Lookup::Miss(_) if ctx.settings.mode == Mode::Auto => self.forward(id, ctx, out),
            Lookup::Miss(report) => {
                let body = Bytes::from(report.to_text());
                let headers = vec![
                    Header::new("content-type", "text/plain; charset=utf-8"),
                    Header::new("x-ouli-miss", "true"),
                    Header::new(MISS_FINGERPRINT_HEADER, report.fingerprint.to_string()),
                    Header::new(TEST_NAME_HEADER, sanitize_header_value(&report.test_name)),
                    Header::new("content-length", body.len().to_string()),
                ];
                out.push_back(Output::Event(ProxyEvent::Missed(Box::new(report))));
                self.respond(id, MISS_STATUS, &headers, vec![body], Finish::End);
            }
        }
    }

    /// Queues a whole answer on a client stream.
    fn respond(
        &mut self,
        id: u32,
        status: u16,
        headers: &[Header],
        chunks: Vec<Bytes>,
        finish: Finish,
    ) {
        let end_now = chunks.iter().all(|c| c.is_empty()) && matches!(finish, Finish::End);
        if self
            .client
            .send_response(id, status, headers, end_now)
            .is_err()
        {
            self.streams.remove(&id);
            return;
        }
        if end_now {
            self.streams.remove(&id);
            return;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.pending
                .extend(chunks.into_iter().filter(|c| !c.is_empty()));
            s.finish = finish;
        }
    }

    fn answer_recorded(
        &mut self,
        id: u32,
        interaction: &Arc<Interaction>,
        _out: &mut VecDeque<Output>,
    ) {
        let resp = &interaction.response;
        let is_head = self
            .streams
            .get(&id)
            .is_some_and(|s| &s.method[..] == b"HEAD");
        let chunks = if is_head {
            Vec::new()
        } else {
            resp.chunks.clone()
        };
        let finish = if resp.trailers.is_empty() || is_head {
            Finish::End
        } else {
            Finish::Trailers(resp.trailers.clone())
        };
        self.respond(id, resp.status, &resp.headers, chunks, finish);
    }

    /// A short plain-text error answer on one stream.
    fn answer_error(&mut self, id: u32, status: u16, reason: &str, _out: &mut VecDeque<Output>) {
        let body = Bytes::from(format!("{status} {reason}\n"));
        let headers = vec![
            Header::new("content-type", "text/plain; charset=utf-8"),
            Header::new("x-ouli-error", sanitize_header_value(reason)),
            Header::new("content-length", body.len().to_string()),
        ];
        self.respond(id, status, &headers, vec![body], Finish::End);
    }

    /// Record and auto modes: queues the stream's request for the upstream;
    /// [`service_waiting`](Self::service_waiting) sends it, opening the
    /// upstream connection first if needed.
    fn forward(&mut self, id: u32, _ctx: &Ctx<'_>, _out: &mut VecDeque<Output>) {
        self.waiting.push_back(id);
    }

    /// Sends waiting requests upstream, in order, as far as the upstream
    /// connection takes them: opens it when there is none (or the last one
    /// is gone), replaces it once a GOAWAY'd one has no stream left, and
    /// otherwise waits for room under its concurrent-stream limit. Returns
    /// whether anything happened.
    fn service_waiting(&mut self, now: Instant, ctx: &Ctx<'_>, out: &mut VecDeque<Output>) -> bool {
        let mut any = false;
        while let Some(&id) = self.waiting.front() {
            if !self.streams.contains_key(&id) {
                // Reset by the client while it waited.
                self.waiting.pop_front();
                continue;
            }
            match &self.upstream {
                UpstreamLeg::Connecting => break,
                UpstreamLeg::Http1(leg) => {
                    if leg.current.is_some() {
                        // One exchange at a time on HTTP/1.1.
                        break;
                    }
                    self.waiting.pop_front();
                    self.send_upstream_h1(now, id, ctx, out);
                    any = true;
                }
                UpstreamLeg::None | UpstreamLeg::Gone => {
                    self.upstream = UpstreamLeg::Connecting;
                    out.push_back(Output::OpenUpstream);
                    any = true;
                    break;
                }
                UpstreamLeg::Connected(up) => {
                    if !self.upstream_going_away && up.can_open_stream() {
                        self.waiting.pop_front();
                        self.send_upstream(now, id, ctx, out);
                        any = true;
                    } else if self.upstream_going_away && self.upstream_to_client.is_empty() {
                        self.drop_upstream("the upstream is going away", out);
                        any = true;
                    } else if !self.upstream_going_away && up.active_streams() == 0 {
                        // Open, yet no room with nothing in flight: the
                        // upstream allows no streams at all.
                        let reason = "the upstream allows no concurrent streams";
                        for id in std::mem::take(&mut self.waiting) {
                            self.answer_error(id, 502, reason, out);
                        }
                        any = true;
                    } else {
                        // Room comes back as streams on it end.
                        break;
                    }
                }
            }
        }
        any
    }

    /// Opens an upstream stream for a request and sends what the windows take.
    fn send_upstream(&mut self, now: Instant, id: u32, ctx: &Ctx<'_>, out: &mut VecDeque<Output>) {
        let UpstreamLeg::Connected(up) = &mut self.upstream else {
            return;
        };
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let pseudo = RequestPseudo::new(
            stream.method.clone(),
            Bytes::from_static(if ctx.settings.upstream_tls {
                b"https"
            } else {
                b"http"
            }),
            ctx.settings.upstream_authority.clone(),
            stream.target.clone(),
        );
        let headers: Vec<Header> = stream
            .headers
            .iter()
            .filter(|h| !h.is("host"))
            .cloned()
            .collect();
        let body = stream.body.clone().freeze();
        match up.send_request(&pseudo, &headers, body.is_empty()) {
            Ok(up_id) => {
                stream.upstream_stream = Some(up_id);
                stream.upstream_deadline = Some(now + ctx.settings.upstream_response_timeout);
                self.upstream_to_client.insert(up_id, id);
                // The request body is bounded by max_body_bytes; what the
                // upstream's window does not take now goes on SendCapacity.
                stream.unsent = body;
                send_unsent(up, up_id, stream);
            }
            Err(e) => {
                let reason = format!("cannot open an upstream stream: {e}");
                self.answer_error(id, 502, &reason, out);
            }
        }
    }

    /// Sends a stream's request over the HTTP/1.1 upstream connection.
    fn send_upstream_h1(
        &mut self,
        now: Instant,
        id: u32,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        let (UpstreamLeg::Http1(leg), Some(stream)) =
            (&mut self.upstream, self.streams.get_mut(&id))
        else {
            return;
        };
        // The body is whole: its length is the framing, whatever the
        // client's `content-length` said.
        let had_length = header_value(&stream.headers, "content-length").is_some();
        // `host` (the upstream authority) first, as stored.
        let mut headers: Vec<Header> = stream
            .headers
            .iter()
            .filter(|h| !h.is("content-length") && !h.is("te"))
            .cloned()
            .collect();
        // HTTP/2 may split `cookie` into several fields; HTTP/1.1 carries
        // one, the pieces joined with "; " (RFC 9113 §8.2.3).
        if headers.iter().filter(|h| h.is("cookie")).nth(1).is_some() {
            let mut joined = BytesMut::new();
            for h in headers.iter().filter(|h| h.is("cookie")) {
                if !joined.is_empty() {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(&h.value);
            }
            let first = headers.iter().position(|h| h.is("cookie")).unwrap_or(0);
            headers.retain(|h| !h.is("cookie"));
            headers.insert(
                first.min(headers.len()),
                Header::new("cookie", joined.freeze()),
            );
        }
        // An HTTP/2 client takes trailers (gRPC's status lives there), so
        // the HTTP/1.1 hop asks for them (RFC 9110 §10.1.4: TE is
        // hop-by-hop and named in Connection).
        headers.push(Header::new("te", "trailers"));
        headers.push(Header::new("connection", "te"));
        let bytes = encode_h1_request(
            &stream.method,
            &stream.target,
            headers,
            &stream.body,
            had_length,
        );
        leg.responses.begin_response(&stream.method[..] == b"HEAD");
        leg.current = Some(id);
        leg.reusable = true;
        leg.chunk = BytesMut::new();
        stream.upstream_stream = Some(H1_EXCHANGE);
        stream.upstream_deadline = Some(now + ctx.settings.upstream_response_timeout);
        self.upstream_to_client.insert(H1_EXCHANGE, id);
        out.push_back(Output::ToUpstream(bytes));
    }

    /// One event of the HTTP/1.1 upstream's answer to the current stream.
    fn on_h1_event(
        &mut self,
        now: Instant,
        ev: ResponseEvent,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        let UpstreamLeg::Http1(leg) = &mut self.upstream else {
            return;
        };
        let Some(id) = leg.current else {
            return;
        };
        if let Some(s) = self.streams.get_mut(&id) {
            s.upstream_deadline = Some(now + ctx.settings.upstream_response_timeout);
        }
        match ev {
            ResponseEvent::Informational(_) => {}
            ResponseEvent::Head(head, _) if head.status == 101 => {
                self.drop_upstream("the upstream answered 101 to an HTTP/2 request", out);
            }
            ResponseEvent::Head(head, kind) => {
                leg.reusable = head.version == Version::Http11
                    && !list_contains(&head.headers, "connection", "close")
                    && kind != BodyKind::CloseDelimited;
                let headers: Vec<Header> = head
                    .headers
                    .iter()
                    .filter(|h| !is_hop_by_hop(h, &head.headers))
                    .cloned()
                    .collect();
                let framing = match kind {
                    BodyKind::Empty => Framing::None,
                    BodyKind::Length(_) => Framing::Length,
                    BodyKind::Chunked => Framing::Chunked,
                    BodyKind::CloseDelimited => Framing::Close,
                };
                // No content: the HEADERS frame ends the stream, as an
                // HTTP/2 upstream would have sent it.
                let bodiless = matches!(kind, BodyKind::Empty | BodyKind::Length(0));
                if self
                    .client
                    .send_response(id, head.status, &headers, bodiless)
                    .is_err()
                {
                    return;
                }
                if let Some(s) = self.streams.get_mut(&id) {
                    s.recording = Some(RecordedResponse {
                        status: head.status,
                        reason: head.reason,
                        headers,
                        framing,
                        chunks: Vec::new(),
                        trailers: Vec::new(),
                    });
                }
            }
            ResponseEvent::Data(data) => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.recorded_bytes += data.len();
                    if s.recorded_bytes <= ctx.settings.max_body_bytes {
                        leg.chunk.extend_from_slice(&data);
                    }
                    s.pending.push_back(data);
                }
            }
            ResponseEvent::ChunkEnd => {
                let chunk = std::mem::take(&mut leg.chunk).freeze();
                if let Some(rec) = self.streams.get_mut(&id).and_then(|s| s.recording.as_mut()) {
                    if !chunk.is_empty() {
                        rec.chunks.push(chunk);
                    }
                }
            }
            ResponseEvent::Trailers(trailers) => {
                if let Some(s) = self.streams.get_mut(&id) {
                    if let Some(rec) = &mut s.recording {
                        rec.trailers = trailers.clone();
                    }
                    s.finish = Finish::Trailers(trailers);
                }
            }
            ResponseEvent::End => {
                let chunk = std::mem::take(&mut leg.chunk).freeze();
                leg.current = None;
                let reusable = leg.reusable;
                if let Some(s) = self.streams.get_mut(&id) {
                    if let Some(rec) = &mut s.recording {
                        if !chunk.is_empty() {
                            rec.chunks.push(chunk);
                        }
                        if rec.framing == Framing::None {
                            // Ended with the head already.
                            s.pending.clear();
                        }
                    }
                    if matches!(s.finish, Finish::Open) {
                        s.finish = Finish::End;
                    }
                }
                self.finish_recorded(id, ctx, out);
                if !reusable {
                    self.upstream = UpstreamLeg::Gone;
                    out.push_back(Output::ReleaseUpstream { reusable: false });
                }
            }
        }
    }

    fn on_upstream_event(
        &mut self,
        now: Instant,
        ev: H2Event,
        ctx: &Ctx<'_>,
        out: &mut VecDeque<Output>,
    ) {
        // The answer on a stream moved: its deadline starts over.
        let moved = match &ev {
            H2Event::ResponseHeaders { stream, .. } | H2Event::Data { stream, .. } => Some(*stream),
            _ => None,
        };
        if let Some(id) = moved.and_then(|up| self.upstream_to_client.get(&up)) {
            if let Some(s) = self.streams.get_mut(id) {
                s.upstream_deadline = Some(now + ctx.settings.upstream_response_timeout);
            }
        }
        match ev {
            H2Event::ResponseHeaders {
                stream,
                status,
                headers,
                end_stream,
            } => {
                if (100..200).contains(&status) {
                    return;
                }
                let Some(&id) = self.upstream_to_client.get(&stream) else {
                    return;
                };
                let is_head = self
                    .streams
                    .get(&id)
                    .is_some_and(|s| &s.method[..] == b"HEAD");
                // `None` means "no body by definition" to an HTTP/1.1 replay;
                // an HTTP/2 answer that merely ends with its HEADERS has an
                // empty body, which HTTP/1.1 must frame with a length.
                let framing = if is_head || status == 204 || status == 304 {
                    Framing::None
                } else if end_stream || header_value(&headers, "content-length").is_some() {
                    Framing::Length
                } else {
                    Framing::Chunked
                };
                if self
                    .client
                    .send_response(id, status, &headers, end_stream)
                    .is_err()
                {
                    return;
                }
                if let Some(s) = self.streams.get_mut(&id) {
                    s.recording = Some(RecordedResponse {
                        status,
                        reason: Bytes::new(),
                        headers,
                        framing,
                        chunks: Vec::new(),
                        trailers: Vec::new(),
                    });
                    if end_stream {
                        s.finish = Finish::End;
                        s.pending.clear();
                        self.finish_recorded(id, ctx, out);
                    }
                }
            }
            H2Event::Data {
                stream,
                data,
                end_stream,
            } => {
                let Some(&id) = self.upstream_to_client.get(&stream) else {
                    if let UpstreamLeg::Connected(up) = &mut self.upstream {
                        up.release_capacity(stream, data.len());
                    }
                    return;
                };
                if let Some(s) = self.streams.get_mut(&id) {
                    s.recorded_bytes += data.len();
                    if let Some(rec) = &mut s.recording {
                        if !data.is_empty() && s.recorded_bytes <= ctx.settings.max_body_bytes {
                            rec.chunks.push(data.clone());
                        }
                    }
                    s.unreleased += data.len();
                    if !data.is_empty() {
                        s.pending.push_back(data);
                    }
                    if end_stream {
                        s.finish = Finish::End;
                    }
                }
                if end_stream {
                    self.finish_recorded(id, ctx, out);
                }
            }
            H2Event::Trailers { stream, headers } => {
                let Some(&id) = self.upstream_to_client.get(&stream) else {
                    return;
                };
                if let Some(s) = self.streams.get_mut(&id) {
                    if let Some(rec) = &mut s.recording {
                        rec.trailers = headers.clone();
                    }
                    s.finish = Finish::Trailers(headers);
                }
                self.finish_recorded(id, ctx, out);
            }
            H2Event::StreamReset { stream, code, .. } => {
                if let Some(id) = self.upstream_to_client.remove(&stream) {
                    let started = self.streams.get(&id).is_some_and(|s| s.recording.is_some());
                    if code == ErrorCode::REFUSED_STREAM && !started {
                        // Not processed (RFC 9113 §8.7): safe to send again.
                        if let Some(s) = self.streams.get_mut(&id) {
                            if s.retries < MAX_UPSTREAM_RETRIES {
                                s.retries += 1;
                                s.upstream_deadline = None;
                                s.upstream_stream = None;
                                s.unreleased = 0;
                                self.waiting.push_back(id);
                                return;
                            }
                        }
                    }
                    if started {
                        self.client.reset(id, code);
                        self.streams.remove(&id);
                    } else {
                        let reason = format!("the upstream reset the stream ({code:?})");
                        self.answer_error(id, 502, &reason, out);
                    }
                    out.push_back(Output::Event(ProxyEvent::UpstreamError {
                        status: 0,
                        reason: format!("upstream reset stream {stream} with {code:?}"),
                    }));
                }
            }
            H2Event::SendCapacity { stream } => {
                // The rest of a request body waits for upstream window.
                let Some(&id) = self.upstream_to_client.get(&stream) else {
                    return;
                };
                let UpstreamLeg::Connected(up) = &mut self.upstream else {
                    return;
                };
                if let Some(s) = self.streams.get_mut(&id) {
                    send_unsent(up, stream, s);
                }
            }
            H2Event::ConnectionError(e) => {
                let reason = format!("the upstream broke HTTP/2: {e}");
                self.drop_upstream(&reason, out);
            }
            H2Event::GoAway { .. } => self.upstream_going_away = true,
            H2Event::RequestHeaders { .. } => {}
        }
    }

    /// The upstream's answer on a stream is complete: hand it over for storing.
    fn finish_recorded(&mut self, id: u32, ctx: &Ctx<'_>, out: &mut VecDeque<Output>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(mut response) = s.recording.take() else {
            return;
        };
        s.upstream_deadline = None;
        if let Some(up) = s.upstream_stream {
            self.upstream_to_client.remove(&up);
        }
        if s.recorded_bytes > ctx.settings.max_body_bytes {
            out.push_back(Output::Event(ProxyEvent::NotRecorded {
                test_name: s.test_name.clone(),
                reason: format!(
                    "{}: response body of {} bytes is over the limit of {} bytes (max_recorded_body_bytes)",
                    s.request_line, s.recorded_bytes, ctx.settings.max_body_bytes
                ),
            }));
            return;
        }
        let recorded = recorded_request(s, ctx);
        let fp = fingerprint(&ctx.settings.policy, &recorded);
        redact_response(&ctx.settings.policy, &recorded.target, &mut response);
        out.push_back(Output::Event(ProxyEvent::Recorded {
            test_name: s.test_name.clone(),
            request_line: s.request_line.clone(),
            status: response.status,
        }));
        out.push_back(Output::Store {
            test_name: s.test_name.clone(),
            interaction: Box::new(Interaction {
                fingerprint: fp.to_string(),
                request: recorded,
                response,
                websocket: None,
            }),
        });
    }

    /// Sends what the client's window allows on one stream.
    fn flush(&mut self, now: Instant, id: u32, ctx: &Ctx<'_>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.pending.is_empty() && matches!(s.finish, Finish::Open) {
            // Still reading the request, or waiting for the upstream.
            return;
        }
        let mut taken = 0usize;
        loop {
            let last = s.pending.len() == 1 && matches!(s.finish, Finish::End);
            let Some(chunk) = s.pending.front_mut() else {
                break;
            };
            match self.client.send_data(id, chunk, last) {
                Ok(n) if n == chunk.len() => {
                    taken += n;
                    s.pending.pop_front();
                }
                Ok(n) => {
                    taken += n;
                    let _ = chunk.split_to(n);
                    break;
                }
                Err(_) => {
                    s.pending.clear();
                    break;
                }
            }
        }
        if taken > 0 && s.upstream_deadline.is_some() {
            // A slow client holds the upstream back: that is not the
            // upstream's silence.
            s.upstream_deadline = Some(now + ctx.settings.upstream_response_timeout);
        }
        if taken > 0 && s.unreleased > 0 {
            let n = taken.min(s.unreleased);
            s.unreleased -= n;
            if let (Some(up_id), UpstreamLeg::Connected(up)) =
                (s.upstream_stream, &mut self.upstream)
            {
                up.release_capacity(up_id, n);
            }
        }
        if !s.pending.is_empty() {
            return;
        }
        let done = match std::mem::replace(&mut s.finish, Finish::Open) {
            Finish::Open => false,
            Finish::End => {
                // The last chunk carried END_STREAM, unless there was none.
                if taken == 0 {
                    let _ = self.client.send_data(id, &[], true);
                }
                true
            }
            Finish::Trailers(t) => {
                let _ = self.client.send_trailers(id, &t);
                true
            }
        };
        if done {
            self.streams.remove(&id);
        }
    }
}

/// The request on a stream as stored and matched: redacted with the policy.
fn recorded_request(stream: &Stream, ctx: &Ctx<'_>) -> RecordedRequest {
    let mut r = RecordedRequest {
        method: stream.method.clone(),
        target: stream.target.clone(),
        headers: stream.headers.clone(),
        body: stream.body.clone().freeze(),
    };
    redact_request(&ctx.settings.policy, &mut r);
    r
}

/// Sends as much of a stream's unsent request body as the upstream's window takes.
fn send_unsent(up: &mut H2Connection, up_id: u32, stream: &mut Stream) {
    while !stream.unsent.is_empty() {
        match up.send_data(up_id, &stream.unsent, true) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let _ = stream.unsent.split_to(n.min(stream.unsent.len()));
            }
        }
    }
}

/// What the session needs from its connection for a step.
pub(super) struct Ctx<'a> {
    pub(super) settings: &'a ProxySettings,
    pub(super) index: Option<&'a ReplayIndex>,
}
