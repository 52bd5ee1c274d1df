//! WebSocket targets: frames and messages, and the upgrade handshake.

use bytes::BytesMut;
use ouli_core::h1::{H1Limits, RequestDecoder, RequestEvent};
use ouli_core::store::{MessageKind, Peer};
use ouli_core::ws::{
    accept_key, is_upgrade_request, parse_close, validate_handshake, Frame, FrameDecoder,
    MessageAssembler, Opcode, WsError, WsLimits, MAX_CONTROL_PAYLOAD_BYTES,
};

/// Small limits, so that short inputs reach them.
fn tight_limits() -> WsLimits {
    WsLimits {
        max_frame_payload_bytes: 40,
        max_message_bytes: 64,
    }
}

type Outcome = (Vec<Frame>, Vec<(MessageKind, Vec<u8>)>, Option<WsError>);

fn run_frames(from: Peer, limits: WsLimits, input: &[u8], piece: usize) -> Outcome {
    let mut dec = FrameDecoder::new(from, limits);
    let mut assembler = MessageAssembler::new(limits.max_message_bytes);
    let mut frames = Vec::new();
    let mut messages = Vec::new();
    let mut buf = BytesMut::new();
    for part in input.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    check_frame(from, limits, &frame);
                    assert_eq!(before - buf.len(), frame.raw.len(), "raw is what was taken");
                    // The raw bytes decode, on their own, to the same frame.
                    let mut again = BytesMut::from(&frame.raw[..]);
                    let re = FrameDecoder::new(from, limits).decode(&mut again);
                    assert_eq!(re, Ok(Some(frame.clone())));
                    assert!(again.is_empty());
                    let data = matches!(
                        frame.opcode,
                        Opcode::Text | Opcode::Binary | Opcode::Continuation
                    );
                    match assembler.push(&frame) {
                        Ok(Some((kind, payload))) => {
                            assert!(data, "a control frame completed a message");
                            assert!(payload.len() <= limits.max_message_bytes);
                            if kind == MessageKind::Text {
                                assert!(std::str::from_utf8(&payload).is_ok());
                            }
                            messages.push((kind, payload.to_vec()));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            assert!(data, "a control frame broke message assembly");
                            frames.push(frame);
                            return (frames, messages, Some(e));
                        }
                    }
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    // A frame may be consumed before its close payload is
                    // found invalid: the session ends either way.
                    return (frames, messages, Some(e));
                }
            }
        }
    }
    (frames, messages, None)
}

fn check_frame(from: Peer, limits: WsLimits, frame: &Frame) {
    assert!(frame.payload.len() <= limits.max_frame_payload_bytes);
    assert!(frame.raw.len() >= 2 + frame.payload.len());
    let masked = frame.raw[1] & 0x80 != 0;
    assert_eq!(masked, from == Peer::Client, "masking rule of the peer");
    if matches!(frame.opcode, Opcode::Close | Opcode::Ping | Opcode::Pong) {
        assert!(frame.fin, "fragmented control frame accepted");
        assert!(frame.payload.len() <= MAX_CONTROL_PAYLOAD_BYTES);
    }
    if frame.opcode == Opcode::Close {
        assert!(
            parse_close(&frame.payload).is_ok(),
            "invalid close accepted"
        );
    }
    if !masked {
        assert!(
            frame.raw.ends_with(&frame.payload),
            "unmasked payload is the raw tail"
        );
    }
}

/// `FrameDecoder` and `MessageAssembler` over a stream of frames from one
/// peer. Config byte: piece size (bits 0-2), tight limits (bit 3), frames
/// from the server (bit 4) or the client.
pub fn ws_frame(data: &[u8]) {
    let (cfg, input) = crate::split_cfg(data);
    let from = if cfg & 0x10 != 0 {
        Peer::Server
    } else {
        Peer::Client
    };
    let limits = if cfg & 0x08 != 0 {
        tight_limits()
    } else {
        WsLimits::default()
    };
    let split = run_frames(from, limits, input, crate::piece_size(cfg));
    let whole = run_frames(from, limits, input, usize::MAX);
    assert_eq!(split, whole, "split input changed the frames or messages");
}

/// Requests parsed by `RequestDecoder`; every head goes through
/// `is_upgrade_request` and `validate_handshake`. Config byte: tight H1
/// limits (bit 3).
pub fn ws_handshake(data: &[u8]) {
    let (cfg, input) = crate::split_cfg(data);
    let limits = if cfg & 0x08 != 0 {
        crate::h1::tight_limits()
    } else {
        H1Limits::default()
    };
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    for _ in 0..2 * input.len() + 4 {
        match dec.decode_eof(&mut buf) {
            Ok(Some(RequestEvent::Head(head, _))) => {
                // Both must take any head without panicking; a key is only
                // returned for a well-formed one.
                let _ = is_upgrade_request(&head);
                match validate_handshake(&head) {
                    Ok(key) => {
                        assert_eq!(key.len(), 24, "16 bytes in base64 are 24 characters");
                        assert_eq!(accept_key(&key).len(), 28);
                        assert!(key.iter().all(|b| b.is_ascii_graphic()));
                    }
                    Err(e) => assert!(matches!(e.status(), 400 | 426)),
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("the request decoder produced more events than input bytes");
}
