//! HPACK (RFC 7541): the RFC's Appendix C examples decode and encode byte
//! for byte; header lists round-trip; the `h2` crate's encoder is the
//! differential oracle; arbitrary bytes never panic the decoder.

use bytes::BytesMut;
use ouli_core::h2::hpack::{Decoder, Encoder, HpackError, Huffman};
use ouli_core::message::Header;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn list(pairs: &[(&str, &str)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(n, v)| Header::new(n.to_string(), v.to_string()))
        .collect()
}

/// Encodes `headers` with `enc` and checks the bytes, then decodes them
/// with `dec` and checks the list and the dynamic table size.
fn check(enc: &mut Encoder, dec: &mut Decoder, headers: &[Header], wire: &str, table_size: usize) {
    let mut out = BytesMut::new();
    enc.encode(headers, &mut out);
    assert_eq!(&out[..], &hex(wire)[..], "encoding of {headers:?}");
    let decoded = dec.decode(&hex(wire)).expect("decodes");
    assert_eq!(decoded, headers);
    assert_eq!(dec.table().size(), table_size);
}

#[test]
fn rfc7541_c2_1_literal_with_indexing() {
    let mut enc = Encoder::with_dynamic_table(4096);
    enc.set_huffman(Huffman::Never);
    let mut dec = Decoder::new(4096);
    check(
        &mut enc,
        &mut dec,
        &list(&[("custom-key", "custom-header")]),
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        55,
    );
}

#[test]
fn rfc7541_c2_2_literal_without_indexing() {
    let mut enc = Encoder::new();
    enc.set_huffman(Huffman::Never);
    let mut dec = Decoder::new(4096);
    check(
        &mut enc,
        &mut dec,
        &list(&[(":path", "/sample/path")]),
        "040c 2f73 616d 706c 652f 7061 7468",
        0,
    );
}

#[test]
fn rfc7541_c2_3_literal_never_indexed() {
    let mut enc = Encoder::new();
    enc.set_huffman(Huffman::Never);
    let mut out = BytesMut::new();
    let h = Header::new("password", "secret");
    enc.encode_never_indexed(&h, &mut out);
    let wire = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    assert_eq!(&out[..], &wire[..]);
    let mut dec = Decoder::new(4096);
    assert_eq!(dec.decode(&wire).unwrap(), vec![h]);
    assert_eq!(dec.table().size(), 0);
}

#[test]
fn rfc7541_c2_4_indexed() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    check(&mut enc, &mut dec, &list(&[(":method", "GET")]), "82", 0);
}

fn requests() -> [Vec<Header>; 3] {
    [
        list(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ]),
        list(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ]),
        list(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ]),
    ]
}

fn responses() -> [Vec<Header>; 3] {
    [
        list(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ]),
        list(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ]),
        list(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ]),
    ]
}

#[test]
fn rfc7541_c3_requests_without_huffman() {
    let mut enc = Encoder::with_dynamic_table(4096);
    enc.set_huffman(Huffman::Never);
    let mut dec = Decoder::new(4096);
    let [r1, r2, r3] = requests();
    check(
        &mut enc,
        &mut dec,
        &r1,
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        57,
    );
    check(
        &mut enc,
        &mut dec,
        &r2,
        "8286 84be 5808 6e6f 2d63 6163 6865",
        110,
    );
    check(
        &mut enc,
        &mut dec,
        &r3,
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        164,
    );
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    let mut enc = Encoder::with_dynamic_table(4096);
    let mut dec = Decoder::new(4096);
    let [r1, r2, r3] = requests();
    check(
        &mut enc,
        &mut dec,
        &r1,
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        57,
    );
    check(
        &mut enc,
        &mut dec,
        &r2,
        "8286 84be 5886 a8eb 1064 9cbf",
        110,
    );
    check(
        &mut enc,
        &mut dec,
        &r3,
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        164,
    );
}

#[test]
fn rfc7541_c5_responses_without_huffman() {
    let mut enc = Encoder::with_dynamic_table(256);
    enc.set_huffman(Huffman::Never);
    let mut dec = Decoder::new(256);
    let [r1, r2, r3] = responses();
    check(
        &mut enc,
        &mut dec,
        &r1,
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        222,
    );
    check(&mut enc, &mut dec, &r2, "4803 3330 37c1 c0bf", 222);
    check(
        &mut enc,
        &mut dec,
        &r3,
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
        215,
    );
}

#[test]
fn rfc7541_c6_responses_with_huffman() {
    let mut enc = Encoder::with_dynamic_table(256);
    enc.set_huffman(Huffman::Always);
    let mut dec = Decoder::new(256);
    let [r1, r2, r3] = responses();
    check(
        &mut enc,
        &mut dec,
        &r1,
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        222,
    );
    check(&mut enc, &mut dec, &r2, "4883 640e ffc1 c0bf", 222);
    check(
        &mut enc,
        &mut dec,
        &r3,
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        215,
    );
}

#[test]
fn table_size_update_is_emitted_first() {
    let mut enc = Encoder::with_dynamic_table(4096);
    let mut dec = Decoder::new(4096);
    let [r1, ..] = requests();
    let mut out = BytesMut::new();
    enc.encode(&r1, &mut out);
    dec.decode(&out).unwrap();
    enc.set_max_table_size(0);
    enc.set_max_table_size(100);
    out.clear();
    enc.encode(&r1, &mut out);
    // Two updates: to the minimum (0) and then to the final size (100).
    assert_eq!(&out[..3], &[0x20, 0x3f, 0x45]);
    assert_eq!(dec.decode(&out).unwrap(), r1);
    assert_eq!(dec.table().max_size(), 100);
}

