//! An HTTP/1.1 client's requests forwarded over HTTP/2 (`target_protocol =
//! "h2c"` or `"h2"`, or `"auto"` when the upstream picks `h2` by ALPN).
//!
//! The leg is one client-role HTTP/2 connection, kept for the life of the
//! client connection (HTTP/1.1 exchanges on it run one after another, so at
//! most one stream is open). It turns the upstream's HTTP/2 answer into the
//! same [`ResponseEvent`]s the HTTP/1.1 response decoder produces, so record
//! mode handles both the same way: a DATA frame is a chunk (its boundary is
//! kept in the recording), trailers are trailers, and the framing follows
//! what the HTTP/2 answer says (`content-length`, or chunked when it has
//! none).

use crate::h1::{BodyKind, ResponseEvent};
use crate::h2::conn::{Connection as H2Connection, H2Event, RequestPseudo};
use crate::h2::ErrorCode;
use crate::message::{header_value, Header, ResponseHead, Version};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Instant;

/// Where the answer on the leg's one stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// No request in flight.
    None,
    /// Request sent, no final head yet.
    AwaitingHead,
    /// Head passed on; DATA or trailers may follow.
    Body,
}

/// The HTTP/2 connection to the upstream of one HTTP/1.1 client connection.
pub(super) struct H2Upstream {
    conn: H2Connection,
    /// The stream of the exchange in flight.
    stream: Option<u32>,
    answer: Answer,
    /// The request was HEAD: its answer has no body whatever it says.
    head_request: bool,
    /// The part of the request body the upstream's windows have not taken.
    unsent: Bytes,
    /// Translated events not yet taken by [`H2Upstream::poll_response`].
    events: VecDeque<Result<ResponseEvent, String>>,
    /// The upstream sent GOAWAY or broke the connection: no new requests.
    going_away: bool,
    /// The last request failed unprocessed (REFUSED_STREAM, or past the
    /// last stream of a GOAWAY, RFC 9113 §8.7): safe to send again.
    refused: bool,
}

impl H2Upstream {
    /// A new leg at `now`; its preface and SETTINGS are queued at once.
    pub(super) fn new(now: Instant) -> Self {
        H2Upstream {
            conn: H2Connection::client(now),
            stream: None,
            answer: Answer::None,
            head_request: false,
            unsent: Bytes::new(),
            events: VecDeque::new(),
            going_away: false,
            refused: false,
        }
    }

    /// Whether the request whose failure was just reported was refused
    /// unprocessed, so it may be sent again on a new connection.
    pub(super) fn was_refused(&self) -> bool {
        self.refused
    }

    /// Whether another request can go over this connection.
    pub(super) fn is_usable(&self) -> bool {
        !self.going_away && !self.conn.is_closed() && self.stream.is_none()
    }

    /// Sends a request: `headers` are the forwarded HTTP/1.1 fields (`Host`
    /// becomes `:authority`; connection-specific fields are dropped by the
    /// HTTP/2 layer).
    pub(super) fn send_request(
        &mut self,
        method: &Bytes,
        target: &Bytes,
        headers: &[Header],
        body: Bytes,
        authority: &Bytes,
        tls: bool,
    ) -> Result<(), String> {
        let scheme: &'static [u8] = if tls { b"https" } else { b"http" };
        // The origin form is what HTTP/2 carries in :path; an absolute
        // form's authority is the upstream's anyway.
        let path = if target.starts_with(b"/") || &target[..] == b"*" {
            target.clone()
        } else {
            Bytes::from_static(b"/")
        };
        let pseudo = RequestPseudo::new(
            method.clone(),
            Bytes::from_static(scheme),
            authority.clone(),
            path,
        );
        let fields: Vec<Header> = headers.iter().filter(|h| !h.is("host")).cloned().collect();
        let id = self
            .conn
            .send_request(&pseudo, &fields, body.is_empty())
            .map_err(|e| format!("cannot open an HTTP/2 stream to the upstream: {e}"))?;
        self.stream = Some(id);
        self.answer = Answer::AwaitingHead;
        self.refused = false;
        self.head_request = &method[..] == b"HEAD";
        self.unsent = body;
        self.events.clear();
        self.send_unsent();
        Ok(())
    }

