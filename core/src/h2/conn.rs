//! One HTTP/2 connection, sans-IO, for either role.
//!
//! A [`Connection`] is a plain value. The caller feeds it what arrived
//! ([`handle_bytes`](Connection::handle_bytes), [`handle_timeout`](Connection::handle_timeout),
//! [`handle_eof`](Connection::handle_eof)) and what its application wants
//! to send ([`send_request`](Connection::send_request),
//! [`send_response`](Connection::send_response), [`send_data`](Connection::send_data),
//! [`send_trailers`](Connection::send_trailers), [`reset`](Connection::reset),
//! [`go_away`](Connection::go_away)), then drains
//! [`poll_event`](Connection::poll_event) and
//! [`poll_transmit`](Connection::poll_transmit) and asks
//! [`poll_timeout`](Connection::poll_timeout). No clock is read: every
//! input that needs time takes `now`.
//!
//! # Flow control is the backpressure
//!
//! Received DATA is handed out as [`H2Event::Data`] and stays charged to
//! the stream and connection receive windows until the consumer calls
//! [`release_capacity`](Connection::release_capacity). WINDOW_UPDATE goes
//! out only then (once half a window has been released), so a slow
//! consumer holds at most one connection window of unconsumed data. A
//! stream that is reset gives its unreleased bytes back to the connection
//! window by itself.
//!
//! On the sending side, [`send_data`](Connection::send_data) accepts as
//! much as the peer's windows allow and returns how much that was; when the
//! peer opens a window on a stream that was cut short,
//! [`H2Event::SendCapacity`] says so. Nothing is queued beyond the bytes
//! waiting in [`poll_transmit`](Connection::poll_transmit), and
//! [`wants_read`](Connection::wants_read) turns `false` while those pass
//! [`MAX_PENDING_TRANSMIT_BYTES`].
//!
//! # Errors
//!
//! A broken rule in the peer's input becomes RST_STREAM (stream error,
//! [`H2Event::StreamReset`] with `by_peer: false`) or GOAWAY (connection
//! error, [`H2Event::ConnectionError`]; the connection then ignores input
//! and [`is_closed`](Connection::is_closed) is `true` once the GOAWAY is
//! taken from `poll_transmit`). A misuse of the send methods is a
//! [`SendError`] and changes nothing.

use super::frame::{
    self, flags, setting, Frame, FrameDecoder, Setting, MAX_STREAM_ID, MAX_WINDOW_SIZE,
};
use super::hpack::{Decoder, Encoder};
use super::{
    ErrorCode, ErrorScope, H2Error, HEADER_TABLE_SIZE, INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS,
    MAX_CONTINUATION_FRAMES, MAX_CONTROL_FRAMES_PER_WINDOW, MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_LIST_BYTES, MAX_PENDING_TRANSMIT_BYTES, MAX_RESETS_PER_WINDOW, PREFACE,
    RECENTLY_CLOSED_STREAMS, RESET_WINDOW, SETTINGS_ACK_TIMEOUT,
};
use crate::message::Header;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The RFC's initial window size, in force until SETTINGS say otherwise.
const DEFAULT_WINDOW: u32 = 65_535;

/// Which side of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We accept streams from a client (Ouli facing its clients).
    Server,
    /// We open streams to a server (Ouli facing an upstream).
    Client,
}

/// The limits a connection enforces and advertises. Defaults are the named
/// constants of [`crate::h2`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Config {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised and enforced with
    /// REFUSED_STREAM. See [`MAX_CONCURRENT_STREAMS`].
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE advertised (receive window per stream).
    /// See [`INITIAL_WINDOW_SIZE`].
    pub initial_window_size: u32,
    /// Receive window of the whole connection (at least 65 535).
    pub connection_window_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE advertised and enforced while decoding.
    /// See [`MAX_HEADER_LIST_BYTES`].
    pub max_header_list_bytes: usize,
    /// See [`MAX_HEADER_BLOCK_BYTES`].
    pub max_header_block_bytes: usize,
    /// See [`MAX_CONTINUATION_FRAMES`].
    pub max_continuation_frames: usize,
    /// See [`MAX_RESETS_PER_WINDOW`].
    pub max_resets_per_window: u32,
    /// See [`MAX_CONTROL_FRAMES_PER_WINDOW`].
    pub max_control_frames_per_window: u32,
    /// See [`RESET_WINDOW`].
    pub flood_window: Duration,
    /// See [`SETTINGS_ACK_TIMEOUT`].
    pub settings_ack_timeout: Duration,
}

impl Default for H2Config {
    fn default() -> Self {
        H2Config {
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            initial_window_size: INITIAL_WINDOW_SIZE,
            connection_window_size: INITIAL_WINDOW_SIZE,
            max_header_list_bytes: MAX_HEADER_LIST_BYTES,
            max_header_block_bytes: MAX_HEADER_BLOCK_BYTES,
            max_continuation_frames: MAX_CONTINUATION_FRAMES,
            max_resets_per_window: MAX_RESETS_PER_WINDOW,
            max_control_frames_per_window: MAX_CONTROL_FRAMES_PER_WINDOW,
            flood_window: RESET_WINDOW,
            settings_ack_timeout: SETTINGS_ACK_TIMEOUT,
        }
    }
}

/// The pseudo-header fields of a request (RFC 9113 §8.3.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestPseudo {
    /// `:method`.
    pub method: Bytes,
    /// `:scheme` (absent for CONNECT).
    pub scheme: Option<Bytes>,
    /// `:authority` (the HTTP/2 form of `Host`).
    pub authority: Option<Bytes>,
    /// `:path` (absent for CONNECT).
    pub path: Option<Bytes>,
    /// `:protocol` (extended CONNECT, RFC 8441). Sent by the client
    /// role when set; never set on a request the server role accepts,
    /// since it does not offer SETTINGS_ENABLE_CONNECT_PROTOCOL (a request
    /// with `:protocol` is malformed there).
    pub protocol: Option<Bytes>,
}

impl RequestPseudo {
    /// A request with `:method`, `:scheme`, `:authority` and `:path`.
    pub fn new(
        method: impl Into<Bytes>,
        scheme: impl Into<Bytes>,
        authority: impl Into<Bytes>,
        path: impl Into<Bytes>,
    ) -> Self {
        RequestPseudo {
            method: method.into(),
            scheme: Some(scheme.into()),
            authority: Some(authority.into()),
            path: Some(path.into()),
            protocol: None,
        }
    }
}

/// What happened on the connection, from [`Connection::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    /// Server role: a new request. Regular fields in wire order, pseudo
    /// fields split out. `end_stream`: no body and no trailers follow.
    RequestHeaders {
        /// Stream id.
        stream: u32,
        /// The pseudo-header fields.
        pseudo: RequestPseudo,
        /// The regular fields, in wire order.
        headers: Vec<Header>,
        /// Whether the request ends here.
        end_stream: bool,
    },
    /// Client role: response headers. A 1xx status is an interim response;
    /// the final one follows on the same stream.
    ResponseHeaders {
        /// Stream id.
        stream: u32,
        /// `:status`.
        status: u16,
        /// The regular fields, in wire order.
        headers: Vec<Header>,
        /// Whether the response ends here.
        end_stream: bool,
    },
    /// Body bytes of one DATA frame (padding removed). Call
    /// [`Connection::release_capacity`] with their length once consumed.
    Data {
        /// Stream id.
        stream: u32,
        /// The bytes (may be empty when only `end_stream` is carried).
        data: Bytes,
        /// Whether the message ends here.
        end_stream: bool,
    },
    /// A trailer section; the message ends with it.
    Trailers {
        /// Stream id.
        stream: u32,
        /// The fields, in wire order.
        headers: Vec<Header>,
    },
    /// A stream the application knows ended abnormally.
    StreamReset {
        /// Stream id.
        stream: u32,
        /// The code sent or received.
        code: ErrorCode,
        /// `true`: the peer sent RST_STREAM (or refused the stream with
        /// GOAWAY, or the connection was lost); `false`: we reset it
        /// because the peer broke a stream rule.
        by_peer: bool,
    },
    /// The peer opened the send window of a stream that
    /// [`Connection::send_data`] had cut short.
    SendCapacity {
        /// Stream id.
        stream: u32,
    },
    /// The peer sent GOAWAY: no new streams; streams above `last_stream`
    /// that we opened were not processed (they are reset with
    /// REFUSED_STREAM and may be retried elsewhere).
    GoAway {
        /// Last stream the peer may have processed.
        last_stream: u32,
        /// Its error code.
        code: ErrorCode,
        /// Its debug data.
        debug: Bytes,
    },
    /// The peer broke a connection rule: GOAWAY with this error is queued
    /// and the connection is finished.
    ConnectionError(H2Error),
}

