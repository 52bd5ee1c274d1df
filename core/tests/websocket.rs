//! A WebSocket conversation recorded through the core against a scripted
//! upstream, then replayed, with no sockets.

use bytes::BytesMut;
use ouli_core::engine::ReplayIndex;
use ouli_core::proxy::{Connection, Mode, Output, ProxyEvent, ProxySettings};
use ouli_core::store::{Interaction, MessageKind, Peer, Recording};
use ouli_core::ws::{accept_key, encode_close, encode_frame, FrameDecoder, Opcode, WsLimits};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn handshake(key: &str) -> Vec<u8> {
    format!(
        "GET /chat?room=1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nX-Ouli-Test-Name: ws\r\n\r\n"
    )
    .into_bytes()
}

fn client(op: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(op, fin, payload, Some([9, 8, 7, 6]), &mut b);
    b.to_vec()
}

fn server(op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(op, true, payload, None, &mut b);
    b.to_vec()
}

#[derive(Default)]
struct Seen {
    to_client: Vec<u8>,
    to_upstream: Vec<u8>,
    stored: Vec<Interaction>,
    events: Vec<ProxyEvent>,
    closed: bool,
}

fn drain(conn: &mut Connection, seen: &mut Seen) {
    while let Some(o) = conn.poll_output() {
        match o {
            Output::ToClient(b) => seen.to_client.extend_from_slice(&b),
            Output::ToUpstream(b) => seen.to_upstream.extend_from_slice(&b),
            Output::Store { interaction, .. } => seen.stored.push(*interaction),
            Output::Event(e) => seen.events.push(e),
            Output::CloseClient => seen.closed = true,
            Output::OpenUpstream | Output::ReleaseUpstream { .. } => {}
        }
    }
}

fn server_frames(bytes: &[u8]) -> Vec<(Opcode, Vec<u8>)> {
    let mut buf = BytesMut::from(bytes);
    let mut dec = FrameDecoder::new(Peer::Server, WsLimits::default());
    let mut out = Vec::new();
    while let Ok(Some(f)) = dec.decode(&mut buf) {
        out.push((f.opcode, f.payload.to_vec()));
    }
    out
}

fn record_conversation() -> Interaction {
    let t0 = Instant::now();
    let mut conn = Connection::new(
        Arc::new(ProxySettings::new(Mode::Record, "api.example.com")),
        None,
        t0,
    );
    let mut seen = Seen::default();
    conn.handle_client_bytes(t0, &handshake(KEY));
    conn.upstream_connected(t0);
    drain(&mut conn, &mut seen);
    let forwarded = String::from_utf8_lossy(&seen.to_upstream).to_string();
    assert!(
        forwarded.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        "{forwarded}"
    );
    assert!(
        forwarded.contains("Upgrade: websocket\r\n")
            && forwarded.contains("Connection: Upgrade\r\n"),
        "{forwarded}"
    );
    assert!(
        !forwarded.contains("permessage-deflate"),
        "deflate is never offered upstream: {forwarded}"
    );
    assert!(!forwarded.contains("X-Ouli-Test-Name"), "{forwarded}");
    seen.to_upstream.clear();

    let mut upstream = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
        accept_key(KEY.as_bytes())
    )
    .into_bytes();
    upstream.extend(server(Opcode::Text, b"welcome"));
    conn.handle_upstream_bytes(t0, &upstream);
    drain(&mut conn, &mut seen);
    let to_client = String::from_utf8_lossy(&seen.to_client).to_string();
    assert!(
        to_client.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{to_client}"
    );
    assert!(
        to_client.contains("Sec-WebSocket-Protocol: chat\r\n"),
        "{to_client}"
    );

    // A fragmented client message with a ping in the middle, then a binary one.
    let t1 = t0 + Duration::from_millis(25);
    let mut c = client(Opcode::Text, false, b"hel");
    c.extend(client(Opcode::Ping, true, b"p"));
    c.extend(client(Opcode::Continuation, true, b"lo"));
    conn.handle_client_bytes(t1, &c);
    drain(&mut conn, &mut seen);
    assert_eq!(seen.to_upstream, c, "client frames pass through unchanged");
    conn.handle_upstream_bytes(t1, &server(Opcode::Pong, b"p"));
    conn.handle_upstream_bytes(t1, &server(Opcode::Text, b"echo: hello"));
    conn.handle_upstream_bytes(t1, &server(Opcode::Binary, &[0, 159, 255]));
    let mut close = BytesMut::new();
    encode_close(1000, "bye", Some([1, 1, 1, 1]), &mut close);
    conn.handle_client_bytes(t1, &close);
    let mut echo = BytesMut::new();
    encode_close(1000, "bye", None, &mut echo);
    conn.handle_upstream_bytes(t1, &echo);
    drain(&mut conn, &mut seen);
    assert!(seen.closed, "both closes crossed: the connection ends");
    assert_eq!(seen.stored.len(), 1);
    seen.stored.remove(0)
}

