//! Checked DNS names: lower-cased, no trailing dot, every label valid (RFC 1035 §2.3.4).
//!
//! A `Name` is valid by construction: it comes from `Name::parse` (text given by the
//! configuration or a caller) or from the message decoder (bytes given by a server).

use std::fmt;
use std::net::IpAddr;

/// RFC 1035 §2.3.4: a label is at most 63 octets.
pub const MAX_LABEL: usize = 63;
/// RFC 1035 §2.3.4: a name is at most 255 octets in wire form (length octets and the root
/// label included). A `Name` therefore holds at most 253 bytes of text.
pub const MAX_NAME_WIRE: usize = 255;
/// The longest reverse name as text (RFC 3596 §2.5): 32 one-digit labels, each with its
/// dot, then `ip6.arpa`; 72 octets.
const MAX_REVERSE_TEXT: usize = 32 * 2 + "ip6.arpa".len();

/// Why text or wire bytes are not a valid name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// An empty label (`a..b`, a leading dot) where one is not allowed.
    EmptyLabel,
    /// A label longer than `MAX_LABEL`.
    LabelTooLong,
    /// More than `MAX_NAME_WIRE` octets in wire form.
    NameTooLong,
    /// A byte that is not a letter, digit, `-`, `_` or `/`.
    BadCharacter,
}

/// A DNS name in presentation form: lower-case ASCII labels joined by dots, without the
/// trailing dot. The root name is the empty string and prints as `.`.
///
/// Labels hold letters, digits, `-`, `_` (service labels such as `_mta-sts`, and host
/// names found in the wild) and `/` (RFC 2317 classless reverse delegation, as in
/// `25.0/25.2.0.192.in-addr.arpa`). This is stricter than RFC 1035 allows on the wire and
/// keeps every name safe to log and to put in a header.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// The root name (`.`), the exchange of a null MX (RFC 7505).
    pub fn root() -> Name {
        Name(String::new())
    }

    /// Parses presentation form: `Mail.Example.COM` or `mail.example.com.`; `.` is the
    /// root. Upper case is folded to lower case.
    pub fn parse(text: &str) -> Result<Name, NameError> {
        if text == "." {
            return Ok(Name::root());
        }
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        let mut builder = NameBuilder::new();
        for label in text.split('.') {
            builder.push_label(label.as_bytes())?;
        }
        Ok(builder.finish())
    }

    /// The `in-addr.arpa` (RFC 1035 §3.5) or `ip6.arpa` (RFC 3596 §2.5) name of an address.
    pub fn reverse(ip: IpAddr) -> Name {
        let mut text = String::with_capacity(MAX_REVERSE_TEXT);
        match ip {
            IpAddr::V4(v4) => {
                for octet in v4.octets().iter().rev() {
                    text.push_str(&octet.to_string());
                    text.push('.');
                }
                text.push_str("in-addr.arpa");
            }
            IpAddr::V6(v6) => {
                for octet in v6.octets().iter().rev() {
                    text.push_str(&format!("{:x}.{:x}.", octet & 0x0f, octet >> 4));
                }
                text.push_str("ip6.arpa");
            }
        }
        // Longest case: 32 one-digit labels and "ip6.arpa", 74 octets in wire form, all
        // labels hexadecimal or decimal digits.
        Name(text)
    }

    /// The name as text, without trailing dot; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root name.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels, most specific first; none for the root.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.').filter(|label| !label.is_empty())
    }

    /// Length in uncompressed wire form (length octets and root label included).
    pub fn wire_len(&self) -> usize {
        if self.is_root() { 1 } else { self.0.len() + 2 }
    }

    /// Appends the uncompressed wire form.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        for label in self.labels() {
            // Invariant: labels were checked to be at most MAX_LABEL (63) octets.
            out.push(u8::try_from(label.len()).unwrap_or(MAX_LABEL as u8));
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// Builds a `Name` one label at a time, checking each label and the running length.
/// Shared by `Name::parse` and the wire decoder.
pub(crate) struct NameBuilder {
    text: String,
    /// Wire length so far, counting the root label that `finish` adds.
    wire_len: usize,
}

impl NameBuilder {
    pub(crate) fn new() -> NameBuilder {
        NameBuilder {
            text: String::new(),
            wire_len: 1,
        }
    }

    /// Appends one label; letters are folded to lower case.
    pub(crate) fn push_label(&mut self, label: &[u8]) -> Result<(), NameError> {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(NameError::LabelTooLong);
        }
        let wire_len = self.wire_len + 1 + label.len();
        if wire_len > MAX_NAME_WIRE {
            return Err(NameError::NameTooLong);
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'))
        {
            return Err(NameError::BadCharacter);
        }
        if !self.text.is_empty() {
            self.text.push('.');
        }
        self.text
            .extend(label.iter().map(|&b| char::from(b.to_ascii_lowercase())));
        self.wire_len = wire_len;
        Ok(())
    }

    pub(crate) fn finish(self) -> Name {
        Name(self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_folds_case_and_drops_trailing_dot() {
        let name = Name::parse("Mail.Example.TEST.").unwrap();
        assert_eq!(name.as_str(), "mail.example.test");
        assert_eq!(name.wire_len(), 19);
        let mut wire = Vec::new();
        name.write_wire(&mut wire);
        assert_eq!(wire, b"\x04mail\x07example\x04test\x00");
        assert_eq!(wire.len(), name.wire_len());
    }

    #[test]
    fn root_is_empty() {
        let root = Name::parse(".").unwrap();
        assert!(root.is_root());
        assert_eq!(root.to_string(), ".");
        assert_eq!(root.wire_len(), 1);
        let mut wire = Vec::new();
        root.write_wire(&mut wire);
        assert_eq!(wire, [0]);
    }

    #[test]
    fn bad_names() {
        assert_eq!(Name::parse(""), Err(NameError::EmptyLabel));
        assert_eq!(Name::parse("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(Name::parse(".a"), Err(NameError::EmptyLabel));
        assert_eq!(Name::parse("a b.c"), Err(NameError::BadCharacter));
        assert_eq!(Name::parse("a\\.b"), Err(NameError::BadCharacter));
        assert_eq!(Name::parse("a:b"), Err(NameError::BadCharacter));
        assert!(Name::parse("25.0/25.2.0.192.in-addr.arpa").is_ok());
        assert!(Name::parse("_mta-sts.example.test").is_ok());
        assert_eq!(Name::parse("\u{e9}.c"), Err(NameError::BadCharacter));
        let long_label = "a".repeat(64);
        assert_eq!(Name::parse(&long_label), Err(NameError::LabelTooLong));
        assert!(Name::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn name_length_limit() {
        // 63+1 octets per label: three labels and a 61-octet one make 254 + root = 255.
        let l63 = "a".repeat(63);
        let ok = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        let name = Name::parse(&ok).unwrap();
        assert_eq!(name.wire_len(), 255);
        let too_long = format!("{l63}.{l63}.{l63}.{}", "b".repeat(62));
        assert_eq!(Name::parse(&too_long), Err(NameError::NameTooLong));
    }

    #[test]
    fn reverse_names() {
        let v4 = Name::reverse("192.0.2.25".parse().unwrap());
        assert_eq!(v4.as_str(), "25.2.0.192.in-addr.arpa");
        let v6 = Name::reverse("2001:db8::25".parse().unwrap());
        assert_eq!(
            v6.as_str(),
            "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert_eq!(Name::parse(v6.as_str()).unwrap(), v6);
        assert!(v6.wire_len() <= MAX_NAME_WIRE);
    }
}