/// A send method was called in a way the protocol does not allow; nothing
/// was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or closing.
    #[error("connection closed")]
    ConnectionClosed,
    /// The peer sent GOAWAY (client role: no new streams).
    #[error("peer is going away")]
    GoingAway,
    /// The method belongs to the other role.
    #[error("not allowed in this role")]
    WrongRole,
    /// No open stream has this id (never opened, closed or reset).
    #[error("no such open stream")]
    UnknownStream,
    /// We already ended our side of the stream.
    #[error("stream already ended by us")]
    StreamEnded,
    /// Headers in the wrong order: data or trailers before the head, a
    /// second final head, or an interim (1xx) head with `end_stream`.
    #[error("headers out of order")]
    HeadersOutOfOrder,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached.
    #[error("peer's concurrent stream limit reached")]
    ConcurrencyLimit,
    /// All client stream ids are used up.
    #[error("stream ids exhausted")]
    StreamIdsExhausted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Server: waiting for the 24-byte client preface.
    Preface,
    /// Waiting for the peer's first frame, which must be SETTINGS.
    AwaitSettings,
    Open,
    /// A connection error or our GOAWAY with an error: input ignored.
    Closed,
}

/// How a recently closed stream ended, which decides what a late frame on
/// it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// Both sides sent END_STREAM: a late frame is STREAM_CLOSED.
    Normally,
    /// We sent RST_STREAM: frames the peer sent before seeing it are
    /// still in flight and are ignored (§5.4.2).
    ResetByUs,
    /// The peer sent RST_STREAM (or refused it in GOAWAY): it must not
    /// send more, so a late frame is STREAM_CLOSED (§5.1).
    ResetByPeer,
}

/// Where a stream's inbound message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// Client role: no final response head yet.
    AwaitHead,
    /// Head received: DATA or trailers may follow.
    Body,
}

#[derive(Clone, Debug)]
struct Stream {
    /// We have not sent END_STREAM.
    local_open: bool,
    /// The peer has not sent END_STREAM.
    remote_open: bool,
    recv: Recv,
    /// Server role: final response head sent. Client role: always true.
    head_sent: bool,
    send_window: i64,
    recv_window: i64,
    /// Delivered in Data events, not yet released.
    unreleased: u32,
    /// Released, not yet announced with WINDOW_UPDATE.
    pending_update: u32,
    content_length: Option<u64>,
    received: u64,
    /// Client role: the request was HEAD (no body in the response).
    head_request: bool,
    /// send_data was cut short by the windows.
    blocked: bool,
}

struct PendingBlock {
    stream: u32,
    block: BytesMut,
    end_stream: bool,
    self_dependent: bool,
    frames: usize,
}

/// The settings the peer sent (RFC 9113 §6.5.2), with defaults until then.
#[derive(Clone, Copy, Debug)]
struct PeerSettings {
    max_concurrent_streams: u32,
    initial_window_size: u32,
    max_frame_size: u32,
}

/// One HTTP/2 connection. See the [module docs](self).
pub struct Connection {
    role: Role,
    config: H2Config,
    state: State,
    inbuf: BytesMut,
    frames: FrameDecoder,
    decoder: Decoder,
    encoder: Encoder,
    peer: PeerSettings,
    /// Open streams (at least one side open).
    streams: BTreeMap<u32, Stream>,
    /// Streams closed on both sides whose data is not yet all released.
    draining: BTreeMap<u32, u32>,
    /// Recently closed streams: (id, reset).
    recently_closed: VecDeque<(u32, Closed)>,
    /// Highest stream id the peer opened.
    last_peer_stream: u32,
    /// Client role: next stream id we open.
    next_local_stream: u32,
    conn_send_window: i64,
    conn_recv_window: i64,
    conn_pending_update: u32,
    continuation: Option<PendingBlock>,
    events: VecDeque<H2Event>,
    out: BytesMut,
    /// When our unacknowledged SETTINGS must be acknowledged by.
    settings_deadline: Option<Instant>,
    local_settings_acked: bool,
    flood_window_start: Instant,
    resets_in_window: u32,
    control_in_window: u32,
    goaway_sent: Option<u32>,
    goaway_received: Option<u32>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("streams", &self.streams.len())
            .field("last_peer_stream", &self.last_peer_stream)
            .field("next_local_stream", &self.next_local_stream)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A server connection with the default limits: expects the client
    /// preface; our SETTINGS are queued for transmission at once.
    pub fn server(now: Instant) -> Self {
        Connection::new(Role::Server, H2Config::default(), now)
    }

    /// A client connection with the default limits: the preface and our
    /// SETTINGS are queued for transmission at once.
    pub fn client(now: Instant) -> Self {
        Connection::new(Role::Client, H2Config::default(), now)
    }

    /// A connection in `role` with `config`.
    pub fn new(role: Role, config: H2Config, now: Instant) -> Self {
        let mut decoder = Decoder::new(HEADER_TABLE_SIZE as usize);
        decoder.set_max_header_list_bytes(config.max_header_list_bytes);
        let mut conn = Connection {
            role,
            config,
            state: match role {
                Role::Server => State::Preface,
                Role::Client => State::AwaitSettings,
            },
            inbuf: BytesMut::new(),
            frames: FrameDecoder::new(),
            decoder,
            encoder: Encoder::new(),
            peer: PeerSettings {
                max_concurrent_streams: u32::MAX,
                initial_window_size: DEFAULT_WINDOW,
                max_frame_size: frame::MIN_MAX_FRAME_SIZE,
            },
            streams: BTreeMap::new(),
            draining: BTreeMap::new(),
            recently_closed: VecDeque::new(),
            last_peer_stream: 0,
            next_local_stream: 1,
            conn_send_window: i64::from(DEFAULT_WINDOW),
            conn_recv_window: i64::from(DEFAULT_WINDOW),
            conn_pending_update: 0,
            continuation: None,
            events: VecDeque::new(),
            out: BytesMut::new(),
            settings_deadline: Some(now + config.settings_ack_timeout),
            local_settings_acked: false,
            flood_window_start: now,
            resets_in_window: 0,
            control_in_window: 0,
            goaway_sent: None,
            goaway_received: None,
        };
        if role == Role::Client {
            conn.out.extend_from_slice(PREFACE);
        }
        let mut params = Vec::new();
        if role == Role::Client {
            params.push(Setting {
                id: setting::ENABLE_PUSH,
                value: 0,
            });
        }
        params.push(Setting {
            id: setting::MAX_CONCURRENT_STREAMS,
            value: config.max_concurrent_streams,
        });
        if config.initial_window_size != DEFAULT_WINDOW {
            params.push(Setting {
                id: setting::INITIAL_WINDOW_SIZE,
                value: config.initial_window_size.min(MAX_WINDOW_SIZE),
            });
        }
        params.push(Setting {
            id: setting::MAX_HEADER_LIST_SIZE,
            value: u32::try_from(config.max_header_list_bytes).unwrap_or(u32::MAX),
        });
        conn.write_frame(&Frame::Settings { ack: false, params });
        let extra = config
            .connection_window_size
            .min(MAX_WINDOW_SIZE)
            .saturating_sub(DEFAULT_WINDOW);
        if extra > 0 {
            conn.conn_recv_window += i64::from(extra);
            conn.write_frame(&Frame::WindowUpdate {
                stream: 0,
                increment: extra,
            });
        }
        conn
    }