#[test]
fn conversation_is_recorded_in_order_with_close() {
    let it = record_conversation();
    assert_eq!(it.response.status, 101);
    let ws = it.websocket.as_ref().expect("conversation stored");
    let got: Vec<(Peer, MessageKind, &[u8])> = ws
        .messages
        .iter()
        .map(|m| (m.from, m.kind, &m.payload[..]))
        .collect();
    assert_eq!(
        got,
        vec![
            (Peer::Server, MessageKind::Text, &b"welcome"[..]),
            (Peer::Client, MessageKind::Text, &b"hello"[..]),
            (Peer::Server, MessageKind::Text, &b"echo: hello"[..]),
            (Peer::Server, MessageKind::Binary, &[0u8, 159, 255][..]),
        ]
    );
    assert_eq!(ws.messages[1].at_ms, 25);
    let close = ws.close.as_ref().unwrap();
    assert_eq!(
        (close.from, close.code, &close.reason[..]),
        (Peer::Client, Some(1000), &b"bye"[..])
    );
    // The stored file round-trips.
    let mut rec = Recording::new("ws");
    rec.interactions.push(it);
    assert_eq!(Recording::from_json(&rec.to_json()).unwrap(), rec);
}

fn replay_conn(timing: ouli_core::proxy::ReplayTiming) -> (Connection, Instant) {
    let mut rec = Recording::new("ws");
    rec.interactions.push(record_conversation());
    let mut settings = ProxySettings::new(Mode::Replay, "api.example.com");
    settings.ws_replay_timing = timing;
    let t0 = Instant::now();
    let conn = Connection::new(
        Arc::new(settings),
        Some(Arc::new(ReplayIndex::new([rec]))),
        t0,
    );
    (conn, t0)
}

#[test]
fn replay_plays_the_conversation_and_answers_the_live_key() {
    let (mut conn, t0) = replay_conn(Default::default());
    let mut seen = Seen::default();
    let live_key = "AQIDBAUGBwgJCgsMDQ4PEA==";
    conn.handle_client_bytes(t0, &handshake(live_key));
    drain(&mut conn, &mut seen);
    let text = String::from_utf8_lossy(&seen.to_client).to_string();
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    assert!(
        text.contains(&format!(
            "Sec-WebSocket-Accept: {}\r\n",
            accept_key(live_key.as_bytes())
        )),
        "{text}"
    );
    assert_eq!(
        server_frames(&seen.to_client[head_end..]),
        vec![(Opcode::Text, b"welcome".to_vec())]
    );
    seen.to_client.clear();

    // The client sends the recorded message split differently, with a ping.
    let mut c = client(Opcode::Text, false, b"h");
    c.extend(client(Opcode::Ping, true, b"x"));
    c.extend(client(Opcode::Continuation, true, b"ello"));
    conn.handle_client_bytes(t0, &c);
    drain(&mut conn, &mut seen);
    assert_eq!(
        server_frames(&seen.to_client),
        vec![
            (Opcode::Pong, b"x".to_vec()),
            (Opcode::Text, b"echo: hello".to_vec()),
            (Opcode::Binary, vec![0, 159, 255]),
        ]
    );
    seen.to_client.clear();
    let mut close = BytesMut::new();
    encode_close(1000, "bye", Some([2, 2, 2, 2]), &mut close);
    conn.handle_client_bytes(t0, &close);
    drain(&mut conn, &mut seen);
    assert_eq!(
        server_frames(&seen.to_client),
        vec![(Opcode::Close, [&1000u16.to_be_bytes()[..], b"bye"].concat())]
    );
    assert!(seen.closed);
}

