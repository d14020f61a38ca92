//! A minimal DER (ITU-T X.690) writer for keys, certificates and requests, and the one reader the token needs.

/// Universal tags used by the writer.
pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_BIT_STRING: u8 = 0x03;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_NULL: u8 = 0x05;
pub const TAG_OID: u8 = 0x06;
pub const TAG_UTF8_STRING: u8 = 0x0c;
pub const TAG_UTC_TIME: u8 = 0x17;
pub const TAG_GENERALIZED_TIME: u8 = 0x18;
pub const TAG_SEQUENCE: u8 = 0x30;
pub const TAG_SET: u8 = 0x31;

/// OID 1.2.840.10045.2.1 id-ecPublicKey, content octets.
pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// OID 1.2.840.10045.3.1.7 prime256v1.
pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// OID 1.3.101.112 id-Ed25519 (RFC 8410).
pub const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// OID 1.2.840.113549.1.1.1 rsaEncryption.
pub const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Appends one tag-length-value with short or long form length.
pub fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let significant = without_leading_zeros(&bytes);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

/// `bytes` from its first octet that is not zero on.
fn without_leading_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// One tag-length-value as a new vector.
pub fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    tlv(&mut out, tag, content);
    out
}

/// A SEQUENCE of already encoded elements.
pub fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    wrap(TAG_SEQUENCE, &parts.concat())
}

/// A BIT STRING with no unused bits.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    wrap(TAG_BIT_STRING, &content)
}

/// A non-negative INTEGER from big-endian magnitude bytes.
pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed = without_leading_zeros(magnitude);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    wrap(TAG_INTEGER, &content)
}

/// The SubjectPublicKeyInfo for an uncompressed P-256 point.
pub fn spki_ec_p256(point: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&wrap(TAG_OID, OID_EC_PUBLIC_KEY), &wrap(TAG_OID, OID_P256)]);
    sequence(&[&algorithm, &bit_string(point)])
}

/// The SubjectPublicKeyInfo for an Ed25519 public key (RFC 8410 §4).
pub fn spki_ed25519(key: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&wrap(TAG_OID, OID_ED25519)]);
    sequence(&[&algorithm, &bit_string(key)])
}

/// The SubjectPublicKeyInfo for a PKCS#1 `RSAPublicKey` (RFC 3279 §2.3.1).
pub fn spki_rsa(rsa_public_key: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&wrap(TAG_OID, OID_RSA_ENCRYPTION), &wrap(TAG_NULL, &[])]);
    sequence(&[&algorithm, &bit_string(rsa_public_key)])
}

/// Reads one tag-length-value from the front of `input`: (tag, content, rest).
/// Accepts definite lengths of up to four octets; anything else is `None`.
pub fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The BIT STRING contents (without the unused-bits octet) of a SubjectPublicKeyInfo.
pub fn spki_subject_public_key(spki: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = read_tlv(spki)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    let (tag, _, rest) = read_tlv(body)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    let (tag, bits, _) = read_tlv(rest)?;
    match bits.split_first() {
        Some((0, key)) if tag == TAG_BIT_STRING => Some(key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_short_and_long_form() {
        assert_eq!(wrap(TAG_OCTET_STRING, &[1, 2]), vec![0x04, 0x02, 1, 2]);
        let long = wrap(TAG_OCTET_STRING, &[0u8; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = wrap(TAG_OCTET_STRING, &[0u8; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (tag, content, rest) = read_tlv(&longer).unwrap();
        assert_eq!((tag, content.len(), rest.len()), (TAG_OCTET_STRING, 300, 0));
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(&[0, 0, 5]), vec![0x02, 0x01, 0x05]);
        assert_eq!(unsigned_integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(unsigned_integer(&[]), vec![0x02, 0x01, 0x00]);
    }

    #[test]
    fn ed25519_spki_matches_rfc_8410() {
        // RFC 8410 §10.1 example public key.
        let key = [
            0x19, 0xbf, 0x44, 0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc,
            0x3b, 0x96, 0xc8, 0x50, 0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad,
            0x70, 0x31, 0x66, 0xe1,
        ];
        let spki = spki_ed25519(&key);
        assert_eq!(
            &spki[..12],
            &[
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
            ]
        );
        assert_eq!(spki_subject_public_key(&spki), Some(&key[..]));
    }

    #[test]
    fn truncated_input_is_rejected() {
        let spki = spki_ec_p256(&[4u8; 65]);
        for cut in 0..spki.len() {
            assert_eq!(spki_subject_public_key(&spki[..cut]), None, "cut at {cut}");
        }
        assert_eq!(spki_subject_public_key(&spki), Some(&[4u8; 65][..]));
    }
}