    /// Which role this connection plays.
    pub fn role(&self) -> Role {
        self.role
    }

    // ----- inputs -------------------------------------------------------

    /// Bytes arrived from the peer. The slice is copied as needed; frames
    /// are processed as soon as they are complete, so the events do not
    /// depend on how the input was split.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.inbuf.extend_from_slice(data);
        self.process(now);
        if self.inbuf.is_empty() {
            // Idle connections hold no input buffer.
            self.inbuf = BytesMut::new();
        }
    }

    /// The peer closed the connection (read returned 0) or reading failed.
    /// Streams the application knows about end with
    /// [`H2Event::StreamReset`] (`CANCEL`, `by_peer: true`).
    pub fn handle_eof(&mut self, _now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.inbuf = BytesMut::new();
        self.continuation = None;
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.streams.remove(&id);
            self.events.push_back(H2Event::StreamReset {
                stream: id,
                code: ErrorCode::CANCEL,
                by_peer: true,
            });
        }
        self.draining.clear();
    }

    /// Time passed: a SETTINGS that the peer did not acknowledge within
    /// [`H2Config::settings_ack_timeout`] ends the connection with
    /// SETTINGS_TIMEOUT. Calling early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if let Some(deadline) = self.settings_deadline {
            if now >= deadline {
                self.settings_deadline = None;
                self.connection_error(H2Error::connection(
                    ErrorCode::SETTINGS_TIMEOUT,
                    "SETTINGS not acknowledged in time (§6.5.3)",
                ));
            }
        }
    }

    // ----- outputs ------------------------------------------------------

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<H2Event> {
        self.events.pop_front()
    }

    /// All bytes queued for the peer, as one buffer; `None` when there are none.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        let bytes = self.out.split().freeze();
        // Do not keep a large allocation around on an idle connection.
        self.out = BytesMut::new();
        Some(bytes)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        self.settings_deadline
    }

    /// Whether to keep reading from the peer: `false` once closed, or while
    /// more than [`MAX_PENDING_TRANSMIT_BYTES`] wait in `poll_transmit`.
    pub fn wants_read(&self) -> bool {
        self.state != State::Closed && self.out.len() < MAX_PENDING_TRANSMIT_BYTES
    }

    /// Whether the connection is finished: an error or GOAWAY ended it and
    /// everything queued has been taken, or the peer closed it. Drop it and
    /// close the socket.
    pub fn is_closed(&self) -> bool {
        (self.state == State::Closed && self.out.is_empty())
            || (self.streams.is_empty()
                && self.out.is_empty()
                // A client's GOAWAY only says it opens no more streams: it
                // may still send PING or SETTINGS, so a server stays.
                && (self.goaway_sent.is_some()
                    || (self.role == Role::Client && self.goaway_received.is_some())))
    }

    /// Number of open streams (at least one side open).
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Client role: whether [`send_request`](Self::send_request) can open a
    /// stream now (connection open, no GOAWAY, under the peer's limit).
    pub fn can_open_stream(&self) -> bool {
        self.role == Role::Client
            && self.state != State::Closed
            && self.goaway_received.is_none()
            && self.goaway_sent.is_none()
            && (self.streams.len() as u64) < u64::from(self.peer.max_concurrent_streams)
            && self.next_local_stream <= MAX_STREAM_ID
    }

    /// How many DATA bytes [`send_data`](Self::send_data) would accept on
    /// `stream` now (0 for an unknown stream).
    pub fn send_capacity(&self, stream: u32) -> usize {
        match self.streams.get(&stream) {
            Some(s) if s.local_open => {
                usize::try_from(s.send_window.min(self.conn_send_window).max(0)).unwrap_or(0)
            }
            _ => 0,
        }
    }

    // ----- sending ------------------------------------------------------

    /// Client role: opens a stream with a request head. Returns the stream id.
    ///
    /// Names are lower-cased, and connection-specific fields (`connection`,
    /// `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`,
    /// fields named by `connection`, `te` other than `trailers`, and any
    /// `:`-prefixed name) are dropped, as RFC 9113 §8.2.2 requires.
    pub fn send_request(
        &mut self,
        pseudo: &RequestPseudo,
        headers: &[Header],
        end_stream: bool,
    ) -> Result<u32, SendError> {
        if self.role != Role::Client {
            return Err(SendError::WrongRole);
        }
        self.check_open()?;
        if self.goaway_received.is_some() || self.goaway_sent.is_some() {
            return Err(SendError::GoingAway);
        }
        if self.next_local_stream > MAX_STREAM_ID {
            return Err(SendError::StreamIdsExhausted);
        }
        if (self.streams.len() as u64) >= u64::from(self.peer.max_concurrent_streams) {
            return Err(SendError::ConcurrencyLimit);
        }
        let id = self.next_local_stream;
        self.next_local_stream = self.next_local_stream.saturating_add(2);
        let mut fields = Vec::with_capacity(headers.len() + 4);
        fields.push(Header::new(
            Bytes::from_static(b":method"),
            pseudo.method.clone(),
        ));
        if let Some(v) = &pseudo.scheme {
            fields.push(Header::new(Bytes::from_static(b":scheme"), v.clone()));
        }
        if let Some(v) = &pseudo.authority {
            fields.push(Header::new(Bytes::from_static(b":authority"), v.clone()));
        }
        if let Some(v) = &pseudo.path {
            fields.push(Header::new(Bytes::from_static(b":path"), v.clone()));
        }
        if let Some(v) = &pseudo.protocol {
            fields.push(Header::new(Bytes::from_static(b":protocol"), v.clone()));
        }
        outbound_fields(headers, &mut fields);
        self.write_headers(id, &fields, end_stream);
        let mut stream = self.new_stream();
        stream.local_open = !end_stream;
        stream.recv = Recv::AwaitHead;
        stream.head_request = &pseudo.method[..] == b"HEAD";
        self.streams.insert(id, stream);
        Ok(id)
    }

    /// Server role: sends a response head on `stream`. A 1xx `status` is
    /// an interim response (and may not end the stream); the final head
    /// follows with another call. Fields are cleaned as for
    /// [`send_request`](Self::send_request).
    pub fn send_response(
        &mut self,
        stream: u32,
        status: u16,
        headers: &[Header],
        end_stream: bool,
    ) -> Result<(), SendError> {
        if self.role != Role::Server {
            return Err(SendError::WrongRole);
        }
        self.check_open()?;
        let s = self.streams.get(&stream).ok_or(SendError::UnknownStream)?;
        if !s.local_open {
            return Err(SendError::StreamEnded);
        }
        let interim = (100..200).contains(&status);
        if s.head_sent || (interim && end_stream) || !(100..=999).contains(&status) {
            return Err(SendError::HeadersOutOfOrder);
        }
        let mut fields = Vec::with_capacity(headers.len() + 1);
        fields.push(Header::new(
            Bytes::from_static(b":status"),
            Bytes::from(status.to_string()),
        ));
        outbound_fields(headers, &mut fields);
        self.write_headers(stream, &fields, end_stream);
        if let Some(s) = self.streams.get_mut(&stream) {
            s.head_sent = !interim;
        }
        if end_stream {
            self.end_local(stream);
        }
        Ok(())
    }

    /// Sends a trailer section on `stream`, which ends our side of it.
    pub fn send_trailers(&mut self, stream: u32, headers: &[Header]) -> Result<(), SendError> {
        self.check_open()?;
        let s = self.streams.get(&stream).ok_or(SendError::UnknownStream)?;
        if !s.local_open {
            return Err(SendError::StreamEnded);
        }
        if !s.head_sent {
            return Err(SendError::HeadersOutOfOrder);
        }
        let mut fields = Vec::with_capacity(headers.len());
        outbound_fields(headers, &mut fields);
        self.write_headers(stream, &fields, true);
        self.end_local(stream);
        Ok(())
    }

    /// Sends body bytes on `stream`, as much as the stream and connection
    /// send windows allow, in DATA frames no larger than the peer's
    /// SETTINGS_MAX_FRAME_SIZE. Returns how many bytes of `data` were
    /// taken; `end_stream` takes effect only when all of them were. The
    /// rest waits for [`H2Event::SendCapacity`]. An empty `data` with
    /// `end_stream` always goes out.
    pub fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> Result<usize, SendError> {
        self.check_open()?;
        let conn_window = self.conn_send_window;
        let max_frame = self.peer.max_frame_size as usize;
        let s = self
            .streams
            .get_mut(&stream)
            .ok_or(SendError::UnknownStream)?;
        if !s.local_open {
            return Err(SendError::StreamEnded);
        }
        if !s.head_sent {
            return Err(SendError::HeadersOutOfOrder);
        }
        let cap = usize::try_from(s.send_window.min(conn_window).max(0)).unwrap_or(0);
        let n = data.len().min(cap);
        let ends = end_stream && n == data.len();
        s.blocked = n < data.len();
        s.send_window -= n as i64;
        self.conn_send_window -= n as i64;
        let taken = data.get(..n).unwrap_or_default();
        let mut chunks = taken.chunks(max_frame.max(1)).peekable();
        if chunks.peek().is_none() {
            if ends {
                self.write_frame(&Frame::Data {
                    stream,
                    data: Bytes::new(),
                    end_stream: true,
                    padding: None,
                });
            }
        } else {
            while let Some(chunk) = chunks.next() {
                let last = chunks.peek().is_none();
                frame::FrameHeader {
                    length: chunk.len() as u32,
                    kind: frame::kind::DATA,
                    flags: if last && ends { flags::END_STREAM } else { 0 },
                    stream,
                }
                .write(&mut self.out);
                self.out.extend_from_slice(chunk);
            }
        }
        if ends {
            self.end_local(stream);
        }
        Ok(n)
    }

    /// The consumer is done with `n` bytes of DATA received on `stream`:
    /// they count as free window again, and WINDOW_UPDATE frames go out
    /// once half a window is free. Releasing more than was delivered, or on
    /// a reset stream, is ignored.
    pub fn release_capacity(&mut self, stream: u32, n: usize) {
        if self.state == State::Closed {
            return;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(s) = self.streams.get_mut(&stream) {
            let n = n.min(s.unreleased);
            s.unreleased -= n;
            if s.remote_open {
                s.pending_update = s.pending_update.saturating_add(n);
            }
            self.conn_pending_update = self.conn_pending_update.saturating_add(n);
        } else if let Some(left) = self.draining.get_mut(&stream) {
            let n = n.min(*left);
            *left -= n;
            if *left == 0 {
                self.draining.remove(&stream);
            }
            self.conn_pending_update = self.conn_pending_update.saturating_add(n);
        }
        self.send_window_updates();
    }

    /// Resets `stream` with `code` (RST_STREAM). Returns `false` if the
    /// stream was not open. No event follows for it.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) -> bool {
        if self.state == State::Closed || !self.streams.contains_key(&stream) {
            return false;
        }
        self.write_frame(&Frame::RstStream { stream, code });
        self.forget_stream(stream, Closed::ResetByUs);
        true
    }

    /// Sends GOAWAY with `code` and the highest peer stream id seen. With
    /// `NO_ERROR` it is a graceful shutdown: open streams finish, new ones
    /// are ignored, and [`is_closed`](Self::is_closed) turns `true` once
    /// none is left. With any other code the connection ends now.
    pub fn go_away(&mut self, code: ErrorCode) {
        if self.state == State::Closed {
            return;
        }
        let last = self.last_peer_stream;
        self.write_frame(&Frame::GoAway {
            last_stream: last,
            code,
            debug: Bytes::new(),
        });
        self.goaway_sent = Some(last);
        if code != ErrorCode::NO_ERROR {
            self.state = State::Closed;
            self.inbuf = BytesMut::new();
        }
    }

    /// Sends a PING with `payload` (for keep-alive or round-trip time);
    /// its ACK is consumed silently.
    pub fn ping(&mut self, payload: [u8; 8]) {
        if self.state != State::Closed {
            self.write_frame(&Frame::Ping {
                ack: false,
                payload,
            });
        }
    }

    // ----- internals: input ---------------------------------------------

    fn process(&mut self, now: Instant) {
        if self.state == State::Preface {
            let n = self.inbuf.len().min(PREFACE.len());
            if self.inbuf.get(..n) != PREFACE.get(..n) {
                self.connection_error(H2Error::connection(
                    ErrorCode::PROTOCOL_ERROR,
                    "invalid connection preface (§3.4)",
                ));
                return;
            }
            if n < PREFACE.len() {
                return;
            }
            self.inbuf.advance(PREFACE.len());
            self.state = State::AwaitSettings;
        }
        while self.state != State::Closed {
            match self.frames.decode(&mut self.inbuf) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    if let Err(e) = self.on_frame(now, frame) {
                        self.on_error(now, e);
                    }
                }
                // Inside a header block only a CONTINUATION may come
                // (§6.10): a frame the decoder rejects with a stream error
                // (a bad PRIORITY, a zero WINDOW_UPDATE) still ends the
                // connection.
                Err(e) if self.continuation.is_some() && !e.is_connection_error() => {
                    self.connection_error(H2Error::connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "frame other than CONTINUATION inside a header block (§6.10)",
                    ));
                }
                Err(e) => self.on_error(now, e),
            }
        }
    }

    fn on_error(&mut self, now: Instant, e: H2Error) {
        match e.scope {
            ErrorScope::Connection => self.connection_error(e),
            ErrorScope::Stream(id) if self.is_idle(id) => {
                // RST_STREAM may not be sent on an idle stream (§6.4).
                self.connection_error(H2Error::connection(e.code, e.rule));
            }
            ErrorScope::Stream(id)
                if !self.streams.contains_key(&id)
                    && self.recently(id) == Some(Closed::ResetByUs) =>
            {
                // We already sent RST_STREAM on it: frames on it are
                // ignored from then on (§5.1, "closed"), malformed ones
                // too; a second RST_STREAM would answer what we must ignore.
            }
            ErrorScope::Stream(id) => {
                self.write_frame(&Frame::RstStream {
                    stream: id,
                    code: e.code,
                });
                if self.streams.contains_key(&id) {
                    self.events.push_back(H2Event::StreamReset {
                        stream: id,
                        code: e.code,
                        by_peer: false,
                    });
                    self.forget_stream(id, Closed::ResetByUs);
                } else {
                    self.remember_closed(id, Closed::ResetByUs);
                }
                // Stream errors the peer provokes (refusals included) count
                // like its own resets.
                self.count_reset(now);
            }
        }
    }

    fn connection_error(&mut self, e: H2Error) {
        if self.state == State::Closed {
            return;
        }
        self.write_frame(&Frame::GoAway {
            last_stream: self.last_peer_stream,
            code: e.code,
            debug: Bytes::from_static(e.rule.as_bytes()),
        });
        self.goaway_sent = Some(self.last_peer_stream);
        self.state = State::Closed;
        self.inbuf = BytesMut::new();
        self.continuation = None;
        self.streams.clear();
        self.draining.clear();
        self.events.push_back(H2Event::ConnectionError(e));
    }

    fn count_reset(&mut self, now: Instant) {
        self.roll_flood_window(now);
        self.resets_in_window = self.resets_in_window.saturating_add(1);
        if self.resets_in_window > self.config.max_resets_per_window {
            self.connection_error(H2Error::connection(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many stream resets (rapid reset, CVE-2023-44487)",
            ));
        }
    }

    fn count_control(&mut self, now: Instant, rule: &'static str) -> Result<(), H2Error> {
        self.roll_flood_window(now);
        self.control_in_window = self.control_in_window.saturating_add(1);
        if self.control_in_window > self.config.max_control_frames_per_window {
            return Err(H2Error::connection(ErrorCode::ENHANCE_YOUR_CALM, rule));
        }
        Ok(())
    }

    fn roll_flood_window(&mut self, now: Instant) {
        if now.saturating_duration_since(self.flood_window_start) >= self.config.flood_window {
            self.flood_window_start = now;
            self.resets_in_window = 0;
            self.control_in_window = 0;
        }
    }

    /// Whether `id` names a stream that was never opened.
    fn is_idle(&self, id: u32) -> bool {
        let peer_parity = match self.role {
            Role::Server => 1,
            Role::Client => 0,
        };
        if id == 0 {
            return false;
        }
        if id % 2 == peer_parity {
            id > self.last_peer_stream
        } else {
            id >= self.next_local_stream
        }
    }

    fn recently(&self, id: u32) -> Option<Closed> {
        self.recently_closed
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, reset)| *reset)
    }

    fn on_frame(&mut self, now: Instant, frame: Frame) -> Result<(), H2Error> {
        if self.state == State::AwaitSettings {
            if !matches!(frame, Frame::Settings { ack: false, .. }) {
                return Err(H2Error::connection(
                    ErrorCode::PROTOCOL_ERROR,
                    "first frame from the peer is not SETTINGS (§3.4)",
                ));
            }
            self.state = State::Open;
        }
        if let Some(pending) = &self.continuation {
            match &frame {
                Frame::Continuation { stream, .. } if *stream == pending.stream => {}
                _ => {
                    return Err(H2Error::connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "frame other than CONTINUATION inside a header block (§6.10)",
                    ))
                }
            }
        }
        match frame {
            Frame::Data {
                stream,
                data,
                end_stream,
                padding,
            } => self.on_data(stream, data, end_stream, padding),
            Frame::Headers {
                stream,
                priority,
                block,
                end_stream,
                end_headers,
                ..
            } => {
                let self_dependent = priority.is_some_and(|p| p.dependency == stream);
                if end_headers {
                    self.on_header_block(stream, &block, end_stream, self_dependent)
                } else {
                    if block.len() > self.config.max_header_block_bytes {
                        return Err(continuation_flood());
                    }
                    self.continuation = Some(PendingBlock {
                        stream,
                        block: BytesMut::from(&block[..]),
                        end_stream,
                        self_dependent,
                        frames: 0,
                    });
                    Ok(())
                }
            }
            Frame::Continuation {
                block, end_headers, ..
            } => {
                let Some(mut pending) = self.continuation.take() else {
                    return Err(H2Error::connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "CONTINUATION without a HEADERS before it (§6.10)",
                    ));
                };
                pending.frames += 1;
                if pending.frames > self.config.max_continuation_frames
                    || pending.block.len().saturating_add(block.len())
                        > self.config.max_header_block_bytes
                {
                    return Err(continuation_flood());
                }
                pending.block.extend_from_slice(&block);
                if end_headers {
                    self.on_header_block(
                        pending.stream,
                        &pending.block,
                        pending.end_stream,
                        pending.self_dependent,
                    )
                } else {
                    self.continuation = Some(pending);
                    Ok(())
                }
            }
            Frame::Priority { .. } | Frame::Unknown { .. } => Ok(()),
            Frame::RstStream { stream, code } => self.on_rst(now, stream, code),
            Frame::Settings { ack, params } => self.on_settings(now, ack, &params),
            Frame::PushPromise { .. } => Err(H2Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                "PUSH_PROMISE while push is disabled (§8.4)",
            )),
            Frame::Ping { ack, payload } => {
                if !ack {
                    self.count_control(now, "PING flood")?;
                    self.write_frame(&Frame::Ping { ack: true, payload });
                }
                Ok(())
            }
            Frame::GoAway {
                last_stream,
                code,
                debug,
            } => {
                self.on_goaway(last_stream, code, debug);
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
        }
    }

    fn on_data(
        &mut self,
        id: u32,
        data: Bytes,
        end_stream: bool,
        padding: Option<u8>,
    ) -> Result<(), H2Error> {
        let flow = data.len() + padding.map_or(0, |p| usize::from(p) + 1);
        let flow32 = u32::try_from(flow).unwrap_or(u32::MAX);
        if self.is_idle(id) {
            return Err(H2Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                "DATA on an idle stream (§5.1)",
            ));
        }
        if flow as i64 > self.conn_recv_window {
            return Err(H2Error::connection(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window (§6.9.1)",
            ));
        }
        self.conn_recv_window -= flow as i64;
        let Some(s) = self.streams.get_mut(&id) else {
            // Closed: the bytes are nobody's; give the window back.
            self.conn_pending_update = self.conn_pending_update.saturating_add(flow32);
            self.send_window_updates();
            if self.recently(id) == Some(Closed::ResetByUs) {
                return Ok(());
            }
            return Err(H2Error::stream(
                id,
                ErrorCode::STREAM_CLOSED,
                "DATA on a closed stream (§5.1)",
            ));
        };
        if !s.remote_open || s.recv != Recv::Body || flow as i64 > s.recv_window {
            let (code, rule) = if !s.remote_open {
                (
                    ErrorCode::STREAM_CLOSED,
                    "DATA after END_STREAM (§5.1, half-closed remote)",
                )
            } else if s.recv != Recv::Body {
                (
                    ErrorCode::PROTOCOL_ERROR,
                    "DATA before the response head (§8.1)",
                )
            } else {
                (
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "DATA beyond the stream window (§6.9.1)",
                )
            };
            self.conn_pending_update = self.conn_pending_update.saturating_add(flow32);
            self.send_window_updates();
            return Err(H2Error::stream(id, code, rule));
        }
        s.recv_window -= flow as i64;
        let pad = flow32.saturating_sub(data.len() as u32);
        s.pending_update = s.pending_update.saturating_add(pad);
        self.conn_pending_update = self.conn_pending_update.saturating_add(pad);
        s.received = s.received.saturating_add(data.len() as u64);
        if let Some(cl) = s.content_length {
            if s.received > cl || (end_stream && s.received != cl) {
                self.conn_pending_update = self.conn_pending_update.saturating_add(flow32 - pad);
                return Err(H2Error::stream(
                    id,
                    ErrorCode::PROTOCOL_ERROR,
                    "DATA length does not match content-length (§8.1.1)",
                ));
            }
        }
        s.unreleased = s.unreleased.saturating_add(flow32 - pad);
        self.events.push_back(H2Event::Data {
            stream: id,
            data,
            end_stream,
        });
        if end_stream {
            self.end_remote(id);
        }
        self.send_window_updates();
        Ok(())
    }

    fn on_header_block(
        &mut self,
        id: u32,
        block: &[u8],
        end_stream: bool,
        self_dependent: bool,
    ) -> Result<(), H2Error> {
        // Decode first, always: the HPACK state must stay in step even when
        // the stream is then refused or ignored.
        let fields = self
            .decoder
            .decode(block)
            .map_err(|e| H2Error::connection(e.code(), hpack_rule(e)))?;
        if let Some(s) = self.streams.get(&id) {
            if self_dependent {
                return Err(H2Error::stream(
                    id,
                    ErrorCode::PROTOCOL_ERROR,
                    "stream depends on itself (§5.3.1)",
                ));
            }
            if !s.remote_open {
                return Err(H2Error::stream(
                    id,
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS after END_STREAM (§5.1, half-closed remote)",
                ));
            }
            return match s.recv {
                Recv::Body => self.on_trailers(id, fields, end_stream),
                Recv::AwaitHead => self.on_response_head(id, fields, end_stream),
            };
        }
        // No open stream with this id.
        let peer_parity = if self.role == Role::Server { 1 } else { 0 };
        if id % 2 != peer_parity {
            // One of ours (client role), or an even id from a client.
            if self.role == Role::Client && !self.is_idle(id) {
                return self.on_closed_stream_headers(id);
            }
            return Err(H2Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                "HEADERS opening a stream with the wrong parity (§5.1.1)",
            ));
        }
        if self.role == Role::Client {
            return Err(H2Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                "server opened a stream while push is disabled (§8.4)",
            ));
        }
        if id <= self.last_peer_stream {
            return self.on_closed_stream_headers(id);
        }
        self.last_peer_stream = id;
        if self.goaway_sent.is_some_and(|last| id > last) {
            // After our GOAWAY, new streams are ignored (§6.8).
            return Ok(());
        }
        if self_dependent {
            return Err(H2Error::stream(
                id,
                ErrorCode::PROTOCOL_ERROR,
                "stream depends on itself (§5.3.1)",
            ));
        }
        if self.streams.len() as u64 >= u64::from(self.config.max_concurrent_streams) {
            return Err(H2Error::stream(
                id,
                ErrorCode::REFUSED_STREAM,
                "more streams than SETTINGS_MAX_CONCURRENT_STREAMS (§5.1.2)",
            ));
        }
        let (pseudo, headers, content_length) = parse_request(fields)
            .map_err(|rule| H2Error::stream(id, ErrorCode::PROTOCOL_ERROR, rule))?;
        if end_stream && content_length.is_some_and(|cl| cl != 0) {
            return Err(H2Error::stream(
                id,
                ErrorCode::PROTOCOL_ERROR,
                "DATA length does not match content-length (§8.1.1)",
            ));
        }
        let mut stream = self.new_stream();
        stream.content_length = content_length;
        stream.head_sent = false;
        self.streams.insert(id, stream);
        self.events.push_back(H2Event::RequestHeaders {
            stream: id,
            pseudo,
            headers,
            end_stream,
        });
        if end_stream {
            self.end_remote(id);
        }
        Ok(())
    }

    fn on_closed_stream_headers(&mut self, id: u32) -> Result<(), H2Error> {
        match self.recently(id) {
            // In flight when we reset it: decoded above, then dropped.
            Some(Closed::ResetByUs) => Ok(()),
            Some(_) => Err(H2Error::connection(
                ErrorCode::STREAM_CLOSED,
                "HEADERS on a closed stream (§5.1)",
            )),
            None => Err(H2Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                "stream id lower than one already used (§5.1.1)",
            )),
        }
    }

    fn on_response_head(
        &mut self,
        id: u32,
        fields: Vec<Header>,
        end_stream: bool,
    ) -> Result<(), H2Error> {
        let (status, headers, content_length) = parse_response(fields)
            .map_err(|rule| H2Error::stream(id, ErrorCode::PROTOCOL_ERROR, rule))?;
        let interim = (100..200).contains(&status);
        if interim && (end_stream || status == 101) {
            return Err(H2Error::stream(
                id,
                ErrorCode::PROTOCOL_ERROR,
                "interim response ends the stream or is 101 (§8.1)",
            ));
        }
        if let Some(s) = self.streams.get_mut(&id) {
            if !interim {
                s.recv = Recv::Body;
                let bodiless = s.head_request || status == 304 || status == 204;
                s.content_length = if bodiless { None } else { content_length };
                if end_stream && s.content_length.is_some_and(|cl| cl != 0) {
                    return Err(H2Error::stream(
                        id,
                        ErrorCode::PROTOCOL_ERROR,
                        "DATA length does not match content-length (§8.1.1)",
                    ));
                }
            }
        }
        self.events.push_back(H2Event::ResponseHeaders {
            stream: id,
            status,
            headers,
            end_stream,
        });
        if end_stream {
            self.end_remote(id);
        }
        Ok(())
    }

    fn on_trailers(
        &mut self,
        id: u32,
        fields: Vec<Header>,
        end_stream: bool,
    ) -> Result<(), H2Error> {
        if !end_stream {
            return Err(H2Error::stream(
                id,
                ErrorCode::PROTOCOL_ERROR,
                "trailers without END_STREAM (§8.1)",
            ));
        }
        for f in &fields {
            if f.name.first() == Some(&b':') {
                return Err(H2Error::stream(
                    id,
                    ErrorCode::PROTOCOL_ERROR,
                    "pseudo-header field in trailers (§8.1)",
                ));
            }
            validate_field(f)
                .map_err(|rule| H2Error::stream(id, ErrorCode::PROTOCOL_ERROR, rule))?;
        }
        if let Some(s) = self.streams.get(&id) {
            if s.content_length.is_some_and(|cl| cl != s.received) {
                return Err(H2Error::stream(
                    id,
                    ErrorCode::PROTOCOL_ERROR,
                    "DATA length does not match content-length (§8.1.1)",
                ));
            }
        }
        self.events.push_back(H2Event::Trailers {
            stream: id,
            headers: fields,
        });
        self.end_remote(id);
        Ok(())
    }

    fn on_rst(&mut self, now: Instant, id: u32, code: ErrorCode) -> Result<(), H2Error> {
        if self.is_idle(id) {
            return Err(H2Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream (§6.4)",
            ));
        }
        if self.streams.contains_key(&id) {
            self.events.push_back(H2Event::StreamReset {
                stream: id,
                code,
                by_peer: true,
            });
            self.forget_stream(id, Closed::ResetByPeer);
            self.count_reset(now);
        }
        Ok(())
    }

    fn on_settings(&mut self, now: Instant, ack: bool, params: &[Setting]) -> Result<(), H2Error> {
        if ack {
            self.settings_deadline = None;
            if !self.local_settings_acked {
                self.local_settings_acked = true;
                // Our INITIAL_WINDOW_SIZE is in force from now on (§6.9.2).
                let delta = i64::from(self.config.initial_window_size) - i64::from(DEFAULT_WINDOW);
                for s in self.streams.values_mut() {
                    s.recv_window += delta;
                }
            }
            return Ok(());
        }
        self.count_control(now, "SETTINGS flood")?;
        for p in params {
            match p.id {
                setting::HEADER_TABLE_SIZE => {
                    self.encoder.set_max_table_size(p.value as usize);
                }
                setting::ENABLE_PUSH
                    if p.value > 1 || (self.role == Role::Client && p.value == 1) =>
                {
                    return Err(H2Error::connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "invalid SETTINGS_ENABLE_PUSH (§6.5.2)",
                    ));
                }
                setting::MAX_CONCURRENT_STREAMS => self.peer.max_concurrent_streams = p.value,
                setting::INITIAL_WINDOW_SIZE => {
                    if p.value > MAX_WINDOW_SIZE {
                        return Err(H2Error::connection(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 (§6.5.2)",
                        ));
                    }
                    let delta = i64::from(p.value) - i64::from(self.peer.initial_window_size);
                    self.peer.initial_window_size = p.value;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > i64::from(MAX_WINDOW_SIZE) {
                            return Err(H2Error::connection(
                                ErrorCode::FLOW_CONTROL_ERROR,
                                "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window (§6.9.2)",
                            ));
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::MIN_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&p.value) {
                        return Err(H2Error::connection(
                            ErrorCode::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range (§6.5.2)",
                        ));
                    }
                    self.peer.max_frame_size = p.value;
                }
                // MAX_HEADER_LIST_SIZE is advisory; unknown ids are ignored.
                _ => {}
            }
        }
        self.write_frame(&Frame::Settings {
            ack: true,
            params: Vec::new(),
        });
        self.wake_blocked(None);
        Ok(())
    }

    fn on_goaway(&mut self, last_stream: u32, code: ErrorCode, debug: Bytes) {
        self.goaway_received = Some(last_stream);
        self.events.push_back(H2Event::GoAway {
            last_stream,
            code,
            debug,
        });
        if self.role == Role::Client {
            let refused: Vec<u32> = self
                .streams
                .range(last_stream.saturating_add(1)..)
                .map(|(id, _)| *id)
                .collect();
            for id in refused {
                self.events.push_back(H2Event::StreamReset {
                    stream: id,
                    code: ErrorCode::REFUSED_STREAM,
                    by_peer: true,
                });
                self.forget_stream(id, Closed::ResetByPeer);
            }
        }
    }

    fn on_window_update(&mut self, id: u32, increment: u32) -> Result<(), H2Error> {
        if id == 0 {
            self.conn_send_window += i64::from(increment);
            if self.conn_send_window > i64::from(MAX_WINDOW_SIZE) {
                return Err(H2Error::connection(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1 (§6.9.1)",
                ));
            }
            self.wake_blocked(None);
            return Ok(());
        }
        if self.is_idle(id) {
            return Err(H2Error::connection(
                ErrorCode::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream (§5.1)",
            ));
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.send_window += i64::from(increment);
            if s.send_window > i64::from(MAX_WINDOW_SIZE) {
                return Err(H2Error::stream(
                    id,
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "stream window above 2^31-1 (§6.9.1)",
                ));
            }
            self.wake_blocked(Some(id));
        }
        Ok(())
    }

    // ----- internals: streams and output --------------------------------

    fn check_open(&self) -> Result<(), SendError> {
        if self.state == State::Closed {
            Err(SendError::ConnectionClosed)
        } else {
            Ok(())
        }
    }

    fn new_stream(&self) -> Stream {
        let recv_initial = if self.local_settings_acked {
            self.config.initial_window_size
        } else {
            DEFAULT_WINDOW.max(self.config.initial_window_size)
        };
        Stream {
            local_open: true,
            remote_open: true,
            recv: Recv::Body,
            head_sent: true,
            send_window: i64::from(self.peer.initial_window_size),
            recv_window: i64::from(recv_initial),
            unreleased: 0,
            pending_update: 0,
            content_length: None,
            received: 0,
            head_request: false,
            blocked: false,
        }
    }

    fn wake_blocked(&mut self, only: Option<u32>) {
        if self.conn_send_window <= 0 {
            return;
        }
        for (id, s) in self.streams.iter_mut() {
            if only.is_some_and(|o| o != *id) {
                continue;
            }
            if s.blocked && s.local_open && s.send_window > 0 {
                s.blocked = false;
                self.events.push_back(H2Event::SendCapacity { stream: *id });
            }
        }
    }

    fn end_local(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.local_open = false;
            s.blocked = false;
        }
        self.retire_if_done(id);
    }

    fn end_remote(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.remote_open = false;
            // No more DATA will come: no stream WINDOW_UPDATE needed.
            s.pending_update = 0;
        }
        self.retire_if_done(id);
    }

    fn retire_if_done(&mut self, id: u32) {
        let done = self
            .streams
            .get(&id)
            .is_some_and(|s| !s.local_open && !s.remote_open);
        if done {
            if let Some(s) = self.streams.remove(&id) {
                if s.unreleased > 0 {
                    self.draining.insert(id, s.unreleased);
                }
            }
            self.remember_closed(id, Closed::Normally);
        }
    }

    /// Drops a reset stream; its unreleased bytes return to the connection window.
    fn forget_stream(&mut self, id: u32, how: Closed) {
        if let Some(s) = self.streams.remove(&id) {
            self.conn_pending_update = self.conn_pending_update.saturating_add(s.unreleased);
        }
        if let Some(left) = self.draining.remove(&id) {
            self.conn_pending_update = self.conn_pending_update.saturating_add(left);
        }
        self.remember_closed(id, how);
        self.send_window_updates();
    }

    fn remember_closed(&mut self, id: u32, how: Closed) {
        if let Some(entry) = self.recently_closed.iter_mut().find(|(s, _)| *s == id) {
            if how != Closed::Normally {
                entry.1 = how;
            }
            return;
        }
        if self.recently_closed.len() >= RECENTLY_CLOSED_STREAMS {
            self.recently_closed.pop_front();
        }
        self.recently_closed.push_back((id, how));
    }

    /// Announces released receive capacity once half a window is free.
    fn send_window_updates(&mut self) {
        if self.state == State::Closed {
            return;
        }
        let conn_threshold = self.config.connection_window_size.max(DEFAULT_WINDOW) / 2;
        if self.conn_pending_update > 0 && self.conn_pending_update >= conn_threshold {
            let n = self.conn_pending_update;
            self.conn_pending_update = 0;
            self.conn_recv_window += i64::from(n);
            self.write_frame(&Frame::WindowUpdate {
                stream: 0,
                increment: n.min(MAX_WINDOW_SIZE),
            });
        }
        let stream_threshold = (self.config.initial_window_size / 2).max(1);
        let mut updates = Vec::new();
        for (id, s) in self.streams.iter_mut() {
            if s.remote_open && s.pending_update >= stream_threshold {
                updates.push((*id, s.pending_update));
                s.recv_window += i64::from(s.pending_update);
                s.pending_update = 0;
            }
        }
        for (stream, n) in updates {
            self.write_frame(&Frame::WindowUpdate {
                stream,
                increment: n.min(MAX_WINDOW_SIZE),
            });
        }
    }

    fn write_frame(&mut self, frame: &Frame) {
        frame.encode(&mut self.out);
    }

    /// HPACK-encodes `fields` and writes HEADERS plus CONTINUATION frames.
    fn write_headers(&mut self, stream: u32, fields: &[Header], end_stream: bool) {
        let mut block = BytesMut::new();
        self.encoder.encode(fields, &mut block);
        let max = (self.peer.max_frame_size as usize).max(1);
        let mut block = block.freeze();
        let first = block.split_to(block.len().min(max));
        self.write_frame(&Frame::Headers {
            stream,
            priority: None,
            block: first,
            end_stream,
            end_headers: block.is_empty(),
            padding: None,
        });
        while !block.is_empty() {
            let chunk = block.split_to(block.len().min(max));
            self.write_frame(&Frame::Continuation {
                stream,
                block: chunk,
                end_headers: block.is_empty(),
            });
        }
    }
}

