//! Base64 (RFC 4648 §4) for SASL exchanges: strict decoding, canonical encoding.
//!
//! Decoding refuses anything an honest encoder would not produce: characters outside the
//! alphabet, missing or misplaced padding, and non-zero bits in the last quantum's pad.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3).saturating_mul(4));
    for chunk in data.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let symbol = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(symbol(18));
        out.push(symbol(12));
        out.push(if chunk.len() > 1 { symbol(6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(0) } else { '=' });
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
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quanta = text.len() / 4;
    for (index, quantum) in text.chunks_exact(4).enumerate() {
        let last = index + 1 == quanta;
        let pad = quantum.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &symbol in &quantum[..4 - pad] {
            n = (n << 6) | value(symbol)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match pad {
            0 => out.extend_from_slice(&bytes),
            1 if bytes[2] == 0 => out.extend_from_slice(&bytes[..2]),
            2 if bytes[1] == 0 && bytes[2] == 0 => out.push(bytes[0]),
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
