//! The two servers under comparison, each behind the same small interface:
//! [`Side::feed`] takes bytes from the client and returns what that input
//! made the server do ([`Step`]).

use bytes::{Bytes, BytesMut};
use ouli_core::h2::conn::{Connection, H2Event};
use ouli_core::h2::frame::{Frame, FrameDecoder, MAX_MAX_FRAME_SIZE};
use ouli_core::h2::{MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_BYTES};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Field lines as (name, value), names as the server gave them.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A request head as one server delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Req {
    pub method: Vec<u8>,
    pub scheme: Option<Vec<u8>>,
    pub authority: Option<Vec<u8>>,
    pub path: Option<Vec<u8>>,
    pub protocol: Option<Vec<u8>>,
    pub headers: Fields,
    pub end_stream: bool,
}

/// What a server delivered of one request's body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    pub data: Vec<u8>,
    pub ended: bool,
    pub trailers: Option<Fields>,
}

/// How a server ended the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The error code of its GOAWAY (or of the error it returned).
    pub code: u32,
    /// Its GOAWAY's debug data (our rule text; h2's limit names).
    pub debug: Vec<u8>,
    /// h2 only: it ended because the client's GOAWAY said so, not because
    /// of an error of the client's.
    pub by_client: bool,
}

/// What one piece of input made a server do.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// Requests it accepted (in order).
    pub requests: Vec<(u32, Req)>,
    /// Streams it sent RST_STREAM on.
    pub resets: BTreeSet<u32>,
    /// Whether it ended the connection.
    pub closed: Option<Close>,
}

/// Parses a server's output frames, collecting RST_STREAMs and GOAWAY.
#[derive(Debug)]
struct OutputFrames {
    dec: FrameDecoder,
    buf: BytesMut,
    goaway: Option<(u32, Vec<u8>)>,
}

impl OutputFrames {
    fn new() -> Self {
        let mut dec = FrameDecoder::new();
        dec.set_max_frame_size(MAX_MAX_FRAME_SIZE);
        OutputFrames {
            dec,
            buf: BytesMut::new(),
            goaway: None,
        }
    }

    fn push(&mut self, bytes: &[u8], step: &mut Step) {
        self.buf.extend_from_slice(bytes);
        while let Ok(Some(frame)) = self.dec.decode(&mut self.buf) {
            match frame {
                Frame::RstStream { stream, .. } => {
                    step.resets.insert(stream);
                }
                Frame::GoAway { code, debug, .. } => {
                    self.goaway = Some((code.0, debug.to_vec()));
                }
                _ => {}
            }
        }
    }
}

fn fields_of(headers: &[ouli_core::message::Header]) -> Fields {
    headers
        .iter()
        .map(|h| (h.name.to_vec(), h.value.to_vec()))
        .collect()
}

fn opt(b: &Option<Bytes>) -> Option<Vec<u8>> {
    b.as_ref().map(|b| b.to_vec())
}

/// Our server: `ouli_core::h2::conn::Connection::server`, with an
/// application that takes every request and never answers, reads every
/// body and never releases flow-control capacity.
pub struct Ours {
    conn: Connection,
    now: Instant,
    out: OutputFrames,
    pub bodies: BTreeMap<u32, Body>,
}

impl Ours {
    pub fn new() -> Self {
        let now = Instant::now();
        Ours {
            conn: Connection::server(now),
            now,
            out: OutputFrames::new(),
            bodies: BTreeMap::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Step {
        let mut step = Step::default();
        self.conn.handle_bytes(self.now, bytes);
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                H2Event::RequestHeaders {
                    stream,
                    pseudo,
                    headers,
                    end_stream,
                } => {
                    step.requests.push((
                        stream,
                        Req {
                            method: pseudo.method.to_vec(),
                            scheme: opt(&pseudo.scheme),
                            authority: opt(&pseudo.authority),
                            path: opt(&pseudo.path),
                            protocol: opt(&pseudo.protocol),
                            headers: fields_of(&headers),
                            end_stream,
                        },
                    ));
                    self.bodies.insert(
                        stream,
                        Body {
                            ended: end_stream,
                            ..Body::default()
                        },
                    );
                }
                H2Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    let b = self.bodies.entry(stream).or_default();
                    b.data.extend_from_slice(&data);
                    b.ended |= end_stream;
                }
                H2Event::Trailers { stream, headers } => {
                    let b = self.bodies.entry(stream).or_default();
                    b.trailers = Some(fields_of(&headers));
                    b.ended = true;
                }
                H2Event::ConnectionError(e) => {
                    step.closed = Some(Close {
                        code: e.code.0,
                        debug: e.rule.as_bytes().to_vec(),
                        by_client: false,
                    });
                }
                _ => {}
            }
        }
        while let Some(b) = self.conn.poll_transmit() {
            self.out.push(&b, &mut step);
        }
        step
    }
}

/// An in-memory transport for h2: reads what the test pushed (then
/// `Pending`: the client is still there), and keeps what h2 writes.
#[derive(Clone, Default)]
struct Pipe(Rc<RefCell<PipeInner>>);

