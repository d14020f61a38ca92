//! A minimal X.509 reader: the few certificate fields the gateway shows and maps (subject, names, expiry, key).
//!
//! Reads DER only (RFC 5280 §4.1) with the token's TLV reader; no I/O, never panics on
//! peer bytes. Anything it does not understand is skipped or makes the whole parse `None`.

use crate::io::token::der::read_tlv;

/// Most subject attributes rendered; RFC 5280 sets no bound, real names carry under ten.
/// The rendered subject is at most `MAX_SUBJECT_ATTRIBUTES` times an attribute's length.
pub const MAX_SUBJECT_ATTRIBUTES: usize = 32;
/// Most subjectAltName entries read; each is a slice of the certificate, so the cost is
/// this many short strings copied out (a few KiB at most).
pub const MAX_ALT_NAMES: usize = 64;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
/// Context [0] EXPLICIT: the version in TBSCertificate.
const TAG_VERSION: u8 = 0xa0;
/// Context [3] EXPLICIT: the extensions in TBSCertificate.
const TAG_EXTENSIONS: u8 = 0xa3;
/// GeneralName rfc822Name [1] IMPLICIT IA5String.
const TAG_RFC822_NAME: u8 = 0x81;
/// GeneralName dNSName [2] IMPLICIT IA5String.
const TAG_DNS_NAME: u8 = 0x82;
/// OID 2.5.29.17 subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Attribute types with an RFC 4514 §3 short name (plus emailAddress, as OpenSSL prints it).
const ATTRIBUTE_NAMES: [(&[u8], &str); 10] = [
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x09], "STREET"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "DC",
    ),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        "UID",
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "emailAddress",
    ),
];

/// The fields of a certificate the gateway uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFields {
    /// The subject in RFC 4514 form (last RDN first), e.g. `CN=mail.example.com,O=Example`.
    pub subject: String,
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// subjectAltName dNSName entries.
    pub dns_names: Vec<String>,
    /// subjectAltName rfc822Name entries (email addresses).
    pub emails: Vec<String>,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The SubjectPublicKeyInfo, DER, tag and length included.
    pub spki: Vec<u8>,
}

/// Reads the fields from a DER certificate; `None` if it is not one this reader understands.
pub fn parse_certificate(der: &[u8]) -> Option<CertificateFields> {
    let (tag, certificate, _) = read_tlv(der)?;
    expect(tag, TAG_SEQUENCE)?;
    let (tag, tbs, _) = read_tlv(certificate)?;
    expect(tag, TAG_SEQUENCE)?;
    let mut rest = tbs;
    let (tag, _, after) = read_tlv(rest)?;
    if tag == TAG_VERSION {
        rest = after;
    }
    let (_serial, rest) = skip(rest)?;
    let (_signature, rest) = skip(rest)?;
    let (_issuer, rest) = skip(rest)?;
    let (tag, validity, rest) = read_tlv(rest)?;
    expect(tag, TAG_SEQUENCE)?;
    let (_, _, validity_rest) = read_tlv(validity)?;
    let (time_tag, time, _) = read_tlv(validity_rest)?;
    let not_after = parse_time(time_tag, time)?;
    let (tag, subject, rest) = read_tlv(rest)?;
    expect(tag, TAG_SEQUENCE)?;
    let spki_len = tlv_len(rest)?;
    let spki = rest.get(..spki_len)?.to_vec();
    let mut rest = rest.get(spki_len..)?;
    let (subject, common_name) = render_name(subject)?;
    let mut dns_names = Vec::new();
    let mut emails = Vec::new();
    while let Some((tag, content, after)) = read_tlv(rest) {
        rest = after;
        if tag == TAG_EXTENSIONS {
            read_alt_names(content, &mut dns_names, &mut emails)?;
        }
    }
    Some(CertificateFields {
        subject,
        common_name,
        dns_names,
        emails,
        not_after,
        spki,
    })
}

fn expect(tag: u8, wanted: u8) -> Option<()> {
    (tag == wanted).then_some(())
}