fn continuation_flood() -> H2Error {
    H2Error::connection(
        ErrorCode::ENHANCE_YOUR_CALM,
        "header block larger than the limit (CONTINUATION flood)",
    )
}

fn hpack_rule(e: super::hpack::HpackError) -> &'static str {
    use super::hpack::HpackError as E;
    match e {
        E::HeaderListTooLarge { .. } => "decoded header list larger than the limit (HPACK bomb)",
        E::Truncated => "HPACK: header block truncated (RFC 7541)",
        E::IntegerOverflow => "HPACK: integer overflow (RFC 7541 §5.1)",
        E::InvalidIndex(_) => "HPACK: index not in the table (RFC 7541 §2.3.3)",
        E::InvalidHuffman => "HPACK: invalid Huffman coding (RFC 7541 §5.2)",
        E::SizeUpdateNotFirst => "HPACK: table size update not at the start (RFC 7541 §4.2)",
        E::SizeUpdateTooLarge { .. } => "HPACK: table size update above the limit (RFC 7541 §6.3)",
        E::SizeUpdateMissing => "HPACK: required table size update missing (RFC 7541 §4.2)",
    }
}

/// Connection-specific fields, never sent or accepted in HTTP/2 (§8.2.2).
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
];

/// Checks one field's name and value characters (§8.2.1).
fn validate_field(f: &Header) -> Result<(), &'static str> {
    let name = f.name.strip_prefix(b":").unwrap_or(&f.name);
    if name.is_empty() {
        return Err("empty field name (§8.2.1)");
    }
    if name
        .iter()
        .any(|&b| b <= 0x20 || b >= 0x7f || b.is_ascii_uppercase() || b == b':')
    {
        return Err("invalid character in field name (§8.2.1)");
    }
    if f.value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err("NUL, CR or LF in field value (§8.2.1)");
    }
    if matches!(f.value.first(), Some(b' ' | b'\t')) || matches!(f.value.last(), Some(b' ' | b'\t'))
    {
        return Err("leading or trailing whitespace in field value (§8.2.1)");
    }
    if f.name.first() != Some(&b':') {
        if CONNECTION_SPECIFIC.iter().any(|c| f.name == c.as_bytes()) {
            return Err("connection-specific field (§8.2.2)");
        }
        if &f.name[..] == b"te" && &f.value[..] != b"trailers" {
            return Err("TE other than \"trailers\" (§8.2.2)");
        }
    }
    Ok(())
}