    /// Sends as much of the request body as the upstream's windows take.
    fn send_unsent(&mut self) {
        let Some(id) = self.stream else { return };
        while !self.unsent.is_empty() {
            match self.conn.send_data(id, &self.unsent, true) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = self.unsent.split_to(n.min(self.unsent.len()));
                }
            }
        }
    }

    /// Bytes from the upstream.
    pub(super) fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        self.conn.handle_bytes(now, data);
        self.drain_events();
    }

    /// The upstream closed the connection.
    pub(super) fn handle_eof(&mut self, now: Instant) {
        self.conn.handle_eof(now);
        self.drain_events();
        self.going_away = true;
        if self.answer != Answer::None {
            self.fail("the upstream closed the HTTP/2 connection".into());
        }
    }

    /// Time has reached `now` (SETTINGS ACK timeout and flood windows).
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.drain_events();
    }

    /// The earliest protocol timer of the connection.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Whether the adapter should read more upstream bytes.
    pub(super) fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }

    /// Bytes to write to the upstream.
    pub(super) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.conn.poll_transmit()
    }

    /// The next event of the answer in flight, or why it failed.
    pub(super) fn poll_response(&mut self) -> Option<Result<ResponseEvent, String>> {
        self.events.pop_front()
    }

    /// The client connection is done with the exchange early (it broke or
    /// timed out): the stream is cancelled.
    pub(super) fn cancel(&mut self) {
        if let Some(id) = self.stream.take() {
            self.conn.reset(id, ErrorCode::CANCEL);
        }
        self.answer = Answer::None;
        self.unsent = Bytes::new();
        self.events.clear();
    }

    fn fail(&mut self, reason: String) {
        self.stream = None;
        self.answer = Answer::None;
        self.unsent = Bytes::new();
        self.events.push_back(Err(reason));
    }

    /// Translates the connection's events into response events.
    fn drain_events(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: H2Event) {
        let ours = |s: u32| Some(s) == self.stream;
        match ev {
            H2Event::ResponseHeaders {
                stream,
                status,
                headers,
                end_stream,
            } if ours(stream) => {
                if (100..200).contains(&status) {
                    return;
                }
                let kind = if self.head_request || status == 204 || status == 304 {
                    BodyKind::Empty
                } else if end_stream {
                    BodyKind::Length(0)
                } else {
                    match header_value(&headers, "content-length")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        Some(n) => BodyKind::Length(n),
                        None => BodyKind::Chunked,
                    }
                };
                let head = ResponseHead {
                    status,
                    reason: Bytes::new(),
                    version: Version::Http11,
                    headers,
                };
                self.answer = Answer::Body;
                self.events.push_back(Ok(ResponseEvent::Head(head, kind)));
                if end_stream {
                    self.end();
                }
            }
            H2Event::Data {
                stream,
                data,
                end_stream,
            } if ours(stream) => {
                // Handed on at once: the adapter writes it to the client
                // before it reads the upstream again, which is the
                // backpressure; the window follows.
                self.conn.release_capacity(stream, data.len());
                if !data.is_empty() && !self.head_request {
                    self.events.push_back(Ok(ResponseEvent::Data(data)));
                    self.events.push_back(Ok(ResponseEvent::ChunkEnd));
                }
                if end_stream {
                    self.end();
                }
            }
            H2Event::Trailers { stream, headers } if ours(stream) => {
                self.events.push_back(Ok(ResponseEvent::Trailers(headers)));
                self.end();
            }
            H2Event::StreamReset { stream, code, .. } if ours(stream) => {
                self.refused =
                    code == ErrorCode::REFUSED_STREAM && self.answer == Answer::AwaitingHead;
                self.fail(format!("the upstream reset the HTTP/2 stream ({code:?})"));
            }
            H2Event::SendCapacity { stream } if ours(stream) => self.send_unsent(),
            H2Event::GoAway { .. } => self.going_away = true,
            H2Event::ConnectionError(e) => {
                self.going_away = true;
                if self.answer != Answer::None {
                    self.fail(format!("the upstream broke HTTP/2: {e}"));
                }
            }
            H2Event::Data { stream, data, .. } => {
                // A cancelled stream's late DATA still counts against the
                // connection window.
                self.conn.release_capacity(stream, data.len());
            }
            _ => {}
        }
    }

    /// The answer is complete.
    fn end(&mut self) {
        self.events.push_back(Ok(ResponseEvent::End));
        self.stream = None;
        self.answer = Answer::None;
        self.unsent = Bytes::new();
    }
}
