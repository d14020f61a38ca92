//! Self-signed X.509 certificates (RFC 5280) and PKCS#10 certificate requests (RFC 2986), signed by a token key.
//!
//! First boot makes a self-signed server certificate with [`self_signed_certificate`]; the
//! console's "write a certificate request" uses [`certificate_request`]. Both take the
//! public key from the token and have the token sign, so the private key never leaves it.
//! Times are Unix seconds given by the caller: this module reads no clock.

use std::fmt;

use super::der::{self, TAG_OID, TAG_SEQUENCE, TAG_SET, wrap};
use super::{KeyKind, Mechanism, ObjectHandle, Token, TokenError};

/// Longest subject common name: RFC 5280 Appendix A `ub-common-name` is 64.
pub const MAX_COMMON_NAME_LEN: usize = 64;
/// Longest DNS name in a subjectAltName: RFC 1035 §2.3.4, 253 octets in text form.
pub const MAX_DNS_NAME_LEN: usize = 253;
/// Most subjectAltName entries; the gateway names itself and a few aliases. The
/// certificate grows by at most `MAX_DNS_NAMES * (MAX_DNS_NAME_LEN + 4)` bytes, about 8 KiB.
pub const MAX_DNS_NAMES: usize = 32;

/// OID 2.5.4.3 commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// OID 2.5.29.17 subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// OID 2.5.29.19 basicConstraints.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
/// OID 1.2.840.10045.4.3.2 ecdsa-with-SHA256.
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// OID 1.2.840.113549.1.1.11 sha256WithRSAEncryption.
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
/// OID 1.2.840.113549.1.9.14 extensionRequest (PKCS#9).
const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
/// Context tag [2] IMPLICIT IA5String: GeneralName dNSName.
const TAG_DNS_NAME: u8 = 0x82;
const TAG_BOOLEAN: u8 = 0x01;

/// What goes into a certificate or request besides the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub dns_names: Vec<String>,
}

/// Why a certificate or request could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateError {
    Token(TokenError),
    /// The common name is empty, too long, or not printable ASCII.
    InvalidCommonName,
    /// A DNS name is empty, too long, not ASCII letters, digits, `-`, `.` or `*`, or there are too many.
    InvalidDnsName,
    /// Not-after is before not-before, or a time is outside the years 1950 to 9999.
    InvalidValidity,
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateError::Token(e) => e.fmt(f),
            CertificateError::InvalidCommonName => f.write_str("certificate: invalid common name"),
            CertificateError::InvalidDnsName => f.write_str("certificate: invalid DNS name"),
            CertificateError::InvalidValidity => f.write_str("certificate: invalid validity"),
        }
    }
}

impl std::error::Error for CertificateError {}

impl From<TokenError> for CertificateError {
    fn from(e: TokenError) -> Self {
        CertificateError::Token(e)
    }
}

/// A self-signed v3 certificate for the token's private key `key`, valid from
/// `not_before` to `not_after` (Unix seconds), DER encoded. It carries the subject
/// alternative names and `basicConstraints` CA:FALSE, as TLS clients want of a server.
pub fn self_signed_certificate(
    token: &dyn Token,
    key: ObjectHandle,
    subject: &Subject,
    not_before: i64,
    not_after: i64,
) -> Result<Vec<u8>, CertificateError> {
    if not_after < not_before {
        return Err(CertificateError::InvalidValidity);
    }
    let name = encode_name(&subject.common_name)?;
    let validity = der::sequence(&[&encode_time(not_before)?, &encode_time(not_after)?]);
    let public_key = token.public_key(key)?;
    let (mechanism, algorithm) = signature_algorithm(public_key.kind)?;
    let mut serial = [0u8; 16];
    token.random(&mut serial)?;
    serial[0] &= 0x7f;
    serial[0] |= 0x40; // positive and always 16 octets
    let basic_constraints = extension(
        OID_BASIC_CONSTRAINTS,
        true,
        &der::sequence(&[]), // cA defaults to FALSE
    );
    let mut extensions = basic_constraints;
    if !subject.dns_names.is_empty() {
        extensions.extend_from_slice(&subject_alt_name(&subject.dns_names)?);
    }
    let tbs = der::sequence(&[
        &[0xa0, 0x03, 0x02, 0x01, 0x02], // [0] EXPLICIT version v3
        &der::unsigned_integer(&serial),
        &algorithm,
        &name,
        &validity,
        &name,
        &public_key.der,
        &wrap(0xa3, &wrap(TAG_SEQUENCE, &extensions)),
    ]);
    sign_structure(token, key, mechanism, &algorithm, tbs)
}

/// A PKCS#10 certificate request for the token's private key `key`, DER encoded, asking
/// for the subject alternative names through the `extensionRequest` attribute.
pub fn certificate_request(
    token: &dyn Token,
    key: ObjectHandle,
    subject: &Subject,
) -> Result<Vec<u8>, CertificateError> {
    let name = encode_name(&subject.common_name)?;
    let public_key = token.public_key(key)?;
    let (mechanism, algorithm) = signature_algorithm(public_key.kind)?;
    let mut attributes = Vec::new();
    if !subject.dns_names.is_empty() {
        let extensions = wrap(TAG_SEQUENCE, &subject_alt_name(&subject.dns_names)?);
        attributes = der::sequence(&[
            &wrap(TAG_OID, OID_EXTENSION_REQUEST),
            &wrap(TAG_SET, &extensions),
        ]);
    }
    let info = der::sequence(&[
        &der::unsigned_integer(&[0]),
        &name,
        &public_key.der,
        &wrap(0xa0, &attributes), // [0] IMPLICIT SET OF Attribute
    ]);
    sign_structure(token, key, mechanism, &algorithm, info)
}