fn skip(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, content, rest) = read_tlv(input)?;
    Some((content, rest))
}

/// The length of the whole first TLV of `input`, header included.
fn tlv_len(input: &[u8]) -> Option<usize> {
    let (_, _, rest) = read_tlv(input)?;
    input.len().checked_sub(rest.len())
}

fn read_alt_names(
    explicit: &[u8],
    dns_names: &mut Vec<String>,
    emails: &mut Vec<String>,
) -> Option<()> {
    let (tag, mut extensions, _) = read_tlv(explicit)?;
    expect(tag, TAG_SEQUENCE)?;
    while !extensions.is_empty() {
        let (tag, extension, rest) = read_tlv(extensions)?;
        extensions = rest;
        expect(tag, TAG_SEQUENCE)?;
        let (tag, oid, mut body) = read_tlv(extension)?;
        expect(tag, TAG_OID)?;
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let (tag, _, after) = read_tlv(body)?;
        if tag == TAG_BOOLEAN {
            body = after;
        }
        let (tag, value, _) = read_tlv(body)?;
        expect(tag, TAG_OCTET_STRING)?;
        let (tag, mut names, _) = read_tlv(value)?;
        expect(tag, TAG_SEQUENCE)?;
        while !names.is_empty() {
            let (tag, name, rest) = read_tlv(names)?;
            names = rest;
            if dns_names.len() + emails.len() >= MAX_ALT_NAMES {
                break;
            }
            let target = match tag {
                TAG_DNS_NAME => &mut *dns_names,
                TAG_RFC822_NAME => &mut *emails,
                _ => continue,
            };
            if let Ok(text) = std::str::from_utf8(name) {
                if text.is_ascii() {
                    target.push(text.to_string());
                }
            }
        }
    }
    Some(())
}

