//! A PKCS#8 private key split into the parts a PKCS#11 key template takes (RFC 5208, RFC 8017, RFC 5915, RFC 8410).
//!
//! A hardware token imports a key as attributes (`CKA_MODULUS`, `CKA_VALUE`, …), not as a
//! PKCS#8 document, so [`parse`] reads the document into borrowed slices of it. It checks
//! structure only: the software token (through ring) checks that the numbers make a key
//! before anything goes to the token. No I/O, no allocation; any input gives a value or
//! `None`, never a panic.

use super::der::{
    OID_EC_PUBLIC_KEY, OID_ED25519, OID_P256, OID_RSA_ENCRYPTION, TAG_INTEGER, TAG_NULL,
    TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, read_tlv,
};

/// Length of a P-256 private scalar (SEC 1 §C.4: `ceiling(log2(n)/8)` octets).
pub const P256_SCALAR_LEN: usize = 32;
/// Length of an Ed25519 private key, the seed (RFC 8032 §5.1.5).
pub const ED25519_SEED_LEN: usize = 32;

/// The parts of a private key, borrowed from the PKCS#8 document. Integers are big-endian
/// magnitudes without a leading zero octet, as PKCS#11 big integers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pkcs8Key<'a> {
    /// RFC 8017 §A.1.2 `RSAPrivateKey` (two primes).
    Rsa {
        modulus: &'a [u8],
        public_exponent: &'a [u8],
        private_exponent: &'a [u8],
        prime1: &'a [u8],
        prime2: &'a [u8],
        exponent1: &'a [u8],
        exponent2: &'a [u8],
        coefficient: &'a [u8],
    },
    /// RFC 5915 `ECPrivateKey` on P-256: the scalar, [`P256_SCALAR_LEN`] octets.
    EcP256 { scalar: &'a [u8] },
    /// RFC 8410 §7 `CurvePrivateKey`: the seed, [`ED25519_SEED_LEN`] octets.
    Ed25519 { seed: &'a [u8] },
}

/// Reads a PKCS#8 `PrivateKeyInfo` (version 0) or `OneAsymmetricKey` (version 1).
pub fn parse(document: &[u8]) -> Option<Pkcs8Key<'_>> {
    let (tag, body, rest) = read_tlv(document)?;
    if tag != TAG_SEQUENCE || !rest.is_empty() {
        return None;
    }
    let (version, body) = expect(body, TAG_INTEGER)?;
    if version != [0] && version != [1] {
        return None;
    }
    let (algorithm, body) = expect(body, TAG_SEQUENCE)?;
    let (private_key, _attributes_and_public_key) = expect(body, TAG_OCTET_STRING)?;
    let (oid, parameters) = expect(algorithm, TAG_OID)?;
    match oid {
        o if o == OID_RSA_ENCRYPTION => {
            // RFC 3279 §2.3.1: the parameters are NULL (some writers omit them).
            if !parameters.is_empty() {
                let (null, rest) = expect(parameters, TAG_NULL)?;
                if !null.is_empty() || !rest.is_empty() {
                    return None;
                }
            }
            rsa(private_key)
        }
        o if o == OID_EC_PUBLIC_KEY => {
            let (curve, rest) = expect(parameters, TAG_OID)?;
            if curve != OID_P256 || !rest.is_empty() {
                return None;
            }
            ec_p256(private_key)
        }
        o if o == OID_ED25519 => {
            // RFC 8410 §3: the parameters are absent.
            if !parameters.is_empty() {
                return None;
            }
            let (seed, rest) = expect(private_key, TAG_OCTET_STRING)?;
            (seed.len() == ED25519_SEED_LEN && rest.is_empty())
                .then_some(Pkcs8Key::Ed25519 { seed })
        }
        _ => None,
    }
}

fn rsa(private_key: &[u8]) -> Option<Pkcs8Key<'_>> {
    let (body, rest) = expect(private_key, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    // Version 0: two primes; version 1 (multi-prime) is refused, as ring refuses it.
    let (version, body) = expect(body, TAG_INTEGER)?;
    if version != [0] {
        return None;
    }
    let mut numbers = [&[][..]; 8];
    let mut body = body;
    for number in &mut numbers {
        let (value, rest) = expect(body, TAG_INTEGER)?;
        *number = magnitude(value)?;
        body = rest;
    }
    if !body.is_empty() {
        return None;
    }
    let [
        modulus,
        public_exponent,
        private_exponent,
        prime1,
        prime2,
        exponent1,
        exponent2,
        coefficient,
    ] = numbers;
    Some(Pkcs8Key::Rsa {
        modulus,
        public_exponent,
        private_exponent,
        prime1,
        prime2,
        exponent1,
        exponent2,
        coefficient,
    })
}

