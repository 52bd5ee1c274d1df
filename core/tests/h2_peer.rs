//! The `h2` crate as a real peer, fully in memory and with no runtime: its
//! client (or server) runs on one end of a `tokio::io::duplex` pipe, polled
//! with `Waker::noop()` in a manual loop; our connection runs on the other
//! end, fed the bytes read and handing back the bytes to write.
//!
//! Our server role: GET, a POST larger than the initial window (both
//! directions need flow control to work), trailers, many concurrent
//! streams (more than our SETTINGS_MAX_CONCURRENT_STREAMS). Our client
//! role: the same against h2's server.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use ouli_core::h2::conn::{Connection, H2Event, RequestPseudo};
use ouli_core::h2::MAX_CONCURRENT_STREAMS;
use ouli_core::message::Header;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// One in-memory connection: our state machine on one end of a pipe.
struct Harness {
    ours: Connection,
    io: DuplexStream,
    unsent: Vec<u8>,
    now: Instant,
    /// Futures of the peer that must be polled on every turn (h2's client
    /// connection task).
    background: Vec<Pin<Box<dyn Future<Output = ()>>>>,
}

impl Harness {
    fn new(ours: Connection, now: Instant) -> (Harness, DuplexStream) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (
            Harness {
                ours,
                io: a,
                unsent: Vec::new(),
                now,
                background: Vec::new(),
            },
            b,
        )
    }

    /// Moves bytes both ways and polls the peer's background futures.
    fn pump(&mut self, cx: &mut Context<'_>) {
        for fut in &mut self.background {
            let _ = fut.as_mut().poll(cx);
        }
        loop {
            let mut buf = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    self.ours.handle_bytes(self.now, rb.filled());
                }
                _ => break,
            }
        }
        while let Some(b) = self.ours.poll_transmit() {
            self.unsent.extend_from_slice(&b);
        }
        while !self.unsent.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.unsent) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.unsent.drain(..n);
                }
                _ => break,
            }
        }
    }

    /// Turns the crank until `f` is ready.
    fn drive<T>(&mut self, mut f: impl FnMut(&mut Context<'_>, &mut Connection) -> Poll<T>) -> T {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..200_000 {
            if let Poll::Ready(v) = f(&mut cx, &mut self.ours) {
                return v;
            }
            self.pump(&mut cx);
        }
        panic!("no progress");
    }
}

// ----- our server, h2's client -------------------------------------------------

/// Our server's application: echoes each request's body back, with
/// `x-method`, `x-path` and `x-len`, and its trailers if it had any. Sends
/// as the peer's windows allow, like the proxy will.
#[derive(Default)]
struct EchoServer {
    requests: BTreeMap<u32, (RequestPseudo, Vec<u8>)>,
    sending: BTreeMap<u32, (Bytes, usize, Option<Vec<Header>>)>,
    max_active: usize,
}

