//! The HTTP/2 frame layer: every frame type round-trips, decoding does not
//! depend on how the bytes were split, and malformed frames are errors with
//! the RFC 9113 code and scope.

use bytes::{Bytes, BytesMut};
use ouli_core::h2::frame::{Frame, FrameDecoder, FrameHeader, Priority, Setting, MAX_STREAM_ID};
use ouli_core::h2::{ErrorCode, ErrorScope, H2Error, MAX_FRAME_SIZE};
use proptest::prelude::*;

fn stream_id() -> impl Strategy<Value = u32> {
    1..=MAX_STREAM_ID
}

fn small_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn padding() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![Just(None), any::<u8>().prop_map(Some)]
}

fn priority_for(stream: u32) -> impl Strategy<Value = Priority> {
    (0..=MAX_STREAM_ID, any::<bool>(), any::<u8>()).prop_map(move |(d, exclusive, weight)| {
        Priority {
            dependency: if d == stream { d ^ 1 } else { d },
            exclusive,
            weight,
        }
    })
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (stream_id(), small_bytes(), any::<bool>(), padding()).prop_map(
            |(stream, data, end_stream, padding)| Frame::Data {
                stream,
                data,
                end_stream,
                padding
            }
        ),
        stream_id()
            .prop_flat_map(|stream| (
                Just(stream),
                proptest::option::of(priority_for(stream)),
                small_bytes(),
                any::<bool>(),
                any::<bool>(),
                padding()
            ))
            .prop_map(
                |(stream, priority, block, end_stream, end_headers, padding)| Frame::Headers {
                    stream,
                    priority,
                    block,
                    end_stream,
                    end_headers,
                    padding
                }
            ),
        stream_id()
            .prop_flat_map(|stream| (Just(stream), priority_for(stream)))
            .prop_map(|(stream, priority)| Frame::Priority { stream, priority }),
        (stream_id(), any::<u32>()).prop_map(|(stream, code)| Frame::RstStream {
            stream,
            code: ErrorCode(code)
        }),
        proptest::collection::vec((any::<u16>(), any::<u32>()), 0..10).prop_map(|p| {
            Frame::Settings {
                ack: false,
                params: p
                    .into_iter()
                    .map(|(id, value)| Setting { id, value })
                    .collect(),
            }
        }),
        Just(Frame::Settings {
            ack: true,
            params: vec![]
        }),
        (
            stream_id(),
            stream_id(),
            small_bytes(),
            any::<bool>(),
            padding()
        )
            .prop_map(|(stream, promised, block, end_headers, padding)| {
                Frame::PushPromise {
                    stream,
                    promised,
                    block,
                    end_headers,
                    padding,
                }
            }),
        (any::<bool>(), any::<[u8; 8]>()).prop_map(|(ack, payload)| Frame::Ping { ack, payload }),
        (0..=MAX_STREAM_ID, any::<u32>(), small_bytes()).prop_map(|(last_stream, code, debug)| {
            Frame::GoAway {
                last_stream,
                code: ErrorCode(code),
                debug,
            }
        }),
        (0..=MAX_STREAM_ID, 1..=MAX_STREAM_ID)
            .prop_map(|(stream, increment)| Frame::WindowUpdate { stream, increment }),
        (stream_id(), small_bytes(), any::<bool>()).prop_map(|(stream, block, end_headers)| {
            Frame::Continuation {
                stream,
                block,
                end_headers,
            }
        }),
        (10u8..=255, any::<u8>(), 0..=MAX_STREAM_ID, small_bytes()).prop_map(
            |(kind, flags, stream, payload)| Frame::Unknown {
                kind,
                flags,
                stream,
                payload
            }
        ),
    ]
}

