//! HTTP/2 targets: frames, HPACK, and a server connection.

use bytes::BytesMut;
use ouli_core::h2::conn::{Connection, H2Event};
use ouli_core::h2::frame::{Frame, FrameDecoder};
use ouli_core::h2::hpack::{entry_size, Decoder, Encoder};
use ouli_core::h2::{ErrorScope, PREFACE};
use ouli_core::message::Header;
use std::time::{Duration, Instant};

fn run_frames(input: &[u8], piece: usize, max_frame: u32) -> Vec<Result<Frame, String>> {
    let mut dec = FrameDecoder::new();
    dec.set_max_frame_size(max_frame);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in input.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // Re-encoding gives bytes that decode to the same frame.
                    let mut wire = BytesMut::new();
                    frame.encode(&mut wire);
                    let mut again = FrameDecoder::new();
                    again.set_max_frame_size(u32::MAX >> 8);
                    assert_eq!(again.decode(&mut wire), Ok(Some(frame.clone())));
                    assert!(wire.is_empty(), "encode wrote more than one frame");
                    out.push(Ok(frame));
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(format!("{e:?}")));
                    if e.scope == ErrorScope::Connection {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// HTTP/2 `FrameDecoder` over a stream of frames; every frame re-encodes
/// to itself. Config byte: piece size (bits 0-2), a 64-byte
/// SETTINGS_MAX_FRAME_SIZE instead of the default (bit 3).
pub fn h2_frame(data: &[u8]) {
    let (cfg, input) = crate::split_cfg(data);
    let max = if cfg & 0x08 != 0 {
        64
    } else {
        ouli_core::h2::MAX_FRAME_SIZE
    };
    let split = run_frames(input, crate::piece_size(cfg), max);
    let whole = run_frames(input, usize::MAX, max);
    assert_eq!(split, whole, "split input changed the frames");
}

/// HPACK `Decoder` over several header blocks sharing one dynamic table.
/// Input: config byte (bit 0: 256-byte table instead of 4096; bit 1: a
/// 1 KiB header-list limit), then blocks, each a length byte and that many
/// bytes. Each decoded list must fit the limits, and must survive our
/// encoder and a fresh decoder unchanged.
pub fn hpack_decode(data: &[u8]) {
    let (cfg, mut rest) = crate::split_cfg(data);
    let table = if cfg & 1 != 0 { 256 } else { 4096 };
    let list_limit = if cfg & 2 != 0 { 1024 } else { usize::MAX };
    let mut dec = Decoder::new(table);
    if cfg & 2 != 0 {
        dec.set_max_header_list_bytes(list_limit);
    }
    let mut enc = Encoder::with_dynamic_table(table);
    let mut mirror = Decoder::new(table);
    while let Some((&len, tail)) = rest.split_first() {
        let (block, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        let headers = match dec.decode(block) {
            Ok(h) => h,
            Err(_) => return, // a connection error: the decoder is done
        };
        assert!(dec.table().size() <= dec.table().max_size());
        assert!(dec.table().max_size() <= table);
        let list: usize = headers.iter().map(entry_size).sum();
        assert!(list <= list_limit, "header list over the limit");
        let mut wire = BytesMut::new();
        enc.encode(headers.iter(), &mut wire);
        match mirror.decode(&wire) {
            Ok(back) => assert_eq!(back, headers, "our encoder and decoder disagree"),
            Err(e) => panic!("our decoder refuses our encoder's block: {e:?}"),
        }
    }
}

/// An HTTP/2 server `Connection` fed the client preface, then the input
/// in pieces; the "application" answers every request and releases every
/// DATA it gets. Config byte: piece size (bits 0-2), ticks of 4 s between
/// pieces (bit 3), answer with a body (bit 4).
pub fn h2_connection(data: &[u8]) {
    let (cfg, input) = crate::split_cfg(data);
    let t0 = Instant::now();
    let mut now = t0;
    let mut conn = Connection::server(t0);
    conn.handle_bytes(now, PREFACE);
    let mut sent = 0usize;
    let mut closed_event = false;
    for part in input.chunks(crate::piece_size(cfg).max(1)) {
        if cfg & 0x08 != 0 {
            now += Duration::from_secs(4);
            conn.handle_timeout(now);
        }
        conn.handle_bytes(now, part);
        while let Some(ev) = conn.poll_event() {
            assert!(!closed_event, "event after ConnectionError");
            match ev {
                H2Event::RequestHeaders {
                    stream, end_stream, ..
                } => {
                    let body = cfg & 0x10 != 0;
                    let ok = [Header::new("content-type", "text/plain")];
                    if conn.send_response(stream, 200, &ok, !body).is_ok() && body {
                        let _ = conn.send_data(stream, b"hello", end_stream);
                    }
                }
                H2Event::Data { stream, data, .. } => conn.release_capacity(stream, data.len()),
                H2Event::ConnectionError(_) => closed_event = true,
                _ => {}
            }
        }
        while let Some(bytes) = conn.poll_transmit() {
            sent += bytes.len();
        }
        if let Some(at) = conn.poll_timeout() {
            assert!(
                at > now || cfg & 0x08 == 0,
                "deadline in the past after handle_timeout"
            );
        }
    }
    conn.handle_eof(now);
    while conn.poll_event().is_some() {}
    let _ = sent;
}