impl EchoServer {
    fn step(&mut self, conn: &mut Connection) {
        while let Some(event) = conn.poll_event() {
            match event {
                H2Event::RequestHeaders {
                    stream,
                    pseudo,
                    end_stream,
                    ..
                } => {
                    self.requests.insert(stream, (pseudo, Vec::new()));
                    if end_stream {
                        self.respond(conn, stream, None);
                    }
                }
                H2Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    self.requests
                        .get_mut(&stream)
                        .unwrap()
                        .1
                        .extend_from_slice(&data);
                    conn.release_capacity(stream, data.len());
                    if end_stream {
                        self.respond(conn, stream, None);
                    }
                }
                H2Event::Trailers { stream, headers } => self.respond(conn, stream, Some(headers)),
                H2Event::SendCapacity { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        self.max_active = self.max_active.max(conn.active_streams());
        let ids: Vec<u32> = self.sending.keys().copied().collect();
        for id in ids {
            let (body, sent, trailers) = self.sending.get_mut(&id).unwrap();
            let n = conn
                .send_data(id, &body[*sent..], trailers.is_none())
                .unwrap();
            *sent += n;
            if *sent == body.len() {
                if let Some(t) = trailers.take() {
                    conn.send_trailers(id, &t).unwrap();
                }
                self.sending.remove(&id);
            }
        }
    }

    fn respond(&mut self, conn: &mut Connection, stream: u32, trailers: Option<Vec<Header>>) {
        let (pseudo, body) = self.requests.remove(&stream).unwrap();
        let headers = vec![
            Header::new("x-method", pseudo.method.clone()),
            Header::new("x-path", pseudo.path.clone().unwrap()),
            Header::new("x-len", body.len().to_string()),
        ];
        conn.send_response(stream, 200, &headers, false).unwrap();
        self.sending
            .insert(stream, (Bytes::from(body), 0, trailers));
    }
}

fn h2_client(h: &mut Harness, io: DuplexStream) -> h2::client::SendRequest<Bytes> {
    let mut handshake = Box::pin(h2::client::handshake(io));
    let (sender, connection) = h.drive(|cx, _| handshake.as_mut().poll(cx)).unwrap();
    h.background.push(Box::pin(async move {
        let _ = connection.await;
    }));
    sender
}

/// Reads a whole h2 body, releasing capacity as it goes.
fn poll_body(body: &mut h2::RecvStream, acc: &mut Vec<u8>, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        match body.poll_data(cx) {
            Poll::Ready(Some(Ok(b))) => {
                body.flow_control().release_capacity(b.len()).unwrap();
                acc.extend_from_slice(&b);
            }
            Poll::Ready(Some(Err(e))) => panic!("{e}"),
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
}

fn server_harness() -> (Harness, DuplexStream) {
    let now = Instant::now();
    Harness::new(Connection::server(now), now)
}

#[test]
fn h2_client_get_against_our_server() {
    let (mut h, io) = server_harness();
    let mut app = EchoServer::default();
    let mut sender = h2_client(&mut h, io);
    h.drive(|cx, _| sender.poll_ready(cx)).unwrap();
    let req = Request::get("http://example.com/hello?x=1")
        .body(())
        .unwrap();
    let (mut resp, _) = sender.send_request(req, true).unwrap();
    let response = h
        .drive(|cx, conn| {
            app.step(conn);
            Pin::new(&mut resp).poll(cx)
        })
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-method"], "GET");
    assert_eq!(response.headers()["x-path"], "/hello?x=1");
    let mut body = response.into_body();
    let mut acc = Vec::new();
    h.drive(|cx, conn| {
        app.step(conn);
        poll_body(&mut body, &mut acc, cx)
    });
    assert!(acc.is_empty());
}

#[test]
fn h2_client_post_larger_than_the_window_against_our_server() {
    let (mut h, io) = server_harness();
    let mut app = EchoServer::default();
    let mut sender = h2_client(&mut h, io);
    h.drive(|cx, _| sender.poll_ready(cx)).unwrap();
    let req = Request::post("http://example.com/upload").body(()).unwrap();
    let (mut resp, mut stream) = sender.send_request(req, false).unwrap();
    // 1 MiB: sixteen times the initial window, so both directions depend
    // on WINDOW_UPDATE being sent as the consumer drains.
    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut offset = 0;
    h.drive(|cx, conn| {
        app.step(conn);
        while offset < body.len() {
            stream.reserve_capacity((body.len() - offset).min(1 << 16));
            match stream.poll_capacity(cx) {
                Poll::Ready(Some(Ok(n))) if n > 0 => {
                    let n = n.min(body.len() - offset);
                    let end = offset + n == body.len();
                    stream
                        .send_data(Bytes::copy_from_slice(&body[offset..offset + n]), end)
                        .unwrap();
                    offset += n;
                }
                _ => break,
            }
        }
        if offset == body.len() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let response = h
        .drive(|cx, conn| {
            app.step(conn);
            Pin::new(&mut resp).poll(cx)
        })
        .unwrap();
    assert_eq!(response.headers()["x-len"], "1048576");
    let mut rbody = response.into_body();
    let mut acc = Vec::new();
    h.drive(|cx, conn| {
        app.step(conn);
        poll_body(&mut rbody, &mut acc, cx)
    });
    assert_eq!(acc, body);
}

#[test]
fn h2_client_trailers_against_our_server() {
    let (mut h, io) = server_harness();
    let mut app = EchoServer::default();
    let mut sender = h2_client(&mut h, io);
    h.drive(|cx, _| sender.poll_ready(cx)).unwrap();
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://example.com/grpc.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (mut resp, mut stream) = sender.send_request(req, false).unwrap();
    stream
        .send_data(Bytes::from_static(b"\0\0\0\0\x03abc"), false)
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static("fine"));
    stream.send_trailers(trailers.clone()).unwrap();
    let response = h
        .drive(|cx, conn| {
            app.step(conn);
            Pin::new(&mut resp).poll(cx)
        })
        .unwrap();
    assert_eq!(response.headers()["x-len"], "8");
    let mut body = response.into_body();
    let mut acc = Vec::new();
    h.drive(|cx, conn| {
        app.step(conn);
        poll_body(&mut body, &mut acc, cx)
    });
    assert_eq!(acc, b"\0\0\0\0\x03abc");
    let got = h
        .drive(|cx, conn| {
            app.step(conn);
            body.poll_trailers(cx)
        })
        .unwrap()
        .expect("trailers");
    assert_eq!(got, trailers);
}

#[test]
fn h2_client_many_concurrent_streams_against_our_server() {
    let (mut h, io) = server_harness();
    let mut app = EchoServer::default();
    let mut sender = h2_client(&mut h, io);
    // Once the client has our SETTINGS (it acknowledged them, so our
    // SETTINGS_ACK deadline is gone), it must keep to our limit.
    h.drive(|_, conn| {
        if conn.poll_timeout().is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    // More than our SETTINGS_MAX_CONCURRENT_STREAMS: h2 must queue the rest.
    let n = MAX_CONCURRENT_STREAMS as usize + 50;
    let mut pending = Vec::new();
    for i in 0..n {
        h.drive(|cx, conn| {
            app.step(conn);
            sender.poll_ready(cx)
        })
        .unwrap();
        let req = Request::post(format!("http://example.com/s/{i}"))
            .body(())
            .unwrap();
        let (resp, mut stream) = sender.send_request(req, false).unwrap();
        stream
            .send_data(Bytes::from(format!("body {i}")), true)
            .unwrap();
        pending.push(Some(resp));
    }
    let mut responses: Vec<Option<Response<h2::RecvStream>>> = (0..n).map(|_| None).collect();
    h.drive(|cx, conn| {
        app.step(conn);
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(fut) = slot {
                if let Poll::Ready(r) = Pin::new(fut).poll(cx) {
                    responses[i] = Some(r.unwrap());
                    *slot = None;
                }
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    for (i, r) in responses.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.headers()["x-path"], format!("/s/{i}").as_str());
        let mut body = r.into_body();
        let mut acc = Vec::new();
        h.drive(|cx, conn| {
            app.step(conn);
            poll_body(&mut body, &mut acc, cx)
        });
        assert_eq!(acc, format!("body {i}").as_bytes());
    }
    assert!(app.max_active <= MAX_CONCURRENT_STREAMS as usize);
    assert!(app.max_active > 1, "streams really ran concurrently");
}

// ----- our client, h2's server -------------------------------------------------

/// h2's server application: echoes the body back with `x-len`, and the
/// trailers if there were any.
struct H2Echo {
    conn: h2::server::Connection<DuplexStream, Bytes>,
    requests: Vec<H2Request>,
}

struct H2Request {
    method: Method,
    body: h2::RecvStream,
    respond: h2::server::SendResponse<Bytes>,
    buf: Vec<u8>,
    done: bool,
}

impl H2Echo {
    fn step(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(r)) = self.conn.poll_accept(cx) {
            let (req, respond) = r.unwrap();
            let method = req.method().clone();
            self.requests.push(H2Request {
                method,
                body: req.into_body(),
                respond,
                buf: Vec::new(),
                done: false,
            });
        }
        for r in self.requests.iter_mut().filter(|r| !r.done) {
            if poll_body(&mut r.body, &mut r.buf, cx).is_pending() {
                continue;
            }
            let Poll::Ready(trailers) = r.body.poll_trailers(cx) else {
                continue;
            };
            let trailers = trailers.unwrap();
            r.done = true;
            let response = Response::builder()
                .status(200)
                .header("x-method", r.method.as_str())
                .header("x-len", r.buf.len())
                .body(())
                .unwrap();
            let body = std::mem::take(&mut r.buf);
            let end = body.is_empty() && trailers.is_none();
            let mut send = r.respond.send_response(response, end).unwrap();
            if !body.is_empty() {
                send.send_data(Bytes::from(body), trailers.is_none())
                    .unwrap();
            }
            if let Some(t) = trailers {
                send.send_trailers(t).unwrap();
            }
        }
    }
}

/// Our client's side of one exchange.
#[derive(Default, Debug)]
struct Exchange {
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
    trailers: Vec<Header>,
    done: bool,
}

/// A body being uploaded: the bytes, how many went out, trailers to follow.
type Upload = (Vec<u8>, usize, Option<Vec<Header>>);

#[derive(Default)]
struct OurClient {
    exchanges: BTreeMap<u32, Exchange>,
    uploads: BTreeMap<u32, Upload>,
}

impl OurClient {
    fn step(&mut self, conn: &mut Connection) {
        while let Some(event) = conn.poll_event() {
            match event {
                H2Event::ResponseHeaders {
                    stream,
                    status,
                    headers,
                    end_stream,
                } => {
                    let x = self.exchanges.entry(stream).or_default();
                    x.status = status;
                    x.headers = headers;
                    x.done |= end_stream;
                }
                H2Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    let x = self.exchanges.get_mut(&stream).unwrap();
                    x.body.extend_from_slice(&data);
                    x.done |= end_stream;
                    conn.release_capacity(stream, data.len());
                }
                H2Event::Trailers { stream, headers } => {
                    let x = self.exchanges.get_mut(&stream).unwrap();
                    x.trailers = headers;
                    x.done = true;
                }
                H2Event::SendCapacity { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let ids: Vec<u32> = self.uploads.keys().copied().collect();
        for id in ids {
            let (body, sent, trailers) = self.uploads.get_mut(&id).unwrap();
            *sent += conn
                .send_data(id, &body[*sent..], trailers.is_none())
                .unwrap();
            if *sent == body.len() {
                if let Some(t) = trailers.take() {
                    conn.send_trailers(id, &t).unwrap();
                }
                self.uploads.remove(&id);
            }
        }
    }

    fn all_done(&self) -> bool {
        self.uploads.is_empty() && self.exchanges.values().all(|x| x.done)
    }
}

fn client_harness() -> (Harness, H2Echo) {
    let now = Instant::now();
    let (mut h, io) = Harness::new(Connection::client(now), now);
    let mut handshake = Box::pin(h2::server::handshake(io));
    let conn = h.drive(|cx, _| handshake.as_mut().poll(cx)).unwrap();
    (
        h,
        H2Echo {
            conn,
            requests: Vec::new(),
        },
    )
}

fn run(h: &mut Harness, server: &mut H2Echo, client: &mut OurClient) {
    h.drive(|cx, conn| {
        server.step(cx);
        client.step(conn);
        if client.all_done() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
}

#[test]
fn our_client_get_against_h2_server() {
    let (mut h, mut server) = client_harness();
    let mut client = OurClient::default();
    let id = h
        .ours
        .send_request(
            &RequestPseudo::new("GET", "http", "upstream.example", "/thing"),
            &[Header::new("Accept", "*/*")],
            true,
        )
        .unwrap();
    client.exchanges.insert(id, Exchange::default());
    run(&mut h, &mut server, &mut client);
    let x = &client.exchanges[&id];
    assert_eq!(x.status, 200);
    assert_eq!(
        x.headers,
        vec![Header::new("x-method", "GET"), Header::new("x-len", "0")]
    );
    assert!(x.body.is_empty());
}

#[test]
fn our_client_post_larger_than_the_window_against_h2_server() {
    let (mut h, mut server) = client_harness();
    let mut client = OurClient::default();
    let id = h
        .ours
        .send_request(
            &RequestPseudo::new("POST", "http", "upstream.example", "/upload"),
            &[],
            false,
        )
        .unwrap();
    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    client.exchanges.insert(id, Exchange::default());
    client.uploads.insert(id, (body.clone(), 0, None));
    run(&mut h, &mut server, &mut client);
    let x = &client.exchanges[&id];
    assert_eq!(x.headers[1], Header::new("x-len", "1048576"));
    assert_eq!(x.body, body);
}

#[test]
fn our_client_trailers_against_h2_server() {
    let (mut h, mut server) = client_harness();
    let mut client = OurClient::default();
    let id = h
        .ours
        .send_request(
            &RequestPseudo::new("POST", "http", "upstream.example", "/grpc.Echo/Say"),
            &[
                Header::new("content-type", "application/grpc"),
                Header::new("te", "trailers"),
            ],
            false,
        )
        .unwrap();
    client.exchanges.insert(id, Exchange::default());
    client.uploads.insert(
        id,
        (
            b"\0\0\0\0\x03abc".to_vec(),
            0,
            Some(vec![Header::new("grpc-status", "0")]),
        ),
    );
    run(&mut h, &mut server, &mut client);
    let x = &client.exchanges[&id];
    assert_eq!(x.body, b"\0\0\0\0\x03abc");
    assert_eq!(x.trailers, vec![Header::new("grpc-status", "0")]);
}

#[test]
fn our_client_many_concurrent_streams_against_h2_server() {
    let (mut h, mut server) = client_harness();
    let mut client = OurClient::default();
    // Let the server's SETTINGS arrive first (its MAX_CONCURRENT_STREAMS).
    h.drive(|cx, conn| {
        server.step(cx);
        client.step(conn);
        if conn.can_open_stream() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let mut ids = Vec::new();
    for i in 0..80 {
        let id = h
            .ours
            .send_request(
                &RequestPseudo::new("POST", "http", "u", format!("/s/{i}")),
                &[],
                false,
            )
            .unwrap();
        client.exchanges.insert(id, Exchange::default());
        client
            .uploads
            .insert(id, (format!("body {i}").into_bytes(), 0, None));
        ids.push(id);
    }
    assert_eq!(h.ours.active_streams(), 80);
    run(&mut h, &mut server, &mut client);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(client.exchanges[id].body, format!("body {i}").as_bytes());
    }
    assert_eq!(h.ours.active_streams(), 0);
}
