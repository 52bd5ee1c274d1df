//! Version translation toward the upstream, with no sockets: an HTTP/1.1
//! client forwarded over HTTP/2 and an HTTP/2 client forwarded over
//! HTTP/1.1. The far ends are the core's own HTTP/2 connection (as the
//! upstream server or the client) and raw HTTP/1.1 bytes.

use bytes::Bytes;
use ouli_core::h2::conn::{Connection as H2, H2Event, RequestPseudo};
use ouli_core::message::Header;
use ouli_core::proxy::{
    Connection, Mode, Output, ProxyEvent, ProxySettings, UpstreamProtocol, UpstreamWire,
};
use ouli_core::store::{Framing, Interaction};
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
struct Collected {
    to_client: Vec<u8>,
    to_upstream: Vec<u8>,
    opened: usize,
    released: Vec<bool>,
    stored: Vec<Interaction>,
    events: Vec<ProxyEvent>,
}

fn drain(conn: &mut Connection, c: &mut Collected) {
    while let Some(o) = conn.poll_output() {
        match o {
            Output::ToClient(b) => c.to_client.extend_from_slice(&b),
            Output::ToUpstream(b) => c.to_upstream.extend_from_slice(&b),
            Output::OpenUpstream => c.opened += 1,
            Output::ReleaseUpstream { reusable } => c.released.push(reusable),
            Output::Store { interaction, .. } => c.stored.push(*interaction),
            Output::Event(e) => c.events.push(e),
            Output::CloseClient => {}
        }
    }
}

fn settings(protocol: UpstreamProtocol, tls: bool) -> Arc<ProxySettings> {
    let mut s = ProxySettings::new(Mode::Record, "api.example.com");
    s.upstream_protocol = protocol;
    s.upstream_tls = tls;
    Arc::new(s)
}

/// Moves what `from` queued for the peer into `to`.
fn pump_h2(from: &mut H2, to: &mut Vec<u8>) {
    while let Some(b) = from.poll_transmit() {
        to.extend_from_slice(&b);
    }
}

fn h(name: &'static str, value: &'static str) -> Header {
    Header::new(name, value)
}

#[test]
fn upstream_offer_follows_the_setting_the_client_and_tls() {
    use UpstreamWire::{Http1, H2 as Two};
    let t0 = Instant::now();
    let get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".as_slice();
    let ws = b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
               sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .as_slice();
    let cases: &[(UpstreamProtocol, bool, &[u8], &[UpstreamWire])] = &[
        (UpstreamProtocol::Http1, true, get, &[Http1]),
        (UpstreamProtocol::H2c, false, get, &[Two]),
        (UpstreamProtocol::H2, true, get, &[Two]),
        (UpstreamProtocol::Auto, false, get, &[Http1]),
        (UpstreamProtocol::Auto, true, get, &[Http1, Two]),
        // A WebSocket upgrade needs HTTP/1.1, whatever the setting.
        (UpstreamProtocol::H2c, false, ws, &[Http1]),
        (UpstreamProtocol::Auto, true, ws, &[Http1]),
    ];
    for (protocol, tls, request, offer) in cases {
        let mut conn = Connection::new(settings(*protocol, *tls), None, t0);
        conn.handle_client_bytes(t0, request);
        let mut c = Collected::default();
        drain(&mut conn, &mut c);
        assert_eq!(c.opened, 1);
        assert_eq!(conn.upstream_offer(), *offer, "{protocol:?} tls={tls}");
    }
    // An HTTP/2 client.
    for (protocol, tls, offer) in [
        (UpstreamProtocol::Auto, false, &[Two][..]),
        (UpstreamProtocol::Auto, true, &[Two, Http1][..]),
        (UpstreamProtocol::Http1, false, &[Http1][..]),
    ] {
        let mut conn = Connection::new(settings(protocol, tls), None, t0);
        let mut client = H2::client(t0);
        let mut bytes = Vec::new();
        pump_h2(&mut client, &mut bytes);
        conn.handle_client_bytes(t0, &bytes);
        assert_eq!(conn.upstream_offer(), offer, "{protocol:?} tls={tls}");
    }
}