fn ec_p256(private_key: &[u8]) -> Option<Pkcs8Key<'_>> {
    let (body, rest) = expect(private_key, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (version, body) = expect(body, TAG_INTEGER)?;
    if version != [1] {
        return None;
    }
    let (scalar, _parameters_and_public_key) = expect(body, TAG_OCTET_STRING)?;
    (scalar.len() == P256_SCALAR_LEN).then_some(Pkcs8Key::EcP256 { scalar })
}

/// The next element, which must carry `tag`: (content, rest).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = read_tlv(input)?;
    (found == tag).then_some((content, rest))
}

/// A non-negative INTEGER's magnitude: refuses negative and empty numbers, drops the
/// sign octet.
fn magnitude(integer: &[u8]) -> Option<&[u8]> {
    match integer {
        [] => None,
        [first, ..] if first & 0x80 != 0 => None,
        [0, rest @ ..] if !rest.is_empty() => Some(rest),
        all => Some(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};

    const RSA_PKCS8: &[u8] = include_bytes!("testdata/rsa2048.pk8.der");

    #[test]
    fn rsa_parts_come_out_whole() {
        let Some(Pkcs8Key::Rsa {
            modulus,
            public_exponent,
            prime1,
            prime2,
            coefficient,
            ..
        }) = parse(RSA_PKCS8)
        else {
            panic!("RSA key not recognised");
        };
        assert_eq!(modulus.len(), 256);
        assert!(
            modulus[0] & 0x80 != 0,
            "a 2048-bit modulus has its top bit set"
        );
        assert_eq!(public_exponent, [1, 0, 1]);
        assert_eq!((prime1.len(), prime2.len()), (128, 128));
        assert!(!coefficient.is_empty() && coefficient[0] != 0);
    }

    #[test]
    fn generated_ec_and_ed25519_keys_parse() {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        assert!(
            matches!(parse(ec.as_ref()), Some(Pkcs8Key::EcP256 { scalar }) if scalar.len() == 32)
        );
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        assert!(matches!(parse(ed.as_ref()), Some(Pkcs8Key::Ed25519 { seed }) if seed.len() == 32));
        // RFC 8410 §10.3: the example private key, version 0, no public key.
        let rfc = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20, 0xd4, 0xee, 0x72, 0xdb, 0xf9, 0x13, 0x58, 0x4a, 0xd5, 0xb6, 0xd8, 0xf1,
            0xf7, 0x69, 0xf8, 0xad, 0x3a, 0xfe, 0x7c, 0x28, 0xcb, 0xf1, 0xd4, 0xfb, 0xe0, 0x97,
            0xa8, 0x8f, 0x44, 0x75, 0x58, 0x42,
        ];
        assert_eq!(parse(&rfc), Some(Pkcs8Key::Ed25519 { seed: &rfc[16..] }));
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        for document in [RSA_PKCS8, ec.as_ref(), ed.as_ref()] {
            assert!(parse(document).is_some());
            for cut in 0..document.len() {
                assert_eq!(parse(&document[..cut]), None, "cut at {cut}");
            }
            let mut longer = document.to_vec();
            longer.push(0);
            assert_eq!(parse(&longer), None);
        }
    }

    #[test]
    fn mutated_documents_never_panic() {
        // Deterministic mutation: flip, drop and insert bytes at seeded positions.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: [&[u8]; 1] = [RSA_PKCS8];
        for _ in 0..5_000 {
            let mut document = seeds[0].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % document.len();
                match next() % 3 {
                    0 => document[at] ^= 1 << (next() % 8),
                    1 => {
                        document.remove(at);
                    }
                    _ => document.insert(at, next() as u8),
                }
            }
            let _ = parse(&document);
        }
    }

    #[test]
    fn other_algorithms_and_curves_are_refused() {
        // P-384 ecPublicKey: the curve OID differs in its last octet.
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let mut other_curve = ec.as_ref().to_vec();
        let at = other_curve
            .windows(OID_P256.len())
            .position(|w| w == OID_P256)
            .unwrap();
        other_curve[at + OID_P256.len() - 1] = 0x22;
        assert_eq!(parse(&other_curve), None);
        assert_eq!(magnitude(&[0x80]), None);
        assert_eq!(magnitude(&[0]), Some(&[0u8][..]));
        assert_eq!(magnitude(&[0, 0x80]), Some(&[0x80u8][..]));
    }
}
