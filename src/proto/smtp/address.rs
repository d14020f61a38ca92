//! Checked SMTP address types: `Domain`, `Mailbox` and the reverse and forward paths of
//! MAIL and RCPT (RFC 5321 §4.1.2, §4.1.3; RFC 6531 §3.3 for UTF-8).
//!
//! A value of these types is valid by construction: the only way to get one is to parse
//! it. Nothing here allocates more than the text it was given.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 5321 §4.5.3.1.1: a local-part is at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 1035 §2.3.4: a label is at most 63 octets.
pub const MAX_LABEL: usize = 63;
/// RFC 5321 §4.5.3.1.3: a path, with its angle brackets, is at most 256 octets.
pub const MAX_PATH: usize = 256;

/// Why an address did not parse. The command layer turns it into a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Not RFC 5321 syntax.
    Syntax,
    /// A part is longer than its RFC 5321 §4.5.3.1 limit.
    TooLong,
}

/// A domain name or an address literal, as written by the peer (case kept).
///
/// Labels are letters, digits and hyphens (not at either end); `_` is tolerated inside a
/// label because many hosts name themselves with it. A label may hold UTF-8 (a U-label,
/// RFC 6531 §3.3) when the caller allows it. An address literal is `[IPv4]` or
/// `[IPv6:…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain(String);

