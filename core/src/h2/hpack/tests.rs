use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc_7541_c1_integers() {
    // C.1.1: 10 with a 5-bit prefix.
    let mut dst = BytesMut::new();
    encode_integer(&mut dst, 0, 5, 10);
    assert_eq!(&dst[..], [0x0a]);
    // C.1.2: 1337 with a 5-bit prefix.
    dst.clear();
    encode_integer(&mut dst, 0, 5, 1337);
    assert_eq!(&dst[..], [0x1f, 0x9a, 0x0a]);
    let mut pos = 0;
    assert_eq!(decode_integer(&dst, &mut pos, 5), Ok(1337));
    assert_eq!(pos, 3);
    // C.1.3: 42 at an octet boundary.
    dst.clear();
    encode_integer(&mut dst, 0, 8, 42);
    assert_eq!(&dst[..], [42]);
}

#[test]
fn integer_overflow_and_truncation() {
    let mut pos = 0;
    assert_eq!(
        decode_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos, 5),
        Err(HpackError::IntegerOverflow)
    );
    pos = 0;
    assert_eq!(
        decode_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut pos, 5),
        Err(HpackError::IntegerOverflow)
    );
    pos = 0;
    assert_eq!(
        decode_integer(&[0x1f, 0xff], &mut pos, 5),
        Err(HpackError::Truncated)
    );
    pos = 0;
    // u32::MAX itself is accepted.
    let mut dst = BytesMut::new();
    encode_integer(&mut dst, 0, 5, u64::from(u32::MAX));
    assert_eq!(decode_integer(&dst, &mut pos, 5), Ok(u64::from(u32::MAX)));
}

#[test]
fn rustsec_2023_0085_one_byte_inputs_are_errors_not_panics() {
    for b in 0..=255u8 {
        let mut decoder = Decoder::new(4096);
        let _ = decoder.decode(&[b]);
        let _ = decoder.decode(&[b, b]);
    }
    // The input from the advisory: a lone literal-with-indexing prefix.
    let mut decoder = Decoder::new(4096);
    assert_eq!(decoder.decode(&[0x40]), Err(HpackError::Truncated));
    assert_eq!(decoder.decode(&[0x80]), Err(HpackError::InvalidIndex(0)));
    assert_eq!(decoder.decode(&[0xff]), Err(HpackError::Truncated));
}

#[test]
fn size_update_must_come_first_and_within_limit() {
    let mut decoder = Decoder::new(4096);
    // Update to 100, then :method GET.
    assert_eq!(decoder.decode(&[0x3f, 0x45, 0x82]).unwrap().len(), 1);
    assert_eq!(decoder.table().max_size(), 100);
    assert_eq!(
        decoder.decode(&[0x82, 0x20]),
        Err(HpackError::SizeUpdateNotFirst)
    );
    let mut decoder = Decoder::new(4096);
    let mut block = BytesMut::new();
    encode_integer(&mut block, 0x20, 5, 4097);
    assert_eq!(
        decoder.decode(&block),
        Err(HpackError::SizeUpdateTooLarge {
            requested: 4097,
            limit: 4096
        })
    );
    // Two updates in a row at the start are fine.
    let mut decoder = Decoder::new(4096);
    assert!(decoder.decode(&[0x20, 0x3f, 0xe1, 0x1f, 0x82]).is_ok());
    assert_eq!(decoder.table().max_size(), 4096);
}

#[test]
fn lowered_setting_requires_size_update() {
    let mut decoder = Decoder::new(4096);
    decoder.set_settings_table_size(1024);
    assert_eq!(decoder.decode(&[0x82]), Err(HpackError::SizeUpdateMissing));
    let mut decoder = Decoder::new(4096);
    decoder.set_settings_table_size(1024);
    let mut block = BytesMut::new();
    encode_integer(&mut block, 0x20, 5, 512);
    block.put_u8(0x82);
    assert!(decoder.decode(&block).is_ok());
    assert_eq!(decoder.table().max_size(), 512);
}

#[test]
fn hpack_bomb_stops_at_the_limit() {
    // One 4000-byte entry in the dynamic table, then referenced 10 000
    // times: 40 MB decoded from 20 kB. The decoder stops at the limit.
    let mut block = BytesMut::new();
    block.put_u8(0x40);
    encode_string(&mut block, b"x-bomb", Huffman::Never);
    encode_string(&mut block, &[b'a'; 4000], Huffman::Never);
    for _ in 0..10_000 {
        block.put_u8(0xbe);
    }
    let mut decoder = Decoder::new(4096);
    decoder.set_max_header_list_bytes(64 * 1024);
    assert_eq!(
        decoder.decode(&block),
        Err(HpackError::HeaderListTooLarge { limit: 64 * 1024 })
    );
    // A single literal past the limit is refused before it is copied.
    let mut block = BytesMut::new();
    block.put_u8(0x00);
    encode_string(&mut block, b"big", Huffman::Never);
    encode_string(&mut block, &vec![b'v'; 70_000], Huffman::Always);
    assert_eq!(
        Decoder::new(4096).decode(&block),
        Err(HpackError::HeaderListTooLarge {
            limit: crate::h2::MAX_HEADER_LIST_BYTES
        })
    );
    assert_eq!(
        HpackError::HeaderListTooLarge { limit: 1 }.code(),
        crate::h2::ErrorCode::ENHANCE_YOUR_CALM
    );
}

#[test]
fn dynamic_table_eviction() {
    let mut t = DynamicTable::new(100);
    t.insert(Header::new("a", "1")); // 34
    t.insert(Header::new("b", "2")); // 68
    t.insert(Header::new("c", "3")); // 102 > 100: evict a
    assert_eq!(t.len(), 2);
    assert_eq!(t.size(), 68);
    assert_eq!(t.get(0).unwrap().name, "c");
    t.insert(Header::new("big", vec![b'x'; 100]));
    assert!(t.is_empty());
    assert_eq!(t.size(), 0);
}

#[test]
fn encoder_without_table_is_stateless() {
    let headers = vec![
        Header::new(":method", "GET"),
        Header::new(":path", "/sample/path"),
        Header::new("x-custom", "value"),
    ];
    let mut enc = Encoder::new();
    enc.set_huffman(Huffman::Never);
    let mut a = BytesMut::new();
    enc.encode(&headers, &mut a);
    let mut b = BytesMut::new();
    enc.encode(&headers, &mut b);
    assert_eq!(a, b);
    assert_eq!(&a[..15], &hex("82 04 0c 2f73616d706c652f70617468")[..]);
    let mut dec = Decoder::new(0);
    assert_eq!(dec.decode(&a).unwrap(), headers);
}