/// Validates the regular fields after the pseudo ones and extracts
/// content-length.
fn regular_fields(fields: &[Header]) -> Result<Option<u64>, &'static str> {
    let mut content_length = None;
    for f in fields {
        if f.name.first() == Some(&b':') {
            return Err("pseudo-header field after a regular field (§8.3)");
        }
        validate_field(f)?;
        if &f.name[..] == b"content-length" {
            let v = parse_decimal(&f.value).ok_or("invalid content-length (§8.1.1)")?;
            if content_length.is_some_and(|cl| cl != v) {
                return Err("conflicting content-length values (§8.1.1)");
            }
            content_length = Some(v);
        }
    }
    Ok(content_length)
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

type ParsedRequest = (RequestPseudo, Vec<Header>, Option<u64>);

/// Splits and checks a request's fields (§8.3.1).
fn parse_request(mut fields: Vec<Header>) -> Result<ParsedRequest, &'static str> {
    let split = fields
        .iter()
        .position(|f| f.name.first() != Some(&b':'))
        .unwrap_or(fields.len());
    let regular = fields.split_off(split);
    let mut method = None;
    let mut pseudo = RequestPseudo::default();
    for f in fields {
        validate_field(&f)?;
        let slot = match &f.name[..] {
            b":method" => &mut method,
            b":scheme" => &mut pseudo.scheme,
            b":authority" => &mut pseudo.authority,
            b":path" => &mut pseudo.path,
            // Extended CONNECT (RFC 8441) is not offered: we never send
            // SETTINGS_ENABLE_CONNECT_PROTOCOL, so a client may not send
            // `:protocol` (RFC 8441 §3) and it is a pseudo-header field
            // this connection does not define (§8.3: malformed).
            b":protocol" => {
                return Err(":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3)")
            }
            _ => return Err("unknown or response pseudo-header in a request (§8.3)"),
        };
        if slot.is_some() {
            return Err("duplicate pseudo-header field (§8.3)");
        }
        *slot = Some(f.value);
    }
    pseudo.method = method.ok_or("request without :method (§8.3.1)")?;
    if &pseudo.method[..] == b"CONNECT" {
        if pseudo.scheme.is_some() || pseudo.path.is_some() || pseudo.authority.is_none() {
            return Err("CONNECT with :scheme or :path, or without :authority (§8.5)");
        }
    } else {
        if pseudo.scheme.is_none() {
            return Err("request without :scheme (§8.3.1)");
        }
        match &pseudo.path {
            None => return Err("request without :path (§8.3.1)"),
            Some(p) if p.is_empty() => return Err("empty :path (§8.3.1)"),
            Some(_) => {}
        }
    }
    let content_length = regular_fields(&regular)?;
    if let Some(authority) = &pseudo.authority {
        let scheme = pseudo.scheme.as_deref().unwrap_or_default();
        for host in regular.iter().filter(|h| h.is("host")) {
            if !same_authority(scheme, authority, &host.value) {
                return Err("host differs from :authority (§8.3.1)");
            }
        }
    }
    Ok((pseudo, regular, content_length))
}

