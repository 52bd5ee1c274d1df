//! The HPACK Huffman code (RFC 7541 §5.2 and Appendix B).
//!
//! The code in Appendix B is canonical: the codes of one bit length form a
//! contiguous range. Decoding therefore needs, per length, the first code,
//! how many codes have that length, and the symbols in code order; those
//! tables are computed at compile time from [`CODES`]. A code table that
//! were not canonical would fail to compile (the placement below would
//! index out of range in const evaluation).

use super::huffman_table::CODES;
use super::HpackError;

/// Longest code, in bits (EOS and a few rare bytes).
const MAX_BITS: usize = 30;
/// The EOS pseudo-symbol; decoding it is an error (RFC 7541 §5.2).
const EOS: u16 = 256;

struct Canonical {
    /// Smallest code of each length.
    first: [u32; MAX_BITS + 1],
    /// Number of codes of each length.
    count: [u32; MAX_BITS + 1],
    /// Index into `symbols` of the first code of each length.
    start: [u32; MAX_BITS + 1],
    /// Symbols ordered by (length, code).
    symbols: [u16; 257],
}

const fn build() -> Canonical {
    let mut count = [0u32; MAX_BITS + 1];
    let mut first = [u32::MAX; MAX_BITS + 1];
    let mut i = 0;
    while i < 257 {
        let (code, bits) = CODES[i];
        count[bits as usize] += 1;
        if code < first[bits as usize] {
            first[bits as usize] = code;
        }
        i += 1;
    }
    let mut start = [0u32; MAX_BITS + 1];
    let mut acc = 0;
    let mut l = 1;
    while l <= MAX_BITS {
        start[l] = acc;
        acc += count[l];
        l += 1;
    }
    let mut symbols = [u16::MAX; 257];
    i = 0;
    while i < 257 {
        let (code, bits) = CODES[i];
        let slot = (start[bits as usize] + code - first[bits as usize]) as usize;
        // Two symbols in one slot means the codes of a length are not
        // contiguous: refuse to compile.
        assert!(symbols[slot] == u16::MAX, "Huffman table is not canonical");
        symbols[slot] = i as u16;
        i += 1;
    }
    Canonical {
        first,
        count,
        start,
        symbols,
    }
}

static CANONICAL: Canonical = build();

/// Decodes a Huffman-coded string, appending the bytes to `out`.
///
/// Rejects (RFC 7541 §5.2) an EOS symbol in the string, padding longer than
/// 7 bits, and padding that is not the most significant bits of EOS (all
/// ones). The output is never longer than `8 * src.len() / 5` bytes.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let table = &CANONICAL;
    out.reserve(src.len().saturating_mul(8) / 5);
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > MAX_BITS {
                return Err(HpackError::InvalidHuffman);
            }
            let first = table.first.get(len).copied().unwrap_or(u32::MAX);
            let count = table.count.get(len).copied().unwrap_or(0);
            if count > 0 && code >= first && code - first < count {
                let at = table.start.get(len).copied().unwrap_or(0) + (code - first);
                let symbol = table
                    .symbols
                    .get(at as usize)
                    .copied()
                    .ok_or(HpackError::InvalidHuffman)?;
                if symbol >= EOS {
                    return Err(HpackError::InvalidHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // What is left must be padding: at most 7 bits, all ones.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HpackError::InvalidHuffman);
    }
    Ok(())
}

/// The length in bytes of `src` once Huffman-coded.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(CODES.get(usize::from(b)).map_or(0, |c| c.1)))
        .sum();
    bits.div_ceil(8)
}

/// Huffman-codes `src`, appending to `out`, padded with the high bits of EOS.
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len(src));
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = CODES.get(usize::from(b)).copied().unwrap_or((0, 0));
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xffu8 >> bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_symbol_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        encode(&all, &mut coded);
        assert_eq!(coded.len(), encoded_len(&all));
        let mut back = Vec::new();
        decode(&coded, &mut back).unwrap();
        assert_eq!(back, all);
        for b in 0..=255u8 {
            let mut coded = Vec::new();
            encode(&[b], &mut coded);
            let mut back = Vec::new();
            decode(&coded, &mut back).unwrap();
            assert_eq!(back, [b]);
        }
    }

    #[test]
    fn rfc_7541_c4_strings() {
        let mut coded = Vec::new();
        encode(b"www.example.com", &mut coded);
        assert_eq!(coded, hex("f1e3c2e5f23a6ba0ab90f4ff"));
        coded.clear();
        encode(b"no-cache", &mut coded);
        assert_eq!(coded, hex("a8eb10649cbf"));
        coded.clear();
        encode(b"custom-value", &mut coded);
        assert_eq!(coded, hex("25a849e95bb8e8b4bf"));
    }

    #[test]
    fn padding_and_eos_rules() {
        let mut out = Vec::new();
        // EOS coded in full (30 ones + 2 padding ones).
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HpackError::InvalidHuffman)
        );
        // '0' is 00000 (5 bits); padding of zeros is not EOS's prefix.
        assert_eq!(decode(&[0x00], &mut out), Err(HpackError::InvalidHuffman));
        // '0' then three ones: valid.
        out.clear();
        assert_eq!(decode(&[0x07], &mut out), Ok(()));
        assert_eq!(out, b"0");
        // A full byte of padding (8 ones) is too long.
        out.clear();
        assert_eq!(
            decode(&[0x07, 0xff], &mut out),
            Err(HpackError::InvalidHuffman)
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