fn header_strategy() -> impl Strategy<Value = Header> {
    (
        prop_oneof![
            "[a-z][a-z0-9-]{0,20}",
            Just("content-type".to_string()),
            Just(":path".to_string()),
            Just("cookie".to_string()),
        ],
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(n, v)| Header::new(n, v))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Header lists round-trip through every encoder configuration, over
    /// several blocks on one connection (the dynamic table carries over).
    #[test]
    fn header_lists_round_trip(
        blocks in proptest::collection::vec(proptest::collection::vec(header_strategy(), 0..12), 1..6),
        table in prop_oneof![Just(None), (0usize..600).prop_map(Some)],
        huffman in prop_oneof![Just(Huffman::Never), Just(Huffman::Always), Just(Huffman::WhenShorter)],
    ) {
        let mut enc = match table {
            None => Encoder::new(),
            Some(size) => Encoder::with_dynamic_table(size),
        };
        enc.set_huffman(huffman);
        let mut dec = Decoder::new(4096);
        for block in &blocks {
            let mut out = BytesMut::new();
            enc.encode(block, &mut out);
            prop_assert_eq!(&dec.decode(&out).unwrap(), block);
        }
    }

    /// Any bytes: an error or a list, never a panic (RUSTSEC-2023-0085 and kin).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut dec = Decoder::new(4096);
        let _ = dec.decode(&bytes);
        let _ = dec.decode(&bytes);
    }

    /// Random bytes after a valid prefix that fills the dynamic table.
    #[test]
    fn arbitrary_bytes_after_valid_block(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut dec = Decoder::new(256);
        let [r1, ..] = responses();
        let mut enc = Encoder::with_dynamic_table(256);
        let mut out = BytesMut::new();
        enc.encode(&r1, &mut out);
        out.extend_from_slice(&tail);
        let _ = dec.decode(&out);
    }
}

#[test]
fn one_and_two_byte_inputs_never_panic() {
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            let mut dec = Decoder::new(4096);
            let _ = dec.decode(&[a]);
            let _ = dec.decode(&[a, b]);
        }
    }
    assert_eq!(
        Decoder::new(4096).decode(&[0x3f]),
        Err(HpackError::Truncated)
    );
}

/// The `h2` crate's HPACK encoder (reached through its unstable frame
/// codec) is the oracle: what it encodes, we decode to the same list.
mod differential {
    use super::*;
    use h2::frame::{Headers, Pseudo, StreamId};
    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncRead, ReadBuf};

    fn h2_encode_blocks(blocks: &[Vec<(String, Vec<u8>, bool)>]) -> Vec<u8> {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut codec: h2::Codec<_, bytes::Bytes> = h2::Codec::new(ours);
        let mut cx = Context::from_waker(Waker::noop());
        for (i, block) in blocks.iter().enumerate() {
            let mut map = HeaderMap::new();
            for (name, value, sensitive) in block {
                let mut v = HeaderValue::from_bytes(value).unwrap();
                v.set_sensitive(*sensitive);
                map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), v);
            }
            let mut frame = Headers::new(
                StreamId::from(2 * i as u32 + 1),
                Pseudo::response(StatusCode::OK),
                map,
            );
            frame.set_end_headers();
            assert!(codec.poll_ready(&mut cx).is_ready());
            codec.buffer(frame.into()).unwrap();
            assert!(matches!(codec.flush(&mut cx), Poll::Ready(Ok(()))));
        }
        let mut wire = vec![0u8; 1 << 20];
        let mut buf = ReadBuf::new(&mut wire);
        let _ = Pin::new(&mut theirs).poll_read(&mut cx, &mut buf);
        buf.filled().to_vec()
    }

    fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
        // Up to 300 bytes: long enough that h2's 4 096-byte table evicts.
        proptest::collection::vec(
            prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
            0..300,
        )
    }

    fn field_strategy() -> impl Strategy<Value = (String, Vec<u8>, bool)> {
        (
            prop_oneof![
                "[a-z][a-z0-9-]{0,15}",
                Just("content-type".to_string()),
                Just("set-cookie".to_string()),
                Just("authorization".to_string()),
            ],
            value_strategy(),
            any::<bool>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn h2_crate_encodings_decode_the_same(
            blocks in proptest::collection::vec(proptest::collection::vec(field_strategy(), 0..10), 1..5)
        ) {
            let wire = h2_encode_blocks(&blocks);
            let mut buf = BytesMut::from(&wire[..]);
            let mut frames = ouli_core::h2::frame::FrameDecoder::new();
            let mut dec = Decoder::new(4096);
            for block in &blocks {
                let frame = frames.decode(&mut buf).unwrap().expect("a whole HEADERS frame");
                let ouli_core::h2::frame::Frame::Headers { block: fragment, end_headers, .. } = frame else {
                    panic!("expected HEADERS, got {frame:?}");
                };
                prop_assert!(end_headers);
                let decoded = dec.decode(&fragment).unwrap();
                // The h2 crate groups values by name (HeaderMap order).
                let mut map = HeaderMap::new();
                for (name, value, _) in block {
                    map.append(
                        HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        HeaderValue::from_bytes(value).unwrap(),
                    );
                }
                let mut expected = vec![Header::new(":status", "200")];
                expected.extend(map.iter().map(|(n, v)| {
                    Header::new(n.as_str().to_string(), v.as_bytes().to_vec())
                }));
                prop_assert_eq!(decoded, expected);
            }
            prop_assert!(buf.is_empty());
        }
    }
}