#[derive(Default)]
struct PipeInner {
    inbound: BytesMut,
    outbound: Vec<u8>,
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut p = self.0.borrow_mut();
        if p.inbound.is_empty() {
            return Poll::Pending;
        }
        let n = buf.remaining().min(p.inbound.len());
        let chunk = p.inbound.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().outbound.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

type Handshake = Pin<Box<h2::server::Handshake<Pipe, Bytes>>>;

struct H2Stream {
    body: h2::RecvStream,
    /// Held so that h2 does not reset the stream: the application answers
    /// nothing, like ours.
    _respond: h2::server::SendResponse<Bytes>,
    done: bool,
}

/// The `h2` crate's server, configured with our limits where it has a
/// setting for them, and the same application as [`Ours`].
pub struct Theirs {
    pipe: Pipe,
    handshake: Option<Handshake>,
    conn: Option<h2::server::Connection<Pipe, Bytes>>,
    streams: BTreeMap<u32, H2Stream>,
    out: OutputFrames,
    pub bodies: BTreeMap<u32, Body>,
}

/// How many times one step polls h2 at most (it makes progress on every
/// poll that is not `Pending`; this only bounds a misbehaving loop).
const POLL_LIMIT: usize = 10_000;

impl Theirs {
    /// h2's server with our limits.
    pub fn new() -> Self {
        Theirs::with(|_| {})
    }

    /// h2's server with our limits, then `configure`d (for tests).
    pub fn with(configure: impl FnOnce(&mut h2::server::Builder)) -> Self {
        let pipe = Pipe::default();
        let mut builder = h2::server::Builder::new();
        builder
            // Our advertised and enforced limits (ouli_core::h2).
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST_BYTES as u32);
        configure(&mut builder);
        let handshake = builder.handshake::<Pipe, Bytes>(pipe.clone());
        Theirs {
            pipe,
            handshake: Some(Box::pin(handshake)),
            conn: None,
            streams: BTreeMap::new(),
            out: OutputFrames::new(),
            bodies: BTreeMap::new(),
        }
    }

    fn close_of(&self, e: &h2::Error, step: &mut Step) {
        step.closed = Some(Close {
            code: e.reason().map_or(0, u32::from),
            debug: self
                .out
                .goaway
                .as_ref()
                .map(|(_, d)| d.clone())
                .unwrap_or_default(),
            by_client: e.is_remote(),
        });
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Step {
        let mut step = Step::default();
        self.pipe.0.borrow_mut().inbound.extend_from_slice(bytes);
        let mut cx = Context::from_waker(Waker::noop());
        if let Some(hs) = &mut self.handshake {
            match hs.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(conn)) => {
                    self.handshake = None;
                    self.conn = Some(conn);
                }
                Poll::Ready(Err(e)) => {
                    self.handshake = None;
                    self.drain_output(&mut step);
                    self.close_of(&e, &mut step);
                }
                Poll::Pending => {}
            }
        }
        let mut ended = None;
        if let Some(conn) = &mut self.conn {
            for _ in 0..POLL_LIMIT {
                match conn.poll_accept(&mut cx) {
                    Poll::Ready(Some(Ok((req, respond)))) => {
                        let id = respond.stream_id().as_u32();
                        let (parts, body) = req.into_parts();
                        let end_stream = body.is_end_stream();
                        step.requests.push((id, h2_req(&parts, end_stream)));
                        self.bodies.insert(
                            id,
                            Body {
                                ended: end_stream,
                                ..Body::default()
                            },
                        );
                        self.streams.insert(
                            id,
                            H2Stream {
                                body,
                                _respond: respond,
                                done: end_stream,
                            },
                        );
                    }
                    Poll::Ready(Some(Err(e))) => {
                        ended = Some(Some(e));
                        break;
                    }
                    Poll::Ready(None) => {
                        ended = Some(None);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        self.read_bodies(&mut cx);
        self.drain_output(&mut step);
        match ended {
            Some(Some(e)) => {
                self.conn = None;
                self.close_of(&e, &mut step);
            }
            Some(None) => {
                // A graceful end: the client's GOAWAY, with no stream left.
                self.conn = None;
                step.closed = Some(Close {
                    code: 0,
                    debug: Vec::new(),
                    by_client: true,
                });
            }
            None => {}
        }
        step
    }

    fn read_bodies(&mut self, cx: &mut Context<'_>) {
        for (id, s) in self.streams.iter_mut() {
            if s.done {
                continue;
            }
            let b = self.bodies.entry(*id).or_default();
            for _ in 0..POLL_LIMIT {
                match s.body.poll_data(cx) {
                    Poll::Ready(Some(Ok(data))) => b.data.extend_from_slice(&data),
                    Poll::Ready(Some(Err(_))) => {
                        s.done = true;
                        break;
                    }
                    Poll::Ready(None) => {
                        s.done = true;
                        b.ended = true;
                        if let Poll::Ready(Ok(Some(map))) = s.body.poll_trailers(cx) {
                            b.trailers = Some(map_fields(&map));
                        }
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
    }

    fn drain_output(&mut self, step: &mut Step) {
        let out = std::mem::take(&mut self.pipe.0.borrow_mut().outbound);
        self.out.push(&out, step);
    }
}

fn map_fields(map: &http::HeaderMap) -> Fields {
    map.iter()
        .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn h2_req(parts: &http::request::Parts, end_stream: bool) -> Req {
    let uri = &parts.uri;
    Req {
        method: parts.method.as_str().as_bytes().to_vec(),
        scheme: uri.scheme_str().map(|s| s.as_bytes().to_vec()),
        authority: uri.authority().map(|a| a.as_str().as_bytes().to_vec()),
        path: uri.path_and_query().map(|p| p.as_str().as_bytes().to_vec()),
        protocol: parts
            .extensions
            .get::<h2::ext::Protocol>()
            .map(|p| p.as_str().as_bytes().to_vec()),
        headers: map_fields(&parts.headers),
        end_stream,
    }
}