/// An HTTP/1.1 client over an HTTP/2 upstream: the request becomes
/// HEADERS + DATA with `:authority` from the upstream authority; the answer
/// (no content-length, two DATA frames, trailers) goes back chunked with
/// the trailers, and is stored with its DATA frames as chunks. A second
/// request on the keep-alive connection reuses the upstream connection.
#[test]
fn http1_client_over_h2_upstream() {
    let t0 = Instant::now();
    let mut conn = Connection::new(settings(UpstreamProtocol::H2c, false), None, t0);
    let mut c = Collected::default();
    conn.handle_client_bytes(
        t0,
        b"POST /v1/items?x=1 HTTP/1.1\r\nHost: localhost:8080\r\ncontent-length: 5\r\n\
          x-ouli-test-name: t\r\naccept: */*\r\n\r\nhello",
    );
    drain(&mut conn, &mut c);
    assert_eq!(c.opened, 1);
    assert!(c.to_upstream.is_empty(), "nothing before the connection");
    conn.upstream_connected(t0);
    drain(&mut conn, &mut c);

    let mut upstream = H2::server(t0);
    upstream.handle_bytes(t0, &std::mem::take(&mut c.to_upstream));
    let mut got = Vec::new();
    while let Some(ev) = upstream.poll_event() {
        got.push(ev);
    }
    let (stream, pseudo, headers) = match &got[0] {
        H2Event::RequestHeaders {
            stream,
            pseudo,
            headers,
            end_stream: false,
        } => (*stream, pseudo.clone(), headers.clone()),
        other => panic!("expected the request head, got {other:?}"),
    };
    assert_eq!(
        pseudo,
        RequestPseudo::new("POST", "http", "api.example.com", "/v1/items?x=1")
    );
    let names: Vec<&[u8]> = headers.iter().map(|h| &h.name[..]).collect();
    assert!(
        !names.contains(&&b"host"[..]) && !names.contains(&&b"x-ouli-test-name"[..]),
        "{headers:?}"
    );
    assert!(matches!(
        &got[1],
        H2Event::Data { data, end_stream: true, .. } if &data[..] == b"hello"
    ));

    upstream
        .send_response(stream, 200, &[h("content-type", "text/plain")], false)
        .unwrap();
    upstream.send_data(stream, b"part one\n", false).unwrap();
    upstream.send_data(stream, b"part two\n", false).unwrap();
    upstream
        .send_trailers(stream, &[h("grpc-status", "0")])
        .unwrap();
    let mut answer = Vec::new();
    pump_h2(&mut upstream, &mut answer);
    conn.handle_upstream_bytes(t0, &answer);
    drain(&mut conn, &mut c);
    let text = String::from_utf8_lossy(&c.to_client).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(
        text.ends_with("9\r\npart one\n\r\n9\r\npart two\n\r\n0\r\ngrpc-status: 0\r\n\r\n"),
        "{text}"
    );
    assert_eq!(c.stored.len(), 1);
    let stored = &c.stored[0];
    assert_eq!(stored.response.framing, Framing::Chunked);
    assert_eq!(
        stored.response.chunks,
        vec![
            Bytes::from_static(b"part one\n"),
            Bytes::from_static(b"part two\n")
        ]
    );
    assert_eq!(stored.response.trailers, vec![h("grpc-status", "0")]);
    assert_eq!(&stored.request.body[..], b"hello");
    assert!(
        c.released.is_empty(),
        "the HTTP/2 upstream stays with the connection"
    );

    // The next request reuses the upstream connection: stream 3.
    c.to_client.clear();
    conn.handle_client_bytes(
        t0,
        b"GET /empty HTTP/1.1\r\nHost: x\r\nx-ouli-test-name: t\r\n\r\n",
    );
    drain(&mut conn, &mut c);
    assert_eq!(c.opened, 1, "no second upstream connection");
    upstream.handle_bytes(t0, &std::mem::take(&mut c.to_upstream));
    let mut second = None;
    while let Some(ev) = upstream.poll_event() {
        if let H2Event::RequestHeaders {
            stream, end_stream, ..
        } = ev
        {
            assert!(end_stream);
            second = Some(stream);
        }
    }
    assert_eq!(second, Some(3));
    // An answer that ends with its HEADERS: a 200 with an empty body.
    upstream.send_response(3, 200, &[], true).unwrap();
    let mut answer = Vec::new();
    pump_h2(&mut upstream, &mut answer);
    conn.handle_upstream_bytes(t0, &answer);
    drain(&mut conn, &mut c);
    let text = String::from_utf8_lossy(&c.to_client).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.ends_with("content-length: 0\r\n\r\n"),
        "{text}"
    );
    assert_eq!(c.stored[1].response.framing, Framing::Length);
    assert!(c.stored[1].response.chunks.is_empty());
}