fn sign_structure(
    token: &dyn Token,
    key: ObjectHandle,
    mechanism: Mechanism,
    algorithm: &[u8],
    body: Vec<u8>,
) -> Result<Vec<u8>, CertificateError> {
    let signature = token.sign(key, mechanism, &body)?;
    Ok(der::sequence(&[
        &body,
        algorithm,
        &der::bit_string(&signature),
    ]))
}

/// The signing mechanism and the encoded AlgorithmIdentifier for a key type.
fn signature_algorithm(kind: KeyKind) -> Result<(Mechanism, Vec<u8>), CertificateError> {
    match kind {
        // RFC 5758 §3.2: no parameters for ECDSA.
        KeyKind::EcP256 => Ok((
            Mechanism::EcdsaP256Sha256,
            der::sequence(&[&wrap(TAG_OID, OID_ECDSA_SHA256)]),
        )),
        // RFC 8410 §3: parameters absent.
        KeyKind::Ed25519 => Ok((
            Mechanism::Ed25519,
            der::sequence(&[&wrap(TAG_OID, der::OID_ED25519)]),
        )),
        // RFC 4055 §5: parameters NULL.
        KeyKind::Rsa => Ok((
            Mechanism::RsaPkcs1Sha256,
            der::sequence(&[&wrap(TAG_OID, OID_RSA_SHA256), &wrap(der::TAG_NULL, &[])]),
        )),
        KeyKind::GenericSecret => Err(TokenError::KeyTypeInconsistent.into()),
    }
}

fn encode_name(common_name: &str) -> Result<Vec<u8>, CertificateError> {
    let printable = common_name.bytes().all(|b| (0x20..0x7f).contains(&b));
    if common_name.is_empty() || common_name.len() > MAX_COMMON_NAME_LEN || !printable {
        return Err(CertificateError::InvalidCommonName);
    }
    let attribute = der::sequence(&[
        &wrap(TAG_OID, OID_COMMON_NAME),
        &wrap(der::TAG_UTF8_STRING, common_name.as_bytes()),
    ]);
    Ok(der::sequence(&[&wrap(TAG_SET, &attribute)]))
}

fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let oid = wrap(TAG_OID, oid);
    let value = wrap(der::TAG_OCTET_STRING, value);
    if critical {
        der::sequence(&[&oid, &[TAG_BOOLEAN, 0x01, 0xff], &value])
    } else {
        der::sequence(&[&oid, &value])
    }
}

fn subject_alt_name(dns_names: &[String]) -> Result<Vec<u8>, CertificateError> {
    if dns_names.len() > MAX_DNS_NAMES {
        return Err(CertificateError::InvalidDnsName);
    }
    let mut names = Vec::new();
    for name in dns_names {
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
        if name.is_empty() || name.len() > MAX_DNS_NAME_LEN || !valid {
            return Err(CertificateError::InvalidDnsName);
        }
        der::tlv(&mut names, TAG_DNS_NAME, name.as_bytes());
    }
    Ok(extension(
        OID_SUBJECT_ALT_NAME,
        false,
        &wrap(TAG_SEQUENCE, &names),
    ))
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
fn encode_time(unix: i64) -> Result<Vec<u8>, CertificateError> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(1950..=9999).contains(&year) {
        return Err(CertificateError::InvalidValidity);
    }
    let clock = format!(
        "{month:02}{day:02}{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if year < 2050 {
        Ok(wrap(
            der::TAG_UTC_TIME,
            format!("{:02}{clock}", year % 100).as_bytes(),
        ))
    } else {
        Ok(wrap(
            der::TAG_GENERALIZED_TIME,
            format!("{year:04}{clock}").as_bytes(),
        ))
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (the era arithmetic of H. Hinnant's "chrono-compatible low-level date algorithms").
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn times_switch_encoding_in_2050() {
        // 2049-12-31T23:59:59Z and 2050-01-01T00:00:00Z.
        assert_eq!(
            encode_time(2_524_607_999).unwrap(),
            wrap(0x17, b"491231235959Z")
        );
        assert_eq!(
            encode_time(2_524_608_000).unwrap(),
            wrap(0x18, b"20500101000000Z")
        );
        assert_eq!(
            encode_time(1_000_000_000).unwrap(),
            wrap(0x17, b"010909014640Z")
        );
        assert_eq!(
            encode_time(-800_000_000),
            Err(CertificateError::InvalidValidity)
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(encode_name("mail.example.test").is_ok());
        assert_eq!(encode_name(""), Err(CertificateError::InvalidCommonName));
        assert_eq!(
            encode_name(&"a".repeat(MAX_COMMON_NAME_LEN + 1)),
            Err(CertificateError::InvalidCommonName)
        );
        assert_eq!(
            subject_alt_name(&["bad name".to_string()]),
            Err(CertificateError::InvalidDnsName)
        );
        let many = vec!["a.test".to_string(); MAX_DNS_NAMES + 1];
        assert_eq!(
            subject_alt_name(&many),
            Err(CertificateError::InvalidDnsName)
        );
    }
}
