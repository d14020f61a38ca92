//! Base64 (RFC 4648 §4) for SASL exchanges: strict decoding, canonical encoding.
//!
//! Decoding refuses anything an honest encoder would not produce: characters outside the
//! alphabet, missing or misplaced padding, and non-zero bits in the last quantum's pad.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// RFC 4648 §4: each group of 3 octets becomes 4 symbols of 6 bits.
const GROUP_OCTETS: usize = 3;
const GROUP_SYMBOLS: usize = 4;
/// RFC 4648 §4: a last group of 2 octets is padded with one `=`, one of 1 octet with two.
const MAX_PAD: usize = 2;

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(
        data.len()
            .div_ceil(GROUP_OCTETS)
            .saturating_mul(GROUP_SYMBOLS),
    );
    for chunk in data.chunks(GROUP_OCTETS) {
        // The group as a 24-bit number, a short last group padded with zero octets.
        let n = (0..GROUP_OCTETS)
            .map(|i| chunk.get(i).copied().unwrap_or(0))
            .fold(0u32, |n, b| (n << 8) | u32::from(b));
        // INVARIANT: a 6-bit value indexes the 64 symbols of ALPHABET.
        let symbol = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        // A group of k octets is k + 1 symbols, then padding.
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() { symbol(shift) } else { '=' });
        }
    }
    out
}

fn value(symbol: u8) -> Option<u32> {
    let v = match symbol {
        b'A'..=b'Z' => symbol - b'A',
        b'a'..=b'z' => symbol - b'a' + 26,
        b'0'..=b'9' => symbol - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes padded base64; `None` when the text is not canonical base64.
///
/// The output is at most three quarters of the input, so it is bounded by the caller's
/// bound on the input.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % GROUP_SYMBOLS != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / GROUP_SYMBOLS * GROUP_OCTETS);
    let quanta = text.len() / GROUP_SYMBOLS;
    for (index, quantum) in text.chunks_exact(GROUP_SYMBOLS).enumerate() {
        let last = index + 1 == quanta;
        let pad = quantum.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > MAX_PAD || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &symbol in quantum.iter().take(GROUP_SYMBOLS - pad) {
            n = (n << 6) | value(symbol)?;
        }
        n <<= 6 * pad as u32;
        let [_, b0, b1, b2] = n.to_be_bytes();
        match pad {
            0 => out.extend_from_slice(&[b0, b1, b2]),
            1 if b2 == 0 => out.extend_from_slice(&[b0, b1]),
            2 if b1 == 0 && b2 == 0 => out.push(b0),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10.
    const VECTORS: &[(&[u8], &str)] = &[
        (b"", ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc4648_vectors_encode() {
        for (data, text) in VECTORS {
            assert_eq!(encode(data), *text);
        }
    }

    #[test]
    fn rfc4648_vectors_decode() {
        for (data, text) in VECTORS {
            assert_eq!(decode(text.as_bytes()).as_deref(), Some(*data));
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            assert_eq!(
                decode(encode(&data[..len]).as_bytes()).unwrap(),
                &data[..len]
            );
        }
    }

    #[test]
    fn refuses_non_canonical_text() {
        for bad in [
            &b"Zg="[..],
            b"Zg",
            b"Z===",
            b"Zm9v=Zm9",
            b"Zg==Zg==",
            b"Zh==",
            b"Zm9=",
            b"Zm9v\r\n",
            b"Zm 9",
            b"Zm-_",
            b"*",
        ] {
            assert_eq!(decode(bad), None, "{:?}", bad);
        }
    }
}