/// A stream reset by the HTTP/2 upstream before its answer is a 502 naming
/// the reset; the upstream connection is let go.
#[test]
fn http2_upstream_reset_is_a_502() {
    let t0 = Instant::now();
    let mut conn = Connection::new(settings(UpstreamProtocol::H2c, false), None, t0);
    let mut c = Collected::default();
    conn.handle_client_bytes(t0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    drain(&mut conn, &mut c);
    conn.upstream_connected(t0);
    drain(&mut conn, &mut c);
    let mut upstream = H2::server(t0);
    upstream.handle_bytes(t0, &std::mem::take(&mut c.to_upstream));
    while upstream.poll_event().is_some() {}
    upstream.reset(1, ouli_core::h2::ErrorCode::INTERNAL_ERROR);
    let mut answer = Vec::new();
    pump_h2(&mut upstream, &mut answer);
    conn.handle_upstream_bytes(t0, &answer);
    drain(&mut conn, &mut c);
    let text = String::from_utf8_lossy(&c.to_client).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 502 ") && text.contains("reset the HTTP/2 stream"),
        "{text}"
    );
    assert_eq!(c.released, vec![false]);
    assert!(c.stored.is_empty());
}

/// An HTTP/2 client over an HTTP/1.1 upstream: the stream's request goes
/// out as HTTP/1.1 (Host from the upstream authority, `TE: trailers`
/// asked for); the chunked answer with trailers comes back as HEADERS,
/// DATA and a trailer section, and is stored chunked with its trailers.
/// Two streams go over the one upstream connection in turn.
#[test]
fn h2_client_over_http1_upstream() {
    let t0 = Instant::now();
    let mut conn = Connection::new(settings(UpstreamProtocol::Http1, false), None, t0);
    let mut c = Collected::default();
    let mut client = H2::client(t0);
    let pseudo = RequestPseudo::new("GET", "http", "localhost:8080", "/a");
    let s1 = client
        .send_request(&pseudo, &[h("x-ouli-test-name", "t")], true)
        .unwrap();
    let pseudo = RequestPseudo::new("GET", "http", "localhost:8080", "/b");
    let s3 = client
        .send_request(
            &pseudo,
            &[
                h("x-ouli-test-name", "t"),
                h("cookie", "a=1"),
                h("accept", "*/*"),
                h("cookie", "b=2"),
            ],
            true,
        )
        .unwrap();
    let mut bytes = Vec::new();
    pump_h2(&mut client, &mut bytes);
    conn.handle_client_bytes(t0, &bytes);
    drain(&mut conn, &mut c);
    assert_eq!(c.opened, 1);
    conn.upstream_connected(t0);
    drain(&mut conn, &mut c);
    let sent = String::from_utf8_lossy(&std::mem::take(&mut c.to_upstream)).into_owned();
    assert!(
        sent.starts_with("GET /a HTTP/1.1\r\nhost: api.example.com\r\n"),
        "{sent}"
    );
    assert!(sent.contains("te: trailers\r\n"), "{sent}");
    assert!(!sent.contains("GET /b"), "one exchange at a time: {sent}");

    conn.handle_upstream_bytes(
        t0,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n\
          3\r\nabc\r\n2\r\nde\r\n0\r\ngrpc-status: 0\r\n\r\n",
    );
    drain(&mut conn, &mut c);
    let sent = String::from_utf8_lossy(&std::mem::take(&mut c.to_upstream)).into_owned();
    assert!(sent.starts_with("GET /b HTTP/1.1\r\n"), "{sent}");
    // HTTP/2's split cookie fields travel as one HTTP/1.1 field.
    assert!(
        sent.contains("cookie: a=1; b=2\r\naccept: */*\r\n") && sent.matches("cookie").count() == 1,
        "{sent}"
    );
    conn.handle_upstream_bytes(t0, b"HTTP/1.1 204 No Content\r\n\r\n");
    drain(&mut conn, &mut c);

    client.handle_bytes(t0, &c.to_client);
    let mut body = Vec::new();
    let mut trailers = None;
    let mut statuses = Vec::new();
    while let Some(ev) = client.poll_event() {
        match ev {
            H2Event::ResponseHeaders {
                stream,
                status,
                headers,
                end_stream,
            } => {
                statuses.push((stream, status, end_stream));
                assert!(
                    !headers.iter().any(|h| h.is("transfer-encoding")),
                    "{headers:?}"
                );
            }
            H2Event::Data { stream, data, .. } if stream == s1 => body.extend_from_slice(&data),
            H2Event::Trailers { stream, headers } if stream == s1 => trailers = Some(headers),
            _ => {}
        }
    }
    assert_eq!(statuses, vec![(s1, 200, false), (s3, 204, true)]);
    assert_eq!(body, b"abcde");
    assert_eq!(trailers, Some(vec![h("grpc-status", "0")]));
    assert_eq!(c.stored.len(), 2);
    assert_eq!(c.stored[0].response.framing, Framing::Chunked);
    assert_eq!(
        c.stored[0].response.chunks,
        vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]
    );
    assert_eq!(c.stored[0].response.trailers, vec![h("grpc-status", "0")]);
    assert_eq!(c.stored[1].response.framing, Framing::None);
    assert_eq!(c.opened, 1, "the keep-alive upstream carried both");
}

