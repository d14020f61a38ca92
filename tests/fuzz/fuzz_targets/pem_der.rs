//! PEM and DER loading: certificate chains and private keys in PEM, the certificate
//! fields read from DER (subject, names, emails), and the DER reader under them.
#![no_main]

use drawbridge::io::tls::cert::parse_certificate;
use drawbridge::io::tls::pem::{parse_chain, parse_private_key};
use drawbridge::io::token::der::{read_tlv, spki_subject_public_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As DER: a certificate, a key's public part, and the raw TLV reader.
    let _ = parse_certificate(data);
    let _ = spki_subject_public_key(data);
    let mut rest = data;
    while let Some((_, content, next)) = read_tlv(rest) {
        assert!(content.len() <= rest.len() && next.len() < rest.len());
        rest = next;
    }
    // As PEM text.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(chain) = parse_chain(text) {
            for der in &chain {
                let _ = parse_certificate(der);
            }
        }
        let _ = parse_private_key(text);
    }
});