impl Domain {
    /// Parses a whole domain or address literal; `utf8` allows non-ASCII labels.
    pub fn parse(s: &str, utf8: bool) -> Result<Domain, AddressError> {
        if s.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong);
        }
        if s.starts_with('[') {
            return if address_literal(s) {
                Ok(Domain(s.to_string()))
            } else {
                Err(AddressError::Syntax)
            };
        }
        if s.is_empty() {
            return Err(AddressError::Syntax);
        }
        for label in s.split('.') {
            if label.len() > MAX_LABEL {
                return Err(AddressError::TooLong);
            }
            if !valid_label(label, utf8) {
                return Err(AddressError::Syntax);
            }
        }
        Ok(Domain(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_address_literal(&self) -> bool {
        self.0.starts_with('[')
    }

    /// The address an address literal names; `None` for a domain name.
    pub fn literal_address(&self) -> Option<IpAddr> {
        literal_ip(&self.0)
    }

    /// The name routes are matched against: ASCII letters in lower case (RFC 5321 §2.4:
    /// domain names are case-insensitive); an address literal as written.
    pub fn routing_name(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_label(label: &str, utf8: bool) -> bool {
    let ok_char =
        |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (utf8 && !c.is_ascii());
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(ok_char)
}

/// `[1.2.3.4]` or `[IPv6:…]` (the tag case-insensitive); general literals are refused.
fn address_literal(s: &str) -> bool {
    literal_ip(s).is_some()
}

/// The address of `[1.2.3.4]` or `[IPv6:…]`; `None` for anything else.
fn literal_ip(s: &str) -> Option<IpAddr> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    const TAG: &str = "IPv6:";
    if inner.len() > TAG.len() && inner.is_char_boundary(TAG.len()) {
        let (tag, rest) = inner.split_at(TAG.len());
        if tag.eq_ignore_ascii_case(TAG) {
            return rest.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
        }
    }
    // std's parser refuses leading zeros and out-of-range octets, as RFC 5321 Snum does.
    inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// `local@domain`, the local part as written (a dot-string or a quoted string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    local: String,
    domain: Domain,
}

impl Mailbox {
    /// Parses `local@domain`; `utf8` allows non-ASCII in both parts (RFC 6531).
    pub fn parse(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
        let at = local_part_end(s).ok_or(AddressError::Syntax)?;
        let (local, rest) = s.split_at(at);
        let domain = rest.strip_prefix('@').ok_or(AddressError::Syntax)?;
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::TooLong);
        }
        if !utf8 && !local.is_ascii() {
            return Err(AddressError::Syntax);
        }
        let domain = Domain::parse(domain, utf8)?;
        Ok(Mailbox {
            local: local.to_string(),
            domain,
        })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// True when the address needs SMTPUTF8 to be carried (RFC 6531 §3.2).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.0.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// A checked recipient of RCPT: a mailbox, or the bare `postmaster` every server must
/// take (RFC 5321 §4.1.1.3, §4.5.1).
///
/// This is the one form of a recipient from the server core on: policy decides on it,
/// `explain` shows it and routing routes it. The stored form (its `Display`) parses back
/// to the same value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// `<postmaster>` without a domain, as written (any case).
    Postmaster(String),
    Mailbox(Mailbox),
}

impl Recipient {
    /// Parses the stored form: `local@domain`, or a bare `postmaster`.
    pub fn parse(s: &str) -> Result<Recipient, AddressError> {
        if s.eq_ignore_ascii_case("postmaster") {
            return Ok(Recipient::Postmaster(s.to_string()));
        }
        Mailbox::parse(s, true).map(Recipient::Mailbox)
    }

    /// The recipient of a checked RCPT path; `None` for the null path, which is never one.
    pub fn from_target(target: PathTarget) -> Option<Recipient> {
        match target {
            PathTarget::Null => None,
            PathTarget::Postmaster(p) => Some(Recipient::Postmaster(p)),
            PathTarget::Mailbox(m) => Some(Recipient::Mailbox(m)),
        }
    }

    /// The local part: the mailbox's as written, or `postmaster`.
    pub fn local_part(&self) -> &str {
        match self {
            Recipient::Postmaster(p) => p,
            Recipient::Mailbox(m) => m.local_part(),
        }
    }

    /// The domain; `None` for a bare postmaster.
    pub fn domain(&self) -> Option<&Domain> {
        match self {
            Recipient::Postmaster(_) => None,
            Recipient::Mailbox(m) => Some(m.domain()),
        }
    }

    /// True when the local part is `postmaster` in any case (RFC 5321 §4.5.1), with or
    /// without a domain.
    pub fn is_postmaster(&self) -> bool {
        self.local_part().eq_ignore_ascii_case("postmaster")
    }

    pub fn is_ascii(&self) -> bool {
        match self {
            Recipient::Postmaster(_) => true,
            Recipient::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Postmaster(p) => f.write_str(p),
            Recipient::Mailbox(m) => m.fmt(f),
        }
    }
}

/// The byte index where a valid local part at the start of `s` ends, or `None`.
fn local_part_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() == Some(&b'"') {
        // Quoted-string: qtextSMTP or a backslash pair, RFC 5321 §4.1.2.
        let mut i = 1;
        while let Some(&c) = b.get(i) {
            match c {
                b'"' => return Some(i + 1),
                b'\\' => {
                    let next = *b.get(i + 1)?;
                    if !(32..=126).contains(&next) {
                        return None;
                    }
                    i += 2;
                }
                32..=126 => i += 1,
                c if c >= 0x80 => i += 1,
                _ => return None,
            }
        }
        return None;
    }
    // Dot-string: atoms of atext separated by single dots.
    let local = s.split_once('@').map_or(s, |(local, _)| local);
    let atom_ok = |a: &str| !a.is_empty() && a.chars().all(is_atext);
    if local.split('.').all(atom_ok) {
        Some(local.len())
    } else {
        None
    }
}

/// RFC 5322 atext, extended with non-ASCII characters (RFC 6531 §3.3); the caller
/// decides whether non-ASCII is allowed.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// A checked path as it appeared in MAIL or RCPT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// What the path names.
    pub target: PathTarget,
    /// The path carried an RFC 5321 §4.1.1.3 source route (`@a,@b:`), now dropped.
    pub had_source_route: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathTarget {
    /// `<>`: the null reverse path (bounces).
    Null,
    /// `<postmaster>` without a domain (RFC 5321 §4.1.1.3), as written.
    Postmaster(String),
    Mailbox(Mailbox),
}