/// An HTTP/1.1 upstream that breaks the protocol mid-way: the stream gets a
/// 502, and the next stream opens a new connection.
#[test]
fn h2_client_over_broken_http1_upstream() {
    let t0 = Instant::now();
    let mut conn = Connection::new(settings(UpstreamProtocol::Http1, false), None, t0);
    let mut c = Collected::default();
    let mut client = H2::client(t0);
    let pseudo = RequestPseudo::new("GET", "http", "x", "/a");
    client.send_request(&pseudo, &[], true).unwrap();
    let mut bytes = Vec::new();
    pump_h2(&mut client, &mut bytes);
    conn.handle_client_bytes(t0, &bytes);
    drain(&mut conn, &mut c);
    conn.upstream_connected(t0);
    drain(&mut conn, &mut c);
    conn.handle_upstream_bytes(t0, b"NOT HTTP AT ALL\r\n\r\n");
    drain(&mut conn, &mut c);
    assert_eq!(c.released, vec![false]);
    client.handle_bytes(t0, &c.to_client);
    let mut status = None;
    while let Some(ev) = client.poll_event() {
        if let H2Event::ResponseHeaders { status: s, .. } = ev {
            status = Some(s);
        }
    }
    assert_eq!(status, Some(502));
    assert!(c
        .events
        .iter()
        .any(|e| matches!(e, ProxyEvent::UpstreamError { status: 502, .. })));
}