/// Renders a Name in RFC 4514 order (the last RDN first); returns it and the last CN.
fn render_name(mut rdns: &[u8]) -> Option<(String, Option<String>)> {
    let mut parts: Vec<String> = Vec::new();
    let mut common_name = None;
    while !rdns.is_empty() {
        let (tag, mut set, rest) = read_tlv(rdns)?;
        rdns = rest;
        expect(tag, TAG_SET)?;
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let (tag, attribute, rest) = read_tlv(set)?;
            set = rest;
            expect(tag, TAG_SEQUENCE)?;
            let (tag, oid, value) = read_tlv(attribute)?;
            expect(tag, TAG_OID)?;
            let (_, value, _) = read_tlv(value)?;
            let text = String::from_utf8_lossy(value);
            let name = ATTRIBUTE_NAMES
                .iter()
                .find(|(known, _)| *known == oid)
                .map(|(_, name)| (*name).to_string())
                .unwrap_or_else(|| dotted_oid(oid));
            if name == "CN" {
                common_name = Some(text.to_string());
            }
            rdn.push(format!("{name}={}", escape_value(&text)));
        }
        if parts.len() < MAX_SUBJECT_ATTRIBUTES {
            parts.push(rdn.join("+"));
        }
    }
    parts.reverse();
    Some((parts.join(","), common_name))
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (index == 0 && (c == '#' || c == ' '))
            || (index == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", u32::from(c) & 0xff));
        } else {
            out.push(c);
        }
    }
    out
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &byte in oid {
        value = match value.checked_mul(128) {
            Some(v) => v | u64::from(byte & 0x7f),
            None => return "OID".to_string(),
        };
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// UTCTime (`YYMMDDHHMMSSZ`, RFC 5280 §4.1.2.5.1) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`, §4.1.2.5.2) to Unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let slice = text.get(range)?;
        slice.iter().try_fold(0i64, |acc, b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, at) = match (tag, text.len()) {
        (TAG_UTC_TIME, 13) => {
            let yy = digits(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (TAG_GENERALIZED_TIME, 15) => (digits(0..4)?, 4),
        _ => return None,
    };
    if text.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(at..at + 2)?;
    let day = digits(at + 2..at + 4)?;
    let hour = digits(at + 4..at + 6)?;
    let minute = digits(at + 6..at + 8)?;
    let second = digits(at + 8..at + 10)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::token::der::{sequence, wrap};

    fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
        wrap(
            TAG_SET,
            &sequence(&[&wrap(TAG_OID, oid), &wrap(0x0c, value.as_bytes())]),
        )
    }

    /// A certificate-shaped structure with the fields this reader looks at.
    fn sample() -> Vec<u8> {
        let name = sequence(&[
            &attribute(&[0x55, 0x04, 0x06], "DE"),
            &attribute(&[0x55, 0x04, 0x0a], "Example, Inc"),
            &attribute(&[0x55, 0x04, 0x03], "alice"),
        ]);
        let validity = sequence(&[
            &wrap(TAG_UTC_TIME, b"260101000000Z"),
            &wrap(TAG_GENERALIZED_TIME, b"20360101000000Z"),
        ]);
        let spki = crate::io::token::der::spki_ed25519(&[7u8; 32]);
        let names = sequence(&[
            &wrap(TAG_DNS_NAME, b"mx.example.com"),
            &wrap(TAG_RFC822_NAME, b"alice@example.com"),
            &wrap(0x86, b"https://example.com/"),
        ]);
        let extension = sequence(&[
            &wrap(TAG_OID, OID_SUBJECT_ALT_NAME),
            &wrap(TAG_OCTET_STRING, &names),
        ]);
        let tbs = sequence(&[
            &[0xa0, 0x03, 0x02, 0x01, 0x02],
            &[0x02, 0x01, 0x01],
            &sequence(&[]),
            &sequence(&[]),
            &validity,
            &name,
            &spki,
            &wrap(TAG_EXTENSIONS, &sequence(&[&extension])),
        ]);
        sequence(&[&tbs, &sequence(&[]), &[0x03, 0x01, 0x00]])
    }

    #[test]
    fn reads_subject_names_expiry_and_key() {
        let fields = parse_certificate(&sample()).unwrap();
        assert_eq!(fields.subject, "CN=alice,O=Example\\, Inc,C=DE");
        assert_eq!(fields.common_name.as_deref(), Some("alice"));
        assert_eq!(fields.dns_names, vec!["mx.example.com".to_string()]);
        assert_eq!(fields.emails, vec!["alice@example.com".to_string()]);
        // 2036-01-01T00:00:00Z
        assert_eq!(fields.not_after, 2_082_758_400);
        assert_eq!(fields.spki, crate::io::token::der::spki_ed25519(&[7u8; 32]));
    }

    #[test]
    fn truncated_certificates_are_refused_without_panic() {
        let der = sample();
        for cut in 0..der.len() {
            assert_eq!(parse_certificate(&der[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn mutated_certificates_never_panic() {
        let der = sample();
        // Every byte replaced by values that touch tags, lengths and long-form markers.
        for index in 0..der.len() {
            for value in [0x00, 0x01, 0x30, 0x7f, 0x80, 0x81, 0x84, 0xff] {
                let mut mutated = der.clone();
                mutated[index] = value;
                let _ = parse_certificate(&mutated);
            }
        }
    }

    #[test]
    fn times_convert_to_unix_seconds() {
        assert_eq!(parse_time(TAG_UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(
            parse_time(TAG_UTC_TIME, b"491231235959Z"),
            Some(2_524_607_999)
        );
        assert_eq!(
            parse_time(TAG_GENERALIZED_TIME, b"20000229120000Z"),
            Some(951_825_600)
        );
        assert_eq!(parse_time(TAG_UTC_TIME, b"701301000000Z"), None);
        assert_eq!(parse_time(TAG_UTC_TIME, b"70010100000Z"), None);
    }

    #[test]
    fn unknown_attributes_use_dotted_oids() {
        assert_eq!(dotted_oid(&[0x55, 0x04, 0x2a]), "2.5.4.42");
        assert_eq!(
            dotted_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }
}
