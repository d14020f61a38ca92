//! PEM in and out: certificate chains and private keys read for import, requests written for the console.
//!
//! Reading uses the PEM decoder that comes with rustls's key types; private keys in PKCS#1
//! (`RSA PRIVATE KEY`) and SEC 1 (`EC PRIVATE KEY`) form are rewrapped as PKCS#8, the one
//! form the token imports. No I/O.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use crate::io::token::der::{
    OID_EC_PUBLIC_KEY, OID_P256, OID_RSA_ENCRYPTION, TAG_NULL, TAG_OCTET_STRING, TAG_OID, sequence,
    unsigned_integer, wrap,
};

/// Longest PEM text accepted (chain or key): a chain of a leaf, two intermediates and a
/// root with 4096-bit RSA keys is under 10 KiB; this is the worst-case copy held while parsing.
pub const MAX_PEM_LEN: usize = 64 * 1024;
/// Most certificates in one chain: leaf, intermediates, root (seed 001's order).
pub const MAX_CHAIN_LEN: usize = 8;

/// Context [0] EXPLICIT: ECPrivateKey parameters (RFC 5915 §3).
const TAG_EC_PARAMETERS: u8 = 0xa0;

/// The CERTIFICATE blocks of `text`, in order (leaf first); other blocks are skipped.
pub fn parse_chain(text: &str) -> Result<Vec<Vec<u8>>, TlsError> {
    if text.len() > MAX_PEM_LEN {
        return Err(TlsError::Pem("certificate PEM too long".to_string()));
    }
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(text.as_bytes()) {
        let der = item.map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
        if chain.len() >= MAX_CHAIN_LEN {
            return Err(TlsError::Pem(format!(
                "more than {MAX_CHAIN_LEN} certificates in the chain"
            )));
        }
        chain.push(der.as_ref().to_vec());
    }
    if chain.is_empty() {
        return Err(TlsError::Pem("no CERTIFICATE block".to_string()));
    }
    Ok(chain)
}

/// The first private key of `text` as PKCS#8 DER.
pub fn parse_private_key(text: &str) -> Result<Vec<u8>, TlsError> {
    if text.len() > MAX_PEM_LEN {
        return Err(TlsError::Pem("key PEM too long".to_string()));
    }
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
    match key {
        PrivateKeyDer::Pkcs8(der) => Ok(der.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(der) => Ok(pkcs8_from_pkcs1(der.secret_pkcs1_der())),
        PrivateKeyDer::Sec1(der) => pkcs8_from_sec1(der.secret_sec1_der()),
        _ => Err(TlsError::UnsupportedKey),
    }
}

/// RFC 5208 PrivateKeyInfo around an RFC 8017 RSAPrivateKey.
fn pkcs8_from_pkcs1(rsa_private_key: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&wrap(TAG_OID, OID_RSA_ENCRYPTION), &wrap(TAG_NULL, &[])]);
    sequence(&[
        &unsigned_integer(&[0]),
        &algorithm,
        &wrap(TAG_OCTET_STRING, rsa_private_key),
    ])
}

/// RFC 5208 PrivateKeyInfo around an RFC 5915 ECPrivateKey; only P-256 keys (the one
/// curve the token signs with) are accepted.
fn pkcs8_from_sec1(ec_private_key: &[u8]) -> Result<Vec<u8>, TlsError> {
    let curve = sec1_curve(ec_private_key).ok_or(TlsError::UnsupportedKey)?;
    if curve != OID_P256 {
        return Err(TlsError::UnsupportedKey);
    }
    let algorithm = sequence(&[&wrap(TAG_OID, OID_EC_PUBLIC_KEY), &wrap(TAG_OID, OID_P256)]);
    Ok(sequence(&[
        &unsigned_integer(&[0]),
        &algorithm,
        &wrap(TAG_OCTET_STRING, ec_private_key),
    ]))
}