/// The adapter reporting a protocol that was not offered is refused (a
/// 502), never spoken.
#[test]
fn a_wire_not_offered_is_refused() {
    let t0 = Instant::now();
    let mut conn = Connection::new(settings(UpstreamProtocol::Http1, false), None, t0);
    let mut c = Collected::default();
    conn.handle_client_bytes(t0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    drain(&mut conn, &mut c);
    conn.upstream_connected_as(t0, UpstreamWire::H2);
    drain(&mut conn, &mut c);
    assert!(c.to_upstream.is_empty());
    assert!(String::from_utf8_lossy(&c.to_client).starts_with("HTTP/1.1 502 "));
}

/// A request the HTTP/2 upstream refused unprocessed (GOAWAY below its
/// stream, or REFUSED_STREAM) is sent again on a new connection, at most
/// `MAX_REFUSED_RETRIES` times; then the client gets the 502.
#[test]
fn refused_requests_go_again_on_a_new_connection() {
    use ouli_core::h2::ErrorCode;
    use ouli_core::proxy::MAX_REFUSED_RETRIES;
    let t0 = Instant::now();
    let mut conn = Connection::new(settings(UpstreamProtocol::H2c, false), None, t0);
    let mut c = Collected::default();
    conn.handle_client_bytes(t0, b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n");
    drain(&mut conn, &mut c);
    // Refused by GOAWAY, then by REFUSED_STREAM, then answered.
    for refusal in 0..3 {
        assert_eq!(c.opened, refusal + 1);
        conn.upstream_connected(t0);
        drain(&mut conn, &mut c);
        let mut upstream = H2::server(t0);
        upstream.handle_bytes(t0, &std::mem::take(&mut c.to_upstream));
        let mut stream = None;
        while let Some(ev) = upstream.poll_event() {
            if let H2Event::RequestHeaders { stream: s, .. } = ev {
                stream = Some(s);
            }
        }
        let stream = stream.expect("the request arrives on each connection");
        match refusal {
            0 => upstream.go_away(ErrorCode::NO_ERROR),
            1 => {
                upstream.reset(stream, ErrorCode::REFUSED_STREAM);
            }
            _ => {
                upstream.send_response(stream, 200, &[], false).unwrap();
                upstream.send_data(stream, b"third time", true).unwrap();
            }
        }
        let mut answer = Vec::new();
        pump_h2(&mut upstream, &mut answer);
        if refusal == 0 {
            // A graceful GOAWAY that processed nothing (last stream 0).
            answer.clear();
            let mut goaway = bytes::BytesMut::new();
            ouli_core::h2::frame::Frame::Settings {
                ack: false,
                params: vec![],
            }
            .encode(&mut goaway);
            ouli_core::h2::frame::Frame::GoAway {
                last_stream: 0,
                code: ErrorCode::NO_ERROR,
                debug: Bytes::new(),
            }
            .encode(&mut goaway);
            answer.extend_from_slice(&goaway);
        }
        conn.handle_upstream_bytes(t0, &answer);
        drain(&mut conn, &mut c);
    }
    let text = String::from_utf8_lossy(&c.to_client).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.ends_with("a\r\nthird time\r\n0\r\n\r\n"),
        "{text}"
    );
    assert_eq!(c.stored.len(), 1);

    // Refused every time: 502 after the retries.
    let mut conn = Connection::new(settings(UpstreamProtocol::H2c, false), None, t0);
    let mut c = Collected::default();
    conn.handle_client_bytes(t0, b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
    drain(&mut conn, &mut c);
    for _ in 0..=MAX_REFUSED_RETRIES {
        conn.upstream_connected(t0);
        drain(&mut conn, &mut c);
        let mut upstream = H2::server(t0);
        upstream.handle_bytes(t0, &std::mem::take(&mut c.to_upstream));
        while upstream.poll_event().is_some() {}
        upstream.reset(1, ErrorCode::REFUSED_STREAM);
        let mut answer = Vec::new();
        pump_h2(&mut upstream, &mut answer);
        conn.handle_upstream_bytes(t0, &answer);
        drain(&mut conn, &mut c);
    }
    assert_eq!(c.opened, usize::from(MAX_REFUSED_RETRIES) + 1);
    let text = String::from_utf8_lossy(&c.to_client).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 502 ") && text.contains("REFUSED_STREAM"),
        "{text}"
    );
}