impl PathTarget {
    /// The stored form: "" for the null path, `local@domain` otherwise.
    pub fn to_address(&self) -> String {
        match self {
            PathTarget::Null => String::new(),
            PathTarget::Postmaster(p) => p.clone(),
            PathTarget::Mailbox(m) => m.to_string(),
        }
    }

    pub fn is_ascii(&self) -> bool {
        match self {
            PathTarget::Null | PathTarget::Postmaster(_) => true,
            PathTarget::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl Path {
    /// Splits `<path> rest` into the checked path and the rest (parameters).
    ///
    /// The null path and `<postmaster>` are parsed here; the command decides which
    /// forms it allows. Non-ASCII is accepted lexically; the session refuses it when
    /// SMTPUTF8 was not given.
    pub fn parse_prefix(s: &str) -> Result<(Path, &str), AddressError> {
        let end = path_end(s).ok_or(AddressError::Syntax)?;
        if end > MAX_PATH {
            return Err(AddressError::TooLong);
        }
        // `path_end` found the `<` and the `>` around the path.
        let (path, rest) = s.split_at_checked(end).ok_or(AddressError::Syntax)?;
        let inner = path
            .strip_prefix('<')
            .and_then(|p| p.strip_suffix('>'))
            .ok_or(AddressError::Syntax)?;
        let (inner, had_source_route) = strip_source_route(inner)?;
        let target = if inner.is_empty() {
            if had_source_route {
                return Err(AddressError::Syntax);
            }
            PathTarget::Null
        } else if inner.eq_ignore_ascii_case("postmaster") {
            PathTarget::Postmaster(inner.to_string())
        } else {
            PathTarget::Mailbox(Mailbox::parse(inner, true)?)
        };
        Ok((
            Path {
                target,
                had_source_route,
            },
            rest,
        ))
    }
}

/// The index just past the `>` closing the path that opens `s`, honouring quotes.
fn path_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return None;
    }
    let mut quoted = false;
    let mut bytes = b.iter().enumerate().skip(1);
    while let Some((i, &c)) = bytes.next() {
        match c {
            b'\\' if quoted => {
                bytes.next();
            }
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Drops an `@a,@b:` source route (RFC 5321 §4.1.1.3: "SHOULD" be ignored) after
/// checking that its domains are well formed.
fn strip_source_route(inner: &str) -> Result<(&str, bool), AddressError> {
    if !inner.starts_with('@') {
        return Ok((inner, false));
    }
    let (route, path) = inner.split_once(':').ok_or(AddressError::Syntax)?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
        Domain::parse(domain, true)?;
    }
    Ok((path, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Result<(Path, &str), AddressError> {
        Path::parse_prefix(s)
    }

    #[test]
    fn domains() {
        for good in [
            "example.com",
            "a",
            "x-y.example",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "my_pc.lan",
        ] {
            assert_eq!(Domain::parse(good, false).unwrap().as_str(), good);
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a.com.",
            "[1.2.3]",
            "[300.1.1.1]",
            "[IPv6:zz]",
            "[x:y]",
            "a b",
        ] {
            assert_eq!(
                Domain::parse(bad, false),
                Err(AddressError::Syntax),
                "{bad}"
            );
        }
        assert!(Domain::parse("bücher.example", false).is_err());
        assert!(Domain::parse("bücher.example", true).is_ok());
        assert_eq!(
            Domain::parse(&"a".repeat(64), false),
            Err(AddressError::TooLong)
        );
        assert!(Domain::parse(&"a".repeat(63), false).is_ok());
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(Domain::parse(&long, false).is_ok());
        assert_eq!(
            Domain::parse(&format!("{long}a"), false),
            Err(AddressError::TooLong)
        );
        assert!(
            Domain::parse("[192.0.2.1]", false)
                .unwrap()
                .is_address_literal()
        );
    }

    #[test]
    fn literals_name_their_address() {
        let ip = |s: &str| Domain::parse(s, false).unwrap().literal_address();
        assert_eq!(ip("[192.0.2.1]"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            ip("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(ip("[ipv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip("example.com"), None);
        assert_eq!(
            Domain::parse("Mail.Example.COM", false)
                .unwrap()
                .routing_name(),
            "mail.example.com"
        );
    }

    #[test]
    fn recipients_round_trip_through_their_stored_form() {
        for text in [
            "postmaster",
            "PostMaster",
            "a@example.com",
            "\"a@b\"@example.com",
            "a%b@[192.0.2.1]",
            "x!y@[IPv6:2001:db8::1]",
            "postmaster@Example.com",
        ] {
            let r = Recipient::parse(text).unwrap();
            assert_eq!(r.to_string(), text);
            assert_eq!(Recipient::parse(&r.to_string()).unwrap(), r);
        }
        assert!(Recipient::parse("postmaster").unwrap().is_postmaster());
        assert!(Recipient::parse("POSTMASTER@x").unwrap().is_postmaster());
        assert!(
            !Recipient::parse("\"postmaster\"@x")
                .unwrap()
                .is_postmaster()
        );
        assert_eq!(Recipient::parse("postmaster").unwrap().domain(), None);
        for bad in ["", "a", "a@b@c", "@b", "<a@b>"] {
            assert!(Recipient::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Recipient::from_target(PathTarget::Null), None);
    }

    #[test]
    fn mailboxes() {
        let m = Mailbox::parse("a.b+c@example.com", false).unwrap();
        assert_eq!(m.local_part(), "a.b+c");
        assert_eq!(m.domain().as_str(), "example.com");
        assert_eq!(m.to_string(), "a.b+c@example.com");
        let q = Mailbox::parse(r#""a b\"@c"@example.com"#, false).unwrap();
        assert_eq!(q.local_part(), r#""a b\"@c""#);
        for bad in [
            "a@", "@b", "a", "a..b@c", ".a@c", "a.@c", "a b@c", "\"a@c", "a@b@c", "a(b)@c",
        ] {
            assert!(Mailbox::parse(bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            Mailbox::parse(&format!("{}@c", "a".repeat(65)), false),
            Err(AddressError::TooLong)
        );
        assert!(Mailbox::parse(&format!("{}@c", "a".repeat(64)), false).is_ok());
        assert!(Mailbox::parse("ü@c", false).is_err());
        assert!(!Mailbox::parse("ü@c", true).unwrap().is_ascii());
    }

    #[test]
    fn paths() {
        let (p, rest) = path("<a@b> SIZE=1").unwrap();
        assert_eq!(p.target.to_address(), "a@b");
        assert_eq!(rest, " SIZE=1");
        assert!(!p.had_source_route);
        let (p, rest) = path("<>").unwrap();
        assert_eq!(p.target, PathTarget::Null);
        assert_eq!(rest, "");
        let (p, _) = path("<@r1.example,@r2.example:a@b>").unwrap();
        assert!(p.had_source_route);
        assert_eq!(p.target.to_address(), "a@b");
        let (p, _) = path("<PostMaster>").unwrap();
        assert_eq!(p.target, PathTarget::Postmaster("PostMaster".into()));
        let (p, rest) = path(r#"<"a>b"@c> X"#).unwrap();
        assert_eq!(p.target.to_address(), r#""a>b"@c"#);
        assert_eq!(rest, " X");
        for bad in [
            "a@b",
            "<a@b",
            "<@r:>",
            "<@:a@b>",
            "<@r a@b>",
            "<a>",
            "<@-x:a@b>",
        ] {
            assert!(path(bad).is_err(), "{bad}");
        }
        let long = format!(
            "<{}@{}.{}>",
            "a".repeat(64),
            vec!["b".repeat(63); 2].join("."),
            "c".repeat(61)
        );
        assert_eq!(long.len(), MAX_PATH);
        assert!(path(&long).is_ok());
        let too_long = format!(
            "<{}@{}.{}>",
            "a".repeat(64),
            vec!["b".repeat(63); 2].join("."),
            "c".repeat(62)
        );
        assert_eq!(path(&too_long), Err(AddressError::TooLong));
    }
}