/// The curve OID named in an ECPrivateKey's parameters.
fn sec1_curve(ec_private_key: &[u8]) -> Option<&[u8]> {
    use crate::io::token::der::read_tlv;
    let (_, body, _) = read_tlv(ec_private_key)?;
    let (_, _, rest) = read_tlv(body)?; // version
    let (_, _, mut rest) = read_tlv(rest)?; // privateKey
    while let Some((tag, content, after)) = read_tlv(rest) {
        rest = after;
        if tag == TAG_EC_PARAMETERS {
            let (tag, oid, _) = read_tlv(content)?;
            return (tag == TAG_OID).then_some(oid);
        }
    }
    None
}

/// `der` as a PEM block with this label, lines of 64 characters (RFC 7468 §2).
pub fn encode(label: &str, der: &[u8]) -> String {
    let base64 = crate::proto::sasl::base64::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_base64_with_padding() {
        assert_eq!(encode("X", b""), "-----BEGIN X-----\n-----END X-----\n");
        assert_eq!(
            encode("X", b"f"),
            "-----BEGIN X-----\nZg==\n-----END X-----\n"
        );
        assert_eq!(
            encode("X", b"fo"),
            "-----BEGIN X-----\nZm8=\n-----END X-----\n"
        );
        assert_eq!(
            encode("X", b"foobar"),
            "-----BEGIN X-----\nZm9vYmFy\n-----END X-----\n"
        );
        let long = encode("X", &[0u8; 49]);
        assert_eq!(long.lines().nth(1).map(str::len), Some(64));
        assert_eq!(long.lines().nth(2).map(str::len), Some(4));
    }

    #[test]
    fn chain_round_trips_through_pem() {
        let text = format!(
            "{}junk\n{}",
            encode("CERTIFICATE", b"one"),
            encode("CERTIFICATE", b"two")
        );
        assert_eq!(
            parse_chain(&text).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert!(parse_chain("no pem here").is_err());
        assert!(parse_chain(&encode("PRIVATE KEY", b"k")).is_err());
    }

    #[test]
    fn damaged_pem_is_an_error_not_a_panic() {
        let good = encode("CERTIFICATE", &[0x30, 0x03, 0x02, 0x01, 0x05]);
        for cut in 0..good.len() {
            let text = &good[..cut];
            let _ = parse_chain(text);
            let _ = parse_private_key(text);
        }
        for (index, _) in good.char_indices() {
            for poke in ['=', '-', '\n', '\u{e9}', 'A'] {
                let mut text = good.clone();
                text.replace_range(index..index + 1, &poke.to_string());
                let _ = parse_chain(&text);
            }
        }
        let huge = "A".repeat(MAX_PEM_LEN + 1);
        assert!(parse_chain(&huge).is_err());
        assert!(parse_private_key(&huge).is_err());
        let long_chain = encode("CERTIFICATE", b"c").repeat(MAX_CHAIN_LEN + 1);
        assert!(parse_chain(&long_chain).is_err());
    }

    #[test]
    fn pkcs1_is_wrapped_as_pkcs8() {
        let pkcs1 = sequence(&[&[0x02, 0x01, 0x00]]);
        let pkcs8 = parse_private_key(&encode("RSA PRIVATE KEY", &pkcs1)).unwrap();
        // SEQUENCE of 25 octets: version 0, the 15-octet algorithm, the 7-octet key.
        assert_eq!(pkcs8[..5], [0x30, 0x19, 0x02, 0x01, 0x00]);
        assert!(pkcs8.ends_with(&pkcs1));
        assert!(
            pkcs8
                .windows(OID_RSA_ENCRYPTION.len())
                .any(|w| w == OID_RSA_ENCRYPTION)
        );
    }

    #[test]
    fn sec1_needs_p256_parameters() {
        let p256 = sequence(&[
            &[0x02, 0x01, 0x01],
            &wrap(TAG_OCTET_STRING, &[1u8; 32]),
            &wrap(TAG_EC_PARAMETERS, &wrap(TAG_OID, OID_P256)),
        ]);
        let pkcs8 = parse_private_key(&encode("EC PRIVATE KEY", &p256)).unwrap();
        assert!(pkcs8.ends_with(&p256));
        let no_curve = sequence(&[&[0x02, 0x01, 0x01], &wrap(TAG_OCTET_STRING, &[1u8; 32])]);
        assert_eq!(
            parse_private_key(&encode("EC PRIVATE KEY", &no_curve)),
            Err(TlsError::UnsupportedKey)
        );
    }
}