/// Whether two authorities name the same entity after scheme-based
/// normalization (RFC 3986 §6.2.3): case-insensitive, default port dropped.
fn same_authority(scheme: &[u8], a: &[u8], b: &[u8]) -> bool {
    fn normal<'v>(scheme: &[u8], v: &'v [u8]) -> &'v [u8] {
        let default: &[u8] = match scheme {
            b"http" => b":80",
            b"https" => b":443",
            _ => b"",
        };
        match v.strip_suffix(default) {
            Some(rest) if !default.is_empty() => rest,
            _ => v,
        }
    }
    normal(scheme, a).eq_ignore_ascii_case(normal(scheme, b))
}

type ParsedResponse = (u16, Vec<Header>, Option<u64>);

/// Splits and checks a response's fields (§8.3.2).
fn parse_response(mut fields: Vec<Header>) -> Result<ParsedResponse, &'static str> {
    let split = fields
        .iter()
        .position(|f| f.name.first() != Some(&b':'))
        .unwrap_or(fields.len());
    let regular = fields.split_off(split);
    let mut status = None;
    for f in fields {
        if &f.name[..] != b":status" {
            return Err("unknown or request pseudo-header in a response (§8.3)");
        }
        if status.is_some() {
            return Err("duplicate :status (§8.3.2)");
        }
        let v = &f.value[..];
        if v.len() != 3 {
            return Err("invalid :status (§8.3.2)");
        }
        let code = parse_decimal(v).ok_or("invalid :status (§8.3.2)")?;
        status = Some(code as u16);
    }
    let status = status.ok_or("response without :status (§8.3.2)")?;
    if status < 100 {
        return Err("invalid :status (§8.3.2)");
    }
    let content_length = regular_fields(&regular)?;
    Ok((status, regular, content_length))
}

/// Appends `headers` to `out` cleaned for HTTP/2: names lower-cased,
/// connection-specific and pseudo fields dropped.
fn outbound_fields(headers: &[Header], out: &mut Vec<Header>) {
    let named_by_connection = |name: &[u8]| {
        headers.iter().filter(|h| h.is("connection")).any(|c| {
            c.value
                .split(|&b| b == b',')
                .map(crate::message::trim_ascii)
                .any(|t| !t.is_empty() && t.eq_ignore_ascii_case(name))
        })
    };
    for h in headers {
        if h.name.first() == Some(&b':')
            || CONNECTION_SPECIFIC.iter().any(|c| h.is(c))
            || (h.is("te") && !h.value.eq_ignore_ascii_case(b"trailers"))
            || named_by_connection(&h.name)
        {
            continue;
        }
        let name = if h.name.iter().any(u8::is_ascii_uppercase) {
            Bytes::from(h.name.to_ascii_lowercase())
        } else {
            h.name.clone()
        };
        let value = if h.is("te") {
            Bytes::from_static(b"trailers")
        } else {
            h.value.clone()
        };
        out.push(Header { name, value });
    }
}