fn decode_all(decoder: &mut FrameDecoder, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    while let Some(f) = decoder.decode(buf).expect("valid frames") {
        out.push(f);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every frame type: encode, then decode, gives the same frame.
    #[test]
    fn every_frame_type_round_trips(frame in frame_strategy()) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let header = FrameHeader::parse(&buf).unwrap();
        prop_assert_eq!(header.length as usize, buf.len() - 9);
        let mut decoder = FrameDecoder::new();
        let back = decoder.decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(back, frame);
        prop_assert!(buf.is_empty());
    }

    /// A run of frames split at arbitrary offsets decodes to the same frames.
    #[test]
    fn split_invariance(
        frames in proptest::collection::vec(frame_strategy(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let wire = wire.freeze();
        let mut offsets: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        offsets.push(0);
        offsets.push(wire.len());
        offsets.sort_unstable();
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for w in offsets.windows(2) {
            buf.extend_from_slice(&wire[w[0]..w[1]]);
            decode_all(&mut decoder, &mut buf, &mut out);
        }
        prop_assert_eq!(out, frames);
    }

    /// Arbitrary bytes: frames or errors, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }
}

fn raw(length: u32, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    FrameHeader {
        length,
        kind,
        flags,
        stream,
    }
    .write(&mut b);
    b.extend_from_slice(payload);
    b
}

fn err(buf: &mut BytesMut) -> H2Error {
    FrameDecoder::new().decode(buf).unwrap_err()
}

#[test]
fn oversized_frame_is_rejected_from_its_header_alone() {
    // Only the 9-byte header has arrived: the error does not wait for the payload.
    let mut buf = raw(MAX_FRAME_SIZE + 1, 0, 0, 1, &[]);
    let e = err(&mut buf);
    assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
    assert_eq!(e.scope, ErrorScope::Connection);
    // Exactly the limit is fine (once complete).
    let mut buf = raw(MAX_FRAME_SIZE, 0, 0, 1, &vec![0; MAX_FRAME_SIZE as usize]);
    assert!(FrameDecoder::new().decode(&mut buf).unwrap().is_some());
}

#[test]
fn structural_errors_carry_code_and_scope() {
    use ErrorCode as C;
    let conn = ErrorScope::Connection;
    let cases: Vec<(BytesMut, ErrorCode, ErrorScope)> = vec![
        (raw(0, 0x0, 0, 0, &[]), C::PROTOCOL_ERROR, conn), // DATA on 0
        (raw(0, 0x1, 0x4, 0, &[]), C::PROTOCOL_ERROR, conn), // HEADERS on 0
        (
            raw(4, 0x2, 0, 1, &[0; 4]),
            C::FRAME_SIZE_ERROR,
            ErrorScope::Stream(1),
        ), // PRIORITY len 4
        (
            raw(5, 0x2, 0, 3, &[0, 0, 0, 3, 0]),
            C::PROTOCOL_ERROR,
            ErrorScope::Stream(3),
        ), // depends on itself
        (raw(3, 0x3, 0, 1, &[0; 3]), C::FRAME_SIZE_ERROR, conn), // RST_STREAM len 3
        (raw(4, 0x3, 0, 0, &[0; 4]), C::PROTOCOL_ERROR, conn), // RST_STREAM on 0
        (raw(5, 0x4, 0, 0, &[0; 5]), C::FRAME_SIZE_ERROR, conn), // SETTINGS len 5
        (raw(6, 0x4, 0x1, 0, &[0; 6]), C::FRAME_SIZE_ERROR, conn), // SETTINGS ACK with payload
        (raw(0, 0x4, 0, 1, &[]), C::PROTOCOL_ERROR, conn), // SETTINGS on a stream
        (raw(7, 0x6, 0, 0, &[0; 7]), C::FRAME_SIZE_ERROR, conn), // PING len 7
        (raw(8, 0x6, 0, 1, &[0; 8]), C::PROTOCOL_ERROR, conn), // PING on a stream
        (raw(7, 0x7, 0, 0, &[0; 7]), C::FRAME_SIZE_ERROR, conn), // GOAWAY len 7
        (raw(8, 0x7, 0, 1, &[0; 8]), C::PROTOCOL_ERROR, conn), // GOAWAY on a stream
        (raw(3, 0x8, 0, 0, &[0; 3]), C::FRAME_SIZE_ERROR, conn), // WINDOW_UPDATE len 3
        (raw(4, 0x8, 0, 0, &[0; 4]), C::PROTOCOL_ERROR, conn), // increment 0 on the connection
        (
            raw(4, 0x8, 0, 1, &[0; 4]),
            C::PROTOCOL_ERROR,
            ErrorScope::Stream(1),
        ), // increment 0 on a stream
        (raw(0, 0x9, 0x4, 0, &[]), C::PROTOCOL_ERROR, conn), // CONTINUATION on 0
        (raw(3, 0x0, 0x8, 1, &[5, 0, 0]), C::PROTOCOL_ERROR, conn), // padding too long
        (raw(0, 0x0, 0x8, 1, &[]), C::FRAME_SIZE_ERROR, conn), // padded with no pad length
        (raw(3, 0x1, 0x24, 1, &[0; 3]), C::FRAME_SIZE_ERROR, conn), // HEADERS too short for priority
        (raw(3, 0x5, 0x4, 1, &[0; 3]), C::FRAME_SIZE_ERROR, conn),  // PUSH_PROMISE too short
    ];
    for (i, (mut buf, code, scope)) in cases.into_iter().enumerate() {
        let e = err(&mut buf);
        assert_eq!((e.code, e.scope), (code, scope), "case {i}: {e}");
        assert!(buf.is_empty(), "case {i}: a bad frame is consumed");
    }
}

#[test]
fn padding_equal_to_remaining_payload_is_allowed() {
    // Pad length 2 with 2 bytes after it: empty data.
    let mut buf = raw(3, 0x0, 0x9, 1, &[2, 0, 0]);
    let f = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        f,
        Frame::Data {
            stream: 1,
            data: Bytes::new(),
            end_stream: true,
            padding: Some(2)
        }
    );
}

#[test]
fn reserved_bit_is_ignored() {
    let mut buf = raw(8, 0x6, 0, 0, &[0; 8]);
    buf[5] |= 0x80;
    assert!(FrameDecoder::new().decode(&mut buf).unwrap().is_some());
}

#[test]
fn unknown_frame_types_parse_as_unknown() {
    let mut buf = raw(3, 0xfa, 0xff, 7, b"abc");
    let f = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
    assert!(matches!(f, Frame::Unknown { kind: 0xfa, .. }));
}