#[test]
fn mismatching_message_is_closed_with_1008_and_counted_as_a_miss() {
    let (mut conn, t0) = replay_conn(Default::default());
    let mut seen = Seen::default();
    conn.handle_client_bytes(t0, &handshake(KEY));
    drain(&mut conn, &mut seen);
    seen.to_client.clear();
    conn.handle_client_bytes(t0, &client(Opcode::Text, true, b"goodbye"));
    drain(&mut conn, &mut seen);
    let frames = server_frames(&seen.to_client);
    assert_eq!(frames.len(), 1);
    let (op, payload) = &frames[0];
    assert_eq!(*op, Opcode::Close);
    assert_eq!(&payload[..2], &1008u16.to_be_bytes());
    let reason = String::from_utf8_lossy(&payload[2..]);
    assert!(
        reason.contains("expected text \"hello\"") && reason.contains("got text \"goodbye\""),
        "{reason}"
    );
    assert!(seen
        .events
        .iter()
        .any(|e| matches!(e, ProxyEvent::Missed(_))));
    assert!(seen.closed);
}

#[test]
fn recorded_timing_paces_server_messages() {
    let (mut conn, t0) = replay_conn(ouli_core::proxy::ReplayTiming::Recorded);
    let mut seen = Seen::default();
    conn.handle_client_bytes(t0, &handshake(KEY));
    drain(&mut conn, &mut seen);
    seen.to_client.clear();
    conn.handle_client_bytes(t0, &client(Opcode::Text, true, b"hello"));
    drain(&mut conn, &mut seen);
    // Recorded: the echo came at the same millisecond as the client message.
    assert_eq!(server_frames(&seen.to_client).len(), 2);
    assert_eq!(conn.poll_timeout(), None);

    // A server message recorded 500 ms after the open waits for its time.
    let mut it = record_conversation();
    it.websocket.as_mut().unwrap().messages[0].at_ms = 500;
    let mut rec = Recording::new("ws");
    rec.interactions.push(it);
    let mut settings = ProxySettings::new(Mode::Replay, "api.example.com");
    settings.ws_replay_timing = ouli_core::proxy::ReplayTiming::Recorded;
    let t0 = Instant::now();
    let mut conn = Connection::new(
        Arc::new(settings),
        Some(Arc::new(ReplayIndex::new([rec]))),
        t0,
    );
    let mut seen = Seen::default();
    conn.handle_client_bytes(t0, &handshake(KEY));
    drain(&mut conn, &mut seen);
    let head_end = seen
        .to_client
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    assert!(
        server_frames(&seen.to_client[head_end..]).is_empty(),
        "not before its time"
    );
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    conn.handle_timeout(t0 + Duration::from_millis(500));
    drain(&mut conn, &mut seen);
    assert_eq!(
        server_frames(&seen.to_client[head_end..]),
        vec![(Opcode::Text, b"welcome".to_vec())]
    );
}

#[test]
fn hostile_client_frames_get_their_close_codes() {
    for (frame, code) in [
        (server(Opcode::Text, b"unmasked"), 1002u16),
        (client(Opcode::Ping, true, &[0; 126]), 1002),
        (client(Opcode::Ping, false, b"x"), 1002),
        (client(Opcode::Text, true, &[0xff, 0xfe]), 1007),
        (
            {
                let mut f = client(Opcode::Text, true, b"x");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        (
            {
                let mut f = client(Opcode::Text, true, b"x");
                f[0] = (f[0] & 0xf0) | 0xb;
                f
            },
            1002,
        ),
    ] {
        let (mut conn, t0) = replay_conn(Default::default());
        let mut seen = Seen::default();
        conn.handle_client_bytes(t0, &handshake(KEY));
        drain(&mut conn, &mut seen);
        seen.to_client.clear();
        conn.handle_client_bytes(t0, &frame);
        drain(&mut conn, &mut seen);
        let frames = server_frames(&seen.to_client);
        assert_eq!(frames.last().map(|f| f.0), Some(Opcode::Close), "{frame:?}");
        assert_eq!(
            &frames.last().unwrap().1[..2],
            &code.to_be_bytes(),
            "{frame:?}"
        );
        assert!(seen.closed);
    }
    // Over the frame size limit.
    let mut rec = Recording::new("ws");
    rec.interactions.push(record_conversation());
    let mut settings = ProxySettings::new(Mode::Replay, "x");
    settings.ws_limits.max_frame_payload_bytes = 10;
    let t0 = Instant::now();
    let mut conn = Connection::new(
        Arc::new(settings),
        Some(Arc::new(ReplayIndex::new([rec]))),
        t0,
    );
    let mut seen = Seen::default();
    conn.handle_client_bytes(t0, &handshake(KEY));
    drain(&mut conn, &mut seen);
    seen.to_client.clear();
    conn.handle_client_bytes(t0, &client(Opcode::Binary, true, &[1; 11]));
    drain(&mut conn, &mut seen);
    assert_eq!(
        &server_frames(&seen.to_client)[0].1[..2],
        &1009u16.to_be_bytes()
    );
}
